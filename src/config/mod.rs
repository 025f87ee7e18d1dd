//! The configuration: one `sip-ha.toml`, the same file on both servers.
//!
//! Loading happens in two steps. `raw` deserializes the TOML into structs
//! whose every value keeps its byte span (`serde_spanned::Spanned`), refusing
//! unknown keys. [`load`](load::load) then checks what TOML cannot (a node
//! listed twice, the service address equal to a management address, relative
//! or overlapping sync paths, zero intervals...) and resolves defaults into
//! the plain types below. Every refusal is a [`ConfigError`] that names the
//! file, line and column, what is wrong and what is expected; nothing is acted
//! on until the whole file is valid.

mod error;
mod load;
mod raw;
mod size;

pub use error::{line_col, ConfigError};
pub use load::{check, load, parse};
pub use size::{format_size, parse_size};

use ipnet::IpNet;
use sip_ha_core::{Failback, Role};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Where the configuration lives unless `--config` or `SIP_HA_CONFIG` says
/// otherwise.
pub const DEFAULT_PATH: &str = "/etc/sip-ha/sip-ha.toml";

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub cluster: Cluster,
    pub master: NodeConfig,
    pub slave: NodeConfig,
    pub ssh: Ssh,
    pub health: Health,
    pub peer: Peer,
    pub sync: Sync,
    pub alert: Alert,
    pub hooks: Hooks,
    /// Things that are allowed but unwise (a secret in a world-readable file,
    /// no witness configured), for `check-config` and the log.
    pub warnings: Vec<String>,
}

impl Config {
    pub fn node(&self, role: Role) -> &NodeConfig {
        match role {
            Role::Master => &self.master,
            Role::Slave => &self.slave,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    /// The address that moves, with its prefix length.
    pub service_address: IpNet,
    pub failback: Failback,
    /// Under `failback = "auto"`: how long the master must be ready first.
    pub failback_hold_down: Duration,
    pub state_dir: PathBuf,
    /// Gratuitous ARP / unsolicited NA after taking the address: how many.
    pub garp_count: u32,
    /// And how far apart.
    pub garp_interval: Duration,
    /// While active, announce again this often (some switches and firewalls
    /// keep stale ARP entries). `None`: off.
    pub garp_refresh: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    pub role: Role,
    /// Management address: the SSH target, and how a node recognises itself.
    pub address: IpAddr,
    /// The interface the service address goes on.
    pub interface: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ssh {
    pub user: String,
    pub port: u16,
    pub identity: PathBuf,
    pub known_hosts: PathBuf,
    pub connect_timeout: Duration,
    /// The sip-ha binary on the peer (what `serve` runs as).
    pub remote_command: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub interval: Duration,
    pub fail_after: u32,
    pub rise_after: u32,
    pub checks: Vec<Check>,
    /// Local recovery before failover: when the service fails, run this
    /// (e.g. `systemctl restart asterisk`) and give it `fail_after` more
    /// rounds, at most `max_restarts` times per `restart_window`.
    pub restart_command: Option<String>,
    pub max_restarts: u32,
    pub restart_window: Duration,
}

/// One local health probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// A short name for the status screen; defaults to the kind.
    pub name: String,
    pub timeout: Duration,
    pub kind: CheckKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// `asterisk -rx "core show uptime"`, judged by its output.
    Asterisk {
        command: String,
        /// `-s <rundir>/asterisk.ctl` when set.
        rundir: Option<PathBuf>,
    },
    /// A SIP OPTIONS request.
    SipOptions(SipTarget),
    /// Asterisk Manager login and `Action: Ping`.
    Ami {
        host: String,
        port: u16,
        user: String,
        secret: Secret,
    },
    /// A process, by pidfile or by name, checked in /proc.
    Process {
        pidfile: Option<PathBuf>,
        name: Option<String>,
    },
    /// A TCP connect.
    Tcp { target: String },
    /// Any command; exit status 0 is healthy.
    Command { command: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A parsed `sip:user@host:port` target.
#[derive(Debug, Clone, PartialEq)]
pub struct SipTarget {
    /// The URI as written, used as the request-URI.
    pub uri: String,
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    /// Final status codes that mean alive. Default: any below 500.
    pub alive: Vec<std::ops::RangeInclusive<u16>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    pub dead_after: u32,
    pub witness: Vec<Witness>,
    /// Paths on which the peer is probed; it is dead only when all fail.
    pub paths: Vec<PeerPath>,
    /// Port for the SIP path (OPTIONS to the peer's management address).
    pub sip_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerPath {
    /// `sip-ha serve` on the peer, over SSH: its own report.
    Ssh,
    /// SIP OPTIONS to the peer's management address.
    Sip,
    /// TCP connect to the peer's SSH port.
    Tcp,
}

/// A third party that proves this node is not cut off.
#[derive(Debug, Clone, PartialEq)]
pub enum Witness {
    /// ICMP echo.
    Icmp(IpAddr),
    /// TCP connect to `host:port`.
    Tcp(SocketAddr),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sync {
    pub interval: Duration,
    pub paths: Vec<SyncPath>,
    /// Refuse a sync that would delete more than this share (percent) of
    /// the standby's files: the sign of a half-there source.
    pub max_delete_percent: u32,
    /// Days the standby keeps what a sync deleted or replaced in its trash.
    pub trash_days: u32,
    /// `[[sync.target]]`: local mirrors (a NAS or NFS mount) the active
    /// node also copies every path to.
    pub targets: Vec<SyncTarget>,
}

/// One `[[sync.target]]`: each `[[sync.path]]` is mirrored to
/// `<path>/<sync path without its leading />`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncTarget {
    /// An existing directory; never created by sip-ha.
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncPath {
    pub path: PathBuf,
    pub exclude: Vec<String>,
    /// Mirror deletions (into the receiver's trash).
    pub delete: bool,
    /// Files larger than this are not sent (and the other side's copy is
    /// left alone). `None`: no limit.
    pub max_file_size: Option<u64>,
    /// SQLite databases under the path (relative to it, normalized), sent
    /// as a snapshot taken with the online backup API; their `-wal`, `-shm`
    /// and `-journal` files never travel.
    pub sqlite: Vec<PathBuf>,
}

/// `[alert]`: who hears about a failover, and how. See `crate::alert`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Who gets the mail; empty: no mail.
    pub email_to: Vec<String>,
    /// The sender; default `sip-ha@<this server's hostname>`.
    pub email_from: String,
    /// How mail leaves this server.
    pub mail: MailVia,
    /// How long one delivery may take (SMTP dialogue or sendmail run).
    pub timeout: Duration,
    /// Events within this long after the first go out as one mail (zero:
    /// every event at once). A takeover, release, manual failover, auto
    /// failback or split brain opens with a mail at once, unless one was
    /// sent less than a window ago.
    pub digest_window: Duration,
    /// While the cluster is not normal, a "still degraded" mail this often;
    /// `None`: never.
    pub reminder: Option<Duration>,
    /// Where this server's syslog lines go.
    pub syslog_facility: crate::log::Facility,
    /// `[[alert.snmp]]`: SNMPv2c trap receivers.
    pub snmp: Vec<SnmpTarget>,
}

/// How alert mail leaves this server.
#[derive(Debug, Clone, PartialEq)]
pub enum MailVia {
    /// An SMTP server (the local MTA at `localhost:25` unless `smtp` says
    /// otherwise).
    Smtp(Smtp),
    /// The local sendmail program (postfix's, exim's, msmtp...), run as
    /// `sendmail -i -f FROM -- TO...` with the message on its input.
    Sendmail(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Smtp {
    /// A name or an address (IPv6 without its brackets).
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// Extra trusted CA certificates (PEM) for a server whose certificate
    /// is signed by a private CA; the public roots are always trusted.
    pub tls_ca: Option<PathBuf>,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS, which must succeed (587).
    StartTls,
    /// TLS from the first byte, "SMTPS" (465).
    Tls,
    /// No encryption (25): only for a local or otherwise trusted relay.
    None,
}

impl TlsMode {
    /// The port a server of this kind usually listens on.
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::StartTls => 587,
            TlsMode::Tls => 465,
            TlsMode::None => 25,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::StartTls => "starttls",
            TlsMode::Tls => "tls",
            TlsMode::None => "none",
        }
    }
}

/// One `[[alert.snmp]]` trap receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct SnmpTarget {
    /// A name or an address (IPv6 without its brackets).
    pub host: String,
    pub port: u16,
    pub community: String,
}

/// Operator commands run on a change, like keepalived's notify scripts. Each
/// runs with `sh -c` and the environment `SIPHA_STATE`, `SIPHA_NODE`,
/// `SIPHA_PEER`, `SIPHA_ADDRESS`; a failing or slow hook is logged and
/// never blocks the move.
#[derive(Debug, Clone, PartialEq)]
pub struct Hooks {
    pub on_active: Option<String>,
    pub on_standby: Option<String>,
    pub on_disable: Option<String>,
    pub timeout: Duration,
}

/// A password from the config. Its `Debug` (what `check-config` prints)
/// hides it; use [`Secret::expose`] where it is really sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"(hidden)\"")
    }
}
