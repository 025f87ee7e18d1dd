//! The client end: an SSH session to the peer running `sip-ha serve`.
//!
//! [`PeerLink::connect`] runs the system `ssh` (through the `openssh` crate)
//! as a ControlMaster with a control socket in `control_dir`, then opens one
//! channel over that socket running `<remote_command> serve` with its stdin,
//! stdout and stderr piped here. stdin/stdout carry
//! [the protocol](super::protocol); stderr is kept (the last few KiB) to
//! explain failures.
//!
//! How ssh is run, and why:
//!
//! * **Strict host keys.** The peer's key must already be in the configured
//!   `known_hosts` (`StrictHostKeyChecking=yes`): an unknown key is refused,
//!   never added silently, and the error says how to add it after checking
//!   its fingerprint.
//! * **Only our settings.** ssh gets `-F <control_dir>/ssh_config`, a file
//!   sip-ha writes (see [`SSH_CONFIG`]), so `~/.ssh/config` and
//!   `/etc/ssh/ssh_config` cannot change how the link behaves (a
//!   `RequestTTY force` there would mangle the byte stream). User, port,
//!   identity, known_hosts and the connect timeout come from `[ssh]` in
//!   sip-ha.toml.
//! * **No masters left behind.** [`PeerLink::close`] stops the master; if
//!   sip-ha dies first, the master exits on its own after
//!   [`CONTROL_PERSIST_IDLE`] without clients. Keep-alives every
//!   [`SERVER_ALIVE_INTERVAL`] notice a dead peer on a long-lived link.
//! * **Except one, for sync.** [`PeerLink::connect_kept`] (syncs only)
//!   leaves its master up after [`close`](PeerLink::close), for
//!   [`KEPT_MASTER_IDLE`], and the next sync reuses it: a sync run from
//!   cron every minute logs in once, not every minute, and saves the
//!   handshake (0.3 s on loopback here). A kept master is used only if it
//!   was made with the same user, port, identity and known_hosts, and only
//!   if `sip-ha serve` greets through it within [`KEPT_GREETING_TIMEOUT`];
//!   otherwise it is stopped and a new session made, as without one. Status
//!   probes (what failover decisions rest on) never use a kept master: each
//!   logs in afresh, so a master left over from before a network change
//!   cannot make a dead peer look alive.
//! * **Short socket paths.** A Unix socket path is limited to 108 bytes.
//!   The control socket ends up at
//!   `<control_dir>/.ssh-connectionXXXXXX/master.XXXXXXXXXXXXXXXX` while ssh
//!   sets it up, 46 bytes more than `control_dir`, so `control_dir` may be at
//!   most [`MAX_CONTROL_DIR_LEN`] bytes; a longer one is refused up front.

use super::frame;
use super::install::Installed;
use super::protocol::{self, HandshakeError, Hello, InstallTarget, Request, Response, StatusReply};
use super::LINK_BUFFER;
use crate::config;
use anyhow::{anyhow, bail, Context};
use openssh::{Child, ChildStderr, ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use std::io::{self, Write};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, BufReader, BufWriter};
use tokio::task::JoinHandle;

/// The longest path a Unix socket address holds (108 bytes with the NUL).
const SOCKET_PATH_MAX: usize = 107;

/// What the `openssh` crate and ssh add to the control directory:
/// `/.ssh-connection` + 6 random characters + `/master`, and while binding,
/// `.` + 16 random characters.
const SOCKET_SUFFIX_LEN: usize = 1 + 15 + 6 + 1 + 6 + 1 + 16;

/// The longest control directory path that keeps the socket path legal.
pub const MAX_CONTROL_DIR_LEN: usize = SOCKET_PATH_MAX - SOCKET_SUFFIX_LEN;

/// How long an SSH master without clients stays up (`ControlPersist`), in
/// case sip-ha dies without closing it.
pub const CONTROL_PERSIST_IDLE: Duration = Duration::from_secs(60);

/// How long a master kept for syncs ([`PeerLink::connect_kept`]) stays up
/// without clients: longer than a minute, so that a sync from cron every
/// minute finds it.
pub const KEPT_MASTER_IDLE: Duration = Duration::from_secs(180);

/// How long a kept master gets to carry `sip-ha serve`'s greeting before it
/// is given up for a new session. A working one does it in well under a
/// second; one whose peer went away would hang until the keep-alives
/// expire.
pub const KEPT_GREETING_TIMEOUT: Duration = Duration::from_secs(5);

/// Keep-alive interval (`ServerAliveInterval`; ssh gives up after 3 missed).
pub const SERVER_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// The shortest wait for `sip-ha serve` to greet once the session is up.
/// The configured connect timeout is used when it is longer.
const MIN_GREETING_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for the remote command's exit status and the end of its
/// stderr when explaining a failure, and for it to exit on close.
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// How much of the remote stderr to keep.
const STDERR_KEEP: usize = 4096;

/// How many characters of ssh's or the peer's messages to quote.
const QUOTE_MAX: usize = 400;

/// How long one step of [`PeerLink::install`] may take: a chunk of
/// [`MAX_CHUNK`](frame::MAX_CHUNK) bytes travelling and being written, or the
/// peer checking and syncing the file.
pub const INSTALL_STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// The mode of a program sent as bytes in memory ([`Payload::Bytes`]).
const DEFAULT_PROGRAM_MODE: u32 = 0o755;

/// What [`PeerLink::install`] sends.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// These bytes (a program gets mode 0755).
    Bytes(&'a [u8]),
    /// This file's content and mode, read as it is sent.
    File(&'a Path),
}

impl<'a> From<&'a [u8]> for Payload<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Payload::Bytes(bytes)
    }
}

impl<'a> From<&'a Path> for Payload<'a> {
    fn from(path: &'a Path) -> Self {
        Payload::File(path)
    }
}

/// The ssh client configuration sip-ha uses instead of the user's and the
/// system's (`ssh -F`). Only options understood by OpenSSH 7.4 and later.
pub const SSH_CONFIG: &str = "\
# Written by sip-ha before each connection to the peer: edits are lost.
# sip-ha runs ssh with -F and this file, so ~/.ssh/config and
# /etc/ssh/ssh_config do not apply. User, port, identity, known_hosts and
# timeouts come from the [ssh] section of sip-ha.toml.
GlobalKnownHostsFile /dev/null
UpdateHostKeys no
CheckHostIP no
IdentityAgent none
PasswordAuthentication no
KbdInteractiveAuthentication no
ForwardAgent no
ForwardX11 no
ClearAllForwardings yes
RequestTTY no
PermitLocalCommand no
ConnectionAttempts 1
";

/// An open link to `sip-ha serve` on the peer.
///
/// Requests may be pipelined ([`send`](PeerLink::send), then
/// [`recv`](PeerLink::recv)); [`close`](PeerLink::close) it when done (dropping
/// it also stops the SSH master, without waiting for the remote side).
pub struct PeerLink {
    host: IpAddr,
    peer: Hello,
    reader: BufReader<openssh::ChildStdout>,
    writer: BufWriter<openssh::ChildStdin>,
    stderr: StderrTail,
    child: Child<Arc<Session>>,
    session: Arc<Session>,
    /// Where to record the master on close, to keep it ([`connect_kept`]).
    ///
    /// [`connect_kept`]: PeerLink::connect_kept
    keep: Option<Kept>,
    /// Frame bytes (headers and payloads) sent and received since the
    /// handshake: what a sync costs on the wire, before SSH's own framing.
    wire: u64,
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLink")
            .field("host", &self.host)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl PeerLink {
    /// Logs in to `host` as configured in `ssh`, starts
    /// `<ssh.remote_command> serve` there and completes the handshake.
    ///
    /// `control_dir` holds the SSH control socket and the ssh client
    /// configuration; it is created (mode 0700) if missing and must be at
    /// most [`MAX_CONTROL_DIR_LEN`] bytes long.
    pub async fn connect(
        ssh: &config::Ssh,
        host: IpAddr,
        control_dir: &Path,
    ) -> anyhow::Result<PeerLink> {
        connect_new(ssh, host, control_dir, CONTROL_PERSIST_IDLE).await
    }

    /// [`connect`](Self::connect), for syncs: reuses the master a previous
    /// sync to `host` kept, if it was made with the same settings and still
    /// carries a greeting within [`KEPT_GREETING_TIMEOUT`] (else it is
    /// stopped and a new one made), and keeps this link's master after
    /// [`close`](Self::close), for [`KEPT_MASTER_IDLE`]. Never for status
    /// probes: see the module doc.
    pub async fn connect_kept(
        ssh: &config::Ssh,
        host: IpAddr,
        control_dir: &Path,
    ) -> anyhow::Result<PeerLink> {
        prepare_control_dir(control_dir)?;
        let keep = Kept::new(ssh, host, control_dir);
        if let Some((ctl, log)) = keep.recorded(control_dir).await {
            let session = Arc::new(Session::resume_mux(ctl, log));
            // The whole attempt is bounded: opening a channel on a master
            // whose peer is gone can wait as long as the greeting.
            let attempt = tokio::time::timeout(
                KEPT_GREETING_TIMEOUT,
                start_serve(session.clone(), ssh, host, KEPT_GREETING_TIMEOUT),
            )
            .await;
            match attempt {
                Ok(Ok(mut link)) => {
                    drop(session);
                    link.keep = Some(keep);
                    return Ok(link);
                }
                // Gone, or no longer working: stopped (if it still runs)
                // and forgotten; a new session below.
                Ok(Err((_, attempted))) => {
                    drop(attempted);
                    keep.forget(session).await;
                }
                Err(_) => keep.forget(session).await,
            }
        }
        let mut link = connect_new(ssh, host, control_dir, KEPT_MASTER_IDLE).await?;
        link.keep = Some(keep);
        Ok(link)
    }
}

/// A new master ([`new_master`]) and `serve` over it ([`start_serve`]);
/// the master is stopped if that fails.
async fn connect_new(
    ssh: &config::Ssh,
    host: IpAddr,
    control_dir: &Path,
    persist: Duration,
) -> anyhow::Result<PeerLink> {
    let session = new_master(ssh, host, control_dir, persist).await?;
    let greeting_timeout = ssh.connect_timeout.max(MIN_GREETING_TIMEOUT);
    match start_serve(session, ssh, host, greeting_timeout).await {
        Ok(link) => Ok(link),
        Err((error, session)) => {
            stop_master(session).await;
            Err(error)
        }
    }
}

/// Starts an SSH master to `host` (in `control_dir`) that outlives its last
/// client by `persist`.
async fn new_master(
    ssh: &config::Ssh,
    host: IpAddr,
    control_dir: &Path,
    persist: Duration,
) -> anyhow::Result<Arc<Session>> {
    prepare_control_dir(control_dir)?;
    check_identity(ssh)?;
    let config_file = write_ssh_config(control_dir)?;

    let mut builder = SessionBuilder::default();
    builder
        .user(ssh.user.clone())
        .port(ssh.port)
        .keyfile(&ssh.identity)
        .user_known_hosts_file(&ssh.known_hosts)
        .known_hosts_check(KnownHosts::Strict)
        .connect_timeout(ssh.connect_timeout)
        .server_alive_interval(SERVER_ALIVE_INTERVAL)
        .control_directory(control_dir)
        .control_persist(ControlPersist::IdleFor(whole_seconds(persist)))
        .config_file(&config_file);
    let session = builder
        .connect_mux(host.to_string())
        .await
        .map_err(|e| connect_error(e, ssh, host, control_dir))?;
    Ok(Arc::new(session))
}

/// Starts `<remote_command> serve` over `session` and completes the
/// handshake within `greeting_timeout`. On failure, the error and the
/// session (for the caller to stop or keep).
async fn start_serve(
    session: Arc<Session>,
    ssh: &config::Ssh,
    host: IpAddr,
    greeting_timeout: Duration,
) -> Result<PeerLink, (anyhow::Error, Arc<Session>)> {
    let command = &ssh.remote_command;
    let child = session
        .clone()
        .arc_command(command.as_str())
        .arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .await;
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            let error = anyhow!(e).context(format!(
                "logged in to {host}, but could not start `{command} serve` there"
            ));
            return Err((error, session));
        }
    };
    let (Some(stdin), Some(stdout)) = (child.stdin().take(), child.stdout().take()) else {
        let error = anyhow!("`{command} serve` on {host} started without the pipes asked for");
        return Err((error, session));
    };
    let stderr = StderrTail::spawn(child.stderr().take());
    super::widen_pipe(&stdout);
    super::widen_pipe(&stdin);
    let mut reader = BufReader::with_capacity(LINK_BUFFER, stdout);
    let mut writer = BufWriter::with_capacity(LINK_BUFFER, stdin);

    let handshake = tokio::time::timeout(
        greeting_timeout,
        protocol::client_handshake(&mut reader, &mut writer),
    )
    .await;
    let failure = match handshake {
        Ok(Ok(peer)) => {
            return Ok(PeerLink {
                host,
                peer,
                reader,
                writer,
                stderr,
                child,
                session,
                keep: None,
                wire: 0,
            })
        }
        Ok(Err(e)) => Failure::Handshake(e),
        Err(_) => Failure::NoGreeting(greeting_timeout),
    };
    // Close our ends so that a remote command waiting for input exits.
    drop(reader);
    drop(writer);
    let error = diagnose(failure, child, stderr, ssh, host).await;
    Err((error, session))
}

impl PeerLink {
    /// Frame bytes sent and received on this link since the handshake.
    pub fn wire_bytes(&self) -> u64 {
        self.wire
    }

    /// The peer's address.
    pub fn host(&self) -> IpAddr {
        self.host
    }

    /// The peer's hello: its protocol and software version.
    pub fn peer_hello(&self) -> &Hello {
        &self.peer
    }

    /// Asks the peer for its status report.
    pub async fn status(&mut self) -> anyhow::Result<StatusReply> {
        match self.request(&Request::Status).await? {
            Response::Status(reply) => Ok(reply),
            Response::Error(e) => bail!("sip-ha on {} could not report its status: {e}", self.host),
            other => bail!(
                "sip-ha on {} answered a status request with {other:?}",
                self.host
            ),
        }
    }

    /// Ask the peer to run a round now. Returns whether a loop was woken.
    pub async fn wake(&mut self) -> anyhow::Result<bool> {
        match self.request(&Request::Wake).await? {
            Response::Woken(woken) => Ok(woken),
            Response::Error(e) => bail!("sip-ha on {} could not be woken: {e}", self.host),
            other => bail!(
                "sip-ha on {} answered a wake request with {other:?}",
                self.host
            ),
        }
    }

    /// Replaces the peer's own program or configuration with `payload`
    /// (`sip-ha -c`), in chunks of at most [`MAX_CHUNK`](frame::MAX_CHUNK)
    /// bytes followed by their BLAKE3 hash. The peer decides where the file
    /// goes and keeps the one it replaces; see [`install`](super::install).
    ///
    /// On error the peer's file is unchanged, unless the error carries an
    /// [`Unconfirmed`] context: the link broke after the peer had all the
    /// bytes and the hash, and the file may or may not be in place.
    pub async fn install<'a>(
        &mut self,
        target: InstallTarget,
        payload: impl Into<Payload<'a>>,
    ) -> anyhow::Result<Installed> {
        let payload = payload.into();
        let (size, mode, mut source): (u64, u32, Box<dyn AsyncRead + Unpin + Send>) = match payload
        {
            Payload::Bytes(bytes) => (bytes.len() as u64, DEFAULT_PROGRAM_MODE, Box::new(bytes)),
            Payload::File(path) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let meta = file
                    .metadata()
                    .await
                    .with_context(|| format!("cannot read {}", path.display()))?;
                (
                    meta.len(),
                    meta.permissions().mode() & 0o777,
                    Box::new(file),
                )
            }
        };
        let host = self.host;
        let what = target.to_string();
        self.install_step(&Request::InstallBegin { target, size, mode })
            .await
            .with_context(|| format!("sip-ha on {host} refused {what}"))?;

        let sent = self.send_chunks(&mut *source, size).await;
        let hash = match sent {
            Ok(hash) => hash,
            Err(Step::Local(e)) => {
                // The link is fine: tell the peer to drop what it has.
                let _ = self.install_step(&Request::InstallAbort).await;
                return Err(e.context(format!("sending {what} to {host} stopped")));
            }
            Err(Step::Peer(e)) => return Err(e.context(format!("sip-ha on {host} refused {what}"))),
        };
        let answer = self
            .timed(&Request::InstallCommit { blake3: hash })
            .await
            .map_err(|e| {
                e.context(Unconfirmed(format!(
                    "no answer from {host} after sending all of {what}: it may or may not \
                     have been put in place"
                )))
            })?;
        match answer {
            Response::Installed { path, previous } => Ok(Installed { path, previous }),
            Response::Error(e) => bail!("sip-ha on {host} refused {what}: {e}"),
            other => bail!("sip-ha on {host} answered the end of {what} with {other:?}"),
        }
    }

    /// Reads `size` bytes from `source` and sends them in chunks; returns
    /// their hash.
    async fn send_chunks(
        &mut self,
        source: &mut (dyn AsyncRead + Unpin + Send),
        size: u64,
    ) -> Result<[u8; 32], Step> {
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; frame::MAX_CHUNK];
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left).map_or(frame::MAX_CHUNK, |l| l.min(frame::MAX_CHUNK));
            let got = read_up_to(source, &mut buf[..want])
                .await
                .map_err(|e| Step::Local(anyhow!(e).context("reading it failed")))?;
            if got < want {
                return Err(Step::Local(anyhow!(
                    "it shrank while it was being sent ({} of {size} bytes)",
                    size - left + got as u64
                )));
            }
            hasher.update(&buf[..got]);
            self.install_step(&Request::InstallChunk(buf[..got].to_vec()))
                .await
                .map_err(Step::Peer)?;
            left -= got as u64;
        }
        let mut extra = [0u8; 1];
        if read_up_to(source, &mut extra).await.unwrap_or(0) > 0 {
            return Err(Step::Local(anyhow!(
                "it grew while it was being sent (more than {size} bytes)"
            )));
        }
        Ok(*hasher.finalize().as_bytes())
    }

    /// One install request that the peer answers with [`Response::Ok`].
    async fn install_step(&mut self, request: &Request) -> anyhow::Result<()> {
        match self.timed(request).await? {
            Response::Ok => Ok(()),
            Response::Error(e) => Err(anyhow!(e)),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    /// [`request`](Self::request) within [`INSTALL_STEP_TIMEOUT`].
    async fn timed(&mut self, request: &Request) -> anyhow::Result<Response> {
        match tokio::time::timeout(INSTALL_STEP_TIMEOUT, self.request(request)).await {
            Ok(result) => result,
            Err(_) => bail!(
                "no answer from sip-ha on {} within {}",
                self.host,
                humantime::format_duration(INSTALL_STEP_TIMEOUT)
            ),
        }
    }

    /// Sends one request and reads its response.
    ///
    /// After an error the link is in an unknown state: close it and connect
    /// again. There is no timeout here; wrap the call in one where needed
    /// ([`probe_status`] does).
    pub async fn request(&mut self, request: &Request) -> anyhow::Result<Response> {
        self.send(request).await?;
        self.recv().await
    }

    /// [`request`](Self::request) with an already encoded request: for
    /// tests and tools that must send what [`Request`]'s types would not
    /// let them build (a path with `..`, to check that the peer refuses it).
    pub async fn request_raw(&mut self, payload: &[u8]) -> anyhow::Result<Response> {
        self.send_raw(payload).await?;
        self.recv().await
    }

    /// Queues one request without waiting for its answer (pipelining: see
    /// [`crate::sync::channel`]). It may stay in the write buffer until
    /// [`recv`](Self::recv) flushes it. Answers come back in order.
    pub async fn send(&mut self, request: &Request) -> anyhow::Result<()> {
        let payload = frame::encode(request)?;
        self.send_raw(&payload).await
    }

    async fn send_raw(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        match frame::write_frame(&mut self.writer, payload).await {
            Ok(()) => {
                self.wire += (frame::HEADER_LEN + payload.len()) as u64;
                Ok(())
            }
            Err(e) => Err(self
                .broken(anyhow!("link to sip-ha on {} broken: {e}", self.host))
                .await),
        }
    }

    /// Hands queued requests to ssh now.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        match tokio::io::AsyncWriteExt::flush(&mut self.writer).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self
                .broken(anyhow!("link to sip-ha on {} broken: {e}", self.host))
                .await),
        }
    }

    /// Flushes queued requests and reads the answer to the oldest one.
    pub async fn recv(&mut self) -> anyhow::Result<Response> {
        let result = async {
            tokio::io::AsyncWriteExt::flush(&mut self.writer)
                .await
                .map_err(frame::FrameError::Write)?;
            match frame::read_frame(&mut self.reader).await? {
                None => Ok(None),
                Some(answer) => {
                    self.wire += (frame::HEADER_LEN + answer.len()) as u64;
                    frame::decode::<Response>(&answer).map(Some)
                }
            }
        }
        .await;
        let error = match result {
            Ok(Some(response)) => return Ok(response),
            Ok(None) => anyhow!(
                "sip-ha on {} closed the connection without answering",
                self.host
            ),
            Err(e) => anyhow!("link to sip-ha on {} broken: {e}", self.host),
        };
        Err(self.broken(error).await)
    }

    /// Adds what the peer said on stderr (its reason, often) to `error`.
    async fn broken(&mut self, error: anyhow::Error) -> anyhow::Error {
        let said = self.stderr.settle(Duration::from_secs(1)).await;
        with_remote_stderr(error, &said)
    }

    /// Ends the session: closes the link (the peer's `serve` sees a clean
    /// end), waits briefly for it to exit, and stops the SSH master (or
    /// keeps it, after [`connect_kept`](Self::connect_kept)).
    pub async fn close(self) {
        let PeerLink {
            reader,
            writer,
            child,
            session,
            stderr,
            keep,
            ..
        } = self;
        drop(writer);
        drop(reader);
        let _ = tokio::time::timeout(EXIT_WAIT, child.wait()).await;
        drop(stderr);
        match keep {
            Some(keep) => keep.record(session).await,
            None => stop_master(session).await,
        }
    }
}

/// The context of an error from [`PeerLink::install`] when the peer had
/// every byte and the hash but its answer did not come back: the file may
/// have been put in place. Find it with `error.downcast_ref::<Unconfirmed>()`.
#[derive(Debug)]
pub struct Unconfirmed(String);

impl std::fmt::Display for Unconfirmed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an install step failed: here (the link is still usable) or at the
/// peer.
enum Step {
    Local(anyhow::Error),
    Peer(anyhow::Error),
}

/// Fills `buf` unless the source ends first; returns how many bytes it got.
async fn read_up_to(
    source: &mut (dyn AsyncRead + Unpin + Send),
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match source.read(&mut buf[got..]).await {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Stops the SSH master and removes its socket directory. (Dropping the
/// last `Arc<Session>` does the same without waiting.)
async fn stop_master(session: Arc<Session>) {
    if let Ok(session) = Arc::try_unwrap(session) {
        let _ = tokio::time::timeout(EXIT_WAIT, session.close()).await;
    }
}

/// A master kept between syncs: the record of it in the control directory
/// (`kept-<host>`, JSON: the settings it was made with, its control socket
/// and log), written when a [`PeerLink::connect_kept`] link closes.
struct Kept {
    record: PathBuf,
    /// What the master was made with; another value means another master.
    settings: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeptRecord {
    settings: String,
    ctl: PathBuf,
    log: Option<PathBuf>,
}

impl Kept {
    fn new(ssh: &config::Ssh, host: IpAddr, control_dir: &Path) -> Kept {
        Kept {
            record: control_dir.join(format!("kept-{host}")),
            settings: format!(
                "{}@{host} port {} identity {} known_hosts {}",
                ssh.user,
                ssh.port,
                ssh.identity.display(),
                ssh.known_hosts.display()
            ),
        }
    }

    /// The recorded master's socket and log, if it was made with these
    /// settings and its socket is one ssh made inside `control_dir`.
    async fn recorded(&self, control_dir: &Path) -> Option<(Box<Path>, Option<Box<Path>>)> {
        let text = std::fs::read(&self.record).ok()?;
        let Ok(r) = serde_json::from_slice::<KeptRecord>(&text) else {
            let _ = std::fs::remove_file(&self.record);
            return None;
        };
        let inside = |p: &Path| {
            p.parent().and_then(Path::parent) == Some(control_dir)
                && p.parent()
                    .and_then(Path::file_name)
                    .is_some_and(|n| n.to_string_lossy().starts_with(".ssh-connection"))
        };
        if !inside(&r.ctl) {
            let _ = std::fs::remove_file(&self.record);
            return None;
        }
        if r.settings != self.settings {
            // Made another way (the configuration changed): stopped rather
            // than left up unused.
            if r.ctl.exists() {
                let old = Session::resume_mux(r.ctl.clone().into(), None);
                let _ = tokio::time::timeout(EXIT_WAIT, old.close()).await;
            }
            remove_connection_dir(&r.ctl);
            let _ = std::fs::remove_file(&self.record);
            return None;
        }
        if !r.ctl.exists() {
            // Exited after its idle time: only its directory is left.
            remove_connection_dir(&r.ctl);
            let _ = std::fs::remove_file(&self.record);
            return None;
        }
        Some((r.ctl.into(), r.log.map(Into::into)))
    }

    /// Keeps `session`'s master up and records it for the next sync.
    async fn record(self, session: Arc<Session>) {
        let Ok(session) = Arc::try_unwrap(session) else {
            return;
        };
        let (ctl, log) = session.detach();
        let record = KeptRecord {
            settings: self.settings,
            ctl: ctl.into(),
            log: log.map(Into::into),
        };
        let written = serde_json::to_vec(&record)
            .map_err(anyhow::Error::from)
            .and_then(|json| crate::state::write_atomic(&self.record, &json));
        if written.is_err() {
            // Unrecorded, it would only idle out: stop it now.
            let session = Session::resume_mux(record.ctl.into(), None);
            let _ = tokio::time::timeout(EXIT_WAIT, session.close()).await;
        }
    }

    /// Stops a recorded master that no longer works and forgets it.
    async fn forget(&self, session: Arc<Session>) {
        let ctl = session.control_socket().to_path_buf();
        if let Ok(session) = Arc::try_unwrap(session) {
            let _ = tokio::time::timeout(EXIT_WAIT, session.close()).await;
        }
        remove_connection_dir(&ctl);
        let _ = std::fs::remove_file(&self.record);
    }
}

/// Removes the `.ssh-connectionXXXXXX` directory of a master that is gone
/// (its socket, if still there, and its log).
fn remove_connection_dir(ctl: &Path) {
    if let Some(dir) = ctl.parent() {
        if dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".ssh-connection"))
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Connects, asks for the peer's status and closes, all within `timeout`.
pub async fn probe_status(
    ssh: &config::Ssh,
    host: IpAddr,
    control_dir: &Path,
    timeout: Duration,
) -> anyhow::Result<StatusReply> {
    let probe = async {
        let mut link = PeerLink::connect(ssh, host, control_dir).await?;
        let reply = link.status().await;
        link.close().await;
        reply
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(result) => result,
        Err(_) => bail!(
            "no status from sip-ha on {host} within {}",
            humantime::format_duration(timeout)
        ),
    }
}

fn whole_seconds(d: Duration) -> NonZeroUsize {
    usize::try_from(d.as_secs())
        .ok()
        .and_then(NonZeroUsize::new)
        .unwrap_or(NonZeroUsize::MIN)
}

fn prepare_control_dir(dir: &Path) -> anyhow::Result<()> {
    let len = dir.as_os_str().len();
    if len > MAX_CONTROL_DIR_LEN {
        bail!(
            "the SSH control directory {} is too long ({len} bytes): the control socket ssh \
             creates inside it would pass the 108-byte limit of socket paths; use a directory \
             of at most {MAX_CONTROL_DIR_LEN} bytes, such as /run/sip-ha",
            dir.display()
        );
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the SSH control directory {}", dir.display()))
}

fn check_identity(ssh: &config::Ssh) -> anyhow::Result<()> {
    match std::fs::File::open(&ssh.identity) {
        Ok(_) => Ok(()),
        Err(e) => bail!(
            "cannot read the SSH identity file {id}: {e}; create a key with \
             `ssh-keygen -t ed25519 -N '' -f {id}` and add {id}.pub to ~{user}/.ssh/authorized_keys \
             on the peer",
            id = ssh.identity.display(),
            user = ssh.user,
        ),
    }
}

/// Writes [`SSH_CONFIG`] to `<control_dir>/ssh_config` unless it is already
/// there, by rename so that a concurrent ssh never reads half a file.
fn write_ssh_config(control_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = control_dir.join("ssh_config");
    if std::fs::read(&path).is_ok_and(|old| old == SSH_CONFIG.as_bytes()) {
        return Ok(path);
    }
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let temp = control_dir.join(format!(
        ".ssh_config.{}.{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let write = || -> io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(SSH_CONFIG.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)
    };
    write().with_context(|| {
        format!(
            "cannot write the ssh client configuration {}",
            path.display()
        )
    })?;
    Ok(path)
}

/// `host` as it appears in a `known_hosts` entry for `port`.
fn known_hosts_entry(host: IpAddr, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Turns a failed master connection into a message naming what to fix.
fn connect_error(
    err: openssh::Error,
    ssh: &config::Ssh,
    host: IpAddr,
    control_dir: &Path,
) -> anyhow::Error {
    match err {
        openssh::Error::Connect(e) if e.raw_os_error().is_some() => anyhow!(
            "could not run the ssh client to reach {host} (is openssh-client installed?): {e}"
        ),
        openssh::Error::Connect(e) => classify_ssh_failure(&e.to_string(), ssh, host),
        openssh::Error::Master(e) => anyhow!(
            "cannot create the SSH control socket directory in {}: {e}",
            control_dir.display()
        ),
        other => anyhow!(other).context(format!(
            "ssh to {}@{host} port {} failed",
            ssh.user, ssh.port
        )),
    }
}

/// Reads ssh's messages (its `-E` log) and says what to do about them.
fn classify_ssh_failure(log: &str, ssh: &config::Ssh, host: IpAddr) -> anyhow::Error {
    let port = ssh.port;
    let known_hosts = ssh.known_hosts.display();
    let identity = ssh.identity.display();
    let user = &ssh.user;
    let fingerprint = "on the peer: `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`";
    let advice = if log.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || log.contains("has changed and you have requested strict checking")
    {
        format!(
            "host key of {host} has CHANGED since it was recorded in {known_hosts}: if the \
             peer was reinstalled, check its new fingerprint ({fingerprint}), then replace the \
             old entry with `ssh-keygen -R '{entry}' -f {known_hosts}` and \
             `ssh-keyscan -p {port} {host} >> {known_hosts}`; if it was not, someone may be \
             intercepting the connection",
            entry = known_hosts_entry(host, port),
        )
    } else if log.contains("Host key verification failed") || log.contains("host key is known for")
    {
        format!(
            "host key of {host} is not in {known_hosts}: add it with \
             `ssh-keyscan -p {port} {host} >> {known_hosts}` after checking its fingerprint \
             ({fingerprint})"
        )
    } else if log.contains("UNPROTECTED PRIVATE KEY FILE") || log.contains("bad permissions") {
        format!(
            "the SSH identity file {identity} is readable by other users, so ssh will not use \
             it: `chmod 600 {identity}`"
        )
    } else if log.contains("Permission denied (") {
        format!(
            "{user}@{host} refused the key {identity}: add its public half ({identity}.pub) to \
             ~{user}/.ssh/authorized_keys on the peer, and check that sshd there allows {user} \
             to log in with a key"
        )
    } else if log.contains("timed out") {
        format!(
            "no answer from {host} port {port} within {}: is the peer up, and the port open?",
            humantime::format_duration(ssh.connect_timeout)
        )
    } else if log.contains("Connection refused") {
        format!("{host} refused the connection on port {port}: is sshd running on the peer, on that port?")
    } else if log.contains("too long for Unix domain socket") {
        format!(
            "the SSH control socket path is too long: use a control directory of at most \
             {MAX_CONTROL_DIR_LEN} bytes, such as /run/sip-ha"
        )
    } else if log.contains("No route to host") || log.contains("Network is unreachable") {
        format!("{host} is unreachable from this node")
    } else {
        format!("ssh to {user}@{host} port {port} failed")
    };
    anyhow!("{advice} (ssh said: {})", condense(log))
}

/// ssh's or the peer's messages on one line: decoration dropped, lines
/// joined, length capped.
fn condense(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('@'))
        .collect();
    protocol::printable(lines.join(" / ").as_bytes(), QUOTE_MAX)
}

fn with_remote_stderr(error: anyhow::Error, said: &str) -> anyhow::Error {
    if said.is_empty() {
        error
    } else {
        anyhow!("{error:#} (the peer's stderr: {said})")
    }
}

/// Why the handshake did not complete.
enum Failure {
    Handshake(HandshakeError),
    NoGreeting(Duration),
}

/// Explains a failed start of `sip-ha serve`, from the handshake error, the
/// remote command's exit status and its stderr.
async fn diagnose(
    failure: Failure,
    child: Child<Arc<Session>>,
    mut stderr: StderrTail,
    ssh: &config::Ssh,
    host: IpAddr,
) -> anyhow::Error {
    let command = &ssh.remote_command;
    let exit = tokio::time::timeout(EXIT_WAIT, child.wait()).await;
    let said = stderr.settle(EXIT_WAIT).await;
    let code = match &exit {
        Ok(Ok(status)) => status.code(),
        // The crate reports exit status 127 (command not found) as an error.
        Ok(Err(openssh::Error::Remote(e))) if e.kind() == io::ErrorKind::NotFound => Some(127),
        _ => None,
    };
    let closed_early = matches!(
        failure,
        Failure::Handshake(HandshakeError::ClosedBeforeGreeting { .. })
    );
    let error = match code {
        Some(127) => anyhow!(
            "sip-ha is not installed on the peer at {command}: run `sip-ha -c` to copy it to \
             {host}"
        ),
        Some(126) => anyhow!(
            "{command} on the peer ({host}) cannot be executed: check its permissions, or run \
             `sip-ha -c` to copy sip-ha there again"
        ),
        Some(code) if closed_early && code != 0 => anyhow!(
            "`{command} serve` on the peer ({host}) exited with status {code} before greeting"
        ),
        _ => match failure {
            // Precise on their own; the peer's stderr would only complain
            // that this node hung up.
            Failure::Handshake(
                e @ (HandshakeError::StrayOutput(_) | HandshakeError::PeerVersion { .. }),
            ) => return anyhow!(e).context(format!("starting sip-ha on {host}")),
            Failure::Handshake(e) => anyhow!(e).context(format!("starting sip-ha on {host}")),
            Failure::NoGreeting(after) => anyhow!(
                "`{command} serve` on the peer ({host}) did not greet within {}: is {command} \
                 really sip-ha?",
                humantime::format_duration(after)
            ),
        },
    };
    with_remote_stderr(error, &said)
}

/// Drains the remote command's stderr in the background, keeping the end.
struct StderrTail {
    text: Arc<Mutex<Vec<u8>>>,
    task: Option<JoinHandle<()>>,
}

impl StderrTail {
    fn spawn(stderr: Option<ChildStderr>) -> StderrTail {
        let text = Arc::new(Mutex::new(Vec::new()));
        let task = stderr.map(|mut stderr| {
            let text = Arc::clone(&text);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stderr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut kept = text.lock().unwrap_or_else(|poison| poison.into_inner());
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 2 * STDERR_KEEP {
                        let cut = kept.len() - STDERR_KEEP;
                        kept.drain(..cut);
                    }
                }
            })
        });
        StderrTail { text, task }
    }

    /// Waits up to `wait` for the stderr stream to end, then returns what it
    /// said, condensed to one line.
    async fn settle(&mut self, wait: Duration) -> String {
        if let Some(task) = self.task.as_mut() {
            if tokio::time::timeout(wait, task).await.is_ok() {
                self.task = None;
            }
        }
        let kept = self
            .text
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let start = kept.len().saturating_sub(STDERR_KEEP);
        condense(&String::from_utf8_lossy(&kept[start..]))
    }
}

impl Drop for StderrTail {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh() -> config::Ssh {
        config::Ssh {
            user: "root".into(),
            port: 2222,
            identity: "/etc/sip-ha/id_ed25519".into(),
            known_hosts: "/etc/sip-ha/known_hosts".into(),
            connect_timeout: Duration::from_secs(5),
            remote_command: "/usr/local/sbin/sip-ha".into(),
        }
    }

    const HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn unknown_host_key() {
        let log = "No ED25519 host key is known for [192.0.2.7]:2222 and you have requested strict checking.\r\nHost key verification failed.\r\n";
        let msg = classify_ssh_failure(log, &ssh(), HOST).to_string();
        assert!(msg.starts_with("host key of 192.0.2.7 is not in /etc/sip-ha/known_hosts: add it with `ssh-keyscan -p 2222 192.0.2.7 >> /etc/sip-ha/known_hosts`"), "{msg}");
    }

    #[test]
    fn changed_host_key() {
        let log = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\nIT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\nHost key verification failed.\n";
        let msg = classify_ssh_failure(log, &ssh(), HOST).to_string();
        assert!(msg.contains("has CHANGED"), "{msg}");
        assert!(msg.contains("ssh-keygen -R '[192.0.2.7]:2222'"), "{msg}");
        assert!(!msg.contains("@@@"), "{msg}");
    }

    #[test]
    fn auth_refused_and_timeouts() {
        let s = ssh();
        let msg = classify_ssh_failure("root@192.0.2.7: Permission denied (publickey).", &s, HOST)
            .to_string();
        assert!(
            msg.contains("refused the key /etc/sip-ha/id_ed25519"),
            "{msg}"
        );
        assert!(msg.contains("authorized_keys"), "{msg}");
        let msg = classify_ssh_failure(
            "ssh: connect to host 192.0.2.7 port 2222: Connection timed out",
            &s,
            HOST,
        )
        .to_string();
        assert!(
            msg.starts_with("no answer from 192.0.2.7 port 2222 within 5s"),
            "{msg}"
        );
    }

    #[test]
    fn control_dir_limit() {
        let ok = format!("/{}", "d".repeat(MAX_CONTROL_DIR_LEN - 1));
        assert_eq!(ok.len(), MAX_CONTROL_DIR_LEN);
        let long = format!("/{}", "d".repeat(MAX_CONTROL_DIR_LEN));
        let err = prepare_control_dir(Path::new(&long)).unwrap_err();
        assert!(err.to_string().contains("108-byte limit"), "{err}");
    }
}
