//! Comparing two sides: which directories differ (by hash tree), then what
//! to create, update and delete (by manifest), what both sides changed
//! (conflicts), and whether a run deletes too much to be believed.
//!
//! The exchange, for one sync root:
//!
//! 1. The sender asks for the receiver's root hash. Equal to its own: done
//!    (the whole no-change run: 32 bytes each way plus framing).
//! 2. Otherwise a [`TreeWalk`] descends level by level: each round asks the
//!    receiver for the [`Child`] listings of the directories in
//!    [`TreeWalk::wanted`] (one round trip per level) and goes on only into
//!    subdirectories whose hashes differ.
//! 3. Both sides [`TreeDiff::select`] the same entries from their
//!    manifests: the direct children of every differing directory, and the
//!    whole of any directory present on one side only. The receiver sends
//!    its selection; the sender runs [`diff`] on the two (and on the same
//!    selection of the base manifest, the last good sync).
//! 4. [`delete_guard`] refuses a run that deletes too large a share of the
//!    receiver's files; then the receiver applies the [`Diff`].

use super::manifest::{Entry, Kind, Manifest, RelPath};
use super::tree::{Child, NodeKind, Tree};
use anyhow::{bail, ensure, Result};
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashSet};

/// What a change needs on the receiving side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// New there.
    Create,
    /// There, but of another kind: remove it (a directory with its
    /// contents, which the deletions list too), then create.
    Replace,
    /// Same kind, other content (file bytes or symlink target); metadata
    /// may differ as well.
    Content,
    /// Same content; only mode, owner, group or file mtime differ.
    Metadata,
}

impl What {
    /// Whether the receiver needs data it does not have: file bytes for a
    /// created, replaced or changed file.
    pub fn needs_content(self, entry: &Entry) -> bool {
        entry.kind.is_file() && self != What::Metadata
    }
}

/// One path to create or update on the receiver. The diff borrows from the
/// manifests it compares: a first copy of 100,000 files lists 100,000
/// changes, and copies of their entries would double the memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change<'a> {
    pub path: &'a RelPath,
    pub what: What,
    /// The sender's entry: what the path must become.
    pub local: &'a Entry,
    /// The receiver's entry, when it has one.
    pub remote: Option<&'a Entry>,
}

/// One path the receiver has and the sender does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removal<'a> {
    pub path: &'a RelPath,
    pub remote: &'a Entry,
}

/// A path both sides changed since the base (the last good sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict<'a> {
    pub path: &'a RelPath,
    pub local: Option<&'a Entry>,
    pub remote: Option<&'a Entry>,
    pub base: Option<&'a Entry>,
}

/// What it takes to make the receiver's tree equal the sender's.
///
/// Apply `delete` first (children before parents), then `changes` (parents
/// before children). `conflicts` and `held` are not in either list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff<'a> {
    /// Creates and updates, parents before children.
    pub changes: Vec<Change<'a>>,
    /// Children before parents. Every path below a deleted directory is
    /// listed.
    pub delete: Vec<Removal<'a>>,
    /// Changed on both sides since the base: left alone unless the caller
    /// decides ([`Diff::overwrite_conflicts`]).
    pub conflicts: Vec<Conflict<'a>>,
    /// Differences at or below a path unsettled on either side (busy,
    /// unreadable, a mount point...): left alone this run.
    pub held: Vec<&'a RelPath>,
}

impl<'a> Diff<'a> {
    /// Nothing to do (conflicts count as something; held paths do not).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.delete.is_empty() && self.conflicts.is_empty()
    }

    pub fn creates(&self) -> impl Iterator<Item = &Change<'a>> {
        self.changes.iter().filter(|c| c.what == What::Create)
    }

    pub fn updates(&self) -> impl Iterator<Item = &Change<'a>> {
        self.changes.iter().filter(|c| c.what != What::Create)
    }

    /// Bytes of file content the receiver may need (before chunking finds
    /// what it already has).
    pub fn content_bytes(&self) -> u64 {
        self.changes
            .iter()
            .filter(|c| c.what.needs_content(c.local))
            .map(|c| match c.local.kind {
                Kind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }

    /// Regular files of the receiver that this diff removes (deleted, or
    /// replaced by another kind).
    pub fn files_deleted(&self) -> u64 {
        let deleted = self.delete.iter().filter(|r| r.remote.kind.is_file());
        let replaced = self
            .changes
            .iter()
            .filter(|c| c.what == What::Replace && c.remote.is_some_and(|r| r.kind.is_file()));
        (deleted.count() + replaced.count()) as u64
    }

    /// Settle every conflict in the sender's favour (the active server's
    /// copy wins): each becomes the change or deletion it would have been.
    pub fn overwrite_conflicts(&mut self) {
        for c in std::mem::take(&mut self.conflicts) {
            push_difference(self, c.path, c.local, c.remote);
        }
        self.changes.sort_by(|a, b| a.path.cmp(b.path));
        self.delete.sort_by(|a, b| b.path.cmp(a.path));
    }
}

/// Compare the sender's manifest (`local`) with the receiver's (`remote`).
/// With `base` (the manifest of the last good sync), a path that differs
/// from the base on both sides, and differently, is a conflict.
///
/// Give both sides the same excludes: a path the receiver has but the
/// sender excluded would be listed for deletion.
pub fn diff<'a>(local: &'a Manifest, remote: &'a Manifest, base: Option<&'a Manifest>) -> Diff<'a> {
    diff_entries(local.iter(), local, remote, base)
}

/// [`diff`], with `local` narrowed to the paths a tree walk found
/// different (`remote` and `base` hold only those already): what
/// `diff(&td.select(local), ...)` gives, without copying `local`.
pub fn diff_selected<'a>(
    local: &'a Manifest,
    td: &TreeDiff,
    remote: &'a Manifest,
    base: Option<&'a Manifest>,
) -> Diff<'a> {
    let coverage = td.coverage();
    diff_entries(
        local.iter().filter(|(p, _)| coverage.covers(p)),
        local,
        remote,
        base,
    )
}

/// The merge of `local_entries` (in path order, from `local`) with
/// `remote`'s.
fn diff_entries<'a>(
    local_entries: impl Iterator<Item = (&'a RelPath, &'a Entry)>,
    local: &'a Manifest,
    remote: &'a Manifest,
    base: Option<&'a Manifest>,
) -> Diff<'a> {
    let mut d = Diff::default();
    let mut li = local_entries.peekable();
    let mut ri = remote.iter().peekable();
    loop {
        let order = match (li.peek(), ri.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((lp, _)), Some((rp, _))) => lp.cmp(rp),
        };
        let (path, l, r) = match order {
            Ordering::Less => li.next().map(|(p, e)| (p, Some(e), None)),
            Ordering::Greater => ri.next().map(|(p, e)| (p, None, Some(e))),
            Ordering::Equal => li
                .next()
                .zip(ri.next())
                .map(|((p, l), (_, r))| (p, Some(l), Some(r))),
        }
        .expect("peeked");
        if same(l, r) {
            continue;
        }
        if local.is_unsettled(path) || remote.is_unsettled(path) {
            d.held.push(path);
            continue;
        }
        if let Some(base) = base {
            let b = base.get(path);
            if !same(l, b) && !same(r, b) {
                d.conflicts.push(Conflict {
                    path,
                    local: l,
                    remote: r,
                    base: b,
                });
                continue;
            }
        }
        push_difference(&mut d, path, l, r);
    }
    d.delete.reverse();
    d
}

fn same(a: Option<&Entry>, b: Option<&Entry>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same(b),
        _ => false,
    }
}

fn push_difference<'a>(
    d: &mut Diff<'a>,
    path: &'a RelPath,
    l: Option<&'a Entry>,
    r: Option<&'a Entry>,
) {
    match (l, r) {
        (Some(l), None) => d.changes.push(Change {
            path,
            what: What::Create,
            local: l,
            remote: None,
        }),
        (None, Some(r)) => d.delete.push(Removal { path, remote: r }),
        (Some(l), Some(r)) => {
            let what = if std::mem::discriminant(&l.kind) != std::mem::discriminant(&r.kind) {
                What::Replace
            } else if !l.same_content(r) {
                What::Content
            } else {
                What::Metadata
            };
            d.changes.push(Change {
                path,
                what,
                local: l,
                remote: Some(r),
            });
        }
        (None, None) => {}
    }
}

/// Refuse a run that would remove more than `max_delete_percent` of the
/// receiver's `remote_file_count` regular files: the sign of a source that
/// is half there (an unmounted disk, a wrong path), not of real deletions.
pub fn delete_guard(diff: &Diff, remote_file_count: u64, max_delete_percent: u32) -> Result<()> {
    let deleted = diff.files_deleted();
    if deleted == 0 {
        return Ok(());
    }
    let total = remote_file_count.max(deleted);
    let percent = deleted as f64 * 100.0 / total as f64;
    if percent > f64::from(max_delete_percent) {
        bail!(
            "refusing to sync: it would delete {deleted} of the standby's {total} files \
             ({percent:.1}%), more than the limit of {max_delete_percent}%. Check that the \
             source is complete (is its disk mounted? is the path right?); if these deletions \
             are meant, raise the limit for one run"
        );
    }
    Ok(())
}

/// Where two hash trees differ: what to compare entry by entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeDiff {
    /// Directories (on both sides) whose direct children differ somewhere.
    pub dirs: BTreeSet<RelPath>,
    /// Directories on one side only (or a directory on one side and not
    /// on the other): everything below them differs.
    pub subtrees: BTreeSet<RelPath>,
    /// Single paths that differ (in the listings of differing
    /// directories): a walk names these rather than whole directories, so
    /// a change to one file in a directory of 100 costs one entry, not 100.
    pub paths: BTreeSet<RelPath>,
}

/// What a [`TreeDiff`] covers, for [`Coverage::covers`].
pub struct Coverage<'a> {
    paths: HashSet<&'a [u8]>,
    dirs: HashSet<&'a [u8]>,
    subtrees: HashSet<&'a [u8]>,
    /// The root is a one-sided subtree: everything is covered.
    everything: bool,
}

impl Coverage<'_> {
    /// See [`TreeDiff::covers`].
    pub fn covers(&self, path: &RelPath) -> bool {
        let bytes = path.as_bytes();
        if self.everything || self.paths.contains(bytes) {
            return true;
        }
        // The root's children have the root (no bytes) as parent.
        let parent = bytes
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(&b""[..], |cut| &bytes[..cut]);
        if !path.is_root() && self.dirs.contains(parent) {
            return true;
        }
        !self.subtrees.is_empty() && path.ancestors_and_self().any(|a| self.subtrees.contains(a))
    }
}

impl TreeDiff {
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.subtrees.is_empty() && self.paths.is_empty()
    }

    /// The part of a manifest that [`diff`] needs: the direct children of
    /// every differing directory and everything below a one-sided one,
    /// plus the unsettled paths. Each side selects from its own manifest
    /// (and the sender from the base too).
    /// Whether [`TreeDiff::select`] would take `path` (to load no more of
    /// a saved manifest than that).
    pub fn covers(&self, path: &RelPath) -> bool {
        self.coverage().covers(path)
    }

    /// [`covers`](Self::covers), for asking about many paths (every entry
    /// of a manifest): the sets are hashed once, and a question builds no
    /// path (the parent's, each ancestor's), which was most of its cost.
    pub fn coverage(&self) -> Coverage<'_> {
        fn bytes(set: &BTreeSet<RelPath>) -> HashSet<&[u8]> {
            set.iter().map(RelPath::as_bytes).collect()
        }
        let (paths, dirs, subtrees) =
            (bytes(&self.paths), bytes(&self.dirs), bytes(&self.subtrees));
        Coverage {
            everything: subtrees.contains(&b""[..]),
            paths,
            dirs,
            subtrees,
        }
    }

    pub fn select(&self, m: &Manifest) -> Manifest {
        let mut out = Manifest::new();
        for dir in &self.dirs {
            for (p, e) in m.children(dir) {
                out.put(p.clone(), e.clone());
            }
        }
        for p in &self.paths {
            if let Some(e) = m.get(p) {
                out.put(p.clone(), e.clone());
            }
        }
        for top in &self.subtrees {
            if let Some(e) = m.get(top) {
                out.put(top.clone(), e.clone());
            }
            for (p, e) in m.subtree(top) {
                out.put(p.clone(), e.clone());
            }
        }
        for u in m.unsettled() {
            out.mark_unsettled(u.clone());
        }
        out
    }
}

/// A descent into two hash trees, one level (one round trip) at a time,
/// for callers that talk to the other side asynchronously:
///
/// ```ignore
/// let mut walk = TreeWalk::new(&local, &local_tree, remote_root_hash);
/// while !walk.is_done() {
///     let listings = ask_remote(walk.wanted()).await?; // Tree::listings there
///     walk.feed(listings)?;
/// }
/// let td = walk.finish();
/// ```
#[derive(Debug)]
pub struct TreeWalk<'a> {
    /// Our manifest, and the tree built from it.
    manifest: &'a Manifest,
    local: &'a Tree,
    wanted: Vec<RelPath>,
    result: TreeDiff,
}

impl<'a> TreeWalk<'a> {
    /// Start from the receiver's root hash: if it equals ours the walk is
    /// already done, with nothing different.
    pub fn new(manifest: &'a Manifest, local: &'a Tree, remote_root: [u8; 32]) -> TreeWalk<'a> {
        let wanted = if local.root() == remote_root {
            Vec::new()
        } else {
            vec![RelPath::root()]
        };
        TreeWalk {
            manifest,
            local,
            wanted,
            result: TreeDiff::default(),
        }
    }

    /// The directories whose listings the receiver must send next, all in
    /// one round trip.
    pub fn wanted(&self) -> &[RelPath] {
        &self.wanted
    }

    pub fn is_done(&self) -> bool {
        self.wanted.is_empty()
    }

    /// The receiver's listings of the [`wanted`](Self::wanted) directories,
    /// in that order: `None` where it has no directory (any more).
    pub fn feed(&mut self, listings: Vec<Option<Vec<Child>>>) -> Result<()> {
        ensure!(
            listings.len() == self.wanted.len(),
            "the peer sent {} directory listings for {} asked",
            listings.len(),
            self.wanted.len()
        );
        let mut next = Vec::new();
        for (dir, listing) in std::mem::take(&mut self.wanted).into_iter().zip(listings) {
            let Some(mut remote) = listing else {
                self.result.subtrees.insert(dir);
                continue;
            };
            remote.sort_by(|a, b| a.name.cmp(&b.name));
            let local = self.local.children(self.manifest, &dir).unwrap_or_default();
            let (mut i, mut j) = (0, 0);
            while i < local.len() || j < remote.len() {
                let (l, r) = match (local.get(i), remote.get(j)) {
                    (Some(l), Some(r)) => match l.name.cmp(&r.name) {
                        Ordering::Less => (Some(l), None),
                        Ordering::Greater => (None, Some(r)),
                        Ordering::Equal => (Some(l), Some(r)),
                    },
                    (l, r) => (l, r),
                };
                i += usize::from(l.is_some());
                j += usize::from(r.is_some());
                let name = match (l, r) {
                    (Some(c), _) | (None, Some(c)) => &c.name,
                    (None, None) => break,
                };
                if l.map(|c| c.node) != r.map(|c| c.node) {
                    self.result.paths.insert(dir.join(name)?);
                }
                let is_dir = |c: Option<&Child>| c.is_some_and(|c| c.kind == NodeKind::Dir);
                match (is_dir(l), is_dir(r)) {
                    (true, true) => {
                        if l.map(|c| c.subtree) != r.map(|c| c.subtree) {
                            next.push(dir.join(name)?);
                        }
                    }
                    (true, false) | (false, true) => {
                        self.result.subtrees.insert(dir.join(name)?);
                    }
                    (false, false) => {}
                }
            }
        }
        self.wanted = next;
        Ok(())
    }

    pub fn finish(self) -> TreeDiff {
        self.result
    }
}

/// [`TreeWalk`] for a synchronous caller: `fetch` answers each level's
/// wanted directories with the receiver's listings ([`Tree::listings`]).
/// Never calls `fetch` when the root hashes are equal.
pub fn tree_diff(
    manifest: &Manifest,
    local: &Tree,
    remote_root: [u8; 32],
    mut fetch: impl FnMut(&[RelPath]) -> Result<Vec<Option<Vec<Child>>>>,
) -> Result<TreeDiff> {
    let mut walk = TreeWalk::new(manifest, local, remote_root);
    while !walk.is_done() {
        let listings = fetch(walk.wanted())?;
        walk.feed(listings)?;
    }
    Ok(walk.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::testing::*;
    use crate::sync::tree::tree;

    fn man(items: &[(&str, Entry)]) -> Manifest {
        let mut m = Manifest::new();
        for (path, e) in items {
            m.insert(p(path), e.clone()).unwrap();
        }
        m
    }

    fn paths<'a>(it: impl Iterator<Item = &'a RelPath>) -> Vec<String> {
        it.map(|p| p.to_string()).collect()
    }

    #[test]
    fn creates_updates_deletes() {
        let mut chmod = file(2);
        chmod.mode = 0o600;
        let local = man(&[
            ("a", dir()),
            ("a/new", file(1)),
            ("a/same", file(2)),
            ("a/chmod", chmod),
            ("a/edit", file(9)),
            ("k", file(1)),
        ]);
        let remote = man(&[
            ("a", dir()),
            ("a/same", file(2)),
            ("a/chmod", file(2)),
            ("a/edit", file(3)),
            ("gone", dir()),
            ("gone/x", file(1)),
            ("k", dir()),
            ("k/y", file(1)),
        ]);
        let d = diff(&local, &remote, None);
        let whats: Vec<(String, What)> = d
            .changes
            .iter()
            .map(|c| (c.path.to_string(), c.what))
            .collect();
        assert_eq!(
            whats,
            [
                ("a/chmod".to_string(), What::Metadata),
                ("a/edit".to_string(), What::Content),
                ("a/new".to_string(), What::Create),
                ("k".to_string(), What::Replace),
            ]
        );
        assert_eq!(
            paths(d.delete.iter().map(|r| r.path)),
            ["k/y", "gone/x", "gone"]
        );
        assert_eq!(d.files_deleted(), 2);
        assert_eq!(d.content_bytes(), 30, "new, edit and the replaced k");
        assert_eq!(d.creates().count(), 1);
        assert_eq!(d.updates().count(), 3);
        assert!(diff(&local, &local, None).is_empty());
    }

    #[test]
    fn conflicts_need_both_sides_changed() {
        let base = man(&[
            ("f", file(1)),
            ("g", file(1)),
            ("h", file(1)),
            ("i", file(1)),
        ]);
        // f: only the sender changed it; g: both; h: receiver changed it,
        // sender deleted it; i: both changed it the same way.
        let local = man(&[("f", file(2)), ("g", file(2)), ("i", file(5))]);
        let remote = man(&[
            ("f", file(1)),
            ("g", file(3)),
            ("h", file(4)),
            ("i", file(5)),
        ]);
        let d = diff(&local, &remote, Some(&base));
        assert_eq!(paths(d.conflicts.iter().map(|c| c.path)), ["g", "h"]);
        assert_eq!(paths(d.changes.iter().map(|c| c.path)), ["f"]);
        assert!(d.delete.is_empty());
        // Without a base: plain mirroring.
        let plain = diff(&local, &remote, None);
        assert!(plain.conflicts.is_empty());
        assert_eq!(paths(plain.changes.iter().map(|c| c.path)), ["f", "g"]);
        // The active side wins when asked.
        let mut d = d;
        d.overwrite_conflicts();
        assert!(d.conflicts.is_empty());
        assert_eq!(paths(d.changes.iter().map(|c| c.path)), ["f", "g"]);
        assert_eq!(paths(d.delete.iter().map(|r| r.path)), ["h"]);
    }

    #[test]
    fn receiver_only_edits_are_overwritten() {
        let base = man(&[("f", file(1))]);
        let local = base.clone();
        let remote = man(&[("f", file(7)), ("extra", file(1))]);
        let d = diff(&local, &remote, Some(&base));
        assert!(d.conflicts.is_empty());
        assert_eq!(d.changes.len(), 1);
        assert_eq!(d.delete.len(), 1);
    }

    #[test]
    fn unsettled_paths_are_held() {
        let mut local = man(&[("d", dir())]);
        local.mark_unsettled(p("busy"));
        local.mark_unsettled(p("d/mnt"));
        let remote = man(&[
            ("busy", file(1)),
            ("d", dir()),
            ("d/mnt", dir()),
            ("d/mnt/x", file(1)),
            ("d/other", file(1)),
        ]);
        let d = diff(&local, &remote, None);
        assert_eq!(paths(d.held.iter().copied()), ["busy", "d/mnt", "d/mnt/x"]);
        assert_eq!(paths(d.delete.iter().map(|r| r.path)), ["d/other"]);
    }

    #[test]
    fn guard_counts_files() {
        let remote = man(&[("a", file(1)), ("b", file(1)), ("c", file(1)), ("d", dir())]);
        let local = man(&[("a", file(1)), ("b", file(1))]);
        let d = diff(&local, &remote, None);
        assert_eq!(d.files_deleted(), 1);
        delete_guard(&d, 3, 50).unwrap();
        let err = delete_guard(&d, 3, 20).unwrap_err().to_string();
        assert!(
            err.contains("delete 1 of the standby's 3 files (33.3%)"),
            "{err}"
        );
        assert!(err.contains("limit of 20%"), "{err}");
        delete_guard(&Diff::default(), 0, 0).unwrap();
        let empty = Manifest::new();
        let all = diff(&empty, &remote, None);
        assert!(delete_guard(&all, 3, 99).is_err());
    }

    /// Run the walk against a full remote tree, counting round trips.
    fn walk(local: &Manifest, remote: &Manifest) -> (TreeDiff, usize) {
        let (lt, rt) = (tree(local), tree(remote));
        let mut trips = 0;
        let td = tree_diff(local, &lt, rt.root(), |wanted| {
            trips += 1;
            Ok(rt.listings(remote, wanted))
        })
        .unwrap();
        (td, trips)
    }

    #[test]
    fn tree_walk_descends_only_where_different() {
        let base = man(&[
            ("a", dir()),
            ("a/b", dir()),
            ("a/b/f", file(1)),
            ("a/c", dir()),
            ("a/c/g", file(1)),
            ("z", dir()),
            ("z/h", file(1)),
        ]);
        let (td, trips) = walk(&base, &base.clone());
        assert!(td.is_empty());
        assert_eq!(trips, 0, "equal roots: nothing asked");

        let mut changed = base.clone();
        changed.insert(p("a/b/f"), file(2)).unwrap();
        let (td, trips) = walk(&changed, &base);
        // The changed file and the directories above it, nothing beside it.
        assert_eq!(paths(td.paths.iter()), ["a", "a/b", "a/b/f"]);
        assert!(td.dirs.is_empty() && td.subtrees.is_empty());
        assert_eq!(trips, 3);
        assert_eq!(
            paths(td.select(&changed).iter().map(|(p, _)| p)),
            ["a", "a/b", "a/b/f"]
        );
        let (l, r) = (td.select(&changed), td.select(&base));
        let d = diff(&l, &r, None);
        assert_eq!(diff_selected(&changed, &td, &r, None), d);
        assert_eq!(paths(d.changes.iter().map(|c| c.path)), ["a/b/f"]);
        covers_is_select(&td, &[&changed, &base]);

        let mut gone = base.clone();
        gone.remove(&p("a/c"));
        gone.insert(p("new"), dir()).unwrap();
        gone.insert(p("new/x"), file(1)).unwrap();
        let (td, _) = walk(&gone, &base);
        assert_eq!(paths(td.subtrees.iter()), ["a/c", "new"]);
        let (l, r) = (td.select(&gone), td.select(&base));
        let d = diff(&l, &r, None);
        assert_eq!(diff_selected(&gone, &td, &r, None), d);
        assert_eq!(paths(d.changes.iter().map(|c| c.path)), ["new", "new/x"]);
        assert_eq!(paths(d.delete.iter().map(|r| r.path)), ["a/c/g", "a/c"]);
        covers_is_select(&td, &[&gone, &base]);
        let td = TreeDiff {
            dirs: [p("a")].into(),
            ..td
        };
        covers_is_select(&td, &[&gone, &base]);
    }

    /// `covers` (the filter of a base's load) takes what `select` takes.
    fn covers_is_select(td: &TreeDiff, ms: &[&Manifest]) {
        for m in ms {
            let selected = td.select(m);
            for (path, _) in m.iter() {
                assert_eq!(td.covers(path), selected.get(path).is_some(), "{path}");
            }
        }
    }

    #[test]
    fn walk_checks_the_answer() {
        let m = man(&[("a", file(1))]);
        let t = tree(&m);
        let mut w = TreeWalk::new(&m, &t, [0; 32]);
        assert_eq!(w.wanted(), &[RelPath::root()]);
        assert!(w.feed(vec![]).is_err());
        let bad = Child {
            name: b"..".to_vec(),
            kind: NodeKind::Dir,
            node: [0; 32],
            subtree: Some([0; 32]),
            files: 0,
        };
        assert!(w.feed(vec![Some(vec![bad])]).is_err());
        let mut w = TreeWalk::new(&m, &t, [0; 32]);
        w.feed(vec![None]).unwrap();
        assert!(w.is_done());
        assert_eq!(paths(w.finish().subtrees.iter()), ["."]);
    }
}
