//! The drivers: what runs the decision core against the real world.
//!
//! * [`round`]: one round (observe, decide, act, remember), shared by both
//!   modes.
//! * [`resident`]: `sip-ha run --loop`, a round every `health.interval`.
//! * [`requests`]: how `-f`, `-d` and `--enable` reach a running loop.
//! * [`hooks`]: the operator's `[hooks]` commands.
//! * `push`: the active node's pushes of the sync paths, beside the rounds.
//! * [`watch`]: while active, the loop's watch on the sync paths, so a
//!   change is pushed at once.
//!
//! A cron pass (`sip-ha run`) is one round under the lock; see
//! `commands/run.rs`.

pub mod hooks;
mod push;
pub mod requests;
pub mod resident;
pub mod round;
pub mod watch;

use crate::config::Config;
use sip_ha_core::Policy;

pub use push::limit as push_limit;
pub use round::{Driver, Outcome};

/// The decision core's thresholds, from the config.
pub fn policy(cfg: &Config) -> Policy {
    Policy {
        fail_after: cfg.health.fail_after,
        rise_after: cfg.health.rise_after,
        dead_after: cfg.peer.dead_after,
        failback: cfg.cluster.failback,
        failback_hold_down_ms: cfg.cluster.failback_hold_down.as_millis() as u64,
        max_restarts: match cfg.health.restart_command {
            Some(_) => cfg.health.max_restarts,
            None => 0,
        },
        restart_window_ms: cfg.health.restart_window.as_millis() as u64,
    }
}
