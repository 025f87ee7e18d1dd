//! `sip-ha -v`: the status screen operators know from the KCCVoIP scripts,
//! plus what that tool never showed, and the same facts as JSON.
//!
//! Everything here is pure: [`Status::build`] takes what the caller gathered
//! (config, state, whether the address is on the interface now, probe
//! results) and classifies it; [`Status::render`] prints the screen. The
//! classification also gives the exit status, as monitoring plugins use it:
//! 0 normal, 1 degraded, 2 critical, 3 unknown.

use crate::config::Config;
use crate::state::{State, SyncRecord};
use chrono::{Local, TimeZone};
use serde::Serialize;
use sip_ha_core::{Event, Health, Report, Role, Stance};
use std::fmt::Write as _;

/// The overall state, as `--json` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overall {
    Normal,
    FailedOver,
    ServiceDown,
    Disabled,
    SplitBrain,
    Unknown,
}

/// One probe's result on the screen and in JSON.
pub use crate::probe::ProbeResult as ProbeLine;

/// What is known about the peer this time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerLine {
    pub role: Role,
    pub address: String,
    /// Each configured path and whether it answered.
    pub paths: Vec<ProbeLine>,
    /// The peer's own report, when the SSH path answered.
    pub report: Option<Report>,
}

/// What the caller gathered for the screen.
#[derive(Debug, Default)]
pub struct Gathered {
    /// Whether the address is on the interface now (`None`: could not read).
    pub holds_address: Option<bool>,
    pub probes: Option<Vec<ProbeLine>>,
    pub witness: Option<Vec<ProbeLine>>,
    pub peer: Option<PeerLine>,
    pub history: Vec<String>,
    /// Things the operator should know (a corrupt state file, warnings).
    pub notices: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastChange {
    pub kind: String,
    pub reason: String,
    pub at: String,
    pub at_ms: u64,
}

impl From<&Event> for LastChange {
    fn from(e: &Event) -> Self {
        LastChange {
            kind: e.kind.to_string(),
            reason: e.reason.clone(),
            at: crate::log::local_time(e.at_ms),
            at_ms: e.at_ms,
        }
    }
}

/// `sip-ha -v --json`. Fields that need probes or the peer are `"unknown"`
/// when they could not be gathered.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub cluster: String,
    pub node: Role,
    pub role: Role,
    pub active: bool,
    pub state: Overall,
    pub service_address: String,
    pub holds_address: Option<bool>,
    pub interface: String,
    pub master_address: String,
    pub slave_address: String,
    pub timestamp: String,
    pub maintenance: bool,
    pub epoch: u64,
    pub health: Health,
    #[serde(serialize_with = "unknown_if_none")]
    pub local_health: Option<Vec<ProbeLine>>,
    #[serde(serialize_with = "unknown_if_none")]
    pub peer: Option<PeerLine>,
    #[serde(serialize_with = "unknown_if_none")]
    pub witness: Option<Vec<ProbeLine>>,
    pub last_change: Option<LastChange>,
    pub last_sync: Option<SyncRecord>,
    /// Why the state is what it is, one line each: what the screen prints
    /// after the header.
    pub lines: Vec<String>,
    pub exit_code: i32,
    pub notices: Vec<String>,
    #[serde(skip)]
    pub history: Vec<String>,
}

fn unknown_if_none<T: Serialize, S: serde::Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => v.serialize(s),
        None => s.serialize_str("unknown"),
    }
}

impl Status {
    pub fn build(cfg: &Config, role: Role, state: &State, g: Gathered) -> Status {
        let me = cfg.node(role);
        let peer_cfg = cfg.node(role.peer());
        let mem = &state.memory;
        let service = cfg.cluster.service_address.addr().to_string();
        // The interface is the truth; the state file is the fallback.
        let holds = g.holds_address.unwrap_or(mem.stance == Stance::Active);
        // What the peer says now; its last report only when it was not
        // asked this time (a stale "I hold it" must not read as split brain).
        let peer_report = match &g.peer {
            Some(p) => p.report.clone(),
            None => mem.last_peer.clone(),
        };
        let peer_holds = peer_report.as_ref().is_some_and(|r| r.holds_address);
        let peer_reachable = g
            .peer
            .as_ref()
            .map(|p| p.paths.iter().any(|l| l.ok))
            .unwrap_or(mem.peer_misses == 0);
        let sync_failing = state.last_sync.as_ref().is_some_and(|s| !s.ok);

        let mut lines = Vec::new();
        let (overall, mut code) = if holds && peer_holds {
            lines.push(format!(
                "SPLIT BRAIN: both servers hold {service}; the one with the higher epoch keeps it (ours {})",
                mem.epoch
            ));
            (Overall::SplitBrain, 2)
        } else if mem.maintenance {
            lines.push(format!(
                "not active for services on this server for {service}"
            ));
            lines.push("this server is DISABLED (maintenance): run `sip-ha --enable` to return it to service".into());
            (Overall::Disabled, 1)
        } else if mem.health == Health::Down {
            lines.push(format!(
                "not active for services on this server for {service}"
            ));
            lines.push("one of the services on this server needs attention".into());
            lines.push("SERVICE DOWN LOCALLY".into());
            (Overall::ServiceDown, 2)
        } else if holds {
            let upper = role.as_str().to_uppercase();
            lines.push(format!(
                "ACTIVE SERVICES ON THIS SERVER - this server is {upper}"
            ));
            let replicate = format!("SIP-HA will replicate local files to {}", peer_cfg.address);
            match role {
                Role::Master => {
                    lines.push("- NOW IN NORMAL STATE -".into());
                    lines.push(replicate);
                    (Overall::Normal, 0)
                }
                Role::Slave => {
                    lines.push(
                        "the master failed: failback is manual, run `sip-ha -f` on this server once the master is checked"
                            .into(),
                    );
                    if peer_reachable {
                        lines.push(replicate);
                    }
                    (Overall::FailedOver, 1)
                }
            }
        } else if peer_holds || mem.active == Some(role.peer()) {
            let upper = role.as_str().to_uppercase();
            lines.push(format!(
                "ACTIVE SERVICES ON OTHER SERVER - this server is {upper}"
            ));
            match role {
                Role::Slave => (Overall::Normal, 0),
                Role::Master => {
                    lines.push("failed over: the slave is active; failback is manual (`sip-ha -f` on the slave)".into());
                    (Overall::FailedOver, 1)
                }
            }
        } else if mem.health == Health::Unknown && peer_report.is_none() {
            lines.push(
                "status not known yet: sip-ha has not completed a pass on this server".into(),
            );
            (Overall::Unknown, 3)
        } else {
            lines.push(format!("NO SERVER IS ACTIVE for {service}"));
            (Overall::Unknown, 2)
        };
        if code < 2 && !peer_reachable {
            lines.push(format!(
                "the {} ({}) is unreachable",
                role.peer(),
                peer_cfg.address
            ));
            code = code.max(1);
        }
        if code < 2 && sync_failing {
            lines.push("the last sync failed".into());
            code = code.max(1);
        }

        Status {
            cluster: cfg.cluster.name.clone(),
            node: role,
            role,
            active: holds,
            state: overall,
            service_address: service,
            holds_address: g.holds_address,
            interface: me.interface.clone(),
            master_address: cfg.master.address.to_string(),
            slave_address: cfg.slave.address.to_string(),
            timestamp: Local::now().format("%m/%d/%Y-%H:%M:%S").to_string(),
            maintenance: mem.maintenance,
            epoch: mem.epoch,
            health: mem.health,
            local_health: g.probes,
            peer: g.peer,
            witness: g.witness,
            last_change: mem.last_change.as_ref().map(LastChange::from),
            last_sync: state.last_sync.clone(),
            lines,
            exit_code: code,
            notices: g.notices,
            history: g.history,
        }
    }

    /// The screen, header lines as the old tool printed them.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let value = match self.role {
            Role::Master => "1 - this server is MASTER",
            Role::Slave => "0 - this server is SLAVE",
        };
        let _ = writeln!(s, "SIP-HA High Availability Routines for Asterisk");
        let _ = writeln!(s, "-v verify information:");
        let _ = writeln!(s, "master value      : {value}");
        let _ = writeln!(s, "master server is  : {} management", self.master_address);
        let _ = writeln!(s, "slave server is   : {} management", self.slave_address);
        let _ = writeln!(s, "interface         : {} physical", self.interface);
        let _ = writeln!(s, "timestamp         : {}", self.timestamp);
        let _ = writeln!(
            s,
            "service address   : {} controlled by SIP-HA",
            self.service_address
        );
        for l in &self.lines {
            let _ = writeln!(s, "{l}");
        }

        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "cluster           : {} (epoch {})",
            self.cluster, self.epoch
        );
        let holds = match self.holds_address {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown (could not read the interface)",
        };
        let _ = writeln!(s, "holds address now : {holds}");
        let _ = writeln!(s, "local health      : {:?}", self.health);
        match &self.local_health {
            Some(probes) => probe_lines(&mut s, probes),
            None => {
                let _ = writeln!(s, "  probes          : unknown");
            }
        }
        match &self.peer {
            Some(p) => {
                let _ = writeln!(s, "peer ({}) {}:", p.role, p.address);
                probe_lines(&mut s, &p.paths);
                if let Some(r) = &p.report {
                    let _ = writeln!(
                        s,
                        "  says            : {:?}, health {:?}, holds address {}, epoch {}{}",
                        r.stance,
                        r.health,
                        if r.holds_address { "yes" } else { "no" },
                        r.epoch,
                        if r.maintenance { ", DISABLED" } else { "" }
                    );
                }
            }
            None => {
                let _ = writeln!(s, "peer              : unknown");
            }
        }
        match &self.witness {
            Some(w) if w.is_empty() => {
                let _ = writeln!(s, "witness           : none configured");
            }
            Some(w) => {
                let _ = writeln!(s, "witness:");
                probe_lines(&mut s, w);
            }
            None => {
                let _ = writeln!(s, "witness           : unknown");
            }
        }
        match &self.last_sync {
            Some(sync) => {
                let when = crate::log::local_time(sync.at_ms);
                match &sync.error {
                    None => {
                        let _ = writeln!(
                            s,
                            "last sync         : {when}, {} files, {} bytes",
                            sync.files, sync.bytes
                        );
                    }
                    Some(e) => {
                        let _ = writeln!(s, "last sync         : {when} FAILED: {e}");
                    }
                }
            }
            None => {
                let _ = writeln!(s, "last sync         : never");
            }
        }
        match &self.last_change {
            Some(c) => {
                let _ = writeln!(s, "last change       : {} {}: {}", c.at, c.kind, c.reason);
            }
            None => {
                let _ = writeln!(s, "last change       : none recorded");
            }
        }
        for n in &self.notices {
            let _ = writeln!(s, "NOTE: {n}");
        }
        if !self.history.is_empty() {
            let _ = writeln!(s, "history (last {}):", self.history.len());
            for h in &self.history {
                let _ = writeln!(s, "  {h}");
            }
        }
        s
    }
}

fn probe_lines(s: &mut String, probes: &[ProbeLine]) {
    for p in probes {
        let _ = writeln!(
            s,
            "  {:<16}: {} {:>7.1} ms  {}",
            p.name,
            if p.ok { "OK  " } else { "FAIL" },
            p.latency.as_secs_f64() * 1000.0,
            p.detail
        );
    }
}

/// The old tool's line for `-f` on the active node.
pub fn stopped_line(service_address: &str) -> String {
    format!("active service stopped on this server for {service_address} services stop")
}

/// Format a time in ms since the epoch as the screen's MM/DD/YYYY-HH:MM:SS.
pub fn screen_time(ms: u64) -> String {
    match Local.timestamp_millis_opt(ms as i64).single() {
        Some(t) => t.format("%m/%d/%Y-%H:%M:%S").to_string(),
        None => String::from("unknown"),
    }
}
