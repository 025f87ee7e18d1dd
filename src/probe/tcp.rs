//! TCP connect: is anything accepting connections on `host:port`?
//!
//! The weakest useful check — it proves a process holds the listening
//! socket and the kernel completes the handshake, nothing about whether the
//! service behind it works. Used for `kind = "tcp"` checks and TCP
//! witnesses. A refused connection (RST) fails at once; a silent one (host
//! down, packets dropped) fails when the timeout runs out.

use super::{fmt_latency, fmt_timeout, resolve, Verdict};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Connect to `target` (`host:port`, `[v6]:port`), trying each address the
/// name resolves to until one accepts. No timeout: the caller adds it.
pub(crate) async fn probe(target: &str) -> Verdict {
    let (host, port) = split_host_port(target)?;
    let addrs = resolve(host, port).await?;
    connect_addrs(&addrs).await
}

/// Connect to the first of `addrs` that accepts.
pub(crate) async fn connect_addrs(addrs: &[SocketAddr]) -> Verdict {
    let start = Instant::now();
    let mut last_err = "no address to connect to".to_string();
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(_stream) => {
                return Ok(format!(
                    "TCP connect to {addr} in {}",
                    fmt_latency(start.elapsed())
                ))
            }
            Err(e) => last_err = connect_error(&e, addr),
        }
    }
    Err(last_err)
}

/// Why a TCP connect failed, in words.
pub(crate) fn connect_error(e: &io::Error, addr: SocketAddr) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            format!("connection refused by {addr} (nothing listens on that port)")
        }
        _ => match e.raw_os_error() {
            Some(libc::EHOSTUNREACH) => format!("host unreachable: {addr} ({e})"),
            Some(libc::ENETUNREACH) => format!("network unreachable: {addr} ({e})"),
            _ => format!("TCP connect to {addr} failed: {e}"),
        },
    }
}

/// What to say when a connect ran out of time.
pub(crate) fn timeout_detail(target: &str, timeout: Duration) -> String {
    format!(
        "TCP connect to {target} timed out after {} (host down, or a firewall dropping packets?)",
        fmt_timeout(timeout)
    )
}

/// `host:port` or `[v6]:port` into its parts.
pub(crate) fn split_host_port(target: &str) -> Result<(&str, u16), String> {
    let bad = || format!("TCP target {target:?} is not host:port (write IPv6 as [::1]:22)");
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
        (host, port)
    } else {
        let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
        if host.contains(':') {
            return Err(bad());
        }
        (host, port)
    };
    let port = port.parse::<u16>().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_targets() {
        assert_eq!(split_host_port("127.0.0.1:22"), Ok(("127.0.0.1", 22)));
        assert_eq!(split_host_port("[::1]:5038"), Ok(("::1", 5038)));
        assert_eq!(split_host_port("pbx:5060"), Ok(("pbx", 5060)));
        assert!(split_host_port("::1:22").is_err());
        assert!(split_host_port("pbx").is_err());
        assert!(split_host_port(":22").is_err());
        assert!(split_host_port("pbx:99999").is_err());
    }
}
