//! The fixed inputs of a decision: which node this is and the thresholds from
//! the configuration.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The two members of a pair. The master is active by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Slave,
}

impl Role {
    /// The other member of the pair.
    pub fn peer(self) -> Role {
        match self {
            Role::Master => Role::Slave,
            Role::Slave => Role::Master,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Slave => "slave",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens when a failed master recovers while the slave is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Failback {
    /// The master stays standby until an operator runs `sip-ha -f` on the
    /// active slave (the old tool's behaviour, and the default).
    #[default]
    Manual,
    /// The active slave hands back once the master has been ready for the
    /// hold-down time.
    Auto,
}

/// Thresholds, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive failed rounds before local health counts as down.
    pub fail_after: u32,
    /// Consecutive good rounds before local health counts as up.
    pub rise_after: u32,
    /// Consecutive rounds with every peer path failing before the peer is dead.
    pub dead_after: u32,
    pub failback: Failback,
    /// Under `Failback::Auto`: how long the master must have been ready before
    /// the slave hands back, in milliseconds.
    pub failback_hold_down_ms: u64,
    /// Local recovery before failover: at most this many restarts of the
    /// service per `restart_window_ms`. 0: no local recovery.
    pub max_restarts: u32,
    pub restart_window_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            fail_after: 3,
            rise_after: 2,
            dead_after: 3,
            failback: Failback::Manual,
            failback_hold_down_ms: 60_000,
            max_restarts: 0,
            restart_window_ms: 3_600_000,
        }
    }
}
