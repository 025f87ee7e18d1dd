//! The service address on real links: two network namespaces joined by a
//! veth (see `common/netns.rs`), the code under test running inside one of
//! them, and `ip` from iproute2 as the independent witness.
//!
//! Needs root; skipped (with a message) otherwise.

mod common;

use common::netns::{in_ns, Host, Pair};
use ipnet::IpNet;
use sip_ha::address::{self, Added, MacAddr, MissingCapability, NoSuchInterface};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Generous: these are upper bounds on waiting, never expectations.
const PATIENCE: Duration = Duration::from_secs(10);
const BOGUS: &str = "02:00:00:00:00:99";

fn net(addr: impl Into<IpAddr>, prefix: u8) -> IpNet {
    IpNet::new(addr.into(), prefix).unwrap()
}

/// The addresses `ip` lists on the host's interface.
fn listed(host: &Host) -> String {
    host.ip(&["addr", "show", "dev", &host.interface])
}

/// The MAC in the host's neighbour entry for `addr`, if it has one.
fn neighbour(host: &Host, addr: IpAddr) -> Option<MacAddr> {
    let out = host.ip(&["neigh", "show", &addr.to_string(), "dev", &host.interface]);
    let mut words = out.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next()?.parse().ok()
}

/// Seeds a STALE entry for `addr` pointing at a MAC nobody has, as a phone
/// would have for the server that just failed.
fn seed_stale(host: &Host, addr: IpAddr) {
    host.ip(&[
        "neigh",
        "replace",
        &addr.to_string(),
        "lladdr",
        BOGUS,
        "dev",
        &host.interface,
        "nud",
        "stale",
    ]);
    assert_eq!(neighbour(host, addr), Some(BOGUS.parse().unwrap()));
}

/// Polls `check` until it is true or [`PATIENCE`] runs out.
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

fn mac(host: &Host) -> MacAddr {
    let iface = host.interface.clone();
    let ours = host.run(|| async move { address::mac_of(&iface) }).unwrap();
    // Cross-check against iproute2.
    let shown = host.ip(&["link", "show", "dev", &host.interface]);
    assert!(shown.contains(&format!("link/ether {ours}")), "{shown}");
    ours
}

fn add_remove_round_trip(pair: &Pair, service: IpNet) {
    let a = &pair.a;
    let iface = a.interface.clone();
    let addr = service.addr();
    let shown = format!("{addr}/{}", service.prefix_len());

    let (first, second, held) = a.run(|| async {
        let first = address::add(&iface, service).await.unwrap();
        let second = address::add(&iface, service).await.unwrap();
        let held = address::holds(&iface, addr).await.unwrap();
        (first, second, held)
    });
    assert_eq!(first, Added::New);
    assert_eq!(
        second,
        Added::AlreadyPresent,
        "adding twice is not an error"
    );
    assert!(held);
    let out = listed(a);
    assert!(out.contains(&shown), "ip addr show lacks {shown}:\n{out}");
    if addr.is_ipv6() {
        let line = out.lines().find(|l| l.contains(&shown)).unwrap();
        assert!(
            line.contains("nodad") && !line.contains("tentative"),
            "{line}"
        );
    }
    // The peer does not hold it.
    let b_iface = pair.b.interface.clone();
    assert!(!pair
        .b
        .run(|| async { address::holds(&b_iface, addr).await.unwrap() }));

    let held = a.run(|| async {
        address::remove(&iface, service).await.unwrap();
        let held = address::holds(&iface, addr).await.unwrap();
        address::remove(&iface, service)
            .await
            .expect("removing twice is not an error");
        held
    });
    assert!(!held);
    let out = listed(a);
    assert!(!out.contains(&shown), "{shown} still listed:\n{out}");
    // The management address was left alone.
    let management = match addr {
        IpAddr::V4(_) => a.ipv4.to_string(),
        IpAddr::V6(_) => a.ipv6.to_string(),
    };
    assert!(out.contains(&management), "{out}");
}

#[test]
fn ipv4_add_and_remove_are_idempotent() {
    let Some(pair) = Pair::new_or_skip() else {
        return;
    };
    add_remove_round_trip(&pair, net(pair.v4(100), 24));
}

#[test]
fn ipv6_add_and_remove_are_idempotent() {
    let Some(pair) = Pair::new_or_skip() else {
        return;
    };
    add_remove_round_trip(&pair, net(pair.v6(0x100), 64));
}

#[test]
fn remove_takes_the_address_off_whatever_its_prefix() {
    let Some(pair) = Pair::new_or_skip() else {
        return;
    };
    let a = &pair.a;
    // Someone added it by hand as a /32.
    a.ip(&[
        "addr",
        "add",
        &format!("{}/32", pair.v4(100)),
        "dev",
        &a.interface,
    ]);
    let iface = a.interface.clone();
    let service = net(pair.v4(100), 24);
    let held = a.run(|| async {
        assert!(address::holds(&iface, service.addr()).await.unwrap());
        address::remove(&iface, service).await.unwrap();
        address::holds(&iface, service.addr()).await.unwrap()
    });
    assert!(!held);
    assert!(!listed(a).contains(&pair.v4(100).to_string()));
}

fn announce_updates_peer(pair: &Pair, service: IpAddr) {
    let a_mac = mac(&pair.a);
    assert_ne!(a_mac.to_string(), BOGUS);
    // The address is deliberately NOT added on A: the kernel then sends
    // nothing about it by itself, so only our announcement can update B.
    seed_stale(&pair.b, service);
    let iface = pair.a.interface.clone();
    pair.a
        .run(|| async { address::announce(&iface, service, 3, Duration::from_millis(50)).await })
        .unwrap();
    assert!(
        eventually(|| neighbour(&pair.b, service) == Some(a_mac)),
        "B's neighbour entry for {service} is {:?}, want A's {a_mac}",
        neighbour(&pair.b, service)
    );
}

#[test]
fn gratuitous_arp_updates_the_peers_arp_cache() {
    let Some(pair) = Pair::new_or_skip() else {
        return;
    };
    // With arp_accept=0 (the default) Linux only updates an entry it has,
    // which is why the test seeds one; say which case we are testing.
    let accept = pair.b.exec(
        "sysctl",
        &[
            "-n",
            &format!("net.ipv4.conf.{}.arp_accept", pair.b.interface),
        ],
    );
    eprintln!("B arp_accept = {}", accept.trim());
    announce_updates_peer(&pair, pair.v4(100).into());
}

#[test]
fn unsolicited_neighbour_advertisement_updates_the_peers_neighbour_table() {
    let Some(pair) = Pair::new_or_skip() else {
        return;
    };
    announce_updates_peer(&pair, pair.v6(0x100).into());
}

#[test]
fn announce_zero_times_sends_nothing_and_succeeds() {
    let Some(pair) = Pair::new_or_skip() else {
        return;
    };
    let service: IpAddr = pair.v4(100).into();
    seed_stale(&pair.b, service);
    let iface = pair.a.interface.clone();
    pair.a
        .run(|| async { address::announce(&iface, service, 0, Duration::ZERO).await })
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(neighbour(&pair.b, service), Some(BOGUS.parse().unwrap()));
}

fn probe(host: &Host, addr: IpAddr, wait: Duration) -> Option<MacAddr> {
    let iface = host.interface.clone();
    host.run(|| async { address::probe_conflict(&iface, addr, wait).await })
        .unwrap()
}

#[test]
fn ipv4_probe_finds_the_holder() {
    let Some(pair) = Pair::new_or_skip() else {
        return;
    };
    let service = pair.v4(100);
    assert_eq!(
        probe(&pair.a, service.into(), Duration::from_millis(600)),
        None
    );

    let b = &pair.b;
    b.ip(&["addr", "add", &format!("{service}/24"), "dev", &b.interface]);
    let b_mac = mac(b);
    assert_eq!(
        probe(&pair.a, service.into(), Duration::from_secs(3)),
        Some(b_mac)
    );

    // Holding it ourselves is not a conflict: our own frames are ignored.
    b.ip(&["addr", "del", &format!("{service}/24"), "dev", &b.interface]);
    let a = &pair.a;
    a.ip(&["addr", "add", &format!("{service}/24"), "dev", &a.interface]);
    assert_eq!(probe(a, service.into(), Duration::from_millis(600)), None);
}

#[test]
fn ipv6_probe_finds_the_holder() {
    let Some(pair) = Pair::new_or_skip() else {
        return;
    };
    let service = pair.v6(0x100);
    assert_eq!(
        probe(&pair.a, service.into(), Duration::from_millis(600)),
        None
    );

    let b = &pair.b;
    // nodad: a tentative address would not answer (and would see our
    // solicitation as a duplicate of its own).
    b.ip(&[
        "addr",
        "add",
        &format!("{service}/64"),
        "dev",
        &b.interface,
        "nodad",
    ]);
    let b_mac = mac(b);
    assert_eq!(
        probe(&pair.a, service.into(), Duration::from_secs(3)),
        Some(b_mac)
    );
}

#[test]
fn an_unknown_interface_is_named_in_every_error() {
    let Some(pair) = Pair::new_or_skip() else {
        return;
    };
    let service = net(pair.v4(100), 24);
    let errors = in_ns(&pair.a.ns, || async {
        let wait = Duration::from_millis(10);
        vec![
            address::add("nosuch0", service).await.unwrap_err(),
            address::remove("nosuch0", service).await.unwrap_err(),
            address::holds("nosuch0", service.addr()).await.unwrap_err(),
            address::announce("nosuch0", service.addr(), 1, wait)
                .await
                .unwrap_err(),
            address::probe_conflict("nosuch0", service.addr(), wait)
                .await
                .unwrap_err(),
            address::mac_of("nosuch0").unwrap_err(),
            // A name the kernel could never accept gets the same answer.
            address::add("much-too-long-name", service)
                .await
                .unwrap_err(),
        ]
    });
    for err in errors {
        let text = format!("{err:#}");
        assert!(err.downcast_ref::<NoSuchInterface>().is_some(), "{text}");
        assert!(
            text.contains("does not exist on this server") && text.contains("sip-ha.toml"),
            "{text}"
        );
        assert!(
            text.contains("nosuch0") || text.contains("much-too-long-name"),
            "{text}"
        );
    }
}

#[test]
fn loopback_cannot_be_announced_on() {
    let Some(pair) = Pair::new_or_skip() else {
        return;
    };
    let err = in_ns(&pair.a.ns, || async {
        address::announce("lo", pair.v4(100).into(), 1, Duration::ZERO)
            .await
            .unwrap_err()
    });
    assert!(format!("{err:#}").contains("is not Ethernet"), "{err:#}");
}

/// Clears CAP_NET_ADMIN and CAP_NET_RAW from the calling thread's effective
/// capabilities. Linux keeps capabilities per thread, so only the
/// `in_ns` thread that calls this loses them (and it ends with the test).
fn drop_network_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_NET_RAW: u32 = 13;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data structs, as
    // capget(2) documents.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !((1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW));
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
            0
        );
    }
}

#[test]
fn missing_capabilities_are_named() {
    let Some(pair) = Pair::new_or_skip() else {
        return;
    };
    let iface = pair.a.interface.clone();
    let service = net(pair.v4(100), 24);
    let (add, remove, announce, probe, holds) = in_ns(&pair.a.ns, || {
        drop_network_capabilities();
        async {
            (
                address::add(&iface, service).await.unwrap_err(),
                address::remove(&iface, net(pair.a.ipv4, 24))
                    .await
                    .unwrap_err(),
                address::announce(&iface, service.addr(), 1, Duration::ZERO)
                    .await
                    .unwrap_err(),
                address::probe_conflict(&iface, service.addr(), Duration::ZERO)
                    .await
                    .unwrap_err(),
                // Looking needs no privilege.
                address::holds(&iface, pair.a.ipv4.into()).await.unwrap(),
            )
        }
    });
    assert!(holds);
    let want = format!(
        "adding {service} to {iface} needs CAP_NET_ADMIN: run sip-ha as root or grant it \
         (AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW in the unit)"
    );
    assert_eq!(format!("{add:#}"), want);
    assert!(
        format!("{remove:#}").contains("needs CAP_NET_ADMIN"),
        "{remove:#}"
    );
    for err in [announce, probe] {
        let cap = err
            .downcast_ref::<MissingCapability>()
            .expect("a MissingCapability");
        assert_eq!(cap.capability, "CAP_NET_RAW", "{err:#}");
        assert!(format!("{err:#}").contains(&iface), "{err:#}");
    }
    // Nothing changed.
    assert!(listed(&pair.a).contains(&pair.a.ipv4.to_string()));
    assert!(!listed(&pair.a).contains(&pair.v4(100).to_string()));
}
