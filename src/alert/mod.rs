//! Alerts: the operator learns of a failover from sip-ha, not from a user.
//!
//! Every event the decision core reports (`Action::Notify`) goes out on
//! each configured channel:
//!
//! * **syslog**, at the `[alert] syslog_facility` (daemon by default), and
//!   the history log: done by [`crate::log::Logger::event`], as before;
//! * **SNMPv2c traps** to each `[[alert.snmp]]` receiver, at once and
//!   fire-and-forget ([`snmp`]);
//! * **mail** to `email_to`, through a digest window and a queue on disk.
//!
//! Mail is the channel that fails when things fail: during an outage the
//! mail server may be down too, and a flapping link produces an event a
//! second. So mail is never sent from where the event happens:
//!
//! 1. The event joins the digest window in `state_dir/alerts/pending.json`
//!    ([`digest`]: which events wait, which go at once, and the "still
//!    degraded" reminder). Those decisions are pure functions.
//! 2. A closed window becomes one [`Draft`] (subject and body: the events,
//!    the `-v` screen, the last good sync, the end of the history log), written
//!    to `state_dir/alerts/queue/` as a file before anything is sent
//!    ([`queue`]).
//! 3. The queue is sent in order, oldest first, stopping at the first
//!    failure, and a message is removed only once the server accepted it
//!    ([`email`] has the transports). Restarts lose nothing.
//!
//! In the resident loop the queue is sent beside the rounds (a background
//! task), never inside one: a mail server that takes `[alert] timeout` to
//! fail must not delay a failover. After a failure it is tried again after
//! 5 s, then 10 s, 20 s... up to 5 minutes, and at once when a new mail is
//! queued. A cron pass waits for its flush before it exits.
//!
//! [`Alerter`] ties it together for the driver; `sip-ha alert --test`
//! (`commands/alert.rs`) sends one test message on every channel directly.

pub mod digest;
pub mod email;
pub mod queue;
pub mod snmp;

pub use email::{Draft, Mailer};
pub use queue::{FlushReport, Queue};

use crate::config::Config;
use crate::log::Logger;
use crate::observe::Round;
use crate::state::{State, SyncRecord};
use crate::status::{Gathered, PeerLine, Status};
use digest::Book;
use sip_ha_core::{Event, Role};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::{JoinHandle, JoinSet};

/// How many lines of the history log a mail carries.
pub const HISTORY_LINES: usize = 10;
/// The digest window and reminder clock, under `state_dir/alerts/`.
const BOOK_FILE: &str = "pending.json";
/// After a failed flush, wait this long before the next try; doubled after
/// each failure in a row, up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// The alerts of one node: digest window, queue, traps.
pub struct Alerter {
    cfg: crate::config::Alert,
    cluster: String,
    role: Role,
    state_dir: PathBuf,
    log: Logger,
    /// `Ok(None)`: nobody to mail. `Err`: the mail settings cannot work
    /// (an unreadable `tls_ca`...): mail is queued and the reason logged.
    mailer: Result<Option<Arc<Mailer>>, String>,
    queue: Queue,
    book: Book,
    host: String,
    /// The screen and sync line of the latest round: fresher than the
    /// book's for a window closed by [`tick`](Self::tick).
    current: Option<(String, Option<String>)>,
    /// A flush running beside the rounds.
    background: Option<JoinHandle<FlushReport>>,
    traps: JoinSet<()>,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Alerter {
    /// The alerter of `role`, keeping its files under `state_dir/alerts/`.
    /// Problems (a corrupt pending.json, unusable mail settings) are logged,
    /// never fatal: alerting must not stop a failover.
    pub fn new(cfg: &Config, role: Role, state_dir: &Path, log: Logger) -> Alerter {
        let mut a = Alerter {
            cfg: cfg.alert.clone(),
            cluster: cfg.cluster.name.clone(),
            role,
            state_dir: state_dir.to_owned(),
            log,
            mailer: Ok(None),
            queue: Queue::new(state_dir),
            book: Book::default(),
            host: hostname(),
            current: None,
            background: None,
            traps: JoinSet::new(),
            failures: 0,
            retry_at: None,
        };
        a.mailer = a.make_mailer();
        a.book = a.load_book();
        a
    }

    /// Use new settings (SIGHUP). The window, reminder clock and queue stay.
    pub fn reload(&mut self, cfg: &Config) {
        self.cfg = cfg.alert.clone();
        self.cluster = cfg.cluster.name.clone();
        self.log.facility = cfg.alert.syslog_facility;
        self.mailer = self.make_mailer();
        self.failures = 0;
        self.retry_at = None;
    }

    fn make_mailer(&self) -> Result<Option<Arc<Mailer>>, String> {
        match Mailer::new(&self.cfg) {
            Ok(m) => Ok(m.map(Arc::new)),
            Err(e) => {
                let why = format!("{e:#}");
                self.log.error(&format!(
                    "alert mail cannot be sent: {why}; it stays queued"
                ));
                Err(why)
            }
        }
    }

    fn mails(&self) -> bool {
        !matches!(self.mailer, Ok(None))
    }

    /// The queue, for tests and `-v`.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// An event: traps now, mail through the digest window and the queue.
    /// `screen` is the `-v` screen after the round, `last_sync` the last good
    /// sync line.
    pub async fn event(&mut self, ev: &Event, screen: &str, last_sync: Option<&str>) {
        self.trap(ev);
        if !self.mails() {
            return;
        }
        self.book.screen = screen.to_owned();
        self.book.last_sync = last_sync.map(str::to_owned);
        self.current = Some((screen.to_owned(), last_sync.map(str::to_owned)));
        let now = ev.at_ms;
        if digest::note(&mut self.book, ev.clone(), now, self.cfg.digest_window) {
            self.close_window(now);
        }
        self.save_book();
    }

    /// Closes a digest window whose time has come (a cron pass, a loop
    /// round: whichever runs first after it).
    pub fn tick(&mut self, now_ms: u64) {
        if self.mails() && digest::due(&self.book, now_ms, self.cfg.digest_window) {
            self.close_window(now_ms);
            self.save_book();
        }
    }

    /// Tracks whether the cluster is normal and queues a "still degraded"
    /// mail every `[alert] reminder` while it is not.
    pub fn remind(&mut self, normal: bool, screen: &str, last_sync: Option<&str>, now_ms: u64) {
        if !self.mails() {
            return;
        }
        let before = (self.book.degraded_since_ms, self.book.last_reminder_ms);
        if let Some(since) = digest::remind(&mut self.book, normal, now_ms, self.cfg.reminder) {
            let history = crate::log::history_tail(&self.state_dir, HISTORY_LINES);
            let draft =
                email::reminder_mail(&self.context(screen, last_sync, &history), since, now_ms);
            self.enqueue(&draft, now_ms);
        }
        if before != (self.book.degraded_since_ms, self.book.last_reminder_ms) {
            self.save_book();
        }
    }

    /// Send what is queued, now, in order; waits for it (and for a flush
    /// already running beside the rounds).
    pub async fn flush(&mut self) -> FlushReport {
        if let Some(running) = self.background.take() {
            self.reap(running).await;
        }
        let report = match &self.mailer {
            Ok(Some(m)) => self.queue.flush(m).await,
            Ok(None) => FlushReport {
                left: self.queue.names().map_or(0, |n| n.len()),
                ..FlushReport::default()
            },
            Err(why) => FlushReport {
                left: self.queue.names().map_or(0, |n| n.len()),
                error: Some(why.clone()),
                ..FlushReport::default()
            },
        };
        self.after_flush(&report);
        report
    }

    /// What a round does with alerts, without waiting on the network:
    /// each event, the digest window, the reminder, then a flush started
    /// beside the next rounds if mail waits (and no retry delay holds it).
    pub async fn after_round(&mut self, events: &[Event], status: &Status, now_ms: u64) {
        let screen = status.render();
        let sync = sync_line(status.last_sync.as_ref());
        self.current = Some((screen.clone(), sync.clone()));
        for ev in events {
            self.event(ev, &screen, sync.as_deref()).await;
        }
        self.remind(status.exit_code == 0, &screen, sync.as_deref(), now_ms);
        self.tick(now_ms);
        self.poll().await;
    }

    /// Reap a finished background flush and start another if mail waits.
    /// Cheap when the queue is empty: one `readdir`.
    pub async fn poll(&mut self) {
        if let Some(running) = self.background.take() {
            if !running.is_finished() {
                self.background = Some(running);
                return;
            }
            self.reap(running).await;
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let Ok(Some(mailer)) = &self.mailer else {
            return;
        };
        match self.queue.names() {
            Ok(names) if names.is_empty() => {}
            Ok(_) => {
                let (queue, mailer) = (self.queue.clone(), Arc::clone(mailer));
                self.background = Some(tokio::spawn(async move { queue.flush(&mailer).await }));
            }
            // An unreadable queue directory: say so, then as seldom as a
            // failing mail server.
            Err(e) => self.after_flush(&FlushReport {
                error: Some(format!("{e:#}")),
                ..FlushReport::default()
            }),
        }
    }

    /// Wait (at most about `[alert] timeout`) for a running flush and for
    /// traps in flight: before a pass exits. What does not finish stays
    /// queued for the next pass.
    pub async fn settle(&mut self) {
        let limit = self.cfg.timeout + Duration::from_secs(1);
        let deadline = tokio::time::Instant::now() + limit;
        if let Some(running) = self.background.take() {
            match tokio::time::timeout_at(deadline, running).await {
                Ok(Ok(report)) => self.after_flush(&report),
                Ok(Err(e)) => self.log.error(&format!("alert mail flush failed: {e}")),
                Err(_) => self.log.warn(&format!(
                    "alert mail still sending after {}: it stays queued for the next pass",
                    humantime::format_duration(limit)
                )),
            }
        }
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, self.traps.join_next()).await {}
        self.traps.abort_all();
    }

    async fn reap(&mut self, running: JoinHandle<FlushReport>) {
        match running.await {
            Ok(report) => self.after_flush(&report),
            Err(e) => self.log.error(&format!("alert mail flush failed: {e}")),
        }
    }

    /// Log what a flush did and set the next try.
    fn after_flush(&mut self, r: &FlushReport) {
        if r.sent > 0 {
            self.log.info(&format!(
                "sent {} alert mail(s); {} still queued",
                r.sent, r.left
            ));
        }
        for aside in &r.set_aside {
            self.log
                .error(&format!("an alert mail could not be read back: {aside}"));
        }
        match &r.error {
            None => {
                self.failures = 0;
                self.retry_at = None;
            }
            Some(e) => {
                self.failures = self.failures.saturating_add(1);
                let wait = retry_delay(self.failures);
                self.retry_at = Some(Instant::now() + wait);
                self.log.warn(&format!(
                    "alert mail not sent, {} queued in {}: {e}; next try in {}",
                    r.left,
                    self.queue.dir().display(),
                    humantime::format_duration(wait)
                ));
            }
        }
    }

    /// Traps for `ev`, beside the round (a receiver's name may take a
    /// moment to resolve).
    fn trap(&mut self, ev: &Event) {
        for target in &self.cfg.snmp {
            let info = snmp::TrapInfo {
                cluster: self.cluster.clone(),
                node: self.role.to_string(),
                kind: ev.kind.to_string(),
                number: snmp::kind_number(ev.kind),
                reason: ev.reason.clone(),
            };
            let (target, log) = (target.clone(), self.log.clone());
            self.traps.spawn(async move {
                if let Err(e) = snmp::send(&target, &info, None).await {
                    log.warn(&format!(
                        "SNMP trap to {} failed: {e:#}",
                        snmp::describe(&target)
                    ));
                }
            });
        }
        // Reap those done, so the set does not grow.
        while self.traps.try_join_next().is_some() {}
    }

    fn context<'a>(
        &'a self,
        screen: &'a str,
        last_sync: Option<&'a str>,
        history: &'a [String],
    ) -> email::MailContext<'a> {
        email::MailContext {
            cluster: &self.cluster,
            node: self.role.as_str(),
            screen,
            last_sync,
            history,
            host: &self.host,
        }
    }

    fn close_window(&mut self, now_ms: u64) {
        let events = digest::close(&mut self.book, now_ms);
        if events.is_empty() {
            return;
        }
        let history = crate::log::history_tail(&self.state_dir, HISTORY_LINES);
        let (screen, sync) = match &self.current {
            Some((s, y)) => (s.as_str(), y.as_deref()),
            None => (self.book.screen.as_str(), self.book.last_sync.as_deref()),
        };
        let draft = email::event_mail(&self.context(screen, sync, &history), &events, now_ms);
        self.enqueue(&draft, now_ms);
    }

    fn enqueue(&mut self, draft: &Draft, now_ms: u64) {
        match self.queue.push(draft, now_ms) {
            Ok(pushed) => {
                for subject in pushed.dropped {
                    self.log.error(&format!(
                        "alert queue full ({} mails): dropped the oldest, \"{subject}\"",
                        queue::CAP
                    ));
                }
                // Something new to say: try at once, whatever the last
                // failure said (the server may be back).
                self.retry_at = None;
            }
            // The mail is lost; its subject at least reaches syslog.
            Err(e) => self.log.error(&format!(
                "cannot queue the alert mail \"{}\": {e:#}",
                draft.subject
            )),
        }
    }

    fn book_path(&self) -> PathBuf {
        self.state_dir.join("alerts").join(BOOK_FILE)
    }

    fn load_book(&self) -> Book {
        let path = self.book_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Book::default(),
            Err(e) => {
                self.log.error(&format!(
                    "cannot read {}: {e}; starting afresh",
                    path.display()
                ));
                return Book::default();
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(b) => b,
            Err(e) => {
                let aside = path.with_extension(format!("bad-{}", crate::state::now_ms()));
                let _ = std::fs::rename(&path, &aside);
                self.log.error(&format!(
                    "{} is corrupt ({e}); kept as {}; its waiting events are not mailed",
                    path.display(),
                    aside.display()
                ));
                Book::default()
            }
        }
    }

    fn save_book(&self) {
        let path = self.book_path();
        let result = std::fs::create_dir_all(self.state_dir.join("alerts"))
            .map_err(anyhow::Error::from)
            .and_then(|()| Ok(serde_json::to_vec_pretty(&self.book)?))
            .and_then(|json| crate::state::write_atomic(&path, &json));
        if let Err(e) = result {
            self.log.error(&format!(
                "cannot save the alert digest {}: {e:#}",
                path.display()
            ));
        }
    }
}

/// The wait before try number `failures + 1`.
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (RETRY_FIRST * 2u32.pow(doublings)).min(RETRY_MAX)
}

/// The last good sync, as a mail shows it.
pub fn sync_line(last: Option<&SyncRecord>) -> Option<String> {
    let s = last?;
    let when = crate::log::local_time(s.at_ms);
    Some(match &s.error {
        None if s.ok => format!("{when}, {} files, {} bytes", s.files, s.bytes),
        Some(e) => format!("none since the sync at {when} FAILED: {e}"),
        None => format!("none since the sync at {when} FAILED"),
    })
}

/// The `-v` screen's facts after a round, from what the round saw (no
/// probes of its own): for the mail body and for "is it normal?".
pub fn status_after(cfg: &Config, role: Role, state: &State, seen: &Round, holds: bool) -> Status {
    let peer = cfg.node(role.peer());
    let gathered = Gathered {
        holds_address: Some(holds),
        probes: Some(seen.probes.clone()),
        witness: Some(seen.witness.clone()),
        peer: Some(PeerLine {
            role: role.peer(),
            address: peer.address.to_string(),
            paths: seen.peer_paths.clone(),
            report: seen.peer_view.report.clone(),
        }),
        history: Vec::new(),
        notices: Vec::new(),
    };
    Status::build(cfg, role, state, gathered)
}

/// This server's hostname ("localhost" if it cannot be read).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_five_minutes() {
        let secs: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(retry_delay(u32::MAX).as_secs(), 300);
    }

    #[test]
    fn sync_lines() {
        assert_eq!(sync_line(None), None);
        let ok = SyncRecord {
            at_ms: 0,
            ok: true,
            files: 3,
            bytes: 10,
            error: None,
        };
        assert!(sync_line(Some(&ok))
            .unwrap()
            .ends_with(", 3 files, 10 bytes"));
        let bad = SyncRecord {
            ok: false,
            error: Some("peer gone".into()),
            ..ok
        };
        assert!(sync_line(Some(&bad)).unwrap().contains("FAILED: peer gone"));
    }
}
