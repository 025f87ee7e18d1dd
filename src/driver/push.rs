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
use sip_ha_core::{Event, EventKind, Role};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Pushes of one node.
#[derive(Default)]
pub struct Pusher {
    task: Option<JoinHandle<Pushed>>,
    last_start: Option<Instant>,
}

/// How a push went: the record `-v` shows, and what the operator must be
/// told of.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub record: SyncRecord,
    pub conflicts: Vec<String>,
    pub refused: Vec<String>,
}

impl Pushed {
    fn failed(error: String) -> Pushed {
        Pushed {
            record: failed(error),
            conflicts: Vec::new(),
            refused: Vec::new(),
        }
    }
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
) -> Result<Pushed, String> {
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
            Ok(Pushed {
                record: sum.record(),
                conflicts: sum.conflicts.clone(),
                refused: sum.refused.clone(),
            })
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
    pub fn collect(&mut self) -> Option<Pushed> {
        if !self.task.as_ref().is_some_and(|t| t.is_finished()) {
            return None;
        }
        let task = self.task.take()?;
        // A finished task: this does not wait.
        let joined = futures_util::FutureExt::now_or_never(task)?;
        Some(joined.unwrap_or_else(|e| Pushed::failed(format!("the sync task failed: {e}"))))
    }

    /// Wait for a running periodic push (a cron pass, before it exits).
    pub async fn finish(&mut self) -> Option<Pushed> {
        let task = self.task.take()?;
        Some(
            task.await
                .unwrap_or_else(|e| Pushed::failed(format!("the sync task failed: {e}"))),
        )
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
        let (cfg2, log2) = (cfg.clone(), log.clone());
        let peer = async move {
            let connect = tokio::time::timeout(
                cfg.ssh.connect_timeout + Duration::from_secs(2),
                PeerLink::connect(&cfg.ssh, host, &control_dir),
            );
            let mut link = match connect.await {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => return Pushed::failed(format!("no SSH session for the sync: {e:#}")),
                Err(_) => {
                    return Pushed::failed(format!("no SSH session to {host} for the sync in time"))
                }
            };
            let record = push(&mut link, &cfg, &log, "every sync.interval").await;
            link.close().await;
            record.unwrap_or_else(Pushed::failed)
        };
        self.task = Some(tokio::spawn(async move {
            let mut pushed = peer.await;
            // The local mirrors, also when the peer is down.
            let (conflicts, refused) = crate::sync::target::mirror(&cfg2, &log2).await;
            pushed.conflicts.extend(conflicts);
            pushed.refused.extend(refused);
            pushed
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
    ) -> Result<Pushed, String> {
        self.stop();
        self.last_start = Some(Instant::now());
        push(link, cfg, log, why).await
    }
}

/// A push that could not even start.
pub fn not_started(error: String) -> Pushed {
    Pushed::failed(error)
}

/// After this many failed syncs in a row the operator is alerted (and again
/// when sync works again).
pub const FAILURES_BEFORE_ALERT: u32 = 3;

/// The events a push's outcome raises, given the failures before it;
/// returns them and the new count of failures in a row.
pub fn events(p: &Pushed, failures_before: u32, peer: Role, now_ms: u64) -> (Vec<Event>, u32) {
    let mut out = Vec::new();
    let ev = |kind, reason: String| Event {
        kind,
        reason,
        at_ms: now_ms,
    };
    let failures = if p.record.ok {
        0
    } else {
        failures_before.saturating_add(1)
    };
    if failures == FAILURES_BEFORE_ALERT {
        let why = p.record.error.clone().unwrap_or_default();
        out.push(ev(
            EventKind::SyncFailing,
            format!("sync to the {peer} failed {failures} times in a row: {why}"),
        ));
    }
    if failures == 0 && failures_before >= FAILURES_BEFORE_ALERT {
        out.push(ev(
            EventKind::SyncRecovered,
            format!("sync to the {peer} works again after {failures_before} failures"),
        ));
    }
    if !p.conflicts.is_empty() {
        out.push(ev(
            EventKind::SyncConflict,
            format!(
                "changed on both servers since the last sync; this server's version won, the other was kept: {}",
                p.conflicts.join("; ")
            ),
        ));
    }
    for r in &p.refused {
        out.push(ev(
            EventKind::SyncRefused,
            format!("sync refused for safety: {r}"),
        ));
    }
    (out, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(ok: bool) -> Pushed {
        Pushed {
            record: SyncRecord {
                at_ms: 1,
                ok,
                files: 0,
                bytes: 0,
                error: (!ok).then(|| "no route to host".to_string()),
            },
            conflicts: Vec::new(),
            refused: Vec::new(),
        }
    }

    fn kinds(events: &[Event]) -> Vec<EventKind> {
        events.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn failing_is_alerted_once_at_the_threshold_and_recovery_after_it() {
        let mut failures = 0;
        let mut seen = Vec::new();
        for _ in 0..5 {
            let (ev, f) = events(&pushed(false), failures, Role::Slave, 0);
            failures = f;
            seen.extend(kinds(&ev));
        }
        assert_eq!(seen, vec![EventKind::SyncFailing]);
        assert_eq!(failures, 5);
        let (ev, f) = events(&pushed(true), failures, Role::Slave, 0);
        assert_eq!(kinds(&ev), vec![EventKind::SyncRecovered]);
        assert_eq!(f, 0);
        // A single failure and recovery raise nothing.
        let (ev, f) = events(&pushed(false), 0, Role::Slave, 0);
        assert!(ev.is_empty());
        let (ev, _) = events(&pushed(true), f, Role::Slave, 0);
        assert!(ev.is_empty());
    }

    #[test]
    fn conflicts_and_refusals_are_alerted() {
        let mut p = pushed(false);
        p.conflicts =
            vec!["/etc/asterisk/sip.conf (kept sip.conf.sip-ha-conflict-slave-...)".into()];
        p.refused = vec!["/var/spool/asterisk: would delete 80% of the standby's files".into()];
        let (ev, _) = events(&p, 0, Role::Slave, 0);
        assert_eq!(
            kinds(&ev),
            vec![EventKind::SyncConflict, EventKind::SyncRefused]
        );
        assert!(ev[1].reason.contains("80%"));
    }
}
