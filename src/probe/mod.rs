//! Health probes: is the local service healthy, and can this node still see
//! the world?
//!
//! Two families live here:
//!
//! * **Local checks** ([`run_check`], [`run_checks`]) — one per
//!   `[[health.check]]` in the configuration: SIP OPTIONS ([`sip`]),
//!   `asterisk -rx "core show uptime"` ([`asterisk`]), an AMI login and Ping
//!   ([`ami`]), a process by pidfile or name ([`process`]), a TCP connect
//!   ([`tcp`]) or any shell command ([`command`]).
//! * **Witnesses** ([`witness`], [`any_witness`]) — a third party (a router, a
//!   switch, a DNS server) answering ICMP echo ([`icmp`]) or a TCP connect. A
//!   node that can reach no witness is probably the one that is cut off, and
//!   should not take the service address.
//!
//! Every probe answers with a [`ProbeResult`]: healthy or not, how long it
//! took, and a `detail` written for the person reading the status screen at
//! 3 a.m. — what was seen and, when it failed, what to look at next.
//!
//! # Never hang, never panic
//!
//! Each probe runs under its configured timeout ([`tokio::time::timeout`]);
//! anything it started (a child process, a socket) is released when the
//! timeout drops it: child processes are spawned with `kill_on_drop` in
//! their own process group, which is killed as a whole. Whatever the remote
//! side sends — garbage, half a reply, nothing — becomes a failed result
//! with a reason, never a panic.
//!
//! # Health is judged by what the service says
//!
//! A SIP `404 Not Found` proves the SIP stack is answering, so by default any
//! final response below 500 counts as alive (`SipTarget::alive` narrows
//! that). `asterisk -rx` exits 0 even for `No such command`, so its output is
//! read, never its exit status alone.

pub mod ami;
pub mod asterisk;
pub mod command;
pub mod icmp;
pub mod process;
pub mod sip;
pub mod tcp;

use crate::config::{Check, CheckKind, Witness};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The outcome of one probe.
///
/// Serialized for the JSON status as
/// `{"name": …, "ok": …, "latency_ms": 0.42, "detail": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The check's name (or, for a witness, `icmp ADDR` / `tcp ADDR:PORT`).
    pub name: String,
    /// Healthy / answered.
    pub ok: bool,
    /// How long the probe took, start to verdict (including name
    /// resolution and connecting).
    #[serde(rename = "latency_ms", with = "latency_ms")]
    pub latency: Duration,
    /// What was seen, in words a person can act on.
    pub detail: String,
}

impl ProbeResult {
    /// A healthy result.
    pub fn ok(name: impl Into<String>, latency: Duration, detail: impl Into<String>) -> Self {
        ProbeResult {
            name: name.into(),
            ok: true,
            latency,
            detail: detail.into(),
        }
    }

    /// A failed result.
    pub fn fail(name: impl Into<String>, latency: Duration, detail: impl Into<String>) -> Self {
        ProbeResult {
            name: name.into(),
            ok: false,
            latency,
            detail: detail.into(),
        }
    }

    fn from_verdict(name: &str, latency: Duration, verdict: Verdict) -> Self {
        match verdict {
            Ok(detail) => Self::ok(name, latency, detail),
            Err(detail) => Self::fail(name, latency, detail),
        }
    }
}

/// What a probe concludes: `Ok(detail)` when healthy, `Err(detail)` when not.
/// The detail is the human-readable reason either way.
pub(crate) type Verdict = Result<String, String>;

/// Run one local health check, bounded by `check.timeout`.
pub async fn run_check(check: &Check) -> ProbeResult {
    let start = Instant::now();
    let t = check.timeout;
    let kind = &check.kind;
    let verdict = match kind {
        // The SIP client enforces the timeout itself, so that it can say
        // what it saw before time ran out (a 100 Trying, say).
        CheckKind::SipOptions(target) => sip::verdict(target, t).await,
        CheckKind::Asterisk { command, rundir } => {
            bounded(kind, t, asterisk::probe(command, rundir.as_deref())).await
        }
        CheckKind::Ami {
            host,
            port,
            user,
            secret,
        } => bounded(kind, t, ami::probe(host, *port, user, secret.expose())).await,
        CheckKind::Process { pidfile, name } => {
            bounded(kind, t, process::probe(pidfile.as_deref(), name.as_deref())).await
        }
        CheckKind::Tcp { target } => bounded(kind, t, tcp::probe(target)).await,
        CheckKind::Command { command } => bounded(kind, t, command::probe(command)).await,
    };
    ProbeResult::from_verdict(&check.name, start.elapsed(), verdict)
}

/// Run `probe` under `timeout`; when time runs out, say so in terms of `kind`.
async fn bounded(
    kind: &CheckKind,
    timeout: Duration,
    probe: impl std::future::Future<Output = Verdict>,
) -> Verdict {
    match tokio::time::timeout(timeout, probe).await {
        Ok(verdict) => verdict,
        Err(_) => Err(timeout_detail(kind, timeout)),
    }
}

/// Run all checks at once; the results come back in the order of `checks`.
///
/// Each check is bounded by its own timeout, so this returns after the
/// slowest one at the latest. Dropping the returned future cancels them all.
pub async fn run_checks(checks: &[Check]) -> Vec<ProbeResult> {
    let mut set = tokio::task::JoinSet::new();
    for (index, check) in checks.iter().enumerate() {
        let check = check.clone();
        set.spawn(async move { (index, run_check(&check).await) });
    }
    let mut results: Vec<Option<ProbeResult>> = vec![None; checks.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((index, result)) = joined {
            results[index] = Some(result);
        }
    }
    results
        .into_iter()
        .zip(checks)
        .map(|(result, check)| {
            result.unwrap_or_else(|| {
                ProbeResult::fail(
                    &check.name,
                    Duration::ZERO,
                    "the probe task failed (a bug in sip-ha: please report it)",
                )
            })
        })
        .collect()
}

/// Probe one witness: ICMP echo or a TCP connect, bounded by `timeout`.
pub async fn witness(w: &Witness, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    let (name, verdict) = match w {
        Witness::Icmp(ip) => {
            let verdict = match tokio::time::timeout(timeout, icmp::echo(*ip)).await {
                Ok(verdict) => verdict,
                Err(_) => Err(format!(
                    "no ICMP echo reply from {ip} within {} (host down, or ICMP filtered on the way?)",
                    fmt_timeout(timeout)
                )),
            };
            (format!("icmp {ip}"), verdict)
        }
        Witness::Tcp(addr) => {
            let verdict = match tokio::time::timeout(timeout, tcp::connect_addrs(&[*addr])).await {
                Ok(verdict) => verdict,
                Err(_) => Err(tcp::timeout_detail(&addr.to_string(), timeout)),
            };
            (format!("tcp {addr}"), verdict)
        }
    };
    ProbeResult::from_verdict(&name, start.elapsed(), verdict)
}

/// Probe all witnesses at once. True if any answered — or if none is
/// configured (then there is nobody to ask, and the vector is empty).
pub async fn any_witness(ws: &[Witness], timeout: Duration) -> (bool, Vec<ProbeResult>) {
    if ws.is_empty() {
        return (true, Vec::new());
    }
    let mut set = tokio::task::JoinSet::new();
    for (index, w) in ws.iter().enumerate() {
        let w = w.clone();
        set.spawn(async move { (index, witness(&w, timeout).await) });
    }
    let mut results: Vec<Option<ProbeResult>> = vec![None; ws.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((index, result)) = joined {
            results[index] = Some(result);
        }
    }
    let results: Vec<ProbeResult> = results
        .into_iter()
        .zip(ws)
        .map(|(result, w)| {
            result.unwrap_or_else(|| {
                ProbeResult::fail(
                    witness_name(w),
                    Duration::ZERO,
                    "the probe task failed (a bug in sip-ha: please report it)",
                )
            })
        })
        .collect();
    (results.iter().any(|r| r.ok), results)
}

fn witness_name(w: &Witness) -> String {
    match w {
        Witness::Icmp(ip) => format!("icmp {ip}"),
        Witness::Tcp(addr) => format!("tcp {addr}"),
    }
}

/// What to say when a kind ran out of time.
fn timeout_detail(kind: &CheckKind, timeout: Duration) -> String {
    let t = fmt_timeout(timeout);
    match kind {
        CheckKind::Asterisk { command, .. } => format!(
            "`{command} -rx \"core show uptime\"` did not finish within {t} (killed; Asterisk may be hung or overloaded)"
        ),
        CheckKind::SipOptions(target) => format!(
            "no reply within {t} (is the SIP service running on {}?)",
            host_port(&target.host, target.port)
        ),
        CheckKind::Ami { host, port, .. } => format!(
            "no complete AMI answer from {} within {t} (Asterisk hung, or a firewall dropping packets?)",
            host_port(host, *port)
        ),
        CheckKind::Process { .. } => format!("reading /proc took longer than {t}"),
        CheckKind::Tcp { target } => tcp::timeout_detail(target, timeout),
        CheckKind::Command { command } => {
            format!("`{command}` did not finish within {t} (killed)")
        }
    }
}

/// `500ms`, `2s`, `1s 500ms`: how a timeout is written in the config.
pub(crate) fn fmt_timeout(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `0.04 ms`, `4.2 ms`, `12 ms`, `1.50 s`: a measured latency.
pub(crate) fn fmt_latency(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// `host:port`, with an IPv6 literal in brackets.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    let bare = strip_brackets(host);
    if bare.contains(':') {
        format!("[{bare}]:{port}")
    } else {
        format!("{bare}:{port}")
    }
}

/// `[::1]` -> `::1`; anything else unchanged.
pub(crate) fn strip_brackets(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Resolve a host (name, IPv4 literal, or IPv6 literal with or without
/// brackets) to its addresses, in the resolver's order.
pub(crate) async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let bare = strip_brackets(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if bare.is_empty() {
        return Err("empty host name".to_string());
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("cannot resolve host name {bare}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("host name {bare} resolves to no address"));
    }
    Ok(addrs)
}

/// The first `max` characters of what a peer sent, quoted and escaped, for a
/// detail.
pub(crate) fn snippet(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    format!("{out:?}")
}

/// Random bytes as lowercase hex, for SIP branches, tags and Call-IDs.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        // The OS refused randomness (practically never on Linux). These
        // values need to be unique, not secret: fall back to the std
        // hasher's per-process random keys mixed with the clock.
        use std::hash::{BuildHasher, Hasher};
        let state = std::collections::hash_map::RandomState::new();
        for chunk in buf.chunks_mut(8) {
            let mut h = state.build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default(),
            );
            h.write_usize(chunk.as_ptr() as usize);
            let v = h.finish().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serialize a [`Duration`] as fractional milliseconds.
mod latency_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        // From whole nanoseconds, so 420 µs is exactly 0.42.
        s.serialize_f64(d.as_nanos() as f64 / 1e6)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        let nanos = (ms * 1e6).round();
        if !(0.0..=u64::MAX as f64).contains(&nanos) {
            return Err(serde::de::Error::custom(format!(
                "latency_ms {ms} is not a duration"
            )));
        }
        Ok(Duration::from_nanos(nanos as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_latency_ms() {
        let r = ProbeResult::ok("sip", Duration::from_micros(420), "fine");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["latency_ms"].as_f64().unwrap(), 0.42);
        assert_eq!(v["ok"], true);
        assert!(v.get("latency").is_none());
        let back: ProbeResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn host_port_brackets_ipv6() {
        assert_eq!(host_port("::1", 5060), "[::1]:5060");
        assert_eq!(host_port("[::1]", 5060), "[::1]:5060");
        assert_eq!(host_port("pbx.example", 5060), "pbx.example:5060");
    }

    #[test]
    fn latency_formats() {
        assert_eq!(fmt_latency(Duration::from_micros(400)), "0.40 ms");
        assert_eq!(fmt_latency(Duration::from_micros(4200)), "4.2 ms");
        assert_eq!(fmt_latency(Duration::from_millis(12)), "12 ms");
        assert_eq!(fmt_latency(Duration::from_millis(1500)), "1.50 s");
        assert_eq!(fmt_timeout(Duration::from_millis(500)), "500ms");
    }

    #[test]
    fn random_hex_is_random() {
        let a = random_hex(8);
        assert_eq!(a.len(), 16);
        assert_ne!(a, random_hex(8));
    }
}
