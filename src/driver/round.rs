//! One round against the real world: observe, decide, act, remember.
//!
//! The order matters for safety. The state is saved *before* the address is
//! taken, so a peer that reads it in between already sees this node as
//! active and holds off; the duplicate-address probe runs right before the
//! address is added, so a host that answers for it blocks the takeover; and
//! after giving the address up this node wakes the peer, so it takes over at
//! once instead of at its next interval.

use crate::address;
use crate::alert::{self, Alerter};
use crate::config::Config;
use crate::log::Logger;
use crate::observe::{Observer, Round};
use crate::state::{self, State};
use anyhow::Result;
use sip_ha_core::{Action, Command, Event, Hook, Node, Observation, Role};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How long to listen for another host answering for the address before
/// taking it. Every millisecond here is outage; on a LAN a holder answers
/// an ARP probe within a millisecond or two, so 100 ms is ample.
const CONFLICT_WAIT: Duration = Duration::from_millis(100);

/// What a round saw and did.
#[derive(Debug)]
pub struct Outcome {
    pub observed: Round,
    pub actions: Vec<Action>,
    pub events: Vec<Event>,
    /// Whether this node holds the address after the round.
    pub holds: bool,
}

/// Runs rounds for one node. The caller holds the state lock.
pub struct Driver {
    cfg: Config,
    role: Role,
    state: State,
    observer: Observer,
    log: Logger,
    /// Hooks and announcements, which run beside the next rounds.
    tasks: JoinSet<()>,
    last_announce: Option<Instant>,
    /// The running gratuitous ARP / NA burst, stopped on release.
    announcing: Option<tokio::task::JoinHandle<()>>,
    /// Mail (digested, queued), SNMP traps.
    alerter: Alerter,
    /// Pushes of the sync paths to the peer (periodic ones run beside the
    /// rounds).
    pusher: super::push::Pusher,
    /// The status screen of the last round, for alerts raised after it.
    last_status: Option<crate::status::Status>,
}

impl Driver {
    /// A driver for a resident loop: the SSH link to the peer is kept and
    /// (re)connected in the background.
    pub fn new(cfg: Config, role: Role, state: State, log: Logger) -> Driver {
        let mut d = Driver::with_observer(Observer::new(&cfg, role), cfg, role, state, log);
        d.pusher.watch_while_active();
        d
    }

    /// A driver for one round (a cron pass, `-f`, `-d`): it waits for the
    /// SSH connection, since there is no next round to use it.
    pub fn one_shot(cfg: Config, role: Role, state: State, log: Logger) -> Driver {
        Driver::with_observer(Observer::new(&cfg, role).one_shot(), cfg, role, state, log)
    }

    fn with_observer(
        observer: Observer,
        cfg: Config,
        role: Role,
        state: State,
        log: Logger,
    ) -> Driver {
        let alerter = Alerter::new(&cfg, role, &cfg.cluster.state_dir, log.clone());
        Driver {
            alerter,
            cfg,
            role,
            state,
            observer,
            log,
            tasks: JoinSet::new(),
            last_announce: None,
            announcing: None,
            pusher: Default::default(),
            last_status: None,
        }
    }

    pub fn cfg(&self) -> &Config {
        &self.cfg
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn log(&self) -> &Logger {
        &self.log
    }

    /// Use a new configuration from the next round on (SIGHUP).
    pub fn reload(&mut self, cfg: Config) {
        self.observer = Observer::new(&cfg, self.role);
        self.alerter.reload(&cfg);
        self.pusher.reload();
        self.log.facility = cfg.alert.syslog_facility;
        self.cfg = cfg;
    }

    /// Run one round, with an operator command if one is pending.
    pub async fn round(&mut self, command: Option<Command>) -> Result<Outcome> {
        let observed = self.observer.round(&self.log).await;
        let obs = Observation {
            now_ms: state::now_ms(),
            local_ok: observed.local_ok(),
            witness_ok: observed.witness_ok,
            peer: observed.peer_view.clone(),
            holds_address: observed.holds_address,
            address_conflict: observed.address_conflict,
            command,
        };
        let mut node = Node::new(
            self.role,
            super::policy(&self.cfg),
            self.state.memory.clone(),
        );
        let mut pending: Vec<Action> = node.step(&obs);
        if !pending.is_empty() {
            self.log.debug(&format!("decided: {pending:?}"));
        }

        // Publish intent before taking: a peer reading our state now sees us
        // active and will not take the address too.
        if pending.contains(&Action::TakeAddress) {
            self.state.memory = node.memory().clone();
            state::save(&self.cfg.cluster.state_dir, &self.state)?;
        }

        let mut holds = obs.holds_address;
        let mut done = Vec::new();
        let mut events = Vec::new();
        let mut released = false;
        let mut i = 0;
        while i < pending.len() {
            let action = pending[i].clone();
            i += 1;
            match &action {
                Action::TakeAddress => {
                    if let Err(why) = self.take().await {
                        pending.extend(node.take_failed(&why, obs.now_ms));
                        // Not active after all: the hook for it must not run.
                        pending.retain(|a| *a != Action::RunHook(Hook::OnActive));
                    } else {
                        holds = true;
                    }
                }
                Action::ReleaseAddress => match self.release().await {
                    Ok(()) => {
                        holds = false;
                        released = true;
                    }
                    Err(e) => self.log.error(&format!("{e:#}")),
                },
                Action::PushSync => {
                    let pushed = self.push_before_handover().await;
                    if let Some(p) = pushed {
                        events.extend(self.record_push(&p));
                    }
                }
                Action::RunHook(hook) => self.spawn_hook(*hook),
                Action::RestartService => self.spawn_restart(),
                Action::Notify(ev) => {
                    self.log.event(ev);
                    events.push(ev.clone());
                }
            }
            done.push(action);
        }

        self.state.memory = node.into_memory();
        if let Some(f) = self.pusher.collect() {
            events.extend(self.push_finished(f));
        }
        if holds {
            self.pusher.maybe_start(&self.cfg, self.role, &self.log);
        } else {
            // Sync flows from the active node only.
            self.pusher.stand_down();
        }
        self.answer_orphans();
        state::save(&self.cfg.cluster.state_dir, &self.state)?;
        if released {
            // The peer reads our new stance (saved above) when it wakes.
            match self.observer.wake_peer().await {
                Ok(true) => self.log.info("woke the peer's loop to take over now"),
                Ok(false) => self
                    .log
                    .info("no loop runs on the peer: it takes over on its next pass"),
                Err(e) => self.log.warn(&format!("could not wake the peer: {e:#}")),
            }
        }
        // Alerts last (after the peer is woken: they write files), from the
        // saved state so the mail's screen is the new one; the mail itself
        // is sent beside the next rounds.
        let status = alert::status_after(&self.cfg, self.role, &self.state, &observed, holds);
        self.alerter
            .after_round(&events, &status, state::now_ms())
            .await;
        self.last_status = Some(status);
        Ok(Outcome {
            observed,
            actions: done,
            events,
            holds,
        })
    }

    /// Check nobody else answers for the address, add it, announce it.
    async fn take(&mut self) -> Result<(), String> {
        let me = self.cfg.node(self.role).clone();
        let net = self.cfg.cluster.service_address;
        match address::probe_conflict(&me.interface, net.addr(), CONFLICT_WAIT).await {
            Ok(Some(mac)) => {
                return Err(format!(
                    "MAC {mac} answers for {} on {}",
                    net.addr(),
                    me.interface
                ));
            }
            Ok(None) => {}
            // Cannot probe (no CAP_NET_RAW): the add would fail too, but say
            // why the probe did not run.
            Err(e) => self
                .log
                .warn(&format!("duplicate-address check failed: {e:#}")),
        }
        if let Err(e) = address::add(&me.interface, net).await {
            let msg = format!("could not add the service address: {e:#}");
            self.log.error(&msg);
            return Err(msg);
        }
        self.log.info(&format!("added {net} to {}", me.interface));
        self.spawn_announce();
        Ok(())
    }

    async fn release(&mut self) -> Result<()> {
        // Stop announcing first: a gratuitous ARP sent after the address is
        // gone would point the phones back here, and the peer's duplicate
        // probe would see it as a conflict and refuse to take over.
        if let Some(t) = self.announcing.take() {
            t.abort();
        }
        let me = self.cfg.node(self.role);
        let net = self.cfg.cluster.service_address;
        address::remove(&me.interface, net).await?;
        self.log
            .info(&format!("removed {net} from {}", me.interface));
        Ok(())
    }

    /// Push the sync paths to the peer before handing the address over, over
    /// the round's link, and wait for it: the peer must have this node's
    /// changes before it serves. Without a link, the handover goes on (the
    /// peer being ready is what `-f` checked) and the failure is recorded.
    async fn push_before_handover(&mut self) -> Option<super::push::Pushed> {
        if self.cfg.sync.paths.is_empty() {
            return None;
        }
        let why = "before handing over";
        let pushed = match self.observer.link() {
            Some(link) => match self.pusher.push_now(link, &self.cfg, &self.log, why).await {
                Ok(r) => r,
                Err(msg) => {
                    self.observer.link_failed(msg.clone());
                    super::push::not_started(msg)
                }
            },
            None => {
                let msg =
                    "no link to the peer: changes since the last sync were not pushed".to_string();
                self.log.error(&format!("sync {why}: {msg}"));
                super::push::not_started(msg)
            }
        };
        Some(pushed)
    }

    /// Wait for news of the pushes: one ended, or the watch saw a change.
    /// Cancel-safe.
    pub async fn sync_news(&mut self) -> super::push::Wake {
        self.pusher.next().await
    }

    /// Act on news of the pushes, beside the rounds: record and alert a
    /// finished push, answer the operator's, start the next.
    pub async fn on_sync_news(&mut self, wake: super::push::Wake) {
        match wake {
            super::push::Wake::Finished(f) => {
                self.after_push(f).await;
                self.pusher.resume(&self.cfg, self.role, &self.log);
            }
            super::push::Wake::Watch(news) => {
                self.pusher.on_news(news, &self.cfg, self.role, &self.log)
            }
        }
        self.answer_orphans();
    }

    /// An operator's `sip-ha sync` handed to the loop: pushed beside the
    /// rounds, answered when done; refused unless this node is active.
    pub fn ask_sync(&mut self, id: u64, ask: super::requests::SyncAsk, holds: bool) {
        if !holds {
            let why = super::requests::standby_refusal(&self.cfg, self.role);
            self.answer_sync(id, super::requests::SyncReport::refused(&why, 1));
            return;
        }
        self.pusher.ask(id, ask);
        self.pusher.maybe_start(&self.cfg, self.role, &self.log);
        self.answer_orphans();
    }

    fn answer_sync(&self, id: u64, report: super::requests::SyncReport) {
        let answer = super::requests::Answer {
            id,
            events: Vec::new(),
            holds_after: report.code != 1,
            error: None,
            sync: Some(report),
        };
        if let Err(e) = super::requests::answer(&self.cfg.cluster.state_dir, &answer) {
            self.log.error(&format!("{e:#}"));
        }
    }

    /// Operators' `sip-ha sync` that will not run now.
    fn answer_orphans(&mut self) {
        for id in self.pusher.take_orphans() {
            let why = "the push was stopped: this server is handing over or no longer active";
            self.answer_sync(id, super::requests::SyncReport::refused(why, 1));
        }
    }

    /// A push ended: its events (recorded unless a dry run), and the
    /// operator's answer if it was theirs.
    fn push_finished(&mut self, f: super::push::Finished) -> Vec<Event> {
        if let Some((id, report)) = f.answer {
            self.answer_sync(id, report);
        }
        if f.record {
            self.record_push(&f.pushed)
        } else {
            Vec::new()
        }
    }

    /// [`push_finished`](Self::push_finished) outside a round: save the
    /// state and alert here.
    async fn after_push(&mut self, f: super::push::Finished) {
        let recorded = f.record;
        let events = self.push_finished(f);
        if recorded {
            if let Err(e) = state::save(&self.cfg.cluster.state_dir, &self.state) {
                self.log.error(&format!("{e:#}"));
            }
        }
        if let (false, Some(status)) = (events.is_empty(), self.last_status.clone()) {
            self.alerter
                .after_round(&events, &status, state::now_ms())
                .await;
        }
    }

    /// Remember how a push went (`-v` shows it) and return the events it
    /// raises (sync failing or back, conflicts, refusals), logged here.
    fn record_push(&mut self, p: &super::push::Pushed) -> Vec<Event> {
        self.state.last_sync = Some(p.record.clone());
        let (events, failures) = super::push::events(
            p,
            self.state.sync_failures,
            self.role.peer(),
            state::now_ms(),
        );
        self.state.sync_failures = failures;
        for ev in &events {
            self.log.event(ev);
        }
        events
    }

    /// Gratuitous ARP / unsolicited NA, beside the next rounds.
    fn spawn_announce(&mut self) {
        let iface = self.cfg.node(self.role).interface.clone();
        let addr = self.cfg.cluster.service_address.addr();
        let (count, gap) = (self.cfg.cluster.garp_count, self.cfg.cluster.garp_interval);
        let log = self.log.clone();
        self.last_announce = Some(Instant::now());
        if let Some(t) = self.announcing.take() {
            t.abort();
        }
        self.announcing = Some(tokio::spawn(async move {
            if let Err(e) = address::announce(&iface, addr, count, gap).await {
                log.error(&format!("announcing {addr} on {iface} failed: {e:#}"));
            }
        }));
    }

    /// While active, announce again every `garp_refresh` (if set).
    pub fn refresh_announce(&mut self, holds: bool) {
        let Some(every) = self.cfg.cluster.garp_refresh else {
            return;
        };
        if holds && self.last_announce.is_none_or(|t| t.elapsed() >= every) {
            self.spawn_announce();
        }
    }

    fn spawn_hook(&mut self, hook: Hook) {
        if super::hooks::command(&self.cfg, hook).is_none() {
            return;
        }
        let (cfg, role, log) = (self.cfg.clone(), self.role, self.log.clone());
        self.tasks.spawn(async move {
            super::hooks::run(&cfg, role, hook, &log).await;
        });
    }

    /// Run `[health] restart_command` beside the next rounds; the probes
    /// tell whether it helped.
    fn spawn_restart(&mut self) {
        let Some(cmd) = self.cfg.health.restart_command.clone() else {
            return;
        };
        let (timeout, log) = (self.cfg.hooks.timeout, self.log.clone());
        self.tasks.spawn(async move {
            let run = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&cmd)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status();
            match tokio::time::timeout(timeout, run).await {
                Ok(Ok(s)) if s.success() => log.info(&format!("restart command `{cmd}` done")),
                Ok(Ok(s)) => log.error(&format!("restart command `{cmd}` failed with {s}")),
                Ok(Err(e)) => log.error(&format!("restart command `{cmd}` could not start: {e}")),
                Err(_) => log.error(&format!(
                    "restart command `{cmd}` did not finish within {timeout:?}"
                )),
            }
        });
    }

    /// Reap finished background tasks (the loop calls this each round).
    pub fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
    }

    /// Wait for hooks and announcements to finish (before a pass exits).
    pub async fn settle(&mut self) {
        while self.tasks.join_next().await.is_some() {}
        if let Some(t) = self.announcing.take() {
            let _ = t.await;
        }
        // A cron pass ends here: let its sync finish and record it.
        if let Some(f) = self.pusher.finish().await {
            self.after_push(f).await;
        }
        self.answer_orphans();
        self.alerter.settle().await;
    }
}
