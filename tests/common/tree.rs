//! Trees on disk, for sync tests: what is compared of one (per path, a
//! file's bytes, mode and mtime to the nanosecond, a directory's mode, a
//! symlink's target), and files written with a given mode and mtime.

use sip_ha::sync::receive::CONFLICT_MARKER;
use sip_ha::sync::trash::TRASH_DIR_NAME;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What is compared of one path.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    File {
        data: Vec<u8>,
        mode: u32,
        mtime_ns: i128,
    },
    Dir {
        mode: u32,
    },
    Link(PathBuf),
}

/// Every path under `root` but the trash, relative to `root`, with what
/// `what` makes of it (given its full path and `symlink_metadata`; `None`
/// leaves it out). Directories are entered, symlinks never followed.
pub fn walk<T>(
    root: &Path,
    mut what: impl FnMut(&Path, &std::fs::Metadata) -> Option<T>,
) -> BTreeMap<PathBuf, T> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.file_name() == Some(TRASH_DIR_NAME.as_ref()) {
                continue;
            }
            let md = std::fs::symlink_metadata(&path).unwrap();
            if md.is_dir() {
                stack.push(path.clone());
            }
            if let Some(v) = what(&path, &md) {
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), v);
            }
        }
    }
    out
}

/// Every path under `root` (not the sync's own names).
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    walk(root, |path, md| {
        if path.to_string_lossy().contains(CONFLICT_MARKER) {
            None
        } else if md.file_type().is_symlink() {
            Some(Node::Link(std::fs::read_link(path).unwrap()))
        } else if md.is_dir() {
            Some(Node::Dir {
                mode: md.mode() & 0o7777,
            })
        } else {
            Some(Node::File {
                data: std::fs::read(path).unwrap(),
                mode: md.mode() & 0o7777,
                mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
            })
        }
    })
}

/// Panics, naming the differing paths, unless the trees under `a` (not
/// empty) and `b` are the same.
#[track_caller]
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (ta, tb) = (snapshot(a), snapshot(b));
    assert!(!ta.is_empty(), "{} is empty", a.display());
    let differ: Vec<_> = ta
        .keys()
        .chain(tb.keys())
        .filter(|k| ta.get(*k) != tb.get(*k))
        .collect();
    assert!(
        differ.is_empty(),
        "{} and {} differ at {differ:?}",
        a.display(),
        b.display()
    );
}

/// Set the mtime (and atime) of `path`, not following a symlink.
pub fn set_mtime(path: &Path, secs: i64, nanos: i64) {
    let ts = nix::sys::time::TimeSpec::new(secs, nanos);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// Write `data` to `path` (making its directories) with `mode` and the
/// mtime `(secs, nanos)`.
pub fn write(path: &Path, data: &[u8], mode: u32, mtime: (i64, i64)) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(path, mtime.0, mtime.1);
}
