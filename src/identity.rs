//! Which node is this? The same config names both servers; each finds itself
//! by looking for its management address among its own addresses. `--node`
//! overrides that (needed when both run on one host, as in the lab, since
//! network namespaces share the hostname).

use crate::config::Config;
use anyhow::{bail, Context, Result};
use sip_ha_core::Role;
use std::net::IpAddr;

/// Every address configured on this host's interfaces.
pub fn local_addresses() -> Result<Vec<(String, IpAddr)>> {
    let addrs = nix::ifaddrs::getifaddrs().context("cannot list this server's addresses")?;
    let mut out = Vec::new();
    for ifa in addrs {
        let Some(sa) = ifa.address else { continue };
        let ip = if let Some(v4) = sa.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = sa.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        out.push((ifa.interface_name, ip));
    }
    Ok(out)
}

/// Parse a `--node` value.
pub fn parse_role(name: &str) -> Result<Role> {
    match name.to_ascii_lowercase().as_str() {
        "master" => Ok(Role::Master),
        "slave" => Ok(Role::Slave),
        other => bail!("--node {other}: expected `master` or `slave`"),
    }
}

/// Work out which node this is: `--node` if given, else by address.
pub fn which_node(cfg: &Config, forced: Option<&str>) -> Result<Role> {
    if let Some(name) = forced {
        return parse_role(name);
    }
    let local = local_addresses()?;
    let has = |ip: IpAddr| local.iter().any(|(_, a)| *a == ip);
    match (has(cfg.master.address), has(cfg.slave.address)) {
        (true, false) => Ok(Role::Master),
        (false, true) => Ok(Role::Slave),
        (true, true) => bail!(
            "both management addresses ({} and {}) are on this server: say which node it is with --node master|slave",
            cfg.master.address,
            cfg.slave.address
        ),
        (false, false) => bail!(
            "neither management address ({} for the master, {} for the slave) is on this server: \
             check [nodes] in {}, or say which node it is with --node master|slave",
            cfg.master.address,
            cfg.slave.address,
            cfg.path.display()
        ),
    }
}

/// Whether `addr` is on `interface` right now.
pub fn holds(interface: &str, addr: IpAddr) -> Result<bool> {
    Ok(local_addresses()?
        .iter()
        .any(|(name, ip)| name == interface && *ip == addr))
}
