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
//!                                        temp files (only after a session
//!                                        that wrote and did not finish:
//!                                        the `.writing` marker), expire the
//!                                        trash, scan
//!                                        with the same excludes, stat-only
//!                                        thanks to the manifest kept in
//!                                        state_dir; save it. Or trust it
//!                                        (see "Trusted sessions" below)
//!                    ◄───────────────── SyncRoot { root hash, files }
//!  equal: done. Else, one round trip per level:
//!  SyncListings { dirs } ─────────────►  Tree::listings (made from the
//!                                        manifest)
//!  SyncSelect { paths, ... } ─────────►  TreeDiff::select, a page at a time
//!  (the sender diffs, guards deletions, then streams the changes,
//!  pipelined)
//!  SyncDelete / SyncDir / SyncSymlink / SyncMeta (set in place)
//!  Files [batch k] ───────────────────►  write + check under temp names;
//!                                        a thread puts them in place
//!                                        (syncfs, renames) while the next
//!                                        batches come
//!                    ◄───────────────── outcome of the earlier batches in
//!                                        place by now (a few at most are
//!                                        left going)
//!  FilesFlush ────────────────────────►  outcome of all the rest
//!  FileBegin → Signature, Pieces..., FileCommit
//!  SyncDone ──────────────────────────►  syncfs (the renames durable),
//!                                        rescan the directories written
//!                                        in (the files written here are
//!                                        in the manifest as placed:
//!                                        trusted, not read back), save
//!                    ◄───────────────── SyncDone { warnings }
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
//!
//! ## Trusted sessions
//!
//! A resident loop's push for a change scans only what its watch saw
//! change ([`journal`](mod@super::journal)); it also lets this side skip
//! its scan of 100,000 files. Each push has a random token; each session
//! keeps its push's token beside the manifest (`recv-*.token`), which is
//! that session's from then on. A `SyncRoot` whose `trust` names the token
//! kept, with the manifest loaded whole and no `.writing` marker (no
//! session cut off mid-write since), is answered from the manifest
//! unscanned. Before the sender compares entries (`SyncSelect`), what it
//! asks about is read again (`Session::refresh`: the listings of the
//! differing directories, the subtrees, the single paths), so a file
//! changed here since is seen as such, and kept as a conflict copy, as
//! after a scan. What was changed here by hand where the sender changed
//! nothing is found by the next full check (every `sync.interval`, and
//! each operator's `sip-ha sync`), as it would be by the next scan.

use super::chunk::{self, Signature};
use super::diff::TreeDiff;
use super::manifest::{Entry, LoadStatus, Manifest, RelPath, Time};
use super::receive::{commit_batch, sync_renames, FileMeta, IncomingFile, Placed, Receiver};
use super::trash::Trash;
use super::tree::{tree, Tree};
use crate::config::SyncPath;
use crate::link::protocol::{KeepOld, Request, Response, WholeFile};
use anyhow::{anyhow, bail, Context, Result};
use globset::GlobSet;
use nix::sys::time::TimeSpec;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A signature with more chunks than this (a file over ~3 GiB) is not sent:
/// the file is sent whole instead, keeping every frame well under the limit.
/// [`Request::Files`] batches being put in place at once, at most: each
/// waits on the disk's flush, and the standby writes the next ones
/// meanwhile instead of waiting (a first copy of 100,000 files took
/// 12.6-13.7 s against 13.7-14.4 s with one at a time, on a fresh ext4).
const COMMITS_IN_FLIGHT: usize = 3;

/// ...and files being put in place at once, at most: each holds two
/// descriptors open (the temp file and its directory) until it is in
/// place, and the usual limit is 1,024 per process. With the batch being
/// written, at most 384 files, 768 descriptors.
const FILES_COMMITTING: usize = 256;

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
/// names sync makes for itself (trash, temp files, conflict copies) and the
/// `-wal`, `-shm` and `-journal` files of its SQLite databases, which must
/// never travel.
pub fn excludes(path: &SyncPath) -> Result<GlobSet> {
    let mut patterns = path.exclude.clone();
    patterns.push(super::trash::TRASH_DIR_NAME.to_string());
    patterns.push(format!("*{}*", super::receive::TEMP_MARKER));
    patterns.push(format!("*{}*", super::receive::CONFLICT_MARKER));
    patterns.extend(super::sqlite::sibling_excludes(path));
    super::scan::build_excludes(&patterns)
        .with_context(|| format!("the excludes of sync path {}", path.path.display()))
}

/// The entries selected for the sender, and the unsettled paths.
type Selection = (Vec<(RelPath, Entry)>, Vec<RelPath>);

/// A file being received as a delta.
struct Incoming {
    rel: RelPath,
    file: IncomingFile,
    old: Option<File>,
    sig: Signature,
    /// The old copy's stat when its signature was taken: if it changed
    /// since, a refused commit says so (the hash check is what refuses).
    old_stat: Option<OldStat>,
}

/// What tells that a file was written to: any write changes its ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OldStat {
    size: i64,
    mtime: Time,
    ctime: Time,
}

fn old_stat(file: &File) -> Option<OldStat> {
    let st = nix::sys::stat::fstat(file).ok()?;
    Some(OldStat {
        size: st.st_size,
        mtime: Time::new(st.st_mtime, st.st_mtime_nsec),
        ctime: Time::new(st.st_ctime, st.st_ctime_nsec),
    })
}

/// The receiver's state for one path, from `SyncRoot` to the end of the
/// link session (or the next `SyncRoot`).
pub struct Session {
    /// The manifest was trusted, not scanned: what `SyncSelect` asks for
    /// is read again first.
    trusted: bool,
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
    /// The mtime of each directory batches write in, as it was before the
    /// first (as the sender set it, if it did): put back once every batch
    /// is in place. Each batch puts back what its own first file saw, but
    /// with batches in flight together, a later one can see an earlier
    /// one's temp files.
    batch_dirs: BTreeMap<RelPath, Option<TimeSpec>>,
    /// [`Request::Files`] batches being put in place, oldest first, each
    /// with its number of files; their outcomes not yet reported.
    committing: VecDeque<(usize, std::thread::JoinHandle<Committed>)>,
    /// The marker of a session that writes.
    writing: Writing,
    /// The directories this session wrote in (each written path's
    /// parent): what the closing rescan reads again after a failure.
    written_in: BTreeSet<RelPath>,
    /// What it reads again when every write went through (see
    /// [`Session::touch`]): far fewer, since a file put in place is
    /// learned as it lands.
    reread: BTreeSet<RelPath>,
    /// Every write went through and every file put in place was learned:
    /// `reread` is enough for an exact manifest.
    all_learned: bool,
    /// The owners' names of the files learned, as a scan gives them.
    owners: super::scan::Owners,
}

/// `recv-<hash>.writing` in the state directory: made (durably) before a
/// session's first write, removed when it ends with `SyncDone`. Found at
/// the next session's start, it says temp files may be left to sweep.
struct Writing {
    path: PathBuf,
    made: bool,
}

impl Writing {
    fn new(path: PathBuf) -> Writing {
        Writing { path, made: false }
    }

    fn make(&mut self) -> Result<()> {
        if !self.made {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            crate::state::write_atomic(&self.path, b"a sync session is writing\n")
                .with_context(|| format!("cannot write {}", self.path.display()))?;
            self.made = true;
        }
        Ok(())
    }

    fn clear(&mut self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove {}", self.path.display()))
            }
        }
        self.made = false;
        Ok(())
    }
}

/// A batch's outcome: per file, why it failed; and the entries of the
/// files placed (see [`placed_entry`]).
type Committed = (Vec<Option<String>>, Vec<(RelPath, Entry)>);

impl Drop for Session {
    /// A batch still being put in place finishes before the session goes
    /// (and with it the right to write under this root).
    fn drop(&mut self) {
        self.flush_files();
    }
}

impl Session {
    /// Open a session for the configured `path` and the push `token`:
    /// refuse one not in `setup`, prepare the root (sweep temp files,
    /// expire the trash), and scan, or trust the saved manifest if it is
    /// from the session of the push `trust` and no session was left
    /// mid-write since.
    pub fn open(
        setup: &SyncSetup,
        path: &str,
        verify: bool,
        token: u64,
        trust: Option<u64>,
    ) -> Result<Session> {
        let sp = setup.find(path)?;
        let root = setup.local_root(&sp.path);
        let rx = Receiver::new(&root, &Trash::default_dir(&root))?;
        rx.trash().expire(setup.trash_days)?;
        let excludes = excludes(sp)?;
        let manifest_file = manifest_file(&setup.state_dir, "recv", &sp.path);
        let loaded = Manifest::load(&manifest_file);
        let writing = manifest_file.with_extension("writing");
        // Temp files are left only by a session that wrote and did not
        // finish (killed, power lost): sweep after one, or when there is
        // no manifest to say how the last one went. A quiet run does not
        // walk the tree an extra time.
        if writing.exists() || loaded.status != LoadStatus::Loaded {
            rx.cleanup_temp()
                .with_context(|| format!("cleaning up temp files under {}", root.display()))?;
        }
        let token_file = manifest_file.with_extension("token");
        let trusted = !verify
            && loaded.status == LoadStatus::Loaded
            && !writing.exists()
            && trust.is_some_and(|t| read_token(&token_file) == Some(t));
        let manifest = if trusted {
            loaded.manifest
        } else {
            let previous = if verify {
                Manifest::new()
            } else {
                loaded.manifest
            };
            let (manifest, report) = super::scan::scan_owned(
                &root,
                &excludes,
                previous,
                SystemTime::now(),
                &super::ScanOptions::default(),
            )?;
            if report.changed {
                save_manifest(&manifest, &manifest_file)?;
            }
            manifest
        };
        // The manifest on disk is this session's from now on (any write
        // makes `.writing` first, until the closing rescan saves it).
        keep_token(&token_file, token);
        let tree = tree(&manifest);
        Ok(Session {
            trusted,
            configured: sp.path.clone(),
            rx,
            excludes,
            manifest,
            manifest_file,
            tree,
            node: setup.node.clone(),
            selected: None,
            incoming: None,
            committing: VecDeque::new(),
            batch_dirs: BTreeMap::new(),
            written_in: BTreeSet::new(),
            reread: BTreeSet::new(),
            all_learned: true,
            owners: Default::default(),
            writing: Writing::new(writing),
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

    /// Scan the root again with `opts`, from the session's manifest, which
    /// is taken, not cloned (one copy of it less during the scan).
    fn rescan(&mut self, opts: &super::ScanOptions) -> Result<(Manifest, super::ScanReport)> {
        let previous = std::mem::take(&mut self.manifest);
        super::scan::scan_owned(
            self.rx.root(),
            &self.excludes,
            previous,
            SystemTime::now(),
            opts,
        )
    }

    /// In a trusted session, before the first selection: read again, in
    /// the tree, what the sender is about to compare (these directories'
    /// listings, these subtrees, these single paths), so that what it
    /// decides on (a conflict most of all: changed here since the last
    /// push) is current, as after a scan. Everything else stays trusted.
    fn refresh(&mut self, dirs: &[RelPath], subtrees: &[RelPath], paths: &[RelPath]) -> Result<()> {
        self.trusted = false;
        let mut relist: BTreeSet<RelPath> = dirs.iter().cloned().collect();
        for sub in subtrees {
            relist.insert(sub.clone());
            let below = self.manifest.subtree(sub).filter(|(_, e)| e.kind.is_dir());
            relist.extend(below.map(|(p, _)| p.clone()));
        }
        let opts = super::ScanOptions {
            relist: Some(relist),
            refresh: paths.iter().cloned().collect(),
            ..Default::default()
        };
        // On an error the session has no manifest, and the sender stops
        // this path at the error. Neither saved nor made a tree: the
        // walk is over, and the closing rescan saves what it ends with (a
        // session that writes nothing leaves the trusted one, which the
        // next trusted session reads again where asked).
        let (manifest, _) = self.rescan(&opts)?;
        self.manifest = manifest;
        Ok(())
    }

    fn select(
        &mut self,
        dirs: Vec<RelPath>,
        subtrees: Vec<RelPath>,
        paths: Vec<RelPath>,
        from: u64,
    ) -> Response {
        if self.trusted {
            if let Err(e) = self.refresh(&dirs, &subtrees, &paths) {
                return Response::Error(format!("{e:#}"));
            }
        }
        if from == 0 || self.selected.is_none() {
            let td = TreeDiff {
                dirs: dirs.into_iter().collect(),
                subtrees: subtrees.into_iter().collect(),
                paths: paths.into_iter().collect(),
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

    /// A batch of whole files: each written and checked under its temp
    /// name now; all put in place together by a thread of their own while
    /// the next batches arrive (the disk flush overlaps the transfer; see
    /// [`COMMITS_IN_FLIGHT`]). The answer is the outcome of the earlier
    /// batches in place by now, oldest first: per file, why it failed, if
    /// it did (see [`Request::Files`]).
    fn files(&mut self, files: Vec<WholeFile>) -> Vec<Option<String>> {
        let count = files.len();
        let mut results = vec![None; count];
        let mut staged = Vec::with_capacity(count);
        let mut which = Vec::with_capacity(count);
        for (i, f) in files.into_iter().enumerate() {
            if let Some(dir) = f.rel.parent() {
                if !self.batch_dirs.contains_key(&dir) {
                    let mtime = self.rx.dir_mtime(dir.as_bytes());
                    self.batch_dirs.insert(dir, mtime);
                }
            }
            let written = self.begin(&f.rel, f.meta, f.keep_old).and_then(|mut file| {
                file.write(&f.data)?;
                file.stage(&f.hash)
            });
            match written {
                Ok(file) => {
                    staged.push(file);
                    which.push((i, f.rel));
                }
                Err(e) => results[i] = Some(format!("{}: {e:#}", f.rel)),
            }
        }
        let committing = std::thread::spawn(move || {
            let mut learned = Vec::with_capacity(which.len());
            for ((i, rel), placed) in which.into_iter().zip(commit_batch(staged)) {
                match placed {
                    Ok(placed) => learned.extend(placed_entry(&placed).map(|e| (rel, e))),
                    Err(e) => results[i] = Some(format!("{e:#}")),
                }
            }
            (results, learned)
        });
        let reported = self.reap(false, count);
        self.committing.push_back((count, committing));
        reported
    }

    /// Enter a file this session put in place into the manifest, for the
    /// closing rescan (see [`placed_entry`]).
    fn learn(&mut self, rel: RelPath, placed: &Placed) {
        match placed_entry(placed) {
            Some(entry) => self.enter(rel, entry),
            None => self.all_learned = false,
        }
    }

    /// Enter a learned file, with its owners' names.
    fn enter(&mut self, rel: RelPath, mut entry: Entry) {
        entry.user = self.owners.user(entry.uid);
        entry.group = self.owners.group(entry.gid);
        // Never the root: a file path from the sender.
        let _ = self.manifest.insert(rel, entry);
    }

    /// Note the directories `request` writes in, before it runs (a write
    /// that fails half-way has still touched them).
    ///
    /// A file put in place (whole, as a delta, or given new metadata) is
    /// learned as it lands, stat and all: in its directory only that
    /// directory's own stat changes besides, and reading the parent
    /// directory again takes it. A directory of 100 recordings with one
    /// new is then not read again: 1% of 100,000 files changed costs a
    /// thousand stats here, not 100,000. Everything else (deletions,
    /// directories, symlinks, conflict copies kept beside a file) has its
    /// directory read again whole.
    fn touch(&mut self, request: &Request) {
        let mut note = |rel: &RelPath, learned: bool| {
            let Some(parent) = rel.parent() else { return };
            self.written_in.insert(parent.clone());
            if !learned {
                self.reread.insert(parent);
            } else if let Some(grandparent) = parent.parent() {
                self.reread.insert(grandparent);
            }
            // (A file in the root: the root is always read again.)
        };
        match request {
            Request::SyncDelete { rels } => rels.iter().for_each(|r| note(r, false)),
            Request::Files(files) => files
                .iter()
                .for_each(|f| note(&f.rel, f.keep_old.is_none())),
            Request::FileWhole { rel, keep_old, .. } | Request::FileBegin { rel, keep_old, .. } => {
                note(rel, keep_old.is_none())
            }
            Request::SyncMeta { rel, .. } => note(rel, true),
            Request::SyncDir { rel, .. } | Request::SyncSymlink { rel, .. } => note(rel, false),
            _ => {}
        }
    }

    /// Wait for every batch being put in place: their outcomes per file,
    /// oldest first (empty when there was none).
    fn flush_files(&mut self) -> Vec<Option<String>> {
        let reported = self.reap(true, 0);
        for (dir, mtime) in std::mem::take(&mut self.batch_dirs) {
            if let Some(mtime) = mtime {
                self.rx.set_dir_mtime(dir.as_bytes(), mtime);
            }
        }
        reported
    }

    /// The outcomes of the batches in place, oldest first, stopping at the
    /// first still going; waiting for it too when `all`, or while, with
    /// `incoming` more files about to go, more than [`COMMITS_IN_FLIGHT`]
    /// batches or [`FILES_COMMITTING`] files would be going.
    fn reap(&mut self, all: bool, incoming: usize) -> Vec<Option<String>> {
        let mut out = Vec::new();
        while let Some((_, front)) = self.committing.front() {
            let files: usize = self.committing.iter().map(|(n, _)| n).sum();
            let over =
                self.committing.len() >= COMMITS_IN_FLIGHT || files + incoming > FILES_COMMITTING;
            if !(all || over || front.is_finished()) {
                break;
            }
            let Some((count, committing)) = self.committing.pop_front() else {
                break;
            };
            match committing.join() {
                Ok((results, learned)) => {
                    if results.iter().any(Option::is_some) {
                        self.all_learned = false;
                    }
                    for (rel, entry) in learned {
                        self.enter(rel, entry);
                    }
                    out.extend(results);
                }
                // Not expected; the rescan finds what did land.
                Err(_) => {
                    self.all_learned = false;
                    let failed = "the thread putting files in place failed".to_string();
                    out.extend(std::iter::repeat_n(Some(failed), count));
                }
            }
        }
        out
    }

    /// Rescan after the sender's changes, save the manifest, and report.
    /// Only where this session wrote is read again (see [`Session::touch`]
    /// and [`ScanOptions::relist`](super::ScanOptions::relist)), and the
    /// files it put in place are not read back: their hash was checked as
    /// they were written (see [`placed_entry`]). After any failure, every
    /// directory written in is read again whole, whatever landed.
    fn done(&mut self) -> Result<Response> {
        self.incoming = None;
        self.selected = None;
        self.flush_files();
        if self.writing.made {
            // Before anything says this session's files are in place.
            sync_renames(self.rx.root())?;
        }
        let written_in = std::mem::take(&mut self.written_in);
        let reread = std::mem::take(&mut self.reread);
        let opts = super::ScanOptions {
            relist: Some(if self.all_learned { reread } else { written_in }),
            ..Default::default()
        };
        let (manifest, _) = self.rescan(&opts)?;
        save_manifest(&manifest, &self.manifest_file)?;
        self.writing.clear()?;
        // The session ends here: no tree is made of it.
        self.manifest = manifest;
        Ok(Response::SyncDone {
            warnings: self.rx.take_warnings(),
        })
    }
}

/// The manifest entry of a file this session put in place: its hash was
/// checked on receipt and its stat taken right after the rename, so the
/// rescan trusts the hash while that stat is unchanged, even though the
/// file is brand new (its ctime is inside the racy window). Any change
/// after the rename, by anyone, changes the ctime, and the file is read
/// again. `None` without a stat: the rescan reads that file.
fn placed_entry(placed: &Placed) -> Option<Entry> {
    let st = placed.stat.as_ref()?;
    Some(Entry {
        kind: super::Kind::File {
            size: st.st_size as u64,
            hash: placed.hash,
        },
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        user: None,
        group: None,
        mtime: super::Time::new(st.st_mtime, st.st_mtime_nsec),
        ctime: super::Time::new(st.st_ctime, st.st_ctime_nsec),
        dev: st.st_dev,
        ino: st.st_ino,
        racy: false,
        placed: true,
    })
}

/// The push token kept beside a manifest, if it reads as one.
fn read_token(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.trim().parse().ok()
}

/// Keep `token` beside the manifest. Not flushed: one lost or torn by a
/// crash only fails to match, and the next session scans. If it cannot be
/// written, the old one goes, or the sender's next token will not match it.
fn keep_token(file: &Path, token: u64) {
    if std::fs::write(file, format!("{token}\n")).is_err() {
        let _ = std::fs::remove_file(file);
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
        entry.user.as_deref().map_or(0, str::len) + entry.group.as_deref().map_or(0, str::len);
    path.as_bytes().len() + target + names + 128
}

/// Whether `request` may leave a temp file if the session is killed.
fn writes(request: &Request) -> bool {
    matches!(
        request,
        Request::SyncDelete { .. }
            | Request::SyncDir { .. }
            | Request::SyncSymlink { .. }
            | Request::SyncMeta { .. }
            | Request::FileWhole { .. }
            | Request::FileBegin { .. }
            | Request::Files(_)
    )
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
            | Request::Files(_)
            | Request::FilesFlush
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
    if let Request::SyncRoot {
        path,
        verify,
        token,
        trust,
    } = request
    {
        // A new root ends the previous session (and any file in progress).
        *session = None;
        let setup = setup()?;
        let s = Session::open(&setup, &path, verify, token, trust)?;
        let answer = s.root_answer();
        *session = Some(s);
        return Ok(answer);
    }
    let Some(s) = session.as_mut() else {
        bail!("no sync in progress: the sender must start with SyncRoot");
    };
    if writes(&request) {
        s.writing.make()?;
        s.touch(&request);
    }
    if let Request::SyncDone = request {
        let done = s.done();
        // Free the manifest now: the sender may keep the link open until
        // its next push.
        *session = None;
        return done;
    }
    let answered = s.answer(request);
    if answered.is_err() {
        // Whatever it was, it may have left something half-done on disk
        // that was not learned: the closing rescan reads it all.
        s.all_learned = false;
    }
    answered
}

impl Session {
    /// [`answer`] a request of the open session, other than `SyncDone`.
    fn answer(&mut self, request: Request) -> Result<Response> {
        match request {
            Request::SyncRoot { .. } | Request::SyncDone => {
                bail!("a session cannot answer {request:?} itself (a bug: its caller does)")
            }
            Request::SyncListings { path, dirs } => {
                self.check_path(&path)?;
                Ok(Response::SyncListings(
                    self.tree.listings(&self.manifest, &dirs),
                ))
            }
            Request::SyncSelect {
                dirs,
                subtrees,
                from,
                paths,
            } => Ok(self.select(dirs, subtrees, paths, from)),
            Request::SyncDelete { rels } => {
                for rel in &rels {
                    self.rx
                        .delete(rel.as_bytes())
                        .with_context(|| format!("cannot delete {rel}"))?;
                }
                Ok(Response::Ok)
            }
            Request::SyncDir { rel, meta } => {
                self.rx
                    .dir(rel.as_bytes(), meta)
                    .with_context(|| format!("cannot make the directory {rel}"))?;
                Ok(Response::Ok)
            }
            Request::SyncSymlink {
                rel,
                target,
                meta,
                keep_old,
            } => {
                self.keep(&rel, keep_old)?;
                self.rx
                    .symlink(rel.as_bytes(), &target, meta)
                    .with_context(|| format!("cannot make the symlink {rel}"))?;
                Ok(Response::Ok)
            }
            Request::SyncMeta { rel, meta, hash } => {
                // Same content (the sender compared it with this side's fresh
                // manifest), other metadata: set it in place.
                let st = self
                    .rx
                    .file_meta(rel.as_bytes(), meta)
                    .with_context(|| format!("cannot update the metadata of {rel}"))?;
                self.learn(
                    rel,
                    &Placed {
                        stat: Some(st),
                        hash,
                    },
                );
                Ok(Response::Ok)
            }
            Request::FileWhole {
                rel,
                meta,
                data,
                hash,
                keep_old,
            } => {
                self.incoming = None;
                let mut file = self.begin(&rel, meta, keep_old)?;
                file.write(&data)?;
                let placed = file.commit(&hash)?;
                self.learn(rel, &placed);
                Ok(Response::Ok)
            }
            Request::FileBegin {
                rel,
                meta,
                size: _,
                whole_hash: _,
                keep_old,
            } => {
                self.incoming = None;
                let mut old = self.rx.open_existing(rel.as_bytes())?;
                let old_stat = old.as_ref().and_then(old_stat);
                let mut sig = match old.as_mut() {
                    Some(f) => chunk::signature(&mut *f)
                        .with_context(|| format!("cannot read the current {rel}"))?,
                    None => Signature::empty(),
                };
                if sig.chunks.len() > MAX_SIGNATURE_CHUNKS {
                    sig = Signature::empty();
                    old = None;
                }
                let mut file = self.begin(&rel, meta, keep_old)?;
                if !sig.chunks.is_empty() {
                    // Rebuilt here from the old copy, mostly: see stream_hash.
                    file.hash_on_a_thread();
                }
                self.incoming = Some(Incoming {
                    rel,
                    file,
                    old,
                    sig: sig.clone(),
                    old_stat,
                });
                Ok(Response::Signature(sig))
            }
            Request::Pieces(pieces) => {
                let Some(inc) = self.incoming.as_mut() else {
                    bail!("no file transfer in progress (it was refused or abandoned earlier)");
                };
                let result = chunk::apply(
                    inc.old.as_mut(),
                    &inc.sig,
                    pieces.into_iter().map(Ok),
                    &mut inc.file,
                );
                if let Err(e) = result {
                    self.incoming = None;
                    return Err(e);
                }
                Ok(Response::Ok)
            }
            Request::FileCommit { hash } => {
                let inc = self
                    .incoming
                    .take()
                    .ok_or_else(|| anyhow!("no file transfer in progress to commit"))?;
                let rel = inc.rel;
                let placed = inc.file.commit(&hash).map_err(|e| {
                    let changed = inc
                        .old
                        .as_ref()
                        .is_some_and(|f| old_stat(f) != inc.old_stat);
                    if changed {
                        e.context(format!(
                            "{rel} was written to on the standby while it was being updated from \
                         the active server; the next sync sends it again"
                        ))
                    } else {
                        e
                    }
                })?;
                self.learn(rel, &placed);
                Ok(Response::Ok)
            }
            Request::Files(files) => {
                self.incoming = None;
                Ok(Response::Files(self.files(files)))
            }
            Request::FilesFlush => Ok(Response::Files(self.flush_files())),
            other => bail!("not a sync request: {other:?}"),
        }
    }
}
