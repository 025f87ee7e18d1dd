//! The standby's end of a sync: what `sip-ha serve` does with the sync
//! requests of the link protocol.
//!
//! One [`Session`] per `SyncRoot` request, for one configured path. The
//! sender drives; this side only ever answers:
//!
//! ```text
//!  sender (active)                         receiver (this module)
//!  SyncRoot { path } ─────────────────►  path in MY config? else refuse + log
//!                                        Receiver::new (root, trash), sweep
//!                                        temp files, expire the trash, scan
//!                                        with the same excludes, stat-only
//!                                        thanks to the manifest kept in
//!                                        state_dir; save it
//!                    ◄───────────────── SyncRoot { root hash, files }
//!  equal: done. Else, one round trip per level:
//!  SyncListings { dirs } ─────────────►  Tree::listings
//!  SyncSelect { dirs, subtrees } ─────►  TreeDiff::select, a page at a time
//!  (the sender diffs, guards deletions, then streams the changes)
//!  SyncDelete / SyncDir / SyncSymlink / SyncMeta / FileWhole /
//!  FileBegin → Signature, Pieces..., FileCommit
//!  SyncDone ──────────────────────────►  rescan, save the manifest
//!                    ◄───────────────── SyncDone { root hash, warnings }
//! ```
//!
//! Every write goes through [`Receiver`], which refuses `..`, absolute
//! paths, reserved names and any path through a symlink, and writes files
//! under a temp name until their hash checks out. This module adds the
//! other half of "only inside a configured path": the sender names a path
//! by its configured text, and a path that is not in this node's own
//! `[sync]` is refused (and logged) before anything is opened.
//!
//! A file in progress ([`Request::FileBegin`] to [`Request::FileCommit`])
//! lives in the session; if the session ends (the sender died, the link
//! broke), dropping it removes the temp file. If this process itself is
//! killed, the temp file stays, under a name no reader takes for the real
//! one, and the next session's [`Receiver::cleanup_temp`] removes it.

use super::chunk::{self, Signature};
use super::diff::TreeDiff;
use super::manifest::{Entry, Manifest, RelPath};
use super::receive::{FileMeta, IncomingFile, Receiver};
use super::trash::Trash;
use super::tree::{tree, Tree};
use crate::config::SyncPath;
use crate::link::protocol::{KeepOld, Request, Response};
use anyhow::{anyhow, bail, Context, Result};
use globset::GlobSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A signature with more chunks than this (a file over ~3 GiB) is not sent:
/// the file is sent whole instead, keeping every frame well under the limit.
const MAX_SIGNATURE_CHUNKS: usize = 100_000;

/// About how many bytes of manifest entries go in one answer page.
const PAGE_BYTES: usize = 2 * 1024 * 1024;

/// What the receiving node's configuration says about sync.
#[derive(Debug, Clone)]
pub struct SyncSetup {
    /// This node's `[[sync.path]]`s: the only places it writes.
    pub paths: Vec<SyncPath>,
    /// Where the receiver keeps its manifests.
    pub state_dir: PathBuf,
    pub trash_days: u32,
    /// This node's name, for conflict copies (`NAME.sip-ha-conflict-NODE-...`).
    pub node: String,
    /// Tests and labs only: the configured paths live under this directory
    /// on this host (`<prefix>/<path>`), so two "servers" share one machine.
    pub prefix: Option<PathBuf>,
}

impl SyncSetup {
    /// The configured path named `path`, or why it is refused.
    fn find(&self, path: &str) -> Result<&SyncPath> {
        let wanted = Path::new(path);
        self.paths.iter().find(|p| p.path == wanted).ok_or_else(|| {
            let have: Vec<String> = self
                .paths
                .iter()
                .map(|p| p.path.display().to_string())
                .collect();
            anyhow!(
                "refused to sync {path:?}: it is not a [[sync.path]] in this server's \
                     configuration ({}); run `sip-ha -c` on the active server so both \
                     have the same config",
                if have.is_empty() {
                    "which has none".to_string()
                } else {
                    format!("which has {}", have.join(", "))
                }
            )
        })
    }

    /// Where a configured path is on this host.
    fn local_root(&self, configured: &Path) -> PathBuf {
        match &self.prefix {
            Some(prefix) => prefix.join(configured.strip_prefix("/").unwrap_or(configured)),
            None => configured.to_path_buf(),
        }
    }
}

/// The state file of one side's manifest of one path: `state_dir/sync/
/// <what>-<hash of the path>.manifest` (the path's hash keeps the name
/// short and free of slashes).
pub fn manifest_file(state_dir: &Path, what: &str, path: &Path) -> PathBuf {
    let key = blake3::hash(path.as_os_str().as_encoded_bytes());
    state_dir.join("sync").join(format!(
        "{what}-{}.manifest",
        chunk::short_hex(key.as_bytes())
    ))
}

/// The excludes both sides scan a path with: the configured ones, plus the
/// names sync makes for itself (trash, temp files, conflict copies), which
/// must never travel.
pub fn excludes(path: &SyncPath) -> Result<GlobSet> {
    let mut patterns = path.exclude.clone();
    patterns.push(super::trash::TRASH_DIR_NAME.to_string());
    patterns.push(format!("*{}*", super::receive::TEMP_MARKER));
    patterns.push(format!("*{}*", super::receive::CONFLICT_MARKER));
    super::scan::build_excludes(&patterns)
        .with_context(|| format!("the excludes of sync path {}", path.path.display()))
}

/// The entries selected for the sender, and the unsettled paths.
type Selection = (Vec<(RelPath, Entry)>, Vec<RelPath>);

/// A file being received as a delta.
struct Incoming {
    file: IncomingFile,
    old: Option<File>,
    sig: Signature,
}

/// The receiver's state for one path, from `SyncRoot` to the end of the
/// link session (or the next `SyncRoot`).
pub struct Session {
    configured: PathBuf,
    rx: Receiver,
    excludes: GlobSet,
    manifest: Manifest,
    manifest_file: PathBuf,
    tree: Tree,
    node: String,
    /// The entries selected for the sender, served page by page.
    selected: Option<Selection>,
    incoming: Option<Incoming>,
}

impl Session {
    /// Open a session for the configured `path`: refuse one not in
    /// `setup`, prepare the root (sweep temp files, expire the trash), scan.
    pub fn open(setup: &SyncSetup, path: &str, verify: bool) -> Result<Session> {
        let sp = setup.find(path)?;
        let root = setup.local_root(&sp.path);
        let rx = Receiver::new(&root, &Trash::default_dir(&root))?;
        rx.cleanup_temp()
            .with_context(|| format!("cleaning up temp files under {}", root.display()))?;
        rx.trash().expire(setup.trash_days)?;
        let excludes = excludes(sp)?;
        let manifest_file = manifest_file(&setup.state_dir, "recv", &sp.path);
        let previous = if verify {
            Manifest::new()
        } else {
            Manifest::load(&manifest_file).manifest
        };
        let (manifest, _report) =
            super::scan::scan(&root, &excludes, &previous, SystemTime::now())?;
        if manifest != previous {
            save_manifest(&manifest, &manifest_file)?;
        }
        let tree = tree(&manifest);
        Ok(Session {
            configured: sp.path.clone(),
            rx,
            excludes,
            manifest,
            manifest_file,
            tree,
            node: setup.node.clone(),
            selected: None,
            incoming: None,
        })
    }

    fn root_answer(&self) -> Response {
        Response::SyncRoot {
            root: self.tree.root(),
            files: self.manifest.file_count(),
        }
    }

    fn check_path(&self, path: &str) -> Result<()> {
        if Path::new(path) != self.configured {
            bail!(
                "this sync session is for {}, not {path:?}: send SyncRoot first",
                self.configured.display()
            );
        }
        Ok(())
    }

    fn select(&mut self, dirs: Vec<RelPath>, subtrees: Vec<RelPath>, from: u64) -> Response {
        if from == 0 || self.selected.is_none() {
            let td = TreeDiff {
                dirs: dirs.into_iter().collect(),
                subtrees: subtrees.into_iter().collect(),
            };
            let m = td.select(&self.manifest);
            let unsettled = m.unsettled().iter().cloned().collect();
            let entries = m
                .entries()
                .iter()
                .map(|(p, e)| (p.clone(), e.clone()))
                .collect();
            self.selected = Some((entries, unsettled));
        }
        let Some((entries, unsettled)) = &self.selected else {
            return Response::Error("no selection (a bug)".into());
        };
        let start = usize::try_from(from)
            .unwrap_or(usize::MAX)
            .min(entries.len());
        let mut size = 0;
        let mut end = start;
        while end < entries.len() && (size < PAGE_BYTES || end == start) {
            size += entry_size(&entries[end]);
            end += 1;
        }
        Response::SyncEntries {
            entries: entries[start..end].to_vec(),
            // Sent with the first page only.
            unsettled: if start == 0 {
                unsettled.clone()
            } else {
                Vec::new()
            },
            more: end < entries.len(),
        }
    }

    fn keep(&mut self, rel: &RelPath, keep_old: Option<KeepOld>) -> Result<()> {
        if let Some(k) = keep_old {
            if std::fs::symlink_metadata(self.rx.resolve(rel.as_bytes())?).is_ok() {
                self.rx
                    .keep_conflict_copy(rel.as_bytes(), &self.node, at(k))?;
            }
        }
        Ok(())
    }

    fn begin(
        &mut self,
        rel: &RelPath,
        meta: FileMeta,
        keep_old: Option<KeepOld>,
    ) -> Result<IncomingFile> {
        let mut file = self.rx.begin_file(rel.as_bytes(), meta)?;
        if let Some(k) = keep_old {
            file.keep_old(&self.node, at(k));
        }
        Ok(file)
    }

    /// Rescan after the sender's changes, save the manifest, and report.
    fn done(&mut self) -> Result<Response> {
        self.incoming = None;
        self.selected = None;
        let (manifest, _) = super::scan::scan(
            self.rx.root(),
            &self.excludes,
            &self.manifest,
            SystemTime::now(),
        )?;
        save_manifest(&manifest, &self.manifest_file)?;
        self.tree = tree(&manifest);
        self.manifest = manifest;
        Ok(Response::SyncDone {
            root: self.tree.root(),
            warnings: self.rx.take_warnings(),
        })
    }
}

fn save_manifest(m: &Manifest, file: &Path) -> Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    m.save(file)
}

fn at(k: KeepOld) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(k.at_ms)
}

/// About how many bytes an entry takes on the wire.
fn entry_size((path, entry): &(RelPath, Entry)) -> usize {
    let target = match &entry.kind {
        super::Kind::Symlink { target } => target.len(),
        _ => 0,
    };
    let names =
        entry.user.as_ref().map_or(0, String::len) + entry.group.as_ref().map_or(0, String::len);
    path.as_bytes().len() + target + names + 128
}

/// Whether `request` belongs to sync (and so to [`answer`]).
pub fn is_sync_request(request: &Request) -> bool {
    matches!(
        request,
        Request::SyncRoot { .. }
            | Request::SyncListings { .. }
            | Request::SyncSelect { .. }
            | Request::SyncDelete { .. }
            | Request::SyncDir { .. }
            | Request::SyncSymlink { .. }
            | Request::SyncMeta { .. }
            | Request::FileWhole { .. }
            | Request::FileBegin { .. }
            | Request::Pieces(_)
            | Request::FileCommit { .. }
            | Request::SyncDone
    )
}

/// Answer one sync request. `setup` gives this node's sync configuration
/// (asked for on `SyncRoot` only); `session` is the open one, if any.
/// Errors become [`Response::Error`] in the caller; a refused request
/// leaves the session open (the sender decides whether to go on), except
/// that a failed file transfer is abandoned.
pub fn answer(
    session: &mut Option<Session>,
    setup: impl FnOnce() -> Result<SyncSetup>,
    request: Request,
) -> Result<Response> {
    if let Request::SyncRoot { path, verify } = request {
        // A new root ends the previous session (and any file in progress).
        *session = None;
        let setup = setup()?;
        let s = Session::open(&setup, &path, verify)?;
        let answer = s.root_answer();
        *session = Some(s);
        return Ok(answer);
    }
    let Some(s) = session.as_mut() else {
        bail!("no sync in progress: the sender must start with SyncRoot");
    };
    match request {
        Request::SyncRoot { .. } => unreachable!("handled above"),
        Request::SyncListings { path, dirs } => {
            s.check_path(&path)?;
            Ok(Response::SyncListings(s.tree.listings(&dirs)))
        }
        Request::SyncSelect {
            dirs,
            subtrees,
            from,
        } => Ok(s.select(dirs, subtrees, from)),
        Request::SyncDelete { rels } => {
            for rel in &rels {
                s.rx.delete(rel.as_bytes())
                    .with_context(|| format!("cannot delete {rel}"))?;
            }
            Ok(Response::Ok)
        }
        Request::SyncDir { rel, meta } => {
            s.rx.dir(rel.as_bytes(), meta)
                .with_context(|| format!("cannot make the directory {rel}"))?;
            Ok(Response::Ok)
        }
        Request::SyncSymlink {
            rel,
            target,
            meta,
            keep_old,
        } => {
            s.keep(&rel, keep_old)?;
            s.rx.symlink(rel.as_bytes(), &target, meta)
                .with_context(|| format!("cannot make the symlink {rel}"))?;
            Ok(Response::Ok)
        }
        Request::SyncMeta { rel, meta, hash } => {
            // Same content, other metadata: rewrite the file from itself, so
            // that the change is as atomic as any other.
            let mut old =
                s.rx.open_existing(rel.as_bytes())?
                    .ok_or_else(|| anyhow!("cannot update {rel}: it is not a file here"))?;
            let mut file = s.begin(&rel, meta, None)?;
            std::io::copy(&mut old, &mut file).with_context(|| format!("cannot copy {rel}"))?;
            file.commit(&hash)
                .with_context(|| format!("cannot update the metadata of {rel}"))?;
            Ok(Response::Ok)
        }
        Request::FileWhole {
            rel,
            meta,
            data,
            hash,
            keep_old,
        } => {
            s.incoming = None;
            let mut file = s.begin(&rel, meta, keep_old)?;
            file.write(&data)?;
            file.commit(&hash)?;
            Ok(Response::Ok)
        }
        Request::FileBegin {
            rel,
            meta,
            size: _,
            whole_hash: _,
            keep_old,
        } => {
            s.incoming = None;
            let mut old = s.rx.open_existing(rel.as_bytes())?;
            let mut sig = match old.as_mut() {
                Some(f) => chunk::signature(&mut *f)
                    .with_context(|| format!("cannot read the current {rel}"))?,
                None => Signature::empty(),
            };
            if sig.chunks.len() > MAX_SIGNATURE_CHUNKS {
                sig = Signature::empty();
                old = None;
            }
            let file = s.begin(&rel, meta, keep_old)?;
            s.incoming = Some(Incoming {
                file,
                old,
                sig: sig.clone(),
            });
            Ok(Response::Signature(sig))
        }
        Request::Pieces(pieces) => {
            let Some(inc) = s.incoming.as_mut() else {
                bail!("no file transfer in progress (it was refused or abandoned earlier)");
            };
            let result = chunk::apply(
                inc.old.as_mut(),
                &inc.sig,
                pieces.into_iter().map(Ok),
                &mut inc.file,
            );
            if let Err(e) = result {
                s.incoming = None;
                return Err(e);
            }
            Ok(Response::Ok)
        }
        Request::FileCommit { hash } => {
            let inc = s
                .incoming
                .take()
                .ok_or_else(|| anyhow!("no file transfer in progress to commit"))?;
            inc.file.commit(&hash)?;
            Ok(Response::Ok)
        }
        Request::SyncDone => {
            let done = s.done();
            // Free the manifest now: the sender may keep the link open
            // until its next push.
            *session = None;
            done
        }
        other => bail!("not a sync request: {other:?}"),
    }
}
