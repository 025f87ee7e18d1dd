//! The service address on Linux: put it on an interface, take it off, and
//! tell the link that it moved.
//!
//! Moving an address between two servers is three jobs:
//!
//! 1. **Check nobody has it** ([`probe_conflict`]) before taking it: an ARP
//!    probe (RFC 5227: "who has A? tell 0.0.0.0") for IPv4, a neighbour
//!    solicitation from `::` (RFC 4862 duplicate address detection) for IPv6.
//!    Whoever holds the address answers with its MAC.
//! 2. **Hold it** ([`add`], [`remove`], [`holds`]): netlink `RTM_NEWADDR` /
//!    `RTM_DELADDR`, as `ip addr add/del` does, without running `ip`. Both
//!    are idempotent, because a failover may be retried. IPv6 addresses are
//!    added with `IFA_F_NODAD` so they are usable at once instead of after a
//!    second of kernel DAD (we ran our own probe first).
//! 3. **Announce it** ([`announce`]): phones, switches and routers cache the
//!    old server's MAC for the address (ARP cache, neighbour table, switch
//!    FDB). A burst of gratuitous ARP (IPv4) or unsolicited neighbour
//!    advertisements with the override flag (IPv6) makes them update now
//!    rather than when their entries expire, and teaches switches the new
//!    port. Receivers update an entry they already have; most do not create
//!    one from a gratuitous packet (Linux: `arp_accept=0`).
//!
//! The packets of 1 and 3 are built by hand (`arp`, `ndp`) and sent on a raw
//! `AF_PACKET` socket (`packet`): no crate does this well, and it is a few
//! dozen bytes each.
//!
//! Privileges: netlink changes need `CAP_NET_ADMIN`, raw sockets
//! `CAP_NET_RAW`. Without them the errors say so ([`MissingCapability`]), and
//! an interface that does not exist is a [`NoSuchInterface`], so a caller can
//! tell a configuration mistake from a transient failure.
//!
//! Everything here acts on the network namespace of the calling thread.

mod arp;
mod ndp;
mod netlink;
mod packet;

use anyhow::Context as _;
use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// What [`add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The address was not there; now it is.
    New,
    /// The address was already on the interface; nothing changed.
    AlreadyPresent,
}

/// An Ethernet (EUI-48) address, shown as `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    pub fn octets(self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// The text of a [`MacAddr`] was not six hexadecimal pairs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (expected six hex pairs like aa:bb:cc:dd:ee:ff)")]
pub struct BadMacAddr(String);

impl FromStr for MacAddr {
    type Err = BadMacAddr;

    /// Parses `aa:bb:cc:dd:ee:ff` (or with `-`), case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadMacAddr(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

/// The interface named in the configuration is not on this server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "interface {interface} does not exist on this server \
     (check [nodes.<this node>] interface in sip-ha.toml)"
)]
pub struct NoSuchInterface {
    pub interface: String,
}

/// The kernel refused for lack of a capability.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{action} needs {capability}: run sip-ha as root or grant it \
     (AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW in the unit)"
)]
pub struct MissingCapability {
    /// What was being done, e.g. "adding 192.168.0.120/24 to eth0".
    pub action: String,
    /// `CAP_NET_ADMIN` or `CAP_NET_RAW`.
    pub capability: &'static str,
}

/// Is `addr` on `interface` now?
///
/// An IPv6 address whose kernel DAD failed (`dadfailed`) does not count: it
/// is on the interface but the kernel will not use it.
pub async fn holds(interface: &str, addr: IpAddr) -> anyhow::Result<bool> {
    netlink::holds(interface, addr).await
}

/// Puts `net` (the address with its prefix length) on `interface`.
///
/// Already there is success ([`Added::AlreadyPresent`]). IPv6 is added with
/// `IFA_F_NODAD`: usable at once, so call [`probe_conflict`] first.
pub async fn add(interface: &str, net: IpNet) -> anyhow::Result<Added> {
    netlink::add(interface, net).await
}

/// Takes the address of `net` off `interface`, whatever prefix length it was
/// added with. Not there is success.
pub async fn remove(interface: &str, net: IpNet) -> anyhow::Result<()> {
    netlink::remove(interface, net).await
}

/// Sends `count` announcements, `gap` apart, that `addr` is at this
/// interface's MAC: gratuitous ARP for IPv4 (a request and a reply each
/// round, to broadcast), unsolicited neighbour advertisements with the
/// override flag for IPv6 (to ff02::1).
///
/// It does not check that the address is on the interface.
pub async fn announce(
    interface: &str,
    addr: IpAddr,
    count: u32,
    gap: Duration,
) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let what = match addr {
        IpAddr::V4(_) => "gratuitous ARP",
        IpAddr::V6(_) => "unsolicited neighbour advertisements",
    };
    let result = match addr {
        IpAddr::V4(v4) => arp::announce(interface, v4, count, gap).await,
        IpAddr::V6(v6) => ndp::announce(interface, v6, count, gap).await,
    };
    result.with_context(|| format!("announcing {addr} on {interface} ({what})"))
}

/// Asks the link whether anyone already uses `addr`, and listens for `wait`.
///
/// Returns the MAC of whoever answered, or `None` if nobody did. IPv4 sends
/// RFC 5227 ARP probes (sender address 0.0.0.0); IPv6 sends neighbour
/// solicitations from `::` to the solicited-node group (RFC 4862 DAD).
/// Another host probing for the same address at the same time counts as a
/// conflict too, as both RFCs say: two nodes must not take it together.
/// Frames from this interface's own MAC are ignored, so holding the address
/// ourselves is not a conflict.
pub async fn probe_conflict(
    interface: &str,
    addr: IpAddr,
    wait: Duration,
) -> anyhow::Result<Option<MacAddr>> {
    let result = match addr {
        IpAddr::V4(v4) => arp::probe(interface, v4, wait).await,
        IpAddr::V6(v6) => ndp::probe(interface, v6, wait).await,
    };
    result.with_context(|| format!("checking whether another host on {interface} uses {addr}"))
}

/// The Ethernet address of `interface`.
///
/// Errors if the interface does not exist or is not Ethernet-like (loopback,
/// a tunnel, WireGuard): such links have no ARP or neighbour discovery.
pub fn mac_of(interface: &str) -> anyhow::Result<MacAddr> {
    packet::mac_of(interface)
}

/// Interface names the kernel could never have: empty, longer than 15 bytes,
/// or with `/`, whitespace or NUL. Saves a round trip and gives a clear
/// error instead of `EINVAL`.
fn check_name(interface: &str) -> Result<(), NoSuchInterface> {
    let valid = !interface.is_empty()
        && interface.len() < libc::IFNAMSIZ
        && interface != "."
        && interface != ".."
        && !interface
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if valid {
        Ok(())
    } else {
        Err(NoSuchInterface {
            interface: interface.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_display_and_parse_round_trip() {
        let mac = MacAddr([0x02, 0, 0xab, 0xcd, 0xef, 0x99]);
        assert_eq!(mac.to_string(), "02:00:ab:cd:ef:99");
        assert_eq!("02:00:AB:cd:ef:99".parse::<MacAddr>(), Ok(mac));
        assert_eq!("02-00-ab-cd-ef-99".parse::<MacAddr>(), Ok(mac));
        for bad in [
            "",
            "02:00:ab:cd:ef",
            "02:00:ab:cd:ef:99:00",
            "2:00:ab:cd:ef:99",
            "zz:00:ab:cd:ef:99",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn impossible_interface_names_are_refused() {
        for bad in ["", "a/b", "eth0:1", "sixteen-bytes-xx", "a b", "..", "x\0"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["eth0", "enp3s0f1", "br-lan.100", "fifteen-bytes-x"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let e = NoSuchInterface {
            interface: "eth9".into(),
        };
        assert_eq!(
            e.to_string(),
            "interface eth9 does not exist on this server (check [nodes.<this node>] interface in sip-ha.toml)"
        );
        let e = MissingCapability {
            action: "adding 192.168.0.120/24 to eth0".into(),
            capability: "CAP_NET_ADMIN",
        };
        assert_eq!(
            e.to_string(),
            "adding 192.168.0.120/24 to eth0 needs CAP_NET_ADMIN: run sip-ha as root or grant it (AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW in the unit)"
        );
    }
}
