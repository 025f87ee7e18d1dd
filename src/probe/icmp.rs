//! ICMP echo ("ping") for witnesses, IPv4 and IPv6, without running `ping`.
//!
//! Linux offers two ways to send an echo request:
//!
//! * An **unprivileged ICMP datagram socket** (`socket(AF_INET, SOCK_DGRAM,
//!   IPPROTO_ICMP)`), allowed when the process's group is inside
//!   `net.ipv4.ping_group_range` (this one sysctl governs ICMPv6 too). The
//!   kernel owns the echo identifier (it rewrites ours) and hands us only
//!   the replies to our own socket, without the IP header.
//! * A **raw socket** (`SOCK_RAW`), which needs `CAP_NET_RAW` (root has it).
//!   It sees every ICMP packet the host receives, so replies are matched by
//!   identifier, sequence number and payload; IPv4 raw sockets deliver the
//!   IP header in front of the ICMP message, IPv6 ones do not.
//!
//! We try the datagram socket first and fall back to raw. ICMPv4 messages
//! carry a checksum we compute; for ICMPv6 the kernel computes it (it covers
//! a pseudo-header with addresses only the kernel knows for sure).
//!
//! A request is resent every second until the caller's timeout, each with
//! the next sequence number; a reply to any of them counts.

use super::{fmt_latency, Verdict};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
/// Resend interval.
const RESEND: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SocketKind {
    /// Unprivileged ICMP datagram socket.
    Dgram,
    /// Raw socket (CAP_NET_RAW).
    Raw,
}

impl SocketKind {
    fn describe(self) -> &'static str {
        match self {
            SocketKind::Dgram => "unprivileged ICMP socket",
            SocketKind::Raw => "raw socket",
        }
    }
}

/// Send echo requests to `ip` until one is answered. No timeout: the caller
/// adds it.
pub(crate) async fn echo(ip: IpAddr) -> Verdict {
    let start = Instant::now();
    // ::ffff:192.0.2.1 is an IPv4 host: ping it over ICMPv4.
    let ip = ip.to_canonical();
    let (socket, kind) = open(ip)?;
    let v6 = ip.is_ipv6();
    let mut token = [0u8; 8];
    // Uniqueness, not secrecy: a failure just leaves zeros.
    let _ = getrandom::fill(&mut token);
    let id = u16::from_be_bytes([token[0], token[1]]);
    let mut payload = b"sip-ha witness ".to_vec();
    payload.extend_from_slice(&token);

    let dest = SocketAddr::new(ip, 0);
    let mut seq: u16 = 0;
    let mut next_send = tokio::time::Instant::now();
    let mut buf = vec![0u8; 2048];
    loop {
        if tokio::time::Instant::now() >= next_send {
            seq = seq.wrapping_add(1);
            let packet = echo_request(v6, id, seq, &payload);
            socket
                .send_to(&packet, dest)
                .await
                .map_err(|e| send_error(&e, ip))?;
            next_send = tokio::time::Instant::now() + RESEND;
        }
        let (n, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => {
                r.map_err(|e| format!("receiving ICMP from {ip} failed: {e}"))?
            }
            _ = tokio::time::sleep_until(next_send) => continue,
        };
        if !same_ip(from.ip(), ip) {
            continue;
        }
        let Some(reply) = parse_reply(&buf[..n], v6, kind) else {
            continue;
        };
        let id_ok = kind == SocketKind::Dgram || reply.id == id;
        // A reply to any request we sent so far.
        let seq_ok = reply.seq != 0 && reply.seq <= seq;
        if id_ok && seq_ok && reply.payload == payload.as_slice() {
            return Ok(format!(
                "ICMP echo reply from {ip} in {} ({})",
                fmt_latency(start.elapsed()),
                kind.describe()
            ));
        }
    }
}

/// IPv4-mapped IPv6 addresses compare equal to their IPv4 form.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

fn send_error(e: &io::Error, ip: IpAddr) -> String {
    match e.raw_os_error() {
        Some(libc::ENETUNREACH) => format!("cannot reach {ip}: network unreachable (no route?)"),
        Some(libc::EHOSTUNREACH) => format!("cannot reach {ip}: host unreachable"),
        Some(libc::EACCES) | Some(libc::EPERM) => {
            format!("sending ICMP to {ip} was refused: {e} (a local firewall rule?)")
        }
        _ => format!("sending ICMP echo to {ip} failed: {e}"),
    }
}

/// Open an ICMP socket for `ip`'s family: datagram if allowed, else raw.
fn open(ip: IpAddr) -> Result<(UdpSocket, SocketKind), String> {
    let (domain, protocol) = match ip {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    let family = if ip.is_ipv6() { "ICMPv6" } else { "ICMP" };
    let (socket, kind) = match Socket::new(domain, Type::DGRAM, Some(protocol)) {
        Ok(s) => (s, SocketKind::Dgram),
        Err(dgram_err) if is_permission(&dgram_err) => {
            match Socket::new(domain, Type::RAW, Some(protocol)) {
                Ok(s) => (s, SocketKind::Raw),
                Err(raw_err) if is_permission(&raw_err) => {
                    return Err(no_permission(ip, family));
                }
                Err(raw_err) => {
                    return Err(format!("cannot open a raw {family} socket: {raw_err}"))
                }
            }
        }
        Err(e) => return Err(format!("cannot open an {family} socket: {e}")),
    };
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("cannot make the {family} socket non-blocking: {e}"))?;
    // An ICMP socket is a datagram socket as far as send_to/recv_from go;
    // tokio's UdpSocket gives us readiness-driven I/O on it.
    let std_socket: std::net::UdpSocket = socket.into();
    let socket = UdpSocket::from_std(std_socket)
        .map_err(|e| format!("cannot register the {family} socket with tokio: {e}"))?;
    Ok((socket, kind))
}

fn is_permission(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM))
}

fn no_permission(ip: IpAddr, family: &str) -> String {
    let gid = nix::unistd::getegid();
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unreadable".to_string());
    format!(
        "cannot send {family} echo to {ip}: not allowed to open an unprivileged ICMP socket \
         (group {gid} is outside net.ipv4.ping_group_range = \"{range}\") nor a raw socket \
         (needs CAP_NET_RAW). Fix one: `sysctl -w net.ipv4.ping_group_range=\"{gid} {gid}\"`, \
         or grant CAP_NET_RAW (AmbientCapabilities=CAP_NET_RAW in the systemd unit), or use a TCP witness"
    )
}

/// An echo request: type, code, checksum, identifier, sequence, payload.
fn echo_request(v6: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(8 + payload.len());
    packet.push(if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 });
    packet.push(0);
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(payload);
    if !v6 {
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word = match pair {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

struct Reply<'a> {
    id: u16,
    seq: u16,
    payload: &'a [u8],
}

/// An echo reply out of what the socket delivered, or `None` for anything
/// else (other ICMP traffic a raw socket sees, our own request on loopback).
fn parse_reply(packet: &[u8], v6: bool, kind: SocketKind) -> Option<Reply<'_>> {
    let icmp = if !v6 && kind == SocketKind::Raw {
        // Raw IPv4 sockets deliver the IP header first.
        let ihl = usize::from(packet.first()? & 0x0f) * 4;
        packet.get(ihl..)?
    } else {
        packet
    };
    let want = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    if icmp.len() < 8 || icmp[0] != want || icmp[1] != 0 {
        return None;
    }
    Some(Reply {
        id: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        payload: &icmp[8..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_packet() {
        // Echo request id 1 seq 1, no payload: 0x0800 + 0x0001 + 0x0001.
        let p = echo_request(false, 1, 1, &[]);
        assert_eq!(&p[2..4], &(!0x0802u16).to_be_bytes());
        // A packet including its checksum sums to zero.
        let p = echo_request(false, 0xbeef, 7, b"odd");
        assert_eq!(checksum(&p), 0);
    }

    #[test]
    fn replies_parsed_and_others_ignored() {
        let mut reply = echo_request(true, 9, 3, b"x");
        reply[0] = ECHO_REPLY_V6;
        let r = parse_reply(&reply, true, SocketKind::Raw).unwrap();
        assert_eq!((r.id, r.seq, r.payload), (9, 3, &b"x"[..]));
        // Our own request, as a raw socket sees it on loopback.
        assert!(parse_reply(&echo_request(true, 9, 3, b"x"), true, SocketKind::Raw).is_none());
        // Raw IPv4: a 20-byte IP header in front.
        let mut v4 = vec![0x45u8];
        v4.extend_from_slice(&[0; 19]);
        let mut icmp = echo_request(false, 5, 6, b"y");
        icmp[0] = ECHO_REPLY_V4;
        v4.extend_from_slice(&icmp);
        let r = parse_reply(&v4, false, SocketKind::Raw).unwrap();
        assert_eq!((r.id, r.seq), (5, 6));
        assert!(parse_reply(&[0x45], false, SocketKind::Raw).is_none());
        assert!(parse_reply(&[], false, SocketKind::Dgram).is_none());
    }
}
