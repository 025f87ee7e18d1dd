//! Adding, removing and listing addresses over rtnetlink.
//!
//! Each call opens its own netlink socket, in the network namespace of the
//! calling thread, and drives it with a task on the current tokio runtime;
//! the task is stopped when the call returns. The kernel's replies are
//! negative errno values: `EEXIST` on add and `EADDRNOTAVAIL` on delete are
//! the idempotent cases, `EPERM` means no `CAP_NET_ADMIN`, `ENODEV` no such
//! interface.

use super::{check_name, Added, MissingCapability, NoSuchInterface};
use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use ipnet::IpNet;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use std::net::IpAddr;

/// A netlink connection whose driving task ends with it.
struct Conn {
    handle: rtnetlink::Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn connect() -> anyhow::Result<Conn> {
    let (connection, handle, _unsolicited) =
        rtnetlink::new_connection().context("opening a netlink socket")?;
    let task = tokio::spawn(connection);
    Ok(Conn { handle, task })
}

/// The negative errno of a netlink error reply, if it is one.
fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => Some(-msg.raw_code()),
        _ => None,
    }
}

/// The index of `interface`, or [`NoSuchInterface`].
async fn link_index(conn: &Conn, interface: &str) -> anyhow::Result<u32> {
    check_name(interface)?;
    let links = conn.handle.link().get().match_name(interface).execute();
    let mut links = std::pin::pin!(links);
    match links.try_next().await {
        Ok(Some(link)) => Ok(link.header.index),
        Ok(None) => Err(NoSuchInterface {
            interface: interface.to_string(),
        }
        .into()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Err(NoSuchInterface {
            interface: interface.to_string(),
        }
        .into()),
        Err(e) => Err(e).with_context(|| format!("looking up interface {interface}")),
    }
}

/// The addresses equal to `addr` on link `index` (normally zero or one).
async fn find(conn: &Conn, index: u32, addr: IpAddr) -> anyhow::Result<Vec<AddressMessage>> {
    let found = conn
        .handle
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(addr)
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .context("listing addresses")?;
    // The filter also matches IPv6 multicast and anycast entries; keep only
    // real addresses (IFA_LOCAL or IFA_ADDRESS).
    Ok(found
        .into_iter()
        .filter(|msg| {
            msg.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Address(x) | AddressAttribute::Local(x) if *x == addr)
            })
        })
        .collect())
}

fn dad_failed(msg: &AddressMessage) -> bool {
    msg.header.flags.contains(AddressHeaderFlags::Dadfailed)
        || msg
            .attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::Flags(f) if f.contains(AddressFlags::Dadfailed)))
}

pub(super) async fn holds(interface: &str, addr: IpAddr) -> anyhow::Result<bool> {
    let conn = connect()?;
    let index = link_index(&conn, interface).await?;
    let found = find(&conn, index, addr)
        .await
        .with_context(|| format!("checking whether {interface} holds {addr}"))?;
    Ok(found.iter().any(|msg| !dad_failed(msg)))
}

pub(super) async fn add(interface: &str, net: IpNet) -> anyhow::Result<Added> {
    let action = || format!("adding {net} to {interface}");
    let conn = connect()?;
    let index = link_index(&conn, interface).await?;
    let mut request = conn
        .handle
        .address()
        .add(index, net.addr(), net.prefix_len());
    if net.addr().is_ipv6() {
        // Skip kernel DAD: the address is usable now, not after ~1 s of
        // "tentative" during which the service cannot bind it.
        let msg = request.message_mut();
        msg.header.flags |= AddressHeaderFlags::Nodad;
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    match request.execute().await {
        Ok(()) => Ok(Added::New),
        Err(e) => match errno(&e) {
            Some(libc::EEXIST) => Ok(Added::AlreadyPresent),
            Some(libc::EPERM) | Some(libc::EACCES) => Err(MissingCapability {
                action: action(),
                capability: "CAP_NET_ADMIN",
            }
            .into()),
            _ => Err(e).with_context(action),
        },
    }
}

pub(super) async fn remove(interface: &str, net: IpNet) -> anyhow::Result<()> {
    let action = || format!("removing {net} from {interface}");
    let conn = connect()?;
    let index = link_index(&conn, interface).await?;
    let found = find(&conn, index, net.addr()).await.with_context(action)?;
    for msg in found {
        match conn.handle.address().del(msg).execute().await {
            Ok(()) => {}
            // Gone in the meantime: that is what we wanted.
            Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL | libc::ENOENT)) => {}
            Err(e) if matches!(errno(&e), Some(libc::EPERM | libc::EACCES)) => {
                return Err(MissingCapability {
                    action: action(),
                    capability: "CAP_NET_ADMIN",
                }
                .into())
            }
            Err(e) => return Err(e).with_context(action),
        }
    }
    Ok(())
}
