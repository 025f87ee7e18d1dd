//! The manifest: one side's picture of a synced tree, path by path.
//!
//! A [`Manifest`] maps each [`RelPath`] below a sync root to an [`Entry`]: what
//! it is (file with size and blake3 content hash, directory, symlink with its
//! target text) and its metadata (mode, owner by id *and* name, times, device
//! and inode). The paths are ordered component by component (`a`, `a/b`,
//! `a.b`), so a directory's whole subtree follows it directly: iterating
//! gives parents before children, and reversing gives children before
//! parents.
//!
//! Besides entries, a manifest lists *unsettled* paths: they exist on this
//! side but could not be described this run (a file that kept changing while
//! it was hashed, an unreadable directory, a mount point, a fifo). The diff
//! never creates, updates or deletes anything at or below an unsettled path,
//! so a file that is merely busy is never deleted on the other side.
//!
//! The sender keeps its last manifest in the state directory: the next scan
//! reuses the hash of every file whose stat has not changed, so a no-change
//! run reads no file contents. [`Manifest::load`] never fails (a missing or
//! corrupt file only costs re-hashing); [`Manifest::save`] writes atomically.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{btree_map, BTreeMap, BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::io::{BufReader, BufWriter, Read, Write};
use std::iter::Peekable;
use std::ops::Bound;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A validated path relative to a sync root, as raw bytes (file names need
/// not be UTF-8).
///
/// It has no leading `/`, no empty, `.` or `..` component and no NUL byte,
/// so joining it under a root can never leave the root. The empty path is
/// the root itself ([`RelPath::root`]); [`RelPath::new`] refuses it so that a
/// path received for a file can never name the root.
///
/// Ordering is component-wise (`/` sorts before every other byte): a
/// directory's descendants come right after it, before its next sibling.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RelPath(Vec<u8>);

/// Why bytes are not a [`RelPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid relative path {path:?}: {reason}")]
pub struct BadPath {
    /// The offending bytes, lossily decoded for the message.
    pub path: String,
    pub reason: &'static str,
}

impl RelPath {
    /// The longest path accepted (Linux's `PATH_MAX`).
    pub const MAX_LEN: usize = 4096;

    /// A path below the root: `a/b/c`. Refuses the empty path, absolute
    /// paths, empty, `.` and `..` components and NUL bytes.
    pub fn new(bytes: &[u8]) -> Result<RelPath, BadPath> {
        let bad = |reason| BadPath {
            path: String::from_utf8_lossy(bytes).into_owned(),
            reason,
        };
        if bytes.is_empty() {
            return Err(bad("empty (the root is RelPath::root())"));
        }
        if bytes.len() > Self::MAX_LEN {
            return Err(bad("longer than 4096 bytes"));
        }
        if bytes[0] == b'/' {
            return Err(bad("absolute"));
        }
        for component in bytes.split(|&b| b == b'/') {
            check_name(component).map_err(bad)?;
        }
        Ok(RelPath(bytes.to_vec()))
    }

    /// The root of the synced tree (the empty path).
    pub fn root() -> RelPath {
        RelPath(Vec::new())
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// From a path relative to the root, as the walk produces it; the empty
    /// path gives the root.
    pub fn from_path(path: &Path) -> Result<RelPath, BadPath> {
        let bytes = path.as_os_str().as_bytes();
        if bytes.is_empty() {
            Ok(RelPath::root())
        } else {
            RelPath::new(bytes)
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// As a relative `Path` (empty for the root): `root.join(p.as_path())`.
    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// The last component; empty for the root.
    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// The directory containing this path; `None` for the root, the root for
    /// a top-level name.
    pub fn parent(&self) -> Option<RelPath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => RelPath(self.0[..i].to_vec()),
            None => RelPath::root(),
        })
    }

    /// This path and its ancestors, up to but not including the root.
    pub fn ancestors_and_self(&self) -> impl Iterator<Item = &[u8]> {
        let bytes = &self.0;
        let cuts = bytes
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'/')
            .map(|(i, _)| i);
        cuts.chain(std::iter::once(bytes.len()))
            .filter(|&i| i > 0)
            .map(move |i| &bytes[..i])
    }

    /// `self/name`, checking that `name` is one valid component.
    pub fn join(&self, name: &[u8]) -> Result<RelPath, BadPath> {
        check_name(name).map_err(|reason| BadPath {
            path: String::from_utf8_lossy(name).into_owned(),
            reason,
        })?;
        let joined = self.join_unchecked(name);
        if joined.0.len() > Self::MAX_LEN {
            return Err(BadPath {
                path: joined.to_string(),
                reason: "longer than 4096 bytes",
            });
        }
        Ok(joined)
    }

    /// `self/name` for a name known to be valid (from a validated path).
    pub(crate) fn join_unchecked(&self, name: &[u8]) -> RelPath {
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0);
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name);
        RelPath(v)
    }

    /// Is `self` equal to `other` or below it?
    pub fn is_within(&self, other: &RelPath) -> bool {
        other.is_root()
            || (self.0.starts_with(&other.0)
                && (self.0.len() == other.0.len() || self.0[other.0.len()] == b'/'))
    }

    /// The smallest key greater than every descendant of `self` (and than
    /// `self`): its descendants are exactly the keys in `(self, end)`.
    /// Names hold no NUL, and `/` sorts as NUL, so `self + "\x01"` is it.
    /// Whether this path is inside the directory `dir` (at any depth).
    fn is_below(&self, dir: &RelPath) -> bool {
        let (me, dir) = (&self.0, &dir.0);
        me.len() > dir.len() && me.starts_with(dir) && me[dir.len()] == b'/'
    }

    fn subtree_end(&self) -> RelPath {
        let mut v = self.0.clone();
        v.push(1);
        RelPath(v)
    }
}

fn check_name(name: &[u8]) -> Result<(), &'static str> {
    match name {
        [] => Err("empty component"),
        b"." | b".." => Err("`.` or `..` component"),
        _ if name.contains(&0) => Err("NUL byte"),
        _ if name.contains(&b'/') => Err("`/` in a name"),
        _ => Ok(()),
    }
}

impl Ord for RelPath {
    fn cmp(&self, other: &Self) -> Ordering {
        path_order(&self.0, &other.0)
    }
}

/// [`RelPath`]'s order on raw bytes: byte order, except that `/` sorts
/// before everything else.
fn path_order(a: &[u8], b: &[u8]) -> Ordering {
    let key = |b: u8| if b == b'/' { 0 } else { b };
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => key(a[i]).cmp(&key(b[i])),
        None => a.len().cmp(&b.len()),
    }
}

impl PartialOrd for RelPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str(".")
        } else {
            write!(f, "{}", String::from_utf8_lossy(&self.0))
        }
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl Serialize for RelPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RelPath, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RelPath;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a relative path as bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<RelPath, E> {
                if v.is_empty() {
                    Ok(RelPath::root())
                } else {
                    RelPath::new(v).map_err(E::custom)
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<RelPath, A::Error> {
                let mut v = Vec::new();
                while let Some(b) = a.next_element::<u8>()? {
                    v.push(b);
                }
                self.visit_bytes(&v)
            }
        }
        // A byte buffer, not borrowed bytes: a streamed decode (from_io)
        // then reuses one scratch buffer for every path.
        d.deserialize_byte_buf(V)
    }
}

/// A point in time as `stat` gives it: seconds since the epoch (negative
/// before 1970) and nanoseconds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Time {
    pub secs: i64,
    /// 0..1_000_000_000.
    pub nanos: u32,
}

impl Time {
    pub fn new(secs: i64, nanos: i64) -> Time {
        // stat's nanoseconds are always in range; clamp anything else.
        Time {
            secs,
            nanos: nanos.clamp(0, 999_999_999) as u32,
        }
    }

    pub fn from_system(t: SystemTime) -> Time {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let (secs, nanos) = (d.as_secs() as i64, d.subsec_nanos());
                if nanos == 0 {
                    Time { secs: -secs, nanos }
                } else {
                    Time {
                        secs: -secs - 1,
                        nanos: 1_000_000_000 - nanos,
                    }
                }
            }
        }
    }

    pub fn as_nanos(self) -> i128 {
        self.secs as i128 * 1_000_000_000 + self.nanos as i128
    }

    /// `self - d`, saturating.
    pub fn minus(self, d: Duration) -> Time {
        let n = self.as_nanos() - d.as_nanos() as i128;
        Time {
            secs: n.div_euclid(1_000_000_000) as i64,
            nanos: n.rem_euclid(1_000_000_000) as u32,
        }
    }
}

/// What a path is, with what defines its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File {
        size: u64,
        /// blake3 of the contents.
        hash: [u8; 32],
    },
    Dir,
    Symlink {
        /// The link's target text, as `readlink` gives it (not followed).
        target: Vec<u8>,
    },
}

impl Kind {
    pub fn is_file(&self) -> bool {
        matches!(self, Kind::File { .. })
    }

    pub fn is_dir(&self) -> bool {
        matches!(self, Kind::Dir)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Kind::File { .. } => "file",
            Kind::Dir => "directory",
            Kind::Symlink { .. } => "symlink",
        }
    }
}

/// One path's description.
///
/// What is *compared* between servers ([`Entry::same_content`],
/// [`Entry::same_metadata`], and the tree hash, which hashes exactly the
/// same fields): the kind and its content, the permission bits, the owner
/// and group (by name when the name is known, else by id: the asterisk
/// user's uid may differ between servers), and for files the mtime. A
/// directory's or symlink's mtime is not compared (a directory's changes
/// with every file created in it, excluded temp files too). `ctime`, `dev`,
/// `ino` are local facts for the next scan's "unchanged?" test only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits, `st_mode & 0o7777`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The owner's name on this server, when it has one.
    /// Shared: 100,000 entries name the same few owners (memory).
    pub user: Option<Arc<str>>,
    pub group: Option<Arc<str>>,
    pub mtime: Time,
    pub ctime: Time,
    pub dev: u64,
    pub ino: u64,
    /// The hash was taken while the file's mtime or ctime was within
    /// [`RACY_WINDOW`](super::scan::RACY_WINDOW) of the scan: an edit in the
    /// same clock tick would not change the stat, so the next scan hashes
    /// the file again rather than trust it. Never compared.
    pub racy: bool,
    /// Put in place by this standby's session, its hash checked as it was
    /// written and its stat taken right after the rename: the closing
    /// rescan trusts the hash while that stat holds, even in the racy
    /// window, rather than read every received file back. Never compared
    /// and never saved.
    #[serde(skip)]
    pub placed: bool,
}

/// An owner as compared between servers: the name when known, else the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner<'a> {
    Name(&'a str),
    Id(u32),
}

impl Entry {
    pub fn user_key(&self) -> Owner<'_> {
        match &self.user {
            Some(n) => Owner::Name(n),
            None => Owner::Id(self.uid),
        }
    }

    pub fn group_key(&self) -> Owner<'_> {
        match &self.group {
            Some(n) => Owner::Name(n),
            None => Owner::Id(self.gid),
        }
    }

    /// Same kind and same content (file size and hash, symlink target).
    pub fn same_content(&self, other: &Entry) -> bool {
        self.kind == other.kind
    }

    /// Same compared metadata: mode, owner, group, and for files mtime.
    pub fn same_metadata(&self, other: &Entry) -> bool {
        self.mode == other.mode
            && self.user_key() == other.user_key()
            && self.group_key() == other.group_key()
            && (!self.kind.is_file() || !other.kind.is_file() || self.mtime == other.mtime)
    }

    /// Nothing to do between the two.
    pub fn same(&self, other: &Entry) -> bool {
        self.same_content(other) && self.same_metadata(other)
    }
}

/// Starts every encoded manifest; bumped when the format changes.
const MAGIC: &[u8; 8] = b"siphaMF1";

/// One side's picture of a tree: see the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    entries: BTreeMap<RelPath, Entry>,
    unsettled: BTreeSet<RelPath>,
}

/// What [`Manifest::load`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadStatus {
    Loaded,
    /// No file: a first run. Every file will be hashed.
    Missing,
    /// Unreadable or corrupt: it was ignored (and is overwritten by the
    /// next save). Every file will be hashed.
    Corrupt,
}

/// The result of [`Manifest::load`]: always a manifest, possibly empty.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub manifest: Manifest,
    pub status: LoadStatus,
    /// For the log when the manifest was not loaded.
    pub warning: Option<String>,
}

impl Manifest {
    pub fn new() -> Manifest {
        Manifest::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.unsettled.is_empty()
    }

    pub fn get(&self, path: &RelPath) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Add or replace an entry. The root itself is never an entry; an entry
    /// whose parent is not a directory entry here is kept, but the tree
    /// ignores it (scans never produce one; [`Manifest::from_bytes`]
    /// refuses one).
    pub fn insert(&mut self, path: RelPath, entry: Entry) -> Result<Option<Entry>> {
        if path.is_root() {
            bail!("the sync root itself cannot be a manifest entry");
        }
        Ok(self.entries.insert(path, entry))
    }

    /// From a scan's map (never holding the root).
    pub(crate) fn from_parts(entries: Vec<(RelPath, Entry)>, unsettled: Vec<RelPath>) -> Manifest {
        debug_assert!(!entries.iter().any(|(p, _)| p.is_root()));
        Manifest {
            entries: packed(entries),
            unsettled: unsettled.into_iter().collect(),
        }
    }

    /// Insert a path known not to be the root (a selection's copy).
    pub(crate) fn put(&mut self, path: RelPath, entry: Entry) {
        debug_assert!(!path.is_root());
        self.entries.insert(path, entry);
    }

    /// Remove a path and everything below it; returns how many entries went.
    pub fn remove(&mut self, path: &RelPath) -> usize {
        let below: Vec<RelPath> = self.subtree(path).map(|(p, _)| p.clone()).collect();
        let mut n = usize::from(self.entries.remove(path).is_some());
        for p in below {
            n += usize::from(self.entries.remove(&p).is_some());
        }
        n
    }

    /// All entries, parents before children.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&RelPath, &Entry)> {
        self.entries.iter()
    }

    pub fn entries(&self) -> &BTreeMap<RelPath, Entry> {
        &self.entries
    }

    /// How many regular files.
    pub fn file_count(&self) -> u64 {
        self.entries.values().filter(|e| e.kind.is_file()).count() as u64
    }

    /// Everything strictly below `dir` (everything, for the root), parents
    /// first.
    pub fn subtree<'a>(&'a self, dir: &RelPath) -> impl Iterator<Item = (&'a RelPath, &'a Entry)> {
        let range = if dir.is_root() {
            self.entries.range::<RelPath, _>(..)
        } else {
            self.entries.range((
                Bound::Excluded(dir.clone()),
                Bound::Excluded(dir.subtree_end()),
            ))
        };
        range
    }

    /// The entries directly in `dir`, in name order, skipping over the
    /// subtrees of subdirectories.
    pub fn children<'a>(&'a self, dir: &RelPath) -> Children<'a> {
        let (lower, upper) = if dir.is_root() {
            (Bound::Unbounded, Bound::Unbounded)
        } else {
            (
                Bound::Excluded(dir.clone()),
                Bound::Excluded(dir.subtree_end()),
            )
        };
        Children {
            entries: &self.entries,
            iter: Some(self.entries.range((lower, upper.clone())).peekable()),
            upper,
        }
    }

    /// Paths that exist here but could not be described this run: nothing at
    /// or below them is created, updated or deleted by a diff.
    /// The entries, giving up the rest.
    pub fn into_entries(self) -> BTreeMap<RelPath, Entry> {
        self.entries
    }

    pub fn unsettled(&self) -> &BTreeSet<RelPath> {
        &self.unsettled
    }

    pub fn mark_unsettled(&mut self, path: RelPath) {
        self.unsettled.insert(path);
    }

    /// Is `path` unsettled, or below an unsettled path?
    pub fn is_unsettled(&self, path: &RelPath) -> bool {
        if self.unsettled.is_empty() {
            return false;
        }
        self.unsettled.contains(&RelPath::root())
            || path
                .ancestors_and_self()
                .any(|p| self.unsettled.contains(&RelPath(p.to_vec())))
    }

    /// Encode for the state directory: a magic header, the postcard body,
    /// and a blake3 checksum of both.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// [`Manifest::to_bytes`], streamed to `w`: 100,000 entries are never
    /// encoded into memory first.
    pub fn write_to(&self, w: impl Write) -> Result<()> {
        /// The map as a sequence of pairs, as [`Manifest::read_from`] reads it.
        struct Pairs<'a>(&'a BTreeMap<RelPath, Entry>);
        impl Serialize for Pairs<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter())
            }
        }
        #[derive(Serialize)]
        struct BodyRef<'a> {
            entries: Pairs<'a>,
            unsettled: &'a BTreeSet<RelPath>,
        }
        let body = BodyRef {
            entries: Pairs(&self.entries),
            unsettled: &self.unsettled,
        };
        // Buffered outside the hashing, so blake3 sees large writes.
        let mut out = BufWriter::with_capacity(1 << 16, Hashing::new(w));
        out.write_all(MAGIC)?;
        let out = postcard::to_io(&body, out).context("cannot encode the manifest")?;
        let mut hashed = out.into_inner().map_err(|e| e.into_error())?;
        let sum = hashed.hasher.finalize();
        hashed.inner.write_all(sum.as_bytes())?;
        hashed.inner.flush()?;
        Ok(())
    }

    /// Decode what [`Manifest::to_bytes`] made, checking the checksum, every
    /// path, and that every entry's parent is a directory entry.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest> {
        Manifest::read_from(bytes, bytes.len() as u64, None)
    }

    /// Decode `len` bytes of [`Manifest::write_to`] from `r`, as it reads:
    /// entries go straight into the map (in order, refusing any out of
    /// order), and with `keep` only the entries it accepts are kept (a
    /// partial manifest is not checked for parents). The checksum covers
    /// what was read: a corrupt file is an error, never a wrong manifest.
    pub fn read_from(
        r: impl Read,
        len: u64,
        keep: Option<&dyn Fn(&RelPath) -> bool>,
    ) -> Result<Manifest> {
        if len < (MAGIC.len() + 32) as u64 {
            bail!("not a sip-ha manifest (too short)");
        }
        let mut r = r;
        let mut body = BufReader::with_capacity(1 << 16, Hashing::new((&mut r).take(len - 32)));
        let mut magic = [0u8; MAGIC.len()];
        body.read_exact(&mut magic)?;
        if &magic != MAGIC {
            bail!("not a sip-ha manifest (bad header)");
        }
        // Room for the longest path or owner name; reused for each.
        let mut scratch = vec![0u8; RelPath::MAX_LEN + 64];
        let seed = BodySeed {
            keep,
            names: HashSet::new(),
        };
        let decoded = {
            let mut de = postcard::Deserializer::from_flavor(
                postcard::de_flavors::io::io::IOReader::new(&mut body, &mut scratch),
            );
            serde::de::DeserializeSeed::deserialize(seed, &mut de)
        };
        let (entries, unsettled) = decoded.context("cannot decode the manifest")?;
        let mut rest = [0u8; 1];
        if body.read(&mut rest)? != 0 {
            bail!("trailing bytes after the manifest body");
        }
        let hashed = body.into_inner();
        if hashed.inner.limit() != 0 {
            bail!("manifest checksum mismatch (truncated or corrupt)");
        }
        let computed = hashed.hasher.finalize();
        let mut sum = [0u8; 32];
        r.read_exact(&mut sum)
            .context("manifest checksum mismatch (truncated or corrupt)")?;
        if computed.as_bytes() != &sum {
            bail!("manifest checksum mismatch (truncated or corrupt)");
        }
        let manifest = Manifest {
            entries: packed(entries),
            unsettled: unsettled.into_iter().collect(),
        };
        if keep.is_none() {
            manifest.check_closed()?;
        }
        Ok(manifest)
    }

    /// Every entry's parent is the root or a directory entry.
    fn check_closed(&self) -> Result<()> {
        if self.entries.contains_key(&RelPath::root()) {
            bail!("manifest has an entry for the root itself");
        }
        // In order, a path's parent (if present) was seen before it: keep
        // the chain of open directories as a stack.
        let mut open: Vec<&RelPath> = Vec::new();
        for (path, entry) in &self.entries {
            while let Some(top) = open.last() {
                if path.is_within(top) {
                    break;
                }
                open.pop();
            }
            let parent_len = path.0.len() - path.file_name().len();
            let parent_ok = match open.last() {
                None => parent_len == 0,
                Some(top) => top.0.len() + 1 == parent_len,
            };
            if !parent_ok {
                bail!("manifest entry {path} has no parent directory entry");
            }
            if entry.kind.is_dir() {
                open.push(path);
            }
        }
        Ok(())
    }

    /// Read a saved manifest. Never an error: a missing file is a first run,
    /// and an unreadable or corrupt one is ignored with a warning; either
    /// way the result is empty and the next scan hashes every file.
    pub fn load(path: &Path) -> Loaded {
        Manifest::load_where(path, None)
    }

    /// [`Manifest::load`], keeping only the entries `keep` accepts (the
    /// base of a sync needs only the differing paths).
    pub fn load_where(path: &Path, keep: Option<&dyn Fn(&RelPath) -> bool>) -> Loaded {
        let opened = std::fs::File::open(path).and_then(|f| {
            let len = f.metadata()?.len();
            Ok((f, len))
        });
        let (file, len) = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Loaded {
                    manifest: Manifest::new(),
                    status: LoadStatus::Missing,
                    warning: Some(format!(
                        "no manifest at {} (first sync?): every file will be hashed",
                        path.display()
                    )),
                }
            }
            Err(e) => {
                return Loaded {
                    manifest: Manifest::new(),
                    status: LoadStatus::Corrupt,
                    warning: Some(format!(
                        "cannot read the manifest {}: {e}; every file will be hashed",
                        path.display()
                    )),
                }
            }
        };
        match Manifest::read_from(file, len, keep) {
            Ok(manifest) => Loaded {
                manifest,
                status: LoadStatus::Loaded,
                warning: None,
            },
            Err(e) => Loaded {
                manifest: Manifest::new(),
                status: LoadStatus::Corrupt,
                warning: Some(format!(
                    "ignoring the corrupt manifest {}: {e:#}; every file will be hashed",
                    path.display()
                )),
            },
        }
    }

    /// Write atomically (temp file, fsync, rename, fsync of the directory).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::state::write_atomic_with(path, |f| self.write_to(f))
            .with_context(|| format!("cannot save the manifest {}", path.display()))
    }
}

/// The map of `entries`, given in path order (a scan, a load). Built
/// bottom-up in one pass with full nodes, where inserting them one by one
/// searched the tree for each and left every node about half full:
/// 100,000 entries took 31 MB where 17 MB do, and the inserts were the
/// largest part of loading a manifest. (Out-of-order input is sorted
/// first: still correct, only slower.)
fn packed<V>(entries: Vec<(RelPath, V)>) -> BTreeMap<RelPath, V> {
    entries.into_iter().collect()
}

/// Passes bytes through to `inner`, hashing them on the way (the
/// manifest's checksum).
struct Hashing<T> {
    inner: T,
    hasher: blake3::Hasher,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Hashing<T> {
        Hashing {
            inner,
            hasher: blake3::Hasher::new(),
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Decodes the body `(entries, unsettled)` straight into a map.
struct BodySeed<'k> {
    keep: Option<&'k dyn Fn(&RelPath) -> bool>,
    /// One copy of each owner name (100,000 entries name a few owners).
    names: HashSet<Arc<str>>,
}

type Body = (Vec<(RelPath, Entry)>, Vec<RelPath>);

impl<'de> serde::de::DeserializeSeed<'de> for BodySeed<'_> {
    type Value = Body;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Body, D::Error> {
        d.deserialize_tuple(2, self)
    }
}

impl<'de> serde::de::Visitor<'de> for BodySeed<'_> {
    type Value = Body;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a manifest body")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
        use serde::de::Error;
        let entries = seq
            .next_element_seed(EntriesSeed(self))?
            .ok_or_else(|| A::Error::custom("no entries"))?;
        let unsettled = seq
            .next_element::<Vec<RelPath>>()?
            .ok_or_else(|| A::Error::custom("no unsettled list"))?;
        Ok((entries, unsettled))
    }
}

/// The most entries a manifest's own count reserves room for up front:
/// 131,072 (22 MB), enough for the 100,000-file trees this is sized for;
/// a larger tree grows as it is read. The count is read before the
/// checksum can be checked, so a corrupt one must not reserve more.
const MAX_RESERVE: usize = 1 << 17;

/// The entries: checked in order, owner names shared, filtered by `keep`.
struct EntriesSeed<'k>(BodySeed<'k>);

impl<'de> serde::de::DeserializeSeed<'de> for EntriesSeed<'_> {
    type Value = Vec<(RelPath, Entry)>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EntriesSeed<'_> {
    type Value = Vec<(RelPath, Entry)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("manifest entries in path order")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        mut self,
        mut seq: A,
    ) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        // Sized from the count in the file, unless filtering (a few kept),
        // and bounded: a corrupt count reserves, it does not fill.
        let expect = match self.0.keep {
            None => seq.size_hint().unwrap_or(0).min(MAX_RESERVE),
            Some(_) => 0,
        };
        let mut entries = Vec::with_capacity(expect);
        let mut last: Vec<u8> = Vec::new();
        let mut first = true;
        let names = &mut self.0.names;
        let mut share = |name: &mut Option<Arc<str>>| {
            if let Some(n) = name {
                match names.get(&**n) {
                    Some(shared) => *n = Arc::clone(shared),
                    None => {
                        names.insert(Arc::clone(n));
                    }
                }
            }
        };
        while let Some((path, mut entry)) = seq.next_element::<(RelPath, Entry)>()? {
            if path.is_root() {
                return Err(A::Error::custom("an entry for the sync root itself"));
            }
            if !first && path_order(&last, path.as_bytes()) != Ordering::Less {
                return Err(A::Error::custom(format!("entries out of order at {path}")));
            }
            first = false;
            last.clear();
            last.extend_from_slice(path.as_bytes());
            if self.0.keep.is_none_or(|keep| keep(&path)) {
                share(&mut entry.user);
                share(&mut entry.group);
                entries.push((path, entry));
            }
        }
        Ok(entries)
    }
}

/// Iterator of [`Manifest::children`].
pub struct Children<'a> {
    entries: &'a BTreeMap<RelPath, Entry>,
    /// The entries from the next child on; `None` once exhausted.
    iter: Option<Peekable<btree_map::Range<'a, RelPath, Entry>>>,
    upper: Bound<RelPath>,
}

impl<'a> Iterator for Children<'a> {
    type Item = (&'a RelPath, &'a Entry);

    fn next(&mut self) -> Option<Self::Item> {
        let iter = self.iter.as_mut()?;
        let Some((path, entry)) = iter.next() else {
            self.iter = None;
            return None;
        };
        // The next sibling comes after this child's subtree. It is skipped
        // by a new search only when there is one: the files of a directory
        // cost a step each, not a search each (listing 800 directories
        // of 50 files was a tenth of a second of searches).
        if iter.peek().is_some_and(|(next, _)| next.is_below(path)) {
            let after = Bound::Included(path.subtree_end());
            self.iter = Some(self.entries.range((after, self.upper.clone())).peekable());
        }
        Some((path, entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::testing::{dir, entry, file, p};

    /// A loaded manifest keeps one copy of each owner name, not one per
    /// entry, and loses nothing by it.
    #[test]
    fn owner_names_are_shared_after_a_load() {
        let mut m = Manifest::new();
        for i in 0..3u8 {
            m.insert(p(&format!("f{i}")), file(i)).unwrap();
        }
        let back = Manifest::from_bytes(&m.to_bytes().unwrap()).unwrap();
        assert_eq!(back, m);
        let users: Vec<&Arc<str>> = back.iter().filter_map(|(_, e)| e.user.as_ref()).collect();
        assert_eq!(users.len(), 3);
        assert!(users.windows(2).all(|w| Arc::ptr_eq(w[0], w[1])));
    }

    #[test]
    fn relpath_refuses_escapes() {
        for bad in [
            &b""[..],
            b"/etc/passwd",
            b"..",
            b"a/../b",
            b"a//b",
            b"a/",
            b"./a",
            b"a/.",
            b"a\0b",
        ] {
            assert!(RelPath::new(bad).is_err(), "{:?} accepted", bad);
        }
        for good in [&b"a"[..], b"a/b/c", b"...", b"a/.hidden", b"\xff\xfe/x"] {
            assert!(RelPath::new(good).is_ok(), "{:?} refused", good);
        }
        assert!(RelPath::new(&vec![b'a'; 4097]).is_err());
        assert!(p("a").join(b"b/c").is_err());
        assert!(p("a").join(b"..").is_err());
        assert_eq!(p("a").join(b"b").unwrap(), p("a/b"));
        assert_eq!(RelPath::root().join(b"b").unwrap(), p("b"));
    }

    #[test]
    fn relpath_parts() {
        assert_eq!(p("a/b/c").parent(), Some(p("a/b")));
        assert_eq!(p("a").parent(), Some(RelPath::root()));
        assert_eq!(RelPath::root().parent(), None);
        assert_eq!(p("a/b/c").file_name(), b"c");
        assert_eq!(
            p("a/b/c").ancestors_and_self().collect::<Vec<_>>(),
            vec![&b"a"[..], b"a/b", b"a/b/c"]
        );
        assert!(p("a/b").is_within(&p("a")));
        assert!(p("a").is_within(&p("a")));
        assert!(!p("ab").is_within(&p("a")));
        assert!(p("a").is_within(&RelPath::root()));
        assert_eq!(RelPath::root().to_string(), ".");
    }

    #[test]
    fn order_is_component_wise() {
        let mut v = vec![p("a.b"), p("a/b"), p("a"), p("a-"), p("a/b/c"), p("b")];
        v.sort();
        assert_eq!(
            v,
            vec![p("a"), p("a/b"), p("a/b/c"), p("a-"), p("a.b"), p("b")]
        );
    }

    fn sample() -> Manifest {
        let mut m = Manifest::new();
        m.insert(p("a"), entry(Kind::Dir)).unwrap();
        m.insert(p("a/x"), file(1)).unwrap();
        m.insert(p("a/d"), entry(Kind::Dir)).unwrap();
        m.insert(p("a/d/y"), file(2)).unwrap();
        m.insert(p("a.b"), file(3)).unwrap();
        m.insert(
            p("l"),
            entry(Kind::Symlink {
                target: b"../x".to_vec(),
            }),
        )
        .unwrap();
        m
    }

    #[test]
    fn children_and_subtree() {
        let m = sample();
        let names = |it: Children| it.map(|(p, _)| p.to_string()).collect::<Vec<_>>();
        assert_eq!(names(m.children(&RelPath::root())), ["a", "a.b", "l"]);
        assert_eq!(names(m.children(&p("a"))), ["a/d", "a/x"]);
        assert_eq!(names(m.children(&p("a/x"))), Vec::<String>::new());
        let sub: Vec<String> = m.subtree(&p("a")).map(|(p, _)| p.to_string()).collect();
        assert_eq!(sub, ["a/d", "a/d/y", "a/x"]);
        assert_eq!(m.file_count(), 3);
        let mut m2 = m.clone();
        assert_eq!(m2.remove(&p("a")), 4);
        assert_eq!(m2.len(), 2);
    }

    /// Children are exactly the entries whose parent is the directory, in
    /// order, however names sort around `/` (`a-b`, `a.b`, `a0` sort
    /// before `a/`... in bytes, not here) and however deep the subtrees
    /// between them are.
    #[test]
    fn children_are_the_direct_entries_in_order() {
        let mut m = Manifest::new();
        let mut names = vec!["a", "a-b", "a.b", "a0", "ab", "b", "z"];
        for d in ["a", "a/sub", "a/sub/deep", "ab", "b", "b/c"] {
            m.insert(p(d), dir()).unwrap();
        }
        for (i, f) in [
            "a/1",
            "a/2",
            "a/sub/3",
            "a/sub/deep/4",
            "a/sub/deep/5",
            "a/sub2",
            "a/z",
            "ab/x",
            "b/c/y",
            "b/c2",
            "a-b",
            "a.b",
            "a0",
            "z",
        ]
        .iter()
        .enumerate()
        {
            m.insert(p(f), file(i as u8)).unwrap();
        }
        names.sort_by_key(|x| p(x));
        let dirs = ["", "a", "a/sub", "a/sub/deep", "ab", "b", "b/c", "z"];
        for d in dirs {
            let dir = if d.is_empty() { RelPath::root() } else { p(d) };
            let got: Vec<&RelPath> = m.children(&dir).map(|(p, _)| p).collect();
            let want: Vec<&RelPath> = m
                .iter()
                .map(|(p, _)| p)
                .filter(|p| p.parent().as_ref() == Some(&dir))
                .collect();
            assert_eq!(got, want, "children of {d:?}");
        }
        let top: Vec<String> = m
            .children(&RelPath::root())
            .map(|(p, _)| p.to_string())
            .collect();
        assert_eq!(top, names);
    }

    #[test]
    fn unsettled_covers_descendants() {
        let mut m = sample();
        assert!(!m.is_unsettled(&p("a/d/y")));
        m.mark_unsettled(p("a/d"));
        assert!(m.is_unsettled(&p("a/d/y")));
        assert!(m.is_unsettled(&p("a/d")));
        assert!(!m.is_unsettled(&p("a")));
        assert!(!m.is_unsettled(&p("a/dd")));
    }

    #[test]
    fn bytes_round_trip_and_checks() {
        let mut m = sample();
        m.mark_unsettled(p("a/busy"));
        let bytes = m.to_bytes().unwrap();
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);

        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 1;
        assert!(Manifest::from_bytes(&flipped).is_err());
        assert!(Manifest::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(Manifest::from_bytes(b"junk").is_err());

        let mut orphan = Manifest::new();
        orphan.insert(p("nodir/x"), file(1)).unwrap();
        let err = Manifest::from_bytes(&orphan.to_bytes().unwrap()).unwrap_err();
        assert!(err.to_string().contains("no parent"), "{err}");
        let mut under_file = Manifest::new();
        under_file.insert(p("f"), file(1)).unwrap();
        under_file.insert(p("f/x"), file(1)).unwrap();
        assert!(Manifest::from_bytes(&under_file.to_bytes().unwrap()).is_err());
        assert!(Manifest::new().insert(RelPath::root(), file(1)).is_err());

        // Entries out of order, or repeated, are refused even with a good
        // checksum (a manifest from a bug, or from a peer that lies).
        let sealed = |pairs: Vec<(RelPath, Entry)>| {
            let mut out = MAGIC.to_vec();
            out = postcard::to_extend(&(pairs, Vec::<RelPath>::new()), out).unwrap();
            let sum = blake3::hash(&out);
            out.extend_from_slice(sum.as_bytes());
            out
        };
        let good = sealed(vec![(p("a"), file(1)), (p("b"), file(2))]);
        assert_eq!(Manifest::from_bytes(&good).unwrap().len(), 2);
        for bad in [
            vec![(p("b"), file(1)), (p("a"), file(2))],
            vec![(p("a"), file(1)), (p("a"), file(2))],
        ] {
            let err = Manifest::from_bytes(&sealed(bad)).unwrap_err();
            assert!(format!("{err:#}").contains("decode"), "{err:#}");
        }
    }

    #[test]
    fn a_filtered_load_keeps_only_the_paths_asked_for() {
        let m = sample();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m");
        m.save(&file).unwrap();
        assert_eq!(Manifest::load(&file).manifest, m);
        let keep = |path: &RelPath| path.is_within(&p("a/d"));
        let loaded = Manifest::load_where(&file, Some(&keep));
        assert_eq!(loaded.status, LoadStatus::Loaded);
        let kept: Vec<String> = loaded.manifest.iter().map(|(p, _)| p.to_string()).collect();
        let want: Vec<String> = m
            .iter()
            .filter(|(path, _)| keep(path))
            .map(|(p, _)| p.to_string())
            .collect();
        assert!(!want.is_empty() && want.len() < m.len());
        assert_eq!(kept, want);
        // A truncated file is ignored whole, filtered or not.
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 5]).unwrap();
        assert_eq!(
            Manifest::load_where(&file, Some(&keep)).status,
            LoadStatus::Corrupt
        );
        assert!(Manifest::load(&file).manifest.is_empty());
    }

    #[test]
    fn time_conversions() {
        let t = Time::from_system(UNIX_EPOCH + Duration::new(10, 5));
        assert_eq!(t, Time { secs: 10, nanos: 5 });
        let before = Time::from_system(UNIX_EPOCH - Duration::new(1, 250));
        assert_eq!(before.as_nanos(), -1_000_000_250);
        assert_eq!(
            Time { secs: 10, nanos: 5 }.minus(Duration::from_nanos(10)),
            Time {
                secs: 9,
                nanos: 999_999_995
            }
        );
    }

    #[test]
    fn metadata_comparison() {
        let a = file(1);
        let mut b = a.clone();
        b.ctime = Time::new(1, 0);
        b.ino = 99;
        b.racy = true;
        assert!(a.same(&b), "local-only facts are not compared");
        b.uid = 5;
        assert!(a.same(&b), "owner compared by name when known");
        b.user = None;
        assert!(!a.same_metadata(&b));
        let mut d1 = entry(Kind::Dir);
        let d2 = d1.clone();
        d1.mtime = Time::new(5, 0);
        assert!(d1.same(&d2), "directory mtime is not compared");
    }
}
