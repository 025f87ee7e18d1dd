//! sip-ha: high availability for a pair of Asterisk servers.
//!
//! The binary (`src/main.rs`) is a thin shell over this library. The pieces,
//! from the edges in:
//!
//! * [`cli`] — the command line, flags documented where they are defined.
//! * [`config`] — the one `sip-ha.toml` shared by both servers, validated with
//!   file, line and column on every error.
//! * [`identity`] — which node this is, from its own addresses or `--node`.
//! * [`state`] — the state file and the lock in `state_dir`.
//! * [`log`] — syslog(3) and the history log on each node.
//! * [`status`] — the `-v` screen and its JSON.
//! * [`link`] — the SSH link to `sip-ha serve` on the peer, and the framed
//!   protocol spoken over it.
//! * The decision core lives in its own crate, `sip-ha-core`, with no I/O.

pub mod config;
pub mod link;
