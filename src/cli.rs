//! The command line. The short flags are those of the KCCVoIP SIP-HA scripts
//! that operators already know (`-v`, `-f`, `-c`, `-d`, `-l`, `-?`); the
//! subcommands are what cron, systemd and the peer call.

use clap::{ArgAction, Args, Parser, Subcommand};
use std::path::PathBuf;

/// sip-ha: high availability for a pair of Asterisk servers (FreePBX,
/// Kamailio and friends). With no option, runs one pass (what cron calls).
#[derive(Debug, Parser)]
#[command(
    name = "sip-ha",
    version,
    disable_help_flag = true,
    disable_help_subcommand = true,
    after_help = "Exit status of -v: 0 normal, 1 degraded, 2 critical, 3 unknown (config unreadable).\n\
                  Config: /etc/sip-ha/sip-ha.toml unless --config or SIP_HA_CONFIG says otherwise."
)]
pub struct Cli {
    #[command(flatten)]
    pub action: Action,

    /// With -v: print one JSON object instead of the screen.
    #[arg(long, requires = "verify")]
    pub json: bool,

    /// With -f: hand over even if the other server does not look ready.
    #[arg(long, requires = "failover")]
    pub force: bool,

    /// Enable logging: log the detail of this run (each probe, each decision)
    /// to syslog, not only events and errors.
    #[arg(short = 'l', long = "log", global = true)]
    pub log: bool,

    /// Show help (also -h).
    #[arg(short = '?', visible_short_alias = 'h', long = "help", action = ArgAction::Help)]
    pub help: Option<bool>,

    /// The configuration file, the same on both servers.
    #[arg(
        long,
        global = true,
        env = "SIP_HA_CONFIG",
        default_value = crate::config::DEFAULT_PATH,
        value_name = "PATH"
    )]
    pub config: PathBuf,

    /// Say which node this is (master or slave) instead of finding out from
    /// this server's addresses.
    #[arg(long, global = true, value_name = "NAME")]
    pub node: Option<String>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The old tool's one-letter actions. At most one per run.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct Action {
    /// Verify: show this server's status on the command line.
    #[arg(short = 'v', long = "verify")]
    pub verify: bool,

    /// Manual failover: stop this active server and hand the service address
    /// to the other one (refused unless the other is ready; see --force).
    #[arg(short = 'f', long = "failover")]
    pub failover: bool,

    /// Disable active services on this server: release the service address
    /// and stay out (maintenance) until --enable.
    #[arg(short = 'd', long = "disable")]
    pub disable: bool,

    /// Leave maintenance (undo -d).
    #[arg(long = "enable")]
    pub enable: bool,

    /// Copy this sip-ha (the running program and its config file) to the
    /// other server, through `sip-ha serve` there; it keeps the copies it
    /// replaces as `<name>.prev`.
    #[arg(short = 'c', long = "copy")]
    pub copy: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one pass: probe, decide, move the address if needed (what cron
    /// calls every minute, and what a bare `sip-ha` does).
    Run(RunArgs),
    /// Run the local health probes once, one line each; exit 0 if all pass,
    /// 1 if any fails. Works as a keepalived vrrp_script, a Pacemaker monitor
    /// or a Nagios check.
    Check,
    /// Validate the configuration and print it resolved, with this node's
    /// identity. Exits non-zero, naming file, line and column, if invalid.
    CheckConfig,
    /// The peer's side of the link: answer requests from the other server
    /// over standard input and output. Run by the other server over SSH
    /// (`restrict,command="/usr/local/sbin/sip-ha serve"` in authorized_keys),
    /// not by hand.
    Serve(ServeArgs),
    /// Copy the `[sync]` paths to the standby server now (on the active
    /// server only). Ends with a summary line: files and bytes sent, bytes
    /// on the wire, time. With `run --loop` running, the loop does it.
    Sync(SyncArgs),
    /// Alerts: with --test, send a test message on every configured channel
    /// (mail straight through the real transport, a syslog line, an SNMP
    /// trap to each receiver) and say for each whether it worked; exit 0 if
    /// all did, 1 if not. Without, show the mail queue.
    Alert(AlertArgs),
    /// Print this server's history log: one line per event (takeovers,
    /// releases, service down and up, peer lost and back...), oldest first.
    Log(LogArgs),
}

#[derive(Debug, Args, Default)]
pub struct LogArgs {
    /// Only the last N lines.
    #[arg(short = 'n', long, value_name = "N")]
    pub lines: Option<usize>,
}

#[derive(Debug, Args, Default)]
pub struct AlertArgs {
    /// Send a test message on every channel.
    #[arg(long)]
    pub test: bool,
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Answer status requests from this JSON file instead of this node's
    /// state (for tests and labs).
    #[arg(long, hide = true, value_name = "FILE")]
    pub status_file: Option<PathBuf>,

    /// Put what `sip-ha -c` sends in DIR (as DIR/sip-ha and
    /// DIR/sip-ha.toml) instead of over this program and its config (for
    /// tests and labs).
    #[arg(long, hide = true, value_name = "DIR")]
    pub install_dir: Option<PathBuf>,

    /// Receive the configured sync paths under DIR (DIR/etc/asterisk for
    /// /etc/asterisk) instead of at their paths (for tests and labs: two
    /// "servers" on one machine).
    #[arg(long, hide = true, value_name = "DIR")]
    pub sync_prefix: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
pub struct SyncArgs {
    /// List what would change on the standby; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Hash every file on both servers instead of trusting unchanged file
    /// metadata (slower; finds what a stat check cannot).
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Stay resident and probe every health.interval (the systemd unit's
    /// mode) instead of running one pass.
    #[arg(long = "loop")]
    pub resident: bool,
}

impl Action {
    /// Whether any one-letter action was given.
    pub fn any(&self) -> bool {
        self.verify || self.failover || self.disable || self.enable || self.copy
    }
}
