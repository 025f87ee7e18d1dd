//! The drivers: what runs the decision core against the real world. A cron
//! pass ([`pass`]) and the resident loop run the same round; they differ
//! only in how often, and in what they keep open between rounds.

use crate::config::Config;
use sip_ha_core::Policy;

/// The decision core's thresholds, from the config.
pub fn policy(cfg: &Config) -> Policy {
    Policy {
        fail_after: cfg.health.fail_after,
        rise_after: cfg.health.rise_after,
        dead_after: cfg.peer.dead_after,
        failback: cfg.cluster.failback,
        failback_hold_down_ms: cfg.cluster.failback_hold_down.as_millis() as u64,
    }
}
