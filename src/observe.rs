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
use sip_ha_core::{PeerView, Role};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the peer's SIP and TCP paths and a status request may take:
/// about one interval, within these bounds. A round never waits longer.
const PEER_TIMEOUT_MIN: Duration = Duration::from_millis(300);
const PEER_TIMEOUT_MAX: Duration = Duration::from_secs(1);
/// How long to listen for another holder of the address.
const CONFLICT_PROBE: Duration = Duration::from_millis(150);

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
    /// While holding the address with no word from the peer: another host
    /// answered an ARP/ND probe for it (split brain seen on the LAN).
    pub address_conflict: bool,
}

impl Round {
    /// Whether every local probe passed; with no probe configured the node
    /// counts as healthy while sip-ha itself runs (host-level failover).
    pub fn local_ok(&self) -> Option<bool> {
        Some(self.probes.iter().all(|p| p.ok))
    }
}

/// The SSH link to the peer. Connecting can take up to
/// `ssh.connect_timeout` (a powered-off peer does not even refuse), so it
/// happens in the background: a round never waits for it, it only uses the
/// link once it is up.
enum Link {
    Down { last_error: Option<String> },
    Connecting(tokio::task::JoinHandle<anyhow::Result<PeerLink>>),
    Up(Box<PeerLink>),
}

/// Looks at the world, round after round.
pub struct Observer {
    cfg: Config,
    role: Role,
    link: Link,
    control_dir: PathBuf,
    /// Probe every peer path each round (`-v`), not only the SIP and TCP
    /// paths when SSH fails (every TCP connect to sshd is a line in its
    /// log, so a loop does it only when needed).
    all_paths: bool,
    /// Wait for the SSH connection instead of connecting in the background:
    /// a one-shot run (a cron pass, `-v`, `-f`) has no next round.
    wait_connect: bool,
}

impl Observer {
    pub fn new(cfg: &Config, role: Role) -> Observer {
        Observer {
            cfg: cfg.clone(),
            role,
            link: Link::Down { last_error: None },
            control_dir: cfg.cluster.state_dir.join("ssh"),
            all_paths: false,
            wait_connect: false,
        }
    }

    /// For `-v`: probe every path, and wait for the SSH connection.
    pub fn all_paths(mut self) -> Observer {
        self.all_paths = true;
        self.wait_connect = true;
        self
    }

    /// For a one-shot run: wait for the SSH connection.
    pub fn one_shot(mut self) -> Observer {
        self.wait_connect = true;
        self
    }

    fn peer_timeout(&self) -> Duration {
        self.cfg
            .health
            .interval
            .clamp(PEER_TIMEOUT_MIN, PEER_TIMEOUT_MAX)
    }

    /// Run one round.
    pub async fn round(&mut self, log: &Logger) -> Round {
        let cfg = self.cfg.clone();
        let me = cfg.node(self.role);
        let witness_timeout = cfg.health.interval.min(Duration::from_secs(1));

        let local = probe::run_checks(&cfg.health.checks);
        let witness = probe::any_witness(&cfg.peer.witness, witness_timeout);
        let holds = async {
            let addr = cfg.cluster.service_address.addr();
            crate::identity::holds(&me.interface, addr)
        };
        let peer = self.peer_paths();
        let (probes, (witness_ok, witness), holds, (peer_paths, reply)) =
            tokio::join!(local, witness, holds, peer);

        let holds_address = match holds {
            Ok(h) => h,
            Err(e) => {
                log.error(&format!("cannot read this server's addresses: {e:#}"));
                false
            }
        };
        for p in probes.iter().chain(&witness).chain(&peer_paths) {
            log.debug(&format!(
                "probe {}: {} in {:.1} ms: {}",
                p.name,
                if p.ok { "ok" } else { "FAIL" },
                p.latency.as_secs_f64() * 1000.0,
                p.detail
            ));
        }
        let (report, peer_summary) = match reply {
            Some(r) => (Some(r.report), Some(r.summary)),
            None => (None, None),
        };
        // Holding the address and no report from the peer: is anyone else
        // answering for it on the LAN? (With a report, its word is enough.)
        let mut address_conflict = false;
        if holds_address && report.is_none() {
            let addr = cfg.cluster.service_address.addr();
            match crate::address::probe_conflict(&me.interface, addr, CONFLICT_PROBE).await {
                Ok(Some(mac)) => {
                    log.warn(&format!(
                        "{mac} also answers for {addr} on {}",
                        me.interface
                    ));
                    address_conflict = true;
                }
                Ok(None) => {}
                Err(e) => log.debug(&format!("conflict probe: {e:#}")),
            }
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
            address_conflict,
        }
    }

    /// Probe the peer: SSH first (its own report); the SIP and TCP paths
    /// too when SSH did not answer, or when every path is wanted.
    async fn peer_paths(&mut self) -> (Vec<ProbeResult>, Option<crate::link::StatusReply>) {
        let paths = self.cfg.peer.paths.clone();
        let mut results = Vec::new();
        let mut reply = None;
        if paths.contains(&PeerPath::Ssh) {
            let (r, rep) = self.ssh_status().await;
            reply = rep;
            results.push(r);
        }
        let ssh_ok = results.first().is_some_and(|r| r.ok);
        if !ssh_ok || self.all_paths {
            let peer = self.cfg.node(self.role.peer()).clone();
            let timeout = self.peer_timeout();
            let sip = async {
                if !paths.contains(&PeerPath::Sip) {
                    return None;
                }
                let host = peer.address.to_string();
                let target = probe::sip::target_for(&host, self.cfg.peer.sip_port, Transport::Udp);
                let mut r = probe::sip::options(&target, timeout).await;
                r.name = "sip".into();
                Some(r)
            };
            let tcp = async {
                if !paths.contains(&PeerPath::Tcp) {
                    return None;
                }
                let w = crate::config::Witness::Tcp((peer.address, self.cfg.ssh.port).into());
                let mut r = probe::witness(&w, timeout).await;
                r.name = "tcp".into();
                Some(r)
            };
            let (sip, tcp) = tokio::join!(sip, tcp);
            results.extend(sip);
            results.extend(tcp);
        }
        (results, reply)
    }

    /// The SSH path: the peer's own status over the kept link. When the
    /// link is down, a connection is started in the background and this
    /// round counts the path as failed (`-v` waits for it instead).
    async fn ssh_status(&mut self) -> (ProbeResult, Option<crate::link::StatusReply>) {
        let started = Instant::now();
        let host = self.cfg.node(self.role.peer()).address;
        // A one-shot run connects now and waits for it.
        if self.wait_connect && matches!(self.link, Link::Down { .. }) {
            self.link = Link::Connecting(self.spawn_connect());
        }
        if let Link::Connecting(task) = &mut self.link {
            if task.is_finished() || self.wait_connect {
                let budget = self.cfg.ssh.connect_timeout + Duration::from_secs(2);
                self.link = match tokio::time::timeout(budget, task).await {
                    Ok(Ok(Ok(l))) => Link::Up(Box::new(l)),
                    Ok(Ok(Err(e))) => Link::Down {
                        last_error: Some(format!("{e:#}")),
                    },
                    Ok(Err(e)) => Link::Down {
                        last_error: Some(format!("the SSH connection task failed: {e}")),
                    },
                    Err(_) => Link::Down {
                        last_error: Some(format!("no SSH session to {host} within {budget:?}")),
                    },
                };
            }
        }
        let timeout = if self.all_paths {
            PEER_TIMEOUT_MAX * 2
        } else {
            self.peer_timeout()
        };
        match &mut self.link {
            Link::Up(l) => {
                match tokio::time::timeout(timeout, l.status()).await {
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
                        self.link = Link::Down {
                            last_error: Some(format!("{e:#}")),
                        };
                        (
                            ProbeResult::fail("ssh", started.elapsed(), format!("{e:#}")),
                            None,
                        )
                    }
                    Err(_) => {
                        // The session may be wedged: drop it, reconnect.
                        self.link = Link::Down {
                            last_error: Some(format!(
                                "the peer's sip-ha did not answer within {timeout:?}"
                            )),
                        };
                        let msg = format!("the peer's sip-ha did not answer within {timeout:?}");
                        (ProbeResult::fail("ssh", started.elapsed(), msg), None)
                    }
                }
            }
            Link::Connecting(_) => {
                let msg = format!("connecting to {host} over SSH");
                (ProbeResult::fail("ssh", started.elapsed(), msg), None)
            }
            Link::Down { last_error } => {
                let msg = last_error
                    .clone()
                    .unwrap_or_else(|| format!("connecting to {host} over SSH"));
                if !self.wait_connect {
                    // Connect in the background; the next rounds use it.
                    self.link = Link::Connecting(self.spawn_connect());
                }
                (ProbeResult::fail("ssh", started.elapsed(), msg), None)
            }
        }
    }

    fn spawn_connect(&self) -> tokio::task::JoinHandle<anyhow::Result<PeerLink>> {
        let host = self.cfg.node(self.role.peer()).address;
        let (ssh, dir) = (self.cfg.ssh.clone(), self.control_dir.clone());
        tokio::spawn(async move { PeerLink::connect(&ssh, host, &dir).await })
    }

    /// The kept link to the peer, when it is up (the driver pushes sync
    /// over it).
    pub fn link(&mut self) -> Option<&mut PeerLink> {
        match &mut self.link {
            Link::Up(l) => Some(l),
            _ => None,
        }
    }

    /// The kept link failed while borrowed: drop it; the next round
    /// reconnects.
    pub fn link_failed(&mut self, error: String) {
        self.link = Link::Down {
            last_error: Some(error),
        };
    }

    /// Ask the peer's loop to run a round now, over the kept link.
    pub async fn wake_peer(&mut self) -> anyhow::Result<bool> {
        let Link::Up(link) = &mut self.link else {
            anyhow::bail!("no SSH session to the peer");
        };
        match tokio::time::timeout(PEER_TIMEOUT_MAX, link.wake()).await {
            Ok(r) => r,
            Err(_) => {
                self.link = Link::Down { last_error: None };
                anyhow::bail!("the peer did not answer within {PEER_TIMEOUT_MAX:?}")
            }
        }
    }
}
