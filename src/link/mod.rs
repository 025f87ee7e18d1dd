//! The link to the peer: one SSH session to `sip-ha serve` on the other node,
//! and the framed protocol the two speak over it.
//!
//! # The pieces
//!
//! * [`ssh`] — [`PeerLink`]: the system OpenSSH client (through the `openssh`
//!   crate, talking to a ControlMaster over its mux socket) logs in to the
//!   peer with the configured key, checks the peer's host key strictly
//!   against the configured `known_hosts`, and runs `<remote_command> serve`
//!   there. Everything below travels over that command's stdin and stdout;
//!   its stderr is kept for error messages. SSH failures are turned into
//!   messages an operator can act on (which file to fix, which command to
//!   run).
//! * [`serve`](mod@serve) — the other end: `sip-ha serve` answers requests on its own
//!   stdin/stdout until the client hangs up.
//! * [`protocol`] — the messages ([`Hello`], [`Request`], [`Response`]) and
//!   the handshake.
//! * [`install`] — how `sip-ha serve` takes a new copy of its own program or
//!   configuration from the other node (`sip-ha -c`), never losing the old
//!   one.
//! * [`frame`] — how messages are cut out of a byte stream: each one is a
//!   4-byte big-endian length, then that many bytes of
//!   [postcard](https://docs.rs/postcard)-encoded payload, at most
//!   [`MAX_FRAME`](frame::MAX_FRAME) bytes. Length-prefixed frames carry bulk
//!   data (file chunks) as well as small requests, and a bad length
//!   or a short read is reported precisely instead of as a decoding error.
//!
//! # The handshake
//!
//! ```text
//!   client (this node)                       server (`sip-ha serve` on the peer)
//!                              <-- "SIPHA01\n"        8 bytes, never changes
//!                              <-- [Hello]            magic, protocol version, software
//!   checks magic and version
//!   [Hello] -->
//!                                                     checks magic and version
//!   [Request::Status] -->
//!                              <-- [Response::Status]
//!   ...
//!   closes stdin (EOF between frames: a clean end)
//! ```
//!
//! `sip-ha -c` replaces a file on the peer with a few more requests on the
//! same session (see [`install`]):
//!
//! ```text
//!   [InstallBegin { target, size, mode }] -->
//!                              <-- [Ok]               (or Error: refused)
//!   [InstallChunk(<= 1 MiB)] -->                      repeated
//!                              <-- [Ok]
//!   [InstallCommit { blake3 }] -->
//!                              <-- [Installed { path, previous }]
//! ```
//!
//! `sip-ha sync` (and the active node's loop) pushes each `[[sync.path]]`
//! on the same kind of session; a path with nothing changed costs two small
//! frames (under 100 bytes), see [`crate::sync::send`] and
//! [`crate::sync::session`]:
//!
//! ```text
//!   [SyncRoot { path, verify, token, trust }] -->     path must be in the
//!                              <-- [SyncRoot { root, files }]  peer's config
//!   equal roots: done. Otherwise:
//!   [SyncListings { path, dirs }] -->                 one per tree level
//!                              <-- [SyncListings(children)]
//!   [SyncSelect { dirs, subtrees, from }] -->         paged
//!                              <-- [SyncEntries { entries, more }]
//!   [SyncDelete] [SyncDir] [SyncSymlink] [SyncMeta] [FileWhole] -->
//!                              <-- [Ok]               each
//!   [FileBegin { rel, meta, .. }] -->
//!                              <-- [Signature]        the peer's chunks
//!   [Pieces(<= ~1 MiB)] -->                           repeated
//!                              <-- [Ok]
//!   [FileCommit { hash }] -->
//!                              <-- [Ok]
//!   [SyncDone] -->
//!                              <-- [SyncDone { warnings }]
//! ```
//!
//! The client writes nothing until it has read the server's greeting. The
//! first eight bytes matter: a remote shell whose start-up files (`.bashrc`,
//! `.profile`) print something — a banner, a `Welcome!` — puts that text in
//! front of anything `sip-ha serve` says, and a length-prefixed protocol would
//! read it as a frame length. The fixed greeting line turns that into a plain
//! message quoting the stray text. The greeting line and the layout of
//! [`Hello`] are frozen for all versions, so two different versions of
//! sip-ha always get far enough to tell the operator that they differ.
//!
//! # Extending the protocol
//!
//! postcard is not self-describing: a field added to a message changes its
//! encoding. New requests and responses are added as *new variants at the end*
//! of [`Request`] and [`Response`] (existing ones keep their numbers); any
//! change to an existing message bumps
//! [`PROTOCOL_VERSION`]. Message types must not use
//! serde attributes that need a self-describing format (`flatten`,
//! `untagged`, `skip_serializing_if`).

pub mod frame;
pub mod install;
pub mod protocol;
pub mod serve;
pub mod ssh;

pub use install::Installed;

/// The link's buffers each way, on both ends: small frames (answers,
/// requests) are gathered into few system calls; large ones pass through.
pub(crate) const LINK_BUFFER: usize = 256 * 1024;

/// Pipes carry 64 KiB by default: at hundreds of MB/s that is a wake-up and
/// a system call every 0.1 ms on each side. Ask for 1 MiB (the default
/// `fs.pipe-max-size`); a descriptor that is not a pipe, or a refusal, is
/// left as it is.
pub(crate) fn widen_pipe(fd: impl std::os::fd::AsFd) {
    const WIDTH: i32 = 1 << 20;
    let _ = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(WIDTH));
}
pub use protocol::{
    Hello, InstallTarget, KeepOld, Request, Response, StatusReply, PROTOCOL_VERSION,
};
pub use serve::{serve, serve_stdio, InstallDir, LocalNode, StatusFile};
pub use ssh::{probe_status, PeerLink};
