//! The active loop's watch on its sync paths, in the two-server lab:
//! with `sync.interval` at an hour, only the watch can explain a change
//! reaching the standby. Also `sip-ha sync` handed to a running loop.
//! Needs root; skips otherwise.
//!
//! `bench_sync_latency` (ignored; `bench/sync-latency.sh` runs it) times
//! 100 edits from the active server's file to the standby's copy.

mod common;
mod lab;

use lab::{Lab, LabOptions, Role};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(45);

/// A lab whose master's loop pushes `<lab dir>/data` (leaving out `*.swp`)
/// and whose slave receives it under its own directory (see
/// lifecycle.rs), with `fill` run on the data before the loops start. The
/// data and the slave's copy of it.
fn sync_lab(fill: impl FnOnce(&Path)) -> (Lab, PathBuf, PathBuf) {
    let options = LabOptions::default()
        .set("sync.interval", "\"1h\"")
        .append("[[sync.path]]\npath = \"{lab_dir}/data\"\nexclude = [\"*.swp\"]\n")
        .serve_args("--sync-prefix {node_dir}/recv")
        .loop_args(&["-l"]);
    let lab = Lab::start(options);
    let data = lab.dir().join("data");
    std::fs::create_dir_all(&data).unwrap();
    fill(&data);
    lab.start_loops();
    let settled = lab.wait_until(PATIENCE, || {
        lab.holder() == Some(Role::Master) && lab.state_of(Role::Slave) == "normal"
    });
    assert!(settled, "never settled:\n{}", lab.diagnostics());
    let mirror = lab
        .slave()
        .dir()
        .join("recv")
        .join(data.strip_prefix("/").unwrap());
    (lab, data, mirror)
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Wait until `path` holds `want`; fail saying `what` did not arrive.
fn must_arrive(lab: &Lab, path: &Path, want: &str, what: &str) {
    let arrived = lab.wait_until(PATIENCE, || read(path).as_deref() == Some(want));
    assert!(arrived, "{what}:\n{}", lab.diagnostics());
}

#[test]
fn the_watch_pushes_edits_new_files_and_deletes_but_not_excluded_files() {
    if !lab::root_or_skip() {
        return;
    }
    let (lab, data, mirror) = sync_lab(|data| {
        std::fs::create_dir_all(data.join("voicemail/1000/INBOX")).unwrap();
        std::fs::write(data.join("extensions.conf"), "[default]\n").unwrap();
        std::fs::write(data.join("voicemail/1000/INBOX/msg0000.txt"), "m0\n").unwrap();
        std::fs::write(data.join("keep.conf"), "as on the master\n").unwrap();
    });
    // The first push, when the master became active.
    must_arrive(
        &lab,
        &mirror.join("keep.conf"),
        "as on the master\n",
        "first push",
    );

    std::fs::write(data.join("extensions.conf"), "[default]\nexten => 1\n").unwrap();
    let edited = mirror.join("extensions.conf");
    must_arrive(&lab, &edited, "[default]\nexten => 1\n", "edit not pushed");
    std::fs::create_dir_all(data.join("voicemail/1001/INBOX")).unwrap();
    std::fs::write(data.join("voicemail/1001/INBOX/msg0000.txt"), "new\n").unwrap();
    let new = mirror.join("voicemail/1001/INBOX/msg0000.txt");
    must_arrive(&lab, &new, "new\n", "new file not pushed");
    std::fs::remove_file(data.join("voicemail/1000/INBOX/msg0000.txt")).unwrap();
    let gone = lab.wait_until(PATIENCE, || {
        !mirror.join("voicemail/1000/INBOX/msg0000.txt").exists()
    });
    assert!(gone, "delete not pushed:\n{}", lab.diagnostics());

    // Each push logs the first change that started it (with -l): the
    // excluded file, written first, must be in none of them.
    std::fs::write(data.join("notes.swp"), "an editor's swap file\n").unwrap();
    std::fs::write(data.join("marker.conf"), "after the swap file\n").unwrap();
    must_arrive(
        &lab,
        &mirror.join("marker.conf"),
        "after the swap file\n",
        "marker not pushed",
    );
    // The push logs its line once the standby has confirmed it.
    let logged = lab.wait_until(PATIENCE, || {
        lab.master().loop_log().contains("/data/marker.conf)")
    });
    let log = lab.master().loop_log();
    assert!(logged, "{log}");
    assert!(
        !log.contains("notes.swp"),
        "the excluded file started a push:\n{log}"
    );
    assert!(!mirror.join("notes.swp").exists());

    // An edit by hand on the standby: only a push undoes it.
    std::fs::write(mirror.join("keep.conf"), "edited on the standby\n").unwrap();

    // `sip-ha sync` with the loop running: handed to it (on its own it
    // would find the lock held), --dry-run passed through.
    let out = lab.master().sip_ha_ok(&["sync", "--dry-run"]);
    assert!(out.contains("dry run, nothing changed"), "{out}");
    assert!(out.contains("keep.conf"), "lists the change: {out}");
    assert_eq!(
        read(&mirror.join("keep.conf")).as_deref(),
        Some("edited on the standby\n"),
        "a dry run changed the standby"
    );
    let out = lab.master().sip_ha_ok(&["sync"]);
    let summary = out.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("sync: 1 files sent"),
        "the loop's summary: {out}"
    );
    assert_eq!(
        read(&mirror.join("keep.conf")).as_deref(),
        Some("as on the master\n"),
        "the push is done when the command returns"
    );
    // On the standby, its loop refuses.
    let out = lab.slave().sip_ha(&["sync"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("this server is standby"), "{err}");
}

/// The pushes the master logged after the first `from` bytes of its log:
/// per push, the files it sent and the files it checked.
fn pushes_logged_after(lab: &Lab, from: usize) -> Vec<(u64, u64)> {
    let log = lab.master().loop_log();
    let number_before = |line: &str, what: &str| -> Option<u64> {
        let head = &line[..line.find(what)?];
        head.rsplit(' ').next()?.parse().ok()
    };
    log.get(from..)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let sent = number_before(l, " files sent")?;
            Some((sent, number_before(l, " files checked")?))
        })
        .collect()
}

/// Write `body` to `file` (under the master's data) and wait until it is
/// on the standby (`copy`) and a push that sent a file has logged its
/// line. Then every push since the write, whichever carried it (one
/// started by an earlier event may have), must have checked at most `max`
/// files.
fn edit_checking_at_most(lab: &Lab, file: &Path, copy: &Path, body: &str, max: u64) {
    let from = lab.master().loop_log().len();
    std::fs::write(file, body).unwrap();
    must_arrive(lab, copy, body, "edit not pushed");
    let logged = lab.wait_until(PATIENCE, || {
        pushes_logged_after(lab, from)
            .iter()
            .any(|(sent, _)| *sent > 0)
    });
    let log = lab.master().loop_log();
    assert!(logged, "no push logged for {}:\n{log}", file.display());
    let pushes = pushes_logged_after(lab, from);
    assert!(
        pushes.iter().all(|(_, checked)| *checked <= max),
        "after an edit of {}, pushes (sent, checked) {pushes:?}, at most {max} checked wanted:\n{log}",
        file.display()
    );
}

#[test]
fn pushes_for_changes_check_only_what_the_watch_saw_and_miss_nothing() {
    if !lab::root_or_skip() {
        return;
    }
    // 20 directories of 50 files.
    let (lab, data, mirror) = sync_lab(|data| {
        for d in 0..20 {
            let dir = data.join(format!("d{d:02}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..50 {
                std::fs::write(dir.join(format!("f{f:02}")), format!("{d} {f}\n")).unwrap();
            }
        }
        std::fs::write(data.join("edited.conf"), "edit 0\n").unwrap();
    });
    must_arrive(&lab, &mirror.join("edited.conf"), "edit 0\n", "first push");
    // The watch's first push reads everything (nothing noted before it is
    // trusted): once it has run, the pushes for changes are journaled.
    let watched = lab.wait_until(PATIENCE, || {
        lab.master()
            .loop_log()
            .contains("once the watch was set up")
    });
    assert!(watched, "{}", lab.master().loop_log());

    // An edit deep in the tree: its push reads that directory (50 files),
    // not the 1,001.
    let deep = data.join("d07/f13");
    edit_checking_at_most(&lab, &deep, &mirror.join("d07/f13"), "edited\n", 50);

    // Edited by hand on the standby, then on the master: the push trusts
    // the standby's manifest (which still has the old version), yet reads
    // that file again before comparing, so the standby's version is kept
    // as a conflict copy, not silently replaced.
    std::fs::write(mirror.join("d03/f05"), "edited on the standby\n").unwrap();
    let both = data.join("d03/f05");
    edit_checking_at_most(
        &lab,
        &both,
        &mirror.join("d03/f05"),
        "edited on the master\n",
        50,
    );
    let kept: Vec<String> = std::fs::read_dir(mirror.join("d03"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("f05.sip-ha-conflict-slave-"))
        .collect();
    assert_eq!(kept.len(), 1, "conflict copies: {kept:?}");
    assert_eq!(
        read(&mirror.join("d03").join(&kept[0])).as_deref(),
        Some("edited on the standby\n")
    );

    // A new directory filled at once, and one moved in from outside the
    // tree with its files: the watch's first sight of either comes before
    // its own watch is set, and the journal must not lose what is written
    // meanwhile.
    let fresh = data.join("voicemail/1000/INBOX");
    std::fs::create_dir_all(&fresh).unwrap();
    for m in 0..10 {
        std::fs::write(fresh.join(format!("msg{m:04}.txt")), format!("m{m}\n")).unwrap();
    }
    let outside = lab.dir().join("outside/moved");
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::fs::write(outside.join("sub/a.conf"), "moved in\n").unwrap();
    std::fs::rename(&outside, data.join("moved")).unwrap();
    std::fs::write(data.join("moved/sub/b.conf"), "written after the move\n").unwrap();
    must_arrive(
        &lab,
        &mirror.join("voicemail/1000/INBOX/msg0009.txt"),
        "m9\n",
        "files of a new directory not pushed",
    );
    must_arrive(
        &lab,
        &mirror.join("moved/sub/a.conf"),
        "moved in\n",
        "a directory moved in not pushed",
    );
    must_arrive(
        &lab,
        &mirror.join("moved/sub/b.conf"),
        "written after the move\n",
        "a file written in a directory just moved in not pushed",
    );

    // Once the new directories' watches surely stand, edits there are
    // pushed from the journal again: from the second push on (the first
    // one's record began while they were settling).
    std::thread::sleep(sip_ha::sync::journal::SETTLE + Duration::from_secs(1));
    let m3 = fresh.join("msg0003.txt");
    std::fs::write(&m3, "listened to\n").unwrap();
    must_arrive(
        &lab,
        &mirror.join("voicemail/1000/INBOX/msg0003.txt"),
        "listened to\n",
        "edit in a new directory not pushed",
    );
    std::thread::sleep(Duration::from_secs(1));
    let m4 = fresh.join("msg0004.txt");
    let copy = mirror.join("voicemail/1000/INBOX/msg0004.txt");
    edit_checking_at_most(&lab, &m4, &copy, "listened to\n", 10);

    // Everything is there, exactly.
    let out = lab.master().sip_ha_ok(&["sync", "--dry-run"]);
    assert!(out.contains("sync: 0 files sent"), "{out}");
    let out = lab.master().sip_ha_ok(&["sync", "--verify", "--dry-run"]);
    assert!(
        out.contains("sync: 0 files sent"),
        "a full check finds more: {out}"
    );
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `SIPHA_BENCH_EDITS` edits (default 100), one after another, of a file
/// on the active server in a tree of `SIPHA_BENCH_FILES` other files
/// (default 1000, 100 per directory): the time from each write until the
/// standby's copy has the new content (polled every millisecond), p50 and
/// p95. Reports, does not assert times.
#[test]
#[ignore]
fn bench_sync_latency() {
    if !lab::root_or_skip() {
        return;
    }
    let (edits, files) = (
        env_number("SIPHA_BENCH_EDITS", 100),
        env_number("SIPHA_BENCH_FILES", 1000),
    );
    let (lab, data, mirror) = sync_lab(|data| {
        for i in 0..files {
            let dir = data.join(format!("d{:04}", i / 100));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("f{i}")), format!("{i}\n")).unwrap();
        }
        std::fs::write(data.join("edited.conf"), "edit 0\n").unwrap();
    });
    // The first copy of a big tree takes a while.
    let first = lab.wait_until(Duration::from_secs(3600), || {
        read(&mirror.join("edited.conf")).as_deref() == Some("edit 0\n")
    });
    assert!(first, "first push:\n{}", lab.diagnostics());
    let file = data.join("edited.conf");
    let copy = mirror.join("edited.conf");
    let mut times = Vec::new();
    for n in 1..=edits {
        let want = format!("edit {n}\n");
        let start = Instant::now();
        std::fs::write(&file, &want).unwrap();
        let arrived = lab::wait_until_every(Duration::from_millis(1), PATIENCE, || {
            read(&copy).as_deref() == Some(want.as_str())
        });
        assert!(arrived, "edit {n} never arrived:\n{}", lab.diagnostics());
        times.push(start.elapsed().as_secs_f64());
        // Apart, so that each edit is a push of its own.
        std::thread::sleep(Duration::from_millis(300));
    }
    times.sort_by(|a, b| a.total_cmp(b));
    eprintln!(
        "sync latency: edits={edits} files={files} p50={:.3}s p95={:.3}s min={:.3}s max={:.3}s",
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        times[0],
        times[times.len() - 1]
    );
    // The master's own account of each push for an edit: how long it took
    // (from the scan to the standby's last answer) and how many files'
    // stat it read.
    let log = lab.master().loop_log();
    let number_before = |line: &str, what: &str| -> Option<f64> {
        let head = &line[..line.find(what)?];
        head.rsplit(' ').next()?.parse().ok()
    };
    let (mut took, mut checked): (Vec<f64>, Vec<f64>) = log
        .lines()
        .filter(|l| l.contains("edited.conf): sync: 1 files sent"))
        .filter_map(|l| {
            let secs = l.trim_end().strip_suffix(" s")?.rsplit(' ').next()?;
            Some((
                secs.parse::<f64>().ok()?,
                number_before(l, " files checked")?,
            ))
        })
        .unzip();
    took.sort_by(|a, b| a.total_cmp(b));
    checked.sort_by(|a, b| a.total_cmp(b));
    if !took.is_empty() {
        eprintln!(
            "sync latency: pushes={} push time p50={:.3}s p95={:.3}s; files checked p50={} max={}",
            took.len(),
            percentile(&took, 0.5),
            percentile(&took, 0.95),
            percentile(&checked, 0.5),
            checked[checked.len() - 1]
        );
    }
}

/// A PBX-like tree (bench/gen-pbx-tree.py, as bench/sync.sh makes it) of
/// `SIPHA_BENCH_FILES` small files (default 100,000) on the master, the
/// loops running. Three times: 1% of the files rewritten at once (the
/// generator's `touch`), then the time from the end of that until the
/// standby has every rewritten file (polled every 5 ms), against `rsync -a
/// --delete` of the same tree over the same sshd to a copy of its own,
/// started at the same point, in the same run. Reports, does not assert
/// times (bench/sync-loop.sh runs it).
#[test]
#[ignore]
fn bench_sync_loop_against_rsync() {
    if !lab::root_or_skip() {
        return;
    }
    let files = env_number("SIPHA_BENCH_FILES", 100_000);
    let generator = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/gen-pbx-tree.py");
    let generate = |args: &[&str]| -> String {
        let out = std::process::Command::new("python3")
            .arg(&generator)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let (lab, data, mirror) = sync_lab(|data| {
        generate(&["small", data.to_str().unwrap(), &files.to_string()]);
        std::fs::write(data.join("edited.conf"), "edit 0\n").unwrap();
    });
    let first = lab.wait_until(Duration::from_secs(3600), || {
        read(&mirror.join("edited.conf")).as_deref() == Some("edit 0\n")
    });
    assert!(first, "first push:\n{}", lab.diagnostics());
    let watched = lab.wait_until(PATIENCE, || {
        lab.master()
            .loop_log()
            .contains("once the watch was set up")
    });
    assert!(watched, "{}", lab.master().loop_log());

    // rsync logs in with a key of its own, to a copy of its own.
    let key = lab.master().dir().join("rsync_key");
    common::sshd::keygen(&key, "rsync");
    lab.slave()
        .authorize_plain_key(&common::sshd::public_key(&key));
    let rsh = format!(
        "ssh -F /dev/null -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
        key.display(),
        lab.master().dir().join("known_hosts").display()
    );
    let rsync_copy = lab.slave().dir().join("rsync-copy");
    let target = format!(
        "root@{}:{}/",
        lab.slave().management_address(),
        rsync_copy.display()
    );
    let source = format!("{}/", data.display());
    // Nothing left dirty in the page cache before each timed run (sip-ha
    // flushes what it writes, rsync does not: the next flush would pay for
    // the other's data), as in bench/sync.sh.
    let settle = || {
        for _ in 0..2 {
            assert!(std::process::Command::new("sync")
                .status()
                .unwrap()
                .success());
        }
    };
    let rsync = || {
        settle();
        let t = Instant::now();
        let out = lab
            .master()
            .exec("rsync", &["-a", "--delete", "-e", &rsh, &source, &target]);
        assert!(out.status.success(), "rsync: {out:?}");
        t.elapsed().as_secs_f64()
    };
    rsync();

    for round in 1..=3 {
        settle();
        let listed = generate(&["touch", data.to_str().unwrap(), "1", "list"]);
        let done = Instant::now();
        let touched: Vec<PathBuf> = listed.lines().skip(1).map(PathBuf::from).collect();
        let arrived = lab::wait_until_every(Duration::from_millis(5), PATIENCE, || {
            touched.iter().all(|p| {
                let copy = mirror.join(p.strip_prefix(&data).unwrap());
                std::fs::read(&copy).ok() == std::fs::read(p).ok()
            })
        });
        let sipha = done.elapsed().as_secs_f64();
        assert!(
            arrived,
            "round {round} never arrived:\n{}",
            lab.diagnostics()
        );
        let rsynced = rsync();
        eprintln!(
            "sync loop vs rsync: round {round}: {} files of {files} rewritten; \
             sip-ha's loop had them on the standby {sipha:.3} s after, \
             rsync -a --delete took {rsynced:.3} s; rsync/sip-ha {:.2}",
            touched.len(),
            rsynced / sipha
        );
        // The loop's pushes for it are over before the next round.
        std::thread::sleep(Duration::from_secs(2));
    }
    let log = lab.master().loop_log();
    for line in log
        .lines()
        .filter(|l| l.contains("change(s)"))
        .rev()
        .take(6)
    {
        eprintln!("sync loop vs rsync: master: {line}");
    }
}

/// Set for the test run inside a user namespace of its own.
const IN_USERNS: &str = "SIPHA_TEST_IN_USERNS";

/// Running out of inotify watches is told apart from other failures (the
/// loop then warns once, naming the sysctl, and pushes every interval
/// only). The limit is lowered in a user namespace of its own, where it
/// binds this test alone: `unshare -U -r` runs the helper below there.
#[test]
fn running_out_of_inotify_watches_is_reported() {
    if !common::netns::is_root() {
        eprintln!("skipped: needs root (unshare -U, max_inotify_watches)");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = lab::run_with_timeout(
        std::process::Command::new("unshare")
            .args(["-U", "-r"])
            .arg(exe)
            .args(["--exact", "watch_limit_in_a_user_namespace"])
            .args(["--ignored", "--nocapture", "--test-threads=1"])
            .env(IN_USERNS, "1"),
        lab::COMMAND_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "a helper: running_out_of_inotify_watches_is_reported runs it in a user namespace"]
fn watch_limit_in_a_user_namespace() {
    use sip_ha::config::SyncPath;
    use sip_ha::driver::watch::{News, StartError, Watch};
    assert!(
        std::env::var_os(IN_USERNS).is_some(),
        "run by running_out_of_inotify_watches_is_reported, in a user namespace"
    );
    std::fs::write("/proc/sys/user/max_inotify_watches", "4").unwrap();
    let tree = |dirs: usize| {
        let root = tempfile::tempdir().unwrap();
        for i in 0..dirs {
            std::fs::create_dir(root.path().join(format!("d{i}"))).unwrap();
        }
        let paths = vec![SyncPath {
            path: root.path().to_path_buf(),
            exclude: Vec::new(),
            delete: true,
            max_file_size: None,
            sqlite: Vec::new(),
        }];
        (root, paths)
    };
    // Within the limit, then new directories past it: news for the loop.
    let (root, paths) = tree(1);
    let watch = Watch::start(&paths).unwrap_or_else(|e| panic!("{e:?}"));
    for i in 1..6 {
        std::fs::create_dir(root.path().join(format!("d{i}"))).unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let news = rt.block_on(async {
        tokio::time::timeout(PATIENCE, async {
            loop {
                match watch.next().await {
                    News::Limit => return News::Limit,
                    // The directories' creation, before the limit was hit.
                    News::Push(_) => continue,
                    other => return other,
                }
            }
        })
        .await
    });
    assert_eq!(news.ok(), Some(News::Limit));
    drop(watch);
    // Past the limit from the start.
    let (_root, paths) = tree(8);
    match Watch::start(&paths) {
        Err(StartError::Limit(p)) => assert_eq!(p, paths),
        Err(other) => panic!("not told apart: {other:?}"),
        Ok(_) => panic!("8 directories watched with 4 watches?"),
    }
}
