//! The sip-ha decision core: who should hold the service address, as a pure
//! state machine.
//!
//! This crate does no I/O. It never reads a clock, a socket or a file. The
//! driver (the `sip-ha` crate, in cron or loop mode) gathers one *round* of
//! [`Observation`]s — local health, what the peer says about itself, whether
//! the peer and the witness answer, whether the address is on this node — and
//! hands it to [`Node::step`]. The node updates its [`Memory`] and returns the
//! [`Action`]s to carry out: take or release the address, run a hook, push a
//! sync, raise an event. The driver persists the memory between rounds (so a
//! cron pass picks up where the last one stopped) and publishes a [`Report`]
//! that the peer reads on its next round.
//!
//! Because it is pure, every situation is a table test, and the safety rules
//! are checked by property tests that run two nodes against a simulated world
//! (`tests/`), in the manner of quinn-proto's `Connection`.
//!
//! # The rules, in one place
//!
//! Each node publishes a [`Stance`]: `Yield` (cannot or will not serve),
//! `Ready` (healthy, sees a witness, not in maintenance: could serve) or
//! `Active` (holds, or is taking, the address).
//!
//! * A node takes the address only if it is eligible (healthy, reaches a
//!   witness, not in maintenance), nobody else answers for the address, the
//!   peer does not hold it, its *own previous* stance was `Ready` or `Active`
//!   (so the peer has had a round to see it coming), and one of:
//!   the peer is dead on every path for `dead_after` rounds; the peer yields;
//!   or both are `Ready` and this node is the master (the master is active by
//!   default). Two nodes that can see each other therefore never both take:
//!   if both were `Ready`, only the master takes; if one yielded, it cannot
//!   take in the same round.
//! * The active node keeps the address while it is eligible. It releases it
//!   when it is no longer eligible *and* the peer is `Ready` (no point handing
//!   a dead service to a dead peer), on `-d`, on `-f` to a `Ready` peer, and
//!   when it loses a split brain.
//! * Failback is manual: a `Ready` master never takes from an active slave.
//!   Under `failback = "auto"`, the active slave hands back once the master
//!   has been `Ready` for the hold-down time.
//! * Split brain (both hold): the higher epoch keeps the address; on a tie,
//!   the master. Each takeover raises the epoch above anything seen.
//! * Sync flows only from the active node to the standby.

mod action;
mod node;
mod observation;
mod policy;

pub use action::{Action, Event, EventKind, Hook};
pub use node::{Health, Memory, Node, Stance};
pub use observation::{Command, Observation, PeerView, Report};
pub use policy::{Failback, Policy, Role};
