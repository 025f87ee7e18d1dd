//! What the driver saw in one round, and what a node tells its peer.

use crate::node::{Health, Stance};
use crate::policy::Role;
use serde::{Deserialize, Serialize};

/// What a node publishes about itself after each round. The peer reads it over
/// SSH (`sip-ha serve`) and feeds it to its own next round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub role: Role,
    pub stance: Stance,
    /// Whether the address is on this node's interface right now.
    pub holds_address: bool,
    pub health: Health,
    pub maintenance: bool,
    pub epoch: u64,
    /// Which node this node believes is active.
    pub active: Option<Role>,
}

/// How the peer looked this round.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerView {
    /// At least one configured path to the peer (SSH, SIP, TCP) answered.
    pub reachable: bool,
    /// The peer's own report, when the SSH path answered with one.
    pub report: Option<Report>,
}

/// An operator's command for this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    /// `sip-ha -f`: hand the address to the peer. Refused unless the peer is
    /// ready, or `force` is set.
    Failover { force: bool },
    /// `sip-ha -d`: release the address and stay out until enabled.
    Disable,
    /// `sip-ha --enable`: leave maintenance.
    Enable,
}

/// One round of observations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Wall-clock time in milliseconds since the Unix epoch. Used only for
    /// the auto-failback hold-down and the time stamps of events.
    pub now_ms: u64,
    /// This round's local probes: `Some(true)` if every probe passed,
    /// `Some(false)` if any failed, `None` if the probes did not run.
    pub local_ok: Option<bool>,
    /// Whether a witness answered (`true` when none is configured).
    pub witness_ok: bool,
    pub peer: PeerView,
    /// Whether the service address is on this node's interface right now.
    pub holds_address: bool,
    /// Another host answered for the service address (ARP/ND).
    pub address_conflict: bool,
    pub command: Option<Command>,
}

impl Observation {
    /// A quiet round at time `now_ms`: healthy, witness up, peer unseen.
    pub fn at(now_ms: u64) -> Observation {
        Observation {
            now_ms,
            local_ok: Some(true),
            witness_ok: true,
            peer: PeerView::default(),
            holds_address: false,
            address_conflict: false,
            command: None,
        }
    }
}
