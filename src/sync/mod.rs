//! Sync: keep the standby's copy of each `[sync]` path equal to the active
//! server's, over the SSH link, by content hash.
//!
//! The design target: a run with nothing changed over 100,000 files must be
//! several times faster than `rsync -a --delete` and put under 1 KiB on the
//! wire. So a quiet run reads no file contents and exchanges one hash.
//!
//! ```text
//!  active (sender)                              standby (receiver)
//!  scan ──► Manifest ──► tree ──► root hash ◄──► root hash    equal: done
//!   │ (reuses hashes of files                     │
//!   │  whose stat is unchanged)          differ: TreeWalk, one level per
//!   ▼                                    round trip, only into differing dirs
//!  diff_selected(local, remote, base) ──► delete_guard
//!                          │
//!                          ▼
//!         chunk (send only chunks the receiver lacks) ──► receive (apply)
//! ```
//!
//! * [`scan`](mod@scan): walk a root (symlinks not followed, mount points
//!   not crossed, names sorted) and `lstat` everything; hash a file (blake3,
//!   by reading, never mmap) only when its stat differs from the previous
//!   manifest or its last hash was taken in the racy window. Files that
//!   change while hashed, fifos, sockets, mount points and unreadable paths
//!   are reported and marked *unsettled*: nothing at or below them is
//!   touched on the other side. [`check_source`] refuses a missing or empty
//!   root (an unmounted disk would otherwise delete everything on the
//!   standby).
//! * [`manifest`]: [`Manifest`] maps each [`RelPath`] (validated bytes: no
//!   `..`, nothing absolute) to an [`Entry`]: kind, size and content hash or
//!   link target, mode, owner by id and name, times, device and inode. It
//!   is saved after a scan that changed it (atomic, checksummed) and loaded
//!   before the next; a lost or corrupt one only costs a full re-hash.
//! * [`tree`](mod@tree): one blake3 per directory over its children's
//!   names, kinds, contents and compared metadata (mode, owner, group, file
//!   mtime), so any change anywhere changes the root hash, and a walk from
//!   the root finds it by following differing hashes.
//! * [`diff`](mod@diff): [`TreeWalk`]/[`tree_diff`] find the differing
//!   directories; the standby sends only its entries there
//!   ([`TreeDiff::select`]), the base is loaded only there
//!   ([`TreeDiff::covers`]), and [`diff_selected`] compares our entries
//!   there with them: what to create, update (content, or metadata only)
//!   and delete, and the conflicts, paths changed on both sides since the
//!   last good sync (the base manifest). The diff borrows its entries
//!   from the manifests (no copies: a first copy lists every file).
//!   [`delete_guard`] refuses a run that would delete more than a set
//!   share of the standby's files.
//! * [`chunk`](mod@chunk): content-defined chunks (FastCDC) and their
//!   blake3 hashes; a delta sends only the chunks the receiver lacks, and
//!   the receiver rebuilds the file from its old chunks and the new ones.
//! * [`receive`](mod@receive): the standby's side. Every path is checked to
//!   stay inside the root (no `..`, no symlinked parent leading out); each
//!   file is written to a temp file beside its target, checked against the
//!   sender's whole-file hash (taken as it is written,
//!   [`stream_hash`](mod@stream_hash)), given mode, owner (by name) and
//!   mtime, then renamed into place; deletions go to the
//!   [`trash`](mod@trash).
//!
//! * [`send`](mod@send): the active side, [`send::push`]: per path, check
//!   the source, scan, compare root hashes, walk, diff against the base,
//!   settle conflicts (the active side wins, the standby keeps a copy),
//!   guard deletions, stream the changes; a [`send::SyncSummary`] of what
//!   crossed the link.
//! * [`session`](mod@session): the standby's side of the protocol inside
//!   `sip-ha serve`: only paths in its own config, its own manifest in its
//!   state directory so that its scan is stat-only too.
//!
//! For the two sides to agree on "unchanged": scan both with the same
//! excludes; the receiver sets file mtimes to the nanosecond, and mode and
//! owner (by name when the name exists there, else by id). Directory and
//! symlink mtimes, ctimes and inodes are never compared.

pub mod channel;
pub mod chunk;
pub mod diff;
pub mod journal;
pub mod manifest;
pub mod receive;
pub mod scan;
pub mod send;
pub mod session;
pub mod sqlite;
pub mod stream_hash;
pub mod target;
#[cfg(test)]
mod testing;
pub mod trash;
pub mod tree;

pub use diff::{
    delete_guard, diff, diff_selected, tree_diff, Change, Conflict, Diff, Removal, TreeDiff,
    TreeWalk, What,
};
pub use manifest::{BadPath, Entry, Kind, LoadStatus, Loaded, Manifest, Owner, RelPath, Time};
pub use scan::{
    build_excludes, check_source, scan, scan_owned, scan_with, ScanOptions, ScanReport, SkipReason,
    Skipped, HASH_RETRIES, RACY_WINDOW,
};
pub use tree::{tree, Child, NodeKind, Tree};
