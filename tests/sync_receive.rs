//! The standby's side of sync (`src/sync/receive.rs`, `trash.rs`, with
//! `chunk.rs`) on real directories: paths that must be refused, files that
//! must never appear half-written, owners by name, the trash, a full disk
//! (a 1 MiB tmpfs) and a writer killed with SIGKILL.
//!
//! Tests that need root (chown to another user, mounting a tmpfs) say so and
//! pass without checking when not run as root; CI runs as root.

mod common;

use sip_ha::link::protocol::WholeFile;
use sip_ha::link::{Request, Response};
use sip_ha::sync::chunk::{self, Piece, Signature};
use sip_ha::sync::receive::{is_temp_name, FileMeta, Receiver};
use sip_ha::sync::session::answer;
use sip_ha::sync::trash::{Trash, TRASH_DIR_NAME};
use sip_ha::sync::RelPath;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn meta(size: u64) -> FileMeta {
    FileMeta {
        mode: 0o644,
        user: None,
        group: None,
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        mtime_ns: 1_700_000_000_123_456_789,
        size,
    }
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// A receiver on a fresh root with the default trash inside it.
fn receiver() -> (tempfile::TempDir, Receiver) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let rx = Receiver::new(&root, &Trash::default_dir(&root)).unwrap();
    (dir, rx)
}

/// Write `bytes` to `rel` through the receiver.
fn put(rx: &mut Receiver, rel: &str, bytes: &[u8]) {
    let mut f = rx
        .begin_file(rel.as_bytes(), meta(bytes.len() as u64))
        .unwrap();
    f.write(bytes).unwrap();
    f.commit(&hash(bytes)).unwrap();
}

/// Every temp file under `dir` (the trash included).
fn temps(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().contains(".sip-ha-tmp-") {
                found.push(e.path());
            }
        }
    }
    found
}

fn today() -> String {
    chrono::Local::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string()
}

#[test]
fn resolve_refuses_paths_that_leave_the_root() {
    let (_d, rx) = receiver();
    let cases: &[(&[u8], &str)] = &[
        (b"..", "'..'"),
        (b"../etc/passwd", "'..'"),
        (b"a/../../b", "'..'"),
        (b"/etc/passwd", "absolute"),
        (b"a\0b", "NUL"),
        (b"", "empty"),
        (b"a//b", "empty component"),
        (b"a/", "empty component"),
        (b"./a", "'.'"),
        (b"a/./b", "'.'"),
        (b".sip-ha-trash/2024-01-01/x", "trash"),
        (b"sub/.x.sip-ha-tmp-0123456789abcdef", "temp"),
    ];
    for (rel, why) in cases {
        let err = rx.resolve(rel).unwrap_err().to_string();
        assert!(err.starts_with("refused"), "{rel:?}: {err}");
        assert!(err.contains(why), "{rel:?}: {err} (expected {why})");
    }
    // Missing directories are fine: they are created when written.
    assert_eq!(
        rx.resolve(b"a/b/c.conf").unwrap(),
        rx.root().join("a/b/c.conf")
    );
    assert_eq!(rx.resolve(b"x").unwrap(), rx.root().join("x"));
}

#[test]
fn a_symlinked_directory_pointing_outside_is_never_written_through() {
    let (d, mut rx) = receiver();
    let outside = d.path().join("outside");
    fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, rx.root().join("link")).unwrap();

    let err = rx.resolve(b"link/x").unwrap_err().to_string();
    assert!(
        err.contains("escapes the sync root through the symlink") && err.contains("link"),
        "{err}"
    );
    let err = rx.begin_file(b"link/x", meta(1)).unwrap_err().to_string();
    assert!(err.contains("through the symlink"), "{err}");
    let err = rx
        .begin_file(b"link/deeper/x", meta(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("through the symlink"), "{err}");
    let err = rx.dir(b"link/sub", meta(0)).unwrap_err().to_string();
    assert!(err.contains("through the symlink"), "{err}");
    let err = rx
        .symlink(b"link/s", b"/etc", meta(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("through the symlink"), "{err}");
    let err = rx.delete(b"link/y").unwrap_err().to_string();
    assert!(err.contains("through the symlink"), "{err}");
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing outside"
    );

    // A symlink planted after the check is caught by the walk itself.
    assert!(rx.resolve(b"sub/x").is_ok());
    fs::create_dir(rx.root().join("sub")).unwrap();
    fs::remove_dir(rx.root().join("sub")).unwrap();
    std::os::unix::fs::symlink(&outside, rx.root().join("sub")).unwrap();
    assert!(rx.begin_file(b"sub/x", meta(1)).is_err());
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing outside"
    );

    // The link itself is an ordinary entry: it can be replaced or deleted.
    rx.delete(b"link").unwrap();
    assert!(fs::symlink_metadata(rx.root().join("link")).is_err());
    assert!(
        outside.is_dir(),
        "deleting the link leaves its target alone"
    );
}

#[test]
fn a_wrong_hash_leaves_the_old_file_and_no_temp() {
    let (_d, mut rx) = receiver();
    put(&mut rx, "sip.conf", b"old contents\n");
    let mut f = rx.begin_file(b"sip.conf", meta(13)).unwrap();
    f.write(b"new contents\n").unwrap();
    let err = f.commit(&hash(b"something else")).unwrap_err().to_string();
    assert!(
        err.contains("refused") && err.contains("old file is intact"),
        "{err}"
    );
    assert_eq!(
        fs::read(rx.root().join("sip.conf")).unwrap(),
        b"old contents\n"
    );
    assert!(temps(rx.root()).is_empty());
}

#[test]
fn commit_sets_mode_owner_by_name_and_mtime_to_the_nanosecond() {
    let (_d, mut rx) = receiver();
    let body = b"[general]\ncontext=default\n";
    let m = FileMeta {
        mode: 0o640,
        user: Some("nobody".into()),
        group: Some("nogroup".into()),
        // The sender's numbers differ: the names win.
        uid: 4242,
        gid: 4343,
        mtime_ns: 1_234_567_890_987_654_321,
        size: body.len() as u64,
    };
    let mut f = rx.begin_file(b"etc/sip.conf", m.clone()).unwrap();
    f.write(body).unwrap();
    f.commit(&hash(body)).unwrap();
    let md = fs::symlink_metadata(rx.root().join("etc/sip.conf")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!(md.mtime(), 1_234_567_890);
    assert_eq!(md.mtime_nsec(), 987_654_321);
    if !is_root() {
        eprintln!("not root: owner by name not checked");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let nogroup = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
    assert_eq!(md.uid(), nobody.uid.as_raw());
    assert_eq!(md.gid(), nogroup.gid.as_raw());
    assert!(rx.take_warnings().is_empty());

    // A name this host does not know: the sender's number, and a warning.
    let m = FileMeta {
        user: Some("sip-ha-no-such-user".into()),
        group: Some("sip-ha-no-such-group".into()),
        ..m
    };
    for name in ["a.conf", "b.conf"] {
        let mut f = rx.begin_file(name.as_bytes(), m.clone()).unwrap();
        f.write(body).unwrap();
        f.commit(&hash(body)).unwrap();
        let md = fs::symlink_metadata(rx.root().join(name)).unwrap();
        assert_eq!((md.uid(), md.gid()), (4242, 4343));
    }
    let warnings = rx.take_warnings();
    assert_eq!(warnings.len(), 2, "once per name: {warnings:?}");
    assert!(warnings[0].contains("sip-ha-no-such-user") && warnings[0].contains("4242"));
    assert!(warnings[1].contains("sip-ha-no-such-group") && warnings[1].contains("4343"));
}

#[test]
fn an_update_replaces_the_file_and_keeps_nothing_unless_asked() {
    let (_d, mut rx) = receiver();
    put(&mut rx, "extensions.conf", b"v1");
    put(&mut rx, "extensions.conf", b"v2");
    assert_eq!(fs::read(rx.root().join("extensions.conf")).unwrap(), b"v2");
    let trash = rx.trash().dir().to_path_buf();
    assert_eq!(
        fs::read_dir(&trash).unwrap().count(),
        0,
        "a normal update keeps nothing"
    );

    // keep_old: the replaced version stays beside it as a conflict copy.
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut f = rx.begin_file(b"extensions.conf", meta(2)).unwrap();
    f.keep_old("slave", at);
    f.write(b"v3").unwrap();
    f.commit(&hash(b"v3")).unwrap();
    let stamp = chrono::DateTime::<chrono::Local>::from(at).format("%Y%m%dT%H%M%S");
    let copy = rx
        .root()
        .join(format!("extensions.conf.sip-ha-conflict-slave-{stamp}"));
    assert_eq!(fs::read(&copy).unwrap(), b"v2");
    assert_eq!(fs::read(rx.root().join("extensions.conf")).unwrap(), b"v3");
}

#[test]
fn conflict_copies_are_named_for_node_and_time() {
    let (_d, mut rx) = receiver();
    put(&mut rx, "vm/INBOX/msg0001.txt", b"local version");
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_718_000_000);
    let stamp = chrono::DateTime::<chrono::Local>::from(at)
        .format("%Y%m%dT%H%M%S")
        .to_string();
    assert_eq!(stamp.len(), 15);
    let first = rx
        .keep_conflict_copy(b"vm/INBOX/msg0001.txt", "master", at)
        .unwrap();
    assert_eq!(
        first,
        rx.root().join(format!(
            "vm/INBOX/msg0001.txt.sip-ha-conflict-master-{stamp}"
        ))
    );
    // The original stays in place until a new version replaces it.
    assert_eq!(
        fs::read(rx.root().join("vm/INBOX/msg0001.txt")).unwrap(),
        b"local version"
    );
    assert_eq!(fs::read(&first).unwrap(), b"local version");
    // The same second again: a suffix, never an overwrite.
    let second = rx
        .keep_conflict_copy(b"vm/INBOX/msg0001.txt", "master", at)
        .unwrap();
    assert_eq!(
        second.file_name().unwrap().to_string_lossy(),
        format!("msg0001.txt.sip-ha-conflict-master-{stamp}-2")
    );
    // A node name cannot smuggle a path in.
    let third = rx
        .keep_conflict_copy(b"vm/INBOX/msg0001.txt", "../x", at)
        .unwrap();
    assert_eq!(third.parent().unwrap(), rx.root().join("vm/INBOX"));
    assert!(rx.keep_conflict_copy(b"missing", "master", at).is_err());
}

#[test]
fn delete_moves_into_the_trash_and_expire_removes_old_days() {
    let (_d, mut rx) = receiver();
    put(&mut rx, "sounds/custom/welcome.wav", b"RIFF1");
    rx.delete(b"sounds/custom/welcome.wav").unwrap();
    assert!(!rx.root().join("sounds/custom/welcome.wav").exists());
    let day = rx.trash().dir().join(today());
    assert_eq!(
        fs::read(day.join("sounds/custom/welcome.wav")).unwrap(),
        b"RIFF1"
    );
    // Deleted again the same day: kept too, under +2.
    put(&mut rx, "sounds/custom/welcome.wav", b"RIFF2");
    rx.delete(b"sounds/custom/welcome.wav").unwrap();
    assert_eq!(
        fs::read(day.join("+2/sounds/custom/welcome.wav")).unwrap(),
        b"RIFF2"
    );
    // A whole directory moves as one.
    put(&mut rx, "sounds/custom/a.wav", b"a");
    rx.delete(b"sounds/custom").unwrap();
    assert!(!rx.root().join("sounds/custom").exists());
    assert!(day.join("+3/sounds/custom/a.wav").exists());
    // Deleting what is not there is fine.
    rx.delete(b"nothing/here").unwrap();
    rx.delete(b"sounds/nothing").unwrap();

    // Expiry: day folders older than the retention go, the rest stays.
    let trash = rx.trash().dir();
    fs::create_dir_all(trash.join("2000-01-01/old")).unwrap();
    fs::write(trash.join("2000-01-01/old/file"), b"x").unwrap();
    fs::create_dir_all(trash.join("not-a-day")).unwrap();
    let recent = (chrono::Local::now().date_naive() - chrono::Days::new(3))
        .format("%Y-%m-%d")
        .to_string();
    fs::create_dir_all(trash.join(&recent)).unwrap();
    assert_eq!(rx.trash().expire(30).unwrap(), 1);
    assert!(!trash.join("2000-01-01").exists());
    assert!(trash.join("not-a-day").exists());
    assert!(trash.join(&recent).exists());
    assert!(day.exists());
    assert_eq!(rx.trash().expire(1).unwrap(), 1, "the 3-day-old folder");
    assert!(day.exists(), "today's stays");
}

#[test]
fn trash_put_refuses_odd_paths() {
    let d = tempfile::tempdir().unwrap();
    let trash = Trash::new(&d.path().join("t")).unwrap();
    fs::write(d.path().join("f"), b"x").unwrap();
    assert!(trash.put(d.path(), Path::new("../f")).is_err());
    assert!(trash.put(d.path(), Path::new("/f")).is_err());
    assert!(trash.put(d.path(), Path::new("missing")).is_err());
    let to = trash.put(d.path(), Path::new("f")).unwrap();
    assert_eq!(fs::read(to).unwrap(), b"x");
}

#[test]
fn cleanup_temp_removes_only_temp_files() {
    let (d, mut rx) = receiver();
    let root = rx.root().to_path_buf();
    put(&mut rx, "sub/keep.conf", b"keep");
    let leftovers = [
        root.join(".sip.conf.sip-ha-tmp-0123456789abcdef"),
        root.join("sub/.keep.conf.sip-ha-tmp-fedcba9876543210"),
    ];
    for p in &leftovers {
        assert!(is_temp_name(p.file_name().unwrap().as_encoded_bytes()));
        fs::write(p, b"partial").unwrap();
    }
    // Look-alikes that must stay.
    let keep = [
        root.join(".sip.conf.sip-ha-tmp-notahexnumber!!"),
        root.join("sip.conf.sip-ha-tmp-0123456789abcdef"),
        root.join(".sip.conf.sip-ha-tmp-0123456789ABCDEF"),
        root.join(".sip.conf.sip-ha-tmp-0123456789abcde"),
        root.join("sub/keep.conf"),
    ];
    for p in &keep[..4] {
        fs::write(p, b"mine").unwrap();
    }
    let dir_like = root.join(".d.sip-ha-tmp-0123456789abcdef");
    fs::create_dir(&dir_like).unwrap();
    // What a receiver killed in `Receiver::symlink` leaves.
    let temp_link = root.join(".l.sip-ha-tmp-0123456789abcdef");
    std::os::unix::fs::symlink("/etc/hostname", &temp_link).unwrap();
    // A temp-like file reached only through a symlink, outside the root.
    let outside = d.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let outside_temp = outside.join(".x.sip-ha-tmp-0123456789abcdef");
    fs::write(&outside_temp, b"not ours").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
    // And one inside the trash.
    let in_trash = rx.trash().dir().join(".t.sip-ha-tmp-0123456789abcdef");
    fs::write(&in_trash, b"trash").unwrap();

    assert_eq!(rx.cleanup_temp().unwrap(), 3);
    for p in &leftovers {
        assert!(!p.exists(), "{}", p.display());
    }
    for p in keep.iter().chain([&dir_like, &outside_temp, &in_trash]) {
        assert!(p.exists(), "{}", p.display());
    }
    assert!(fs::symlink_metadata(&temp_link).is_err());
    assert_eq!(rx.cleanup_temp().unwrap(), 0);
}

#[test]
fn a_dropped_transfer_leaves_no_partial_file() {
    let (_d, mut rx) = receiver();
    put(&mut rx, "moh/hold.wav", b"old music");
    {
        let mut f = rx.begin_file(b"moh/hold.wav", meta(1 << 20)).unwrap();
        f.write(&vec![7u8; 300_000]).unwrap();
        assert_eq!(temps(rx.root()).len(), 1, "written to a temp file");
        assert_eq!(
            fs::read(rx.root().join("moh/hold.wav")).unwrap(),
            b"old music"
        );
        let md = fs::metadata(&temps(rx.root())[0]).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600, "temp is private until done");
        // Dropped here: the link broke mid-file.
    }
    assert!(temps(rx.root()).is_empty());
    assert_eq!(
        fs::read(rx.root().join("moh/hold.wav")).unwrap(),
        b"old music"
    );
    // A brand-new file that never completes does not appear at all.
    drop(rx.begin_file(b"moh/new.wav", meta(10)).unwrap());
    assert!(!rx.root().join("moh/new.wav").exists());
    assert!(temps(rx.root()).is_empty());
}

/// The writer half of `a_writer_killed_mid_file_leaves_no_partial_file`:
/// run as a child process, writes half a file and waits to be killed.
#[test]
#[ignore = "helper process for a_writer_killed_mid_file_leaves_no_partial_file"]
fn killed_writer_child() {
    let Ok(root) = std::env::var("SIP_HA_TEST_KILLED_WRITER_ROOT") else {
        return;
    };
    let root = PathBuf::from(root);
    let mut rx = Receiver::new(&root, &Trash::default_dir(&root)).unwrap();
    let mut f = rx.begin_file(b"monitor/call.wav", meta(2 << 20)).unwrap();
    f.write(&vec![1u8; 1 << 20]).unwrap();
    fs::write(root.join("..").join("ready"), b"").unwrap();
    std::thread::sleep(Duration::from_secs(60));
    f.write(&vec![1u8; 1 << 20]).unwrap();
    f.commit(&[0; 32]).unwrap();
}

#[test]
fn a_writer_killed_mid_file_leaves_no_partial_file() {
    let (d, mut rx) = receiver();
    put(&mut rx, "monitor/call.wav", b"the old recording");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["killed_writer_child", "--exact", "--ignored", "--nocapture"])
        .env("SIP_HA_TEST_KILLED_WRITER_ROOT", rx.root())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = d.path().join("ready");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "child never got ready"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();

    // The final name still holds the old file; the half-written one is
    // only under its temp name, and the next run's sweep removes it.
    assert_eq!(
        fs::read(rx.root().join("monitor/call.wav")).unwrap(),
        b"the old recording"
    );
    let left = temps(rx.root());
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(fs::metadata(&left[0]).unwrap().len(), 1 << 20);
    assert_eq!(rx.cleanup_temp().unwrap(), 1);
    assert!(temps(rx.root()).is_empty());
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs ({})",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_leaves_the_old_file() {
    let d = tempfile::tempdir().unwrap();
    let Some(fs_) = Tmpfs::mount(&d.path().join("small"), "1m") else {
        return;
    };
    let root = fs_.0.join("root");
    let mut rx = Receiver::new(&root, &Trash::default_dir(&root)).unwrap();
    let old = vec![3u8; 100_000];
    put(&mut rx, "voicemail/msg.wav", &old);
    let big = vec![9u8; 2 << 20];

    // The announced size does not fit: refused before writing anything.
    let err = rx
        .begin_file(b"voicemail/msg.wav", meta(big.len() as u64))
        .unwrap_err()
        .to_string();
    eprintln!("announced: {err}");
    assert!(
        err.contains("disk is full") && err.contains("old file is intact"),
        "{err}"
    );
    assert!(err.contains("msg.wav"), "{err}");
    assert!(temps(&root).is_empty());

    // Size unknown (or wrong): the write itself hits ENOSPC.
    let mut f = rx.begin_file(b"voicemail/msg.wav", meta(0)).unwrap();
    let mut err = None;
    for piece in big.chunks(64 * 1024) {
        if let Err(e) = f.write(piece) {
            err = Some(e.to_string());
            break;
        }
    }
    let err = err.expect("2 MiB cannot fit in 1 MiB");
    eprintln!("write: {err}");
    assert!(
        err.contains("the standby's disk is full writing") && err.contains("msg.wav"),
        "{err}"
    );
    assert!(
        err.contains("removed") && err.contains("old file is intact"),
        "{err}"
    );
    assert!(temps(&root).is_empty(), "space given back at once");
    assert!(f.commit(&hash(&big)).is_err());
    assert_eq!(fs::read(root.join("voicemail/msg.wav")).unwrap(), old);

    // The same through chunk::apply, as the protocol will do it.
    let sig = Signature::empty();
    let mut f = rx.begin_file(b"voicemail/msg.wav", meta(0)).unwrap();
    let pieces = big.chunks(128 * 1024).map(|c| Ok(Piece::Data(c.to_vec())));
    let err = chunk::apply(None::<&mut fs::File>, &sig, pieces, &mut f).unwrap_err();
    assert!(format!("{err:#}").contains("disk is full"), "{err:#}");
    drop(f);
    assert!(temps(&root).is_empty());
    assert_eq!(fs::read(root.join("voicemail/msg.wav")).unwrap(), old);

    // After the failure, normal writes still work.
    put(&mut rx, "voicemail/small.txt", b"fits");
}

#[test]
fn a_delta_is_applied_into_an_incoming_file() {
    let (_d, mut rx) = receiver();
    let mut old = vec![0u8; 600_000];
    for (i, b) in old.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    put(&mut rx, "monitor/rec.wav", &old);
    let mut new = old.clone();
    new.extend_from_slice(b"appended tail");

    let mut file = rx.open_existing(b"monitor/rec.wav").unwrap();
    let sig = chunk::signature(file.as_mut().unwrap()).unwrap();
    let mut pieces = Vec::new();
    let stats = chunk::delta(&new[..], &sig, |p| {
        pieces.push(p);
        Ok(())
    })
    .unwrap();
    assert!(stats.chunks_reused > 0);
    let mut f = rx.begin_file(b"monitor/rec.wav", meta(stats.size)).unwrap();
    let written = chunk::apply(file.as_mut(), &sig, pieces.into_iter().map(Ok), &mut f).unwrap();
    assert_eq!(written, new.len() as u64);
    assert_eq!(stats.file_hash, hash(&new));
    f.commit(&stats.file_hash).unwrap();
    assert!(fs::read(rx.root().join("monitor/rec.wav")).unwrap() == new);

    // open_existing never follows a symlink and ignores non-files.
    std::os::unix::fs::symlink("/etc/passwd", rx.root().join("pw")).unwrap();
    assert!(rx.open_existing(b"pw").unwrap().is_none());
    assert!(rx.open_existing(b"monitor").unwrap().is_none());
    assert!(rx.open_existing(b"missing/x").unwrap().is_none());
}

#[test]
fn directories_and_symlinks_keep_their_metadata() {
    let (_d, mut rx) = receiver();
    let dmeta = FileMeta {
        mode: 0o750,
        mtime_ns: 1_600_000_000_000_000_001,
        ..meta(0)
    };
    // The directory's metadata first, then files into it: its mtime holds.
    rx.dir(b"voicemail/default/1001", dmeta.clone()).unwrap();
    put(&mut rx, "voicemail/default/1001/greet.wav", b"hi");
    rx.delete(b"voicemail/default/1001/greet.wav").unwrap();
    put(&mut rx, "voicemail/default/1001/busy.wav", b"busy");
    let md = fs::symlink_metadata(rx.root().join("voicemail/default/1001")).unwrap();
    assert!(md.is_dir());
    assert_eq!(md.mode() & 0o7777, 0o750);
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_000, 1));
    // Updating an existing directory.
    rx.dir(
        b"voicemail/default/1001",
        FileMeta {
            mode: 0o700,
            ..dmeta.clone()
        },
    )
    .unwrap();
    let md = fs::symlink_metadata(rx.root().join("voicemail/default/1001")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o700);
    // The root itself.
    rx.dir(
        b"",
        FileMeta {
            mode: 0o755,
            ..dmeta.clone()
        },
    )
    .unwrap();
    assert_eq!(fs::metadata(rx.root()).unwrap().mtime_nsec(), 1);

    // Symlinks: created, replaced, never followed, mtime set on the link.
    let lmeta = FileMeta {
        mtime_ns: 1_500_000_000_000_000_002,
        ..meta(0)
    };
    rx.symlink(
        b"sounds/en",
        b"/usr/share/asterisk/sounds/en",
        lmeta.clone(),
    )
    .unwrap();
    rx.symlink(b"sounds/en", b"../en_US", lmeta.clone())
        .unwrap();
    let p = rx.root().join("sounds/en");
    assert_eq!(fs::read_link(&p).unwrap(), Path::new("../en_US"));
    let md = fs::symlink_metadata(&p).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_500_000_000, 2));
    assert!(rx.symlink(b"bad", b"a\0b", lmeta.clone()).is_err());

    // A file replacing a directory: the directory goes to the trash.
    put(&mut rx, "was-a-dir/inner.conf", b"inner");
    put(&mut rx, "was-a-dir", b"now a file");
    assert_eq!(
        fs::read(rx.root().join("was-a-dir")).unwrap(),
        b"now a file"
    );
    let day = rx.trash().dir().join(today());
    assert_eq!(
        fs::read(day.join("was-a-dir/inner.conf")).unwrap(),
        b"inner"
    );
    // A directory replacing a file: the file goes to the trash.
    rx.dir(b"was-a-dir", dmeta).unwrap();
    assert!(rx.root().join("was-a-dir").is_dir());
    assert!(temps(rx.root()).is_empty());
    // Nothing sip-ha made is visible to a scan but the trash.
    let names: Vec<_> = fs::read_dir(rx.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&TRASH_DIR_NAME.to_string()));
    assert!(names.iter().all(|n| !n.contains("sip-ha-tmp")));
}

#[test]
fn a_trash_on_another_filesystem_gets_copies() {
    let d = tempfile::tempdir().unwrap();
    let Some(t) = Tmpfs::mount(&d.path().join("trashfs"), "4m") else {
        return;
    };
    let root = d.path().join("root");
    let mut rx = Receiver::new(&root, &t.0).unwrap();
    let w = rx.take_warnings();
    assert!(w.iter().any(|w| w.contains("another filesystem")), "{w:?}");
    put(&mut rx, "dir/a.conf", b"aaa");
    fs::set_permissions(root.join("dir/a.conf"), fs::Permissions::from_mode(0o604)).unwrap();
    std::os::unix::fs::symlink("a.conf", root.join("dir/link")).unwrap();
    rx.delete(b"dir/a.conf").unwrap();
    let day = t.0.join(today());
    let md = fs::metadata(day.join("dir/a.conf")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o604);
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_700_000_000, 123_456_789));
    rx.delete(b"dir").unwrap();
    assert!(!root.join("dir").exists());
    assert_eq!(
        fs::read_link(day.join("+2/dir/link")).unwrap(),
        Path::new("a.conf")
    );
}

/// Pseudo-random bytes made as they are read: a big "file" in no memory.
struct Noise {
    state: u64,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        for b in &mut buf[..n] {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *b = self.state as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The child half of `a_256_mib_file_is_chunked_in_a_few_mib`: prints its
/// peak memory after a signature and a delta of 256 MiB.
#[test]
#[ignore = "helper process for a_256_mib_file_is_chunked_in_a_few_mib"]
fn big_file_child() {
    if std::env::var("SIP_HA_TEST_BIG_FILE").is_err() {
        return;
    }
    let len = 256 << 20;
    let sig = chunk::signature(Noise {
        state: 1,
        left: len,
    })
    .unwrap();
    assert_eq!(sig.size, len);
    // The same file with one byte inserted at 100 MiB, also made as read.
    let mut rest = Noise {
        state: 1,
        left: len,
    };
    std::io::copy(&mut (&mut rest).take(100 << 20), &mut std::io::sink()).unwrap();
    let edited = Noise {
        state: 1,
        left: 100 << 20,
    }
    .chain(&b"!"[..])
    .chain(rest);
    let stats = chunk::delta(edited, &sig, |_| Ok(())).unwrap();
    assert_eq!(stats.size, len + 1);
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .to_string();
    println!(
        "SIP_HA_RESULT chunks={} literal={} hwm_kb={hwm}",
        sig.chunks.len(),
        stats.chunks_literal
    );
}

#[test]
fn a_256_mib_file_is_chunked_in_a_few_mib() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["big_file_child", "--exact", "--ignored", "--nocapture"])
        .env("SIP_HA_TEST_BIG_FILE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SIP_HA_RESULT "))
        .unwrap_or_else(|| panic!("no result from the child: {stdout}"));
    let field = |name: &str| -> u64 {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    eprintln!("{line}");
    // ~8,000 chunks of ~32 KiB.
    assert!((4_000..16_000).contains(&field("chunks")), "{line}");
    assert!(field("literal") <= 2, "{line}");
    // The whole test process, signature included: a few MiB, nowhere near
    // the file's 256 MiB.
    assert!(field("hwm_kb") < 32 * 1024, "{line}");
}

/// A batch: every good file lands at once, with its metadata; a file whose
/// bytes do not match the sender's hash is refused alone; nothing is left
/// under a temp name; the old version of a replaced file is gone only once
/// the new one is in place.
#[test]
fn a_batch_puts_good_files_in_place_and_refuses_a_bad_one_alone() {
    use sip_ha::sync::receive::commit_batch;
    let (_dir, mut rx) = receiver();
    put(&mut rx, "sounds/old.wav", b"old version");
    let mut staged = Vec::new();
    let mut expect = Vec::new();
    for i in 0..20 {
        let rel = format!("vm/{}/msg{i:04}.txt", i % 3);
        let body = format!("message {i}").repeat(i + 1).into_bytes();
        let mut f = rx
            .begin_file(rel.as_bytes(), meta(body.len() as u64))
            .unwrap();
        f.write(&body).unwrap();
        staged.push(f.stage(&hash(&body)).unwrap());
        expect.push((rel, body));
    }
    let mut f = rx.begin_file(b"sounds/old.wav", meta(3)).unwrap();
    f.write(b"new").unwrap();
    staged.push(f.stage(&hash(b"new")).unwrap());
    // Staged but not committed: the targets are untouched.
    assert_eq!(
        fs::read(rx.root().join("sounds/old.wav")).unwrap(),
        b"old version"
    );
    assert!(!rx.root().join("vm/0/msg0000.txt").exists());
    let mut bad = rx.begin_file(b"vm/bad.txt", meta(5)).unwrap();
    bad.write(b"wrong").unwrap();
    let refused = bad.stage(&hash(b"right")).unwrap_err();
    assert!(
        format!("{refused:#}").contains("hash"),
        "the refusal should say why: {refused:#}"
    );

    let results = commit_batch(staged);
    assert_eq!(results.len(), 21);
    for r in &results {
        let placed = r.as_ref().expect("each good file is placed");
        assert!(placed.stat.is_some(), "its stat is known for the manifest");
    }
    for (rel, body) in &expect {
        let path = rx.root().join(rel);
        assert_eq!(&fs::read(&path).unwrap(), body, "{rel}");
        let md = fs::metadata(&path).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o644, "{rel}");
        assert_eq!(md.mtime_nsec(), 123_456_789, "{rel}");
    }
    assert_eq!(fs::read(rx.root().join("sounds/old.wav")).unwrap(), b"new");
    assert!(!rx.root().join("vm/bad.txt").exists());
    assert_eq!(temps(rx.root()), Vec::<PathBuf>::new());
}

/// Staged files dropped without a commit (the session ended) leave no trace.
#[test]
fn staged_files_dropped_leave_nothing() {
    let (_dir, mut rx) = receiver();
    put(&mut rx, "a.txt", b"kept");
    let mut f = rx.begin_file(b"a.txt", meta(3)).unwrap();
    f.write(b"new").unwrap();
    let staged = f.stage(&hash(b"new")).unwrap();
    drop(staged);
    assert_eq!(fs::read(rx.root().join("a.txt")).unwrap(), b"kept");
    assert_eq!(temps(rx.root()), Vec::<PathBuf>::new());
}

/// A metadata-only change is made in place: same inode, same content, new
/// mode and mtime (a `chmod -R` on the active server must not rewrite the
/// standby's files).
#[test]
fn metadata_is_updated_in_place() {
    let (_dir, mut rx) = receiver();
    put(&mut rx, "etc/sip.conf", b"[general]\n");
    let path = rx.root().join("etc/sip.conf");
    let before = fs::metadata(&path).unwrap();
    let mut m = meta(10);
    m.mode = 0o600;
    m.mtime_ns = 1_600_000_000_000_000_007;
    let st = rx.file_meta(b"etc/sip.conf", m).unwrap();
    let after = fs::metadata(&path).unwrap();
    assert_eq!(after.ino(), before.ino(), "not rewritten");
    assert_eq!(st.st_ino, after.ino());
    assert_eq!(after.mode() & 0o7777, 0o600);
    assert_eq!(after.mtime(), 1_600_000_000);
    assert_eq!(after.mtime_nsec(), 7);
    assert_eq!(fs::read(&path).unwrap(), b"[general]\n");
    // Not a regular file there: refused, nothing changed.
    std::os::unix::fs::symlink("sip.conf", rx.root().join("etc/link")).unwrap();
    let e = rx.file_meta(b"etc/link", meta(0)).unwrap_err();
    assert!(format!("{e:#}").contains("etc/link"), "{e:#}");
}

/// The standby's copy is written to (on the standby) after it sent its
/// signature and before the delta is committed: the rebuilt file no
/// longer hashes to the sender's, so it is refused, the error says what
/// happened, and the standby's copy is left as it is. Driven through the
/// standby's request handler (`session::answer`), as `sip-ha serve` does.
#[test]
fn a_delta_is_refused_when_the_standby_copy_changes_under_it() {
    use std::os::unix::fs::FileExt;

    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("standby");
    let root = prefix.join("pbx");
    fs::create_dir_all(root.join("monitor")).unwrap();
    let mut old = vec![0u8; 900_000];
    for (i, b) in old.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 11) as u8;
    }
    let target = root.join("monitor/rec.wav");
    fs::write(&target, &old).unwrap();
    let mut new = old.clone();
    new[450_000] ^= 0xff;

    let setup = || Ok(pbx_standby(dir.path(), &prefix));
    let mut session = None;
    answer(&mut session, setup, sync_pbx()).unwrap();
    let rel = RelPath::new(b"monitor/rec.wav").unwrap();
    let begin = Request::FileBegin {
        rel: rel.clone(),
        meta: meta(new.len() as u64),
        size: new.len() as u64,
        whole_hash: hash(&new),
        keep_old: None,
    };
    let sig = match answer(&mut session, setup, begin).unwrap() {
        Response::Signature(sig) => sig,
        other => panic!("{other:?}"),
    };
    assert!(sig.chunks.len() > 3, "{sig:?}");
    let mut pieces = Vec::new();
    let stats = chunk::delta(&new[..], &sig, |p| {
        pieces.push(p);
        Ok(())
    })
    .unwrap();
    assert!(stats.chunks_reused > 0 && stats.chunks_literal > 0);

    // Someone edits the standby's copy in place (same size), in a chunk
    // the sender said it need not send.
    let edited = {
        let f = fs::OpenOptions::new().write(true).open(&target).unwrap();
        f.write_all_at(b"EDITED ON THE STANDBY", 10).unwrap();
        fs::read(&target).unwrap()
    };
    assert_eq!(
        answer(&mut session, setup, Request::Pieces(pieces)).unwrap(),
        Response::Ok
    );
    let commit = Request::FileCommit {
        hash: stats.file_hash,
    };
    let err = answer(&mut session, setup, commit).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("monitor/rec.wav was written to on the standby while it was being updated"),
        "{text}"
    );
    assert!(text.contains("not put in place"), "{text}");
    assert!(
        fs::read(&target).unwrap() == edited,
        "the standby's copy is left as it was"
    );
    assert!(
        temps(&root).is_empty(),
        "no temp file left: {:?}",
        temps(&root)
    );
}

/// A file over `THREAD_FROM` rebuilt from an old copy is hashed on a
/// thread of its own as it is written (`hash_on_a_thread`, as the session
/// asks for a delta): the right hash puts it in place byte for byte, one
/// byte off
/// anywhere (here the last, in the block handed over at the end) is
/// refused and leaves the old file.
#[test]
fn a_big_file_is_hashed_as_written_and_refused_on_a_mismatch() {
    use sip_ha::sync::stream_hash::THREAD_FROM;
    let (_d, mut rx) = receiver();
    put(&mut rx, "monitor/big.wav", b"the old recording");
    let len = THREAD_FROM as usize + 3 * 1024 * 1024 + 777;
    let mut body = vec![0u8; len];
    for (i, b) in body.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 9) as u8;
    }

    let mut changed = body.clone();
    *changed.last_mut().unwrap() ^= 1;
    let mut f = rx.begin_file(b"monitor/big.wav", meta(len as u64)).unwrap();
    f.hash_on_a_thread();
    for c in changed.chunks(32 * 1024 + 3) {
        f.write(c).unwrap();
    }
    let err = f.commit(&hash(&body)).unwrap_err();
    assert!(format!("{err:#}").contains("not put in place"), "{err:#}");
    assert_eq!(
        fs::read(rx.root().join("monitor/big.wav")).unwrap(),
        b"the old recording"
    );
    assert!(temps(rx.root()).is_empty());

    let mut f = rx.begin_file(b"monitor/big.wav", meta(len as u64)).unwrap();
    f.hash_on_a_thread();
    for c in body.chunks(32 * 1024 + 3) {
        f.write(c).unwrap();
    }
    let placed = f.commit(&hash(&body)).unwrap();
    assert_eq!(placed.hash, hash(&body));
    assert!(fs::read(rx.root().join("monitor/big.wav")).unwrap() == body);
}

/// Batches of small files are put in place several at a time, and their
/// outcomes come back late, with whatever later request: every file gets
/// exactly one outcome, in the order sent, and a refused file among them
/// is named while the others land (driven through `session::answer`, as
/// `serve` does).
#[test]
fn batch_outcomes_come_back_late_but_each_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("standby");
    let root = prefix.join("pbx");
    fs::create_dir_all(root.join("vm")).unwrap();
    let setup = || Ok(pbx_standby(dir.path(), &prefix));
    let mut session = None;
    answer(&mut session, setup, sync_pbx()).unwrap();

    // The directory's metadata first, as the sender sends it, then the
    // files into it: its mtime must end as sent, however the batches
    // overlap.
    let dir_meta = FileMeta {
        mode: 0o755,
        mtime_ns: 1_600_000_000_000_000_001,
        ..meta(0)
    };
    let vm = RelPath::new(b"vm").unwrap();
    let r = answer(
        &mut session,
        setup,
        Request::SyncDir {
            rel: vm,
            meta: dir_meta,
        },
    );
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");

    // 8 batches of 40 files; file 57 (in the second batch) carries a hash
    // that does not match its data.
    const BATCHES: usize = 8;
    const PER: usize = 40;
    const BAD: usize = 57;
    let body = |n: usize| format!("message {n}\n").repeat(n % 7 + 1).into_bytes();
    let mut outcomes: Vec<Option<String>> = Vec::new();
    for b in 0..BATCHES {
        let files = (b * PER..(b + 1) * PER)
            .map(|n| WholeFile {
                rel: RelPath::new(format!("vm/msg{n:04}.txt").as_bytes()).unwrap(),
                meta: meta(body(n).len() as u64),
                data: body(n),
                hash: if n == BAD {
                    hash(b"other")
                } else {
                    hash(&body(n))
                },
                keep_old: None,
            })
            .collect();
        match answer(&mut session, setup, Request::Files(files)).unwrap() {
            Response::Files(r) => outcomes.extend(r),
            other => panic!("{other:?}"),
        }
        assert!(
            outcomes.len() <= b * PER,
            "batch {b}'s answer reports files not sent before it: {}",
            outcomes.len()
        );
    }
    match answer(&mut session, setup, Request::FilesFlush).unwrap() {
        Response::Files(r) => outcomes.extend(r),
        other => panic!("{other:?}"),
    }
    assert_eq!(outcomes.len(), BATCHES * PER, "one outcome per file");
    for (n, outcome) in outcomes.iter().enumerate() {
        let path = root.join(format!("vm/msg{n:04}.txt"));
        if n == BAD {
            let e = outcome.as_deref().expect("the bad file is refused");
            assert!(e.contains("msg0057"), "{e}");
            assert!(!path.exists(), "a file with a wrong hash landed");
        } else {
            assert_eq!(outcome, &None, "file {n}");
            assert_eq!(fs::read(&path).unwrap(), body(n), "file {n}");
        }
    }
    match answer(&mut session, setup, Request::FilesFlush).unwrap() {
        Response::Files(r) => assert!(r.is_empty(), "reported twice: {r:?}"),
        other => panic!("{other:?}"),
    }
    let md = fs::metadata(root.join("vm")).unwrap();
    assert_eq!(
        (md.mtime(), md.mtime_nsec()),
        (1_600_000_000, 1),
        "the directory's mtime is not the one sent"
    );
    assert!(matches!(
        answer(&mut session, setup, Request::SyncDone).unwrap(),
        Response::SyncDone { .. }
    ));
    // A file failed: the closing rescan read every directory written in,
    // and the saved manifest is exact all the same.
    let standby = pbx_standby(dir.path(), &prefix);
    common::sync_pair::assert_manifest_exact(&standby.state_dir, &standby.paths[0], &root);
}

/// The sync setup of a standby `serve` whose one configured path, /pbx,
/// lives under `prefix`, with its state under `dir`/state.
fn pbx_standby(dir: &Path, prefix: &Path) -> sip_ha::sync::session::SyncSetup {
    sip_ha::sync::session::SyncSetup {
        paths: vec![sip_ha::config::SyncPath {
            path: PathBuf::from("/pbx"),
            exclude: Vec::new(),
            delete: true,
            max_file_size: None,
            sqlite: Vec::new(),
        }],
        state_dir: dir.join("state"),
        trash_days: 7,
        node: "slave".into(),
        prefix: Some(prefix.to_path_buf()),
    }
}

/// The request that opens a sync session of /pbx (see [`pbx_standby`]).
fn sync_pbx() -> Request {
    Request::SyncRoot {
        path: "/pbx".into(),
        verify: false,
        token: 1,
        trust: None,
    }
}

/// The request that opens a session of /pbx for the push `token`, trusting
/// the manifest of the push `trust`'s session.
fn sync_pbx_trusting(token: u64, trust: Option<u64>) -> Request {
    Request::SyncRoot {
        path: "/pbx".into(),
        verify: false,
        token,
        trust,
    }
}

/// The root hash a session answers with.
fn root_of(r: Response) -> [u8; 32] {
    match r {
        Response::SyncRoot { root, .. } => root,
        other => panic!("{other:?}"),
    }
}

/// A trusted session answers from the manifest its last push's session
/// left, without a scan; before the sender compares anything it reads that
/// again (so a change made here meanwhile is seen as one, as after a
/// scan). It is trusted only for the push whose session it was, and not
/// after a session that wrote and did not finish.
#[test]
fn a_trusted_session_answers_from_its_manifest_and_reads_again_what_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("standby");
    let root = prefix.join("pbx");
    fs::create_dir_all(root.join("vm")).unwrap();
    fs::write(root.join("vm/a.txt"), "a\n").unwrap();
    fs::write(root.join("vm/b.txt"), "b\n").unwrap();
    let setup = || Ok(pbx_standby(dir.path(), &prefix));
    let mut session = None;
    let first = root_of(answer(&mut session, setup, sync_pbx_trusting(1, None)).unwrap());

    // Changed here, by hand, between two pushes.
    fs::write(root.join("vm/a.txt"), "a, edited on the standby\n").unwrap();
    fs::write(root.join("vm/new.txt"), "made on the standby\n").unwrap();

    // Push 2 trusts push 1's session: the old root, unscanned.
    let trusted = root_of(answer(&mut session, setup, sync_pbx_trusting(2, Some(1))).unwrap());
    assert_eq!(trusted, first, "a trusted session does not scan");
    // The sender asks about a.txt and new.txt: both are read afresh.
    let select = Request::SyncSelect {
        dirs: Vec::new(),
        subtrees: Vec::new(),
        from: 0,
        paths: vec![
            RelPath::new(b"vm/a.txt").unwrap(),
            RelPath::new(b"vm/new.txt").unwrap(),
        ],
    };
    let entries = match answer(&mut session, setup, select).unwrap() {
        Response::SyncEntries { entries, .. } => entries,
        other => panic!("{other:?}"),
    };
    let hash_of = |name: &[u8]| {
        entries
            .iter()
            .find(|(p, _)| p.as_bytes() == name)
            .map(|(_, e)| match e.kind {
                sip_ha::sync::Kind::File { hash, .. } => hash,
                _ => panic!("not a file"),
            })
    };
    assert_eq!(
        hash_of(b"vm/a.txt"),
        Some(hash(b"a, edited on the standby\n")),
        "the edit is seen: {entries:?}"
    );
    assert_eq!(hash_of(b"vm/new.txt"), Some(hash(b"made on the standby\n")));

    // Push 3 trusts push 1's session, but the last one was push 2's: scan.
    let scanned = root_of(answer(&mut session, setup, sync_pbx_trusting(3, Some(1))).unwrap());
    assert_ne!(scanned, first, "not trusted: the scan sees the changes");
    // Trusting push 3's session is fine: the same root without a scan...
    fs::write(root.join("vm/b.txt"), "b, edited unseen\n").unwrap();
    let again = root_of(answer(&mut session, setup, sync_pbx_trusting(4, Some(3))).unwrap());
    assert_eq!(again, scanned);
    // ...but not after a session that wrote and was cut off.
    let r = answer(
        &mut session,
        setup,
        Request::SyncDelete {
            rels: vec![RelPath::new(b"vm/new.txt").unwrap()],
        },
    );
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    drop(session.take());
    let after_cut = root_of(answer(&mut session, setup, sync_pbx_trusting(5, Some(4))).unwrap());
    assert_ne!(
        after_cut, again,
        "scanned after a session cut off mid-write"
    );
    assert_eq!(
        after_cut,
        root_of(answer(&mut session, setup, sync_pbx_trusting(6, None)).unwrap()),
        "as a full scan"
    );
}
