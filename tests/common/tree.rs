//! Trees on disk, for sync tests: what is compared of one (per path, a
//! file's bytes, mode and mtime to the nanosecond, a directory's mode, a
//! symlink's target), and files written with a given mode and mtime.

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

/// Every path under `root`, except the names sync makes for itself (the
/// trash, conflict copies).
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if name == ".sip-ha-trash" || name.contains(".sip-ha-conflict-") {
                continue;
            }
            let md = std::fs::symlink_metadata(&path).unwrap();
            let mode = md.mode() & 0o7777;
            let node = if md.is_symlink() {
                Node::Link(std::fs::read_link(&path).unwrap())
            } else if md.is_dir() {
                todo.push(path.clone());
                Node::Dir { mode }
            } else {
                let mtime_ns = i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec());
                let data = std::fs::read(&path).unwrap();
                Node::File {
                    data,
                    mode,
                    mtime_ns,
                }
            };
            out.insert(path.strip_prefix(root).unwrap().to_path_buf(), node);
        }
    }
    out
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
