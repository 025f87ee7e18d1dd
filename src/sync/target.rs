//! `[[sync.target]]`: local mirrors (a NAS or NFS mount) of every
//! `[[sync.path]]`, kept by the active node the same way it keeps the
//! standby: same scan, diff, conflict rules, delete guard, trash and
//! atomic writes, because it is the same code. The sender
//! ([`push_with`]) talks to a [`LocalChannel`] instead of the SSH link,
//! and the channel answers each request with the receiver `sip-ha serve`
//! runs ([`session::answer`]), writing `<target>/<path without its leading
//! />` (the [`SyncSetup::prefix`] of a receiver).
//!
//! ```text
//!  push_with ──► LocalChannel ──(spawn_blocking)──► session::answer ──► <target>/etc/asterisk/...
//!     │ send: encode, queue        recv: decode, answer, count the bytes
//!     ▼
//!  state_dir/targets/<hash of the target>/sync/{send,base,recv}-*.manifest, sqlite-*/
//! ```
//!
//! * Each target keeps its manifests (the sender's, the base of the last
//!   good mirror, the receiver's) and its SQLite snapshots in a state
//!   directory of its own, so they never mix with the peer's.
//! * A target must exist and be a directory, checked before each mirror
//!   and again whenever a path is opened. sip-ha never creates it: a NAS
//!   that is not mounted leaves an empty mount point on the root disk,
//!   and a mirror written there would fill it. Such a target is refused
//!   (and alerted like the peer's refusals); the paths below it are created
//!   as needed.
//! * Answers run on tokio's blocking threads: the loop's runtime has one
//!   thread, and its health rounds must not wait for a slow NFS write.
//! * Targets are mirrored by the active node only, after the push to the
//!   peer, and also when the peer is down: that is when the copy matters.

use super::channel::Channel;
use super::chunk;
use super::send::{push_with, PushOptions, SyncSummary};
use super::session::{self, Session, SyncSetup};
use crate::config::{Config, SyncTarget};
use crate::link::frame;
use crate::link::protocol::{Request, Response};
use crate::log::Logger;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The node name a target's conflict copies carry
/// (`NAME.sip-ha-conflict-target-TIME`).
pub const CONFLICT_NODE: &str = "target";

/// Refuse a target that is not an existing directory (an unmounted NAS).
pub fn check_target(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => bail!(
            "sync target {} is not a directory: check [[sync.target]] path",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "sync target {} does not exist: is the NAS mounted? sip-ha never creates a target \
             (a mirror written into an unmounted mount point would fill this server's disk); \
             create it on the mounted share",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot stat the sync target {}", path.display())),
    }
}

/// Where a target keeps its manifests and snapshots:
/// `state_dir/targets/<hash of the target's path>`.
pub fn state_dir_of(state_dir: &Path, target: &Path) -> PathBuf {
    let key = blake3::hash(target.as_os_str().as_encoded_bytes());
    state_dir
        .join("targets")
        .join(chunk::short_hex(key.as_bytes()))
}

/// A [`Channel`] whose receiver is in this process, writing to a target.
/// See the [module docs](self).
pub struct LocalChannel {
    target: PathBuf,
    setup: Arc<SyncSetup>,
    /// The open session; `None` while a request is being answered (it is
    /// then on a blocking thread) and before the first `SyncRoot`.
    session: Option<Session>,
    /// Answers not read yet, oldest first. Each request is answered as it
    /// is sent (pipelining gains nothing in one process), so no request
    /// data piles up here.
    answers: VecDeque<Response>,
    wire: u64,
}

impl LocalChannel {
    /// A channel to `target` for the paths of `cfg`, keeping the receiver's
    /// manifests under `target_state` (see [`state_dir_of`]).
    pub fn new(cfg: &Config, target: &SyncTarget, target_state: &Path) -> LocalChannel {
        LocalChannel {
            target: target.path.clone(),
            setup: Arc::new(SyncSetup {
                paths: cfg.sync.paths.clone(),
                state_dir: target_state.to_path_buf(),
                trash_days: cfg.sync.trash_days,
                node: CONFLICT_NODE.to_string(),
                prefix: Some(target.path.clone()),
            }),
            session: None,
            answers: VecDeque::new(),
            wire: 0,
        }
    }
}

impl Channel for LocalChannel {
    /// Answers `request` at once on a blocking thread (its file work, and
    /// even encoding it, must not hold up the async thread: the loop's
    /// health rounds run there).
    async fn send(&mut self, request: &Request) -> Result<()> {
        let request = request.clone();
        let mut session = self.session.take();
        let (setup, target) = (Arc::clone(&self.setup), self.target.clone());
        let (session, response, wire) = tokio::task::spawn_blocking(move || {
            // Counted as if it crossed a link, for the summary.
            let wire = frame::HEADER_LEN + frame::encode(&request).map_or(0, |b| b.len());
            let response = session::answer(
                &mut session,
                || {
                    check_target(&target)?;
                    Ok(SyncSetup::clone(&setup))
                },
                request,
            )
            .unwrap_or_else(|e| Response::Error(format!("{e:#}")));
            let answer_len = frame::encode(&response).map_or(0, |b| b.len());
            (session, response, wire + frame::HEADER_LEN + answer_len)
        })
        .await
        .map_err(|e| anyhow!("the mirror task for {} failed: {e}", self.target.display()))?;
        self.session = session;
        self.wire += wire as u64;
        self.answers.push_back(response);
        Ok(())
    }

    async fn recv(&mut self) -> Result<Response> {
        self.answers
            .pop_front()
            .ok_or_else(|| anyhow!("no request waits for an answer (a bug in the sender)"))
    }

    fn wire_bytes(&self) -> u64 {
        self.wire
    }
}

/// Mirror every `[[sync.path]]` to every `[[sync.target]]` of `cfg`, one
/// after the other; each target's summary. A target that is not there is
/// refused (in its summary's `refused` and `errors`) and left alone. `Err`
/// only when the mirror itself broke (a task failed).
pub async fn push_targets(
    cfg: &Config,
    state_dir: &Path,
    log: &Logger,
    opts: PushOptions,
) -> Vec<(PathBuf, Result<SyncSummary>)> {
    let mut out = Vec::new();
    for target in &cfg.sync.targets {
        let result = push_target(cfg, target, state_dir, log, opts).await;
        out.push((target.path.clone(), result));
    }
    out
}

async fn push_target(
    cfg: &Config,
    target: &SyncTarget,
    state_dir: &Path,
    log: &Logger,
    opts: PushOptions,
) -> Result<SyncSummary> {
    let path = target.path.clone();
    let checked = tokio::task::spawn_blocking(move || check_target(&path))
        .await
        .map_err(|e| anyhow!("the check of {} failed: {e}", target.path.display()))?;
    if let Err(e) = checked {
        let msg = format!("{e:#}");
        log.error(&format!("sync: {msg}"));
        return Ok(SyncSummary {
            refused: vec![msg.clone()],
            errors: vec![msg],
            ..SyncSummary::default()
        });
    }
    let own = state_dir_of(state_dir, &target.path);
    let mut channel = LocalChannel::new(cfg, target, &own);
    push_with(&mut channel, cfg, &own, log, opts)
        .await
        .with_context(|| format!("mirror to {}", target.path.display()))
}

/// The loop's periodic mirror (every `sync.interval`, beside the push to
/// the peer): each target given at most the interval (10 s at least), then
/// resumed at the next one from what was committed. Logs how each went;
/// returns the conflicts and the refusals to alert, as [`report`].
pub async fn mirror(cfg: &Config, log: &Logger) -> (Vec<String>, Vec<String>) {
    let why = "every sync.interval";
    let limit = cfg.sync.interval.max(std::time::Duration::from_secs(10));
    let state_dir = &cfg.cluster.state_dir;
    let mut results = Vec::new();
    for target in &cfg.sync.targets {
        let push = push_target(cfg, target, state_dir, log, PushOptions::default());
        let result = match tokio::time::timeout(limit, push).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!(
                "the mirror did not finish within {limit:?}; it resumes at the next interval"
            )),
        };
        results.push((target.path.clone(), result));
    }
    report(&results, log, why)
}

/// How the targets of one push went, for the loop: logs each target's
/// summary (`why` says which push), and returns the conflicts and the
/// refusals to alert, each naming its target.
pub fn report(
    results: &[(PathBuf, Result<SyncSummary>)],
    log: &Logger,
    why: &str,
) -> (Vec<String>, Vec<String>) {
    let (mut conflicts, mut refused) = (Vec::new(), Vec::new());
    for (target, result) in results {
        let t = target.display();
        match result {
            Ok(sum) => {
                sum.log(log, &format!("sync to target {t} {why}: {sum}"));
                conflicts.extend(sum.conflicts.iter().map(|c| format!("target {t}: {c}")));
                refused.extend(sum.refused.iter().map(|r| format!("target {t}: {r}")));
            }
            Err(e) => log.error(&format!("sync to target {t} {why} failed: {e:#}")),
        }
    }
    (conflicts, refused)
}

/// `sip-ha sync`'s lines for the targets: for each, what it would change
/// (dry run), its conflicts, warnings and errors, then one summary line.
/// The exit status they call for: 0 all mirrored, 1 one was refused or
/// failed.
pub fn print(results: &[(PathBuf, Result<SyncSummary>)], dry_run: bool) -> i32 {
    let mut code = 0;
    for (target, result) in results {
        let t = target.display();
        match result {
            Ok(sum) => {
                for line in &sum.planned {
                    println!("target {t}: {line}");
                }
                for line in &sum.conflicts {
                    println!("target {t}: conflict: {line}");
                }
                for line in &sum.warnings {
                    eprintln!("sip-ha: target {t}: warning: {line}");
                }
                for line in &sum.errors {
                    eprintln!("sip-ha: target {t}: {line}");
                }
                if dry_run {
                    println!(
                        "target {t}: dry run, nothing changed: {} changes to make; {sum}",
                        sum.planned.len()
                    );
                } else {
                    println!("target {t}: {sum}");
                }
                if !sum.ok() {
                    code = 1;
                }
            }
            Err(e) => {
                eprintln!("sip-ha: target {t}: {e:#}");
                println!("target {t}: failed");
                code = 1;
            }
        }
    }
    code
}
