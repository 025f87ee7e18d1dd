//! A SIP OPTIONS client over UDP and TCP (RFC 3261), just enough to ask a
//! SIP server "are you there?".
//!
//! OPTIONS is the SIP "ping": every SIP stack must answer it, and answering
//! it exercises the same parser and transaction layer that calls go through.
//! One probe is one non-INVITE client transaction:
//!
//! 1. A request with a fresh `branch` (`z9hG4bK` + random, the RFC 3261
//!    magic cookie), random `Call-ID` and `From` tag, `Max-Forwards: 70`, a
//!    `Via` naming our socket with `rport` (so a NAT in between still sends
//!    the reply back to us), `Contact`, `User-Agent: sip-ha`,
//!    `Content-Length: 0`.
//! 2. The reply is ours only if its top `Via` branch, `Call-ID` and `CSeq`
//!    (number and method) match; other SIP messages are ignored. A
//!    provisional `1xx` means "working on it": we keep waiting for the final
//!    response.
//! 3. The final status code is judged against [`SipTarget::alive`]. By
//!    default any final response below 500 is alive: a `404 Not Found` for an
//!    unknown user still proves the SIP stack parsed the request and
//!    answered. `5xx`/`6xx` (Asterisk answers `503` while shutting down) and
//!    silence mean down.
//!
//! Over **UDP** the socket is *connected* to the server, so an ICMP "port
//! unreachable" (nothing listening) comes back as `ECONNREFUSED` at once and
//! the probe fails fast instead of waiting out its timeout. A lost datagram
//! is retransmitted on the RFC 3261 schedule (Timer E, the non-INVITE twin
//! of Timer A): after 500 ms, then doubling up to 4 s, for as long as the
//! timeout allows. A datagram from the server that is not SIP at all is a
//! failure ("the reply was not SIP"): something else answers on that port.
//!
//! Over **TCP** we connect, send, and read one message at a time — headers up
//! to the blank line, then `Content-Length` bytes of body.

use super::{fmt_latency, fmt_timeout, host_port, random_hex, resolve, snippet, ProbeResult};
use super::{strip_brackets, Verdict};
use crate::config::{SipTarget, Transport};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// RFC 3261 T1: the first retransmission interval (UDP).
const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2: the cap on the retransmission interval (UDP).
const T2: Duration = Duration::from_secs(4);
/// The largest SIP message we accept (the largest UDP datagram).
const MAX_MESSAGE: usize = 65_535;

/// Send one OPTIONS to `target` and judge the reply, within `timeout`.
///
/// The result's name is `sip`; [`super::run_check`] replaces it with the
/// check's name. Reuse this for any host (the peer probe builds its target
/// with [`target_for`]).
pub async fn options(target: &SipTarget, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    let verdict = verdict(target, timeout).await;
    let latency = start.elapsed();
    match verdict {
        Ok(detail) => ProbeResult::ok("sip", latency, detail),
        Err(detail) => ProbeResult::fail("sip", latency, detail),
    }
}

/// A target for `sip:HOST:PORT` (for the peer probe, which knows only an
/// address): no user, the default alive codes.
pub fn target_for(host: &str, port: u16, transport: Transport) -> SipTarget {
    let hp = host_port(host, port);
    let uri = match transport {
        Transport::Udp => format!("sip:{hp}"),
        Transport::Tcp => format!("sip:{hp};transport=tcp"),
    };
    SipTarget {
        uri,
        user: None,
        host: host.to_string(),
        port,
        transport,
        alive: Vec::new(),
    }
}

/// Whether `code` (a final response) means alive under `alive`; an empty
/// list means the default, any final response below 500.
pub fn is_alive(code: u16, alive: &[RangeInclusive<u16>]) -> bool {
    if alive.is_empty() {
        (200..500).contains(&code)
    } else {
        alive.iter().any(|r| r.contains(&code))
    }
}

/// The probe with its verdict, bounded by `timeout`.
pub(crate) async fn verdict(target: &SipTarget, timeout: Duration) -> Verdict {
    let start = Instant::now();
    let mut progress = Progress::default();
    match tokio::time::timeout(timeout, transaction(target, start, &mut progress)).await {
        Ok(verdict) => verdict,
        Err(_) => Err(timeout_detail(target, timeout, &progress)),
    }
}

/// What a transaction got to before its time ran out.
#[derive(Default)]
struct Progress {
    /// Where the request went, once resolved.
    addr: Option<SocketAddr>,
    /// TCP: the connection was established.
    connected: bool,
    /// How many times the request was sent (UDP retransmissions).
    sends: u32,
    /// The last provisional response, if any.
    provisional: Option<(u16, String)>,
    /// SIP messages that were not the answer to our request.
    ignored: u32,
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    }
}

fn timeout_detail(target: &SipTarget, timeout: Duration, p: &Progress) -> String {
    let t = fmt_timeout(timeout);
    let proto = transport_name(target.transport);
    let Some(addr) = p.addr else {
        return format!(
            "could not resolve SIP host {} within {t}",
            strip_brackets(&target.host)
        );
    };
    if let Some((code, reason)) = &p.provisional {
        return format!(
            "SIP {code} {reason} from {addr} but no final response within {t} (the server is up but stuck on the request?)"
        );
    }
    if target.transport == Transport::Tcp {
        return if p.connected {
            format!(
                "{addr} accepted the TCP connection but sent no SIP reply within {t} (is the SIP service hung?)"
            )
        } else {
            format!(
                "TCP connect to {addr} for SIP timed out after {t} (host down, or a firewall dropping packets?)"
            )
        };
    }
    let ignored = if p.ignored > 0 {
        format!("; {} unrelated SIP message(s) ignored", p.ignored)
    } else {
        String::new()
    };
    let sends = if p.sends > 1 {
        format!(", sent {} times", p.sends)
    } else {
        String::new()
    };
    format!(
        "no reply within {t}{sends}{ignored} (is the SIP service running on {addr} over {proto}?)"
    )
}

async fn transaction(target: &SipTarget, start: Instant, progress: &mut Progress) -> Verdict {
    let addrs = resolve(&target.host, target.port)
        .await
        .map_err(|e| format!("SIP target {}: {e}", target.uri))?;
    match target.transport {
        Transport::Udp => {
            // A connected UDP socket can talk to one address: the first
            // the resolver gave.
            let addr = addrs[0];
            progress.addr = Some(addr);
            udp_transaction(target, addr, start, progress).await
        }
        Transport::Tcp => {
            let mut last_err = String::new();
            for addr in addrs {
                progress.addr = Some(addr);
                match TcpStream::connect(addr).await {
                    Ok(stream) => {
                        progress.connected = true;
                        return tcp_transaction(target, stream, addr, start, progress).await;
                    }
                    Err(e) => last_err = connect_error(&e, addr, Transport::Tcp),
                }
            }
            Err(last_err)
        }
    }
}

fn connect_error(e: &io::Error, addr: SocketAddr, transport: Transport) -> String {
    let proto = transport_name(transport);
    match e.kind() {
        io::ErrorKind::ConnectionRefused => match transport {
            Transport::Udp => format!(
                "connection refused: nothing listens on {addr} over UDP (ICMP port unreachable; is the SIP service running?)"
            ),
            Transport::Tcp => format!(
                "connection refused: nothing listens on {addr} over TCP (is the SIP service running, with TCP enabled?)"
            ),
        },
        _ => match e.raw_os_error() {
            Some(libc::EHOSTUNREACH) => format!("host unreachable: {addr} ({proto}): {e}"),
            Some(libc::ENETUNREACH) => format!("network unreachable: {addr} ({proto}): {e}"),
            _ => format!("SIP over {proto} to {addr} failed: {e}"),
        },
    }
}

// ---------------------------------------------------------------- UDP ---

async fn udp_transaction(
    target: &SipTarget,
    addr: SocketAddr,
    start: Instant,
    progress: &mut Progress,
) -> Verdict {
    let any: IpAddr = match addr {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0))
        .await
        .map_err(|e| format!("cannot open a UDP socket for SIP: {e}"))?;
    socket
        .connect(addr)
        .await
        .map_err(|e| connect_error(&e, addr, Transport::Udp))?;
    let local = socket
        .local_addr()
        .map_err(|e| format!("cannot read the local UDP address: {e}"))?;
    let request = Request::new(target, local, Transport::Udp);

    let mut interval = T1;
    let mut next_send = tokio::time::Instant::now();
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        if tokio::time::Instant::now() >= next_send {
            socket
                .send(request.text.as_bytes())
                .await
                .map_err(|e| connect_error(&e, addr, Transport::Udp))?;
            progress.sends += 1;
            next_send = tokio::time::Instant::now() + interval;
            // Timer E: double up to T2; once a provisional response has
            // arrived, every T2.
            interval = if progress.provisional.is_some() {
                T2
            } else {
                (interval * 2).min(T2)
            };
        }
        let n = tokio::select! {
            received = socket.recv(&mut buf) => {
                received.map_err(|e| connect_error(&e, addr, Transport::Udp))?
            }
            _ = tokio::time::sleep_until(next_send) => continue,
        };
        match handle(&buf[..n], &request, target, addr, start, progress)? {
            Some(verdict) => return verdict,
            None => continue,
        }
    }
}

// ---------------------------------------------------------------- TCP ---

async fn tcp_transaction(
    target: &SipTarget,
    mut stream: TcpStream,
    addr: SocketAddr,
    start: Instant,
    progress: &mut Progress,
) -> Verdict {
    let _ = stream.set_nodelay(true);
    let local = stream
        .local_addr()
        .map_err(|e| format!("cannot read the local TCP address: {e}"))?;
    let request = Request::new(target, local, Transport::Tcp);
    stream
        .write_all(request.text.as_bytes())
        .await
        .map_err(|e| format!("sending OPTIONS to {addr} over TCP failed: {e}"))?;
    progress.sends += 1;

    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // Take every complete message out of the buffer.
        loop {
            // CRLFs between messages are keep-alives (RFC 5626).
            let skip = buf
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            buf.drain(..skip);
            match frame(&buf) {
                Frame::Complete(len) => {
                    let message: Vec<u8> = buf.drain(..len).collect();
                    if let Some(verdict) =
                        handle(&message, &request, target, addr, start, progress)?
                    {
                        return verdict;
                    }
                }
                Frame::Incomplete => break,
                Frame::Bad(why) => {
                    return Err(format!(
                        "malformed SIP reply from {addr} over TCP: {why} (got {})",
                        snippet(&buf, 60)
                    ))
                }
            }
        }
        if buf.len() > MAX_MESSAGE {
            return Err(format!(
                "reply from {addr} over TCP is larger than {MAX_MESSAGE} bytes without ending its headers (not SIP?): {}",
                snippet(&buf, 60)
            ));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the SIP reply from {addr} over TCP failed: {e}"))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                format!("{addr} closed the TCP connection without answering the OPTIONS")
            } else if matches!(parse(&buf), Message::NotSip) {
                format!(
                    "reply from {addr} over TCP was not SIP: {}",
                    snippet(&buf, 60)
                )
            } else {
                format!(
                    "{addr} closed the TCP connection in the middle of a reply (truncated: {})",
                    snippet(&buf, 60)
                )
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        if !looks_like_sip(&buf) {
            return Err(format!(
                "reply from {addr} over TCP was not SIP: {}",
                snippet(&buf, 60)
            ));
        }
    }
}

/// Could `buf` be the start of a SIP message? (False only once enough bytes
/// are in to tell.)
fn looks_like_sip(buf: &[u8]) -> bool {
    let first_line_end = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
    let line = &buf[..first_line_end];
    let prefix = b"SIP/2.0 ";
    let n = line.len().min(prefix.len());
    if line[..n].eq_ignore_ascii_case(&prefix[..n]) {
        return true;
    }
    // A request: "METHOD uri SIP/2.0" — only decidable once the line ends.
    if first_line_end == buf.len() {
        return line.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
    }
    let line = String::from_utf8_lossy(line);
    line.trim_end().ends_with("SIP/2.0")
}

enum Frame {
    /// A whole message of this many bytes is at the start of the buffer.
    Complete(usize),
    Incomplete,
    Bad(String),
}

/// Find the end of the first message in a stream buffer.
fn frame(buf: &[u8]) -> Frame {
    let Some(header_end) = find_header_end(buf) else {
        return Frame::Incomplete;
    };
    let head = String::from_utf8_lossy(&buf[..header_end]);
    let headers = parse_headers(head.lines().skip(1));
    let length = match header(&headers, "content-length", Some("l")) {
        None => 0,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n <= MAX_MESSAGE => n,
            Ok(n) => return Frame::Bad(format!("Content-Length {n} is too large")),
            Err(_) => return Frame::Bad(format!("Content-Length {v:?} is not a number")),
        },
    };
    if buf.len() >= header_end + length {
        Frame::Complete(header_end + length)
    } else {
        Frame::Incomplete
    }
}

/// The index just past the blank line ending the headers (CRLF CRLF, or a
/// bare LF LF from a sloppy peer).
fn find_header_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

// ------------------------------------------------------------ request ---

struct Request {
    branch: String,
    call_id: String,
    cseq: u32,
    text: String,
}

impl Request {
    fn new(target: &SipTarget, local: SocketAddr, transport: Transport) -> Self {
        let branch = format!("z9hG4bK{}", random_hex(10));
        let call_id = format!("{}@sip-ha", random_hex(12));
        let tag = random_hex(6);
        // Any number below 2^31 will do (RFC 3261 8.1.1.5).
        let cseq = u32::from_str_radix(&random_hex(2), 16).unwrap_or(0) + 1;
        let local_host = match local.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let (via_proto, contact_transport) = match transport {
            Transport::Udp => ("UDP", "udp"),
            Transport::Tcp => ("TCP", "tcp"),
        };
        let uri = target.uri.trim();
        let text = format!(
            "OPTIONS {uri} SIP/2.0\r\n\
             Via: SIP/2.0/{via_proto} {local};rport;branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: \"sip-ha\" <sip:sip-ha@{local_host}>;tag={tag}\r\n\
             To: <{uri}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} OPTIONS\r\n\
             Contact: <sip:sip-ha@{local};transport={contact_transport}>\r\n\
             Accept: application/sdp\r\n\
             User-Agent: sip-ha/{version}\r\n\
             Content-Length: 0\r\n\
             \r\n",
            version = env!("CARGO_PKG_VERSION"),
        );
        Request {
            branch,
            call_id,
            cseq,
            text,
        }
    }
}

// ----------------------------------------------------------- response ---

/// A parsed SIP response (headers only; the body is never needed).
#[derive(Debug)]
struct Response {
    code: u16,
    reason: String,
    headers: Vec<(String, String)>,
}

#[derive(Debug)]
enum Message {
    Response(Response),
    /// A SIP request (a server pinging us back): not our answer.
    Request,
    /// Only whitespace: a keep-alive.
    KeepAlive,
    /// Does not start like a SIP message at all.
    NotSip,
    /// Starts like a SIP response but cannot be read.
    Malformed(String),
}

fn parse(bytes: &[u8]) -> Message {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Message::KeepAlive;
    }
    let header_end = find_header_end(bytes).unwrap_or(bytes.len());
    let head = String::from_utf8_lossy(&bytes[..header_end]);
    let mut lines = head.lines();
    let first = lines.next().unwrap_or("").trim_end();
    let Some(rest) = strip_prefix_ignore_case(first, "SIP/2.0") else {
        return if first.ends_with("SIP/2.0") && first.split(' ').count() == 3 {
            Message::Request
        } else {
            Message::NotSip
        };
    };
    let Some(rest) = rest.strip_prefix(' ') else {
        return Message::Malformed(format!("status line {first:?} has no status code"));
    };
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    let code = match code.parse::<u16>() {
        Ok(c) if code.len() == 3 && (100..=699).contains(&c) => c,
        _ => {
            return Message::Malformed(format!(
                "status line {first:?} has no valid 3-digit status code"
            ))
        }
    };
    Message::Response(Response {
        code,
        reason: reason.trim().to_string(),
        headers: parse_headers(lines),
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Header lines into (lowercase name, value), unfolding continuation lines.
fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    headers
}

/// The first value of a header, by full or compact name.
fn header<'a>(
    headers: &'a [(String, String)],
    name: &str,
    compact: Option<&str>,
) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name || Some(n.as_str()) == compact)
        .map(|(_, v)| v.as_str())
}

/// The `branch` parameter of the topmost Via.
fn top_via_branch(headers: &[(String, String)]) -> Option<&str> {
    let via = header(headers, "via", Some("v"))?;
    // Several Vias may share one header line, separated by commas.
    let top = via.split(',').next()?;
    top.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        k.trim().eq_ignore_ascii_case("branch").then(|| v.trim())
    })
}

/// Deal with one received message: `Ok(Some(verdict))` ends the
/// transaction, `Ok(None)` keeps waiting, `Err` fails the probe.
fn handle(
    bytes: &[u8],
    request: &Request,
    target: &SipTarget,
    addr: SocketAddr,
    start: Instant,
    progress: &mut Progress,
) -> Result<Option<Verdict>, String> {
    let proto = transport_name(target.transport);
    let response = match parse(bytes) {
        Message::Response(r) => r,
        Message::KeepAlive => return Ok(None),
        Message::Request => {
            progress.ignored += 1;
            return Ok(None);
        }
        Message::NotSip => {
            return Err(format!(
                "reply from {addr} over {proto} was not SIP: {} (is something other than a SIP server listening there?)",
                snippet(bytes, 60)
            ))
        }
        Message::Malformed(why) => {
            return Err(format!(
                "malformed SIP reply from {addr} over {proto}: {why}"
            ))
        }
    };
    // Which transaction is it for? Without these headers we cannot tell:
    // a reply cut short.
    let truncated = |what: &str| {
        format!(
            "truncated or malformed SIP reply from {addr} over {proto}: no {what} (got {})",
            snippet(bytes, 80)
        )
    };
    let branch = top_via_branch(&response.headers).ok_or_else(|| truncated("Via branch"))?;
    let call_id =
        header(&response.headers, "call-id", Some("i")).ok_or_else(|| truncated("Call-ID"))?;
    let cseq = header(&response.headers, "cseq", None).ok_or_else(|| truncated("CSeq"))?;
    let mut cseq_parts = cseq.split_whitespace();
    let cseq_num = cseq_parts.next().and_then(|n| n.parse::<u32>().ok());
    let cseq_method = cseq_parts.next().unwrap_or("");
    if branch != request.branch
        || call_id != request.call_id
        || cseq_num != Some(request.cseq)
        || cseq_method != "OPTIONS"
    {
        progress.ignored += 1;
        return Ok(None);
    }
    if response.code < 200 {
        progress.provisional = Some((response.code, response.reason));
        return Ok(None);
    }
    let elapsed = fmt_latency(start.elapsed());
    let status = if response.reason.is_empty() {
        response.code.to_string()
    } else {
        format!("{} {}", response.code, response.reason)
    };
    Ok(Some(if is_alive(response.code, &target.alive) {
        Ok(format!(
            "SIP {status} from {addr} over {proto} in {elapsed}"
        ))
    } else {
        Err(format!(
            "SIP {status} from {addr} over {proto} in {elapsed}: {} does not count as alive (alive: {})",
            response.code,
            describe_alive(&target.alive)
        ))
    }))
}

fn describe_alive(alive: &[RangeInclusive<u16>]) -> String {
    if alive.is_empty() {
        return "any final response below 500".to_string();
    }
    alive
        .iter()
        .map(|r| {
            if r.start() == r.end() {
                r.start().to_string()
            } else {
                format!("{}-{}", r.start(), r.end())
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SipTarget {
        SipTarget {
            uri: "sip:ping@127.0.0.1:5060".into(),
            user: Some("ping".into()),
            host: "127.0.0.1".into(),
            port: 5060,
            transport: Transport::Udp,
            alive: Vec::new(),
        }
    }

    fn reply_to(req: &Request, status: &str) -> Vec<u8> {
        format!(
            "SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 127.0.0.1:4000;rport=4000;branch={}\r\n\
             Call-ID: {}\r\nCSeq: {} OPTIONS\r\nContent-Length: 0\r\n\r\n",
            req.branch, req.call_id, req.cseq
        )
        .into_bytes()
    }

    fn run(bytes: &[u8], req: &Request, t: &SipTarget) -> Result<Option<Verdict>, String> {
        let mut p = Progress::default();
        handle(
            bytes,
            req,
            t,
            "127.0.0.1:5060".parse().unwrap(),
            Instant::now(),
            &mut p,
        )
    }

    #[test]
    fn request_has_the_mandatory_headers() {
        let t = target();
        let r = Request::new(&t, "127.0.0.1:4000".parse().unwrap(), Transport::Udp);
        assert!(r
            .text
            .starts_with("OPTIONS sip:ping@127.0.0.1:5060 SIP/2.0\r\n"));
        assert!(r.branch.starts_with("z9hG4bK"));
        for h in [
            "Via: SIP/2.0/UDP 127.0.0.1:4000;rport;branch=z9hG4bK",
            "Max-Forwards: 70\r\n",
            "Call-ID: ",
            "CSeq: ",
            "Contact: <sip:sip-ha@127.0.0.1:4000;transport=udp>",
            "User-Agent: sip-ha/",
            "Content-Length: 0\r\n\r\n",
        ] {
            assert!(r.text.contains(h), "missing {h:?} in {}", r.text);
        }
        let r6 = Request::new(&t, "[::1]:4000".parse().unwrap(), Transport::Tcp);
        assert!(r6
            .text
            .contains("Via: SIP/2.0/TCP [::1]:4000;rport;branch="));
        assert!(r6.text.contains("<sip:sip-ha@[::1]>"));
    }

    #[test]
    fn matching_final_response_is_judged() {
        let t = target();
        let req = Request::new(&t, "127.0.0.1:4000".parse().unwrap(), Transport::Udp);
        assert!(matches!(
            run(&reply_to(&req, "200 OK"), &req, &t),
            Ok(Some(Ok(_)))
        ));
        assert!(matches!(
            run(&reply_to(&req, "404 Not Found"), &req, &t),
            Ok(Some(Ok(_)))
        ));
        let down = run(&reply_to(&req, "503 Service Unavailable"), &req, &t);
        let Ok(Some(Err(detail))) = down else {
            panic!("{down:?}")
        };
        assert!(detail.contains("503 Service Unavailable"), "{detail}");
        assert!(matches!(
            run(&reply_to(&req, "100 Trying"), &req, &t),
            Ok(None)
        ));
    }

    #[test]
    fn unrelated_responses_are_ignored() {
        let t = target();
        let req = Request::new(&t, "127.0.0.1:4000".parse().unwrap(), Transport::Udp);
        let other = Request::new(&t, "127.0.0.1:4000".parse().unwrap(), Transport::Udp);
        assert!(matches!(
            run(&reply_to(&other, "200 OK"), &req, &t),
            Ok(None)
        ));
        assert!(matches!(run(b"\r\n\r\n", &req, &t), Ok(None)));
        assert!(matches!(
            run(b"OPTIONS sip:x@y SIP/2.0\r\nVia: x\r\n\r\n", &req, &t),
            Ok(None)
        ));
    }

    #[test]
    fn garbage_and_truncation_fail_with_a_reason() {
        let t = target();
        let req = Request::new(&t, "127.0.0.1:4000".parse().unwrap(), Transport::Udp);
        for (bytes, want) in [
            (&b"HELLO"[..], "not SIP"),
            (b"\x00\xff\xfe", "not SIP"),
            (b"SIP/2.0", "no status code"),
            (b"SIP/2.0 2", "3-digit"),
            (b"SIP/2.0 abc OK\r\n\r\n", "3-digit"),
            (b"SIP/2.0 999 Huh\r\n\r\n", "3-digit"),
            (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9", "Call-ID"),
            (b"SIP/2.0 200 OK", "Via branch"),
        ] {
            match run(bytes, &req, &t) {
                Err(detail) => assert!(detail.contains(want), "{detail:?} lacks {want:?}"),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn alive_ranges() {
        assert!(is_alive(404, &[]));
        assert!(!is_alive(503, &[]));
        assert!(!is_alive(404, &[200..=299]));
        assert!(is_alive(202, &[200..=299]));
        assert_eq!(describe_alive(&[200..=299, 404..=404]), "200-299, 404");
    }

    #[test]
    fn stream_framing() {
        assert!(matches!(
            frame(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n"),
            Frame::Incomplete
        ));
        assert!(matches!(
            frame(b"SIP/2.0 200 OK\r\nl: 3\r\n\r\nab"),
            Frame::Incomplete
        ));
        let m = b"SIP/2.0 200 OK\r\nl: 3\r\n\r\nabcSIP/2.0";
        assert!(matches!(frame(m), Frame::Complete(n) if n == m.len() - 7));
        assert!(matches!(
            frame(b"SIP/2.0 200 OK\r\nContent-Length: x\r\n\r\n"),
            Frame::Bad(_)
        ));
        assert!(looks_like_sip(b"SI"));
        assert!(looks_like_sip(b"sip/2.0 200"));
        assert!(!looks_like_sip(b"HELLO\r\n"));
        assert!(!looks_like_sip(b"\x00"));
    }

    #[test]
    fn target_for_brackets_ipv6() {
        let t = target_for("::1", 5062, Transport::Tcp);
        assert_eq!(t.uri, "sip:[::1]:5062;transport=tcp");
        assert_eq!(
            target_for("10.0.0.2", 5060, Transport::Udp).uri,
            "sip:10.0.0.2:5060"
        );
    }
}
