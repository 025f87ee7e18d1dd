//! From TOML text to a checked [`Config`].
//!
//! [`parse`] is pure: text in, `Config` or [`ConfigError`] out. It first lets
//! the `toml` crate check the shape (see [`raw`]), then walks the
//! raw tables once, resolving defaults and checking what a schema cannot
//! express: the two nodes, the service address, durations, paths that must be
//! absolute and may not overlap, and the keys each kind of health check takes.
//! Problems are collected rather than returned at the first, so a single
//! `check-config` run lists them all, in file order; "allowed but unwise" findings
//! become [`Config::warnings`].
//!
//! [`load()`] adds what needs the filesystem: reading the file, warning when
//! a file that holds an AMI secret or an SMTP password can be read by anyone,
//! and warning when the `sendmail` program it names is missing. [`check()`]
//! (what `check-config` runs) makes that last one an error: a running node
//! keeps failing over without mail, but an operator checking the file is told.

use super::error::ConfigError;
use super::raw::{self, RawCheck, RawConfig, StatusSpec};
use super::*;
use serde_spanned::Spanned;
use std::net::{Ipv6Addr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::{Component, Path};
use std::str::FromStr;

/// What every duration error says is expected.
const DURATION: &str = r#"a duration like "500ms", "3s" or "1m""#;

/// The check kinds, as written in `kind = "..."`.
const KINDS: [&str; 6] = [
    "asterisk",
    "sip-options",
    "ami",
    "process",
    "tcp",
    "command",
];

/// The keys a check of `kind` takes (besides `kind` itself).
fn kind_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "asterisk" => &["name", "timeout", "command", "rundir"],
        "sip-options" => &["name", "timeout", "target", "transport", "alive"],
        "ami" => &["name", "timeout", "host", "port", "user", "secret"],
        "process" => &["name", "timeout", "pidfile"],
        "tcp" => &["name", "timeout", "target"],
        "command" => &["name", "timeout", "command"],
        _ => &[],
    }
}

/// Reads and checks the configuration file at `path`.
///
/// Besides everything [`parse`] checks, warns when the file is readable by
/// every user and holds an AMI secret or SMTP password, and when the
/// `sendmail` program it names is not there (alerts then stay queued; the
/// node itself works on).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, false)
}

/// [`load`] for `check-config`: the things on this machine that the file
/// names must be there too, so a missing `sendmail` program is an error.
pub fn check(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, true)
}

fn load_with(path: &Path, strict: bool) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError::unreadable(path, &e))?;
    let src = match String::from_utf8(bytes) {
        Ok(src) => src,
        Err(e) => {
            let good = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..good]);
            return Err(ConfigError::at(
                path,
                &prefix,
                good..good,
                "the file is not valid UTF-8",
                Some("a UTF-8 text file".to_owned()),
            ));
        }
    };
    let (mut config, found) = parse_inner(&src, path)?;
    if !found.secrets.is_empty() && world_readable(path) {
        let file = path.file_name().map_or_else(
            || path.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        // The first line of each kind of secret, in file order.
        let mut kinds: Vec<(usize, &str)> = Vec::new();
        for &(line, what) in &found.secrets {
            if !kinds.iter().any(|(_, w)| *w == what) {
                kinds.push((line, what));
            }
        }
        let held: Vec<String> = kinds
            .iter()
            .map(|(line, what)| format!("{what} (line {line})"))
            .collect();
        config.warnings.push(format!(
            "{file} is world-readable and holds {}; run: chmod 600 {}",
            held.join(" and "),
            path.display()
        ));
    }
    if let Some((program, span)) = &found.sendmail {
        if let Err(why) = executable(program) {
            let expected = "the path of an installed sendmail (postfix, exim4 or msmtp-mta provide /usr/sbin/sendmail), or `smtp` instead";
            let e = ConfigError::at(
                path,
                &src,
                span.clone(),
                format!("sendmail program {}: {why}", program.display()),
                Some(expected.to_owned()),
            );
            if strict {
                return Err(e);
            }
            config
                .warnings
                .push(format!("{e}; alert mail stays queued until it is there"));
        }
    }
    Ok(config)
}

/// Whether `program` is a file someone may execute; why not, if not.
fn executable(program: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(program) {
        Ok(m) if !m.is_file() => Err("is not a file".to_owned()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err("is not executable".to_owned()),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("does not exist".to_owned()),
        Err(e) => Err(format!("cannot be read ({e})")),
    }
}

#[cfg(unix)]
fn world_readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

#[cfg(not(unix))]
fn world_readable(_path: &Path) -> bool {
    false
}

/// Checks configuration text; `path` is only used in messages and kept in
/// [`Config::path`].
pub fn parse(src: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_inner(src, path).map(|(config, _)| config)
}

/// What [`load`] checks further, against the file's mode and the machine.
#[derive(Debug, Default)]
struct Found {
    /// Lines holding a secret, and what it is ("an AMI secret").
    secrets: Vec<(usize, &'static str)>,
    /// The `sendmail` program named, and where.
    sendmail: Option<(PathBuf, Range<usize>)>,
}

/// [`parse`], also returning what [`load`] looks at further.
fn parse_inner(src: &str, path: &Path) -> Result<(Config, Found), ConfigError> {
    let raw = raw::from_str(src).map_err(|e| ConfigError::from_toml(path, src, &e))?;
    let mut cx = Ctx {
        src,
        path,
        errors: Vec::new(),
        warnings: Vec::new(),
        found: Found::default(),
    };
    let config = cx.config(&raw);
    if cx.errors.is_empty() {
        return Ok((config, cx.found));
    }
    // File order; the sort is stable, so problems on one spot keep the order
    // they were found in.
    cx.errors
        .sort_by_key(|e| (e.line.unwrap_or(0), e.column.unwrap_or(0)));
    let mut errors = cx.errors.into_iter();
    match errors.next() {
        Some(mut first) => {
            first.more = errors.collect();
            Err(first)
        }
        None => Ok((config, cx.found)),
    }
}

/// The walk over the raw tables: where problems are collected.
struct Ctx<'a> {
    src: &'a str,
    path: &'a Path,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    found: Found,
}

/// The start of the file, for problems that have no better place.
const TOP: Range<usize> = 0..0;

fn span_of<T>(v: &Option<Spanned<T>>, fallback: &Range<usize>) -> Range<usize> {
    v.as_ref().map_or_else(|| fallback.clone(), Spanned::span)
}

impl Ctx<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>, expected: Option<&str>) {
        let e = ConfigError::at(
            self.path,
            self.src,
            span,
            message,
            expected.map(str::to_owned),
        );
        self.errors.push(e);
    }

    fn warn(&mut self, span: Range<usize>, message: impl AsRef<str>) {
        let (line, column) = line_col(self.src, span.start);
        self.warnings.push(format!(
            "{}:{line}:{column}: {}",
            self.path.display(),
            message.as_ref()
        ));
    }

    fn line(&self, span: &Range<usize>) -> usize {
        line_col(self.src, span.start).0
    }

    /// The span of `key` in `key = value`, given the value's span; the
    /// value's span when the key cannot be found on the same line.
    fn key_span(&self, key: &str, value: &Range<usize>) -> Range<usize> {
        let before = self.src.get(..value.start).unwrap_or("");
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let head = &before[line_start..];
        let Some(lhs) = head.trim_end().strip_suffix('=') else {
            return value.clone();
        };
        let lhs = lhs.trim_end();
        if !lhs.ends_with(key) {
            return value.clone();
        }
        let start = line_start + lhs.len() - key.len();
        start..start + key.len()
    }

    // ---- scalar helpers: each reports its own problems and returns a value
    // ---- to carry on with, so later problems are found too.

    /// A required string: missing or blank is an error at `table`.
    fn required<'r>(
        &mut self,
        v: &'r Option<Spanned<String>>,
        key: &str,
        table: &str,
        table_span: &Range<usize>,
        expected: &str,
    ) -> Option<&'r Spanned<String>> {
        match v {
            None => {
                self.error(
                    table_span.clone(),
                    format!("missing `{key}` in {table}"),
                    Some(expected),
                );
                None
            }
            Some(s) if s.get_ref().trim().is_empty() => {
                self.error(s.span(), format!("`{key}` is empty"), Some(expected));
                None
            }
            Some(s) => Some(s),
        }
    }

    /// An optional string that must not be blank when given.
    fn text(&mut self, v: &Option<Spanned<String>>, key: &str, default: &str) -> String {
        match v {
            Some(s) if s.get_ref().trim().is_empty() => {
                self.error(
                    s.span(),
                    format!("`{key}` is empty"),
                    Some(&format!("a value, or no `{key}` line for \"{default}\"")),
                );
                default.to_owned()
            }
            Some(s) => s.get_ref().clone(),
            None => default.to_owned(),
        }
    }

    fn absolute(&mut self, s: &Spanned<String>, key: &str) -> PathBuf {
        let p = PathBuf::from(s.get_ref());
        if !p.is_absolute() {
            self.error(
                s.span(),
                format!("`{key}` is not an absolute path: \"{}\"", s.get_ref()),
                Some("a path starting with /"),
            );
        }
        p
    }

    fn path_or(&mut self, v: &Option<Spanned<String>>, key: &str, default: &str) -> PathBuf {
        match v {
            Some(s) => self.absolute(s, key),
            None => PathBuf::from(default),
        }
    }

    /// A duration. With `nonzero`, zero is refused (an interval or timeout).
    fn duration(
        &mut self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
        nonzero: bool,
    ) -> Duration {
        let Some(s) = v else { return default };
        match humantime::parse_duration(s.get_ref().trim()) {
            Ok(d) if nonzero && d.is_zero() => {
                self.error(
                    s.span(),
                    format!("{key} must be more than zero"),
                    Some(DURATION),
                );
                default
            }
            Ok(d) => d,
            Err(_) => {
                self.error(
                    s.span(),
                    format!("cannot read `{key}` \"{}\" as a duration", s.get_ref()),
                    Some(DURATION),
                );
                default
            }
        }
    }

    /// A count of rounds: 1 or more.
    fn rounds(&mut self, v: &Option<Spanned<i64>>, key: &str, default: u32) -> u32 {
        let Some(n) = v else { return default };
        match u32::try_from(*n.get_ref()) {
            Ok(k) if k >= 1 => k,
            _ => {
                self.error(
                    n.span(),
                    format!("{key} must be at least 1, not {}", n.get_ref()),
                    Some("a number of rounds, 1 or more"),
                );
                default
            }
        }
    }

    fn port(&mut self, v: &Option<Spanned<i64>>, key: &str, default: u16) -> u16 {
        let Some(n) = v else { return default };
        match u16::try_from(*n.get_ref()) {
            Ok(p) if p >= 1 => p,
            _ => {
                self.error(
                    n.span(),
                    format!("`{key}` {} is not a port number", n.get_ref()),
                    Some("a port from 1 to 65535"),
                );
                default
            }
        }
    }

    // ---- the tables

    fn config(&mut self, raw: &RawConfig) -> Config {
        let (cluster, service_span) = self.cluster(raw.cluster.as_ref());
        let (master, slave) = self.nodes(raw);
        self.service_vs_nodes(&cluster, service_span, &master, &slave);
        let ssh = self.ssh(raw.ssh.as_ref().map(Spanned::get_ref));
        let health = self.health(raw.health.as_ref().map(Spanned::get_ref));
        let peer = self.peer(raw.peer.as_ref(), &cluster, [&master, &slave]);
        let sync = self.sync(raw.sync.as_ref().map(Spanned::get_ref));
        let alert = self.alert(raw.alert.as_ref());
        let hooks = self.hooks(raw.hooks.as_ref().map(Spanned::get_ref));
        Config {
            path: self.path.to_owned(),
            cluster,
            master: master.0,
            slave: slave.0,
            ssh,
            health,
            peer,
            sync,
            alert,
            hooks,
            warnings: std::mem::take(&mut self.warnings),
        }
    }

    fn cluster(
        &mut self,
        raw: Option<&Spanned<raw::RawCluster>>,
    ) -> (Cluster, Option<Range<usize>>) {
        let mut cluster = Cluster {
            name: String::new(),
            service_address: IpNet::from(IpAddr::from([0, 0, 0, 0])),
            failback: Failback::Manual,
            failback_hold_down: Duration::from_secs(60),
            state_dir: PathBuf::from("/var/lib/sip-ha"),
            garp_count: 5,
            garp_interval: Duration::from_millis(200),
            garp_refresh: None,
        };
        let Some(raw) = raw else {
            self.error(
                TOP,
                "missing [cluster] table",
                Some("a [cluster] table with name and service_address"),
            );
            return (cluster, None);
        };
        let span = raw.span();
        let raw = raw.get_ref();
        let t = "[cluster]";
        if let Some(name) = self.required(
            &raw.name,
            "name",
            t,
            &span,
            "a name for the pair, like \"pbx\"",
        ) {
            cluster.name = name.get_ref().clone();
        }
        let expected = "an IP address with an optional prefix, like 192.168.0.120/24";
        let mut service_span = None;
        if let Some(s) = self.required(&raw.service_address, "service_address", t, &span, expected)
        {
            service_span = Some(s.span());
            match service_address(s.get_ref()) {
                Ok(net) => cluster.service_address = net,
                Err(why) => self.error(s.span(), why, Some(expected)),
            }
        }
        if let Some(f) = &raw.failback {
            match f.get_ref().as_str() {
                "manual" => cluster.failback = Failback::Manual,
                "auto" => cluster.failback = Failback::Auto,
                other => self.error(
                    f.span(),
                    format!("unknown failback `{other}`"),
                    Some("\"manual\" or \"auto\""),
                ),
            }
        }
        cluster.failback_hold_down = self.duration(
            &raw.failback_hold_down,
            "failback_hold_down",
            cluster.failback_hold_down,
            false,
        );
        cluster.state_dir = self.path_or(&raw.state_dir, "state_dir", "/var/lib/sip-ha");
        if let Some(n) = &raw.garp_count {
            match u32::try_from(*n.get_ref()) {
                Ok(k) if k <= 100 => cluster.garp_count = k,
                _ => self.error(
                    n.span(),
                    format!("garp_count {} is out of range", n.get_ref()),
                    Some("a number of announcements from 0 to 100"),
                ),
            }
        }
        cluster.garp_interval = self.duration(
            &raw.garp_interval,
            "garp_interval",
            cluster.garp_interval,
            true,
        );
        let refresh = self.duration(&raw.garp_refresh, "garp_refresh", Duration::ZERO, false);
        cluster.garp_refresh = (!refresh.is_zero()).then_some(refresh);
        (cluster, service_span)
    }

    /// Both nodes, each with the span of its address (for later checks).
    fn nodes(&mut self, raw: &RawConfig) -> (Node, Node) {
        let placeholder = |role| NodeConfig {
            role,
            address: IpAddr::from([0, 0, 0, 0]),
            interface: String::new(),
        };
        let mut master: Option<Node> = None;
        let mut slave: Option<Node> = None;
        let Some(nodes) = &raw.nodes else {
            self.error(
                TOP,
                "missing [nodes.master] and [nodes.slave]",
                Some("a [nodes.master] and a [nodes.slave] table, each with address and interface"),
            );
            return (
                (placeholder(Role::Master), None),
                (placeholder(Role::Slave), None),
            );
        };
        let mut entries: Vec<_> = nodes.get_ref().0.iter().collect();
        entries.sort_by_key(|(name, _)| name.span().start);
        let mut unknown = false;
        for (name, node) in entries {
            let role = match name.get_ref().as_str() {
                "master" => Role::Master,
                "slave" => Role::Slave,
                other => {
                    unknown = true;
                    self.error(
                        name.span(),
                        format!("unknown node `{other}`"),
                        Some("`master` and `slave`"),
                    );
                    continue;
                }
            };
            let resolved = self.node(role, node);
            // A second [nodes.master] is a TOML error already; nothing to do.
            match role {
                Role::Master => master = Some(resolved),
                Role::Slave => slave = Some(resolved),
            }
        }
        // A misspelt node is reported as such, not also as a missing one.
        for (role, got) in [(Role::Master, &master), (Role::Slave, &slave)] {
            if got.is_none() && !unknown {
                self.error(
                    nodes.span(),
                    format!("missing [nodes.{role}]"),
                    Some(&format!(
                        "a [nodes.{role}] table with the {role}'s address and interface"
                    )),
                );
            }
        }
        let master = master.unwrap_or((placeholder(Role::Master), None));
        let slave = slave.unwrap_or((placeholder(Role::Slave), None));
        if let ((m, Some(m_span)), (s, Some(s_span))) = (&master, &slave) {
            if m.address == s.address {
                // Point at whichever comes second in the file.
                let (second, first, first_role, second_role) = if s_span.start > m_span.start {
                    (s_span, m_span, Role::Master, Role::Slave)
                } else {
                    (m_span, s_span, Role::Slave, Role::Master)
                };
                self.error(
                    second.clone(),
                    format!(
                        "the {second_role} has the same address as the {first_role} ({}, line {})",
                        m.address,
                        self.line(first)
                    ),
                    Some("a different management address for each node"),
                );
            }
        }
        (master, slave)
    }

    fn node(&mut self, role: Role, raw: &Spanned<raw::RawNode>) -> Node {
        let span = raw.span();
        let t = format!("[nodes.{role}]");
        let raw = raw.get_ref();
        let mut node = NodeConfig {
            role,
            address: IpAddr::from([0, 0, 0, 0]),
            interface: String::new(),
        };
        let mut addr_span = None;
        let expected = "the node's management IP address, like 192.168.0.110";
        if let Some(a) = self.required(&raw.address, "address", &t, &span, expected) {
            let text = a.get_ref().trim();
            match IpAddr::from_str(text) {
                Ok(ip) => {
                    node.address = ip;
                    addr_span = Some(a.span());
                }
                Err(_) if text.contains('/') => self.error(
                    a.span(),
                    format!("`address` \"{text}\" has a prefix; a management address takes none"),
                    Some(expected),
                ),
                Err(_) => self.error(
                    a.span(),
                    format!("cannot read `address` \"{text}\" as an IP address"),
                    Some(expected),
                ),
            }
        }
        let expected = "the network interface for the service address, like \"eth0\"";
        if let Some(i) = self.required(&raw.interface, "interface", &t, &span, expected) {
            let name = i.get_ref();
            if name.chars().count() > 15
                || name.contains('/')
                || name.chars().any(char::is_whitespace)
            {
                self.error(
                    i.span(),
                    format!("\"{name}\" is not a valid interface name"),
                    Some("1 to 15 characters without '/' or spaces, like \"eth0\""),
                );
            }
            node.interface = name.clone();
        }
        (node, addr_span)
    }

    fn service_vs_nodes(
        &mut self,
        cluster: &Cluster,
        service_span: Option<Range<usize>>,
        master: &Node,
        slave: &Node,
    ) {
        let Some(span) = service_span else { return };
        for (node, node_span) in [master, slave] {
            if node_span.is_some() && node.address == cluster.service_address.addr() {
                self.error(
                    span.clone(),
                    format!(
                        "service_address {} is the {}'s management address",
                        node.address, node.role
                    ),
                    Some(
                        "a third address, used by neither node, that moves to whichever is active",
                    ),
                );
            }
        }
    }

    fn ssh(&mut self, raw: Option<&raw::RawSsh>) -> Ssh {
        let mut ssh = Ssh {
            user: "root".to_owned(),
            port: 22,
            identity: PathBuf::from("/etc/sip-ha/id_ed25519"),
            known_hosts: PathBuf::from("/etc/sip-ha/known_hosts"),
            connect_timeout: Duration::from_secs(3),
            remote_command: "/usr/local/sbin/sip-ha".to_owned(),
        };
        let Some(raw) = raw else { return ssh };
        ssh.user = self.text(&raw.user, "user", "root");
        if let Some(u) = &raw.user {
            if u.get_ref().chars().any(char::is_whitespace) {
                self.error(
                    u.span(),
                    "`user` contains a space",
                    Some("a login name, like \"root\""),
                );
            }
        }
        ssh.port = self.port(&raw.port, "port", 22);
        ssh.identity = self.path_or(&raw.identity, "identity", "/etc/sip-ha/id_ed25519");
        ssh.known_hosts = self.path_or(&raw.known_hosts, "known_hosts", "/etc/sip-ha/known_hosts");
        ssh.connect_timeout = self.duration(
            &raw.connect_timeout,
            "connect_timeout",
            ssh.connect_timeout,
            true,
        );
        ssh.remote_command = self.text(
            &raw.remote_command,
            "remote_command",
            "/usr/local/sbin/sip-ha",
        );
        ssh
    }

    fn health(&mut self, raw: Option<&raw::RawHealth>) -> Health {
        let mut health = Health {
            interval: Duration::from_secs(1),
            fail_after: 3,
            rise_after: 2,
            checks: Vec::new(),
            restart_command: None,
            max_restarts: 3,
            restart_window: Duration::from_secs(3600),
        };
        let Some(raw) = raw else { return health };
        if let Some(cmd) = &raw.restart_command {
            if cmd.get_ref().trim().is_empty() {
                self.error(
                    cmd.span(),
                    "restart_command is empty",
                    Some("a shell command that restarts the service, or leave the key out"),
                );
            } else {
                health.restart_command = Some(cmd.get_ref().clone());
            }
        }
        if let Some(n) = &raw.max_restarts {
            match u32::try_from(*n.get_ref()) {
                Ok(k) => health.max_restarts = k,
                Err(_) => self.error(
                    n.span(),
                    format!("max_restarts {} is out of range", n.get_ref()),
                    Some("a number of restarts, 0 or more"),
                ),
            }
        }
        health.restart_window = self.duration(
            &raw.restart_window,
            "restart_window",
            health.restart_window,
            true,
        );
        health.interval = self.duration(&raw.interval, "interval", health.interval, true);
        health.fail_after = self.rounds(&raw.fail_after, "fail_after", 3);
        health.rise_after = self.rounds(&raw.rise_after, "rise_after", 2);
        let mut names: Vec<(String, Range<usize>)> = Vec::new();
        for check in &raw.check {
            let Some(resolved) = self.check(check) else {
                continue;
            };
            let name_span = span_of(&check.get_ref().name, &check.span());
            if let Some((_, first)) = names.iter().find(|(n, _)| *n == resolved.name) {
                let line = self.line(first);
                self.error(
                    name_span.clone(),
                    format!(
                        "two checks are named `{}` (the other at line {line})",
                        resolved.name
                    ),
                    Some("a distinct `name` for each check"),
                );
            }
            if resolved.timeout > health.interval {
                let timeout_span = span_of(&check.get_ref().timeout, &check.span());
                self.warn(
                    timeout_span,
                    format!(
                        "check `{}` may take {} but [health] interval is {}: a slow round delays the next",
                        resolved.name,
                        humantime::format_duration(resolved.timeout),
                        humantime::format_duration(health.interval)
                    ),
                );
            }
            names.push((resolved.name.clone(), name_span));
            health.checks.push(resolved);
        }
        health
    }

    /// One `[[health.check]]`; `None` when it is too broken to resolve (the
    /// problems are recorded).
    fn check(&mut self, raw: &Spanned<RawCheck>) -> Option<Check> {
        let span = raw.span();
        let raw = raw.get_ref();
        let t = "[[health.check]]";
        let kinds = format!("one of: {}", KINDS.join(", "));
        let kind = self.required(&raw.kind, "kind", t, &span, &kinds)?;
        let kind_span = kind.span();
        let kind = kind.get_ref().as_str();
        if !KINDS.contains(&kind) {
            self.error(
                kind_span,
                format!("unknown check kind `{kind}`"),
                Some(&kinds),
            );
            return None;
        }
        let allowed = kind_keys(kind);
        let mut stray = false;
        for (key, value_span) in raw.present_keys() {
            if !allowed.contains(&key) {
                stray = true;
                let at = self.key_span(key, &value_span);
                self.error(
                    at,
                    format!(
                        "key `{key}` is not used by a `{kind}` check; a {kind} check takes: {}",
                        allowed.join(", ")
                    ),
                    None,
                );
            }
        }
        let timeout = self.duration(&raw.timeout, "timeout", Duration::from_secs(1), true);
        let name = match &raw.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                self.error(
                    n.span(),
                    "`name` is empty",
                    Some(&format!("a short label, or no `name` line for \"{kind}\"")),
                );
                kind.to_owned()
            }
            Some(n) => n.get_ref().clone(),
            None => kind.to_owned(),
        };
        let kind = match kind {
            "asterisk" => CheckKind::Asterisk {
                command: self.text(&raw.command, "command", "asterisk"),
                rundir: raw.rundir.as_ref().map(|r| self.absolute(r, "rundir")),
            },
            "sip-options" => CheckKind::SipOptions(self.sip_target(raw, &span)?),
            "ami" => {
                let user = self.required(
                    &raw.user,
                    "user",
                    "the ami check",
                    &span,
                    "the AMI user from manager.conf",
                );
                let secret = self.required(
                    &raw.secret,
                    "secret",
                    "the ami check",
                    &span,
                    "the AMI secret from manager.conf",
                );
                if let Some(s) = secret {
                    let line = self.line(&s.span());
                    self.found.secrets.push((line, "an AMI secret"));
                }
                let host = self.text(&raw.host, "host", "127.0.0.1");
                if host.chars().any(char::is_whitespace) {
                    self.error(
                        span_of(&raw.host, &span),
                        format!("`host` \"{host}\" contains a space"),
                        Some("a host name or IP address, like \"127.0.0.1\""),
                    );
                }
                CheckKind::Ami {
                    host,
                    port: self.port(&raw.port, "port", 5038),
                    user: user.map(|u| u.get_ref().clone())?,
                    secret: secret.map(|s| s.get_ref().clone().into())?,
                }
            }
            "process" => match (&raw.pidfile, &raw.name) {
                (Some(p), Some(n)) => {
                    let later = if p.span().start > n.span().start {
                        p.span()
                    } else {
                        n.span()
                    };
                    self.error(
                        later,
                        "a process check takes `pidfile` or `name`, not both",
                        Some("`pidfile` (the process whose pid it holds) or `name` (a process by that name)"),
                    );
                    return None;
                }
                (None, None) => {
                    self.error(
                        span,
                        "a process check needs `pidfile` or `name`",
                        Some("`pidfile` (the process whose pid it holds) or `name` (a process by that name)"),
                    );
                    return None;
                }
                (Some(p), None) => CheckKind::Process {
                    pidfile: Some(self.absolute(p, "pidfile")),
                    name: None,
                },
                (None, Some(_)) => CheckKind::Process {
                    pidfile: None,
                    name: Some(name.clone()),
                },
            },
            "tcp" => {
                let expected = "host:port, like \"127.0.0.1:5060\" or \"[::1]:5060\"";
                let target =
                    self.required(&raw.target, "target", "the tcp check", &span, expected)?;
                if let Err(why) = host_port(target.get_ref()) {
                    self.error(target.span(), why, Some(expected));
                }
                CheckKind::Tcp {
                    target: target.get_ref().trim().to_owned(),
                }
            }
            _ => {
                let command = self.required(
                    &raw.command,
                    "command",
                    "the command check",
                    &span,
                    "a command to run; exit status 0 means healthy",
                )?;
                CheckKind::Command {
                    command: command.get_ref().clone(),
                }
            }
        };
        if stray {
            return None;
        }
        Some(Check {
            name,
            timeout,
            kind,
        })
    }

    fn sip_target(&mut self, raw: &RawCheck, span: &Range<usize>) -> Option<SipTarget> {
        let expected = "a SIP URI like \"sip:ping@127.0.0.1:5060\"";
        let target = self.required(
            &raw.target,
            "target",
            "the sip-options check",
            span,
            expected,
        )?;
        let uri = match SipUri::parse(target.get_ref().trim()) {
            Ok(uri) => uri,
            Err(why) => {
                self.error(target.span(), why, Some(expected));
                return None;
            }
        };
        let mut transport = uri.transport.unwrap_or(Transport::Udp);
        if let Some(t) = &raw.transport {
            let given = match t.get_ref().to_ascii_lowercase().as_str() {
                "udp" => Transport::Udp,
                "tcp" => Transport::Tcp,
                other => {
                    self.error(
                        t.span(),
                        format!("unknown transport `{other}`"),
                        Some("\"udp\" or \"tcp\""),
                    );
                    return None;
                }
            };
            if uri.transport.is_some_and(|u| u != given) {
                self.error(
                    t.span(),
                    format!(
                        "`transport` {} disagrees with ;transport= in the target",
                        t.get_ref()
                    ),
                    Some("one transport, written once"),
                );
            }
            transport = given;
        }
        let alive = match &raw.alive {
            None => vec![200..=499],
            Some(list) => {
                if list.get_ref().is_empty() {
                    self.error(
                        list.span(),
                        "`alive` is empty: no reply would count as alive",
                        Some("status codes or ranges, like [200, \"400-499\"]"),
                    );
                }
                let mut ranges = Vec::new();
                for item in list.get_ref() {
                    match status_range(item.get_ref()) {
                        Ok(r) => ranges.push(r),
                        Err(why) => self.error(
                            item.span(),
                            why,
                            Some("a final status code (200 to 699) or a range like \"200-299\""),
                        ),
                    }
                }
                ranges
            }
        };
        Some(SipTarget {
            uri: target.get_ref().trim().to_owned(),
            user: uri.user,
            host: uri.host,
            port: uri.port,
            transport,
            alive,
        })
    }

    fn peer(
        &mut self,
        raw: Option<&Spanned<raw::RawPeer>>,
        cluster: &Cluster,
        nodes: [&Node; 2],
    ) -> Peer {
        let mut peer = Peer {
            dead_after: 3,
            witness: Vec::new(),
            paths: vec![PeerPath::Ssh, PeerPath::Sip, PeerPath::Tcp],
            sip_port: 5060,
        };
        let no_witness = "no [peer] witness configured: a node cut off from the network cannot tell it is isolated; add your gateway";
        let Some(raw) = raw else {
            self.warnings.push(no_witness.to_owned());
            return peer;
        };
        let raw = raw.get_ref();
        peer.dead_after = self.rounds(&raw.dead_after, "dead_after", 3);
        peer.sip_port = self.port(&raw.sip_port, "sip_port", 5060);
        let witnesses = raw
            .witness
            .as_ref()
            .map_or(&[][..], |w| w.get_ref().as_slice());
        let mut seen: Vec<(IpAddr, Option<u16>, Range<usize>)> = Vec::new();
        for w in witnesses {
            let text = w.get_ref().trim();
            let witness = if let Ok(ip) = IpAddr::from_str(text) {
                Witness::Icmp(ip)
            } else if let Ok(sa) = SocketAddr::from_str(text) {
                if sa.port() == 0 {
                    self.error(
                        w.span(),
                        format!("witness \"{text}\" has port 0"),
                        Some("a port from 1 to 65535"),
                    );
                    continue;
                }
                Witness::Tcp(sa)
            } else {
                self.error(
                    w.span(),
                    format!("cannot read witness \"{text}\""),
                    Some("an IP address (pinged) or IP:port (TCP connect), like \"192.168.0.1\" or \"10.0.0.1:443\""),
                );
                continue;
            };
            let (ip, port) = match witness {
                Witness::Icmp(ip) => (ip, None),
                Witness::Tcp(sa) => (sa.ip(), Some(sa.port())),
            };
            if let Some((_, _, first)) = seen.iter().find(|(i, p, _)| *i == ip && *p == port) {
                let line = self.line(first);
                self.error(
                    w.span(),
                    format!("witness \"{text}\" is listed twice (also line {line})"),
                    None,
                );
                continue;
            }
            seen.push((ip, port, w.span()));
            if let Some((node, _)) = nodes.iter().find(|(n, s)| s.is_some() && n.address == ip) {
                self.error(
                    w.span(),
                    format!("witness {ip} is the {}'s management address", node.role),
                    Some("a third party both nodes should reach, like the gateway"),
                );
                continue;
            }
            if ip == cluster.service_address.addr() {
                self.error(
                    w.span(),
                    format!("witness {ip} is the service address"),
                    Some("a third party both nodes should reach, like the gateway"),
                );
                continue;
            }
            peer.witness.push(witness);
        }
        if witnesses.is_empty() {
            self.warnings.push(no_witness.to_owned());
        }
        if let Some(paths) = &raw.paths {
            let expected = "some of \"ssh\", \"sip\", \"tcp\"";
            if paths.get_ref().is_empty() {
                self.error(
                    paths.span(),
                    "`paths` is empty: the peer could never be seen",
                    Some(expected),
                );
            }
            let mut list: Vec<(PeerPath, Range<usize>)> = Vec::new();
            for p in paths.get_ref() {
                let path = match p.get_ref().as_str() {
                    "ssh" => PeerPath::Ssh,
                    "sip" => PeerPath::Sip,
                    "tcp" => PeerPath::Tcp,
                    other => {
                        self.error(
                            p.span(),
                            format!("unknown peer path `{other}`"),
                            Some(expected),
                        );
                        continue;
                    }
                };
                if let Some((_, first)) = list.iter().find(|(q, _)| *q == path) {
                    let line = self.line(first);
                    self.error(
                        p.span(),
                        format!(
                            "peer path \"{}\" is listed twice (also line {line})",
                            p.get_ref()
                        ),
                        Some(expected),
                    );
                    continue;
                }
                list.push((path, p.span()));
            }
            peer.paths = list.into_iter().map(|(p, _)| p).collect();
        }
        peer
    }

    fn sync(&mut self, raw: Option<&raw::RawSync>) -> Sync {
        let mut sync = Sync {
            interval: Duration::from_secs(60),
            paths: Vec::new(),
            max_delete_percent: 50,
            trash_days: 14,
            targets: Vec::new(),
        };
        let Some(raw) = raw else { return sync };
        sync.interval = self.duration(&raw.interval, "interval", sync.interval, true);
        if let Some(n) = &raw.max_delete_percent {
            match u32::try_from(*n.get_ref()) {
                Ok(k) if k <= 100 => sync.max_delete_percent = k,
                _ => self.error(
                    n.span(),
                    format!("max_delete_percent {} is out of range", n.get_ref()),
                    Some("a percentage from 0 to 100 (100 allows deleting everything)"),
                ),
            }
        }
        if let Some(n) = &raw.trash_days {
            match u32::try_from(*n.get_ref()) {
                Ok(k) if k <= 3650 => sync.trash_days = k,
                _ => self.error(
                    n.span(),
                    format!("trash_days {} is out of range", n.get_ref()),
                    Some("a number of days from 0 (empty the trash at each sync) to 3650"),
                ),
            }
        }
        let mut seen: Vec<(PathBuf, Range<usize>)> = Vec::new();
        for entry in &raw.path {
            let span = entry.span();
            let entry = entry.get_ref();
            let Some(p) = self.required(
                &entry.path,
                "path",
                "[[sync.path]]",
                &span,
                "an absolute directory or file, like \"/etc/asterisk\"",
            ) else {
                continue;
            };
            let text = p.get_ref();
            let path = Path::new(text);
            if !path.is_absolute() {
                self.error(
                    p.span(),
                    format!("sync path \"{text}\" is not absolute"),
                    Some("a path starting with /, like \"/etc/asterisk\""),
                );
                continue;
            }
            if path.components().any(|c| c == Component::ParentDir) {
                self.error(
                    p.span(),
                    format!("sync path \"{text}\" contains \"..\""),
                    Some("the path written out, without \"..\""),
                );
                continue;
            }
            // Components drop trailing and repeated slashes and "." parts.
            let normal: PathBuf = path.components().collect();
            if normal == Path::new("/") {
                self.error(
                    p.span(),
                    "sync path \"/\" would mirror the whole system",
                    Some(
                        "the directories that hold the PBX's configuration, like \"/etc/asterisk\"",
                    ),
                );
                continue;
            }
            if let Some((other, other_span)) = seen
                .iter()
                .find(|(o, _)| normal.starts_with(o) || o.starts_with(&normal))
            {
                let line = self.line(other_span);
                let message = if *other == normal {
                    format!(
                        "sync path {} is listed twice (also line {line})",
                        normal.display()
                    )
                } else if normal.starts_with(other) {
                    format!(
                        "sync path {} is inside {} (line {line})",
                        normal.display(),
                        other.display()
                    )
                } else {
                    format!(
                        "sync path {} contains {} (line {line})",
                        normal.display(),
                        other.display()
                    )
                };
                self.error(
                    p.span(),
                    message,
                    Some("paths that do not overlap; use `exclude` to leave part of a tree out"),
                );
                continue;
            }
            seen.push((normal.clone(), p.span()));
            let mut exclude = Vec::new();
            for pattern in entry
                .exclude
                .as_ref()
                .map_or(&[][..], |e| e.get_ref().as_slice())
            {
                if pattern.get_ref().trim().is_empty() {
                    self.error(
                        pattern.span(),
                        "empty `exclude` pattern",
                        Some("a pattern like \"*.tmp\""),
                    );
                } else {
                    exclude.push(pattern.get_ref().clone());
                }
            }
            let max_file_size = self.max_file_size(&entry.max_file_size);
            let sqlite = self.sqlite_list(entry.sqlite.as_ref(), &exclude, &normal);
            sync.paths.push(SyncPath {
                path: normal,
                exclude,
                delete: entry.delete.as_ref().is_none_or(|d| *d.get_ref()),
                max_file_size,
                sqlite,
            });
        }
        sync.targets = self.sync_targets(&raw.target, &seen);
        sync
    }

    /// A `[[sync.path]]`'s `max_file_size`: a size above zero.
    fn max_file_size(&mut self, v: &Option<Spanned<String>>) -> Option<u64> {
        let s = v.as_ref()?;
        match super::size::parse_size(s.get_ref()) {
            Ok(0) => {
                self.error(
                    s.span(),
                    format!(
                        "max_file_size \"{}\" is zero: no file could be sent",
                        s.get_ref()
                    ),
                    Some("a size above zero, or no `max_file_size` line for no limit"),
                );
                None
            }
            Ok(n) => Some(n),
            Err(why) => {
                self.error(
                    s.span(),
                    format!("cannot read `max_file_size`: {why}"),
                    Some(super::size::EXPECTED),
                );
                None
            }
        }
    }

    /// A `[[sync.path]]`'s `sqlite` list: paths relative to the sync path,
    /// inside it, not excluded, each once.
    fn sqlite_list(
        &mut self,
        v: Option<&Spanned<Vec<Spanned<String>>>>,
        exclude: &[String],
        sync_path: &Path,
    ) -> Vec<PathBuf> {
        const EXPECTED: &str =
            "a database file relative to the sync path, like \"astdb.sqlite3\" or \"db/astdb.sqlite3\"";
        let mut out: Vec<(PathBuf, Range<usize>)> = Vec::new();
        for item in v.map_or(&[][..], |l| l.get_ref().as_slice()) {
            let text = item.get_ref();
            let path = Path::new(text);
            let normal: PathBuf = path
                .components()
                .filter(|c| *c != Component::CurDir)
                .collect();
            let problem = if text.trim().is_empty() || normal.as_os_str().is_empty() {
                Some(format!("sqlite database \"{text}\" names no file"))
            } else if path.is_absolute() {
                Some(format!(
                    "sqlite database \"{text}\" is absolute; it is relative to the sync path {}",
                    sync_path.display()
                ))
            } else if path.components().any(|c| c == Component::ParentDir) {
                Some(format!(
                    "sqlite database \"{text}\" contains \"..\": it must be inside {}",
                    sync_path.display()
                ))
            } else if let Some(pattern) = exclude.iter().find(|p| {
                globset::Glob::new(p).is_ok_and(|g| g.compile_matcher().is_match(&normal))
            }) {
                Some(format!(
                    "sqlite database \"{text}\" is excluded by the pattern \"{pattern}\", so it would never be sent"
                ))
            } else if let Some((_, first)) = out.iter().find(|(p, _)| *p == normal) {
                Some(format!(
                    "sqlite database \"{text}\" is listed twice (also line {})",
                    self.line(first)
                ))
            } else {
                None
            };
            match problem {
                Some(message) => self.error(item.span(), message, Some(EXPECTED)),
                None => out.push((normal, item.span())),
            }
        }
        out.into_iter().map(|(p, _)| p).collect()
    }

    /// The `[[sync.target]]`s: absolute, not `/`, each once, and neither
    /// inside a sync path nor holding one (`paths`: the sync paths and
    /// where they are written).
    fn sync_targets(
        &mut self,
        raw: &[Spanned<raw::RawSyncTarget>],
        paths: &[(PathBuf, Range<usize>)],
    ) -> Vec<SyncTarget> {
        const EXPECTED: &str =
            "an existing directory on the mirror's file system, like \"/mnt/nas/pbx\"";
        let mut seen: Vec<(PathBuf, Range<usize>)> = Vec::new();
        for entry in raw {
            let Some(p) = self.required(
                &entry.get_ref().path,
                "path",
                "[[sync.target]]",
                &entry.span(),
                EXPECTED,
            ) else {
                continue;
            };
            let text = p.get_ref();
            let path = Path::new(text);
            let normal: PathBuf = path.components().collect();
            let problem = if !path.is_absolute() {
                Some(format!("sync target \"{text}\" is not absolute"))
            } else if path.components().any(|c| c == Component::ParentDir) {
                Some(format!("sync target \"{text}\" contains \"..\""))
            } else if normal == Path::new("/") {
                Some("sync target \"/\" would write the mirror over the whole system".to_owned())
            } else if let Some((_, first)) = seen.iter().find(|(t, _)| *t == normal) {
                Some(format!(
                    "sync target {} is listed twice (also line {})",
                    normal.display(),
                    self.line(first)
                ))
            } else if let Some((sp, line)) = paths
                .iter()
                .find(|(sp, _)| normal.starts_with(sp) || sp.starts_with(&normal))
                .map(|(sp, span)| (sp, self.line(span)))
            {
                Some(if normal.starts_with(sp) {
                    format!(
                        "sync target {} is inside the sync path {} (line {line}): the mirror would copy itself",
                        normal.display(),
                        sp.display()
                    )
                } else {
                    format!(
                        "sync target {} contains the sync path {} (line {line}): the mirror would write into what it copies",
                        normal.display(),
                        sp.display()
                    )
                })
            } else {
                None
            };
            match problem {
                Some(message) => self.error(p.span(), message, Some(EXPECTED)),
                None => seen.push((normal, p.span())),
            }
        }
        seen.into_iter()
            .map(|(path, _)| SyncTarget { path })
            .collect()
    }

    fn hooks(&mut self, raw: Option<&raw::RawHooks>) -> Hooks {
        let mut hooks = Hooks {
            on_active: None,
            on_standby: None,
            on_disable: None,
            timeout: Duration::from_secs(30),
        };
        let Some(raw) = raw else { return hooks };
        let command = |this: &mut Self, v: &Option<Spanned<String>>, key: &str| {
            let s = v.as_ref()?;
            if s.get_ref().trim().is_empty() {
                this.error(
                    s.span(),
                    format!("hook `{key}` is empty"),
                    Some("a shell command, or leave the key out"),
                );
                return None;
            }
            Some(s.get_ref().clone())
        };
        hooks.on_active = command(self, &raw.on_active, "on_active");
        hooks.on_standby = command(self, &raw.on_standby, "on_standby");
        hooks.on_disable = command(self, &raw.on_disable, "on_disable");
        hooks.timeout = self.duration(&raw.timeout, "timeout", hooks.timeout, true);
        hooks
    }

    fn alert(&mut self, raw: Option<&Spanned<raw::RawAlert>>) -> Alert {
        let mut alert = Alert {
            email_to: Vec::new(),
            email_from: default_sender(),
            mail: MailVia::Smtp(Smtp {
                host: "localhost".to_owned(),
                port: 25,
                tls: TlsMode::None,
                user: None,
                password: None,
                tls_ca: None,
            }),
            timeout: Duration::from_secs(10),
            digest_window: Duration::from_secs(60),
            reminder: Some(Duration::from_secs(3600)),
            syslog_facility: crate::log::Facility::DAEMON,
            snmp: Vec::new(),
        };
        let Some(raw) = raw else { return alert };
        let raw = raw.get_ref();
        let expected = "one address per string, like \"ops@example.com\"";
        for addr in raw.email_to.as_ref().map_or(&[][..], |l| l.get_ref()) {
            let text = addr.get_ref().trim();
            if mailbox(text) {
                alert.email_to.push(text.to_owned());
            } else {
                self.error(
                    addr.span(),
                    format!("\"{}\" does not look like an email address", addr.get_ref()),
                    Some(expected),
                );
            }
        }
        if let Some(from) = &raw.email_from {
            let text = from.get_ref().trim();
            if mailbox(text) {
                alert.email_from = text.to_owned();
            } else {
                self.error(
                    from.span(),
                    format!("email_from \"{}\" is not an email address", from.get_ref()),
                    Some("an address like \"sip-ha@pbx.example.com\" or \"PBX <sip-ha@pbx.example.com>\""),
                );
            }
        }
        alert.mail = self.mail_via(raw);
        if alert.email_to.is_empty() {
            if let Some(s) = raw.smtp.as_ref().or(raw.sendmail.as_ref()) {
                let key = if raw.smtp.is_some() {
                    "smtp"
                } else {
                    "sendmail"
                };
                let span = self.key_span(key, &s.span());
                self.warn(
                    span,
                    "mail is configured but `email_to` is empty: no mail is sent",
                );
            }
        }
        alert.timeout = self.duration(&raw.timeout, "timeout", alert.timeout, true);
        alert.digest_window = self.duration(
            &raw.digest_window,
            "digest_window",
            alert.digest_window,
            false,
        );
        let reminder = self.duration(&raw.reminder, "reminder", Duration::from_secs(3600), false);
        alert.reminder = (!reminder.is_zero()).then_some(reminder);
        if let Some(f) = &raw.syslog_facility {
            match crate::log::Facility::from_name(f.get_ref().trim()) {
                Some(facility) => alert.syslog_facility = facility,
                None => {
                    let names: Vec<&str> = crate::log::Facility::names().collect();
                    self.error(
                        f.span(),
                        format!("unknown syslog facility `{}`", f.get_ref()),
                        Some(&format!("one of: {}", names.join(", "))),
                    );
                }
            }
        }
        for entry in &raw.snmp {
            let span = entry.span();
            let e = entry.get_ref();
            let t = "[[alert.snmp]]";
            let host = self.required(
                &e.host,
                "host",
                t,
                &span,
                "a trap receiver, like \"192.168.0.5\" or \"nms.example.com:162\"",
            );
            let target = host.and_then(|h| match host_and_port(h.get_ref()) {
                Ok((host, port)) => Some((host, port.unwrap_or(162))),
                Err(why) => {
                    self.error(
                        h.span(),
                        why,
                        Some("host or host:port, like \"192.168.0.5\", \"nms.example.com:162\" or \"[2001:db8::5]:162\""),
                    );
                    None
                }
            });
            let community = match &e.community {
                Some(c) if c.get_ref().is_empty() => {
                    self.error(
                        c.span(),
                        "`community` is empty",
                        Some("the receiver's community string, like \"public\""),
                    );
                    None
                }
                Some(c) => Some(c.get_ref().clone()),
                None => Some("public".to_owned()),
            };
            if let (Some((host, port)), Some(community)) = (target, community) {
                alert.snmp.push(SnmpTarget {
                    host,
                    port,
                    community,
                });
            }
        }
        alert
    }

    /// `smtp` (with `tls` and credentials) or `sendmail`.
    fn mail_via(&mut self, raw: &raw::RawAlert) -> MailVia {
        if let Some(program) = &raw.sendmail {
            if let Some(smtp) = &raw.smtp {
                let line = self.line(&smtp.span());
                self.error(
                    self.key_span("sendmail", &program.span()),
                    format!("both `sendmail` and `smtp` (line {line}) are set"),
                    Some("one of them: `smtp` for a mail server, `sendmail` for the local mail program"),
                );
            }
            for (key, v) in [
                ("tls", &raw.tls),
                ("tls_ca", &raw.tls_ca),
                ("smtp_user", &raw.smtp_user),
                ("smtp_password", &raw.smtp_password),
            ] {
                if let Some(v) = v {
                    let span = self.key_span(key, &v.span());
                    self.error(
                        span,
                        format!(
                            "`{key}` is for `smtp`; with `sendmail` the local mail system delivers"
                        ),
                        Some("no such line, or `smtp` instead of `sendmail`"),
                    );
                }
            }
            let path = self.absolute(program, "sendmail");
            self.found.sendmail = Some((path.clone(), program.span()));
            return MailVia::Sendmail(path);
        }
        let tls = match &raw.tls {
            None if raw.smtp.is_some() => TlsMode::StartTls,
            None => TlsMode::None,
            Some(t) => match t.get_ref().trim() {
                "starttls" => TlsMode::StartTls,
                "tls" => TlsMode::Tls,
                "none" => TlsMode::None,
                other => {
                    self.error(
                        t.span(),
                        format!("unknown tls mode `{other}`"),
                        Some("\"starttls\" (port 587), \"tls\" (implicit TLS, port 465) or \"none\" (port 25, unencrypted)"),
                    );
                    TlsMode::StartTls
                }
            },
        };
        let (host, port) = match &raw.smtp {
            None => ("localhost".to_owned(), None),
            Some(s) => match host_and_port(s.get_ref()) {
                Ok(hp) => hp,
                Err(why) => {
                    self.error(
                        s.span(),
                        why,
                        Some("host or host:port, like \"mail.example.com:587\" or \"[2001:db8::25]:25\""),
                    );
                    ("localhost".to_owned(), None)
                }
            },
        };
        let mut user = None;
        let mut password = None;
        match (&raw.smtp_user, &raw.smtp_password) {
            (Some(u), None) => self.error(
                self.key_span("smtp_user", &u.span()),
                "`smtp_user` without `smtp_password`",
                Some("both, or neither for a server that takes mail without login"),
            ),
            (None, Some(p)) => self.error(
                self.key_span("smtp_password", &p.span()),
                "`smtp_password` without `smtp_user`",
                Some("both, or neither for a server that takes mail without login"),
            ),
            (Some(u), Some(p)) => {
                if u.get_ref().trim().is_empty() {
                    self.error(
                        u.span(),
                        "`smtp_user` is empty",
                        Some("the login on the mail server"),
                    );
                }
                let line = self.line(&p.span());
                self.found.secrets.push((line, "an SMTP password"));
                if tls == TlsMode::None && !loopback(&host) {
                    let span = self.key_span("smtp_password", &p.span());
                    self.warn(
                        span,
                        format!("with tls = \"none\" the SMTP password goes to {host} unencrypted"),
                    );
                }
                user = Some(u.get_ref().clone());
                password = Some(Secret::from(p.get_ref().as_str()));
            }
            (None, None) => {}
        }
        let tls_ca = match &raw.tls_ca {
            Some(ca) if tls == TlsMode::None => {
                self.error(
                    self.key_span("tls_ca", &ca.span()),
                    "`tls_ca` is set but tls = \"none\"",
                    Some("tls = \"starttls\" or \"tls\", or no `tls_ca` line"),
                );
                None
            }
            Some(ca) => Some(self.absolute(ca, "tls_ca")),
            None => None,
        };
        MailVia::Smtp(Smtp {
            port: port.unwrap_or(tls.default_port()),
            host,
            tls,
            user,
            password,
            tls_ca,
        })
    }
}

/// A resolved node and the span of its address, `None` when the address was
/// missing or unreadable (so cross-checks skip it).
type Node = (NodeConfig, Option<Range<usize>>);

/// `192.168.0.120/24`, or a bare address meaning a host route (/32, /128).
fn service_address(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let net = if text.contains('/') {
        IpNet::from_str(text).map_err(|_| format!("cannot read service_address \"{text}\""))?
    } else {
        IpNet::from(
            IpAddr::from_str(text)
                .map_err(|_| format!("cannot read service_address \"{text}\""))?,
        )
    };
    let addr = net.addr();
    if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() {
        return Err(format!("service_address {addr} cannot be held by a host"));
    }
    // /31, /32 (and /127, /128) have no network or broadcast address.
    if net.prefix_len() + 1 < net.max_prefix_len() {
        if addr == net.network() {
            return Err(format!(
                "service_address {net} is the network address of its subnet, not a host address"
            ));
        }
        if addr.is_ipv4() && addr == net.broadcast() {
            return Err(format!(
                "service_address {net} is the broadcast address of its subnet"
            ));
        }
    }
    Ok(net)
}

/// Checks a `host:port` target: a name or IPv4 address, or an IPv6 address in
/// brackets, then a port.
fn host_port(text: &str) -> Result<(), String> {
    let text = text.trim();
    let bad = || format!("cannot read target \"{text}\" as host:port");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    match port.parse::<u16>() {
        Ok(p) if p >= 1 => {}
        _ => return Err(format!("target \"{text}\" has no valid port")),
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Ipv6Addr::from_str(inner).map_err(|_| bad())?;
        return Ok(());
    }
    if host.contains(':') {
        return Err(format!(
            "target \"{text}\": an IPv6 address goes in brackets, like [::1]:5060"
        ));
    }
    if !valid_host_name(host) {
        return Err(bad());
    }
    Ok(())
}

/// A DNS name or IPv4 address: letters, digits, '-', '.', not empty.
fn valid_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The parts of a `sip:` URI a health check needs.
#[derive(Debug, PartialEq)]
struct SipUri {
    user: Option<String>,
    /// A name or an address; IPv6 without its brackets.
    host: String,
    port: u16,
    /// From a `;transport=` parameter.
    transport: Option<Transport>,
}

impl SipUri {
    /// `sip:[user@]host[:port][;params]`; the reason, when it is not.
    fn parse(text: &str) -> Result<SipUri, String> {
        let bad = |why: &str| format!("target \"{text}\": {why}");
        let rest = match text.get(..4) {
            Some(s) if s.eq_ignore_ascii_case("sip:") => &text[4..],
            _ if text
                .get(..5)
                .is_some_and(|s| s.eq_ignore_ascii_case("sips:")) =>
            {
                return Err(bad("sips: (SIP over TLS) is not supported"));
            }
            _ => return Err(bad("does not start with sip:")),
        };
        if rest.contains('?') {
            return Err(bad("headers (?...) are not supported"));
        }
        let (user, rest) = match rest.split_once('@') {
            Some((u, r)) if !u.is_empty() && !u.contains(';') => (Some(u.to_owned()), r),
            Some(_) => return Err(bad("the user part before @ is empty or malformed")),
            None => (None, rest),
        };
        let (hostport, params) = rest.split_once(';').unwrap_or((rest, ""));
        let (host, port) = if let Some(after) = hostport.strip_prefix('[') {
            let (inner, tail) = after
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the host"))?;
            Ipv6Addr::from_str(inner).map_err(|_| bad("not an IPv6 address inside [ ]"))?;
            (inner.to_owned(), tail)
        } else {
            let (host, tail) = match hostport.find(':') {
                Some(i) => (&hostport[..i], &hostport[i..]),
                None => (hostport, ""),
            };
            if tail.get(1..).is_some_and(|p| p.contains(':')) {
                return Err(bad("an IPv6 address goes in brackets, like sip:[::1]:5060"));
            }
            if !valid_host_name(host) {
                return Err(bad("no valid host"));
            }
            (host.to_owned(), tail)
        };
        let port = match tail_port(port) {
            Some(p) => p,
            None => return Err(bad("the port is not a number from 1 to 65535")),
        };
        let mut transport = None;
        for param in params.split(';').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            if key.eq_ignore_ascii_case("transport") {
                transport = Some(match value.to_ascii_lowercase().as_str() {
                    "udp" => Transport::Udp,
                    "tcp" => Transport::Tcp,
                    other => {
                        return Err(bad(&format!(
                            "transport `{other}` is not supported (udp or tcp)"
                        )))
                    }
                });
            }
        }
        Ok(SipUri {
            user,
            host,
            port,
            transport,
        })
    }
}

/// `""` → 5060, `":5080"` → 5080, anything else → `None`.
fn tail_port(tail: &str) -> Option<u16> {
    if tail.is_empty() {
        return Some(5060);
    }
    let p = tail.strip_prefix(':')?.parse::<u16>().ok()?;
    (p >= 1).then_some(p)
}

/// `200`, `"200"` or `"200-299"`, within the final codes 200..=699.
fn status_range(spec: &StatusSpec) -> Result<RangeInclusive<u16>, String> {
    let final_code =
        |n: i64| -> Option<u16> { u16::try_from(n).ok().filter(|c| (200..=699).contains(c)) };
    let parse = |s: &str| s.trim().parse::<i64>().ok().and_then(final_code);
    match spec {
        StatusSpec::Code(n) => final_code(*n)
            .map(|c| c..=c)
            .ok_or_else(|| format!("{n} is not a final SIP status code")),
        StatusSpec::Text(s) => {
            let (lo, hi) = match s.split_once('-') {
                Some((lo, hi)) => (parse(lo), parse(hi)),
                None => (parse(s), parse(s)),
            };
            match (lo, hi) {
                (Some(lo), Some(hi)) if lo <= hi => Ok(lo..=hi),
                (Some(_), Some(_)) => Err(format!("range \"{s}\" runs backwards")),
                _ => Err(format!("cannot read \"{s}\" as a status code or range")),
            }
        }
    }
}

/// One mailbox as mail headers take it: `ops@example.com` or
/// `Ops <ops@example.com>`; a list ("a@x, b@y") is not one.
fn mailbox(text: &str) -> bool {
    !text.is_empty() && text.parse::<lettre::message::Mailbox>().is_ok()
}

/// `sip-ha@<hostname>`, or `sip-ha@localhost` when the hostname cannot be
/// read or makes no address.
pub(crate) fn default_sender() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let candidate = format!("sip-ha@{host}");
    if !host.is_empty() && mailbox(&candidate) {
        candidate
    } else {
        "sip-ha@localhost".to_owned()
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`: the host (without brackets)
/// and the port if one was written.
fn host_and_port(text: &str) -> Result<(String, Option<u16>), String> {
    let text = text.trim();
    let port_of = |p: &str| match p.parse::<u16>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "\"{text}\": the port is not a number from 1 to 65535"
        )),
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (inner, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("\"{text}\": unclosed [ in the address"))?;
        Ipv6Addr::from_str(inner)
            .map_err(|_| format!("\"{text}\": not an IPv6 address inside [ ]"))?;
        let port = match tail {
            "" => None,
            t => {
                Some(port_of(t.strip_prefix(':').ok_or_else(|| {
                    format!("\"{text}\": expected :port after ]")
                })?)?)
            }
        };
        return Ok((inner.to_owned(), port));
    }
    if text.matches(':').count() > 1 {
        return Err(format!(
            "\"{text}\": an IPv6 address goes in brackets, like [2001:db8::25]:25"
        ));
    }
    let (host, port) = match text.split_once(':') {
        Some((h, p)) => (h, Some(port_of(p)?)),
        None => (text, None),
    };
    if !valid_host_name(host) {
        return Err(format!("cannot read \"{text}\" as a host name or address"));
    }
    Ok((host.to_owned(), port))
}

/// Whether `host` is this machine itself (a password to it never crosses a
/// network).
fn loopback(host: &str) -> bool {
    host == "localhost" || IpAddr::from_str(host).is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uris() {
        let u = SipUri::parse("sip:ping@127.0.0.1:5060").unwrap();
        assert_eq!(
            u,
            SipUri {
                user: Some("ping".into()),
                host: "127.0.0.1".into(),
                port: 5060,
                transport: None
            }
        );
        assert_eq!(SipUri::parse("sip:pbx.example.com").unwrap().port, 5060);
        assert_eq!(SipUri::parse("sip:host:5080").unwrap().port, 5080);
        let v6 = SipUri::parse("sip:[::1]:5062;transport=TCP").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.transport),
            ("::1", 5062, Some(Transport::Tcp))
        );
        for bad in [
            "http://x",
            "sip:",
            "sip:::1",
            "sip:h:0",
            "sip:h:99999",
            "sips:h",
            "sip:h;transport=tls",
            "sip:@h",
        ] {
            assert!(SipUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_ranges() {
        assert_eq!(status_range(&StatusSpec::Code(200)), Ok(200..=200));
        assert_eq!(
            status_range(&StatusSpec::Text("200-299".into())),
            Ok(200..=299)
        );
        assert_eq!(status_range(&StatusSpec::Text("404".into())), Ok(404..=404));
        assert!(status_range(&StatusSpec::Code(100)).is_err());
        assert!(status_range(&StatusSpec::Text("299-200".into())).is_err());
        assert!(status_range(&StatusSpec::Text("2xx".into())).is_err());
    }

    #[test]
    fn targets_and_addresses() {
        assert!(host_port("127.0.0.1:5060").is_ok());
        assert!(host_port("[::1]:5060").is_ok());
        assert!(host_port("pbx.local:22").is_ok());
        for bad in ["127.0.0.1", "::1:5060", "h:0", ":22", "a b:1"] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
        assert_eq!(service_address("10.0.0.5").unwrap().prefix_len(), 32);
        assert_eq!(service_address("2001:db8::5").unwrap().prefix_len(), 128);
        assert!(service_address("10.0.0.0/24").is_err());
        assert!(service_address("10.0.0.255/24").is_err());
        assert!(service_address("10.0.0.0/31").is_ok());
        assert!(service_address("10.0.0.5/33").is_err());
        assert!(mailbox("ops@example.com"));
        assert!(mailbox("PBX <sip-ha@pbx.example.com>"));
        for bad in ["", "ops", "a@b@c", "@x", "x@", "a@x, b@y", "ops at example"] {
            assert!(!mailbox(bad), "{bad}");
        }
        assert_eq!(
            host_and_port("mail.example.com"),
            Ok(("mail.example.com".into(), None))
        );
        assert_eq!(
            host_and_port("127.0.0.1:2525"),
            Ok(("127.0.0.1".into(), Some(2525)))
        );
        assert_eq!(host_and_port("[::1]:25"), Ok(("::1".into(), Some(25))));
        assert_eq!(host_and_port("[::1]"), Ok(("::1".into(), None)));
        for bad in [
            "::1",
            "h:0",
            "h:x",
            "a b",
            "[::1",
            "[nope]:25",
            "[::1]25",
            "",
        ] {
            assert!(host_and_port(bad).is_err(), "{bad}");
        }
        assert!(mailbox(&default_sender()), "{}", default_sender());
    }
}
