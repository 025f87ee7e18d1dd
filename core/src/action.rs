//! What the core asks the driver to do, and the events it reports.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An operator hook to run, like keepalived's notify scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    OnActive,
    OnStandby,
    OnDisable,
}

/// Something that happened, worth a log line, an email and a trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// This node took the service address.
    Takeover,
    /// This node gave the service address up.
    Release,
    /// `-f`: this node handed the address to its peer.
    ManualFailover,
    /// Under `failback = "auto"`, the slave handed back to the master.
    AutoFailback,
    Disabled,
    Enabled,
    /// Both nodes held the address.
    SplitBrain,
    ServiceDown,
    ServiceUp,
    PeerLost,
    PeerBack,
    /// No witness answered: this node is isolated and will not take over.
    Isolated,
    WitnessBack,
    /// A takeover was wanted but something else answers for the address.
    AddressConflict,
    /// An operator command was refused.
    Refused,
    /// The local service failed and is being restarted before any failover.
    LocalRestart,
    /// Sync to the peer failed several times in a row (raised by the
    /// driver, not the core, like the three below).
    SyncFailing,
    /// Sync works again after failing.
    SyncRecovered,
    /// A file changed on both servers since the last sync: the active
    /// server's version won, the other was kept beside it.
    SyncConflict,
    /// A sync was refused for safety: an empty or unmounted source, or a
    /// run that would delete too much on the standby.
    SyncRefused,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Takeover => "takeover",
            EventKind::Release => "release",
            EventKind::ManualFailover => "manual-failover",
            EventKind::AutoFailback => "auto-failback",
            EventKind::Disabled => "disabled",
            EventKind::Enabled => "enabled",
            EventKind::SplitBrain => "split-brain",
            EventKind::ServiceDown => "service-down",
            EventKind::ServiceUp => "service-up",
            EventKind::PeerLost => "peer-lost",
            EventKind::PeerBack => "peer-back",
            EventKind::Isolated => "isolated",
            EventKind::WitnessBack => "witness-back",
            EventKind::AddressConflict => "address-conflict",
            EventKind::Refused => "refused",
            EventKind::LocalRestart => "local-restart",
            EventKind::SyncFailing => "sync-failing",
            EventKind::SyncRecovered => "sync-recovered",
            EventKind::SyncConflict => "sync-conflict",
            EventKind::SyncRefused => "sync-refused",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event with the reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub reason: String,
    pub at_ms: u64,
}

/// One thing for the driver to do. Actions come in the order to carry them
/// out: a push comes before a release on a handover, a hook after the move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Check that nobody else answers for the address, add it, announce it.
    /// If the check finds a conflict the driver calls
    /// [`Node::take_failed`](crate::Node::take_failed).
    TakeAddress,
    ReleaseAddress,
    /// Push this node's changes to the peer now (before a handover).
    PushSync,
    RunHook(Hook),
    /// Run the configured restart command for the local service.
    RestartService,
    Notify(Event),
}
