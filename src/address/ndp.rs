//! IPv6: unsolicited neighbour advertisements and DAD neighbour
//! solicitations (RFC 4861, RFC 4862), built by hand.
//!
//! A frame is an Ethernet header (EtherType 0x86DD), a 40-byte IPv6 header
//! (next header 58 = ICMPv6, hop limit 255: receivers drop neighbour
//! discovery with any other, proving it came from the link), then ICMPv6:
//!
//! * Neighbour advertisement (type 136): flags (override set, so receivers
//!   replace the MAC they have; solicited clear, as it answers nobody), the
//!   target address, and a target link-layer address option (type 2) with
//!   our MAC. From the service address to ff02::1 (all nodes, Ethernet
//!   33:33:00:00:00:01).
//! * Neighbour solicitation (type 135) for DAD: from `::` to the target's
//!   solicited-node group ff02::1:ffXX:XXXX (Ethernet 33:33:ffXX:XXXX), with
//!   no link-layer option (RFC 4861 forbids it from `::`). The holder answers
//!   with an advertisement to ff02::1.
//!
//! The ICMPv6 checksum covers a pseudo-header (source, destination, length,
//! next header) and the message.

use super::packet::{self, PacketSocket};
use super::MacAddr;
use std::net::Ipv6Addr;
use std::time::Duration;

const ETH_P_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 58;
const NS: u8 = 135;
const NA: u8 = 136;
const NA_OVERRIDE: u8 = 0x20;
const OPT_TARGET_LLADDR: u8 = 2;
const ETH: usize = 14;
const IP6: usize = 40;
/// Type, code, checksum, flags/reserved, target.
const ND_LEN: usize = 4 + 4 + 16;

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The multicast MAC for an IPv6 multicast group: 33:33 and its last 32 bits.
fn multicast_mac(group: Ipv6Addr) -> MacAddr {
    let o = group.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// ff02::1:ffXX:XXXX, where XX:XXXX are the last 24 bits of `addr`.
fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// The Internet checksum of an ICMPv6 `message` (its checksum field zero)
/// between `src` and `dst`.
fn checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&b| u64::from(b));
            sum += hi | lo;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Wraps an ICMPv6 `message` (checksum field zero) in IPv6 and Ethernet,
/// filling in the checksum.
fn frame(eth_src: MacAddr, src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH + IP6 + message.len());
    f.extend_from_slice(&multicast_mac(dst).0);
    f.extend_from_slice(&eth_src.0);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no class or flow
    f.extend_from_slice(&(message.len() as u16).to_be_bytes());
    f.push(ICMPV6);
    f.push(255); // hop limit
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let at = f.len();
    f.extend_from_slice(message);
    let sum = checksum(src, dst, message);
    f[at + 2..at + 4].copy_from_slice(&sum.to_be_bytes());
    f
}

/// An unsolicited advertisement that `addr` is at `mac`, to all nodes.
pub(super) fn advertisement(mac: MacAddr, addr: Ipv6Addr) -> Vec<u8> {
    let mut m = Vec::with_capacity(ND_LEN + 8);
    m.extend_from_slice(&[NA, 0, 0, 0, NA_OVERRIDE, 0, 0, 0]);
    m.extend_from_slice(&addr.octets());
    m.extend_from_slice(&[OPT_TARGET_LLADDR, 1]); // length in units of 8 bytes
    m.extend_from_slice(&mac.0);
    frame(mac, addr, ALL_NODES, &m)
}

/// A DAD solicitation for `addr`, from `::`, sent from `mac`.
pub(super) fn solicitation(mac: MacAddr, addr: Ipv6Addr) -> Vec<u8> {
    let mut m = Vec::with_capacity(ND_LEN);
    m.extend_from_slice(&[NS, 0, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&addr.octets());
    frame(mac, Ipv6Addr::UNSPECIFIED, solicited_node(addr), &m)
}

/// A neighbour-discovery message received, checked and picked apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Nd {
    pub kind: u8,
    pub flags: u8,
    pub eth_src: MacAddr,
    pub src: Ipv6Addr,
    pub target: Ipv6Addr,
    /// The source or target link-layer address option, if any.
    pub lladdr: Option<MacAddr>,
}

/// Parses a frame as an NS or NA. Anything else, or anything malformed
/// (short, extension headers, hop limit not 255, bad checksum, bad option
/// lengths) is `None`.
pub(super) fn parse(f: &[u8]) -> Option<Nd> {
    if f.len() < ETH + IP6 + ND_LEN || f[12..14] != ETH_P_IPV6.to_be_bytes() {
        return None;
    }
    let ip = &f[ETH..];
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    if ip[0] >> 4 != 6 || ip[6] != ICMPV6 || ip[7] != 255 {
        return None;
    }
    let message = ip[IP6..].get(..payload_len)?;
    if message.len() < ND_LEN || !matches!(message[0], NS | NA) || message[1] != 0 {
        return None;
    }
    let addr = |b: &[u8]| <[u8; 16]>::try_from(b).ok().map(Ipv6Addr::from);
    let src = addr(&ip[8..24])?;
    let dst = addr(&ip[24..40])?;
    if checksum(src, dst, message) != 0 {
        return None; // a correct checksum sums, with itself, to zero
    }
    let mut lladdr = None;
    let mut options = &message[ND_LEN..];
    while options.len() >= 2 {
        let len = usize::from(options[1]) * 8;
        if len == 0 || len > options.len() {
            return None; // RFC 4861: a zero-length option invalidates it
        }
        // Source (1) or target (2) link-layer address, on Ethernet.
        if matches!(options[0], 1 | 2) && len >= 8 {
            lladdr = <[u8; 6]>::try_from(&options[2..8]).ok().map(MacAddr);
        }
        options = &options[len..];
    }
    Some(Nd {
        kind: message[0],
        flags: message[4],
        eth_src: MacAddr(f[6..12].try_into().ok()?),
        src,
        target: addr(&message[8..24])?,
        lladdr,
    })
}

/// If `frame` shows another host holding or claiming `addr`, its MAC.
///
/// A conflict is an advertisement for `addr` (the answer to our
/// solicitation), or another host's DAD solicitation for it (RFC 4862
/// 5.4.3: it is about to take it too).
pub(super) fn conflict(frame: &[u8], ours: MacAddr, addr: Ipv6Addr) -> Option<MacAddr> {
    let nd = parse(frame)?;
    let theirs = nd.lladdr.unwrap_or(nd.eth_src);
    if nd.target != addr || nd.eth_src == ours || theirs == ours {
        return None;
    }
    let advertises = nd.kind == NA;
    let probes = nd.kind == NS && nd.src.is_unspecified();
    (advertises || probes).then_some(theirs)
}

pub(super) async fn announce(
    interface: &str,
    addr: Ipv6Addr,
    count: u32,
    gap: Duration,
) -> anyhow::Result<()> {
    let purpose = format!("sending neighbour advertisements on {interface}");
    let sock = PacketSocket::open(interface, ETH_P_IPV6, &purpose)?;
    let na = advertisement(sock.mac, addr);
    packet::announce(&sock, &[&na], count, gap).await
}

pub(super) async fn probe(
    interface: &str,
    addr: Ipv6Addr,
    wait: Duration,
) -> anyhow::Result<Option<MacAddr>> {
    let purpose = format!("probing for {addr} with neighbour solicitations on {interface}");
    let sock = PacketSocket::open(interface, ETH_P_IPV6, &purpose)?;
    // Answers go to ff02::1, which every interface receives; another host's
    // DAD goes to the solicited-node group, which we have not joined unless
    // we hold the address. Best effort: a NIC that cannot join still sees
    // the answers.
    let _ = sock.join_multicast(multicast_mac(solicited_node(addr)));
    let ours = sock.mac;
    let ns = solicitation(ours, addr);
    packet::probe(&sock, &ns, wait, |f| conflict(f, ours, addr)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NA_SOLICITED: u8 = 0x40;

    const OURS: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    const THEIRS: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
    const ADDR: Ipv6Addr = Ipv6Addr::new(0xfd5a, 0, 0, 0, 0, 0, 0x12, 0x3456);

    #[test]
    fn solicited_node_group_and_its_mac() {
        let group = solicited_node(ADDR);
        assert_eq!(group, "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap());
        assert_eq!(multicast_mac(group).to_string(), "33:33:ff:12:34:56");
        assert_eq!(multicast_mac(ALL_NODES).to_string(), "33:33:00:00:00:01");
    }

    #[test]
    fn checksum_matches_a_known_packet() {
        // RFC 1071's example data, carried as an ICMPv6 message between two
        // addresses; the expected value was computed independently with
        // Python (sum of 16-bit words, folded, complemented).
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let dst: Ipv6Addr = "ff02::1".parse().unwrap();
        let message = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(src, dst, &message), 0x2445);
    }

    #[test]
    fn advertisement_layout() {
        let f = advertisement(OURS, ADDR);
        assert_eq!(f.len(), ETH + IP6 + 32);
        assert_eq!(f[..6], multicast_mac(ALL_NODES).0);
        assert_eq!(f[ETH + 7], 255, "hop limit");
        assert_eq!(
            u16::from_be_bytes([f[ETH + 4], f[ETH + 5]]),
            32,
            "payload length"
        );
        let nd = parse(&f).expect("our own advertisement parses, checksum included");
        assert_eq!(nd.kind, NA);
        assert_eq!(nd.flags, NA_OVERRIDE, "override, not solicited, not router");
        assert_eq!(nd.src, ADDR);
        assert_eq!(nd.target, ADDR);
        assert_eq!(nd.lladdr, Some(OURS));
    }

    #[test]
    fn solicitation_layout() {
        let f = solicitation(OURS, ADDR);
        assert_eq!(f.len(), ETH + IP6 + 24, "no link-layer option from ::");
        assert_eq!(f[..6], [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
        let nd = parse(&f).unwrap();
        assert_eq!(nd.kind, NS);
        assert!(nd.src.is_unspecified());
        assert_eq!(nd.target, ADDR);
        assert_eq!(nd.lladdr, None);
    }

    #[test]
    fn conflicts() {
        assert_eq!(
            conflict(&advertisement(THEIRS, ADDR), OURS, ADDR),
            Some(THEIRS)
        );
        assert_eq!(conflict(&advertisement(OURS, ADDR), OURS, ADDR), None);
        assert_eq!(
            conflict(&solicitation(THEIRS, ADDR), OURS, ADDR),
            Some(THEIRS)
        );
        let other: Ipv6Addr = "fd5a::2".parse().unwrap();
        assert_eq!(conflict(&advertisement(THEIRS, other), OURS, ADDR), None);
        // A solicited answer to someone else's address resolution (from a
        // real source address) is an advertisement too: still a conflict.
        let mut solicited = advertisement(THEIRS, ADDR);
        solicited[ETH + IP6 + 4] |= NA_SOLICITED;
        solicited[ETH + IP6 + 2..ETH + IP6 + 4].copy_from_slice(&[0, 0]);
        let sum = checksum(ADDR, ALL_NODES, &solicited[ETH + IP6..]);
        solicited[ETH + IP6 + 2..ETH + IP6 + 4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(conflict(&solicited, OURS, ADDR), Some(THEIRS));
    }

    #[test]
    fn malformed_frames_are_ignored() {
        let good = advertisement(THEIRS, ADDR);
        for len in 0..good.len() {
            assert_eq!(parse(&good[..len]), None, "truncated to {len}");
        }
        let mut hop = good.clone();
        hop[ETH + 7] = 64;
        assert_eq!(parse(&hop), None, "hop limit must be 255");
        let mut sum = good.clone();
        sum[ETH + IP6 + 2] ^= 1;
        assert_eq!(parse(&sum), None, "bad checksum");
        let mut zero_opt = good.clone();
        zero_opt[ETH + IP6 + ND_LEN + 1] = 0;
        assert_eq!(parse(&zero_opt), None, "zero-length option");
    }

    proptest! {
        #[test]
        fn parsing_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
            let _ = parse(&bytes);
            let _ = conflict(&bytes, OURS, ADDR);
        }

        #[test]
        fn mangled_advertisements_never_panic(at in 0usize..86, value: u8) {
            let mut f = advertisement(THEIRS, ADDR);
            f[at] = value;
            let _ = parse(&f);
        }
    }
}
