//! One node's state machine: [`Memory`] plus the rules of [`Node::step`].

use crate::action::{Action, Event, EventKind, Hook};
use crate::observation::{Command, Observation, Report};
use crate::policy::{Failback, Policy, Role};
use serde::{Deserialize, Serialize};

/// Local service health after hysteresis (`fail_after` / `rise_after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not yet enough rounds to say. Neither takes nor releases the address.
    #[default]
    Unknown,
    Up,
    Down,
}

/// What a node tells its peer about its intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Stance {
    /// Cannot or will not serve: unhealthy, isolated, in maintenance, or just
    /// handed the address over. The safe default of a fresh or unreadable
    /// state.
    #[default]
    Yield,
    /// Healthy, reaches a witness, not in maintenance: could serve.
    Ready,
    /// Holds the address, or is about to take it.
    Active,
}

/// Everything a node remembers between rounds. The driver stores it in the
/// state file, so cron passes and a resident loop behave the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Memory {
    pub stance: Stance,
    /// Raised above every epoch seen at each takeover; decides split brain.
    pub epoch: u64,
    /// The highest epoch the peer has reported.
    pub peer_epoch: u64,
    /// Which node this node believes is active.
    pub active: Option<Role>,
    /// Set by `-d`, cleared by `--enable`.
    pub maintenance: bool,
    pub health: Health,
    pub ok_streak: u32,
    pub fail_streak: u32,
    /// Consecutive rounds in which no path to the peer answered.
    pub peer_misses: u32,
    /// Consecutive rounds in which no witness answered.
    pub witness_misses: u32,
    /// Since when (ms) the peer has been ready: the auto-failback hold-down.
    pub peer_ready_since_ms: Option<u64>,
    /// Both nodes held the address in the last round.
    pub split_brain: bool,
    /// A takeover was blocked by someone else answering for the address.
    pub conflict: bool,
    /// The peer's last report, kept for the status screen.
    pub last_peer: Option<Report>,
    /// The last change of who holds the address, with its reason.
    pub last_change: Option<Event>,
    /// When the local service was restarted (ms), within the window.
    pub restarts: Vec<u64>,
}

/// One node of the pair: its role, its thresholds and its memory.
#[derive(Debug, Clone)]
pub struct Node {
    role: Role,
    policy: Policy,
    memory: Memory,
}

impl Node {
    pub fn new(role: Role, policy: Policy, memory: Memory) -> Node {
        Node {
            role,
            policy,
            memory,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    pub fn into_memory(self) -> Memory {
        self.memory
    }

    /// The peer counts as dead: every path failed for `dead_after` rounds.
    pub fn peer_dead(&self) -> bool {
        self.memory.peer_misses >= self.policy.dead_after.max(1)
    }

    /// No witness answered for `fail_after` rounds.
    pub fn isolated(&self) -> bool {
        self.memory.witness_misses >= self.policy.fail_after.max(1)
    }

    /// What this node publishes for its peer, given whether it holds the
    /// address right now.
    pub fn report(&self, holds_address: bool) -> Report {
        Report {
            role: self.role,
            stance: self.memory.stance,
            holds_address,
            health: self.memory.health,
            maintenance: self.memory.maintenance,
            epoch: self.memory.epoch,
            active: self.memory.active,
        }
    }

    /// Run one round. Returns the actions to carry out, in order.
    pub fn step(&mut self, obs: &Observation) -> Vec<Action> {
        let mut out = Vec::new();
        self.track_health(obs, &mut out);
        self.track_peer(obs, &mut out);
        self.track_witness(obs, &mut out);

        let mut holds = obs.holds_address;
        if let Some(cmd) = obs.command {
            holds = self.command(cmd, obs, holds, &mut out);
        }
        if holds {
            self.step_active(obs, &mut out);
        } else {
            self.step_standby(obs, &mut out);
        }
        out
    }

    /// The driver found another host answering for the address while taking
    /// it, and did not take it.
    pub fn take_failed(&mut self, reason: &str, now_ms: u64) -> Vec<Action> {
        self.memory.stance = Stance::Ready;
        self.memory.active = None;
        let mut out = Vec::new();
        if !self.memory.conflict {
            self.memory.conflict = true;
            out.push(self.event(
                EventKind::AddressConflict,
                format!("did not take the service address: {reason}"),
                now_ms,
            ));
        }
        out
    }

    // ----- bookkeeping -------------------------------------------------

    fn track_health(&mut self, obs: &Observation, out: &mut Vec<Action>) {
        let m = &mut self.memory;
        match obs.local_ok {
            Some(true) => {
                m.ok_streak = m.ok_streak.saturating_add(1);
                m.fail_streak = 0;
            }
            Some(false) => {
                m.fail_streak = m.fail_streak.saturating_add(1);
                m.ok_streak = 0;
            }
            None => return,
        }
        let before = m.health;
        // Local recovery first: restart the service and give it another
        // `fail_after` rounds, while restarts are left in the window.
        let window = self.policy.restart_window_ms;
        m.restarts
            .retain(|t| obs.now_ms.saturating_sub(*t) < window);
        let failing_now = m.fail_streak >= self.policy.fail_after.max(1) && before != Health::Down;
        if failing_now && (m.restarts.len() as u32) < self.policy.max_restarts {
            m.restarts.push(obs.now_ms);
            m.fail_streak = 0;
            let reason = format!(
                "local service failed {} checks in a row: restarting it ({} of {} in the window) before any failover",
                self.policy.fail_after,
                m.restarts.len(),
                self.policy.max_restarts
            );
            out.push(Action::RestartService);
            out.push(self.event(EventKind::LocalRestart, reason, obs.now_ms));
            return;
        }
        if m.ok_streak >= self.policy.rise_after.max(1) {
            m.health = Health::Up;
        } else if m.fail_streak >= self.policy.fail_after.max(1) {
            m.health = Health::Down;
        }
        match (before, self.memory.health) {
            (Health::Up | Health::Unknown, Health::Down) => {
                let reason = format!(
                    "local service failed {} checks in a row",
                    self.memory.fail_streak
                );
                out.push(self.event(EventKind::ServiceDown, reason, obs.now_ms));
            }
            (Health::Down, Health::Up) => {
                let reason = "local service passes its checks again".to_string();
                out.push(self.event(EventKind::ServiceUp, reason, obs.now_ms));
            }
            _ => {}
        }
    }

    fn track_peer(&mut self, obs: &Observation, out: &mut Vec<Action>) {
        let was_dead = self.peer_dead();
        if obs.peer.reachable {
            self.memory.peer_misses = 0;
        } else {
            self.memory.peer_misses = self.memory.peer_misses.saturating_add(1);
        }
        if let Some(r) = &obs.peer.report {
            self.memory.peer_epoch = self.memory.peer_epoch.max(r.epoch);
            let ready = r.stance == Stance::Ready && !r.holds_address;
            if !ready {
                self.memory.peer_ready_since_ms = None;
            } else if self.memory.peer_ready_since_ms.is_none() {
                self.memory.peer_ready_since_ms = Some(obs.now_ms);
            }
            self.memory.last_peer = Some(r.clone());
        } else {
            self.memory.peer_ready_since_ms = None;
        }
        let peer = self.role.peer();
        match (was_dead, self.peer_dead()) {
            (false, true) => {
                let reason = format!(
                    "{peer} unreachable on every path for {} rounds",
                    self.memory.peer_misses
                );
                out.push(self.event(EventKind::PeerLost, reason, obs.now_ms));
            }
            (true, false) => {
                let reason = format!("{peer} answers again");
                out.push(self.event(EventKind::PeerBack, reason, obs.now_ms));
            }
            _ => {}
        }
    }

    fn track_witness(&mut self, obs: &Observation, out: &mut Vec<Action>) {
        let was = self.isolated();
        if obs.witness_ok {
            self.memory.witness_misses = 0;
        } else {
            self.memory.witness_misses = self.memory.witness_misses.saturating_add(1);
        }
        match (was, self.isolated()) {
            (false, true) => {
                let reason = "no witness answers: this node is isolated and will not take over";
                out.push(self.event(EventKind::Isolated, reason.into(), obs.now_ms));
            }
            (true, false) => {
                let reason = "a witness answers again".to_string();
                out.push(self.event(EventKind::WitnessBack, reason, obs.now_ms));
            }
            _ => {}
        }
    }

    /// Could serve right now: healthy, a witness answered this round, not in
    /// maintenance.
    fn eligible(&self, obs: &Observation) -> bool {
        self.memory.health == Health::Up && obs.witness_ok && !self.memory.maintenance
    }

    /// The peer says it could take the address now.
    fn peer_ready(obs: &Observation) -> bool {
        matches!(&obs.peer.report, Some(r) if r.stance == Stance::Ready && !r.holds_address)
    }

    /// The peer yields only because its health is not known yet.
    fn starting(r: &Report) -> bool {
        r.health == Health::Unknown && !r.maintenance && r.active != Some(r.role.peer())
    }

    fn event(&self, kind: EventKind, reason: String, at_ms: u64) -> Action {
        Action::Notify(Event {
            kind,
            reason,
            at_ms,
        })
    }

    /// Record a change of who holds the address, for the status screen.
    fn changed(&mut self, kind: EventKind, reason: String, at_ms: u64, out: &mut Vec<Action>) {
        let ev = Event {
            kind,
            reason,
            at_ms,
        };
        self.memory.last_change = Some(ev.clone());
        out.push(Action::Notify(ev));
    }

    /// Give the address up and step aside for the peer.
    fn release(&mut self, kind: EventKind, reason: String, now_ms: u64, out: &mut Vec<Action>) {
        out.push(Action::ReleaseAddress);
        self.memory.stance = Stance::Yield;
        self.memory.active = Some(self.role.peer());
        self.memory.peer_ready_since_ms = None;
        self.changed(kind, reason, now_ms, out);
        out.push(Action::RunHook(Hook::OnStandby));
    }

    // ----- operator commands ---------------------------------------------

    /// Apply an operator command. Returns whether this node still holds the
    /// address afterwards.
    fn command(
        &mut self,
        cmd: Command,
        obs: &Observation,
        holds: bool,
        out: &mut Vec<Action>,
    ) -> bool {
        let now = obs.now_ms;
        let peer = self.role.peer();
        match cmd {
            Command::Enable => {
                if self.memory.maintenance {
                    self.memory.maintenance = false;
                    let reason = "maintenance ended by the operator (--enable)".to_string();
                    out.push(self.event(EventKind::Enabled, reason, now));
                }
                holds
            }
            Command::Disable => {
                let newly = !self.memory.maintenance;
                self.memory.maintenance = true;
                if holds {
                    let reason = "disabled by the operator (-d)".to_string();
                    self.release(EventKind::Disabled, reason, now, out);
                } else {
                    self.memory.stance = Stance::Yield;
                    if newly {
                        let reason = "disabled by the operator (-d)".to_string();
                        out.push(self.event(EventKind::Disabled, reason, now));
                    }
                }
                out.push(Action::RunHook(Hook::OnDisable));
                false
            }
            Command::Failover { force } => {
                if !holds {
                    let reason =
                        "-f refused: this server is not active, nothing to hand over".to_string();
                    out.push(self.event(EventKind::Refused, reason, now));
                    return holds;
                }
                if !Self::peer_ready(obs) && !force {
                    let why = match &obs.peer.report {
                        None => format!("{peer} did not answer over SSH"),
                        Some(r) if r.maintenance => format!("{peer} is disabled (maintenance)"),
                        Some(r) => format!(
                            "{peer} is not ready (health {:?}, {:?})",
                            r.health, r.stance
                        ),
                    };
                    let reason = format!("-f refused: {why}; use --force to hand over anyway");
                    out.push(self.event(EventKind::Refused, reason, now));
                    return holds;
                }
                if obs.peer.report.is_some() {
                    out.push(Action::PushSync);
                }
                let reason =
                    format!("manual failover (-f): handing the service address to the {peer}");
                self.release(EventKind::ManualFailover, reason, now, out);
                false
            }
        }
    }

    // ----- the rules -------------------------------------------------------

    fn step_active(&mut self, obs: &Observation, out: &mut Vec<Action>) {
        let now = obs.now_ms;
        let peer = self.role.peer();
        self.memory.conflict = false;

        // Split brain: the peer says it holds the address too, or another
        // host answers for it.
        let peer_holds = obs.peer.report.as_ref().is_some_and(|r| r.holds_address);
        if peer_holds || obs.address_conflict {
            let keep = match &obs.peer.report {
                Some(r) if r.holds_address => {
                    self.memory.epoch > r.epoch
                        || (self.memory.epoch == r.epoch && self.role == Role::Master)
                }
                // Someone answers for the address but the peer does not say
                // it holds it: without epochs to compare, the master keeps it.
                _ => self.role == Role::Master,
            };
            let first = !self.memory.split_brain;
            self.memory.split_brain = true;
            if !keep {
                let reason = format!(
                    "split brain: both servers held the service address; the {peer} keeps it (epoch {} vs ours {})",
                    obs.peer.report.as_ref().map_or(0, |r| r.epoch),
                    self.memory.epoch
                );
                self.release(EventKind::SplitBrain, reason, now, out);
                return;
            }
            if first {
                let reason = format!(
                    "split brain: both servers held the service address; this {} keeps it (epoch {})",
                    self.role, self.memory.epoch
                );
                out.push(self.event(EventKind::SplitBrain, reason, now));
            }
        } else {
            self.memory.split_brain = false;
        }

        if self.memory.maintenance {
            let reason = "in maintenance (-d): releasing the service address".to_string();
            self.release(EventKind::Release, reason, now, out);
            return;
        }

        // Hand the address to a ready peer when this node cannot serve. An
        // unknown health (just restarted) is not a reason to move.
        let down = self.memory.health == Health::Down;
        if (down || self.isolated()) && Self::peer_ready(obs) {
            let why = if down {
                "local service is down"
            } else {
                "no witness answers from this server"
            };
            let reason = format!("{why}; the {peer} is ready and takes over");
            self.release(EventKind::Release, reason, now, out);
            return;
        }

        if self.policy.failback == Failback::Auto
            && self.role == Role::Slave
            && Self::peer_ready(obs)
            && self.memory.health != Health::Down
        {
            if let Some(since) = self.memory.peer_ready_since_ms {
                if now.saturating_sub(since) >= self.policy.failback_hold_down_ms {
                    out.push(Action::PushSync);
                    let reason = format!(
                        "automatic failback: the master has been ready for {} s",
                        now.saturating_sub(since) / 1000
                    );
                    self.release(EventKind::AutoFailback, reason, now, out);
                    return;
                }
            }
        }

        self.memory.stance = Stance::Active;
        self.memory.active = Some(self.role);
    }

    fn step_standby(&mut self, obs: &Observation, out: &mut Vec<Action>) {
        let now = obs.now_ms;
        let peer = self.role.peer();
        self.memory.split_brain = false;
        let previous = self.memory.stance;

        if !self.eligible(obs) {
            self.memory.stance = Stance::Yield;
            self.memory.conflict = false;
            return;
        }

        let why = if self.peer_dead() {
            Some(format!(
                "the {peer} is unreachable on every path for {} rounds",
                self.memory.peer_misses
            ))
        } else {
            match &obs.peer.report {
                // Reachable, but no report from its sip-ha (SSH path down or
                // not configured): not enough to act on.
                None => None,
                Some(r) if r.holds_address || r.stance == Stance::Active => None,
                // A peer that yields only because it has not yet seen its
                // own service healthy is starting up, not failed: it counts
                // as ready, so the master keeps its priority.
                Some(r) if r.stance == Stance::Yield && Self::starting(r) => {
                    (self.role == Role::Master).then(|| {
                        "neither server is active and the master is active by default".to_string()
                    })
                }
                Some(r) if r.stance == Stance::Yield => Some(if r.maintenance {
                    format!("the {peer} is disabled (maintenance)")
                } else if r.health == Health::Down {
                    format!("the {peer}'s service is down")
                } else if r.active == Some(self.role) {
                    format!("the {peer} handed the service address over")
                } else {
                    format!("the {peer} cannot serve")
                }),
                Some(_) if self.role == Role::Master => {
                    Some("neither server is active and the master is active by default".to_string())
                }
                Some(_) => None,
            }
        };

        // A node that yielded last round may not take in this one: the peer
        // must first see it ready. Someone answering for the address blocks.
        let may_take = matches!(previous, Stance::Ready | Stance::Active) && !obs.address_conflict;
        match why {
            Some(reason) if may_take => {
                self.memory.stance = Stance::Active;
                self.memory.active = Some(self.role);
                self.memory.epoch = self.memory.epoch.max(self.memory.peer_epoch) + 1;
                // `conflict` stays set until the address is really held, so
                // a take refused again and again is reported once.
                out.push(Action::TakeAddress);
                let reason = format!("taking over: {reason}");
                self.changed(EventKind::Takeover, reason, now, out);
                out.push(Action::RunHook(Hook::OnActive));
            }
            Some(reason) if obs.address_conflict => {
                self.memory.stance = Stance::Ready;
                if !self.memory.conflict {
                    self.memory.conflict = true;
                    let reason = format!(
                        "would take over ({reason}) but another host answers for the service address"
                    );
                    out.push(self.event(EventKind::AddressConflict, reason, now));
                }
            }
            _ => {
                self.memory.stance = Stance::Ready;
                self.memory.conflict = false;
                if self.memory.active == Some(self.role) {
                    self.memory.active = None;
                }
                if let Some(r) = &obs.peer.report {
                    if r.holds_address {
                        self.memory.active = Some(peer);
                    }
                }
            }
        }
    }
}
