//! The Asterisk Manager Interface (AMI): log in and `Action: Ping`.
//!
//! AMI is a line protocol on TCP (port 5038 by default). The server speaks
//! first with a banner line, `Asterisk Call Manager/x.y.z`. After that both
//! sides exchange *messages*: `Key: Value` lines ending in CRLF, a blank
//! line ending the message. A client sends `Action:` messages and gets a
//! `Response:` message back; the server may also send `Event:` messages at
//! any time (after login it announces `FullyBooted`, for one), which we
//! skip. Each action carries an `ActionID` that Asterisk echoes, so a reply
//! is matched to its action.
//!
//! The probe: banner, `Login` (expects `Response: Success`; `Response:
//! Error` means the user or secret is wrong, or the manager.conf `permit`
//! refuses us), `Ping` (expects `Response: Success` with `Ping: Pong`, or
//! `Response: Pong` from old Asterisk), then `Logoff`. A Ping answered
//! proves the manager thread and the core are serving, which a bare TCP
//! connect does not.
//!
//! The secret never appears in a detail.

use super::{fmt_latency, host_port, resolve, snippet, Verdict};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

/// The banner's prefix.
const BANNER: &str = "Asterisk Call Manager/";
/// The longest line we read.
const MAX_LINE: u64 = 8192;
/// How many unrelated messages (events) we skip waiting for one reply.
const MAX_SKIPPED: usize = 1000;

/// Log in, Ping, log off. No timeout: the caller adds it.
pub(crate) async fn probe(host: &str, port: u16, user: &str, secret: &str) -> Verdict {
    let start = Instant::now();
    if has_line_break(user) || has_line_break(secret) {
        return Err(
            "the AMI username or secret contains a line break, which AMI cannot carry".into(),
        );
    }
    let addrs = resolve(host, port).await?;
    let (stream, addr) = connect(&addrs).await?;
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = Session {
        reader: BufReader::new(read),
        addr,
    };

    let banner = reader.line().await?.ok_or_else(|| {
        format!("{addr} closed the connection before the AMI banner (AMI disabled, or our address not permitted?)")
    })?;
    let Some(version) = banner.strip_prefix(BANNER) else {
        return Err(format!(
            "not an Asterisk Manager: {addr} greeted with {} instead of \"{BANNER}x.y.z\"",
            snippet(banner.as_bytes(), 60)
        ));
    };
    let version = version.trim().to_string();

    let login_id = format!("sip-ha-login-{}", super::random_hex(4));
    send(
        &mut write,
        addr,
        &format!("Action: Login\r\nActionID: {login_id}\r\nUsername: {user}\r\nSecret: {secret}\r\nEvents: off\r\n\r\n"),
    )
    .await?;
    let login = reader.response(&login_id, "Login").await?;
    match value(&login, "Response") {
        Some(r) if r.eq_ignore_ascii_case("Success") => {}
        Some(r) if r.eq_ignore_ascii_case("Error") => {
            let why = value(&login, "Message").unwrap_or("no reason given");
            return Err(format!(
                "AMI login refused: {why} (user {user:?} at {addr}; check manager.conf)"
            ));
        }
        _ => {
            return Err(format!(
                "unexpected AMI answer to Login from {addr}: {}",
                describe(&login)
            ))
        }
    }

    let ping_id = format!("sip-ha-ping-{}", super::random_hex(4));
    send(
        &mut write,
        addr,
        &format!("Action: Ping\r\nActionID: {ping_id}\r\n\r\n"),
    )
    .await?;
    let ping = reader.response(&ping_id, "Ping").await?;
    let response = value(&ping, "Response").unwrap_or("");
    let pong = value(&ping, "Ping").is_some_and(|p| p.eq_ignore_ascii_case("Pong"));
    let ok = (response.eq_ignore_ascii_case("Success") && (pong || value(&ping, "Ping").is_none()))
        || response.eq_ignore_ascii_case("Pong");
    // Log off politely whatever the answer; the reply does not matter.
    let _ = write.write_all(b"Action: Logoff\r\n\r\n").await;
    let _ = write.shutdown().await;
    if !ok {
        return Err(format!(
            "AMI Ping at {addr} was not answered with Success/Pong: {}",
            describe(&ping)
        ));
    }
    Ok(format!(
        "AMI at {addr} (Asterisk Call Manager/{version}): logged in as {user:?}, Ping answered, in {}",
        fmt_latency(start.elapsed())
    ))
}

fn has_line_break(s: &str) -> bool {
    s.contains(['\r', '\n'])
}

async fn connect(addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), String> {
    let mut last_err = "no address to connect to".to_string();
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok((stream, addr)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last_err = format!(
                "connection refused by {} (is Asterisk running, with AMI enabled in manager.conf?)",
                host_port(&addr.ip().to_string(), addr.port())
            )
            }
            Err(e) => last_err = super::tcp::connect_error(&e, addr),
        }
    }
    Err(last_err)
}

async fn send(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    addr: SocketAddr,
    text: &str,
) -> Result<(), String> {
    write
        .write_all(text.as_bytes())
        .await
        .map_err(|e| format!("sending to AMI at {addr} failed: {e}"))
}

/// One AMI message: its `Key: Value` lines in order.
type AmiMessage = Vec<(String, String)>;

fn value<'a>(message: &'a AmiMessage, key: &str) -> Option<&'a str> {
    message
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// A message on one line, for a detail (never a secret: it is something
/// the server sent).
fn describe(message: &AmiMessage) -> String {
    let text = message
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("; ");
    snippet(text.as_bytes(), 120)
}

struct Session {
    reader: BufReader<OwnedReadHalf>,
    addr: SocketAddr,
}

impl Session {
    /// One line without its CRLF; `None` at end of stream.
    async fn line(&mut self) -> Result<Option<String>, String> {
        let mut buf = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| format!("reading from AMI at {} failed: {e}", self.addr))?;
        if n == 0 {
            return Ok(None);
        }
        if buf.last() != Some(&b'\n') && n as u64 >= MAX_LINE {
            return Err(format!(
                "AMI at {} sent a line longer than {MAX_LINE} bytes: {}",
                self.addr,
                snippet(&buf, 60)
            ));
        }
        let text = String::from_utf8_lossy(&buf);
        Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
    }

    /// One message; `None` at end of stream before any line of it.
    async fn message(&mut self, during: &str) -> Result<Option<AmiMessage>, String> {
        let mut message = AmiMessage::new();
        loop {
            let Some(line) = self.line().await? else {
                return if message.is_empty() {
                    Ok(None)
                } else {
                    Err(format!(
                        "AMI at {} closed the connection in the middle of the answer to {during}",
                        self.addr
                    ))
                };
            };
            if line.trim().is_empty() {
                if message.is_empty() {
                    continue; // stray blank line between messages
                }
                return Ok(Some(message));
            }
            match line.split_once(':') {
                Some((k, v)) => message.push((k.trim().to_string(), v.trim().to_string())),
                // A line without a colon (command output, or junk):
                // keep it so a detail can show it.
                None => message.push((String::new(), line)),
            }
        }
    }

    /// The response to the action with `action_id`, skipping events and
    /// replies to anything else.
    async fn response(&mut self, action_id: &str, action: &str) -> Result<AmiMessage, String> {
        for _ in 0..MAX_SKIPPED {
            let Some(message) = self.message(action).await? else {
                return Err(format!(
                    "AMI at {} closed the connection without answering {action}",
                    self.addr
                ));
            };
            if value(&message, "Event").is_some() {
                continue;
            }
            if value(&message, "Response").is_none() {
                return Err(format!(
                    "AMI at {} sent something that is neither a Response nor an Event while we waited for the answer to {action}: {}",
                    self.addr,
                    describe(&message)
                ));
            }
            match value(&message, "ActionID") {
                Some(id) if id != action_id => continue,
                _ => return Ok(message),
            }
        }
        Err(format!(
            "AMI at {} sent over {MAX_SKIPPED} other messages without answering {action}",
            self.addr
        ))
    }
}
