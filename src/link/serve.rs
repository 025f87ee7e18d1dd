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

use super::frame::{self, FrameError};
use super::protocol::{self, Request, Response, StatusReply};
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
}

/// A [`LocalNode`] that reads a [`StatusReply`] as JSON from a file on
/// every request: for tests and labs (`sip-ha serve --status-file FILE`).
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
    let mut input = BufReader::new(input);
    let mut output = BufWriter::new(output);
    protocol::server_handshake(&mut input, &mut output)
        .await
        .context("sip-ha serve: handshake with the connecting node failed")?;
    loop {
        let payload = match frame::read_frame(&mut input).await {
            Ok(Some(payload)) => payload,
            Ok(None) => return Ok(()),
            Err(e) => return Err(e).context("sip-ha serve: reading a request failed"),
        };
        let response = match frame::decode::<Request>(&payload) {
            Ok(request) => answer(request, source),
            // The frame boundary is intact, so the session can go on: a newer
            // client may have sent a request this version does not know.
            Err(e) => Response::Error(format!("this sip-ha cannot answer: {e}")),
        };
        send_response(&mut output, &response)
            .await
            .context("sip-ha serve: sending an answer failed")?;
    }
}

fn answer(request: Request, source: &dyn LocalNode) -> Response {
    match request {
        Request::Status => match source.status() {
            Ok(reply) => Response::Status(reply),
            Err(e) => Response::Error(format!("{e:#}")),
        },
        Request::Wake => match source.wake() {
            Ok(woken) => Response::Woken(woken),
            Err(e) => Response::Error(format!("{e:#}")),
        },
    }
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
pub async fn serve_stdio(source: &dyn LocalNode) -> anyhow::Result<()> {
    serve(tokio::io::stdin(), tokio::io::stdout(), source).await
}
