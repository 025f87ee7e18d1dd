//! Just enough SIP for the lab's client: an OPTIONS request over UDP with
//! a fresh branch and Call-ID, and the reply's status, Call-ID and `Server:`
//! header, which says which server answered (each server's Kamailio signs
//! with `lab-<node>`, see [`identity`]).
//!
//! This is deliberately not sip-ha's own probe: the client is the judge of
//! whether the service works, so it must not share code with what it
//! judges.

use sip_ha_core::Role;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// A reply the client got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// When it arrived.
    pub at: Instant,
    pub status: u16,
    pub reason: String,
    /// The `Server:` header, if any.
    pub server: Option<String>,
    /// The server that answered, from the `Server:` header.
    pub answered_by: Option<Role>,
    /// Where it came from.
    pub from: SocketAddr,
}

/// The `Server:` header value of `role`'s Kamailio.
pub fn identity(role: Role) -> String {
    format!("lab-{role}")
}

/// The node whose [`identity`] `server` is.
pub fn role_of(server: &str) -> Option<Role> {
    [Role::Master, Role::Slave]
        .into_iter()
        .find(|r| server.trim() == identity(*r))
}

/// An OPTIONS request for `target`, sent from `local`.
pub fn options_request(target: SocketAddr, local: SocketAddr, call_id: &str) -> String {
    format!(
        "OPTIONS sip:watch@{target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};rport;branch=z9hG4bK-{call_id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:client@{local}>;tag={call_id}\r\n\
         To: <sip:watch@{target}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         User-Agent: sip-ha-lab-client\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The parts of a reply the lab uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub status: u16,
    pub reason: String,
    pub call_id: Option<String>,
    pub server: Option<String>,
}

/// Parses a SIP response; `None` if `bytes` is not one.
pub fn parse_reply(bytes: &[u8]) -> Option<Parsed> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?.strip_prefix("SIP/2.0 ")?;
    let (code, reason) = status_line.split_once(' ').unwrap_or((status_line, ""));
    let status = code.parse().ok()?;
    let mut parsed = Parsed {
        status,
        reason: reason.to_string(),
        call_id: None,
        server: None,
    };
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_string();
        match name.as_str() {
            "call-id" | "i" => parsed.call_id = Some(value),
            "server" => parsed.server = Some(value),
            _ => {}
        }
    }
    Some(parsed)
}

/// A fresh random token for Call-IDs.
pub fn token() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("random bytes for a SIP Call-ID");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Sends one OPTIONS to `target` from the calling thread's namespace and
/// waits up to `timeout` for its reply.
pub fn options_once(target: SocketAddr, timeout: Duration) -> Option<Reply> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    // Connected, so the kernel picks the source address the Via must name.
    sock.connect(target).ok()?;
    let local = sock.local_addr().ok()?;
    let call_id = format!("once-{}", token());
    sock.send(options_request(target, local, &call_id).as_bytes())
        .ok()?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let n = sock.recv(&mut buf).ok()?;
        let Some(p) = parse_reply(&buf[..n]) else {
            continue;
        };
        if p.call_id.as_deref() != Some(call_id.as_str()) || p.status < 200 {
            continue;
        }
        return Some(Reply {
            at: Instant::now(),
            status: p.status,
            reason: p.reason,
            answered_by: p.server.as_deref().and_then(role_of),
            server: p.server,
            from: target,
        });
    }
}
