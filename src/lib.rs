//! sip-ha: high availability for a pair of Asterisk servers.
//!
//! The binary (`src/main.rs`) is a thin shell over this library. The pieces,
//! from the edges in:
//!
//! * [`cli`]: the command line, flags documented where they are defined.
//! * [`address`]: the service address: add, remove, announce (gratuitous
//!   ARP, unsolicited NA) and duplicate-address probes, over netlink and raw
//!   packet sockets.
//! * [`config`]: the one `sip-ha.toml` shared by both servers, validated with
//!   file, line and column on every error.
//! * [`identity`]: which node this is, from its own addresses or `--node`.
//! * [`probe`]: local health probes (SIP OPTIONS, asterisk, AMI, process,
//!   TCP, command) and the witness.
//! * [`link`]: the SSH link to `sip-ha serve` on the peer and its framed
//!   protocol.
//! * [`state`]: the state file and the lock in `state_dir`.
//! * [`sync`]: copying the sync paths from the active server to the standby
//!   by content hash (scan, manifest, hash tree, diff, chunked deltas,
//!   atomic writes, a trash for deletions).
//! * [`log`]: syslog(3) and the history log on each node.
//! * [`status`]: the `-v` screen and its JSON.
//! * [`alert`]: mail (digested, queued on disk), SNMP traps and the syslog
//!   facility: how the operator hears of a failover.
//! * [`commands`]: one file per thing the command line can ask for.
//! * The decision core lives in its own crate, `sip-ha-core`, with no I/O.

pub mod address;
pub mod alert;
pub mod cli;
pub mod commands;
pub mod config;
pub mod driver;
pub mod identity;
pub mod link;
pub mod log;
pub mod observe;
pub mod probe;
pub mod state;
pub mod status;
pub mod sync;
