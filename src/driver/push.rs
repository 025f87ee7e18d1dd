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
//!
//! In a resident loop the active node also watches the paths ([`watch`]):
//! a change starts a push at once, on the SSH session kept from the last
//! push. A change during a push, or within a backoff after a failed one,
//! waits and is pushed after it (every push compares whole trees, so one
//! later push covers any number of changes). An operator's `sip-ha sync`
//! handed to the loop is the next push, with its options.
//!
//! A push for changes scans only the directories the watch's journal
//! names ([`journal`](mod@crate::sync::journal)), and the standby, if its
//! manifest is from the last push's session, trusts it and reads again
//! only what the push compares. The push every `sync.interval` and an
//! operator's `sip-ha sync` read everything on both sides: they also find
//! what no watch sees (a write through mmap, a network file system written
//! from elsewhere, an edit by hand on the standby).

use super::requests::{SyncAsk, SyncReport};
use super::watch::{self, Due, News, Watch};
use crate::config::Config;
use crate::link::PeerLink;
use crate::log::Logger;
use crate::state::{now_ms, SyncRecord};
use crate::sync::journal::Journal;
use crate::sync::send::{push_journaled, push_with, Journaled, PushOptions, SyncSummary};
use sip_ha_core::{Event, EventKind, Role};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::{JoinError, JoinHandle};

/// How soon a watch that failed to start is tried again: each try walks
/// the trees.
const WATCH_RETRY: Duration = Duration::from_secs(30);

/// After a push failed (the standby unreachable, a path refused), pushes
/// for changes wait this long, or `sync.interval` if shorter: a burst of
/// edits must not become a burst of failed logins and alerts.
const FAILED_BACKOFF: Duration = Duration::from_secs(30);

/// Pushes of one node.
#[derive(Default)]
pub struct Pusher {
    task: Option<JoinHandle<Done>>,
    /// The operator's request the running push answers.
    running_ask: Option<u64>,
    last_start: Option<Instant>,
    /// The SSH session pushes run on, kept between them while active: a
    /// push after a change must not wait for a login.
    link: Option<PeerLink>,
    /// Whether this node was active at the last round.
    active: bool,
    /// A resident loop watches the paths while active; a cron pass not.
    watching: bool,
    watch: Option<Watch>,
    /// A watch being set up (it walks the trees: off the async thread).
    watch_starting: Option<JoinHandle<Result<Watch, watch::StartError>>>,
    /// A push for changes, waiting for the running one or for the backoff
    /// after a failure: why.
    deferred: Option<String>,
    /// When the last push that failed ended.
    last_failed: Option<Instant>,
    /// Why there is no watch for now.
    watch_hold: Option<Hold>,
    /// An operator's `sip-ha sync` waiting for its turn.
    asked: Option<(u64, SyncAsk)>,
    /// Operators' requests that will not run (this node stood down, or
    /// their push was stopped): the loop answers them.
    orphans: Vec<u64>,
}

/// Why the paths are not watched.
enum Hold {
    /// Starting the watch failed; try again then.
    Until(Instant),
    /// The inotify watches ran out: not until a reload or a stand-down.
    Off,
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

    fn of(result: &Result<SyncSummary, String>) -> Pushed {
        match result {
            Ok(sum) => Pushed {
                record: sum.record(),
                conflicts: sum.conflicts.clone(),
                refused: sum.refused.clone(),
            },
            Err(e) => Pushed::failed(e.clone()),
        }
    }
}

/// A push that ended, as the task hands it back.
struct Done {
    finished: Finished,
    link: Option<PeerLink>,
}

/// A push that ended, for the driver.
pub struct Finished {
    pub pushed: Pushed,
    /// Whether it goes into the state (a dry run does not).
    pub record: bool,
    /// The operator's request it answers, and the answer.
    pub answer: Option<(u64, SyncReport)>,
}

/// What woke the loop.
pub enum Wake {
    Finished(Finished),
    Watch(News),
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
pub fn limit(cfg: &Config) -> Duration {
    cfg.sync.interval.max(Duration::from_secs(10))
}

/// Why a push stopped without a summary.
enum Failure {
    /// The link broke (or never worked).
    Link(String),
    TimedOut(String),
}

impl Failure {
    fn message(self) -> String {
        match self {
            Failure::Link(m) | Failure::TimedOut(m) => m,
        }
    }
}

/// A push's use of the watch's journal: the journal, and whether to trust
/// it (`false`: the full check, which reads everything).
type UseJournal = Option<(Arc<Journal>, bool)>;

/// Push every path over `link`; log the summary.
async fn push(
    link: &mut PeerLink,
    cfg: &Config,
    log: &Logger,
    why: &str,
    opts: PushOptions,
    journal: &UseJournal,
) -> Result<SyncSummary, Failure> {
    let dir = cfg.cluster.state_dir.clone();
    let limit = limit(cfg);
    let pushing = async {
        match journal {
            Some((journal, trust)) => {
                let journaled = Journaled {
                    journal,
                    trust: *trust,
                };
                push_journaled(link, cfg, &dir, log, opts, journaled).await
            }
            None => push_with(link, cfg, &dir, log, opts).await,
        }
    };
    match tokio::time::timeout(limit, pushing).await {
        Ok(Ok(sum)) => {
            sum.log(log, &format!("sync {why}: {sum}"));
            Ok(sum)
        }
        Ok(Err(e)) => Err(Failure::Link(format!("{e:#}"))),
        Err(_) => Err(Failure::TimedOut(format!(
            "sync did not finish within {limit:?}; it resumes at the next interval"
        ))),
    }
}

async fn connect(cfg: &Config, host: IpAddr) -> Result<PeerLink, String> {
    let control_dir = cfg.cluster.state_dir.join("ssh");
    let connect = tokio::time::timeout(
        cfg.ssh.connect_timeout + Duration::from_secs(2),
        PeerLink::connect_kept(&cfg.ssh, host, &control_dir),
    );
    match connect.await {
        Ok(Ok(l)) => Ok(l),
        Ok(Err(e)) => Err(format!("no SSH session for the sync: {e:#}")),
        Err(_) => Err(format!("no SSH session to {host} for the sync in time")),
    }
}

/// Push on `kept` if there is one, else on a new session; the session to
/// keep (none after a failure).
async fn push_on(
    kept: Option<PeerLink>,
    host: IpAddr,
    cfg: &Config,
    log: &Logger,
    why: &str,
    opts: PushOptions,
    journal: UseJournal,
) -> (Result<SyncSummary, String>, Option<PeerLink>) {
    let reused = kept.is_some();
    let mut link = match kept {
        Some(l) => l,
        None => match connect(cfg, host).await {
            Ok(l) => l,
            Err(e) => return (Err(e), None),
        },
    };
    let result = match push(&mut link, cfg, log, why, opts, &journal).await {
        Ok(sum) => return (Ok(sum), Some(link)),
        // A kept session may have died while idle: once more, afresh.
        Err(Failure::Link(e)) if reused => {
            log.debug(&format!(
                "sync {why}: the kept SSH session failed ({e}); reconnecting"
            ));
            drop(link);
            match connect(cfg, host).await {
                Ok(mut l) => match push(&mut l, cfg, log, why, opts, &journal).await {
                    Ok(sum) => return (Ok(sum), Some(l)),
                    Err(f) => f.message(),
                },
                Err(e) => e,
            }
        }
        Err(f) => f.message(),
    };
    log.error(&format!("sync {why} failed: {result}"));
    (Err(result), None)
}

impl Pusher {
    /// A resident loop's: it also watches the paths while active.
    pub fn watch_while_active(&mut self) {
        self.watching = true;
    }

    /// The result of a finished push, if one finished.
    pub fn collect(&mut self) -> Option<Finished> {
        if !self.task.as_ref().is_some_and(|t| t.is_finished()) {
            return None;
        }
        let task = self.task.take()?;
        // A finished task: this does not wait.
        let joined = futures_util::FutureExt::now_or_never(task)?;
        Some(self.ended(joined))
    }

    /// Wait for a running push (a cron pass, before it exits).
    pub async fn finish(&mut self) -> Option<Finished> {
        let joined = self.task.take()?.await;
        Some(self.ended(joined))
    }

    fn ended(&mut self, joined: Result<Done, JoinError>) -> Finished {
        let asked = self.running_ask.take();
        match joined {
            Ok(done) => {
                self.link = done.link;
                self.failed_or_not(&done.finished);
                done.finished
            }
            Err(e) => {
                let msg = format!("the sync task failed: {e}");
                let finished = Finished {
                    answer: asked.map(|id| (id, SyncReport::new(&Err(msg.clone()), false))),
                    pushed: Pushed::failed(msg),
                    record: true,
                };
                self.failed_or_not(&finished);
                finished
            }
        }
    }

    fn failed_or_not(&mut self, f: &Finished) {
        self.last_failed = (!f.pushed.record.ok).then(Instant::now);
    }

    fn backing_off(&self, cfg: &Config) -> bool {
        let wait = cfg.sync.interval.min(FAILED_BACKOFF);
        self.last_failed.is_some_and(|t| t.elapsed() < wait)
    }

    /// Wait until a push ends or, with none running, the watch has news.
    /// Cancel-safe: a dropped wait loses nothing.
    pub async fn next(&mut self) -> Wake {
        if let Some(task) = self.task.as_mut() {
            let joined = task.await;
            self.task = None;
            return Wake::Finished(self.ended(joined));
        }
        match &self.watch {
            Some(w) => Wake::Watch(w.next().await),
            None => std::future::pending().await,
        }
    }

    /// While active (each round): watch the paths, and start a push if an
    /// operator asked for one or `sync.interval` has passed, unless one
    /// runs.
    pub fn maybe_start(&mut self, cfg: &Config, role: Role, log: &Logger) {
        self.active = true;
        if cfg.sync.paths.is_empty() {
            return;
        }
        self.ensure_watch(cfg, log);
        let due = self
            .last_start
            .is_none_or(|t| t.elapsed() >= cfg.sync.interval);
        if self.task.is_some() {
            return;
        }
        if due || self.asked.is_some() {
            self.start(cfg, role, log, "every sync.interval".into(), true);
        } else if self.deferred.is_some() && !self.backing_off(cfg) {
            let why = self.deferred.take().unwrap_or_default();
            self.start(cfg, role, log, why, false);
        }
    }

    /// After a push ended, outside a round: the next one, if due.
    pub fn resume(&mut self, cfg: &Config, role: Role, log: &Logger) {
        if self.active {
            self.maybe_start(cfg, role, log);
        }
    }

    /// Act on the watch's news (`next` gives it only with no push running).
    pub fn on_news(&mut self, news: News, cfg: &Config, role: Role, log: &Logger) {
        let why = match news {
            News::Push(Due::Changed { first, events }) => {
                format!("after {events} change(s) ({})", first.display())
            }
            News::Push(Due::Lapse(why)) => {
                log.warn(&format!(
                    "watching the sync paths: {why}; pushing everything"
                ));
                "after the watch lost events".into()
            }
            News::RootGone => {
                // Watched afresh at the next round, if it is back.
                self.watch = None;
                "after a sync path itself was removed or moved".into()
            }
            News::Limit => {
                log.warn(&watch::limit_message(&cfg.sync.paths));
                self.watch = None;
                self.watch_hold = Some(Hold::Off);
                return;
            }
        };
        if self.task.is_none() && !self.backing_off(cfg) {
            self.start(cfg, role, log, why, false);
        } else {
            // Started by a round once the backoff is over.
            self.deferred.get_or_insert(why);
        }
    }

    fn ensure_watch(&mut self, cfg: &Config, log: &Logger) {
        if !self.watching || self.watch.is_some() {
            return;
        }
        if let Some(starting) = self.watch_starting.as_mut() {
            let Some(joined) = futures_util::FutureExt::now_or_never(starting) else {
                return;
            };
            self.watch_starting = None;
            let started = joined.unwrap_or_else(|e| {
                Err(watch::StartError::Other(anyhow::anyhow!(
                    "the task setting up the watch failed: {e}"
                )))
            });
            self.watch_started(started, log);
            return;
        }
        match self.watch_hold {
            Some(Hold::Off) => return,
            Some(Hold::Until(t)) if Instant::now() < t => return,
            _ => {}
        }
        let paths = cfg.sync.paths.clone();
        self.watch_starting = Some(tokio::task::spawn_blocking(move || Watch::start(&paths)));
    }

    fn watch_started(&mut self, started: Result<Watch, watch::StartError>, log: &Logger) {
        match started {
            Ok(w) => {
                self.watch = Some(w);
                self.watch_hold = None;
                // For what changed while the watch was set up.
                self.deferred
                    .get_or_insert("once the watch was set up".into());
            }
            Err(watch::StartError::Limit(paths)) => {
                log.warn(&watch::limit_message(&paths));
                self.watch_hold = Some(Hold::Off);
            }
            Err(watch::StartError::Other(e)) => {
                // Said once, not at each retry (a path missing for a while).
                if !matches!(self.watch_hold, Some(Hold::Until(_))) {
                    log.warn(&format!(
                        "{e:#}; changes are pushed every sync.interval until the watch works \
                         (tried again every {WATCH_RETRY:?})"
                    ));
                }
                self.watch_hold = Some(Hold::Until(Instant::now() + WATCH_RETRY));
            }
        }
    }

    /// Start a push on the kept session: the operator's, if one waits.
    /// `full`: the check every `sync.interval` or the operator's, which
    /// reads every file's stat instead of what the journal names.
    fn start(&mut self, cfg: &Config, role: Role, log: &Logger, why: String, full: bool) {
        self.last_start = Some(Instant::now());
        // Every push compares whole trees: it covers what was deferred.
        self.deferred = None;
        let asked = self.asked.take();
        let (why, opts) = match asked {
            Some((_, a)) => ("asked by `sip-ha sync`".to_string(), a.options()),
            None => (why, PushOptions::default()),
        };
        self.running_ask = asked.map(|(id, _)| id);
        let (cfg, log) = (cfg.clone(), log.clone());
        let host = cfg.node(role.peer()).address;
        let kept = self.link.take();
        let journal = self.watch.as_ref().map(|w| (w.journal(), !full));
        self.task = Some(tokio::spawn(async move {
            let (result, link) = push_on(kept, host, &cfg, &log, &why, opts, journal).await;
            let mut pushed = Pushed::of(&result);
            if !opts.dry_run {
                // The local mirrors, also when the peer is down.
                let (conflicts, refused) = crate::sync::target::mirror(&cfg, &log).await;
                pushed.conflicts.extend(conflicts);
                pushed.refused.extend(refused);
            }
            Done {
                finished: Finished {
                    pushed,
                    record: !opts.dry_run,
                    answer: asked.map(|(id, a)| (id, SyncReport::new(&result, a.dry_run))),
                },
                link,
            }
        }));
    }

    /// An operator's `sip-ha sync`: runs as soon as no push does.
    pub fn ask(&mut self, id: u64, ask: SyncAsk) {
        if let Some((old, _)) = self.asked.replace((id, ask)) {
            self.orphans.push(old);
        }
    }

    /// Operators' requests that will not run.
    pub fn take_orphans(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.orphans)
    }

    /// Stop a running push (before a handover). Files already committed
    /// stay; a file half sent is removed by the receiver.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            // Its scan may go on, unwatched, and fail to save: the next
            // push reads everything.
            if let Some(w) = &self.watch {
                w.journal().lapse();
            }
            // Its session is in an unknown state: it goes with the task.
            self.orphans.extend(self.running_ask.take());
        }
    }

    /// This node is not active (any more): stop pushing and watching.
    pub fn stand_down(&mut self) {
        self.stop();
        self.active = false;
        self.reload();
        self.orphans.extend(self.asked.take().map(|(id, _)| id));
    }

    /// A new configuration: watch and connect afresh.
    pub fn reload(&mut self) {
        self.deferred = None;
        self.watch = None;
        // A watch being set up finishes on its own and is dropped.
        self.watch_starting = None;
        self.watch_hold = None;
        self.link = None;
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
        // Reads everything: the journal is the watch's and stays valid
        // (a full scan saves a manifest fresher than its record).
        match push(link, cfg, log, why, PushOptions::default(), &None).await {
            Ok(sum) => Ok(Pushed::of(&Ok(sum))),
            Err(f) => {
                let msg = f.message();
                log.error(&format!("sync {why} failed: {msg}"));
                Err(msg)
            }
        }
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
