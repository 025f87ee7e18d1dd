//! `sip-ha sync` end to end: this node (the master) pushes its `[sync]`
//! paths over a real sshd whose `authorized_keys` forces
//! `sip-ha --config <same config> --node slave serve --sync-prefix <dst>`,
//! so the receiver is the real binary's `serve`, writing each configured
//! path under `<dst>` (two "servers" on one machine).
//!
//! What is checked: trees match after a sync (content, mode, mtime to the
//! nanosecond, symlinks), and the standby's saved manifest matches a full
//! scan of its tree; a no-change run costs < 1 KiB on the wire; a
//! one-byte edit in a 32 MiB file sends at most two chunks; bad paths in
//! raw protocol requests are refused; mass deletion and an empty source are
//! refused; conflicts keep the standby's copy; the standby refuses to push;
//! a sender killed mid-file leaves no partial file under the final name.

mod common;

use common::sync_pair::{assert_same, assert_standby_manifest_exact, text, Pair};
use common::tree::set_mtime;
use proptest::prelude::*;
use sip_ha::link::protocol::WholeFile;
use sip_ha::link::{frame, Request, Response};
use sip_ha::sync::receive::FileMeta;
use sip_ha::sync::RelPath;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn clear(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------

/// One random tree item: a path of up to 3 components and what it is.
#[derive(Debug, Clone)]
enum Item {
    File(Vec<u8>, u32, i64, u32),
    Dir(u32),
    Link(String),
}

fn item() -> impl Strategy<Value = (Vec<String>, Item)> {
    let name = "[a-d]{1,2}";
    let path = prop::collection::vec(name, 1..4);
    let what = prop_oneof![
        4 => (prop::collection::vec(any::<u8>(), 0..3000), prop_oneof![Just(0o644u32), Just(0o600), Just(0o755), Just(0o640)], 1_000_000_000i64..1_900_000_000, 0u32..1_000_000_000)
            .prop_map(|(d, m, s, n)| Item::File(d, m, s, n)),
        1 => prop_oneof![Just(0o755u32), Just(0o700), Just(0o750)].prop_map(Item::Dir),
        1 => "[a-z./]{1,12}".prop_map(Item::Link),
    ];
    (path, what)
}

fn build(root: &Path, items: &[(Vec<String>, Item)]) {
    let mut dir_modes = Vec::new();
    for (parts, what) in items {
        let mut p = root.to_path_buf();
        let mut ok = true;
        for d in &parts[..parts.len() - 1] {
            p.push(d);
            match std::fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => {}
                Ok(_) => {
                    ok = false;
                    break;
                }
                Err(_) => std::fs::create_dir(&p).unwrap(),
            }
        }
        let last = parts.last().unwrap();
        p.push(last);
        if !ok || std::fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        match what {
            Item::File(data, mode, s, n) => {
                std::fs::write(&p, data).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
                set_mtime(&p, *s, i64::from(*n));
            }
            Item::Dir(mode) => {
                std::fs::create_dir(&p).unwrap();
                dir_modes.push((p, *mode));
            }
            Item::Link(t) => std::os::unix::fs::symlink(t, &p).unwrap(),
        }
    }
    // Modes last: a 0o700 parent is still writable by root anyway.
    for (p, mode) in dir_modes {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

#[test]
fn random_trees_arrive_whole() {
    let pair = Pair::new(100);
    pair.make_active();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 16,
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(item(), 1..40), |items| {
            clear(&pair.src);
            build(&pair.src, &items);
            std::fs::write(pair.src.join("always"), b"x").unwrap();
            pair.sync_ok();
            assert_same(&pair);
            assert_standby_manifest_exact(&pair);
            Ok(())
        })
        .unwrap();
}

#[test]
fn no_change_costs_under_a_kibibyte_and_an_edit_two_chunks() {
    let pair = Pair::new(50);
    pair.make_active();
    for i in 0..200 {
        let d = pair.src.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(format!("f{i}.conf")),
            format!("[section{i}]\nkey=value\n"),
        )
        .unwrap();
    }
    // 32 MiB of data that chunks well (not repeating).
    let mut big = vec![0u8; 32 * 1024 * 1024];
    let mut x = 0x9e3779b97f4a7c15u64;
    for b in big.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    std::fs::write(pair.src.join("big.wav"), &big).unwrap();
    let first = pair.sync_ok();
    assert_eq!(first.files, 201, "{first:?}");
    assert_same(&pair);

    let second = pair.sync_ok();
    assert_eq!(second.files, 0, "{second:?}");
    assert!(
        second.wire < 1024,
        "no-change run put {} bytes on the wire",
        second.wire
    );

    big[20 * 1024 * 1024] ^= 0xff;
    std::fs::write(pair.src.join("big.wav"), &big).unwrap();
    let edit = pair.sync_ok();
    assert_eq!(edit.files, 1, "{edit:?}");
    assert!(
        edit.data <= 2 * u64::from(sip_ha::sync::chunk::MAX_CHUNK),
        "a one-byte edit sent {} bytes of data",
        edit.data
    );
    assert_same(&pair);
    assert_standby_manifest_exact(&pair);
}

/// A request encoded with a placeholder path of the same length, the
/// placeholder then replaced by `bad` in the encoded bytes.
fn with_bad_path(request: impl Fn(RelPath) -> Request, bad: &[u8]) -> Vec<u8> {
    let placeholder: Vec<u8> = std::iter::repeat_n(b'q', bad.len()).collect();
    let mut bytes = frame::encode(&request(RelPath::new(&placeholder).unwrap())).unwrap();
    let at = bytes
        .windows(placeholder.len())
        .position(|w| w == placeholder.as_slice())
        .unwrap();
    bytes[at..at + bad.len()].copy_from_slice(bad);
    bytes
}

fn meta() -> FileMeta {
    FileMeta {
        mode: 0o644,
        user: None,
        group: None,
        uid: 0,
        gid: 0,
        mtime_ns: 1_700_000_000_000_000_000,
        size: 5,
    }
}

fn whole(rel: RelPath) -> Request {
    Request::FileWhole {
        rel,
        meta: meta(),
        data: b"owned".to_vec(),
        hash: *blake3::hash(b"owned").as_bytes(),
        keep_old: None,
    }
}

#[tokio::test]
async fn bad_paths_in_requests_are_refused() {
    let pair = Pair::new(50);
    let outside = pair.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let mut link = pair.link().await;

    // A path not in the receiver's config.
    let r = link
        .request(&Request::SyncRoot {
            path: outside.display().to_string(),
            verify: false,
            token: 1,
            trust: None,
        })
        .await
        .unwrap();
    assert!(
        matches!(&r, Response::Error(e) if e.contains("not a [[sync.path]]")),
        "{r:?}"
    );
    // Nothing before SyncRoot.
    let r = link
        .request(&whole(RelPath::new(b"x").unwrap()))
        .await
        .unwrap();
    assert!(
        matches!(&r, Response::Error(e) if e.contains("no sync in progress")),
        "{r:?}"
    );

    let r = link
        .request(&Request::SyncRoot {
            path: pair.src.display().to_string(),
            verify: false,
            token: 1,
            trust: None,
        })
        .await
        .unwrap();
    assert!(matches!(r, Response::SyncRoot { .. }), "{r:?}");

    let escape = format!("../../../../{}", outside.join("dotdot").display());
    let absolute = outside.join("absolute").display().to_string();
    for bad in [
        escape.as_bytes(),
        absolute.as_bytes(),
        b"a/../../x".as_slice(),
    ] {
        let r = link.request_raw(&with_bad_path(whole, bad)).await.unwrap();
        assert!(matches!(r, Response::Error(_)), "{r:?}");
        let r = link
            .request_raw(&with_bad_path(
                |rel| Request::SyncDelete { rels: vec![rel] },
                bad,
            ))
            .await
            .unwrap();
        assert!(matches!(r, Response::Error(_)), "{r:?}");
    }
    // A symlink leading out, then a file through it.
    let r = link
        .request(&Request::SyncSymlink {
            rel: RelPath::new(b"evil").unwrap(),
            target: outside.display().to_string().into_bytes(),
            meta: meta(),
            keep_old: None,
        })
        .await
        .unwrap();
    assert_eq!(r, Response::Ok, "a symlink itself may point anywhere");
    let r = link
        .request(&whole(RelPath::new(b"evil/pwned").unwrap()))
        .await
        .unwrap();
    assert!(matches!(r, Response::Error(_)), "{r:?}");
    let r = link
        .request(&Request::SyncDir {
            rel: RelPath::new(b"evil/sub").unwrap(),
            meta: meta(),
        })
        .await
        .unwrap();
    assert!(matches!(r, Response::Error(_)), "{r:?}");

    // The same in a batch of small files. A '..' path does not even
    // decode: the whole batch is refused. A path through the symlink is
    // refused alone, and the good file beside it lands (a batch's outcome
    // comes with a later request: here the flush).
    let good = b"fine.txt".to_vec();
    let batch = |rels: Vec<RelPath>| {
        Request::Files(
            rels.into_iter()
                .map(|rel| WholeFile {
                    rel,
                    meta: meta(),
                    data: b"owned".to_vec(),
                    hash: *blake3::hash(b"owned").as_bytes(),
                    keep_old: None,
                })
                .collect(),
        )
    };
    let bad_escape = with_bad_path(
        |rel| batch(vec![RelPath::new(&good).unwrap(), rel]),
        escape.as_bytes(),
    );
    let r = link.request_raw(&bad_escape).await.unwrap();
    assert!(matches!(r, Response::Error(_)), "{r:?}");
    assert!(
        !pair.dst_root.join("fine.txt").exists(),
        "half a refused batch landed"
    );
    let r = link
        .request(&batch(vec![
            RelPath::new(&good).unwrap(),
            RelPath::new(b"evil/pwned2").unwrap(),
        ]))
        .await
        .unwrap();
    assert_eq!(
        r,
        Response::Files(vec![]),
        "the answer is about earlier batches only: none"
    );
    match link.request(&Request::FilesFlush).await.unwrap() {
        Response::Files(results) => assert!(
            matches!(results.as_slice(), [None, Some(_)]),
            "the good file in place, the one through the symlink refused: {results:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read(pair.dst_root.join("fine.txt")).unwrap(),
        b"owned"
    );
    link.close().await;

    let left: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
    assert!(left.is_empty(), "something was written outside: {left:?}");
    assert!(!pair.dir.path().join("absolute").exists());
}

#[test]
fn mass_delete_and_empty_source_are_refused() {
    let pair = Pair::new(50);
    pair.make_active();
    for i in 0..10 {
        std::fs::write(pair.src.join(format!("f{i}")), format!("{i}")).unwrap();
    }
    pair.sync_ok();
    for i in 0..8 {
        std::fs::remove_file(pair.src.join(format!("f{i}"))).unwrap();
    }
    let out = pair.sync(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("refusing to sync: it would delete 8 of the standby's 10 files (80.0%)"),
        "{t}"
    );
    assert_eq!(
        std::fs::read_dir(&pair.dst_root).unwrap().count(),
        11,
        "10 files and the trash"
    );

    clear(&pair.src);
    let out = pair.sync(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("is empty: is the disk mounted?"),
        "{}",
        text(&out)
    );
    assert!(pair.dst_root.join("f9").exists());
}

#[test]
fn conflict_keeps_the_standby_copy() {
    let pair = Pair::new(50);
    pair.make_active();
    std::fs::write(pair.src.join("sip.conf"), "base\n").unwrap();
    std::fs::write(pair.src.join("other.conf"), "other\n").unwrap();
    pair.sync_ok();
    std::fs::write(pair.src.join("sip.conf"), "active edit\n").unwrap();
    std::fs::write(pair.dst_root.join("sip.conf"), "standby edit\n").unwrap();
    let out = pair.sync(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("conflict: "), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(pair.dst_root.join("sip.conf")).unwrap(),
        "active edit\n"
    );
    let kept: Vec<_> = std::fs::read_dir(&pair.dst_root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sip.conf.sip-ha-conflict-slave-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        std::fs::read_to_string(pair.dst_root.join(&kept[0])).unwrap(),
        "standby edit\n"
    );
    assert_same(&pair);
}

#[test]
fn the_standby_refuses_to_push() {
    let pair = Pair::new(50);
    std::fs::write(pair.src.join("sip.conf"), "x\n").unwrap();
    let out = pair.sync(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "this server is standby: sync flows from the active server (slave, 127.0.0.1) only"
        ),
        "{}",
        text(&out)
    );
    assert!(!pair.dst_root.exists());
}

#[test]
fn sender_killed_mid_file_leaves_no_partial_file() {
    let pair = Pair::new(50);
    pair.make_active();
    let mut big = vec![0u8; 256 * 1024 * 1024];
    let mut x = 0x2545f4914f6cdd1du64;
    for b in big.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(pair.src.join("recording.wav"), &big).unwrap();
    drop(big);
    let mut child = pair
        .sync_command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the temp file on the receiver, then kill -9 the sender.
    let deadline = Instant::now() + Duration::from_secs(120);
    let temp_seen = loop {
        let temp = std::fs::read_dir(&pair.dst_root).ok().and_then(|d| {
            d.filter_map(Result::ok)
                .find(|e| e.file_name().to_string_lossy().contains(".sip-ha-tmp-"))
        });
        if let Some(t) = temp {
            if t.metadata().map(|m| m.len()).unwrap_or(0) > 0 {
                break true;
            }
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    assert!(temp_seen, "never saw the transfer in progress");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !pair.dst_root.join("recording.wav").exists(),
        "a partial file under the final name"
    );
    let s = pair.sync_ok();
    assert_eq!(s.files, 1);
    assert_same(&pair);
    let temps: Vec<_> = std::fs::read_dir(&pair.dst_root)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".sip-ha-tmp-"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
}

/// Timing, not a check: `cargo test --release --test sync -- --ignored
/// --nocapture bench`. 10,000 small files: first copy, then a no-change run.
#[test]
#[ignore]
fn bench_10k_small_files() {
    let pair = Pair::new(50);
    pair.make_active();
    for i in 0..10_000 {
        let d = pair.src.join(format!("d{:03}", i % 100));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(format!("f{i}.conf")),
            vec![b'a' + (i % 26) as u8; 1024],
        )
        .unwrap();
    }
    let t = Instant::now();
    let first = pair.sync_ok();
    let first_time = t.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    let quiet = pair.sync_ok();
    let quiet_time = t.elapsed();
    let t = Instant::now();
    let quiet2 = pair.sync_ok();
    let quiet2_time = t.elapsed();
    println!("first copy: {first:?} in {first_time:?}");
    println!("no change:  {quiet:?} in {quiet_time:?}");
    println!("no change:  {quiet2:?} in {quiet2_time:?}");
    assert_same(&pair);
}

/// On a terminal, `sip-ha sync` draws a progress bar (bytes and files) on
/// stderr, then the summary; in a pipe (cron, scripts), only the summary.
/// `script(1)` (util-linux) gives the command a pseudo-terminal.
#[test]
fn a_terminal_gets_a_progress_bar_and_a_pipe_does_not() {
    let pair = Pair::new(50);
    pair.make_active();
    for i in 0..200 {
        let body = vec![b'a' + (i % 26) as u8; 16 * 1024 + i];
        std::fs::write(pair.src.join(format!("rec{i:03}.wav")), body).unwrap();
    }
    let cmd = pair.sync_command();
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let out = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env_remove("SIP_HA_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("script(1) from util-linux");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sync on a terminal failed:\n{shown}");
    assert!(
        shown.contains("/200 files"),
        "no progress bar on the terminal:\n{shown}"
    );
    assert!(
        shown.contains("sync: 200 files sent"),
        "no summary:\n{shown}"
    );
    assert_same(&pair);

    std::fs::write(pair.src.join("rec000.wav"), b"changed").unwrap();
    let out = pair.sync(&[]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("files,"), "a bar in a pipe:\n{all}");
    assert!(all.contains("sync: 1 files sent"), "{all}");
}
