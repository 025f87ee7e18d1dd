//! sip-ha: high availability for a pair of Asterisk servers.
//!
//! The binary (`src/main.rs`) is a thin shell over this library. The pieces,
//! from the edges in:
//!
//! * [`cli`] — the command line, flags documented where they are defined.
//! * [`address`] — the service address: add, remove, announce (gratuitous
//!   ARP, unsolicited NA) and duplicate-address probes, over netlink and raw
//!   packet sockets.
//! * [`config`] — the one `sip-ha.toml` shared by both servers, validated with
//!   file, line and column on every error.
//! * [`identity`] — which node this is, from its own addresses or `--node`.
//! * [`state`] — the state file and the lock in `state_dir`.
//! * [`log`] — syslog(3) and the history log on each node.
//! * [`status`] — the `-v` screen and its JSON.
//! * The decision core lives in its own crate, `sip-ha-core`, with no I/O.

pub mod address;
pub mod config;
