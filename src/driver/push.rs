//! The active node's pushes of the `[sync]` paths to the standby.
//!
//! A periodic push (every `sync.interval`) can take long (a first copy of a
//! voicemail tree), and a round must never wait for it: the health checks,
//! and the release of the address if the service dies, cannot be held up by
//! a file copy. So it runs as a task of its own on an SSH session of its
//! own, and a later round collects its result. The push before a handover
//! (`-f`, automatic failback) is different: the handover must wait for it,
//! so it runs in the round, on the round's link, after any periodic push
//! has been stopped (the receiver refuses a second sender anyway once it
//! holds the address).

use crate::config::Config;
use crate::link::PeerLink;
use crate::log::Logger;
use crate::state::{now_ms, SyncRecord};
use sip_ha_core::Role;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Pushes of one node.
#[derive(Default)]
pub struct Pusher {
    task: Option<JoinHandle<SyncRecord>>,
    last_start: Option<Instant>,
}

fn failed(error: String) -> SyncRecord {
    SyncRecord {
        at_ms: now_ms(),
        ok: false,
        files: 0,
        bytes: 0,
        error: Some(error),
    }
}

/// How long one push may take before it is given up (and resumed, from
/// where the files already committed leave it, at the next interval).
fn limit(cfg: &Config) -> Duration {
    cfg.sync.interval.max(Duration::from_secs(10))
}

/// Push every path over `link` and log how it went.
async fn push(
    link: &mut PeerLink,
    cfg: &Config,
    log: &Logger,
    why: &str,
) -> Result<SyncRecord, String> {
    let dir = cfg.cluster.state_dir.clone();
    let limit = limit(cfg);
    match tokio::time::timeout(limit, crate::sync::send::push(link, cfg, &dir, log)).await {
        Ok(Ok(sum)) => {
            let line = format!("sync {why}: {sum}");
            if !sum.ok() {
                log.error(&line);
            } else if sum.files_sent + sum.files_deleted + sum.other_changes == 0 {
                log.debug(&line);
            } else {
                log.info(&line);
            }
            Ok(sum.record())
        }
        Ok(Err(e)) => {
            let msg = format!("{e:#}");
            log.error(&format!("sync {why} failed: {msg}"));
            Err(msg)
        }
        Err(_) => {
            let msg =
                format!("sync did not finish within {limit:?}; it resumes at the next interval");
            log.error(&format!("sync {why}: {msg}"));
            Err(msg)
        }
    }
}

impl Pusher {
    /// The result of a finished periodic push, if one finished.
    pub fn collect(&mut self) -> Option<SyncRecord> {
        if !self.task.as_ref().is_some_and(|t| t.is_finished()) {
            return None;
        }
        let task = self.task.take()?;
        // A finished task: this does not wait.
        let joined = futures_util::FutureExt::now_or_never(task)?;
        Some(joined.unwrap_or_else(|e| failed(format!("the sync task failed: {e}"))))
    }

    /// Start a periodic push if one is due and none is running.
    pub fn maybe_start(&mut self, cfg: &Config, role: Role, log: &Logger) {
        let due = self
            .last_start
            .is_none_or(|t| t.elapsed() >= cfg.sync.interval);
        if cfg.sync.paths.is_empty() || self.task.is_some() || !due {
            return;
        }
        self.last_start = Some(Instant::now());
        let (cfg, log) = (cfg.clone(), log.clone());
        let host = cfg.node(role.peer()).address;
        let control_dir = cfg.cluster.state_dir.join("ssh");
        self.task = Some(tokio::spawn(async move {
            let connect = tokio::time::timeout(
                cfg.ssh.connect_timeout + Duration::from_secs(2),
                PeerLink::connect(&cfg.ssh, host, &control_dir),
            );
            let mut link = match connect.await {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => return failed(format!("no SSH session for the sync: {e:#}")),
                Err(_) => return failed(format!("no SSH session to {host} for the sync in time")),
            };
            let record = push(&mut link, &cfg, &log, "every sync.interval").await;
            link.close().await;
            record.unwrap_or_else(failed)
        }));
    }

    /// Stop a running periodic push (before a handover, or when this node
    /// is no longer active). Files already committed stay; a file half sent
    /// is removed by the receiver.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Push now over the round's link, waiting for it (before a handover).
    /// `Err` carries the message when the link itself failed.
    pub async fn push_now(
        &mut self,
        link: &mut PeerLink,
        cfg: &Config,
        log: &Logger,
        why: &str,
    ) -> Result<SyncRecord, String> {
        self.stop();
        self.last_start = Some(Instant::now());
        push(link, cfg, log, why).await
    }
}

/// A record for a push that could not even start.
pub fn not_started(error: String) -> SyncRecord {
    failed(error)
}
