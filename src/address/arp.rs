//! IPv4: gratuitous ARP and RFC 5227 ARP probes, built by hand.
//!
//! An ARP frame on Ethernet is 14 bytes of Ethernet header (destination,
//! source, EtherType 0x0806) and 28 bytes of ARP (hardware type 1, protocol
//! 0x0800, lengths 6 and 4, operation, then sender MAC and IP, target MAC
//! and IP), padded to the 60-byte Ethernet minimum.
//!
//! * Gratuitous ARP: sender IP = target IP = the service address, sent to
//!   broadcast, once as a request (target MAC zero) and once as a reply
//!   (target MAC = ours, which is what Linux requires to treat a reply as
//!   gratuitous). Receivers with an entry for the address update it.
//! * Probe: "who has A? tell 0.0.0.0" from our MAC. A sender IP of zero
//!   teaches nobody anything, and the holder of A answers with its MAC.

use super::packet::{self, PacketSocket};
use super::MacAddr;
use std::net::Ipv4Addr;
use std::time::Duration;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;
const OP_REQUEST: u16 = 1;
const OP_REPLY: u16 = 2;
const ARP_LEN: usize = 14 + 28;
/// Ethernet's minimum frame without the FCS.
const MIN_FRAME: usize = 60;

/// The fields of an ARP packet for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Arp {
    pub op: u16,
    /// Ethernet source, which may differ from `sender_mac` (proxies).
    pub eth_src: MacAddr,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

/// Builds the Ethernet frame for `arp`, sent from `arp.eth_src` to `eth_dst`.
pub(super) fn frame(eth_dst: MacAddr, arp: &Arp) -> [u8; MIN_FRAME] {
    let mut f = [0u8; MIN_FRAME];
    f[0..6].copy_from_slice(&eth_dst.0);
    f[6..12].copy_from_slice(&arp.eth_src.0);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f[16..18].copy_from_slice(&ETH_P_IP.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&arp.op.to_be_bytes());
    f[22..28].copy_from_slice(&arp.sender_mac.0);
    f[28..32].copy_from_slice(&arp.sender_ip.octets());
    f[32..38].copy_from_slice(&arp.target_mac.0);
    f[38..42].copy_from_slice(&arp.target_ip.octets());
    f
}

/// Parses an Ethernet frame as IPv4-over-Ethernet ARP; anything else
/// (short, another protocol, odd lengths) is `None`.
pub(super) fn parse(f: &[u8]) -> Option<Arp> {
    if f.len() < ARP_LEN
        || f[12..14] != ETH_P_ARP.to_be_bytes()
        || f[14..16] != 1u16.to_be_bytes()
        || f[16..18] != ETH_P_IP.to_be_bytes()
        || f[18] != 6
        || f[19] != 4
    {
        return None;
    }
    let mac = |at: usize| MacAddr(f[at..at + 6].try_into().unwrap_or([0; 6]));
    let ip = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
    Some(Arp {
        op: u16::from_be_bytes([f[20], f[21]]),
        eth_src: mac(6),
        sender_mac: mac(22),
        sender_ip: ip(28),
        target_mac: mac(32),
        target_ip: ip(38),
    })
}

/// The two gratuitous ARP frames for `addr` at `mac`: a request and a reply.
pub(super) fn gratuitous(mac: MacAddr, addr: Ipv4Addr) -> [[u8; MIN_FRAME]; 2] {
    let request = Arp {
        op: OP_REQUEST,
        eth_src: mac,
        sender_mac: mac,
        sender_ip: addr,
        target_mac: MacAddr::ZERO,
        target_ip: addr,
    };
    let reply = Arp {
        op: OP_REPLY,
        target_mac: mac,
        ..request
    };
    [
        frame(MacAddr::BROADCAST, &request),
        frame(MacAddr::BROADCAST, &reply),
    ]
}

/// The RFC 5227 probe for `addr` from `mac`.
pub(super) fn probe_frame(mac: MacAddr, addr: Ipv4Addr) -> [u8; MIN_FRAME] {
    let probe = Arp {
        op: OP_REQUEST,
        eth_src: mac,
        sender_mac: mac,
        sender_ip: Ipv4Addr::UNSPECIFIED,
        target_mac: MacAddr::ZERO,
        target_ip: addr,
    };
    frame(MacAddr::BROADCAST, &probe)
}

/// If `frame` shows another host using or probing for `addr`, its MAC.
///
/// A conflict is any ARP packet whose sender IP is `addr` (a reply to our
/// probe, or that host's own announcement or request), or a probe for `addr`
/// from another host (RFC 5227 2.1.1: it is about to take it too).
pub(super) fn conflict(frame: &[u8], ours: MacAddr, addr: Ipv4Addr) -> Option<MacAddr> {
    let arp = parse(frame)?;
    if arp.sender_mac == ours || arp.eth_src == ours {
        return None;
    }
    let claims = arp.sender_ip == addr;
    let probes = arp.op == OP_REQUEST && arp.sender_ip.is_unspecified() && arp.target_ip == addr;
    (claims || probes).then_some(arp.sender_mac)
}

pub(super) async fn announce(
    interface: &str,
    addr: Ipv4Addr,
    count: u32,
    gap: Duration,
) -> anyhow::Result<()> {
    let purpose = format!("sending gratuitous ARP on {interface}");
    let sock = PacketSocket::open(interface, ETH_P_ARP, &purpose)?;
    let [request, reply] = gratuitous(sock.mac, addr);
    packet::announce(&sock, &[&request, &reply], count, gap).await
}

pub(super) async fn probe(
    interface: &str,
    addr: Ipv4Addr,
    wait: Duration,
) -> anyhow::Result<Option<MacAddr>> {
    let purpose = format!("probing for {addr} with ARP on {interface}");
    let sock = PacketSocket::open(interface, ETH_P_ARP, &purpose)?;
    let ours = sock.mac;
    let frame = probe_frame(ours, addr);
    packet::probe(&sock, &frame, wait, |f| conflict(f, ours, addr)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OURS: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    const THEIRS: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
    const ADDR: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 100);

    #[test]
    fn gratuitous_request_has_the_wire_layout() {
        let [req, _] = gratuitous(OURS, ADDR);
        #[rustfmt::skip]
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // to broadcast
            0x02, 0, 0, 0, 0, 0x01,             // from us
            0x08, 0x06,                         // ARP
            0, 1, 0x08, 0x00, 6, 4, 0, 1,       // Ethernet/IPv4, request
            0x02, 0, 0, 0, 0, 0x01, 10, 250, 0, 100, // sender: us, ADDR
            0, 0, 0, 0, 0, 0,       10, 250, 0, 100, // target: ?, ADDR
        ];
        assert_eq!(req[..42], expected);
        assert!(req[42..].iter().all(|&b| b == 0));
    }

    #[test]
    fn gratuitous_reply_targets_our_own_mac() {
        let [_, reply] = gratuitous(OURS, ADDR);
        let arp = parse(&reply).unwrap();
        assert_eq!(arp.op, OP_REPLY);
        assert_eq!((arp.sender_mac, arp.sender_ip), (OURS, ADDR));
        assert_eq!((arp.target_mac, arp.target_ip), (OURS, ADDR));
    }

    #[test]
    fn probe_asks_from_zero() {
        let arp = parse(&probe_frame(OURS, ADDR)).unwrap();
        assert_eq!(arp.op, OP_REQUEST);
        assert_eq!(arp.sender_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!(arp.target_ip, ADDR);
    }

    #[test]
    fn conflicts() {
        // Linux's answer to a probe: a reply from the holder to the prober.
        let answer = Arp {
            op: OP_REPLY,
            eth_src: THEIRS,
            sender_mac: THEIRS,
            sender_ip: ADDR,
            target_mac: OURS,
            target_ip: Ipv4Addr::UNSPECIFIED,
        };
        assert_eq!(conflict(&frame(OURS, &answer), OURS, ADDR), Some(THEIRS));
        // The same address from our own MAC is not a conflict.
        let mine = Arp {
            eth_src: OURS,
            sender_mac: OURS,
            ..answer
        };
        assert_eq!(conflict(&frame(OURS, &mine), OURS, ADDR), None);
        // Someone else probing for it is.
        assert_eq!(
            conflict(&probe_frame(THEIRS, ADDR), OURS, ADDR),
            Some(THEIRS)
        );
        // Traffic about other addresses is not.
        let other = Arp {
            sender_ip: Ipv4Addr::new(10, 250, 0, 2),
            ..answer
        };
        assert_eq!(conflict(&frame(OURS, &other), OURS, ADDR), None);
        assert_eq!(
            conflict(&probe_frame(THEIRS, other.sender_ip), OURS, ADDR),
            None
        );
    }

    #[test]
    fn short_and_foreign_frames_are_ignored() {
        let [req, _] = gratuitous(THEIRS, ADDR);
        for len in 0..ARP_LEN {
            assert_eq!(parse(&req[..len]), None);
        }
        let mut ipv6 = req;
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(parse(&ipv6), None);
        let mut odd = req;
        odd[18] = 8;
        assert_eq!(parse(&odd), None);
    }

    proptest! {
        #[test]
        fn parsing_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse(&bytes);
            let _ = conflict(&bytes, OURS, ADDR);
        }

        #[test]
        fn frame_then_parse_round_trips(op: u16, a: [u8; 6], b: [u8; 6], c: [u8; 6], sip: [u8; 4], tip: [u8; 4]) {
            let arp = Arp {
                op,
                eth_src: MacAddr(a),
                sender_mac: MacAddr(b),
                sender_ip: sip.into(),
                target_mac: MacAddr(c),
                target_ip: tip.into(),
            };
            prop_assert_eq!(parse(&frame(MacAddr::BROADCAST, &arp)), Some(arp));
        }
    }
}
