//! A simulated pair of servers for the decision core's tests.
//!
//! Rounds are synchronous: in each, both nodes observe the world as it was at
//! the end of the previous round (the peer's report is one round old, as it
//! is over SSH), decide, and then their actions are applied. Two nodes taking
//! in the same round both succeed unless the address was already held, so the
//! rules themselves, not a lucky ordering, must keep them apart.
#![allow(dead_code)]

use sip_ha_core::{Action, Command, Memory, Node, Observation, PeerView, Policy, Report, Role};

/// The world one node lives in.
#[derive(Debug, Clone)]
pub struct Host {
    /// Powered and running sip-ha.
    pub alive: bool,
    /// Its SIP service passes the local probes.
    pub service_ok: bool,
    /// It reaches a witness.
    pub witness_ok: bool,
    /// Its link to the service LAN is up (ARP from it is seen by the other).
    pub lan_up: bool,
    /// The service address is on its interface.
    pub holds: bool,
    pub node: Node,
    /// What it published at the end of the last round.
    pub published: Report,
    pub command: Option<Command>,
}

impl Host {
    fn new(role: Role, policy: Policy) -> Host {
        let node = Node::new(role, policy, Memory::default());
        let published = node.report(false);
        Host {
            alive: true,
            service_ok: true,
            witness_ok: true,
            lan_up: true,
            holds: false,
            node,
            published,
            command: None,
        }
    }
}

/// What happened in one round, for the property checks.
#[derive(Debug, Clone, Default)]
pub struct RoundLog {
    /// (role, actions, observation) for each node that ran.
    pub steps: Vec<(Role, Vec<Action>, Observation, Memory)>,
}

pub struct Pair {
    pub master: Host,
    pub slave: Host,
    /// The management link between the servers (SSH, SIP, TCP peer paths).
    pub link_up: bool,
    pub now_ms: u64,
    pub round_ms: u64,
}

impl Pair {
    pub fn new(policy: Policy) -> Pair {
        Pair {
            master: Host::new(Role::Master, policy.clone()),
            slave: Host::new(Role::Slave, policy),
            link_up: true,
            now_ms: 1_700_000_000_000,
            round_ms: 1000,
        }
    }

    pub fn host(&mut self, role: Role) -> &mut Host {
        match role {
            Role::Master => &mut self.master,
            Role::Slave => &mut self.slave,
        }
    }

    /// The two can see each other: the management link is up and both run.
    pub fn see_each_other(&self) -> bool {
        self.link_up && self.master.alive && self.slave.alive
    }

    fn observe(&self, me: &Host, other: &Host) -> Observation {
        let reachable = self.link_up && other.alive;
        Observation {
            now_ms: self.now_ms,
            local_ok: Some(me.service_ok),
            witness_ok: me.witness_ok && me.lan_up,
            peer: PeerView {
                reachable,
                report: reachable.then(|| other.published.clone()),
            },
            holds_address: me.holds,
            address_conflict: other.alive && other.holds && other.lan_up && me.lan_up,
            command: me.command,
        }
    }

    /// Run one round on both nodes.
    pub fn round(&mut self) -> RoundLog {
        self.now_ms += self.round_ms;
        let obs_m = self.observe(&self.master, &self.slave);
        let obs_s = self.observe(&self.slave, &self.master);
        // Whether the address was held before this round, for the duplicate
        // check that precedes a takeover.
        let held_m = self.master.alive && self.master.holds && self.master.lan_up;
        let held_s = self.slave.alive && self.slave.holds && self.slave.lan_up;
        let mut log = RoundLog::default();
        for (role, obs, other_held) in [(Role::Master, obs_m, held_s), (Role::Slave, obs_s, held_m)]
        {
            let lan_up = self.host(role).lan_up;
            let host = self.host(role);
            host.command = None;
            if !host.alive {
                host.holds = false;
                continue;
            }
            let mut actions = host.node.step(&obs);
            let mut extra = Vec::new();
            for a in &actions {
                match a {
                    Action::TakeAddress => {
                        if other_held && lan_up {
                            extra.extend(host.node.take_failed("another MAC answers", obs.now_ms));
                        } else {
                            host.holds = true;
                        }
                    }
                    Action::ReleaseAddress => host.holds = false,
                    _ => {}
                }
            }
            actions.extend(extra);
            host.published = host.node.report(host.holds);
            log.steps
                .push((role, actions, obs, host.node.memory().clone()));
        }
        log
    }

    pub fn rounds(&mut self, n: usize) -> Vec<RoundLog> {
        (0..n).map(|_| self.round()).collect()
    }

    /// Power a node off: its processes stop and the address goes with it.
    pub fn power_off(&mut self, role: Role) {
        let h = self.host(role);
        h.alive = false;
        h.holds = false;
    }

    /// Power a node back on with the memory it had persisted.
    pub fn power_on(&mut self, role: Role) {
        let h = self.host(role);
        h.alive = true;
        h.holds = false;
    }

    pub fn holder(&self) -> Option<Role> {
        match (self.master.holds, self.slave.holds) {
            (true, false) => Some(Role::Master),
            (false, true) => Some(Role::Slave),
            _ => None,
        }
    }
}
