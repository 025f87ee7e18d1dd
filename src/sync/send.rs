//! The active server's end of a sync: [`push`] every `[[sync.path]]` to the
//! standby over an open [`PeerLink`](crate::link::PeerLink), or to a local
//! mirror: any [`Channel`].
//!
//! For each path, in order:
//!
//! 1. **Refuse a source that is not there** ([`check_source`]): an empty or
//!    missing root (an unmounted disk) would otherwise empty the standby.
//! 2. **Scan** it (off the async thread), reusing the hashes of files whose
//!    stat did not change since the last run (the manifest kept in
//!    `state_dir/sync/send-*.manifest`). No file is read on a quiet run.
//!    In a resident loop ([`push_journaled`]) only the directories its
//!    watch saw change are listed, and no other file is even stat'ed.
//! 3. **Compare root hashes**: `SyncRoot` → the standby's root hash, asked
//!    before our own scan so that both sides scan at once. Equal: this path
//!    is done, after two small frames (well under 1 KiB).
//! 4. **Walk** the differing directories, one round trip per level
//!    ([`TreeWalk`]), then fetch the standby's manifest entries for just
//!    the differing paths (`SyncSelect`) and [`diff_selected`] them against
//!    ours and against the *base*, the manifest of the last good sync
//!    (`state_dir/sync/base-*.manifest`, loaded for those paths only).
//! 5. **Conflicts** (changed on both sides since the base): the active side
//!    wins, and the standby keeps its version beside the new one as
//!    `NAME.sip-ha-conflict-NODE-TIME`; the summary lists each.
//! 6. **Guard**: refuse a run that deletes more than
//!    `[sync] max_delete_percent` of the standby's files ([`delete_guard`]).
//! 7. **Apply**, pipelined (up to `MAX_IN_FLIGHT` requests unanswered):
//!    deletions (into the standby's trash), then directories, symlinks and
//!    metadata-only updates; then files up to `ALWAYS_WHOLE` (and new
//!    ones up to 1 MiB) whole, in `Files` batches that the standby puts in
//!    place together; then the rest as deltas against the standby's copy
//!    (its chunk [`Signature`], then only the chunks it lacks, then the
//!    whole-file hash, which the standby checks before renaming the file
//!    into place). We list our copy's chunks while the standby lists its
//!    own, so the two reads of a big file overlap.
//! 8. **Done**: the standby rescans the directories written in and saves
//!    its manifest; if the path went through without an error, our
//!    manifest becomes the new base (a second name for the send manifest
//!    file, not a copy).
//!
//! A path refused (empty source, mass delete, a file the standby could not
//! write) is reported in [`SyncSummary::errors`] and the other paths go on.
//! A broken link ends the push with an error: the standby drops the file in
//! progress, and the next run starts over from the hashes.

use super::channel::Channel;
use super::chunk::{self, Piece, Signature};
use super::diff::{delete_guard, diff_selected, Change, TreeWalk, What};
use super::journal::{Journal, Relist};
use super::manifest::{Entry, Kind, LoadStatus, Manifest, RelPath};
use super::receive::FileMeta;
use super::session::{excludes, manifest_file};
use super::{check_source, scan_owned, tree, ScanOptions};
use crate::config::{Config, SyncPath};
use crate::link::frame;
use crate::link::protocol::{KeepOld, Request, Response, WholeFile};
use crate::log::Logger;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Files up to this size, new on the standby (or replacing a small one),
/// travel whole in one frame: no signature round trip.
const WHOLE_MAX: u64 = frame::MAX_CHUNK as u64;

/// Files up to this size travel whole even when the standby has a copy: a
/// delta would save little and cost round trips.
const ALWAYS_WHOLE: u64 = 256 * 1024;

/// A standby copy at least this large is worth a delta.
const DELTA_MIN_OLD: u64 = 2 * chunk::MIN_CHUNK as u64;

/// Literal bytes gathered into one `Pieces` frame before it is sent.
const BATCH_BYTES: usize = frame::MAX_CHUNK - chunk::MAX_CHUNK as usize;

/// Deletions per `SyncDelete` frame.
const DELETE_BATCH: usize = 512;

/// Small files go in batches of about this much data (the sender holds
/// about four batches at once: one read, one waiting, one encoded into its
/// frame). At 100,000 files the sender peaked at 63 MiB with 2 MiB, too
/// close to the 64 MiB budget, and at 58 MiB with 1 MiB, in the same time
/// within the noise (bench/sync.sh first-small, 3 runs each); 4 MiB went
/// over.
const FILES_BATCH_BYTES: usize = 1024 * 1024;
/// ...or this many files (each holds two descriptors open on the standby
/// until the batch is in place).
const FILES_BATCH_COUNT: usize = 128;

/// Requests sent before the oldest answer is read...
const MAX_IN_FLIGHT: usize = 32;
/// ...of which file batches (a few MiB each: enough to keep both sides
/// busy, little enough to bound memory).
const BATCHES_IN_FLIGHT: usize = 2;

/// How [`push_with`] runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushOptions {
    /// List what would change; send no change.
    pub dry_run: bool,
    /// Hash every file on both sides (no stat shortcut).
    pub verify: bool,
}

/// What a push did.
#[derive(Debug, Clone, Default)]
pub struct SyncSummary {
    /// Paths pushed (or compared).
    pub paths: usize,
    /// Files whose content was sent (created or changed).
    pub files_sent: u64,
    /// Literal file bytes sent (what the standby did not have).
    pub bytes_sent: u64,
    /// Frame bytes both ways during the push (after the link's handshake).
    pub bytes_on_wire: u64,
    /// Files on this side whose stat was read (all of them, unless a
    /// resident loop's journal said where to look).
    pub files_checked: u64,
    /// Regular files removed on the standby (into its trash).
    pub files_deleted: u64,
    /// Directories, symlinks and metadata-only updates.
    pub other_changes: u64,
    /// One line per conflict: the path and what the standby kept.
    pub conflicts: Vec<String>,
    /// With `dry_run`: one line per change that would be made.
    pub planned: Vec<String>,
    /// Paths left alone this run (busy, unreadable...).
    pub held: u64,
    /// Why a path or a file was not synced.
    pub errors: Vec<String>,
    /// Files the configuration kept back this run (larger than
    /// `max_file_size`, a SQLite database not snapshotted): also logged.
    pub warnings: Vec<String>,
    /// Paths refused whole for safety (an empty or unmounted source, a run
    /// that would delete too much): also in `errors`; the operator is
    /// alerted for each.
    pub refused: Vec<String>,
    pub elapsed: Duration,
}

impl SyncSummary {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// Log `line` (this summary, saying where it went) at the level it
    /// deserves: an error if anything failed, debug if nothing changed
    /// (a quiet run every minute), info otherwise.
    pub fn log(&self, log: &Logger, line: &str) {
        if !self.ok() {
            log.error(line);
        } else if self.files_sent + self.files_deleted + self.other_changes == 0 {
            log.debug(line);
        } else {
            log.info(line);
        }
    }

    /// What the state file keeps of this push (`-v` shows it).
    pub fn record(&self) -> crate::state::SyncRecord {
        crate::state::SyncRecord {
            at_ms: crate::state::now_ms(),
            ok: self.ok(),
            files: self.files_sent + self.files_deleted,
            bytes: self.bytes_sent,
            error: (!self.ok()).then(|| self.errors.join("; ")),
        }
    }
}

impl fmt::Display for SyncSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sync: {} files sent ({} bytes of data), {} deleted, {} other changes",
            self.files_sent, self.bytes_sent, self.files_deleted, self.other_changes
        )?;
        if !self.conflicts.is_empty() {
            write!(f, ", {} conflicts", self.conflicts.len())?;
        }
        if self.held > 0 {
            write!(f, ", {} held", self.held)?;
        }
        if !self.errors.is_empty() {
            write!(f, ", {} errors", self.errors.len())?;
        }
        write!(
            f,
            "; {} files checked; {} bytes on the wire; {:.3} s",
            self.files_checked,
            self.bytes_on_wire,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Push every configured path to the peer (see the [module docs](self)).
pub async fn push<C: Channel>(
    link: &mut C,
    cfg: &Config,
    state_dir: &Path,
    log: &Logger,
) -> Result<SyncSummary> {
    push_with(link, cfg, state_dir, log, PushOptions::default()).await
}

/// Why a path stopped.
enum Stop {
    /// This path only: say why and go on with the next.
    Path(anyhow::Error),
    /// The link is broken: stop the push.
    Link(anyhow::Error),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Stop {
        Stop::Path(e)
    }
}

/// Told how a push goes, for a progress bar on a terminal. `()` ignores it.
pub trait Progress: Sync {
    /// `files` more files, of `bytes` bytes in all, are to be sent.
    fn planned(&self, files: u64, bytes: u64);
    /// One of them, of `bytes` bytes, is in place on the other side.
    fn sent(&self, bytes: u64);
}

impl Progress for () {
    fn planned(&self, _: u64, _: u64) {}
    fn sent(&self, _: u64) {}
}

/// [`push`], with options.
pub async fn push_with<C: Channel>(
    link: &mut C,
    cfg: &Config,
    state_dir: &Path,
    log: &Logger,
    opts: PushOptions,
) -> Result<SyncSummary> {
    push_showing(link, cfg, state_dir, log, opts, &()).await
}

/// [`push_with`], telling `progress` as files go.
pub async fn push_showing<C: Channel>(
    link: &mut C,
    cfg: &Config,
    state_dir: &Path,
    log: &Logger,
    opts: PushOptions,
    progress: &dyn Progress,
) -> Result<SyncSummary> {
    push_inner(link, cfg, state_dir, log, opts, progress, None).await
}

/// How a resident loop's push uses its watch's [`Journal`].
#[derive(Debug, Clone, Copy)]
pub struct Journaled<'a> {
    pub journal: &'a Journal,
    /// Scan only the directories the journal names. `false` for the full
    /// check every `sync.interval`, which reads everything (and still
    /// starts the journal's record afresh).
    pub trust: bool,
}

/// [`push_with`] from a resident loop: each path's scan starts the
/// journal's record afresh, and reads only what it names (see
/// [`journal`](mod@super::journal)).
pub async fn push_journaled<C: Channel>(
    link: &mut C,
    cfg: &Config,
    state_dir: &Path,
    log: &Logger,
    opts: PushOptions,
    journaled: Journaled<'_>,
) -> Result<SyncSummary> {
    push_inner(link, cfg, state_dir, log, opts, &(), Some(journaled)).await
}

async fn push_inner<C: Channel>(
    link: &mut C,
    cfg: &Config,
    state_dir: &Path,
    log: &Logger,
    opts: PushOptions,
    progress: &dyn Progress,
    journaled: Option<Journaled<'_>>,
) -> Result<SyncSummary> {
    let started = Instant::now();
    let wire_before = link.wire_bytes();
    let mut sum = SyncSummary::default();
    for sp in &cfg.sync.paths {
        sum.paths += 1;
        let mut run = PathRun {
            link: &mut *link,
            cfg,
            sp,
            state_dir,
            log,
            opts,
            sum: &mut sum,
            failed: false,
            inflight: VecDeque::new(),
            unreported: VecDeque::new(),
            progress,
            piece_error: None,
            journaled,
        };
        match run.push().await {
            Ok(()) => {}
            Err(Stop::Path(e)) => {
                let msg = format!("{}: {e:#}", sp.path.display());
                log.error(&format!("sync of {msg}"));
                sum.errors.push(msg);
            }
            Err(Stop::Link(e)) => {
                return Err(e.context(format!("sync of {} stopped", sp.path.display())))
            }
        }
    }
    sum.bytes_on_wire = link.wire_bytes() - wire_before;
    sum.elapsed = started.elapsed();
    Ok(sum)
}

/// One path's push.
struct PathRun<'a, C: Channel> {
    link: &'a mut C,
    cfg: &'a Config,
    sp: &'a SyncPath,
    state_dir: &'a Path,
    log: &'a Logger,
    opts: PushOptions,
    sum: &'a mut SyncSummary,
    /// A file of this path failed: the base is not updated.
    failed: bool,
    /// Requests sent and not yet answered, oldest first.
    inflight: VecDeque<Awaiting>,
    progress: &'a dyn Progress,
    /// Why the standby refused the pieces of the file being sent.
    piece_error: Option<String>,
    /// Files sent in [`Request::Files`] batches whose outcome the standby
    /// has not reported yet, oldest first: path and data size.
    unreported: VecDeque<(String, u64)>,
    journaled: Option<Journaled<'a>>,
}

/// What the answer to an outstanding request settles.
enum Awaiting {
    /// One change, answered `Ok`: what to name in an error.
    One(String),
    /// A [`Request::Files`] batch (`flush`: [`Request::FilesFlush`]),
    /// answered with the outcome of files in `PathRun::unreported`: some
    /// (all, for a flush).
    Batch { flush: bool },
    /// `Pieces` of the file being sent, with this many literal bytes. The
    /// first refusal is kept in `piece_error` (the standby drops the file,
    /// so the pieces after it are refused too).
    Pieces(u64),
}

impl Awaiting {
    fn one(what: &str) -> Awaiting {
        Awaiting::One(what.to_string())
    }
}

/// A file to send, and how the standby is to keep it.
struct FileJob {
    file: PathBuf,
    rel: RelPath,
    meta: FileMeta,
    hash: [u8; 32],
    keep_old: Option<KeepOld>,
    scanned: Scanned,
    /// The scan took `hash` in the racy window: an unchanged stat does
    /// not vouch for it.
    racy: bool,
    /// The standby has a copy to send a delta against (by its manifest).
    standby_has: bool,
}

/// Makes the [`FileJob`]s of a path's changes.
#[derive(Clone, Copy)]
struct Jobs<'a> {
    sp: &'a SyncPath,
    state_dir: &'a Path,
    /// Conflicts: the standby keeps its version beside the new one.
    kept: &'a BTreeSet<RelPath>,
    at_ms: u64,
}

impl<'a> Jobs<'a> {
    fn keep_old(&self, c: &Change) -> Option<KeepOld> {
        self.kept
            .contains(c.path)
            .then_some(KeepOld { at_ms: self.at_ms })
    }

    /// The job of a change to a file's content.
    fn of(&self, c: &Change) -> FileJob {
        FileJob {
            file: super::sqlite::source_file(self.sp, self.state_dir, c.path),
            rel: c.path.clone(),
            meta: file_meta(c.local),
            hash: match c.local.kind {
                Kind::File { hash, .. } => hash,
                _ => [0; 32],
            },
            keep_old: self.keep_old(c),
            scanned: Scanned::of(c.local),
            racy: c.local.racy,
            standby_has: matches!(
                c.remote.map(|r| &r.kind),
                Some(Kind::File { size, .. }) if *size >= DELTA_MIN_OLD
            ),
        }
    }

    /// The jobs of the changes sent whole, made one at a time.
    fn whole<'c>(self, changes: &'c [Change<'c>]) -> WholeJobs<'a, 'c> {
        WholeJobs {
            jobs: self,
            changes: changes.iter(),
        }
    }
}

/// Iterator of [`Jobs::whole`] (a struct, not closures: the push future
/// must be `Send`, which closures over borrowed changes defeat).
struct WholeJobs<'a, 'c> {
    jobs: Jobs<'a>,
    changes: std::slice::Iter<'c, Change<'c>>,
}

impl Iterator for WholeJobs<'_, '_> {
    type Item = FileJob;
    fn next(&mut self) -> Option<FileJob> {
        let c = self.changes.find(|c| how_sent(c) == Sent::Whole)?;
        Some(self.jobs.of(c))
    }
}

/// How a change travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Its own request: a directory, a symlink, metadata only.
    Request,
    /// In a [`Request::Files`] batch.
    Whole,
    /// As a delta against the standby's copy.
    Delta,
}

fn how_sent(c: &Change) -> Sent {
    match c.local.kind {
        Kind::File { size, .. } if c.what != What::Metadata => {
            let old_size = match c.remote.map(|r| &r.kind) {
                Some(Kind::File { size, .. }) => *size,
                _ => 0,
            };
            if size <= ALWAYS_WHOLE || (size <= WHOLE_MAX && old_size < DELTA_MIN_OLD) {
                Sent::Whole
            } else {
                Sent::Delta
            }
        }
        _ => Sent::Request,
    }
}

/// The stat a file had when the scan hashed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scanned {
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Scanned {
    fn of(e: &Entry) -> Scanned {
        Scanned {
            ino: e.ino,
            size: match e.kind {
                Kind::File { size, .. } => size,
                _ => 0,
            },
            mtime: (e.mtime.secs, i64::from(e.mtime.nanos)),
            ctime: (e.ctime.secs, i64::from(e.ctime.nanos)),
        }
    }

    fn now(md: &std::fs::Metadata) -> Scanned {
        use std::os::unix::fs::MetadataExt;
        Scanned {
            ino: md.ino(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }
}

/// Small files read for one [`Request::Files`], and those that could not
/// be read (vanished, grown past the limit since the scan).
struct ReadBatch {
    files: Vec<WholeFile>,
    failed: Vec<(String, anyhow::Error)>,
}

impl<C: Channel> PathRun<'_, C> {
    /// Send `request`; the peer's answer, or `Stop::Path` with its refusal,
    /// or `Stop::Link` when the link broke.
    async fn ask(&mut self, request: &Request) -> Result<Response, Stop> {
        match self.link.request(request).await {
            Ok(Response::Error(e)) => Err(Stop::Path(anyhow!("the standby refused: {e}"))),
            Ok(r) => Ok(r),
            Err(e) => Err(Stop::Link(e)),
        }
    }

    /// [`ask`](Self::ask) for a request answered with `Ok`.
    async fn ask_ok(&mut self, request: &Request) -> Result<(), Stop> {
        match self.ask(request).await? {
            Response::Ok => Ok(()),
            other => Err(Stop::Path(unexpected(&other))),
        }
    }

    /// Record a failure of one item and go on; a broken link still stops.
    fn item(&mut self, what: &str, result: Result<(), Stop>) -> Result<(), Stop> {
        match result {
            Ok(()) => Ok(()),
            // Busy, not broken: held like a file that kept changing during
            // the scan, with a warning, and sent on a later run.
            Err(Stop::Path(e)) if e.downcast_ref::<ChangedWhileRead>().is_some() => {
                let msg = format!("{}: {what}: {e:#}", self.sp.path.display());
                self.log.warn(&format!("sync: {msg}"));
                self.sum.warnings.push(msg);
                self.sum.held += 1;
                self.failed = true; // the base must not say it was synced
                Ok(())
            }
            Err(Stop::Path(e)) => {
                let msg = format!("{}: {what}: {e:#}", self.sp.path.display());
                self.log.error(&format!("sync of {msg}"));
                self.sum.errors.push(msg);
                self.failed = true;
                Ok(())
            }
            Err(link) => Err(link),
        }
    }

    async fn push(&mut self) -> Result<(), Stop> {
        let root = self.sp.path.clone();
        let path_text = root
            .to_str()
            .ok_or_else(|| anyhow!("the path {} is not UTF-8", root.display()))?
            .to_string();
        let send_file = manifest_file(self.state_dir, "send", &root);
        let base_file = manifest_file(self.state_dir, "base", &root);

        // 1: the source.
        if let Err(e) = check_source(&self.sp.path) {
            self.sum
                .refused
                .push(format!("{}: {e:#}", self.sp.path.display()));
            return Err(Stop::Path(e));
        }
        // 2 (what our scan will read): in a resident loop, what its watch
        // saw change since the last scan began. Then the standby may trust
        // its manifest too, if it is from our last push's session.
        let relist = match self.journaled {
            Some(j) => match j.journal.take(&root, std::time::Instant::now()) {
                Relist::Only { dirs, paths } if j.trust && !self.opts.verify => Some((dirs, paths)),
                _ => None,
            },
            None => None,
        };
        let token = push_token();
        let trust = match (&relist, self.journaled) {
            (Some(_), Some(j)) => j.journal.last_session(&root),
            _ => None,
        };
        // 3 (asked first, so that the standby scans its copy while we scan
        // ours): its root hash.
        let root_request = Request::SyncRoot {
            path: path_text.clone(),
            verify: self.opts.verify,
            token,
            trust,
        };
        self.link.send(&root_request).await.map_err(Stop::Link)?;
        self.link.flush().await.map_err(Stop::Link)?;
        let (sp, verify, file) = (self.sp.clone(), self.opts.verify, send_file.clone());
        let dir = self.state_dir.to_path_buf();
        let scanned =
            tokio::task::spawn_blocking(move || scan_source(&sp, verify, relist, &file, &dir))
                .await
                .map_err(|e| anyhow!("the scan task failed: {e}"))
                .and_then(|r| r);
        if scanned.is_err() {
            // The manifest on disk is older than the record just taken.
            if let Some(j) = self.journaled {
                j.journal.forget(&root);
            }
        }
        let answer = self.link.recv().await.map_err(Stop::Link)?;
        let (local, warnings, checked) = scanned?;
        self.sum.files_checked += checked;
        for w in warnings {
            self.log.warn(&format!("sync: {w}"));
            self.sum.warnings.push(w);
        }
        let local_tree = tree(&local);
        let (remote_root, remote_files) = match answer {
            Response::SyncRoot { root: r, files } => {
                if let Some(j) = self.journaled {
                    j.journal.session_opened(&root, token);
                }
                (r, files)
            }
            Response::Error(e) => return Err(Stop::Path(anyhow!("the standby refused: {e}"))),
            other => return Err(Stop::Path(unexpected(&other))),
        };

        // 4: where they differ.
        let mut walk = TreeWalk::new(&local, &local_tree, remote_root);
        while !walk.is_done() {
            let listings = match self
                .ask(&Request::SyncListings {
                    path: path_text.clone(),
                    dirs: walk.wanted().to_vec(),
                })
                .await?
            {
                Response::SyncListings(l) => l,
                other => return Err(Stop::Path(unexpected(&other))),
            };
            walk.feed(listings)?;
        }
        let td = walk.finish();
        if td.is_empty() {
            // In step: ours is the new base. The scan saved it as the send
            // manifest, so comparing the two files says whether the base
            // must be written, without loading it (one manifest less in
            // memory: 100,000 entries are tens of MiB).
            if !self.opts.dry_run && !same_bytes(&send_file, &base_file) {
                keep_as_base(&local, &send_file, &base_file)?;
            }
            return Ok(());
        }
        // Only the base's entries for the differing paths are loaded.
        let coverage = td.coverage();
        let base_sel = match Manifest::load_where(&base_file, Some(&|p| coverage.covers(p))) {
            l if l.status == LoadStatus::Loaded => Some(l.manifest),
            _ => None,
        };
        let remote = self.fetch_selection(&td).await?;
        // Borrows its entries from the three manifests: no copies.
        let mut d = diff_selected(&local, &td, &remote, base_sel.as_ref());
        drop(td);

        // 5: conflicts: ours wins, the standby keeps its version.
        let kept: BTreeSet<RelPath> = d
            .conflicts
            .iter()
            .filter(|c| c.remote.is_some() && c.local.is_some())
            .map(|c| c.path.clone())
            .collect();
        let kept = &kept;
        for c in &d.conflicts {
            let line = match (&c.local, &c.remote) {
                (Some(_), Some(_)) => format!(
                    "{}/{}: changed on both servers; the standby keeps its version beside it \
                     as {}{}<node>-<time>",
                    root.display(),
                    c.path,
                    c.path,
                    super::receive::CONFLICT_MARKER
                ),
                (None, _) => format!(
                    "{}/{}: deleted here, changed on the standby; its version goes to its trash",
                    root.display(),
                    c.path
                ),
                (_, None) => format!(
                    "{}/{}: changed here, deleted on the standby; sent again",
                    root.display(),
                    c.path
                ),
            };
            self.log.warn(&format!("sync conflict: {line}"));
            self.sum.conflicts.push(line);
        }
        d.overwrite_conflicts();
        if !self.sp.delete {
            d.delete.clear();
        }
        self.sum.held += d.held.len() as u64;

        // 6: the guard.
        if let Err(e) = delete_guard(&d, remote_files, self.cfg.sync.max_delete_percent)
            .with_context(|| format!("{} on the standby", root.display()))
        {
            self.sum.refused.push(format!("{e:#}"));
            return Err(e.into());
        }

        if self.opts.dry_run {
            for r in &d.delete {
                self.sum
                    .planned
                    .push(format!("delete  {}/{}", root.display(), r.path));
            }
            for c in &d.changes {
                let what = match c.what {
                    What::Create => "create ",
                    What::Replace => "replace",
                    What::Content => "update ",
                    What::Metadata => "meta   ",
                };
                let size = match c.local.kind {
                    Kind::File { size, .. } => format!(" ({size} bytes)"),
                    _ => format!(" ({})", c.local.kind.name()),
                };
                self.sum
                    .planned
                    .push(format!("{what} {}/{}{size}", root.display(), c.path));
            }
            return Ok(());
        }

        // 7: apply (pipelined: see `queue`). Deletions first, children
        // before parents; then directories, symlinks and metadata; then
        // small files in batches; then the rest as deltas, one at a time.
        self.sum.files_deleted += d.files_deleted();
        let dels: Vec<RelPath> = d.delete.iter().map(|r| r.path.clone()).collect();
        for batch in dels.chunks(DELETE_BATCH) {
            let request = Request::SyncDelete {
                rels: batch.to_vec(),
            };
            self.queue(&request, Awaiting::one("deleting")).await?;
        }
        let jobs = Jobs {
            sp: self.sp,
            state_dir: self.state_dir,
            kept,
            at_ms: crate::state::now_ms(),
        };
        let (mut content_files, mut content_bytes) = (0u64, 0u64);
        let mut deltas = Vec::new();
        for c in &d.changes {
            let sent = how_sent(c);
            if let (Sent::Whole | Sent::Delta, Kind::File { size, .. }) = (sent, &c.local.kind) {
                content_files += 1;
                content_bytes += size;
                if sent == Sent::Delta {
                    deltas.push(jobs.of(c));
                }
                continue;
            }
            let meta = file_meta(c.local);
            let request = match &c.local.kind {
                Kind::Dir => Request::SyncDir {
                    rel: c.path.clone(),
                    meta,
                },
                Kind::Symlink { target } => Request::SyncSymlink {
                    rel: c.path.clone(),
                    target: target.clone(),
                    meta,
                    keep_old: jobs.keep_old(c),
                },
                Kind::File { hash, .. } => Request::SyncMeta {
                    rel: c.path.clone(),
                    meta,
                    hash: *hash,
                },
            };
            self.sum.other_changes += 1;
            self.queue(&request, Awaiting::one(&c.path.to_string()))
                .await?;
        }
        self.progress.planned(content_files, content_bytes);
        // Small files are made into jobs as the reader takes them: a first
        // copy has 100,000 of them.
        self.send_batches(jobs.whole(&d.changes)).await?;
        self.drain().await?;
        for job in deltas {
            let what = job.rel.to_string();
            let result = self.send_delta(job).await;
            self.item(&what, result)?;
        }

        // 8: done.
        match self.ask(&Request::SyncDone).await? {
            Response::SyncDone { warnings } => {
                for w in warnings {
                    self.log.warn(&format!("standby, {}: {w}", root.display()));
                }
            }
            other => return Err(Stop::Path(unexpected(&other))),
        }
        if !self.failed {
            keep_as_base(&local, &send_file, &base_file)?;
        }
        Ok(())
    }

    /// The standby's entries for the differing directories, page by page.
    async fn fetch_selection(&mut self, td: &super::TreeDiff) -> Result<Manifest, Stop> {
        let mut m = Manifest::new();
        let mut from = 0u64;
        loop {
            let answer = self
                .ask(&Request::SyncSelect {
                    dirs: td.dirs.iter().cloned().collect(),
                    paths: td.paths.iter().cloned().collect(),
                    subtrees: td.subtrees.iter().cloned().collect(),
                    from,
                })
                .await?;
            let Response::SyncEntries {
                entries,
                unsettled,
                more,
            } = answer
            else {
                return Err(Stop::Path(unexpected(&answer)));
            };
            from += entries.len() as u64;
            for (p, e) in entries {
                m.insert(p, e)
                    .context("the standby's manifest is not valid")?;
            }
            for u in unsettled {
                m.mark_unsettled(u);
            }
            if !more {
                return Ok(m);
            }
        }
    }

    /// Send `request` without waiting for its answer; first settle the
    /// oldest answers if too many are outstanding. Round trips overlap, so
    /// a thousand small changes do not cost a thousand round trips, while
    /// the answers (small) can never fill the pipe back to us.
    async fn queue(&mut self, request: &Request, awaiting: Awaiting) -> Result<(), Stop> {
        let batches = |q: &VecDeque<Awaiting>| {
            q.iter()
                .filter(|a| matches!(a, Awaiting::Batch { .. }))
                .count()
        };
        while self.inflight.len() >= MAX_IN_FLIGHT
            || (matches!(awaiting, Awaiting::Batch { .. })
                && batches(&self.inflight) >= BATCHES_IN_FLIGHT)
        {
            self.settle().await?;
        }
        self.link.send(request).await.map_err(Stop::Link)?;
        self.inflight.push_back(awaiting);
        Ok(())
    }

    /// Read the answer to the oldest outstanding request and account for it.
    async fn settle(&mut self) -> Result<(), Stop> {
        let Some(awaiting) = self.inflight.pop_front() else {
            return Ok(());
        };
        let answer = self.link.recv().await.map_err(Stop::Link)?;
        match (awaiting, answer) {
            (Awaiting::One(_), Response::Ok) => Ok(()),
            (Awaiting::Pieces(literal), Response::Ok) => {
                self.sum.bytes_sent += literal;
                Ok(())
            }
            (Awaiting::Pieces(_), Response::Error(e)) => {
                self.piece_error.get_or_insert(e);
                Ok(())
            }
            (Awaiting::One(what), Response::Error(e)) => {
                self.item(&what, Err(Stop::Path(anyhow!("the standby refused: {e}"))))
            }
            (Awaiting::Batch { flush }, Response::Files(results))
                if results.len() <= self.unreported.len()
                    && (!flush || results.len() == self.unreported.len()) =>
            {
                for result in results {
                    let Some((rel, len)) = self.unreported.pop_front() else {
                        break;
                    };
                    match result {
                        None => {
                            self.sum.files_sent += 1;
                            self.sum.bytes_sent += len;
                            self.progress.sent(len);
                        }
                        Some(e) => {
                            self.item(&rel, Err(Stop::Path(anyhow!("the standby refused: {e}"))))?
                        }
                    }
                }
                Ok(())
            }
            // Which files it concerns cannot be told, and the answers
            // still to come would be out of step with `unreported`: the
            // sync stops here (what is in place stays; the next run sends
            // the rest). Only a standby that cannot write at all (or a
            // malformed batch) answers so.
            (Awaiting::Batch { .. }, Response::Error(e)) => Err(Stop::Link(anyhow!(
                "the standby refused a batch of files: {e}"
            ))),
            // Out of step with the standby: nothing after this can be trusted.
            (_, other) => Err(Stop::Link(unexpected(&other))),
        }
    }

    /// Settle every outstanding request.
    async fn drain(&mut self) -> Result<(), Stop> {
        while !self.inflight.is_empty() {
            self.settle().await?;
        }
        Ok(())
    }

    /// Small files, whole, in [`Request::Files`] batches. A thread reads
    /// the next batch while the standby writes the last; the standby
    /// answers each batch with the outcome of the one before (it puts a
    /// batch in place while the next arrives), and `FilesFlush` with the
    /// last one's.
    async fn send_batches(&mut self, jobs: impl Iterator<Item = FileJob>) -> Result<(), Stop> {
        let mut jobs = jobs.peekable();
        if jobs.peek().is_none() {
            return Ok(());
        }
        // Jobs go to the reader a batch's worth ahead, not all at once.
        let (job_tx, job_rx) = tokio::sync::mpsc::channel::<FileJob>(FILES_BATCH_COUNT);
        let (tx, mut batches) = tokio::sync::mpsc::channel::<ReadBatch>(1);
        let reader = tokio::task::spawn_blocking(move || read_batches(job_rx, &tx));
        let mut job_tx = Some(job_tx);
        let mut result = Ok(());
        loop {
            let feed = job_tx.clone();
            let batch = tokio::select! {
                permit = async move { feed?.reserve_owned().await.ok() }, if job_tx.is_some() => {
                    match (permit, jobs.next()) {
                        (Some(permit), Some(job)) => drop(permit.send(job)),
                        // All handed over (closing the channel ends the
                        // reader's input), or the reader is gone.
                        _ => job_tx = None,
                    }
                    continue;
                }
                batch = batches.recv() => batch,
            };
            let Some(batch) = batch else { break };
            for (rel, e) in batch.failed {
                if let Err(stop) = self.item(&rel, Err(Stop::Path(e))) {
                    result = Err(stop);
                    break;
                }
            }
            if result.is_err() || batch.files.is_empty() {
                continue;
            }
            let this = batch
                .files
                .iter()
                .map(|f| (f.rel.to_string(), f.data.len() as u64));
            self.unreported.extend(this);
            let awaiting = Awaiting::Batch { flush: false };
            if let Err(stop) = self.queue(&Request::Files(batch.files), awaiting).await {
                result = Err(stop);
                break;
            }
        }
        // Stops the reader if it is still going.
        drop((batches, job_tx));
        let _ = reader.await;
        result?;
        self.queue(&Request::FilesFlush, Awaiting::Batch { flush: true })
            .await
    }

    /// A file as a delta against the standby's copy.
    async fn send_delta(&mut self, job: FileJob) -> Result<(), Stop> {
        let FileJob {
            file,
            rel,
            meta,
            hash: whole_hash,
            keep_old,
            scanned,
            racy,
            standby_has,
        } = job;
        // The scan's hash, if the file is as the scan saw it (checked when
        // it is opened; the standby checks the hash as well).
        let scan_hash = (!racy).then_some((scanned, whole_hash));
        let size = meta.size;
        // While the standby reads its copy for its signature, list ours:
        // the two passes overlap instead of following each other. Only
        // when it has a copy (a new file is sent plainly, unchunked).
        // The listing takes the scan's hash even when the scan called it
        // racy, as small files do (`read_batches`): a change since that
        // the stat does not show makes the standby's check refuse the
        // file (it goes again next run), never lets a wrong one in, and
        // hashing the file again would cost a pass over every changed big
        // file, which the scan has just read.
        let listing = standby_has.then(|| {
            let path = file.clone();
            let scan = (scanned, whole_hash);
            tokio::task::spawn_blocking(move || list_chunks(&path, Some(scan)))
        });
        let sig = match self
            .ask(&Request::FileBegin {
                rel,
                meta,
                size,
                whole_hash,
                keep_old,
            })
            .await?
        {
            Response::Signature(sig) => sig,
            other => return Err(Stop::Path(unexpected(&other))),
        };
        let listed = match listing {
            // Not listed (or it failed): chunked against the signature as
            // it is read, which reports any error itself.
            Some(task) if !sig.chunks.is_empty() => task.await.ok().and_then(Result::ok),
            _ => None,
        };
        let (tx, mut batches) = tokio::sync::mpsc::channel::<Vec<Piece>>(2);
        let chunker = tokio::task::spawn_blocking(move || match listed {
            Some(listed) => delta_batches_listed(&file, listed, &sig, tx),
            None => delta_batches(&file, &sig, scan_hash, tx),
        });
        // Pipelined: the standby writes one batch while the next crosses.
        let mut stopped = None;
        while let Some(batch) = batches.recv().await {
            let literal: u64 = batch
                .iter()
                .map(|p| match p {
                    Piece::Data(d) => d.len() as u64,
                    Piece::Have { .. } => 0,
                })
                .sum();
            let queued = self
                .queue(&Request::Pieces(batch), Awaiting::Pieces(literal))
                .await;
            if let Err(e) = queued {
                stopped = Some(e);
                break;
            }
            if self.piece_error.is_some() {
                break;
            }
        }
        // Stops the chunker if it is still going.
        drop(batches);
        let stats = chunker
            .await
            .map_err(|e| anyhow!("the chunking task failed: {e}"));
        if let Some(e) = stopped {
            return Err(e);
        }
        self.drain().await?;
        if let Some(e) = self.piece_error.take() {
            return Err(Stop::Path(anyhow!("the standby refused: {e}")));
        }
        let stats = stats??;
        self.ask_ok(&Request::FileCommit {
            hash: stats.file_hash,
        })
        .await?;
        self.sum.files_sent += 1;
        self.progress.sent(size);
        Ok(())
    }
}

/// Read `jobs` into batches of about [`FILES_BATCH_BYTES`] (at most
/// [`FILES_BATCH_COUNT`] files), handing each to `tx`; stops early if the
/// receiving end is gone.
fn read_batches(
    mut jobs: tokio::sync::mpsc::Receiver<FileJob>,
    tx: &tokio::sync::mpsc::Sender<ReadBatch>,
) {
    let mut batch = ReadBatch {
        files: Vec::new(),
        failed: Vec::new(),
    };
    let mut bytes = 0;
    while let Some(job) = jobs.blocking_recv() {
        match read_small(&job.file, WHOLE_MAX) {
            Ok((data, after)) => {
                bytes += data.len();
                // The scan's hash stands for these bytes if the stat is
                // the one it hashed (no change since, not even in the same
                // clock tick: that would have changed the ctime, or left
                // the hash racy and retaken). If it is wrong anyway, the
                // standby's check refuses the file; nothing wrong lands.
                let hash = if after == job.scanned && data.len() as u64 == job.scanned.size {
                    job.hash
                } else {
                    *blake3::hash(&data).as_bytes()
                };
                batch.files.push(WholeFile {
                    hash,
                    rel: job.rel,
                    meta: job.meta,
                    data,
                    keep_old: job.keep_old,
                });
            }
            Err(e) => batch.failed.push((job.rel.to_string(), e)),
        }
        if bytes >= FILES_BATCH_BYTES || batch.files.len() >= FILES_BATCH_COUNT {
            bytes = 0;
            let full = std::mem::replace(
                &mut batch,
                ReadBatch {
                    files: Vec::new(),
                    failed: Vec::new(),
                },
            );
            if tx.blocking_send(full).is_err() {
                return;
            }
        }
    }
    if !batch.files.is_empty() || !batch.failed.is_empty() {
        let _ = tx.blocking_send(batch);
    }
}

/// Check, scan and save the manifest of one source path; also the warnings
/// for the files its options keep back (too large, a database that could
/// not be snapshotted).
/// Scan `sp` (`relist`: only the listings of these directories and these
/// single paths changed since the saved manifest's scan began) and save
/// the result as its send manifest. Also the warnings to report, and how
/// many files' stat was read.
fn scan_source(
    sp: &SyncPath,
    verify: bool,
    relist: Option<(BTreeSet<RelPath>, BTreeSet<RelPath>)>,
    manifest_file: &Path,
    state_dir: &Path,
) -> Result<(Manifest, Vec<String>, u64)> {
    check_source(&sp.path)?;
    let excludes = excludes(sp)?;
    let previous = if verify {
        Manifest::new()
    } else {
        Manifest::load(manifest_file).manifest
    };
    let mut opts = ScanOptions::sender(sp, state_dir)?;
    // A manifest that did not load is empty: every directory is new to
    // it and read whole, so `relist` cannot skip anything wrongly.
    if let Some((dirs, paths)) = relist {
        opts.relist = Some(dirs);
        opts.refresh = paths;
    }
    let (local, report) = scan_owned(&sp.path, &excludes, previous, SystemTime::now(), &opts)?;
    let warnings = report
        .skipped
        .iter()
        .filter(|s| s.reason.is_warning())
        .map(|s| format!("{}/{}: {}", sp.path.display(), s.path, s.reason))
        .collect();
    if report.changed {
        save(&local, manifest_file)?;
    }
    Ok((local, warnings, report.files))
}

/// A push's token for [`Request::SyncRoot`]: random, so that no two pushes
/// (of any sender) share one.
fn push_token() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
    })
}

/// Whether two files hold the same bytes (false if either is unreadable).
fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(fa), Ok(fb)) = (std::fs::File::open(a), std::fs::File::open(b)) else {
        return false;
    };
    match (fa.metadata(), fb.metadata()) {
        // One file under two names (see `keep_as_base`).
        (Ok(ma), Ok(mb)) if (ma.dev(), ma.ino()) == (mb.dev(), mb.ino()) => return true,
        (Ok(ma), Ok(mb)) if ma.len() == mb.len() => {}
        _ => return false,
    }
    let (mut ra, mut rb) = (
        std::io::BufReader::with_capacity(1 << 16, fa),
        std::io::BufReader::with_capacity(1 << 16, fb),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = match ra.read(&mut ba) {
            Ok(n) => n,
            Err(_) => return false,
        };
        if n == 0 {
            return true;
        }
        if rb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// Make `local`, which the scan left saved as `send_file`, the base: a
/// second name for that file (a manifest file is only ever replaced by a
/// rename, never written in place, so the base keeps its content when the
/// next scan saves a new send manifest), which saves writing 10 MB again
/// for 100,000 files. Written out if the link cannot be made.
fn keep_as_base(local: &Manifest, send_file: &Path, base_file: &Path) -> Result<()> {
    let dir = base_file.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".base-link.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let linked = std::fs::hard_link(send_file, &tmp)
        .and_then(|()| std::fs::rename(&tmp, base_file))
        .and_then(|()| std::fs::File::open(dir)?.sync_all());
    if linked.is_ok() {
        return Ok(());
    }
    let _ = std::fs::remove_file(&tmp);
    save(local, base_file)
}

fn save(m: &Manifest, file: &Path) -> Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    m.save(file)
}

/// Run the chunker over `path` against `sig`, handing batches of pieces to
/// `tx` (about [`BATCH_BYTES`] of literal data each).
fn delta_batches(
    path: &Path,
    sig: &Signature,
    scan_hash: Option<(Scanned, [u8; 32])>,
    tx: tokio::sync::mpsc::Sender<Vec<Piece>>,
) -> Result<chunk::DeltaStats> {
    let file = open_nofollow(path)?;
    let before = stat_of(&file, path)?;
    // Unchanged since the scan hashed it: no second pass of blake3 over
    // the file (3.7 GB of recordings are 0.6 s of a core).
    let known = scan_hash.and_then(|(scanned, hash)| (scanned == before).then_some(hash));
    let mut out = PieceBatches::new(tx);
    let stats = chunk::delta_known(&file, sig, known, |piece| out.push(piece))
        .with_context(|| format!("cannot send {}", path.display()))?;
    out.finish()?;
    // Written to while it was read: what was sent may be half old, half
    // new. It is not committed (the standby drops it) and goes next run.
    if stat_of(&file, path)? != before {
        return Err(ChangedWhileRead.into());
    }
    Ok(stats)
}

/// A file's chunks, listed ahead of its delta, its whole hash and its stat
/// at the time.
struct Listed {
    stat: Scanned,
    chunks: Signature,
    hash: [u8; 32],
}

/// List the chunks of `path` ([`chunk::signature_and_hash`]), checking
/// that it did not change meanwhile. The scan's hash is taken as the whole
/// hash if the file is as the scan saw it (as in [`delta_batches`]).
fn list_chunks(path: &Path, scan_hash: Option<(Scanned, [u8; 32])>) -> Result<Listed> {
    let file = open_nofollow(path)?;
    let stat = stat_of(&file, path)?;
    let known = scan_hash.and_then(|(scanned, hash)| (scanned == stat).then_some(hash));
    let (chunks, hash) = chunk::signature_and_hash(&file, known)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if stat_of(&file, path)? != stat {
        return Err(ChangedWhileRead.into());
    }
    Ok(Listed { stat, chunks, hash })
}

/// [`delta_batches`] from the chunks listed beforehand: reads only those
/// the standby lacks (see [`chunk::delta_listed`]).
fn delta_batches_listed(
    path: &Path,
    listed: Listed,
    sig: &Signature,
    tx: tokio::sync::mpsc::Sender<Vec<Piece>>,
) -> Result<chunk::DeltaStats> {
    let file = open_nofollow(path)?;
    if stat_of(&file, path)? != listed.stat {
        return Err(ChangedWhileRead.into());
    }
    let mut out = PieceBatches::new(tx);
    let result = chunk::delta_listed(&file, &listed.chunks, listed.hash, sig, |piece| {
        out.push(piece)
    });
    // A chunk that no longer matches its listed hash is a change too.
    if stat_of(&file, path)? != listed.stat {
        return Err(ChangedWhileRead.into());
    }
    let stats = result.with_context(|| format!("cannot send {}", path.display()))?;
    out.finish()?;
    Ok(stats)
}

/// Pieces of a delta, handed to the sending task in batches of about
/// [`BATCH_BYTES`] (a `Have` counts 40 bytes).
struct PieceBatches {
    tx: tokio::sync::mpsc::Sender<Vec<Piece>>,
    batch: Vec<Piece>,
    bytes: usize,
}

impl PieceBatches {
    fn new(tx: tokio::sync::mpsc::Sender<Vec<Piece>>) -> PieceBatches {
        PieceBatches {
            tx,
            batch: Vec::new(),
            bytes: 0,
        }
    }

    fn push(&mut self, piece: Piece) -> Result<()> {
        self.bytes += match &piece {
            Piece::Data(d) => d.len(),
            Piece::Have { .. } => 40,
        };
        self.batch.push(piece);
        if self.bytes >= BATCH_BYTES {
            self.bytes = 0;
            self.send()?;
        }
        Ok(())
    }

    /// Send what is left.
    fn finish(mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.send()
    }

    fn send(&mut self) -> Result<()> {
        self.tx
            .blocking_send(std::mem::take(&mut self.batch))
            .map_err(|_| anyhow!("the transfer stopped"))
    }
}

/// A file was written to while it was read for sending: what was read may
/// mix two versions, so it is not sent (nor committed) this run.
#[derive(Debug, thiserror::Error)]
#[error("it changed while it was read: it is sent on a later run")]
struct ChangedWhileRead;

/// The stat of an open file, as [`Scanned`] compares it.
fn stat_of(file: &std::fs::File, path: &Path) -> Result<Scanned> {
    let md = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?;
    Ok(Scanned::now(&md))
}

fn open_nofollow(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// Read a file of at most `max` bytes, and its stat after the read. One
/// that grew past `max` since the scan, or was written to while it was
/// read, is refused for this run.
fn read_small(path: &Path, max: u64) -> Result<(Vec<u8>, Scanned)> {
    let file = open_nofollow(path)?;
    let before = stat_of(&file, path)?;
    let mut data = Vec::new();
    (&file)
        .take(max + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if data.len() as u64 > max {
        bail!(
            "{} grew past {max} bytes since it was scanned: next run",
            path.display()
        );
    }
    let after = stat_of(&file, path)?;
    // Written to while it was read: the bytes may mix two versions.
    if after != before {
        return Err(ChangedWhileRead.into());
    }
    Ok((data, after))
}

/// The metadata the standby gives a path.
fn file_meta(e: &Entry) -> FileMeta {
    FileMeta {
        mode: e.mode,
        user: e.user.as_deref().map(str::to_string),
        group: e.group.as_deref().map(str::to_string),
        uid: e.uid,
        gid: e.gid,
        mtime_ns: e
            .mtime
            .secs
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(e.mtime.nanos)),
        size: match e.kind {
            Kind::File { size, .. } => size,
            _ => 0,
        },
    }
}

fn unexpected(r: &Response) -> anyhow::Error {
    let shown = format!("{r:?}");
    let shown: String = shown.chars().take(200).collect();
    anyhow!("the standby answered with something unexpected: {shown}")
}
