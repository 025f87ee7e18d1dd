//! The scan: walk one sync root and describe it as a [`Manifest`].
//!
//! The walk never follows symlinks, does not cross mount points
//! (reported as skipped), and visits names in byte order, so two scans of
//! the same tree give the same manifest. Each entry is stat'ed once, without
//! following symlinks and relative to its directory's descriptor (no path
//! walk per file). A regular file is read
//! and hashed (blake3, 256 KiB reads; never mmap, which dies with SIGBUS
//! when Asterisk truncates a file being hashed) unless the previous manifest
//! has it with the same device, inode, size, mtime, ctime and mode, and that
//! hash was not taken within [`RACY_WINDOW`] of the file's last change. So a
//! no-change run reads no file contents at all.
//!
//! Why the racy window: file systems stamp times with a clock that ticks
//! every few milliseconds, so an edit in the same tick as the scan that
//! hashed a file leaves its stat unchanged. rsync compares whole seconds and
//! misses such edits. A hash taken while the file's mtime or ctime is less
//! than [`RACY_WINDOW`] old is marked `racy` and taken again next scan.
//!
//! A file that changes while it is hashed (stat before and after differ) is
//! tried again [`HASH_RETRIES`] times, then reported as unstable: it is left
//! out of this run and marked unsettled, so the other side keeps its copy.
//! Devices, fifos, sockets, mount points and unreadable paths are skipped
//! with a reason, and also marked unsettled.
//!
//! The sender's scan ([`scan_with`], [`ScanOptions::sender`]) does two more
//! things: a file larger than the path's `max_file_size` is skipped and
//! marked unsettled the same way (so the other side's copy is left alone),
//! and a SQLite database listed in `sqlite` is described by a consistent
//! snapshot of it instead of the live file (see [`sqlite`](mod@super::sqlite)).

use super::manifest::{Entry, Kind, Manifest, RelPath, Time};
use super::sqlite::{self, Snapshots};
use crate::config::{format_size, SyncPath};
use anyhow::{bail, Context, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};
use std::collections::{btree_map, BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::iter::Peekable;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A hash taken while the file changed less than this long before the scan
/// is not trusted by the next scan.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// How many more times a file that changed while it was hashed is tried.
pub const HASH_RETRIES: u32 = 3;

const READ_BUF: usize = 256 * 1024;

/// Why a path was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    Fifo,
    Socket,
    BlockDevice,
    CharDevice,
    /// Another file system is mounted here; the scan stays on the root's.
    MountPoint,
    /// Could not be read or listed (the error).
    Unreadable(String),
    /// Larger than the path's `max_file_size`.
    TooLarge {
        size: u64,
        max: u64,
    },
    /// A SQLite database that could not be snapshotted (why).
    NoSnapshot(String),
}

impl SkipReason {
    /// Whether the operator should hear of it at each run (a file the
    /// configuration keeps from being sent), rather than only see it
    /// counted.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            SkipReason::TooLarge { .. } | SkipReason::NoSnapshot(_)
        )
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Fifo => f.write_str("a fifo (named pipe): not synced"),
            SkipReason::Socket => f.write_str("a socket: not synced"),
            SkipReason::BlockDevice => f.write_str("a block device: not synced"),
            SkipReason::CharDevice => f.write_str("a character device: not synced"),
            SkipReason::MountPoint => {
                f.write_str("a mount point: another file system, not crossed")
            }
            SkipReason::Unreadable(e) => write!(f, "unreadable: {e}"),
            SkipReason::TooLarge { size, max } => write!(
                f,
                "{} ({size} bytes), larger than max_file_size {}: not sent, the other \
                 side's copy is left alone",
                format_size(*size),
                format_size(*max)
            ),
            SkipReason::NoSnapshot(e) => write!(
                f,
                "SQLite database not snapshotted ({e}): not sent this run, the other \
                 side's copy is left alone"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: RelPath,
    pub reason: SkipReason,
}

/// What a scan saw and did.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Files read and hashed this run (the rest reused the previous hash).
    pub files_hashed: u64,
    pub bytes_hashed: u64,
    /// Paths matched by an exclude pattern (a directory counts once).
    pub excluded: u64,
    /// Paths that disappeared between being listed and being read.
    pub vanished: u64,
    pub skipped: Vec<Skipped>,
    /// Files that kept changing while hashed: not sent this run.
    pub unstable: Vec<RelPath>,
    pub elapsed: Duration,
    /// The manifest differs from the previous one (it must be saved).
    pub changed: bool,
}

impl fmt::Display for ScanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} files, {} directories, {} symlinks; hashed {} files ({} bytes) in {:.3} s",
            self.files,
            self.dirs,
            self.symlinks,
            self.files_hashed,
            self.bytes_hashed,
            self.elapsed.as_secs_f64()
        )?;
        if self.excluded > 0 {
            write!(f, "; {} excluded", self.excluded)?;
        }
        if !self.skipped.is_empty() {
            write!(f, "; {} skipped", self.skipped.len())?;
        }
        if !self.unstable.is_empty() {
            write!(
                f,
                "; {} changing while read (next run)",
                self.unstable.len()
            )?;
        }
        Ok(())
    }
}

/// Compile a sync path's exclude patterns. Each matches the path relative
/// to the sync root; `*` also crosses `/` (so `*.tmp` matches at any
/// depth); a matching directory is left out with everything below it, and
/// `spool/tmp/**` leaves out what is below `spool/tmp` but keeps the
/// directory itself.
pub fn build_excludes(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for pat in patterns {
        b.add(Glob::new(pat).with_context(|| format!("invalid exclude pattern {pat:?}"))?);
    }
    b.build().context("cannot compile the exclude patterns")
}

/// Refuse a sync source that would make the standby lose everything: a root
/// that does not exist, is not a directory, or is empty (the usual sign of a
/// disk that is not mounted).
pub fn check_source(root: &Path) -> Result<()> {
    let meta = match fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "sync source {} does not exist: is the disk mounted, and is the path in [sync] right?",
            root.display()
        ),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot stat the sync source {}", root.display()))
        }
    };
    if !meta.is_dir() {
        bail!(
            "sync source {} is not a directory: check the path in [sync]",
            root.display()
        );
    }
    let mut listing = fs::read_dir(root)
        .with_context(|| format!("cannot list the sync source {}", root.display()))?;
    if listing.next().is_none() {
        bail!(
            "sync source {} is empty: is the disk mounted? Refusing to sync it, since \
             mirroring an empty source would delete everything under it on the standby",
            root.display()
        );
    }
    Ok(())
}

/// What a scan does beyond describing the tree (the sender's side; the
/// default does nothing more).
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Files larger than this are skipped and marked unsettled.
    pub max_file_size: Option<u64>,
    /// SQLite databases described by a snapshot of them.
    pub sqlite: Option<Snapshots>,
    /// Read again only these directories (and the way down to them); take
    /// every other directory's subtree from `previous` as it is, unread,
    /// unless `previous` does not have that directory (same inode): a new
    /// one, or one renamed into place, is read whole. Saves a stat of
    /// every file. For the standby's closing rescan, which need only look
    /// where its session wrote (`previous` was a full scan moments before,
    /// and anything else changed meanwhile is found by the next full scan:
    /// its stat no longer matches), and for the sender in a resident loop,
    /// whose watch noted what changed since the last scan
    /// ([`journal`](mod@super::journal)).
    pub relist: Option<BTreeSet<RelPath>>,
    /// With `relist`: also read these single paths again (their own stat,
    /// and their content if that changed, or that they are gone), and
    /// nothing else in their directories. For a standby that trusts its
    /// saved manifest: what the sender is about to compare is read fresh.
    pub refresh: BTreeSet<RelPath>,
}

impl ScanOptions {
    /// The options of the sender of `sp`, whose snapshots are kept under
    /// `state_dir`.
    pub fn sender(sp: &SyncPath, state_dir: &Path) -> Result<ScanOptions> {
        Ok(ScanOptions {
            max_file_size: sp.max_file_size,
            sqlite: Snapshots::of(sp, state_dir)?,
            relist: None,
            refresh: BTreeSet::new(),
        })
    }
}

/// Describe the tree under `root`. `previous` is the last manifest of the
/// same root (empty on a first run): unchanged files keep its hashes.
/// `now` is the scan's clock for the racy test. Errors only when the root
/// itself cannot be read; everything below is reported instead.
pub fn scan(
    root: &Path,
    excludes: &GlobSet,
    previous: &Manifest,
    now: SystemTime,
) -> Result<(Manifest, ScanReport)> {
    scan_with(root, excludes, previous, now, &ScanOptions::default())
}

/// [`scan`] with [`ScanOptions`].
pub fn scan_with(
    root: &Path,
    excludes: &GlobSet,
    previous: &Manifest,
    now: SystemTime,
    opts: &ScanOptions,
) -> Result<(Manifest, ScanReport)> {
    scan_owned(root, excludes, previous.clone(), now, opts)
}

/// [`scan_with`], consuming `previous` as it goes: its entries are freed as
/// the walk passes them, so a scan of 100,000 files holds about one
/// manifest, not two. [`ScanReport::changed`] says whether the result
/// differs from `previous` (whether it needs saving).
pub fn scan_owned(
    root: &Path,
    excludes: &GlobSet,
    previous: Manifest,
    now: SystemTime,
    opts: &ScanOptions,
) -> Result<(Manifest, ScanReport)> {
    let started = Instant::now();
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("cannot open the sync root {}", root.display()))?;
    let root_dev = fstat(&root_fd)
        .map_err(std::io::Error::from)
        .with_context(|| format!("cannot stat the sync root {}", root.display()))?
        .st_dev;
    // About as many entries as last time.
    let expect = previous.len();
    let mut s = Scanner {
        root_dev,
        previous_unsettled: previous.unsettled().clone(),
        previous: previous.into_entries().into_iter().peekable(),
        matched: None,
        racy_before: Time::from_system(now).minus(RACY_WINDOW),
        entries: Vec::with_capacity(expect),
        unsettled: Vec::new(),
        report: ScanReport::default(),
        owners: Owners::default(),
        buf: vec![0; READ_BUF],
        root: root.to_path_buf(),
        now,
        opts,
    };
    // Each entry is stat'ed, opened and read relative to its directory's
    // descriptor (`fstatat`, `openat`), not by full path: no path walk per
    // file, and no following a directory swapped for a symlink midway. A
    // directory is listed through the descriptor it was opened with, once,
    // and only if it is entered (`relist` leaves most unread).
    let root_dir = Dir::from_fd(root_fd)
        .and_then(|mut d| Ok((names_in(&mut d)?, d)))
        .map_err(std::io::Error::from)
        .with_context(|| format!("cannot list the sync root {}", root.display()))?;
    // Mount points are found by the device of what is below (it differs
    // from the root's), and reported as skipped.
    // With `relist`: the directories to enter, those listed and all their
    // ancestors (and those of the paths to refresh). Only the listed ones
    // are read whole; in the others only what is on the way.
    let enter: Option<BTreeSet<RelPath>> = opts.relist.as_ref().map(|dirs| {
        let mut enter = BTreeSet::new();
        let parents = opts.refresh.iter().filter_map(RelPath::parent);
        for d in dirs.iter().cloned().chain(parents) {
            let mut at = Some(d);
            while let Some(dir) = at {
                at = dir.parent();
                if !enter.insert(dir) {
                    break;
                }
            }
        }
        enter
    });
    let whole = |dir: &RelPath| opts.relist.as_ref().is_none_or(|l| l.contains(dir));
    let mut stack = vec![Level {
        names: root_dir.0.into_iter(),
        dir: root_dir.1,
        whole: whole(&RelPath::root()),
        rel: RelPath::root(),
    }];
    while let Some(level) = stack.last_mut() {
        let Some(name) = level.names.next() else {
            stack.pop();
            continue;
        };
        let dir = level.dir.as_fd();
        let name = name.as_slice();
        let rel = match level.rel.join(name) {
            Ok(r) => r,
            Err(e) => {
                // Cannot be named on the wire (an over-long path): nor can
                // the other side have it.
                s.report.skipped.push(Skipped {
                    path: level.rel.clone(),
                    reason: SkipReason::Unreadable(e.to_string()),
                });
                continue;
            }
        };
        if !excludes.is_empty() && excludes.is_match(rel.as_path()) {
            s.report.excluded += 1;
            continue;
        }
        if !level.whole
            && !opts.refresh.contains(&rel)
            && !enter.as_ref().is_some_and(|e| e.contains(&rel))
        {
            s.keep_unread(&rel);
            continue;
        }
        let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => {
                s.report.vanished += 1;
                continue;
            }
            Err(e) => {
                s.skip(rel, SkipReason::Unreadable(e.desc().to_string()));
                continue;
            }
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                if st.st_dev != s.root_dev {
                    s.skip(rel, SkipReason::MountPoint);
                    continue;
                }
                let flags =
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let opened = match openat(dir, name, flags, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) => {
                        s.report.vanished += 1;
                        continue;
                    }
                    // Replaced by something else since the stat.
                    Err(Errno::ENOTDIR | Errno::ELOOP) => {
                        s.unstable(rel);
                        continue;
                    }
                    Err(e) => {
                        s.skip(rel, SkipReason::Unreadable(e.desc().to_string()));
                        continue;
                    }
                };
                s.report.dirs += 1;
                let e = s.entry(Kind::Dir, &st);
                // What `previous` holds under it is this directory's only if
                // it was this directory: one new or put in another's place
                // (a rename) is read whole, whatever `relist` says.
                let known = s
                    .previous(&rel)
                    .is_some_and(|p| p.kind.is_dir() && p.dev == e.dev && p.ino == e.ino);
                s.put(rel.clone(), e);
                if known && enter.as_ref().is_some_and(|enter| !enter.contains(&rel)) {
                    s.keep_subtree(&rel);
                    continue;
                }
                match Dir::from_fd(opened).and_then(|mut d| Ok((names_in(&mut d)?, d))) {
                    Ok((names, dir)) => stack.push(Level {
                        names: names.into_iter(),
                        dir,
                        whole: !known || whole(&rel),
                        rel,
                    }),
                    Err(e) => s.skip(rel, SkipReason::Unreadable(e.desc().to_string())),
                }
            }
            libc::S_IFLNK => match readlinkat(dir, name) {
                Ok(target) => {
                    s.report.symlinks += 1;
                    let target = target.into_vec();
                    let e = s.entry(Kind::Symlink { target }, &st);
                    s.put(rel, e);
                }
                Err(Errno::ENOENT) => s.report.vanished += 1,
                Err(Errno::EINVAL) => s.unstable(rel),
                Err(e) => s.skip(rel, SkipReason::Unreadable(e.desc().to_string())),
            },
            libc::S_IFREG => s.file(dir, name, rel, st),
            other => {
                let reason = match other {
                    libc::S_IFIFO => SkipReason::Fifo,
                    libc::S_IFSOCK => SkipReason::Socket,
                    libc::S_IFBLK => SkipReason::BlockDevice,
                    _ => SkipReason::CharDevice,
                };
                s.skip(rel, reason);
            }
        }
    }
    if s.previous.peek().is_some() || s.unsettled.iter().ne(s.previous_unsettled.iter()) {
        s.report.changed = true;
    }
    let manifest = Manifest::from_parts(s.entries, s.unsettled);
    s.report.elapsed = started.elapsed();
    Ok((manifest, s.report))
}

/// A directory being walked: the names in it still to visit, in byte
/// order, and its descriptor (everything in it is reached through that).
struct Level {
    names: std::vec::IntoIter<Vec<u8>>,
    dir: Dir,
    /// Every name in it is read; else only those on the way to what is
    /// (the rest is taken from the previous manifest).
    whole: bool,
    rel: RelPath,
}

/// The names in `dir` (not `.` and `..`), sorted by their bytes, so that
/// two scans of the same tree give the same order (path order).
fn names_in(dir: &mut Dir) -> nix::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Entries between two [`give_back_freed_memory`] calls in a scan.
const TRIM_EVERY: usize = 8192;

/// Hand the pages of freed heap memory back to the system. A scan frees
/// the previous manifest as it goes while its new list of entries grows:
/// without this, glibc keeps the freed pages and the process holds both at
/// their full size at the end (the standby peaked at 64 MiB instead of 49
/// after a first copy of 100,000 files).
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

struct Scanner<'a> {
    root_dev: u64,
    /// The previous manifest, walked in step with the scan (both in path
    /// order), so finding a path's previous entry costs nothing; each is
    /// dropped once passed.
    previous: Peekable<btree_map::IntoIter<RelPath, Entry>>,
    /// The previous entry taken for the path being scanned.
    matched: Option<(RelPath, Entry)>,
    previous_unsettled: BTreeSet<RelPath>,
    /// Changes at or after this are within the racy window.
    racy_before: Time,
    /// Built as the walk goes, in path order, made a map at the end (in one
    /// pass: see `Manifest::from_parts`) as `previous` is freed.
    entries: Vec<(RelPath, Entry)>,
    unsettled: Vec<RelPath>,
    report: ScanReport,
    owners: Owners,
    buf: Vec<u8>,
    root: PathBuf,
    now: SystemTime,
    opts: &'a ScanOptions,
}

/// The stat fields that tell whether a file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: Time,
    ctime: Time,
    mode: u32,
}

impl Stat {
    fn of(st: &FileStat) -> Stat {
        Stat {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size.max(0) as u64,
            mtime: Time::new(st.st_mtime, st.st_mtime_nsec),
            ctime: Time::new(st.st_ctime, st.st_ctime_nsec),
            mode: st.st_mode,
        }
    }
}

enum Hashed {
    Done {
        hash: [u8; 32],
        st: FileStat,
    },
    /// Kept changing while read, every attempt.
    Unstable,
    Vanished,
    Failed(Errno),
}

impl Scanner<'_> {
    fn put(&mut self, rel: RelPath, entry: Entry) {
        if self.previous(&rel) != Some(&entry) {
            self.report.changed = true;
        }
        self.matched = None;
        self.push(rel, entry);
    }

    /// Add an entry to the new manifest, handing freed memory back every
    /// [`TRIM_EVERY`] entries (kept subtrees included: a closing rescan
    /// that keeps 100,000 entries unread frees as much as one that reads
    /// them).
    fn push(&mut self, rel: RelPath, entry: Entry) {
        self.entries.push((rel, entry));
        if self.entries.len().is_multiple_of(TRIM_EVERY) {
            give_back_freed_memory();
        }
    }

    /// Take what is under `dir` from the previous manifest, unread (see
    /// [`ScanOptions::relist`]). Called right after `dir`'s own entry, so
    /// its subtree is next in the previous manifest (path order).
    fn keep_subtree(&mut self, dir: &RelPath) {
        while let Some((path, entry)) = self.previous.next_if(|(p, _)| p.is_within(dir)) {
            self.push(path, entry);
        }
        let unsettled = self.previous_unsettled.range(dir.clone()..);
        let under = unsettled
            .take_while(|p| p.is_within(dir))
            .filter(|p| *p != dir);
        self.unsettled.extend(under.cloned());
    }

    /// Take `rel` (and all below it) from the previous manifest as it
    /// was, unread; a path it does not know is left out, as is one no
    /// longer listed. Unsettled stays unsettled.
    fn keep_unread(&mut self, rel: &RelPath) {
        if let Some(e) = self.previous(rel).cloned() {
            let dir = e.kind.is_dir();
            self.put(rel.clone(), e);
            if dir {
                self.keep_subtree(rel);
            }
        } else if self.previous_unsettled.contains(rel) {
            self.unsettled.push(rel.clone());
            // What was under an unsettled directory stays so.
            self.keep_subtree(rel);
        }
    }

    fn skip(&mut self, path: RelPath, reason: SkipReason) {
        self.unsettled.push(path.clone());
        self.report.skipped.push(Skipped { path, reason });
    }

    fn unstable(&mut self, path: RelPath) {
        self.unsettled.push(path.clone());
        self.report.unstable.push(path);
    }

    /// The previous manifest's entry for `rel`, if any.
    fn previous(&mut self, rel: &RelPath) -> Option<&Entry> {
        if self.matched.as_ref().is_none_or(|(p, _)| p != rel) {
            // Passed over: gone since the last scan.
            while self.previous.next_if(|(p, _)| p < rel).is_some() {
                self.report.changed = true;
            }
            self.matched = self.previous.next_if(|(p, _)| p == rel);
        }
        self.matched.as_ref().map(|(_, e)| e)
    }

    fn entry(&mut self, kind: Kind, st: &FileStat) -> Entry {
        Entry {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            user: self.owners.user(st.st_uid),
            group: self.owners.group(st.st_gid),
            mtime: Time::new(st.st_mtime, st.st_mtime_nsec),
            ctime: Time::new(st.st_ctime, st.st_ctime_nsec),
            dev: st.st_dev,
            ino: st.st_ino,
            racy: false,
            placed: false,
        }
    }

    fn file(&mut self, dir: BorrowedFd<'_>, name: &[u8], rel: RelPath, st: FileStat) {
        let stat = Stat::of(&st);
        if let Some(max) = self.opts.max_file_size.filter(|max| stat.size > *max) {
            let size = stat.size;
            return self.skip(rel, SkipReason::TooLarge { size, max });
        }
        if let Some(snapshots) = self.opts.sqlite.as_ref().filter(|s| s.dbs.contains(&rel)) {
            let snapshot = sqlite::snapshot_file(&snapshots.dir, &rel);
            return self.snapshot(rel, &snapshot, st);
        }
        let racy_before = self.racy_before;
        if let Some(hash) = self.previous(&rel).and_then(|prev| {
            // The receiver's own new files: their hash was checked as
            // written and their stat taken right after (Entry::placed).
            let racy_before = if prev.placed {
                Time::new(i64::MAX, 0)
            } else {
                racy_before
            };
            reusable(prev, &stat, racy_before)
        }) {
            self.report.files += 1;
            let e = self.entry(
                Kind::File {
                    size: stat.size,
                    hash,
                },
                &st,
            );
            return self.put(rel, e);
        }
        match hash_file(dir, name, st, &mut self.buf) {
            Hashed::Done { hash, st } => {
                let stat = Stat::of(&st);
                self.report.files += 1;
                self.report.files_hashed += 1;
                self.report.bytes_hashed += stat.size;
                let mut e = self.entry(
                    Kind::File {
                        size: stat.size,
                        hash,
                    },
                    &st,
                );
                e.racy = stat.mtime.max(stat.ctime) >= self.racy_before;
                self.put(rel, e)
            }
            Hashed::Unstable => self.unstable(rel),
            Hashed::Vanished => self.report.vanished += 1,
            Hashed::Failed(e) => self.skip(rel, SkipReason::Unreadable(e.desc().to_string())),
        }
    }
}

impl Scanner<'_> {
    /// Describe the SQLite database `rel` by its snapshot at `snapshot`:
    /// the snapshot's size, hash and time (the database's last change), the
    /// live file's mode and owner.
    fn snapshot(&mut self, rel: RelPath, snapshot: &Path, st: FileStat) {
        let live = self.root.join(rel.as_path());
        match sqlite::take(&live, snapshot, self.now) {
            Ok(snap) => {
                self.report.files += 1;
                if snap.taken {
                    self.report.files_hashed += 1;
                    self.report.bytes_hashed += snap.size;
                }
                let mut e = self.entry(
                    Kind::File {
                        size: snap.size,
                        hash: snap.hash,
                    },
                    &st,
                );
                e.mtime = snap.mtime;
                self.put(rel, e);
            }
            Err(e) => self.skip(rel, SkipReason::NoSnapshot(format!("{e:#}"))),
        }
    }
}

/// The previous hash, if it can stand for the file now: same stat, and
/// taken when the file had been still for the whole racy window.
fn reusable(prev: &Entry, st: &Stat, racy_before: Time) -> Option<[u8; 32]> {
    let Kind::File { size, hash } = prev.kind else {
        return None;
    };
    let same = prev.dev == st.dev
        && prev.ino == st.ino
        && size == st.size
        && prev.mtime == st.mtime
        && prev.ctime == st.ctime
        && prev.mode == st.mode & 0o7777;
    (same && !prev.racy && st.mtime.max(st.ctime) < racy_before).then_some(hash)
}

/// Hash the regular file `name` in `dir` by reading it, making sure it did
/// not change while read: the stat before and after must agree, and the
/// bytes read must be its size. Tried `1 + HASH_RETRIES` times.
fn hash_file(dir: BorrowedFd<'_>, name: &[u8], mut st: FileStat, buf: &mut [u8]) -> Hashed {
    for attempt in 0..=HASH_RETRIES {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(10 * u64::from(attempt)));
            st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => st,
                Ok(_) => return Hashed::Unstable,
                Err(Errno::ENOENT) => return Hashed::Vanished,
                Err(e) => return Hashed::Failed(e),
            };
        }
        let before = Stat::of(&st);
        // O_NOFOLLOW: it may have become a symlink since the stat;
        // O_NONBLOCK: or a fifo, whose open would wait for a writer.
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let mut file = match openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) => return Hashed::Vanished,
            Err(Errno::ELOOP) => continue,
            Err(e) => return Hashed::Failed(e),
        };
        match fstat(&file) {
            Ok(f)
                if f.st_mode & libc::S_IFMT == libc::S_IFREG
                    && f.st_dev == before.dev
                    && f.st_ino == before.ino => {}
            Ok(_) => continue,
            Err(e) => return Hashed::Failed(e),
        }
        let (hash, read) = match read_hash(&mut file, before.size, buf) {
            Ok(r) => r,
            Err(e) => return Hashed::Failed(io_errno(&e)),
        };
        let after = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(a) => a,
            Err(Errno::ENOENT) => return Hashed::Vanished,
            Err(e) => return Hashed::Failed(e),
        };
        if read == before.size && Stat::of(&after) == before {
            return Hashed::Done { hash, st: after };
        }
    }
    Hashed::Unstable
}

fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// blake3 of at most `size` bytes of `file`, and how many were read.
fn read_hash(file: &mut File, size: u64, buf: &mut [u8]) -> std::io::Result<([u8; 32], u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut read = 0u64;
    while read < size {
        let want = (size - read).min(buf.len() as u64) as usize;
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        read += n as u64;
    }
    Ok((*hasher.finalize().as_bytes(), read))
}

/// uid/gid to name, asked once per id per scan (or per sync session, on
/// the standby: see `Session::enter`).
#[derive(Default)]
pub(super) struct Owners {
    users: HashMap<u32, Option<Arc<str>>>,
    groups: HashMap<u32, Option<Arc<str>>>,
}

impl Owners {
    pub(super) fn user(&mut self, uid: u32) -> Option<Arc<str>> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| Arc::from(u.name))
            })
            .clone()
    }

    pub(super) fn group(&mut self, gid: u32) -> Option<Arc<str>> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| Arc::from(g.name))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat() -> Stat {
        Stat {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: Time::new(100, 0),
            ctime: Time::new(100, 0),
            mode: 0o100644,
        }
    }

    fn prev(racy: bool) -> Entry {
        Entry {
            kind: Kind::File {
                size: 3,
                hash: [7; 32],
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime: Time::new(100, 0),
            ctime: Time::new(100, 0),
            dev: 1,
            ino: 2,
            racy,
            placed: false,
        }
    }

    #[test]
    fn reuse_needs_same_stat_and_a_settled_hash() {
        let long_after = Time::new(200, 0);
        assert_eq!(reusable(&prev(false), &stat(), long_after), Some([7; 32]));
        assert_eq!(
            reusable(&prev(true), &stat(), long_after),
            None,
            "a hash taken in the racy window is taken again"
        );
        assert_eq!(
            reusable(&prev(false), &stat(), Time::new(100, 0)),
            None,
            "a file changed within the racy window is hashed"
        );
        for change in [
            |s: &mut Stat| s.dev = 9,
            |s: &mut Stat| s.ino = 9,
            |s: &mut Stat| s.size = 9,
            |s: &mut Stat| s.mtime = Time::new(100, 1),
            |s: &mut Stat| s.ctime = Time::new(100, 1),
            |s: &mut Stat| s.mode = 0o100600,
        ] {
            let mut s = stat();
            change(&mut s);
            assert_eq!(reusable(&prev(false), &s, long_after), None, "{s:?}");
        }
        let mut dir = prev(false);
        dir.kind = Kind::Dir;
        assert_eq!(reusable(&dir, &stat(), long_after), None);
    }

    #[test]
    fn excludes_match_relative_paths() {
        let g = build_excludes(&["*.tmp".into(), "spool/tmp/**".into()]).unwrap();
        assert!(g.is_match("a.tmp"));
        assert!(g.is_match("deep/dir/a.tmp"));
        assert!(g.is_match("spool/tmp/x"));
        assert!(g.is_match("spool/tmp/x/y"));
        assert!(!g.is_match("spool/tmp"));
        assert!(!g.is_match("spool/tmpx/y"));
        assert!(build_excludes(&["a[".into()]).is_err());
    }

    #[test]
    fn read_hash_stops_at_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"hello world").unwrap();
        let mut buf = vec![0; 4];
        let mut f = File::open(&p).unwrap();
        let (h, n) = read_hash(&mut f, 5, &mut buf).unwrap();
        assert_eq!(n, 5);
        assert_eq!(h, *blake3::hash(b"hello").as_bytes());
        let mut f = File::open(&p).unwrap();
        let (_, n) = read_hash(&mut f, 100, &mut buf).unwrap();
        assert_eq!(n, 11, "a short file reads short");
    }
}
