//! `sip-ha serve`: the peer's end of the link.
//!
//! The client's SSH session runs `<remote_command> serve`, whose stdin and
//! stdout are the link. [`serve`] greets, checks the client's hello, then
//! answers requests one by one until the client closes its end between two
//! frames — the normal way a session ends. Anything it cannot answer gets a
//! [`Response::Error`] and the session goes on; only a broken stream (a frame
//! cut short, an oversize length, a failed write) or a failed handshake ends
//! it with an error.
//!
//! **stdout belongs to the protocol.** While serving, nothing else in the
//! process may print to stdout; messages go to stderr (the client quotes it
//! when something goes wrong) or to syslog.
//!
//! What the node says about itself comes from a [`LocalNode`], so the
//! command-line layer decides where the answer comes from (the state file in
//! production, [`StatusFile`] in tests and labs).
//!
//! A session holds at most one file transfer (`sip-ha -c`, see
//! [`install`](super::install)): from `InstallBegin` to `InstallCommit` or
//! `InstallAbort`. If the session ends in between, for whatever reason, the
//! transfer is dropped with it and the file it would have replaced stays.

use super::frame::{self, FrameError};
use super::install::Receiver;
use super::protocol::{self, InstallTarget, Request, Response, StatusReply};
use crate::sync::session::{self, Session, SyncSetup};
use anyhow::Context;
use std::path::PathBuf;
use tokio::io::{AsyncRead, AsyncWrite, BufReader, BufWriter};

/// What `serve` asks of this node.
pub trait LocalNode {
    /// This node's answer to [`Request::Status`].
    fn status(&self) -> anyhow::Result<StatusReply>;
    /// Wake this node's resident loop for a round now ([`Request::Wake`]).
    /// Returns whether a loop was there to wake.
    fn wake(&self) -> anyhow::Result<bool> {
        Ok(false)
    }
    /// The file `sip-ha -c` replaces for `target`: this node's own program
    /// (the running executable) or the configuration it was started with.
    /// The default refuses installs.
    fn install_path(&self, target: InstallTarget) -> anyhow::Result<PathBuf> {
        anyhow::bail!("this sip-ha serve does not accept {target} from the other node")
    }
    /// Called after a file was put in place, for the log.
    fn installed(&self, _done: &super::install::Installed) {}
    /// This node's sync configuration, asked for when the other node starts
    /// pushing a path (`SyncRoot`). The default refuses sync.
    fn sync_setup(&self) -> anyhow::Result<SyncSetup> {
        anyhow::bail!("this sip-ha serve takes no sync")
    }
    /// A sync request was refused or failed: for the log. The default says
    /// it on stderr.
    fn sync_refused(&self, message: &str) {
        eprintln!("sip-ha serve: sync: {message}");
    }
}

/// A [`LocalNode`] that installs into another directory: `sip-ha` and
/// `sip-ha.toml` in `dir` (`sip-ha serve --install-dir DIR`, for tests and
/// labs). Everything else is answered by `inner`.
pub struct InstallDir<'a> {
    pub inner: &'a dyn LocalNode,
    pub dir: PathBuf,
}

impl LocalNode for InstallDir<'_> {
    fn status(&self) -> anyhow::Result<StatusReply> {
        self.inner.status()
    }
    fn wake(&self) -> anyhow::Result<bool> {
        self.inner.wake()
    }
    fn install_path(&self, target: InstallTarget) -> anyhow::Result<PathBuf> {
        Ok(self.dir.join(match target {
            InstallTarget::Binary => "sip-ha",
            InstallTarget::Config => "sip-ha.toml",
        }))
    }
    fn installed(&self, done: &super::install::Installed) {
        self.inner.installed(done)
    }
    fn sync_setup(&self) -> anyhow::Result<SyncSetup> {
        self.inner.sync_setup()
    }
    fn sync_refused(&self, message: &str) {
        self.inner.sync_refused(message)
    }
}

/// A [`LocalNode`] that reads a [`StatusReply`] as JSON from a file on
/// every request: for tests and labs (`sip-ha serve --status-file FILE`).
/// It takes no installs unless wrapped in an [`InstallDir`].
#[derive(Debug, Clone)]
pub struct StatusFile(pub PathBuf);

impl LocalNode for StatusFile {
    fn status(&self) -> anyhow::Result<StatusReply> {
        let text = std::fs::read_to_string(&self.0)
            .with_context(|| format!("cannot read the status file {}", self.0.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("the status file {} is not valid", self.0.display()))
    }
}

/// Serves one client on `input`/`output` until it hangs up.
///
/// Returns `Ok(())` when the client closes its end between frames, an error
/// when the handshake fails or the stream breaks.
pub async fn serve<R, W>(input: R, output: W, source: &dyn LocalNode) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut input = BufReader::with_capacity(super::LINK_BUFFER, input);
    let mut output = BufWriter::with_capacity(super::LINK_BUFFER, output);
    protocol::server_handshake(&mut input, &mut output)
        .await
        .context("sip-ha serve: handshake with the connecting node failed")?;
    // The transfer in progress, dropped (temporary file removed) on any way
    // out of this function.
    let mut transfer: Option<Receiver> = None;
    // The sync in progress, if any: dropped (a file being received is
    // removed) on any way out.
    let mut sync: Option<Session> = None;
    loop {
        let payload = match frame::read_frame(&mut input).await {
            Ok(Some(payload)) => payload,
            Ok(None) => {
                if let Some(rx) = transfer.take() {
                    cut_short(&rx);
                }
                return Ok(());
            }
            Err(e) => {
                if let Some(rx) = transfer.take() {
                    cut_short(&rx);
                }
                return Err(e).context("sip-ha serve: reading a request failed");
            }
        };
        let response = match frame::decode::<Request>(&payload) {
            Ok(request) if session::is_sync_request(&request) => {
                session::answer(&mut sync, || source.sync_setup(), request).unwrap_or_else(|e| {
                    let message = format!("{e:#}");
                    source.sync_refused(&message);
                    Response::Error(message)
                })
            }
            Ok(request) => answer(request, source, &mut transfer),
            // The frame boundary is intact, so the session can go on: a newer
            // client may have sent a request this version does not know.
            Err(e) => Response::Error(format!("this sip-ha cannot answer: {e}")),
        };
        send_response(&mut output, &response)
            .await
            .context("sip-ha serve: sending an answer failed")?;
    }
}

/// Says on stderr that a transfer was abandoned with the session.
fn cut_short(rx: &Receiver) {
    eprintln!(
        "sip-ha serve: the connection ended during the transfer of {}; {} is unchanged",
        rx.target(),
        rx.path().display()
    );
}

fn answer(request: Request, source: &dyn LocalNode, transfer: &mut Option<Receiver>) -> Response {
    let result = match request {
        Request::Status => source.status().map(Response::Status),
        Request::Wake => source.wake().map(Response::Woken),
        Request::InstallBegin { target, size, mode } => {
            // A new transfer replaces one left unfinished.
            *transfer = None;
            source
                .install_path(target)
                .and_then(|path| Receiver::begin(target, &path, size, mode))
                .map(|rx| {
                    *transfer = Some(rx);
                    Response::Ok
                })
        }
        Request::InstallChunk(data) => match transfer.as_mut() {
            None => Err(no_transfer()),
            Some(rx) => rx.chunk(&data).map(|()| Response::Ok).inspect_err(|_| {
                *transfer = None;
            }),
        },
        Request::InstallCommit { blake3 } => match transfer.take() {
            None => Err(no_transfer()),
            Some(rx) => rx.commit(blake3).map(|done| {
                source.installed(&done);
                Response::Installed {
                    path: done.path,
                    previous: done.previous,
                }
            }),
        },
        Request::InstallAbort => {
            *transfer = None;
            Ok(Response::Ok)
        }
        // Sync requests are answered by `sync::session` before this.
        other => Err(anyhow::anyhow!("unexpected request {other:?}")),
    };
    result.unwrap_or_else(|e| Response::Error(format!("{e:#}")))
}

fn no_transfer() -> anyhow::Error {
    anyhow::anyhow!("no file transfer in progress (it was refused or abandoned earlier)")
}

/// Sends `response`, or an error in its place if it cannot be encoded or is
/// too large for a frame.
async fn send_response<W>(output: &mut W, response: &Response) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
{
    let payload = match frame::encode(response).and_then(|p| {
        if p.len() > frame::MAX_FRAME {
            Err(FrameError::TooLargeToSend {
                len: p.len(),
                max: frame::MAX_FRAME,
            })
        } else {
            Ok(p)
        }
    }) {
        Ok(payload) => payload,
        Err(e) => frame::encode(&Response::Error(format!("this sip-ha cannot answer: {e}")))?,
    };
    frame::write_frame(output, &payload).await?;
    tokio::io::AsyncWriteExt::flush(output)
        .await
        .map_err(FrameError::Write)
}

/// [`serve`] on this process's stdin and stdout: what `sip-ha serve` runs.
///
/// Under sshd both are pipes: they are widened (`widen_pipe`) and
/// read and written without blocking. `tokio::io::stdin` would hand every
/// read to a thread of its own: for 3.7 GB of files that was 56,000
/// hand-offs and seconds of CPU. Anything else (a terminal, a file, a
/// socket) falls back to tokio's standard handles.
pub async fn serve_stdio(source: &dyn LocalNode) -> anyhow::Result<()> {
    use tokio::net::unix::pipe;
    let fd = |n: i32| {
        // SAFETY: 0 and 1 are this process's stdin and stdout, open for its
        // whole life; only borrowed here, for dup.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(n) };
        super::widen_pipe(fd);
        fd.try_clone_to_owned()
    };
    let input = fd(0).and_then(pipe::Receiver::from_owned_fd);
    let output = fd(1).and_then(pipe::Sender::from_owned_fd);
    match (input, output) {
        (Ok(input), Ok(output)) => serve(input, output, source).await,
        (Ok(input), Err(_)) => serve(input, tokio::io::stdout(), source).await,
        (Err(_), Ok(output)) => serve(tokio::io::stdin(), output, source).await,
        (Err(_), Err(_)) => serve(tokio::io::stdin(), tokio::io::stdout(), source).await,
    }
}
