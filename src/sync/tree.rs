//! The hash tree: one blake3 per directory, so two sides compare whole
//! trees by one hash and find differences by descending only where hashes
//! differ.
//!
//! Each path gets a *node hash* over everything compared about it (see
//! [`Entry`]): kind, permission bits, owner and group (name, else id), and
//! then for a file its size, mtime and content hash; for a symlink its
//! target; for a directory the hash of its contents. A directory's contents
//! hash covers its children's names and node hashes in name order. So any
//! change of content, mode, owner, file mtime or link target anywhere
//! changes every directory hash up to the root, and nothing else does (not
//! ctime, inode or a directory's own mtime).
//!
//! [`Tree`] keeps, per directory, its contents hash and file count; the
//! [`Child`] summaries that the other side asks for, one level at a time,
//! while descending into differing directories
//! ([`TreeWalk`](super::TreeWalk)), are made from the manifest when asked
//! ([`Tree::children`]): only for directories that differ, so the tree of
//! 100,000 files stays a few bytes per directory.

use super::manifest::{Entry, Kind, Manifest, Owner, RelPath};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
}

/// One child of a directory, as listed to the other side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Child {
    /// Its name in the directory (one component).
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Everything compared about it, its contents included.
    pub node: [u8; 32],
    /// A directory's contents hash ([`Tree::dir`]); `None` otherwise.
    pub subtree: Option<[u8; 32]>,
    /// Regular files at or below it.
    pub files: u64,
}

#[derive(Debug, Clone)]
struct DirNode {
    hash: [u8; 32],
    files: u64,
}

/// The per-directory hashes of one [`Manifest`] (see [`tree`]); the methods
/// that take a manifest must be given that same one.
#[derive(Debug, Clone)]
pub struct Tree {
    dirs: HashMap<RelPath, DirNode>,
}

impl Tree {
    /// The whole tree's hash: equal on both sides means nothing to sync.
    pub fn root(&self) -> [u8; 32] {
        self.dir(&RelPath::root())
            .unwrap_or_else(|| contents_hash(&[]))
    }

    /// A directory's contents hash; `None` if it is not a directory here.
    pub fn dir(&self, path: &RelPath) -> Option<[u8; 32]> {
        self.dirs.get(path).map(|d| d.hash)
    }

    /// A directory's children in name order, from `manifest` (the one the
    /// tree was built from); `None` if it is not a directory here.
    pub fn children(&self, manifest: &Manifest, path: &RelPath) -> Option<Vec<Child>> {
        self.dirs.get(path)?;
        // Entries whose parent is not a directory entry are left out, as
        // when the tree was built.
        let parent_len = if path.is_root() {
            0
        } else {
            path.as_bytes().len() + 1
        };
        let mut buf = Vec::with_capacity(128);
        let children = manifest
            .children(path)
            .filter(|(p, _)| p.as_bytes().len() - p.file_name().len() == parent_len)
            .filter_map(|(p, entry)| {
                let (kind, subtree, files) = match entry.kind {
                    Kind::Dir => {
                        let d = self.dirs.get(p)?;
                        (NodeKind::Dir, Some(d.hash), d.files)
                    }
                    Kind::File { .. } => (NodeKind::File, None, 1),
                    Kind::Symlink { .. } => (NodeKind::Symlink, None, 0),
                };
                Some(Child {
                    name: p.file_name().to_vec(),
                    kind,
                    node: node_hash_with(entry, subtree.as_ref(), &mut buf),
                    subtree,
                    files,
                })
            })
            .collect();
        Some(children)
    }

    /// Regular files at or below a directory.
    pub fn files(&self, path: &RelPath) -> Option<u64> {
        self.dirs.get(path).map(|d| d.files)
    }

    /// The answer to a [`TreeWalk`](super::TreeWalk)'s wanted directories:
    /// each one's children, or `None` where this side has no directory.
    pub fn listings(&self, manifest: &Manifest, dirs: &[RelPath]) -> Vec<Option<Vec<Child>>> {
        dirs.iter().map(|d| self.children(manifest, d)).collect()
    }

    /// How many directories, the root included.
    pub fn dir_count(&self) -> usize {
        self.dirs.len()
    }
}

/// Build the tree of a manifest. Entries whose parent is not a directory
/// entry (never produced by a scan) are left out.
pub fn tree(manifest: &Manifest) -> Tree {
    // In path order a directory's subtree follows it directly: keep the
    // directories on the way to the current entry as a stack, and close
    // (hash) each one when the walk leaves its subtree.
    struct Open<'a> {
        path: RelPath,
        entry: Option<&'a Entry>,
        children: Vec<Child>,
    }
    fn close(stack: &mut Vec<Open<'_>>, dirs: &mut HashMap<RelPath, DirNode>, buf: &mut Vec<u8>) {
        let Some(done) = stack.pop() else { return };
        // The children are dropped here: listings are made again from the
        // manifest when asked (Tree::children).
        let node = DirNode {
            hash: contents_hash(&done.children),
            files: done.children.iter().map(|c| c.files).sum(),
        };
        if let (Some(entry), Some(parent)) = (done.entry, stack.last_mut()) {
            parent.children.push(Child {
                name: done.path.file_name().to_vec(),
                kind: NodeKind::Dir,
                node: node_hash_with(entry, Some(&node.hash), buf),
                subtree: Some(node.hash),
                files: node.files,
            });
        }
        dirs.insert(done.path, node);
    }

    let mut dirs = HashMap::new();
    let mut buf = Vec::with_capacity(128);
    let mut stack = vec![Open {
        path: RelPath::root(),
        entry: None,
        children: Vec::new(),
    }];
    for (path, entry) in manifest.iter() {
        while stack.len() > 1 && !stack.last().is_some_and(|top| path.is_within(&top.path)) {
            close(&mut stack, &mut dirs, &mut buf);
        }
        let Some(top) = stack.last_mut() else { break };
        let parent_len = path.as_bytes().len() - path.file_name().len();
        let in_top = if top.path.is_root() {
            parent_len == 0
        } else {
            parent_len == top.path.as_bytes().len() + 1
        };
        if !in_top {
            continue; // its parent is not a directory entry
        }
        let (kind, files) = match entry.kind {
            Kind::Dir => {
                stack.push(Open {
                    path: path.clone(),
                    entry: Some(entry),
                    children: Vec::new(),
                });
                continue;
            }
            Kind::File { .. } => (NodeKind::File, 1),
            Kind::Symlink { .. } => (NodeKind::Symlink, 0),
        };
        top.children.push(Child {
            name: path.file_name().to_vec(),
            kind,
            node: node_hash_with(entry, None, &mut buf),
            subtree: None,
            files,
        });
    }
    while !stack.is_empty() {
        close(&mut stack, &mut dirs, &mut buf);
    }
    Tree { dirs }
}

fn contents_hash(children: &[Child]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"sip-ha dir v1\0"); // see node_hash_with
    h.update(&(children.len() as u64).to_le_bytes());
    for c in children {
        h.update(&(c.name.len() as u32).to_le_bytes());
        h.update(&c.name);
        h.update(&c.node);
    }
    *h.finalize().as_bytes()
}

/// The node hash of an entry; `subtree` is a directory's contents hash.
pub fn node_hash(entry: &Entry, subtree: Option<&[u8; 32]>) -> [u8; 32] {
    node_hash_with(entry, subtree, &mut Vec::with_capacity(128))
}

/// [`node_hash`] with a scratch buffer: the record is laid out, then
/// hashed in one call (a first byte of `F`, `D` or `L` keeps it apart from
/// a directory's contents, which start with `s`).
fn node_hash_with(entry: &Entry, subtree: Option<&[u8; 32]>, buf: &mut Vec<u8>) -> [u8; 32] {
    buf.clear();
    buf.push(match entry.kind {
        Kind::File { .. } => b'F',
        Kind::Dir => b'D',
        Kind::Symlink { .. } => b'L',
    });
    buf.extend_from_slice(&entry.mode.to_le_bytes());
    put_owner(buf, entry.user_key());
    put_owner(buf, entry.group_key());
    match &entry.kind {
        Kind::File { size, hash } => {
            buf.extend_from_slice(&size.to_le_bytes());
            buf.extend_from_slice(&entry.mtime.secs.to_le_bytes());
            buf.extend_from_slice(&entry.mtime.nanos.to_le_bytes());
            buf.extend_from_slice(hash);
        }
        Kind::Dir => buf.extend_from_slice(subtree.unwrap_or(&[0; 32])),
        Kind::Symlink { target } => {
            buf.extend_from_slice(&(target.len() as u32).to_le_bytes());
            buf.extend_from_slice(target);
        }
    }
    *blake3::hash(buf).as_bytes()
}

fn put_owner(buf: &mut Vec<u8>, o: Owner<'_>) {
    match o {
        Owner::Name(n) => {
            buf.push(1);
            buf.extend_from_slice(&(n.len() as u32).to_le_bytes());
            buf.extend_from_slice(n.as_bytes());
        }
        Owner::Id(id) => {
            buf.push(0);
            buf.extend_from_slice(&id.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::manifest::Time;
    use crate::sync::testing::*;

    fn sample() -> Manifest {
        let mut m = Manifest::new();
        m.insert(p("etc"), entry(Kind::Dir)).unwrap();
        m.insert(p("etc/sip.conf"), file(1)).unwrap();
        m.insert(p("etc/sub"), entry(Kind::Dir)).unwrap();
        m.insert(p("etc/sub/x"), file(2)).unwrap();
        m.insert(p("sounds"), entry(Kind::Dir)).unwrap();
        m.insert(p("sounds/a.wav"), file(3)).unwrap();
        m.insert(
            p("link"),
            entry(Kind::Symlink {
                target: b"etc".to_vec(),
            }),
        )
        .unwrap();
        m
    }

    #[test]
    fn structure() {
        let m = sample();
        let t = tree(&m);
        let names: Vec<_> = t
            .children(&m, &RelPath::root())
            .unwrap()
            .iter()
            .map(|c| String::from_utf8_lossy(&c.name).into_owned())
            .collect();
        assert_eq!(names, ["etc", "link", "sounds"]);
        assert_eq!(t.files(&RelPath::root()), Some(3));
        assert_eq!(t.files(&p("etc")), Some(2));
        assert_eq!(t.dir_count(), 4);
        assert!(t.dir(&p("etc/sip.conf")).is_none());
        let etc = &t.children(&m, &RelPath::root()).unwrap()[0];
        assert_eq!(etc.subtree, t.dir(&p("etc")));
        assert!(t.children(&m, &p("etc/sip.conf")).is_none());
        assert_eq!(tree(&Manifest::new()).root(), tree(&Manifest::new()).root());
        assert_ne!(tree(&Manifest::new()).root(), t.root());
    }

    #[test]
    fn entries_without_a_directory_parent_are_left_out() {
        let mut m = sample();
        let clean = tree(&m).root();
        m.insert(p("nodir/x"), file(9)).unwrap();
        m.insert(p("etc/sip.conf/x"), file(9)).unwrap();
        let t = tree(&m);
        assert_eq!(t.root(), clean);
        listings_match_the_hashes(&m);
    }

    /// The listings made from the manifest hash to the directory hashes
    /// taken when the tree was built: the other side compares the two.
    fn listings_match_the_hashes(m: &Manifest) {
        let t = tree(m);
        let dirs: Vec<RelPath> = std::iter::once(RelPath::root())
            .chain(
                m.iter()
                    .filter(|(_, e)| e.kind.is_dir())
                    .map(|(p, _)| p.clone()),
            )
            .filter(|d| t.dir(d).is_some())
            .collect();
        assert_eq!(dirs.len(), t.dir_count());
        for d in &dirs {
            let children = t.children(m, d).unwrap();
            assert_eq!(Some(contents_hash(&children)), t.dir(d), "{d}");
            let files: u64 = children.iter().map(|c| c.files).sum();
            assert_eq!(t.files(d), Some(files), "{d}");
        }
    }

    #[test]
    fn listings_are_made_again_from_the_manifest() {
        listings_match_the_hashes(&sample());
        listings_match_the_hashes(&Manifest::new());
    }

    #[test]
    fn a_change_reaches_the_root_and_only_its_ancestors() {
        let a = sample();
        let ta = tree(&a);
        let mut b = a.clone();
        let mut e = b.get(&p("etc/sub/x")).unwrap().clone();
        e.mode = 0o600;
        b.insert(p("etc/sub/x"), e).unwrap();
        let tb = tree(&b);
        assert_ne!(ta.root(), tb.root());
        assert_ne!(ta.dir(&p("etc")), tb.dir(&p("etc")));
        assert_ne!(ta.dir(&p("etc/sub")), tb.dir(&p("etc/sub")));
        assert_eq!(ta.dir(&p("sounds")), tb.dir(&p("sounds")));
    }

    #[test]
    fn what_is_and_is_not_hashed() {
        let base = tree(&sample()).root();
        let changed = |f: &dyn Fn(&mut Entry), path: &str| {
            let mut m = sample();
            let mut e = m.get(&p(path)).unwrap().clone();
            f(&mut e);
            m.insert(p(path), e).unwrap();
            tree(&m).root() != base
        };
        assert!(changed(&|e| e.mtime = Time::new(1, 0), "etc/sip.conf"));
        assert!(changed(&|e| e.mode = 0o600, "etc"));
        assert!(changed(&|e| e.user = Some("root".into()), "sounds/a.wav"));
        assert!(changed(&|e| e.group = None, "sounds/a.wav"));
        assert!(changed(
            &|e| e.kind = Kind::Symlink {
                target: b"sounds".to_vec()
            },
            "link"
        ));
        assert!(!changed(&|e| e.ctime = Time::new(1, 0), "etc/sip.conf"));
        assert!(!changed(&|e| e.ino = 77, "etc/sip.conf"));
        assert!(!changed(&|e| e.racy = true, "etc/sip.conf"));
        assert!(!changed(&|e| e.uid = 1000, "etc/sip.conf"), "named owner");
        assert!(!changed(&|e| e.mtime = Time::new(1, 0), "etc"));
    }
}
