//! One round of looking at the world: the local probes, the witness, each
//! path to the peer, and whether the service address is on this node. All of
//! it runs concurrently and every part has its own timeout, so a round takes
//! as long as its slowest probe, never longer.
//!
//! The [`Observer`] keeps the SSH link to the peer open between rounds (the
//! resident loop asks for the peer's status every round over one session);
//! a cron pass makes one and drops it.

use crate::config::{Config, PeerPath, Transport};
use crate::link::PeerLink;
use crate::log::Logger;
use crate::probe::{self, ProbeResult};
use sip_ha_core::{PeerView, Report, Role};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the peer's SIP and TCP paths may take.
const PEER_PATH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a status request on an open link may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// What one round saw.
#[derive(Debug, Clone)]
pub struct Round {
    pub probes: Vec<ProbeResult>,
    pub witness_ok: bool,
    pub witness: Vec<ProbeResult>,
    /// One result per configured peer path.
    pub peer_paths: Vec<ProbeResult>,
    pub peer_view: PeerView,
    /// The peer's summary line, when its SSH path answered.
    pub peer_summary: Option<String>,
    pub holds_address: bool,
}

impl Round {
    /// Whether every local probe passed; with no probe configured the node
    /// counts as healthy while sip-ha itself runs (host-level failover).
    pub fn local_ok(&self) -> Option<bool> {
        Some(self.probes.iter().all(|p| p.ok))
    }
}

/// Looks at the world, round after round.
pub struct Observer {
    cfg: Config,
    role: Role,
    link: Option<PeerLink>,
    control_dir: PathBuf,
}

impl Observer {
    pub fn new(cfg: &Config, role: Role) -> Observer {
        Observer {
            cfg: cfg.clone(),
            role,
            link: None,
            control_dir: cfg.cluster.state_dir.join("ssh"),
        }
    }

    /// Run one round.
    pub async fn round(&mut self, log: &Logger) -> Round {
        let cfg = &self.cfg;
        let me = cfg.node(self.role);
        let peer = cfg.node(self.role.peer());
        let witness_timeout = cfg.health.interval.min(Duration::from_secs(1));

        let local = probe::run_checks(&cfg.health.checks);
        let witness = probe::any_witness(&cfg.peer.witness, witness_timeout);
        let sip = async {
            if !cfg.peer.paths.contains(&PeerPath::Sip) {
                return None;
            }
            let host = peer.address.to_string();
            let target = probe::sip::target_for(&host, cfg.peer.sip_port, Transport::Udp);
            let mut r = probe::sip::options(&target, PEER_PATH_TIMEOUT).await;
            r.name = "sip".into();
            Some(r)
        };
        let tcp = async {
            if !cfg.peer.paths.contains(&PeerPath::Tcp) {
                return None;
            }
            let w = crate::config::Witness::Tcp((peer.address, cfg.ssh.port).into());
            let mut r = probe::witness(&w, PEER_PATH_TIMEOUT).await;
            r.name = "tcp".into();
            Some(r)
        };
        let holds = async {
            let addr = cfg.cluster.service_address.addr();
            crate::identity::holds(&me.interface, addr)
        };
        let want_ssh = cfg.peer.paths.contains(&PeerPath::Ssh);
        let ssh_cfg = cfg.ssh.clone();
        let peer_addr = peer.address;
        let control_dir = self.control_dir.clone();
        let link = &mut self.link;
        let ssh = async move {
            if !want_ssh {
                return None;
            }
            Some(ssh_status(link, &ssh_cfg, peer_addr, &control_dir).await)
        };

        let (probes, (witness_ok, witness), sip, tcp, ssh, holds) =
            tokio::join!(local, witness, sip, tcp, ssh, holds);

        let holds_address = match holds {
            Ok(h) => h,
            Err(e) => {
                log.error(&format!("cannot read this server's addresses: {e:#}"));
                false
            }
        };
        let mut peer_paths = Vec::new();
        let mut report: Option<Report> = None;
        let mut peer_summary = None;
        if let Some((result, reply)) = ssh {
            if let Some(reply) = reply {
                report = Some(reply.report);
                peer_summary = Some(reply.summary);
            }
            peer_paths.push(result);
        }
        peer_paths.extend(sip);
        peer_paths.extend(tcp);
        for p in probes.iter().chain(&witness).chain(&peer_paths) {
            log.debug(&format!(
                "probe {}: {} in {:.1} ms: {}",
                p.name,
                if p.ok { "ok" } else { "FAIL" },
                p.latency.as_secs_f64() * 1000.0,
                p.detail
            ));
        }
        Round {
            probes,
            witness_ok,
            witness,
            peer_view: PeerView {
                reachable: peer_paths.iter().any(|p| p.ok),
                report,
            },
            peer_paths,
            peer_summary,
            holds_address,
        }
    }
}

impl Observer {
    /// Ask the peer's loop to run a round now, over the kept link.
    pub async fn wake_peer(&mut self) -> anyhow::Result<bool> {
        let Some(link) = self.link.as_mut() else {
            anyhow::bail!("no SSH session to the peer");
        };
        match tokio::time::timeout(STATUS_TIMEOUT, link.wake()).await {
            Ok(r) => r,
            Err(_) => {
                self.link = None;
                anyhow::bail!("the peer did not answer within {STATUS_TIMEOUT:?}")
            }
        }
    }
}

/// Ask the peer's sip-ha for its status over the kept link, connecting (or
/// reconnecting) first when needed.
async fn ssh_status(
    link: &mut Option<PeerLink>,
    ssh: &crate::config::Ssh,
    host: std::net::IpAddr,
    control_dir: &std::path::Path,
) -> (ProbeResult, Option<crate::link::StatusReply>) {
    let started = Instant::now();
    let connect_budget = ssh.connect_timeout + Duration::from_secs(2);
    if link.is_none() {
        match tokio::time::timeout(connect_budget, PeerLink::connect(ssh, host, control_dir)).await
        {
            Ok(Ok(l)) => *link = Some(l),
            Ok(Err(e)) => {
                return (
                    ProbeResult::fail("ssh", started.elapsed(), format!("{e:#}")),
                    None,
                )
            }
            Err(_) => {
                let msg = format!("no SSH session to {host} within {connect_budget:?}");
                return (ProbeResult::fail("ssh", started.elapsed(), msg), None);
            }
        }
    }
    let Some(l) = link.as_mut() else {
        return (ProbeResult::fail("ssh", started.elapsed(), "no link"), None);
    };
    let result = tokio::time::timeout(STATUS_TIMEOUT, l.status()).await;
    match result {
        Ok(Ok(reply)) => {
            let detail = format!(
                "sip-ha {} on {host}: {:?}, {}",
                reply.software_version, reply.report.stance, reply.summary
            );
            (
                ProbeResult::ok("ssh", started.elapsed(), detail),
                Some(reply),
            )
        }
        Ok(Err(e)) => {
            if let Some(l) = link.take() {
                l.close().await;
            }
            (
                ProbeResult::fail("ssh", started.elapsed(), format!("{e:#}")),
                None,
            )
        }
        Err(_) => {
            // The session may be wedged: drop it, reconnect next round.
            *link = None;
            let msg = format!("the peer's sip-ha did not answer within {STATUS_TIMEOUT:?}");
            (ProbeResult::fail("ssh", started.elapsed(), msg), None)
        }
    }
}
