//! The lab's `sip-ha.toml`, and [`LabOptions`], which is how a test changes
//! it.
//!
//! The text is built table by table from the lab's addresses, then the
//! test's changes are applied:
//!
//! * [`LabOptions::set`]`("cluster.failback", "\"auto\"")` sets one key of
//!   a plain table to a raw TOML value, replacing the lab's line or adding
//!   one; a table the lab does not write (`[hooks]`) is added at the end.
//! * [`LabOptions::checks`] replaces the `[[health.check]]` entries.
//! * [`LabOptions::append`] adds raw TOML at the very end, for arrays of
//!   tables (`[[sync.path]]`) or whole new tables.
//!
//! Text given to these may use placeholders, replaced per node:
//!
//! | placeholder   | example                                   |
//! |---------------|-------------------------------------------|
//! | `{lan}`       | `10.77.3` (so `"{lan}.1"` is the client)  |
//! | `{mgmt}`      | `10.78.3`                                 |
//! | `{node}`      | `master` or `slave`                       |
//! | `{node_dir}`  | that node's directory                     |
//! | `{lab_dir}`   | the lab directory                         |
//! | `{sip_ha}`    | the sip-ha binary under test              |
//!
//! The lab runs `sip-ha check-config` on both results when it starts, so a
//! change sip-ha refuses fails there, with sip-ha's message and the text.

use super::{LAN_IF, SIP_HA, SIP_PORT};
use sip_ha_core::Role;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// How to build a lab. `LabOptions::default()` gives fast health rounds
/// (300 ms, fail after 3, rise after 2; peer dead after 3 rounds), a
/// `sip-options` check of the node's own Kamailio on 127.0.0.1:5060, the
/// client as the only witness, manual failback, and no loop running.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// `health.interval`.
    pub interval: String,
    /// `health.fail_after`.
    pub fail_after: u32,
    /// `health.rise_after`.
    pub rise_after: u32,
    /// `peer.dead_after`.
    pub dead_after: u32,
    /// `ssh.connect_timeout`.
    pub connect_timeout: String,
    /// Raw `[[health.check]]` entries replacing the default one.
    pub checks: Option<String>,
    /// `(table.key, raw TOML value)` pairs applied in order.
    pub set: Vec<(String, String)>,
    /// Raw TOML appended at the end.
    pub append: String,
    /// Start `sip-ha run --loop` on both servers once the lab is up.
    pub start_loops: bool,
    /// Extra arguments for each node's `sip-ha serve` (hidden test options
    /// such as `--sync-prefix {node_dir}/recv`).
    pub serve_args: String,
    /// Global options given to each `sip-ha run --loop` (e.g. `-l`).
    pub loop_args: Vec<String>,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            interval: "300ms".into(),
            fail_after: 3,
            rise_after: 2,
            dead_after: 3,
            connect_timeout: "5s".into(),
            checks: None,
            set: Vec::new(),
            append: String::new(),
            start_loops: false,
            serve_args: String::new(),
            loop_args: Vec::new(),
        }
    }
}

impl LabOptions {
    /// `health.interval`, e.g. `"300ms"`.
    pub fn interval(mut self, interval: &str) -> Self {
        self.interval = interval.into();
        self
    }

    /// Sets `key` (`table.key`, e.g. `"cluster.failback"`) to `raw_value`,
    /// TOML as written: strings need their quotes (`"\"auto\""`).
    pub fn set(mut self, key: &str, raw_value: &str) -> Self {
        self.set.push((key.into(), raw_value.into()));
        self
    }

    /// Replaces the `[[health.check]]` entries with `raw` (each entry with
    /// its `[[health.check]]` header).
    pub fn checks(mut self, raw: &str) -> Self {
        self.checks = Some(raw.into());
        self
    }

    /// Appends raw TOML at the end of the config.
    pub fn append(mut self, raw: &str) -> Self {
        self.append.push_str(raw);
        self.append.push('\n');
        self
    }

    /// Extra arguments for `sip-ha serve` on each node.
    pub fn serve_args(mut self, args: &str) -> Self {
        self.serve_args = args.into();
        self
    }

    /// Global options for each `sip-ha run --loop`: `-l` puts its detail
    /// (each push and why) in `loop.log`.
    pub fn loop_args(mut self, args: &[&str]) -> Self {
        self.loop_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Starts both loops as soon as the lab is up.
    pub fn start_loops(mut self) -> Self {
        self.start_loops = true;
        self
    }
}

/// What differs between labs and between the two nodes.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub role: Role,
    pub net: u8,
    /// `10.77.N.100/24`.
    pub service: String,
    pub master: Ipv4Addr,
    pub slave: Ipv4Addr,
    pub witness: Ipv4Addr,
    pub state_dir: PathBuf,
    pub identity: PathBuf,
    pub known_hosts: PathBuf,
    pub node_dir: PathBuf,
    pub lab_dir: PathBuf,
}

/// One `[table]` (or one `[[array]]` entry) of the file: its comment lines,
/// then `key = value  # comment` lines.
struct Table {
    header: String,
    array: bool,
    comment: Vec<String>,
    entries: Vec<(String, String, Option<String>)>,
}

impl Table {
    fn new(header: &str, comment: &[&str]) -> Table {
        Table {
            header: header.into(),
            array: false,
            comment: comment.iter().map(|c| c.to_string()).collect(),
            entries: Vec::new(),
        }
    }

    fn key(mut self, key: &str, value: impl Into<String>) -> Table {
        self.entries.push((key.into(), value.into(), None));
        self
    }

    /// A key whose value differs between the two nodes.
    fn per_node(mut self, key: &str, value: impl Into<String>) -> Table {
        self.entries
            .push((key.into(), value.into(), Some("per node".into())));
        self
    }

    fn render(&self, out: &mut String) {
        for c in &self.comment {
            out.push_str(&format!("# {c}\n"));
        }
        if self.array {
            out.push_str(&format!("[[{}]]\n", self.header));
        } else {
            out.push_str(&format!("[{}]\n", self.header));
        }
        for (key, value, comment) in &self.entries {
            match comment {
                Some(c) => out.push_str(&format!("{key} = {value}  # {c}\n")),
                None => out.push_str(&format!("{key} = {value}\n")),
            }
        }
        out.push('\n');
    }
}

/// A TOML basic string.
fn quote(s: impl std::fmt::Display) -> String {
    let s = s.to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn substitute(text: &str, p: &Params) -> String {
    text.replace("{lan}", &format!("10.77.{}", p.net))
        .replace("{mgmt}", &format!("10.78.{}", p.net))
        .replace("{node}", p.role.as_str())
        .replace("{node_dir}", &p.node_dir.display().to_string())
        .replace("{lab_dir}", &p.lab_dir.display().to_string())
        .replace("{sip_ha}", SIP_HA)
}

/// The config text of one node.
pub(crate) fn render(options: &LabOptions, p: &Params) -> String {
    let mut tables = vec![
        Table::new("cluster", &[])
            .key("name", quote("lab"))
            .key("service_address", quote(&p.service))
            .key("failback", quote("manual"))
            .per_node("state_dir", quote(p.state_dir.display())),
        Table::new(
            "nodes.master",
            &["Management addresses, on eth1: each node finds itself by them."],
        )
        .key("address", quote(p.master))
        .key("interface", quote(LAN_IF)),
        Table::new("nodes.slave", &[])
            .key("address", quote(p.slave))
            .key("interface", quote(LAN_IF)),
        Table::new("ssh", &[])
            .key("user", quote("root"))
            .key("port", "22")
            .per_node("identity", quote(p.identity.display()))
            .per_node("known_hosts", quote(p.known_hosts.display()))
            .key("connect_timeout", quote(&options.connect_timeout))
            .key("remote_command", quote(SIP_HA)),
        Table::new("health", &[])
            .key("interval", quote(&options.interval))
            .key("fail_after", options.fail_after.to_string())
            .key("rise_after", options.rise_after.to_string()),
    ];
    let checks = match &options.checks {
        Some(raw) => substitute(raw, p),
        None => {
            let mut s = String::new();
            let mut check = Table::new("health.check", &["The node's own Kamailio."])
                .key("kind", quote("sip-options"))
                .key("name", quote("kamailio"))
                .key("target", quote(format!("sip:ping@127.0.0.1:{SIP_PORT}")))
                .key("timeout", quote("250ms"));
            check.array = true;
            check.render(&mut s);
            s
        }
    };
    let after_checks = vec![Table::new(
        "peer",
        &["The client on the LAN is the gateway, hence the witness."],
    )
    .key("dead_after", options.dead_after.to_string())
    .key("witness", format!("[{}]", quote(p.witness)))];

    let mut tables_after = after_checks;
    for (key, raw) in &options.set {
        let (table, name) = key
            .rsplit_once('.')
            .unwrap_or_else(|| panic!("LabOptions::set({key:?}): expected table.key"));
        let value = substitute(raw, p);
        let target = tables
            .iter_mut()
            .chain(tables_after.iter_mut())
            .find(|t| t.header == table);
        match target {
            Some(t) => match t.entries.iter_mut().find(|(k, _, _)| k == name) {
                Some(entry) => {
                    entry.1 = value;
                    entry.2 = None;
                }
                None => t.entries.push((name.into(), value, None)),
            },
            None => tables_after.push(Table::new(table, &[]).key(name, value)),
        }
    }

    let mut out = format!(
        "# sip-ha.toml of the lab's {role}, written by tests/lab.\n\
         # Both nodes get this same text except the lines marked \"per node\":\n\
         # on real servers those are the same paths on two disks, but the lab's\n\
         # two servers share one filesystem, so each needs its own state\n\
         # directory, SSH key and known_hosts.\n\n",
        role = p.role
    );
    for t in &tables {
        t.render(&mut out);
    }
    out.push_str(&checks);
    if !checks.ends_with("\n\n") {
        out.push('\n');
    }
    for t in &tables_after {
        t.render(&mut out);
    }
    if !options.append.is_empty() {
        out.push_str("# Added by the test.\n");
        out.push_str(&substitute(&options.append, p));
    }
    out
}
