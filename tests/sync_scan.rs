//! The sender's picture of a tree, on real files: scan, manifest, hash tree
//! and diff together.
//!
//! Random trees (proptest) check that scanning is deterministic, that a
//! scan reusing the previous manifest's hashes describes the tree exactly as
//! a scan from scratch, and that each kind of change (content, mode, mtime,
//! owner, link target, a file added or removed) changes the root hash and
//! shows in the diff, also when found by walking the hash tree. The rest are
//! the cases a real server meets: an edit within the racy window, excludes,
//! fifos and sockets, a file growing while it is hashed, a mount point, a
//! lost or corrupt manifest, an empty source, conflicts and the delete
//! guard. `bench_scan_100k` (ignored) prints scan times for 100,000 files.

use proptest::prelude::*;
use sip_ha::sync::*;
use std::fs::{self, File, FileTimes};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

fn rp(s: &str) -> RelPath {
    RelPath::new(s.as_bytes()).unwrap()
}

/// A scan clock well past every file's last change: no hash is racy.
fn later() -> SystemTime {
    SystemTime::now() + Duration::from_secs(60)
}

fn scan_with(root: &Path, previous: &Manifest, now: SystemTime) -> (Manifest, ScanReport) {
    scan(root, &build_excludes(&[]).unwrap(), previous, now).unwrap()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn set_mtime(path: &Path, t: SystemTime) {
    File::open(path)
        .unwrap()
        .set_times(FileTimes::new().set_modified(t))
        .unwrap();
}

fn mtime(path: &Path) -> SystemTime {
    fs::symlink_metadata(path).unwrap().modified().unwrap()
}

// ---------------------------------------------------------------- random trees

#[derive(Debug, Clone)]
enum Node {
    File { content: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Link { target: String },
}

fn node() -> impl Strategy<Value = Node> {
    prop_oneof![
        4 => (
            prop::collection::vec(any::<u8>(), 0..3000),
            prop::sample::select(vec![0o644, 0o600, 0o640, 0o755, 0o700]),
        )
            .prop_map(|(content, mode)| Node::File { content, mode }),
        2 => prop::sample::select(vec![0o755, 0o750, 0o700]).prop_map(|mode| Node::Dir { mode }),
        1 => "[a-z./]{1,12}".prop_map(|target| Node::Link { target }),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Mutation {
    Content,
    Mode,
    Mtime,
    Owner,
    LinkTarget,
    AddFile,
    RemoveFile,
}

/// Build the tree; returns the relative paths of files and links made.
fn build(root: &Path, nodes: &[(prop::sample::Index, Node, bool)]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut dirs = vec![PathBuf::new()];
    let (mut files, mut links) = (Vec::new(), Vec::new());
    for (i, (parent, node, odd_name)) in nodes.iter().enumerate() {
        let parent = dirs[parent.index(dirs.len())].clone();
        let name: Vec<u8> = if *odd_name {
            // Not UTF-8: names are bytes.
            [&b"\xff"[..], format!("n{i}").as_bytes()].concat()
        } else {
            format!("n{i}").into_bytes()
        };
        let rel = parent.join(std::ffi::OsStr::from_bytes(&name));
        let full = root.join(&rel);
        match node {
            Node::File { content, mode } => {
                fs::write(&full, content).unwrap();
                fs::set_permissions(&full, fs::Permissions::from_mode(*mode)).unwrap();
                files.push(rel);
            }
            Node::Dir { mode } => {
                fs::create_dir(&full).unwrap();
                fs::set_permissions(&full, fs::Permissions::from_mode(*mode)).unwrap();
                dirs.push(rel);
            }
            Node::Link { target } => {
                std::os::unix::fs::symlink(target, &full).unwrap();
                links.push(rel);
            }
        }
    }
    (files, links)
}

/// Apply a mutation; returns the changed path and what the diff must say,
/// or `None` when the tree has nothing it applies to.
fn mutate(
    root: &Path,
    m: Mutation,
    pick: prop::sample::Index,
    files: &[PathBuf],
    links: &[PathBuf],
) -> Option<(RelPath, Option<What>)> {
    let rel_of = |p: &Path| RelPath::new(p.as_os_str().as_bytes()).unwrap();
    let file = (!files.is_empty()).then(|| files[pick.index(files.len())].clone());
    match m {
        Mutation::Content => {
            let f = file?;
            let full = root.join(&f);
            let mut bytes = fs::read(&full).unwrap();
            match bytes.first_mut() {
                Some(b) => *b ^= 0x5a, // same size
                None => bytes.push(1),
            }
            let old = mtime(&full);
            fs::write(&full, &bytes).unwrap();
            // Put the old mtime back: only ctime and the content tell.
            set_mtime(&full, old);
            Some((rel_of(&f), Some(What::Content)))
        }
        Mutation::Mode => {
            let f = file?;
            let full = root.join(&f);
            let mode = fs::metadata(&full).unwrap().permissions().mode() & 0o7777;
            fs::set_permissions(&full, fs::Permissions::from_mode(mode ^ 0o004)).unwrap();
            Some((rel_of(&f), Some(What::Metadata)))
        }
        Mutation::Mtime => {
            let f = file?;
            set_mtime(
                &root.join(&f),
                SystemTime::UNIX_EPOCH + Duration::new(1_000_000, 7),
            );
            Some((rel_of(&f), Some(What::Metadata)))
        }
        Mutation::Owner => {
            let f = file?;
            if !is_root() {
                return None;
            }
            // uid/gid 1 is `daemon` on Debian; by name or by id, it differs.
            std::os::unix::fs::lchown(root.join(&f), Some(1), Some(1)).unwrap();
            Some((rel_of(&f), Some(What::Metadata)))
        }
        Mutation::LinkTarget => {
            let l = links.get(pick.index(links.len().max(1)))?.clone();
            let full = root.join(&l);
            let old = fs::read_link(&full).unwrap();
            fs::remove_file(&full).unwrap();
            std::os::unix::fs::symlink(old.join("changed"), &full).unwrap();
            Some((rel_of(&l), Some(What::Content)))
        }
        Mutation::AddFile => {
            fs::write(root.join("added"), b"new").unwrap();
            Some((rp("added"), Some(What::Create)))
        }
        Mutation::RemoveFile => {
            let f = file?;
            fs::remove_file(root.join(&f)).unwrap();
            Some((rel_of(&f), None))
        }
    }
}

/// The full diff, and the same found by walking the hash tree and
/// comparing only the selected entries, must agree.
/// Both as their debug text (a diff borrows from its manifests).
fn diff_by_walk(local: &Manifest, remote: &Manifest) -> String {
    let (lt, rt) = (tree(local), tree(remote));
    let td = tree_diff(local, &lt, rt.root(), |wanted| {
        Ok(rt.listings(remote, wanted))
    })
    .unwrap();
    let (l, r) = (td.select(local), td.select(remote));
    let by_copies = format!("{:?}", diff(&l, &r, None));
    // The sender's way: its own manifest filtered, not copied.
    assert_eq!(
        format!("{:?}", diff_selected(local, &td, &r, None)),
        by_copies
    );
    by_copies
}

fn full_diff(local: &Manifest, remote: &Manifest) -> String {
    format!("{:?}", diff(local, remote, None))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn random_trees(
        nodes in prop::collection::vec((any::<prop::sample::Index>(), node(), prop::bool::weighted(0.1)), 1..30),
        mutation in prop::sample::select(vec![
            Mutation::Content, Mutation::Mode, Mutation::Mtime, Mutation::Owner,
            Mutation::LinkTarget, Mutation::AddFile, Mutation::RemoveFile,
        ]),
        pick in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (files, links) = build(root, &nodes);

        // Deterministic, and a warm scan reads nothing.
        let (m1, r1) = scan_with(root, &Manifest::new(), later());
        let (m1b, r1b) = scan_with(root, &m1, later());
        prop_assert_eq!(&m1, &m1b);
        prop_assert_eq!(r1.files, files.len() as u64);
        prop_assert_eq!(r1.symlinks, links.len() as u64);
        prop_assert_eq!(r1b.files_hashed, 0);
        prop_assert_eq!(tree(&m1).root(), tree(&m1b).root());
        prop_assert!(diff(&m1, &m1b, None).is_empty());

        // The scans above lied about the clock (`later()`), which turns the
        // racy-window protection off: let the file system's clock tick so
        // the edit below changes ctime, as it does on a real server between
        // sync runs.
        std::thread::sleep(Duration::from_millis(20));
        let Some((path, what)) = mutate(root, mutation, pick, &files, &links) else {
            return Ok(());
        };
        let (m2, _) = scan_with(root, &m1, later());
        // Reusing hashes describes the tree exactly as a scan from scratch.
        let (fresh, _) = scan_with(root, &Manifest::new(), later());
        prop_assert_eq!(&m2, &fresh);

        prop_assert_ne!(tree(&m2).root(), tree(&m1).root());
        let d = diff(&m2, &m1, None);
        match what {
            Some(what) => {
                let c = d.changes.iter().find(|c| *c.path == path);
                prop_assert_eq!(c.map(|c| c.what), Some(what), "{:?}", d);
            }
            None => prop_assert!(d.delete.iter().any(|r| *r.path == path), "{:?}", d),
        }
        prop_assert_eq!(diff_by_walk(&m2, &m1), format!("{d:?}"));
        // And back the other way, from the standby's point of view.
        prop_assert_eq!(diff_by_walk(&m1, &m2), full_diff(&m1, &m2));
    }
}

/// A manifest from random paths over a tiny alphabet (so two of them share
/// most paths), with every parent made a directory first.
fn synthetic(items: &[(Vec<u8>, u8, u8)]) -> Manifest {
    let mut m = Manifest::new();
    let mut sorted: Vec<&(Vec<u8>, u8, u8)> = items.iter().collect();
    sorted.sort_by_key(|(p, _, _)| p.len());
    'items: for (path, kind, v) in sorted {
        let names: Vec<&[u8]> = path.chunks(1).collect();
        let mut at = RelPath::root();
        for name in &names[..names.len() - 1] {
            at = at.join(name).unwrap();
            match m.get(&at) {
                Some(e) if e.kind.is_dir() => {}
                Some(_) => continue 'items,
                None => {
                    m.insert(at.clone(), synthetic_entry(Kind::Dir, 0)).unwrap();
                }
            }
        }
        let path = at.join(names[names.len() - 1]).unwrap();
        if m.get(&path).is_some() {
            continue;
        }
        let kind = match kind % 3 {
            0 => Kind::Dir,
            1 => Kind::File {
                size: u64::from(*v),
                hash: [*v; 32],
            },
            _ => Kind::Symlink {
                target: vec![b'a' + v % 2],
            },
        };
        m.insert(path, synthetic_entry(kind, *v)).unwrap();
    }
    m
}

fn synthetic_entry(kind: Kind, v: u8) -> Entry {
    Entry {
        kind,
        mode: if v.is_multiple_of(5) { 0o600 } else { 0o644 },
        uid: u32::from(v % 3),
        gid: 0,
        user: (!v.is_multiple_of(7)).then(|| "asterisk".into()),
        group: Some("asterisk".into()),
        mtime: Time::new(1_700_000_000 + i64::from(v % 4), 0),
        ctime: Time::new(1_700_000_000, 0),
        dev: 1,
        ino: u64::from(v),
        racy: false,
        placed: false,
    }
}

fn paths_strategy() -> impl Strategy<Value = Vec<(Vec<u8>, u8, u8)>> {
    prop::collection::vec(
        (
            prop::collection::vec(prop::sample::select(b"abc".to_vec()), 1..4),
            any::<u8>(),
            0u8..6,
        ),
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// On any two manifests: equal root hashes exactly when there is nothing
    /// to do, and walking the trees finds exactly the full diff.
    #[test]
    fn tree_walk_finds_exactly_the_diff(a in paths_strategy(), b in paths_strategy()) {
        let (a, b) = (synthetic(&a), synthetic(&b));
        let d = diff(&a, &b, None);
        prop_assert_eq!(tree(&a).root() == tree(&b).root(), d.is_empty());
        prop_assert_eq!(diff_by_walk(&a, &b), format!("{d:?}"));
        prop_assert!(diff(&a, &a, None).is_empty());
        prop_assert_eq!(Manifest::from_bytes(&a.to_bytes().unwrap()).unwrap(), a);
    }

    /// The same on near-identical manifests: a few entries edited.
    #[test]
    fn tree_walk_on_small_edits(
        items in paths_strategy(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..6), 0..4),
    ) {
        let mut edited = items.clone();
        for (i, kind, v) in edits {
            if !edited.is_empty() {
                let k = i.index(edited.len());
                edited[k].1 = kind;
                edited[k].2 = v;
            }
        }
        let (a, b) = (synthetic(&items), synthetic(&edited));
        let d = diff(&a, &b, None);
        prop_assert_eq!(tree(&a).root() == tree(&b).root(), d.is_empty());
        prop_assert_eq!(diff_by_walk(&a, &b), format!("{d:?}"));
        prop_assert_eq!(diff_by_walk(&b, &a), full_diff(&b, &a));
    }
}

// ------------------------------------------------------------ the racy window

#[test]
fn an_edit_within_the_racy_window_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("extensions.conf");
    fs::write(&f, b"exten => 100,1,Dial(SIP/100)").unwrap();
    let (m1, _) = scan_with(dir.path(), &Manifest::new(), SystemTime::now());
    assert!(m1.get(&rp("extensions.conf")).unwrap().racy);

    // Same size, same mtime to the nanosecond: only the racy mark (and
    // ctime) say it must be read again.
    let old = mtime(&f);
    fs::write(&f, b"exten => 200,1,Dial(SIP/200)").unwrap();
    set_mtime(&f, old);
    let (m2, r2) = scan_with(dir.path(), &m1, SystemTime::now());
    assert_eq!(r2.files_hashed, 1);
    let d = diff(&m2, &m1, None);
    assert_eq!(d.changes.len(), 1);
    assert_eq!(d.changes[0].what, What::Content);
}

#[test]
fn identical_stat_is_trusted_only_outside_the_racy_window() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), b"real contents").unwrap();
    let (good, _) = scan_with(dir.path(), &Manifest::new(), later());
    let real = good.get(&rp("f")).unwrap().kind.clone();

    // A previous manifest with the file's exact stat but a stale hash, as if
    // an edit had landed in the same clock tick as the scan that hashed it.
    let stale = |racy: bool| {
        let mut m = good.clone();
        let mut e = m.get(&rp("f")).unwrap().clone();
        e.kind = Kind::File {
            size: 13,
            hash: [0; 32],
        };
        e.racy = racy;
        m.insert(rp("f"), e).unwrap();
        m
    };
    // Hashed in the racy window last time: read again.
    let (m, r) = scan_with(dir.path(), &stale(true), later());
    assert_eq!(
        (m.get(&rp("f")).unwrap().kind.clone(), r.files_hashed),
        (real.clone(), 1)
    );
    // Changed within the window of this scan: read again.
    let (m, r) = scan_with(dir.path(), &stale(false), SystemTime::now());
    assert_eq!(
        (m.get(&rp("f")).unwrap().kind.clone(), r.files_hashed),
        (real, 1)
    );
    // Settled and unchanged: the previous hash stands, nothing is read.
    let (m, r) = scan_with(dir.path(), &stale(false), later());
    assert_eq!(r.files_hashed, 0);
    assert_eq!(
        m.get(&rp("f")).unwrap().kind,
        Kind::File {
            size: 13,
            hash: [0; 32]
        }
    );
}

// ------------------------------------------------------- what is left out

#[test]
fn excludes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["spool/tmp/sub", "x", "cache/deep"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in [
        "a.tmp",
        "x/b.tmp",
        "x/keep.conf",
        "spool/tmp/f",
        "spool/tmp/sub/g",
        "spool/keep",
        "cache/deep/h",
    ] {
        fs::write(root.join(f), b"x").unwrap();
    }
    let ex = build_excludes(&["*.tmp".into(), "spool/tmp/**".into(), "cache".into()]).unwrap();
    let (m, r) = scan(root, &ex, &Manifest::new(), later()).unwrap();
    let paths: Vec<String> = m.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(
        paths,
        ["spool", "spool/keep", "spool/tmp", "x", "x/keep.conf"]
    );
    // a.tmp, x/b.tmp, spool/tmp/f, spool/tmp/sub, cache (with its subtree).
    assert_eq!(r.excluded, 5);
}

#[test]
fn fifos_and_sockets_are_skipped_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    nix::unistd::mkfifo(
        &root.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    fs::write(root.join("real"), b"x").unwrap();
    // A fifo opened for reading would block the scan: it must not be opened.
    let (m, r) = scan_with(root, &Manifest::new(), later());
    assert_eq!(m.len(), 1);
    let skipped: Vec<(String, SkipReason)> = r
        .skipped
        .iter()
        .map(|s| (s.path.to_string(), s.reason.clone()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("pipe".to_string(), SkipReason::Fifo),
            ("sock".to_string(), SkipReason::Socket)
        ]
    );
    assert!(SkipReason::Fifo.to_string().contains("fifo"));
    // Left alone on the other side, not deleted there.
    assert!(m.is_unsettled(&rp("pipe")));
    let mut remote = m.clone();
    remote
        .insert(rp("pipe"), m.get(&rp("real")).unwrap().clone())
        .unwrap();
    let d = diff(&m, &remote, None);
    assert!(d.delete.is_empty());
    assert_eq!(d.held, [&rp("pipe")]);
}

#[test]
fn a_file_growing_while_hashed_is_unstable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let big = root.join("recording.wav");
    {
        let mut f = File::create(&big).unwrap();
        let block = vec![7u8; 1 << 20];
        for _ in 0..32 {
            f.write_all(&block).unwrap();
        }
    }
    fs::write(root.join("quiet.conf"), b"x").unwrap();
    // A call recording in progress, appended to whenever it is read: the
    // writer sleeps on inotify and appends on every open or read of the
    // file, so every attempt at hashing it sees it grow. As root the writer
    // runs SCHED_FIFO, so an event wakes it at once even on a machine busy
    // with other tests (it only ever runs one append per event, then
    // sleeps); otherwise a busy machine could starve it for a whole attempt.
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let writer = {
        let (stop, big) = (stop.clone(), big.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&big).unwrap();
            let name = std::ffi::CString::new(big.as_os_str().as_bytes()).unwrap();
            if is_root() {
                let param = libc::sched_param { sched_priority: 10 };
                // SAFETY: sets this thread's own policy; param outlives the call.
                let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
                assert_eq!(rc, 0, "sched_setscheduler");
            }
            // SAFETY: plain syscalls on a descriptor owned by this thread.
            let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
            assert!(fd >= 0, "inotify_init1");
            let mask = libc::IN_ACCESS | libc::IN_OPEN;
            let wd = unsafe { libc::inotify_add_watch(fd, name.as_ptr(), mask) };
            assert!(wd >= 0, "inotify_add_watch");
            ready_tx.send(()).unwrap();
            let mut events = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                if unsafe { libc::poll(&mut pfd, 1, 10) } > 0 {
                    unsafe { libc::read(fd, events.as_mut_ptr().cast(), events.len()) };
                    f.write_all(b"0123456789abcdef").unwrap();
                }
            }
            unsafe { libc::close(fd) };
        })
    };
    ready.recv().unwrap();
    let result = scan(
        &root,
        &build_excludes(&[]).unwrap(),
        &Manifest::new(),
        later(),
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let (m, r) = result.unwrap();
    assert_eq!(r.unstable, [rp("recording.wav")], "{r:?}");
    assert!(m.get(&rp("recording.wav")).is_none(), "not sent this run");
    assert!(
        m.is_unsettled(&rp("recording.wav")),
        "nor deleted on the other side"
    );
    assert!(m.get(&rp("quiet.conf")).is_some());
    assert!(r.to_string().contains("1 changing while read"), "{r}");

    // Once the recording is finished, the next scan takes it.
    let (m, r) = scan_with(&root, &m, later());
    assert!(r.unstable.is_empty());
    assert!(m.get(&rp("recording.wav")).is_some());
}

#[test]
fn a_mount_point_is_not_crossed() {
    if !is_root() {
        eprintln!("skipped: mounting needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("monitor");
    fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    fs::write(mnt.join("inside"), b"x").unwrap();
    fs::write(dir.path().join("outside"), b"x").unwrap();
    let (m, r) = scan_with(dir.path(), &Manifest::new(), later());
    let paths: Vec<String> = m.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(paths, ["outside"], "{r:?}");
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].reason, SkipReason::MountPoint);
    assert!(m.is_unsettled(&rp("monitor/inside")));
}

// ------------------------------------------------------------ persistence

#[test]
fn manifest_save_load_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("d")).unwrap();
    fs::write(root.join("d/f"), b"hello").unwrap();
    std::os::unix::fs::symlink("d/f", root.join("l")).unwrap();
    let (m, _) = scan_with(&root, &Manifest::new(), later());

    let path = dir.path().join("manifest");
    let missing = Manifest::load(&path);
    assert_eq!(missing.status, LoadStatus::Missing);
    assert!(missing.manifest.is_empty());

    m.save(&path).unwrap();
    let loaded = Manifest::load(&path);
    assert_eq!(loaded.status, LoadStatus::Loaded);
    assert!(loaded.warning.is_none());
    assert_eq!(loaded.manifest, m);

    for corrupt in [
        b"garbage".to_vec(),
        Vec::new(),
        fs::read(&path).unwrap()[..20].to_vec(),
    ] {
        fs::write(&path, &corrupt).unwrap();
        let l = Manifest::load(&path);
        assert_eq!(l.status, LoadStatus::Corrupt);
        assert!(l.manifest.is_empty());
        let w = l.warning.unwrap();
        assert!(w.contains("corrupt") && w.contains("hashed"), "{w}");
    }
    // A save over a corrupt file repairs it.
    m.save(&path).unwrap();
    assert_eq!(Manifest::load(&path).manifest, m);
}

#[test]
fn check_source_refuses_what_would_wipe_the_standby() {
    let dir = tempfile::tempdir().unwrap();
    let err = |p: &Path| format!("{:#}", check_source(p).unwrap_err());
    let e = err(&dir.path().join("nope"));
    assert!(e.contains("does not exist") && e.contains("mounted"), "{e}");
    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    assert!(err(&file).contains("not a directory"));
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let e = err(&empty);
    assert!(e.contains("is empty") && e.contains("mounted"), "{e}");
    check_source(dir.path()).unwrap();
}

// ------------------------------------------------------- two servers

#[test]
fn conflicts_and_the_delete_guard_between_two_trees() {
    let dir = tempfile::tempdir().unwrap();
    let (active, standby) = (dir.path().join("active"), dir.path().join("standby"));
    for root in [&active, &standby] {
        fs::create_dir_all(root.join("voicemail")).unwrap();
        for i in 0..10 {
            fs::write(root.join(format!("voicemail/msg{i}.txt")), format!("m{i}")).unwrap();
            set_mtime(
                &root.join(format!("voicemail/msg{i}.txt")),
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i),
            );
        }
    }
    let (base, _) = scan_with(&active, &Manifest::new(), later());
    let (s0, _) = scan_with(&standby, &Manifest::new(), later());
    assert_eq!(
        tree(&base).root(),
        tree(&s0).root(),
        "equal trees, equal roots"
    );

    // Both servers edit msg0; only the active edits msg1; only the standby
    // edits msg2.
    fs::write(active.join("voicemail/msg0.txt"), b"active").unwrap();
    fs::write(standby.join("voicemail/msg0.txt"), b"standby").unwrap();
    fs::write(active.join("voicemail/msg1.txt"), b"active").unwrap();
    fs::write(standby.join("voicemail/msg2.txt"), b"standby").unwrap();
    let (a, _) = scan_with(&active, &base, later());
    let (s, _) = scan_with(&standby, &s0, later());
    let d = diff(&a, &s, Some(&base));
    let conflicts: Vec<String> = d.conflicts.iter().map(|c| c.path.to_string()).collect();
    assert_eq!(conflicts, ["voicemail/msg0.txt"]);
    let changes: Vec<String> = d.changes.iter().map(|c| c.path.to_string()).collect();
    assert_eq!(changes, ["voicemail/msg1.txt", "voicemail/msg2.txt"]);

    // The active loses most of its voicemail (a half-mounted disk?).
    for i in 3..10 {
        fs::remove_file(active.join(format!("voicemail/msg{i}.txt"))).unwrap();
    }
    let (a, _) = scan_with(&active, &a, later());
    let d = diff(&a, &s, Some(&base));
    assert_eq!(d.files_deleted(), 7);
    let e = delete_guard(&d, s.file_count(), 50)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("delete 7 of the standby's 10 files (70.0%)"),
        "{e}"
    );
    delete_guard(&d, s.file_count(), 80).unwrap();
}

// ------------------------------------------------------------ benchmark

/// `cargo test --release --test sync_scan -- --ignored --nocapture`
/// (`SIPHA_BENCH_FILES` sets the count). Prints, asserts nothing.
#[test]
#[ignore]
fn bench_scan_100k() {
    let n: usize = std::env::var("SIPHA_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    let t = Instant::now();
    let per_dir = 1000;
    for i in 0..n {
        let d = root.join(format!("d{:03}", i / per_dir));
        if i % per_dir == 0 {
            fs::create_dir_all(&d).unwrap();
        }
        let body = format!("{i:08}").repeat(128); // 1 KiB
        fs::write(d.join(format!("f{i:06}.conf")), body).unwrap();
    }
    println!("created {n} files of 1 KiB in {:.2?}", t.elapsed());
    let ex = build_excludes(&["*.tmp".into()]).unwrap();

    let (m, r) = scan(&root, &ex, &Manifest::new(), later()).unwrap();
    println!("scan, no previous manifest (hash everything): {r}");
    let (m2, r) = scan(&root, &ex, &m, later()).unwrap();
    println!("scan, previous manifest (stat only):          {r}");
    assert_eq!(r.files_hashed, 0);

    let t = Instant::now();
    let tr = tree(&m2);
    println!("tree of {} dirs: {:.2?}", tr.dir_count(), t.elapsed());
    let path = dir.path().join("manifest");
    let t = Instant::now();
    m2.save(&path).unwrap();
    let saved = t.elapsed();
    let t = Instant::now();
    let loaded = Manifest::load(&path);
    println!(
        "manifest: {} bytes, save {saved:.2?}, load {:.2?}",
        fs::metadata(&path).unwrap().len(),
        t.elapsed()
    );
    assert_eq!(loaded.manifest, m2);

    // The whole no-change pass of the sender, from cron: load, scan, tree,
    // compare with the previous manifest (unchanged: no save needed).
    let t = Instant::now();
    let prev = Manifest::load(&path).manifest;
    let (m3, _) = scan(&root, &ex, &prev, later()).unwrap();
    let root_hash = tree(&m3).root();
    let unchanged = m3 == prev;
    println!(
        "no-change pass (load + scan + tree + compare): {:.2?}, unchanged: {unchanged}, root {}",
        t.elapsed(),
        root_hash
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
}

/// `changed` says whether a scan's result differs from the previous
/// manifest it consumed: the sender and the standby save their manifest
/// only then (a quiet run writes nothing).
#[test]
fn a_scan_says_whether_anything_changed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::write(root.join("a/one.conf"), b"1").unwrap();
    fs::write(root.join("a/b/two.wav"), b"22").unwrap();
    fs::write(root.join("z.txt"), b"z").unwrap();
    let ex = build_excludes(&[]).unwrap();
    let opts = ScanOptions::default();
    let rescan = |prev: &Manifest| scan_owned(root, &ex, prev.clone(), later(), &opts).unwrap();

    let (first, r) = rescan(&Manifest::new());
    assert!(r.changed, "a first scan is a change");
    let (same, r) = rescan(&first);
    assert!(!r.changed, "nothing changed: {r}");
    assert_eq!(same, first);

    type Step<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let steps: [Step; 5] = [
        (
            "an edit",
            Box::new(|| fs::write(root.join("a/b/two.wav"), b"33").unwrap()),
        ),
        (
            "a new file",
            Box::new(|| fs::write(root.join("a/new"), b"n").unwrap()),
        ),
        (
            "a deletion at the end",
            Box::new(|| fs::remove_file(root.join("z.txt")).unwrap()),
        ),
        (
            "a deleted directory",
            Box::new(|| fs::remove_dir_all(root.join("a/b")).unwrap()),
        ),
        (
            "a mode",
            Box::new(|| {
                fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o700)).unwrap()
            }),
        ),
    ];
    let mut prev = same;
    for (what, change) in steps {
        change();
        let (m, r) = rescan(&prev);
        assert!(r.changed, "{what} was not seen as a change");
        assert_ne!(m, prev, "{what}");
        let (again, r) = rescan(&m);
        assert!(!r.changed, "after {what}, a second scan still changed: {r}");
        prev = again;
    }
}

/// The standby's closing rescan (`ScanOptions::relist`) reads only the
/// directories its session wrote in, and the way down to them: there it
/// sees every change (new, edited, deleted files, a deleted directory);
/// every other subtree, unsettled paths included, is taken from the
/// previous scan as it was, unread; and the result equals a full scan
/// whenever nothing changed outside the listed directories.
#[test]
fn a_relist_scan_reads_only_the_listed_directories() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["a/b/c", "a/d", "e"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for (f, body) in [
        ("a/b/c/deep.wav", "deep"),
        ("a/b/one.wav", "one"),
        ("a/b/two.wav", "two"),
        ("a/d/other.wav", "other"),
        ("a/top.conf", "top"),
        ("e/far.wav", "far"),
    ] {
        fs::write(root.join(f), body).unwrap();
    }
    let ex = build_excludes(&[]).unwrap();
    let (first, _) =
        scan_owned(root, &ex, Manifest::new(), later(), &ScanOptions::default()).unwrap();
    let relist = |prev: &Manifest, dirs: &[&str]| {
        let opts = ScanOptions {
            relist: Some(
                dirs.iter()
                    .map(|d| RelPath::from_path(Path::new(d)).unwrap())
                    .collect(),
            ),
            ..Default::default()
        };
        scan_owned(root, &ex, prev.clone(), later(), &opts)
            .unwrap()
            .0
    };
    let full = |prev: &Manifest| {
        scan_owned(root, &ex, prev.clone(), later(), &ScanOptions::default())
            .unwrap()
            .0
    };

    // Written in a/b: an edit, a new file, a deleted file and subtree.
    fs::write(root.join("a/b/one.wav"), b"one, edited").unwrap();
    fs::write(root.join("a/b/new.wav"), b"new").unwrap();
    fs::remove_file(root.join("a/b/two.wav")).unwrap();
    fs::remove_dir_all(root.join("a/b/c")).unwrap();
    let after = relist(&first, &["a/b"]);
    assert_eq!(
        after,
        full(&first),
        "all the changes were in a/b: same as a full scan"
    );
    assert!(after.get(&rp("a/b/new.wav")).is_some());
    assert!(after.get(&rp("a/b/two.wav")).is_none());
    assert!(
        after.get(&rp("a/b/c/deep.wav")).is_none(),
        "a deleted subtree goes"
    );

    // A change outside the listed directories is not read: the previous
    // entry stands (the next full scan finds it, its stat changed).
    fs::write(root.join("e/far.wav"), b"far, edited elsewhere").unwrap();
    fs::write(root.join("a/d/other.wav"), b"other, edited").unwrap();
    let kept = relist(&after, &["a/b"]);
    assert_eq!(kept.get(&rp("e/far.wav")), after.get(&rp("e/far.wav")));
    assert_eq!(
        kept.get(&rp("a/d/other.wav")),
        after.get(&rp("a/d/other.wav"))
    );
    assert_eq!(
        kept, after,
        "nothing read outside a/b, and nothing changed in it"
    );
    let rescanned = full(&kept);
    assert_ne!(rescanned.get(&rp("e/far.wav")), kept.get(&rp("e/far.wav")));
    assert_ne!(
        rescanned.get(&rp("a/d/other.wav")),
        kept.get(&rp("a/d/other.wav"))
    );

    // Unsettled paths in a subtree not read stay unsettled.
    let mut marked = rescanned.clone();
    marked.mark_unsettled(rp("e/far.wav"));
    let carried = relist(&marked, &["a"]);
    assert!(carried.unsettled().contains(&rp("e/far.wav")));
    assert_eq!(carried.entries(), rescanned.entries());

    // A directory the previous scan did not have, or had as another one
    // (a tree renamed into its place), is read whole, listed or not: what
    // the previous scan holds under that name is not its contents.
    fs::create_dir_all(root.join("e/new/deeper")).unwrap();
    fs::write(root.join("e/new/deeper/msg.wav"), b"new").unwrap();
    fs::create_dir_all(root.join("swap/x")).unwrap();
    fs::write(root.join("swap/x/in.wav"), b"swapped in").unwrap();
    fs::rename(root.join("a/d"), root.join("old-d")).unwrap();
    fs::rename(root.join("swap/x"), root.join("a/d")).unwrap();
    let read = relist(&rescanned, &["", "e", "a"]);
    assert_eq!(
        read,
        full(&rescanned),
        "new and replaced directories read whole"
    );
    assert!(read.get(&rp("e/new/deeper/msg.wav")).is_some());
    assert!(read.get(&rp("a/d/in.wav")).is_some());
    assert!(read.get(&rp("a/d/other.wav")).is_none());

    // Only the listed directories are read whole: in their ancestors, only
    // the way down. A path to refresh is read alone, gone or changed.
    fs::write(root.join("a/top.conf"), b"top, edited").unwrap();
    fs::write(root.join("e/far.wav"), b"far, edited again").unwrap();
    fs::write(root.join("e/unknown.wav"), b"not asked for").unwrap();
    fs::remove_file(root.join("e/new/deeper/msg.wav")).unwrap();
    let opts = ScanOptions {
        relist: Some([rp("a/b")].into()),
        refresh: [rp("e/far.wav"), rp("e/new/deeper/msg.wav")].into(),
        ..Default::default()
    };
    let (part, report) = scan_owned(root, &ex, read.clone(), later(), &opts).unwrap();
    assert_eq!(part.get(&rp("a/top.conf")), read.get(&rp("a/top.conf")));
    assert_ne!(part.get(&rp("e/far.wav")), read.get(&rp("e/far.wav")));
    assert_eq!(
        part.get(&rp("e/far.wav")),
        full(&read).get(&rp("e/far.wav"))
    );
    assert!(part.get(&rp("e/new/deeper/msg.wav")).is_none(), "gone");
    assert!(part.get(&rp("e/unknown.wav")).is_none(), "not asked for");
    assert!(part.get(&rp("old-d/other.wav")).is_some(), "kept unread");
    assert_eq!(report.files, 3, "a/b's two files and e/far.wav");
}
