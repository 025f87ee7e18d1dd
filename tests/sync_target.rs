//! `[[sync.target]]`, `max_file_size` and `sqlite` end to end, with the real
//! binary: this node (the master, made active in its state) runs
//! `sip-ha sync`; the standby is `sip-ha serve` behind a real sshd on
//! loopback, receiving under a prefix directory (two "servers" on one
//! machine, as in tests/sync.rs); the target is a directory standing for a
//! NAS mount.
//!
//! What is checked: a target ends up equal to the source (content, mode,
//! mtime to the nanosecond, symlinks) and deletions go to its trash; a
//! target that does not exist is refused, named, and not created; targets
//! are mirrored while the peer cannot be reached; a file over
//! `max_file_size` is not sent, is warned of once, and the standby's copy
//! is left alone; SQLite databases written all the time (WAL and rollback
//! journal) arrive as valid databases holding every row committed before
//! the sync, and their `-wal`/`-journal` files do not travel.

mod common;

use common::example::text;
use common::sshd::TestSshd;
use common::syslog::SyslogCapture;
use common::tree::{assert_same_tree, snapshot, write};
use rusqlite::{Connection, OpenFlags};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIP_HA: &str = env!("CARGO_BIN_EXE_sip-ha");

/// The master's sync path `src`, the standby's copy of it under `standby`,
/// and a NAS directory `nas` (the target, when configured).
struct Setup {
    _sshd: TestSshd,
    _dir: tempfile::TempDir,
    base: PathBuf,
    config: PathBuf,
    src: PathBuf,
    standby: PathBuf,
    nas: PathBuf,
    state: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        common::sshd::stop_kept_masters(&self.state.join("ssh"));
    }
}

/// How a test's config differs.
struct Options<'a> {
    /// Lines added to the `[[sync.path]]`.
    path_lines: &'a str,
    /// The `[[sync.target]]` paths, relative to the test's directory.
    targets: &'a [&'a str],
    /// Whether the peer's sshd is where the config says.
    peer_reachable: bool,
}

impl Setup {
    fn new(o: Options<'_>) -> Setup {
        let sshd = TestSshd::start();
        let dir = tempfile::Builder::new()
            .prefix("sip-ha-target.")
            .tempdir()
            .unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let src = base.join("pbx/etc/asterisk");
        let prefix = base.join("standby");
        let nas = base.join("nas");
        for d in [&src, &prefix, &nas] {
            std::fs::create_dir_all(d).unwrap();
        }
        let standby = prefix.join(src.strip_prefix("/").unwrap());
        let state = base.join("state");
        let port = if o.peer_reachable {
            sshd.port
        } else {
            // Nothing listens there once the listener is gone.
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut text = sshd.master_config("target-test", "192.0.2.122/24", &state, SIP_HA, "30s");
        if !o.peer_reachable {
            text = text.replace(
                &format!("port = {}\n", sshd.port),
                &format!("port = {port}\n"),
            );
            assert!(text.contains(&format!("port = {port}\n")));
        }
        text += &format!(
            "\n[[sync.path]]\npath = \"{}\"\n{}\n",
            src.display(),
            o.path_lines
        );
        for t in o.targets {
            text += &format!("\n[[sync.target]]\npath = \"{}\"\n", base.join(t).display());
        }
        let config = base.join("sip-ha.toml");
        std::fs::write(&config, text).unwrap();
        sshd.authorize(Some(&format!(
            "exec {SIP_HA} --config {} --node slave serve --sync-prefix {}",
            config.display(),
            prefix.display()
        )));
        // Active in its state, as after taking the address.
        std::fs::create_dir_all(&state).unwrap();
        let mut st = sip_ha::state::State::fresh(sip_ha_core::Role::Master);
        st.memory.stance = sip_ha_core::Stance::Active;
        sip_ha::state::save(&state, &st).unwrap();
        Setup {
            _sshd: sshd,
            _dir: dir,
            base,
            config,
            src,
            standby,
            nas,
            state,
        }
    }

    /// Where the target `t` (relative to the test's directory) mirrors the
    /// sync path.
    fn mirror(&self, t: &str) -> PathBuf {
        self.base.join(t).join(self.src.strip_prefix("/").unwrap())
    }

    fn sync(&self) -> Output {
        Command::new(SIP_HA)
            .arg("--config")
            .arg(&self.config)
            .args(["--node", "master", "sync"])
            .env_remove("SIP_HA_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

/// The summary line of target `t` in `sip-ha sync`'s output.
fn target_line<'a>(out: &'a str, t: &Path) -> &'a str {
    let head = format!("target {}: sync: ", t.display());
    out.lines()
        .find(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("no summary line for {}:\n{out}", t.display()))
}

/// Every file under `dir` (recursively) whose name is `name`.
fn find(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            if p.file_name().is_some_and(|n| n == name) {
                found.push(p);
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------

#[test]
fn a_target_mirrors_the_paths_and_keeps_deletions_in_its_trash() {
    let s = Setup::new(Options {
        path_lines: "",
        targets: &["nas/pbx"],
        peer_reachable: true,
    });
    std::fs::create_dir(s.nas.join("pbx")).unwrap();
    write(
        &s.src.join("sip.conf"),
        b"[general]\n",
        0o640,
        (1_700_000_000, 123_456_789),
    );
    write(
        &s.src.join("keys/secret.key"),
        b"k",
        0o600,
        (1_600_000_000, 1),
    );
    write(
        &s.src.join("extensions.conf"),
        b"[from-internal]\n",
        0o644,
        (1_650_000_000, 999_999_999),
    );
    std::os::unix::fs::symlink("sip.conf", s.src.join("sip-link.conf")).unwrap();
    let mirror = s.mirror("nas/pbx");

    let out = s.sync();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // One line for the peer, then one for the target.
    assert!(
        t.lines().any(|l| l.starts_with("sync: 3 files sent")),
        "{t}"
    );
    assert!(
        target_line(&t, &s.nas.join("pbx")).contains(": sync: 3 files sent"),
        "{t}"
    );
    assert_same_tree(&s.src, &mirror);
    assert_same_tree(&s.src, &s.standby);
    // The target's manifests are its own.
    let own = s.state.join("targets");
    assert_eq!(std::fs::read_dir(&own).unwrap().count(), 1);
    assert!(
        !find(&own, "sync").is_empty(),
        "no manifests under {}",
        own.display()
    );

    // A quiet run sends nothing to either.
    let t = text(&s.sync());
    assert!(
        target_line(&t, &s.nas.join("pbx")).contains("sync: 0 files sent"),
        "{t}"
    );

    // A deletion and an edit.
    std::fs::remove_file(s.src.join("extensions.conf")).unwrap();
    write(
        &s.src.join("sip.conf"),
        b"[general]\nbindport=5060\n",
        0o640,
        (1_700_000_100, 5),
    );
    let out = s.sync();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        target_line(&t, &s.nas.join("pbx"))
            .contains("sync: 1 files sent (24 bytes of data), 1 deleted"),
        "{t}"
    );
    assert_same_tree(&s.src, &mirror);
    let trashed = find(&mirror.join(".sip-ha-trash"), "extensions.conf");
    assert_eq!(trashed.len(), 1, "{trashed:?}");
    assert_eq!(std::fs::read(&trashed[0]).unwrap(), b"[from-internal]\n");
}

#[test]
fn a_target_that_is_not_there_is_refused_and_not_created() {
    let s = Setup::new(Options {
        path_lines: "",
        targets: &["nas/unmounted/pbx", "nas/file"],
        peer_reachable: true,
    });
    std::fs::write(s.nas.join("file"), b"not a directory").unwrap();
    write(&s.src.join("sip.conf"), b"x\n", 0o644, (1_700_000_000, 0));
    let out = s.sync();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let missing = s.nas.join("unmounted/pbx");
    assert!(
        t.contains(&format!(
            "sync target {} does not exist: is the NAS mounted? sip-ha never creates a target",
            missing.display()
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "sync target {} is not a directory",
            s.nas.join("file").display()
        )),
        "{t}"
    );
    assert!(!s.nas.join("unmounted").exists(), "the target was created");
    assert_eq!(
        std::fs::read(s.nas.join("file")).unwrap(),
        b"not a directory"
    );
    // The standby got its copy all the same.
    assert_same_tree(&s.src, &s.standby);

    // Mounted now: the next run mirrors it.
    std::fs::create_dir_all(&missing).unwrap();
    std::fs::remove_file(s.nas.join("file")).unwrap();
    std::fs::create_dir(s.nas.join("file")).unwrap();
    let out = s.sync();
    assert!(out.status.success(), "{}", text(&out));
    assert_same_tree(&s.src, &s.mirror("nas/unmounted/pbx"));
    assert_same_tree(&s.src, &s.mirror("nas/file"));
}

#[test]
fn targets_are_mirrored_while_the_peer_is_unreachable() {
    let s = Setup::new(Options {
        path_lines: "",
        targets: &["nas"],
        peer_reachable: false,
    });
    write(&s.src.join("sip.conf"), b"x\n", 0o644, (1_700_000_000, 7));
    write(
        &s.src.join("voicemail/1.wav"),
        &[1; 5000],
        0o600,
        (1_700_000_001, 8),
    );
    let out = s.sync();
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the peer's failure stays visible: {t}"
    );
    assert!(t.contains("cannot reach sip-ha on the standby"), "{t}");
    assert!(
        target_line(&t, &s.nas).contains("sync: 2 files sent"),
        "{t}"
    );
    assert_same_tree(&s.src, &s.mirror("nas"));
    assert!(!s.standby.exists());
}

#[test]
fn a_file_over_max_file_size_is_held_and_the_standby_copy_left_alone() {
    let s = Setup::new(Options {
        path_lines: "max_file_size = \"64 KiB\"",
        targets: &[],
        peer_reachable: true,
    });
    write(
        &s.src.join("small.conf"),
        b"small\n",
        0o644,
        (1_700_000_000, 0),
    );
    write(
        &s.src.join("greeting.wav"),
        &[3; 1000],
        0o644,
        (1_700_000_000, 0),
    );
    write(
        &s.src.join("big.wav"),
        &[7; 100 * 1024],
        0o644,
        (1_700_000_000, 0),
    );
    let out = s.sync();
    let t = text(&out);
    assert!(out.status.success(), "warnings are not errors: {t}");
    assert!(!s.standby.join("big.wav").exists(), "{t}");
    assert_eq!(
        std::fs::read(s.standby.join("small.conf")).unwrap(),
        b"small\n"
    );
    let warning = format!(
        "warning: {}: 100.0 KiB (102400 bytes), larger than max_file_size 64.0 KiB: not sent",
        s.src.join("big.wav").display()
    );
    assert_eq!(t.matches(&warning).count(), 1, "one warning per file:\n{t}");

    // greeting.wav was sent when small; now it grows past the limit, and
    // the standby keeps the copy it has (it is not deleted either).
    write(
        &s.src.join("greeting.wav"),
        &[4; 80 * 1024],
        0o644,
        (1_700_000_500, 0),
    );
    let before = snapshot(&s.standby);
    let out = s.sync();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("greeting.wav: 80.0 KiB"), "{t}");
    assert_eq!(
        snapshot(&s.standby),
        before,
        "the standby's copy was touched"
    );
    assert_eq!(
        std::fs::read(s.standby.join("greeting.wav")).unwrap(),
        vec![3; 1000]
    );
}

/// Files rewritten in place (no temp file, no rename: as a careless editor
/// or a recorder does) while they are synced: the standby never holds a
/// mix of two versions. A read that the file's stat shows was disturbed is
/// not sent (it goes on the next run); a quiet file is.
#[test]
fn files_rewritten_in_place_during_the_sync_never_arrive_half_old_half_new() {
    use std::os::unix::fs::FileExt;
    let s = Setup::new(Options {
        path_lines: "",
        targets: &[],
        peer_reachable: true,
    });
    // One sent whole in a batch, one as a delta (over 1 MiB).
    let files = [("small.wav", 200 * 1024), ("big.wav", 8 * 1024 * 1024)];
    for (name, size) in files {
        write(
            &s.src.join(name),
            &vec![b'a'; size],
            0o644,
            (1_700_000_000, 0),
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let rewriter = {
        let (stop, src) = (stop.clone(), s.src.clone());
        std::thread::spawn(move || {
            let mut round = 0u8;
            while !stop.load(Ordering::Relaxed) {
                round = round.wrapping_add(1);
                let byte = b'a' + round % 2;
                for (name, size) in files {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(src.join(name))
                        .unwrap();
                    for at in (0..size).step_by(64 * 1024) {
                        f.write_all_at(&[byte; 64 * 1024], at as u64).unwrap();
                    }
                }
                // Quiet now and then: some runs find the files still.
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    let uniform = |path: &Path| match std::fs::read(path) {
        Ok(data) => data.iter().all(|&b| b == data[0]),
        Err(_) => true, // not sent yet
    };
    let mut caught = 0;
    for run in 0..12 {
        let out = s.sync();
        // A file caught changing is held with a warning, not an error.
        assert!(out.status.success(), "run {run}: {}", text(&out));
        caught += usize::from(text(&out).contains("changed while it was read"));
        for (name, _) in files {
            assert!(
                uniform(&s.standby.join(name)),
                "run {run}: the standby's {name} mixes two versions:\n{}",
                text(&out)
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    rewriter.join().unwrap();
    // The 8 MiB file takes longer to read than the writer's pauses: some
    // run read it while it changed (every run did, here).
    assert!(caught > 0, "no run caught a file changing");
    let out = s.sync();
    assert!(out.status.success(), "{}", text(&out));
    for (name, _) in files {
        assert_eq!(
            std::fs::read(s.standby.join(name)).unwrap(),
            std::fs::read(s.src.join(name)).unwrap(),
            "{name}"
        );
    }
}

/// Writes rows into `db` in a loop until `stop`, in `journal` mode; the
/// count of committed rows is kept in `committed`.
fn writer(
    db: PathBuf,
    journal: &'static str,
    stop: Arc<AtomicBool>,
    committed: Arc<std::sync::atomic::AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let c = Connection::open(&db).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        let mode: String = c
            .query_row(&format!("PRAGMA journal_mode={journal}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, journal.to_lowercase());
        // Nothing moves into the database file: a copy of the file alone
        // would miss every row.
        c.execute_batch(
            "PRAGMA wal_autocheckpoint=0;
             CREATE TABLE astdb (key TEXT PRIMARY KEY, value BLOB);",
        )
        .unwrap();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let tx = c.unchecked_transaction().unwrap();
            for _ in 0..20 {
                n += 1;
                tx.execute(
                    "INSERT INTO astdb (key, value) VALUES (?1, zeroblob(400))",
                    [format!("/SIP/Registry/{n}")],
                )
                .unwrap();
            }
            tx.commit().unwrap();
            committed.store(n, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

/// Integrity and row count of the database file `received`, opened from a
/// copy (opening it in place would make SQLite files beside it).
fn check_received(received: &Path, scratch: &Path) -> (String, u64) {
    let copy = scratch.join(received.file_name().unwrap());
    std::fs::copy(received, &copy).unwrap();
    let c = Connection::open_with_flags(&copy, OpenFlags::SQLITE_OPEN_READ_WRITE).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let rows: i64 = c
        .query_row("SELECT count(*) FROM astdb", [], |r| r.get(0))
        .unwrap();
    let rows = u64::try_from(rows).unwrap();
    drop(c);
    std::fs::remove_file(&copy).unwrap();
    (check, rows)
}

#[test]
fn sqlite_databases_written_during_the_sync_arrive_whole() {
    let s = Setup::new(Options {
        path_lines: "sqlite = [\"astdb.sqlite3\", \"cdr/cdr.db\"]",
        targets: &["nas"],
        peer_reachable: true,
    });
    write(&s.src.join("sip.conf"), b"x\n", 0o644, (1_700_000_000, 0));
    std::fs::create_dir(s.src.join("cdr")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let dbs = [("astdb.sqlite3", "WAL"), ("cdr/cdr.db", "DELETE")];
    let mut threads = Vec::new();
    let mut counts = Vec::new();
    for (name, journal) in dbs {
        let committed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        threads.push(writer(
            s.src.join(name),
            journal,
            Arc::clone(&stop),
            Arc::clone(&committed),
        ));
        counts.push(committed);
    }
    let scratch = s.base.join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while counts.iter().any(|c| c.load(Ordering::SeqCst) < 2000) {
        assert!(Instant::now() < deadline, "the writers are too slow");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        std::fs::metadata(s.src.join("astdb.sqlite3-wal"))
            .unwrap()
            .len()
            > 100_000,
        "the rows are in the WAL"
    );
    for round in 0..3 {
        let before: Vec<u64> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        let out = s.sync();
        let t = text(&out);
        assert!(out.status.success(), "round {round}: {t}");
        let during: Vec<u64> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        assert!(
            during.iter().zip(&before).all(|(d, b)| d > b),
            "the writers did not write during the sync: {before:?} {during:?}"
        );
        for dest in [s.standby.clone(), s.mirror("nas")] {
            for (i, (name, _)) in dbs.iter().enumerate() {
                let received = dest.join(name);
                for sibling in ["-wal", "-shm", "-journal"] {
                    let p = PathBuf::from(format!("{}{sibling}", received.display()));
                    assert!(!p.exists(), "round {round}: {} travelled", p.display());
                }
                let (check, rows) = check_received(&received, &scratch);
                assert_eq!(check, "ok", "round {round}: {}", received.display());
                assert!(
                    rows >= before[i] && rows <= during[i] && rows % 20 == 0,
                    "round {round}: {} has {rows} rows; committed before the sync: {}, \
                     after: {}",
                    received.display(),
                    before[i],
                    during[i]
                );
                let live_mode = std::fs::metadata(s.src.join(name)).unwrap().mode();
                let got_mode = std::fs::metadata(&received).unwrap().mode();
                assert_eq!(got_mode & 0o7777, live_mode & 0o7777);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    // Quiet now: the databases settle, and a second quiet run sends nothing.
    std::thread::sleep(Duration::from_millis(2100));
    let out = s.sync();
    assert!(out.status.success(), "{}", text(&out));
    let out = s.sync();
    let t = text(&out);
    assert!(
        t.lines().any(|l| l.starts_with("sync: 0 files sent")),
        "{t}"
    );
    assert!(
        target_line(&t, &s.nas).contains("sync: 0 files sent"),
        "{t}"
    );
}

#[test]
fn a_pass_of_the_active_node_mirrors_the_targets_with_the_peer_down() {
    let s = Setup::new(Options {
        path_lines: "",
        targets: &["nas", "unmounted"],
        peer_reachable: false,
    });
    write(&s.src.join("sip.conf"), b"x\n", 0o644, (1_700_000_000, 7));
    write(&s.src.join("keys/k"), b"k", 0o600, (1_700_000_001, 8));
    // A cron pass in an empty network namespace where this node holds the
    // service address and the peer is nowhere.
    let log = SyslogCapture::new();
    let script = format!(
        "ip link set lo up && ip addr add 192.0.2.122/24 dev lo && \
         exec {SIP_HA} -l --config {} --node master run",
        s.config.display()
    );
    let out = log
        .command(Path::new("sh"), true)
        .args(["-c", &script])
        .output()
        .unwrap();
    let lines = log.lines().join("\n");
    assert!(out.status.success(), "{}\n{lines}", text(&out));
    assert_same_tree(&s.src, &s.mirror("nas"));
    assert!(
        lines.contains(&format!(
            "sync to target {} every sync.interval: sync: 2 files sent",
            s.nas.display()
        )),
        "{lines}"
    );
    // The missing target is refused, not created, and alerted like a
    // refused push to the peer (an event in the history).
    assert!(!s.base.join("unmounted").exists());
    let history = std::fs::read_to_string(s.state.join("history.log")).unwrap();
    assert!(
        history.contains(&format!(
            "sync refused for safety: target {0}: sync target {0} does not exist",
            s.base.join("unmounted").display()
        )),
        "{history}"
    );
}

/// For the tests that drive the library: a config of the sync path `src`
/// and the target `nas` (no peer is reached), a logger, and a runtime like
/// the loop's (one thread).
fn local_mirror(
    base: &Path,
    src: &Path,
    nas: &Path,
    state: &Path,
) -> (
    sip_ha::config::Config,
    sip_ha::log::Logger,
    tokio::runtime::Runtime,
) {
    let text = format!(
        "[cluster]\nname = \"t\"\nservice_address = \"192.0.2.123/24\"\nstate_dir = \"{}\"\n\
         [nodes.master]\naddress = \"127.0.0.2\"\ninterface = \"lo\"\n\
         [nodes.slave]\naddress = \"127.0.0.1\"\ninterface = \"lo\"\n\
         [[sync.path]]\npath = \"{}\"\n[[sync.target]]\npath = \"{}\"\n",
        state.display(),
        src.display(),
        nas.display()
    );
    let cfg = sip_ha::config::parse(&text, &base.join("sip-ha.toml")).unwrap();
    let log = sip_ha::log::Logger::new("master", None, false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (cfg, log, rt)
}

/// The mirror's file work runs off the async thread: a ticker on the same
/// current-thread runtime (as the loop's health rounds are) keeps ticking
/// while a 64 MiB file is written to a target and hashed there.
#[test]
fn mirroring_does_not_stall_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    let (src, nas, state) = (base.join("src"), base.join("nas"), base.join("state"));
    std::fs::create_dir_all(&nas).unwrap();
    let mut data = vec![0u8; 64 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    write(&src.join("recording.wav"), &data, 0o644, (1_700_000_000, 0));
    drop(data);
    let (cfg, log, rt) = local_mirror(&base, &src, &nas, &state);
    let (results, worst) = rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                let mut worst = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    worst = worst.max(t.elapsed().saturating_sub(Duration::from_millis(10)));
                }
                worst
            }
        });
        let results = sip_ha::sync::target::push_targets(
            &cfg,
            &state,
            &log,
            sip_ha::sync::send::PushOptions::default(),
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        (results, ticker.await.unwrap())
    });
    let sum = results[0].1.as_ref().unwrap();
    assert_eq!((sum.files_sent, sum.errors.len()), (1, 0), "{sum}");
    assert_same_tree(&src, &nas.join(src.strip_prefix("/").unwrap()));
    println!(
        "64 MiB mirrored in {:?}; the runtime was late by {worst:?} at most",
        sum.elapsed
    );
    // Relative to the mirror's own time, not a wall-clock bound: file
    // work on the async thread would hold a tick for most of the mirror.
    assert!(
        worst < sum.elapsed / 4,
        "a tick was {worst:?} late in a {:?} mirror: file work ran on the async thread",
        sum.elapsed
    );
}

/// Timing, not a check: `cargo test --release --test sync_target --
/// --ignored --nocapture bench`. 10,000 files of 1 KiB in 100 directories
/// mirrored to a target (first copy, a quiet run, 1% changed), beside
/// `rsync -a --delete` between the same kind of directories.
#[test]
#[ignore]
fn bench_target_10k_small_files() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    let (src, nas, state) = (base.join("src"), base.join("nas"), base.join("state"));
    let rsync_dst = base.join("rsync");
    std::fs::create_dir_all(&nas).unwrap();
    std::fs::create_dir_all(&rsync_dst).unwrap();
    let file = |i: usize| src.join(format!("d{:03}/f{i}.wav", i % 100));
    for i in 0..10_000 {
        write(
            &file(i),
            &[b'a' + (i % 26) as u8; 1024],
            0o644,
            (1_700_000_000, 0),
        );
    }
    let (cfg, log, rt) = local_mirror(&base, &src, &nas, &state);
    let mirror = || {
        let t = Instant::now();
        let r = rt.block_on(sip_ha::sync::target::push_targets(
            &cfg,
            &state,
            &log,
            sip_ha::sync::send::PushOptions::default(),
        ));
        let sum = r[0].1.as_ref().unwrap();
        assert!(sum.ok(), "{sum}");
        (t.elapsed(), sum.files_sent)
    };
    let rsync = || {
        let t = Instant::now();
        let st = Command::new("rsync")
            .args(["-a", "--delete"])
            .arg(format!("{}/", src.display()))
            .arg(&rsync_dst)
            .status()
            .unwrap();
        assert!(st.success());
        t.elapsed()
    };
    let first = (mirror(), rsync());
    std::thread::sleep(Duration::from_secs(3));
    let quiet = (mirror(), rsync());
    for i in (0..10_000).step_by(100) {
        write(&file(i), &[b'z'; 1024], 0o644, (1_700_000_100, 0));
    }
    std::thread::sleep(Duration::from_secs(3));
    let changed = (mirror(), rsync());
    for (what, ((ours, files), theirs)) in [
        ("first copy", first),
        ("no change", quiet),
        ("1% changed", changed),
    ] {
        println!(
            "{what:>10}: target mirror {:>8.3} s ({files} files sent), rsync -a --delete {:>8.3} s",
            ours.as_secs_f64(),
            theirs.as_secs_f64()
        );
    }
    assert_same_tree(&src, &nas.join(src.strip_prefix("/").unwrap()));
}
