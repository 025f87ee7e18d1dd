//! The configuration file: what a valid one resolves to, and how each kind of
//! mistake is reported (line, column and a message that names the problem).

use sip_ha::config::{
    check, load, parse, Alert, Check, CheckKind, Cluster, Config, ConfigError, Health, Hooks,
    MailVia, NodeConfig, Peer, PeerPath, SipTarget, Smtp, SnmpTarget, Ssh, Sync, SyncPath,
    SyncTarget, TlsMode, Transport, Witness,
};
use sip_ha::log::Facility;
use sip_ha_core::{Failback, Role};
use std::path::{Path, PathBuf};
use std::time::Duration;

const FILE: &str = "/etc/sip-ha/sip-ha.toml";

/// A small valid file. Tests change one line (keeping line numbers) or
/// append tables at the end (line 35 on).
const BASE: &str = r#"[cluster]
name = "pbx"
service_address = "192.168.0.120/24"

[nodes.master]
address = "192.168.0.110"
interface = "eth0"

[nodes.slave]
address = "192.168.0.100"
interface = "eth1"

[health]
interval = "1s"
fail_after = 3
rise_after = 2

[[health.check]]
kind = "sip-options"
name = "sip"
target = "sip:ping@127.0.0.1:5060"
timeout = "500ms"

[peer]
witness = ["192.168.0.1"]

[sync]
interval = "60s"

[[sync.path]]
path = "/etc/asterisk"

[[sync.path]]
path = "/var/spool/asterisk/voicemail"
"#;

/// `BASE` with `from` replaced by `to` (which must be there).
fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no {from:?}");
    BASE.replacen(from, to, 1)
}

/// `BASE` with `tail` appended.
fn plus(tail: &str) -> String {
    format!("{BASE}{tail}")
}

fn ok(src: &str) -> Config {
    match parse(src, Path::new(FILE)) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn err(src: &str) -> ConfigError {
    match parse(src, Path::new(FILE)) {
        Ok(c) => panic!("expected an error, got {c:#?}"),
        Err(e) => e,
    }
}

/// Asserts the first error's position and that its message (with the
/// expectation) mentions every one of `words`.
#[track_caller]
fn assert_error(e: &ConfigError, line: u32, column: u32, words: &[&str]) {
    assert_eq!(
        (e.line, e.column),
        (Some(line), Some(column)),
        "position of: {e}"
    );
    let text = e.to_string();
    for w in words {
        assert!(text.contains(w), "{w:?} not in: {text}");
    }
    assert!(
        text.starts_with(&format!("{FILE}:{line}:{column}: ")),
        "{text}"
    );
}

/// `sip-ha@<hostname>`, the default sender, worked out here independently.
fn default_sender() -> String {
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    format!("sip-ha@{host}")
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sip-ha.toml")
}

// ---- valid files

#[test]
fn the_shipped_example_is_valid_and_resolves_as_documented() {
    let path = example_path();
    let src = std::fs::read_to_string(&path).expect("sip-ha.toml at the repository root");
    let c = parse(&src, &path).expect("the example parses");
    let expected = Config {
        path: path.clone(),
        cluster: Cluster {
            name: "pbx".into(),
            service_address: "192.168.0.120/24".parse().unwrap(),
            failback: Failback::Manual,
            failback_hold_down: Duration::from_secs(60),
            state_dir: "/var/lib/sip-ha".into(),
            garp_count: 5,
            garp_interval: Duration::from_millis(200),
            garp_refresh: Some(Duration::from_secs(30)),
        },
        master: NodeConfig {
            role: Role::Master,
            address: "192.168.0.110".parse().unwrap(),
            interface: "eth0".into(),
        },
        slave: NodeConfig {
            role: Role::Slave,
            address: "192.168.0.100".parse().unwrap(),
            interface: "eth1".into(),
        },
        ssh: Ssh {
            user: "root".into(),
            port: 22,
            identity: "/etc/sip-ha/id_ed25519".into(),
            known_hosts: "/etc/sip-ha/known_hosts".into(),
            connect_timeout: Duration::from_secs(3),
            remote_command: "/usr/local/sbin/sip-ha".into(),
        },
        health: Health {
            interval: Duration::from_secs(1),
            fail_after: 3,
            rise_after: 2,
            restart_command: None,
            max_restarts: 3,
            restart_window: Duration::from_secs(3600),
            checks: vec![Check {
                name: "sip".into(),
                timeout: Duration::from_millis(500),
                kind: CheckKind::SipOptions(SipTarget {
                    uri: "sip:ping@127.0.0.1:5060".into(),
                    user: Some("ping".into()),
                    host: "127.0.0.1".into(),
                    port: 5060,
                    transport: Transport::Udp,
                    alive: vec![200..=499],
                }),
            }],
        },
        peer: Peer {
            dead_after: 3,
            witness: vec![
                Witness::Icmp("192.168.0.1".parse().unwrap()),
                Witness::Tcp("10.0.0.1:443".parse().unwrap()),
                Witness::Tcp("[2001:db8::1]:5060".parse().unwrap()),
            ],
            paths: vec![PeerPath::Ssh, PeerPath::Sip, PeerPath::Tcp],
            sip_port: 5060,
        },
        sync: Sync {
            interval: Duration::from_secs(60),
            paths: vec![SyncPath {
                path: "/etc/asterisk".into(),
                exclude: vec!["*.tmp".into()],
                delete: true,
                max_file_size: Some(1 << 30),
                sqlite: vec![],
            }],
            max_delete_percent: 50,
            trash_days: 14,
            targets: vec![],
        },
        alert: Alert {
            email_to: vec!["ops@example.com".into()],
            email_from: default_sender(),
            mail: MailVia::Smtp(Smtp {
                host: "mail.example.com".into(),
                port: 587,
                tls: TlsMode::StartTls,
                user: None,
                password: None,
                tls_ca: None,
            }),
            timeout: Duration::from_secs(10),
            digest_window: Duration::from_secs(60),
            reminder: Some(Duration::from_secs(3600)),
            syslog_facility: Facility::DAEMON,
            snmp: vec![],
        },
        hooks: Hooks {
            on_active: None,
            on_standby: None,
            on_disable: None,
            timeout: Duration::from_secs(30),
        },
        warnings: vec![],
    };
    assert_eq!(c, expected);
    assert_eq!(c.node(Role::Slave).interface, "eth1");
}

#[test]
fn the_example_loads_from_disk() {
    let c = load(&example_path()).expect("loads");
    assert_eq!(c.cluster.name, "pbx");
}

#[test]
fn omitted_keys_take_their_defaults() {
    let c = ok(r#"
[cluster]
name = "pbx"
service_address = "10.0.0.5"
[nodes.master]
address = "10.0.0.1"
interface = "eth0"
[nodes.slave]
address = "10.0.0.2"
interface = "eth0"
[peer]
witness = ["10.0.0.254"]
"#);
    assert_eq!(c.cluster.service_address, "10.0.0.5/32".parse().unwrap());
    assert_eq!(c.cluster.failback, Failback::Manual);
    assert_eq!(c.cluster.failback_hold_down, Duration::from_secs(60));
    assert_eq!(c.cluster.state_dir, PathBuf::from("/var/lib/sip-ha"));
    assert_eq!(c.ssh.user, "root");
    assert_eq!(c.ssh.port, 22);
    assert_eq!(c.ssh.connect_timeout, Duration::from_secs(3));
    assert_eq!(c.ssh.remote_command, "/usr/local/sbin/sip-ha");
    assert_eq!(
        (c.health.interval, c.health.fail_after, c.health.rise_after),
        (Duration::from_secs(1), 3, 2)
    );
    assert!(c.health.checks.is_empty());
    assert_eq!(c.peer.dead_after, 3);
    assert_eq!(c.peer.paths, [PeerPath::Ssh, PeerPath::Sip, PeerPath::Tcp]);
    assert_eq!(c.peer.sip_port, 5060);
    assert_eq!(c.sync.interval, Duration::from_secs(60));
    assert!(c.sync.paths.is_empty());
    assert!(c.alert.email_to.is_empty());
    assert_eq!(c.alert.email_from, default_sender());
    assert_eq!(
        c.alert.mail,
        MailVia::Smtp(Smtp {
            host: "localhost".into(),
            port: 25,
            tls: TlsMode::None,
            user: None,
            password: None,
            tls_ca: None,
        }),
        "no smtp and no sendmail: the local mail server, unencrypted"
    );
    assert_eq!(c.alert.timeout, Duration::from_secs(10));
    assert_eq!(c.alert.digest_window, Duration::from_secs(60));
    assert_eq!(c.alert.reminder, Some(Duration::from_secs(3600)));
    assert_eq!(c.alert.syslog_facility, Facility::DAEMON);
    assert!(c.alert.snmp.is_empty());
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let v6 = ok(&with(
        r#"service_address = "192.168.0.120/24""#,
        r#"service_address = "2001:db8::120""#,
    ));
    assert_eq!(v6.cluster.service_address.prefix_len(), 128);
}

#[test]
fn every_check_kind_resolves() {
    let c = ok(&plus(
        r#"
[[health.check]]
kind = "asterisk"
rundir = "/var/run/asterisk"

[[health.check]]
kind = "sip-options"
name = "sip-tcp"
target = "sip:[::1]:5062;transport=tcp"
alive = [200, "400-499"]

[[health.check]]
kind = "ami"
user = "sipha"
secret = "s3cret"

[[health.check]]
kind = "process"
pidfile = "/var/run/asterisk/asterisk.pid"

[[health.check]]
kind = "process"
name = "kamailio"

[[health.check]]
kind = "tcp"
target = "127.0.0.1:5038"

[[health.check]]
kind = "command"
command = "/usr/local/bin/db-ok"
"#,
    ));
    let kinds: Vec<_> = c
        .health
        .checks
        .iter()
        .map(|k| (k.name.as_str(), &k.kind))
        .collect();
    assert_eq!(
        kinds[1],
        (
            "asterisk",
            &CheckKind::Asterisk {
                command: "asterisk".into(),
                rundir: Some("/var/run/asterisk".into())
            }
        )
    );
    assert_eq!(
        kinds[2],
        (
            "sip-tcp",
            &CheckKind::SipOptions(SipTarget {
                uri: "sip:[::1]:5062;transport=tcp".into(),
                user: None,
                host: "::1".into(),
                port: 5062,
                transport: Transport::Tcp,
                alive: vec![200..=200, 400..=499],
            })
        )
    );
    assert_eq!(
        kinds[3],
        (
            "ami",
            &CheckKind::Ami {
                host: "127.0.0.1".into(),
                port: 5038,
                user: "sipha".into(),
                secret: "s3cret".into()
            }
        )
    );
    assert_eq!(
        kinds[4],
        (
            "process",
            &CheckKind::Process {
                pidfile: Some("/var/run/asterisk/asterisk.pid".into()),
                name: None
            }
        )
    );
    assert_eq!(
        kinds[5],
        (
            "kamailio",
            &CheckKind::Process {
                pidfile: None,
                name: Some("kamailio".into())
            }
        )
    );
    assert_eq!(
        kinds[6],
        (
            "tcp",
            &CheckKind::Tcp {
                target: "127.0.0.1:5038".into()
            }
        )
    );
    assert_eq!(
        kinds[7],
        (
            "command",
            &CheckKind::Command {
                command: "/usr/local/bin/db-ok".into()
            }
        )
    );
    assert!(c.health.checks[1..]
        .iter()
        .all(|k| k.timeout == Duration::from_secs(1)));
}

// ---- TOML-level mistakes

#[test]
fn unknown_key_names_the_table_and_the_keys_it_takes() {
    let e = err(&with("fail_after = 3", "intervall = 3"));
    assert_eq!(
        e.to_string(),
        format!(
            "{FILE}:15:1: unknown key `intervall` in [health]; expected one of: interval, fail_after, rise_after, restart_command, max_restarts, restart_window, check"
        )
    );
}

#[test]
fn unknown_key_in_a_check_and_an_unknown_section() {
    let e = err(&with(r#"name = "sip""#, r#"nmae = "sip""#));
    assert_error(
        &e,
        20,
        1,
        &["unknown key `nmae` in [[health.check]]", "kind"],
    );
    let e = err(&plus("[alerts]\nemail_to = []\n"));
    assert_error(&e, 35, 2, &["unknown section `alerts`", "alert"]);
}

#[test]
fn a_table_written_twice_says_where_the_first_is() {
    let e = err(&plus("[nodes.master]\naddress = \"192.168.0.111\"\n"));
    assert_error(
        &e,
        35,
        8,
        &["[nodes.master] appears twice", "first at line 5"],
    );
}

#[test]
fn a_key_set_twice_says_where_the_first_is() {
    let e = err(&with("rise_after = 2", "fail_after = 2"));
    assert_error(
        &e,
        16,
        1,
        &["`fail_after` is set twice", "first at line 15"],
    );
}

#[test]
fn a_value_of_the_wrong_type_names_the_key() {
    let e = err(&with("fail_after = 3", r#"fail_after = "3""#));
    assert_error(
        &e,
        15,
        14,
        &["wrong type for `fail_after` in [health]", "an integer"],
    );
}

#[test]
fn a_syntax_error_has_a_position() {
    let e = err(&with(r#"name = "pbx""#, r#"name = "pbx"#));
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("TOML syntax error"), "{e}");
}

// ---- nodes

#[test]
fn two_nodes_with_one_address_points_at_the_second() {
    let e = err(&with(
        r#"address = "192.168.0.100""#,
        r#"address = "192.168.0.110""#,
    ));
    assert_error(
        &e,
        10,
        11,
        &[
            "the slave has the same address as the master",
            "192.168.0.110",
            "line 6",
        ],
    );
}

#[test]
fn a_node_other_than_master_or_slave_is_refused() {
    let e = err(&with("[nodes.slave]", "[nodes.backup]"));
    assert_error(&e, 9, 8, &["unknown node `backup`", "`master` and `slave`"]);
    // ... also when written as an inline table.
    let e = err(&plus(
        "[nodes]\nbackup = { address = \"10.0.0.9\", interface = \"eth0\" }\n",
    ));
    assert_error(&e, 36, 1, &["unknown node `backup`"]);
}

#[test]
fn a_missing_node_is_reported() {
    let src = with(
        "[nodes.slave]\naddress = \"192.168.0.100\"\ninterface = \"eth1\"\n",
        "\n\n\n",
    );
    let e = err(&src);
    assert_error(&e, 5, 2, &["missing [nodes.slave]"]);
    let e = err("[cluster]\nname = \"pbx\"\nservice_address = \"10.0.0.5\"\n");
    assert_error(&e, 1, 1, &["missing [nodes.master] and [nodes.slave]"]);
}

#[test]
fn node_keys_are_checked() {
    let e = err(&with(
        r#"address = "192.168.0.110""#,
        r#"address = "192.168.0.110/24""#,
    ));
    assert_error(&e, 6, 11, &["has a prefix"]);
    let e = err(&with(
        r#"address = "192.168.0.110""#,
        r#"address = "pbx-a""#,
    ));
    assert_error(&e, 6, 11, &["cannot read `address`", "IP address"]);
    let e = err(&with(
        r#"interface = "eth0""#,
        r#"interface = "a very long name""#,
    ));
    assert_error(&e, 7, 13, &["not a valid interface name", "15 characters"]);
    let e = err(&with("interface = \"eth0\"\n", "\n"));
    assert_error(&e, 5, 1, &["missing `interface` in [nodes.master]"]);
}

// ---- cluster

#[test]
fn service_address_equal_to_a_management_address_is_refused() {
    let e = err(&with(
        r#"service_address = "192.168.0.120/24""#,
        r#"service_address = "192.168.0.100/24""#,
    ));
    assert_error(
        &e,
        3,
        19,
        &["192.168.0.100 is the slave's management address"],
    );
}

#[test]
fn service_address_must_be_a_host_address() {
    let expected = "an IP address with an optional prefix, like 192.168.0.120/24";
    for bad in [
        "192.168.0.0/24",
        "192.168.0.255/24",
        "192.168.0.120/33",
        "pbx.example.com",
        "",
    ] {
        let e = err(&with(
            r#"service_address = "192.168.0.120/24""#,
            &format!(r#"service_address = "{bad}""#),
        ));
        assert_error(&e, 3, 19, &[expected]);
    }
    let e = err(&with(
        r#"service_address = "192.168.0.120/24""#,
        r#"service_address = "192.168.0.0/24""#,
    ));
    assert!(e.message.contains("network address"), "{e}");
}

#[test]
fn missing_cluster_keys_point_at_the_table() {
    let e = err(&with("name = \"pbx\"\n", "\n"));
    assert_error(&e, 1, 1, &["missing `name` in [cluster]"]);
    let e = err(&with(r#"name = "pbx""#, r#"failback = "sometimes""#));
    // Both problems are reported, in file order.
    assert_error(&e, 1, 1, &["missing `name`"]);
    assert_eq!(e.more.len(), 1, "{e}");
    assert_eq!(e.more[0].line, Some(2));
    assert!(
        e.more[0]
            .to_string()
            .contains(r#"expected "manual" or "auto""#),
        "{e}"
    );
}

#[test]
fn relative_state_dir_is_refused() {
    let e = err(&with(
        "service_address = \"192.168.0.120/24\"\n",
        "service_address = \"192.168.0.120/24\"\nstate_dir = \"var/lib/sip-ha\"\n",
    ));
    assert_error(&e, 4, 13, &["`state_dir` is not an absolute path"]);
}

// ---- durations and counts

#[test]
fn zero_intervals_and_timeouts_are_refused() {
    let cases = [
        (
            r#"interval = "1s""#,
            r#"interval = "0s""#,
            14,
            12,
            "interval must be more than zero",
        ),
        (
            r#"interval = "60s""#,
            r#"interval = "0ms""#,
            28,
            12,
            "interval must be more than zero",
        ),
        (
            r#"timeout = "500ms""#,
            r#"timeout = "0s""#,
            22,
            11,
            "timeout must be more than zero",
        ),
    ];
    for (from, to, line, col, words) in cases {
        let e = err(&with(from, to));
        assert_error(&e, line, col, &[words]);
    }
    let e = err(&plus("[ssh]\nconnect_timeout = \"0s\"\n"));
    assert_error(&e, 36, 19, &["connect_timeout must be more than zero"]);
}

#[test]
fn unreadable_durations_say_what_a_duration_looks_like() {
    for bad in ["1", "fast", "-1s", "1x"] {
        let e = err(&with(
            r#"interval = "1s""#,
            &format!(r#"interval = "{bad}""#),
        ));
        assert_error(
            &e,
            14,
            12,
            &[
                "as a duration",
                r#"expected a duration like "500ms", "3s" or "1m""#,
            ],
        );
    }
}

#[test]
fn zero_counts_are_refused() {
    let e = err(&with("fail_after = 3", "fail_after = 0"));
    assert_error(&e, 15, 14, &["fail_after must be at least 1"]);
    let e = err(&with("rise_after = 2", "rise_after = 0"));
    assert_error(&e, 16, 14, &["rise_after must be at least 1"]);
    let e = err(&with(
        r#"witness = ["192.168.0.1"]"#,
        "dead_after = 0\nwitness = [\"192.168.0.1\"]",
    ));
    assert_error(&e, 25, 14, &["dead_after must be at least 1"]);
    let e = err(&with("fail_after = 3", "fail_after = -2"));
    assert_error(&e, 15, 14, &["fail_after must be at least 1"]);
}

#[test]
fn a_check_timeout_longer_than_the_interval_is_a_warning() {
    let c = ok(&with(r#"timeout = "500ms""#, r#"timeout = "2s""#));
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let w = &c.warnings[0];
    assert!(w.starts_with(&format!("{FILE}:22:11: ")), "{w}");
    assert!(
        w.contains("check `sip`") && w.contains("interval is 1s"),
        "{w}"
    );
}

// ---- health checks

#[test]
fn a_key_of_another_kind_lists_what_the_kind_takes() {
    let e = err(&plus(
        "[[health.check]]\nkind = \"tcp\"\ntarget = \"127.0.0.1:22\"\nsecret = \"x\"\n",
    ));
    assert_error(
        &e,
        38,
        1,
        &["key `secret` is not used by a `tcp` check; a tcp check takes: name, timeout, target"],
    );
}

#[test]
fn an_unknown_check_kind_lists_the_kinds() {
    let e = err(&with(r#"kind = "sip-options""#, r#"kind = "foo""#));
    assert_error(
        &e,
        19,
        8,
        &["unknown check kind `foo`; expected one of: asterisk, sip-options, ami, process, tcp, command"],
    );
    let e = err(&with("kind = \"sip-options\"\n", "\n"));
    assert_error(&e, 18, 1, &["missing `kind` in [[health.check]]"]);
}

#[test]
fn check_targets_are_checked() {
    let e = err(&with(
        r#"target = "sip:ping@127.0.0.1:5060""#,
        r#"target = "ping@127.0.0.1""#,
    ));
    assert_error(
        &e,
        21,
        10,
        &["does not start with sip:", "sip:ping@127.0.0.1:5060"],
    );
    let e = err(&with(
        r#"target = "sip:ping@127.0.0.1:5060""#,
        r#"target = "sip:ping@127.0.0.1:5060;transport=tls""#,
    ));
    assert_error(&e, 21, 10, &["transport `tls` is not supported"]);
    let e = err(&plus(
        "[[health.check]]\nkind = \"tcp\"\ntarget = \"127.0.0.1\"\n",
    ));
    assert_error(&e, 37, 10, &["host:port"]);
    let e = err(&plus("[[health.check]]\nkind = \"command\"\n"));
    assert_error(&e, 35, 1, &["missing `command`"]);
    let e = err(&plus("[[health.check]]\nkind = \"ami\"\nuser = \"x\"\n"));
    assert_error(&e, 35, 1, &["missing `secret`"]);
    let e = err(&plus(
        "[[health.check]]\nkind = \"process\"\npidfile = \"/run/a.pid\"\nname = \"a\"\n",
    ));
    assert_error(&e, 38, 8, &["`pidfile` or `name`, not both"]);
    let e = err(&with(r#"timeout = "500ms""#, r#"alive = ["200-299", 100]"#));
    assert_error(&e, 22, 21, &["100 is not a final SIP status code"]);
}

#[test]
fn sip_transport_key_and_uri_parameter() {
    let c = ok(&with(r#"timeout = "500ms""#, r#"transport = "tcp""#));
    let CheckKind::SipOptions(t) = &c.health.checks[0].kind else {
        panic!("not a SIP check")
    };
    assert_eq!(t.transport, Transport::Tcp);
    let e = err(&with(
        "target = \"sip:ping@127.0.0.1:5060\"\ntimeout = \"500ms\"",
        "target = \"sip:ping@127.0.0.1:5060;transport=udp\"\ntransport = \"tcp\"",
    ));
    assert_error(&e, 22, 13, &["disagrees"]);
}

#[test]
fn two_checks_with_one_name_are_refused() {
    let e = err(&plus(
        "[[health.check]]\nkind = \"tcp\"\nname = \"sip\"\ntarget = \"127.0.0.1:5060\"\n",
    ));
    assert_error(&e, 37, 8, &["two checks are named `sip`", "line 20"]);
}

// ---- peer

#[test]
fn no_witness_is_a_warning() {
    let c = ok(&with(r#"witness = ["192.168.0.1"]"#, ""));
    assert_eq!(
        c.warnings,
        ["no [peer] witness configured: a node cut off from the network cannot tell it is isolated; add your gateway"]
    );
}

#[test]
fn witnesses_must_be_addresses() {
    let e = err(&with(
        r#"witness = ["192.168.0.1"]"#,
        r#"witness = ["192.168.0.1", "gateway.lan"]"#,
    ));
    assert_error(
        &e,
        25,
        27,
        &["cannot read witness \"gateway.lan\"", "IP:port"],
    );
    let e = err(&with(
        r#"witness = ["192.168.0.1"]"#,
        r#"witness = ["192.168.0.100"]"#,
    ));
    assert_error(&e, 25, 12, &["the slave's management address"]);
}

#[test]
fn peer_paths_are_checked() {
    let e = err(&with(
        r#"witness = ["192.168.0.1"]"#,
        r#"paths = ["ssh", "sip", "ssh"]"#,
    ));
    assert_error(&e, 25, 24, &["\"ssh\" is listed twice"]);
    let e = err(&with(r#"witness = ["192.168.0.1"]"#, r#"paths = []"#));
    assert_error(&e, 25, 9, &["`paths` is empty"]);
    let e = err(&with(r#"witness = ["192.168.0.1"]"#, r#"paths = ["icmp"]"#));
    assert_error(&e, 25, 10, &["unknown peer path `icmp`"]);
}

// ---- sync

#[test]
fn a_relative_sync_path_is_refused() {
    let e = err(&with(
        r#"path = "/etc/asterisk""#,
        r#"path = "etc/asterisk""#,
    ));
    assert_error(
        &e,
        31,
        8,
        &["\"etc/asterisk\" is not absolute", "starting with /"],
    );
}

#[test]
fn sync_guard_and_trash_settings() {
    let c = ok(&with(
        r#"interval = "60s""#,
        "interval = \"60s\"\nmax_delete_percent = 20\ntrash_days = 0",
    ));
    assert_eq!((c.sync.max_delete_percent, c.sync.trash_days), (20, 0));
    let e = err(&with(
        r#"interval = "60s""#,
        "interval = \"60s\"\nmax_delete_percent = 101",
    ));
    assert_error(&e, 29, 22, &["max_delete_percent 101 is out of range"]);
}

#[test]
fn the_root_is_not_a_sync_path() {
    let e = err(&with(r#"path = "/etc/asterisk""#, r#"path = "/""#));
    assert_error(&e, 31, 8, &["\"/\""]);
}

#[test]
fn overlapping_sync_paths_name_both_and_the_other_line() {
    let e = err(&with(
        r#"path = "/var/spool/asterisk/voicemail""#,
        r#"path = "/etc/asterisk/keys/""#,
    ));
    assert_error(
        &e,
        34,
        8,
        &[
            "/etc/asterisk/keys is inside /etc/asterisk (line 31)",
            "exclude",
        ],
    );
    // The same directory, written with a trailing slash.
    let e = err(&with(
        r#"path = "/var/spool/asterisk/voicemail""#,
        r#"path = "/etc/asterisk/""#,
    ));
    assert_error(&e, 34, 8, &["/etc/asterisk is listed twice (also line 31)"]);
    // A parent after its child.
    let e = err(&with(
        r#"path = "/var/spool/asterisk/voicemail""#,
        r#"path = "/etc""#,
    ));
    assert_error(&e, 34, 8, &["/etc contains /etc/asterisk (line 31)"]);
    // Sharing a prefix of characters is not overlapping.
    ok(&with(
        r#"path = "/var/spool/asterisk/voicemail""#,
        r#"path = "/etc/asterisk2""#,
    ));
}

#[test]
fn the_examples_commented_sync_options_are_valid_once_uncommented() {
    let path = example_path();
    let src = std::fs::read_to_string(&path).unwrap();
    let mut uncommented = String::new();
    for line in src.lines() {
        let line = match line.strip_prefix('#') {
            Some(rest)
                if rest.starts_with("[[sync.")
                    || rest.starts_with("path = ")
                    || rest.starts_with("sqlite = ") =>
            {
                rest
            }
            _ => line,
        };
        uncommented.push_str(line);
        uncommented.push('\n');
    }
    let c = parse(&uncommented, &path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.sync.paths[1].path, Path::new("/var/lib/asterisk"));
    assert_eq!(c.sync.paths[1].sqlite, [PathBuf::from("astdb.sqlite3")]);
    assert_eq!(
        c.sync.targets,
        [SyncTarget {
            path: "/mnt/nas/pbx".into()
        }]
    );
}

#[test]
fn max_file_size_reads_human_sizes_and_refuses_zero() {
    let c = ok(&with(
        r#"path = "/etc/asterisk""#,
        "path = \"/etc/asterisk\"\nmax_file_size = \"500 MB\"",
    ));
    assert_eq!(c.sync.paths[0].max_file_size, Some(500_000_000));
    assert_eq!(c.sync.paths[1].max_file_size, None, "no limit by default");
    let c = ok(&with(
        r#"path = "/etc/asterisk""#,
        "path = \"/etc/asterisk\"\nmax_file_size = \"2GiB\"",
    ));
    assert_eq!(c.sync.paths[0].max_file_size, Some(2 << 30));

    let e = err(&with(
        r#"path = "/etc/asterisk""#,
        "path = \"/etc/asterisk\"\nmax_file_size = \"0 GiB\"",
    ));
    assert_error(
        &e,
        32,
        17,
        &["max_file_size \"0 GiB\" is zero", "a size above zero"],
    );
    let e = err(&with(
        r#"path = "/etc/asterisk""#,
        "path = \"/etc/asterisk\"\nmax_file_size = \"2 gigs\"",
    ));
    assert_error(
        &e,
        32,
        17,
        &["cannot read `max_file_size`", "unknown unit", "\"2GiB\""],
    );
    let e = err(&with(
        r#"path = "/etc/asterisk""#,
        "path = \"/etc/asterisk\"\nmax_file_size = 1000",
    ));
    assert_error(&e, 32, 17, &["`max_file_size` in [[sync.path]]", "string"]);
}

#[test]
fn sqlite_databases_are_relative_inside_and_not_excluded() {
    let c = ok(&with(
        r#"path = "/var/spool/asterisk/voicemail""#,
        "path = \"/var/lib/asterisk\"\nsqlite = [\"astdb.sqlite3\", \"./db//other.sqlite3\"]",
    ));
    assert_eq!(
        c.sync.paths[1].sqlite,
        [
            PathBuf::from("astdb.sqlite3"),
            PathBuf::from("db/other.sqlite3")
        ]
    );
    assert!(c.sync.paths[0].sqlite.is_empty());

    let at = |list: &str| {
        err(&with(
            r#"path = "/var/spool/asterisk/voicemail""#,
            &format!("path = \"/var/lib/asterisk\"\nexclude = [\"*.db\"]\nsqlite = [{list}]"),
        ))
    };
    let e = at(r#""/var/lib/asterisk/astdb.sqlite3""#);
    assert_error(
        &e,
        36,
        11,
        &[
            "is absolute",
            "relative to the sync path /var/lib/asterisk",
            "astdb.sqlite3",
        ],
    );
    let e = at(r#""../etc/astdb.sqlite3""#);
    assert_error(&e, 36, 11, &["contains \"..\"", "inside /var/lib/asterisk"]);
    let e = at(r#""astdb.sqlite3", "cache/x.db""#);
    assert_error(
        &e,
        36,
        28,
        &[
            "\"cache/x.db\" is excluded by the pattern \"*.db\"",
            "never be sent",
        ],
    );
    let e = at(r#""astdb.sqlite3", "./astdb.sqlite3""#);
    assert_error(&e, 36, 28, &["listed twice (also line 36)"]);
    let e = at(r#""""#);
    assert_error(&e, 36, 11, &["names no file"]);
}

#[test]
fn sync_targets_must_be_absolute_once_and_apart_from_the_paths() {
    let c = ok(&plus("\n[[sync.target]]\npath = \"/mnt/nas/pbx/\"\n"));
    assert_eq!(
        c.sync.targets,
        [SyncTarget {
            path: "/mnt/nas/pbx".into()
        }]
    );
    assert!(ok(BASE).sync.targets.is_empty());

    let target = |path: &str| err(&plus(&format!("\n[[sync.target]]\npath = \"{path}\"\n")));
    let expected = "an existing directory";
    assert_error(
        &target("mnt/nas"),
        37,
        8,
        &["\"mnt/nas\" is not absolute", expected],
    );
    assert_error(
        &target("/mnt/../etc"),
        37,
        8,
        &["contains \"..\"", expected],
    );
    assert_error(&target("/"), 37, 8, &["over the whole system"]);
    assert_error(
        &target("/etc/asterisk/backup"),
        37,
        8,
        &[
            "/etc/asterisk/backup is inside the sync path /etc/asterisk (line 31)",
            "copy itself",
        ],
    );
    assert_error(
        &target("/var/spool"),
        37,
        8,
        &["/var/spool contains the sync path /var/spool/asterisk/voicemail (line 34)"],
    );
    let e = err(&plus(
        "\n[[sync.target]]\npath = \"/mnt/a\"\n\n[[sync.target]]\npath = \"/mnt/a/\"\n",
    ));
    assert_error(&e, 40, 8, &["/mnt/a is listed twice (also line 37)"]);
    let e = err(&plus("\n[[sync.target]]\n"));
    assert_error(&e, 36, 1, &["missing `path` in [[sync.target]]", expected]);
    let e = err(&plus("\n[[sync.target]]\npaht = \"/mnt/a\"\n"));
    assert_error(
        &e,
        37,
        1,
        &["unknown key `paht` in [[sync.target]]", "one of: path"],
    );
}

// ---- alert

#[test]
fn email_addresses_are_checked() {
    let e = err(&plus(
        "[alert]\nemail_to = [\"ops@example.com\", \"ops at example\"]\n",
    ));
    assert_error(&e, 36, 32, &["does not look like an email address"]);
    let e = err(&plus("[alert]\nemail_from = \"sip-ha\"\n"));
    assert_error(
        &e,
        36,
        14,
        &["email_from \"sip-ha\" is not an email address"],
    );
    let c = ok(&plus(
        "[alert]\nemail_to = [\"Ops <ops@example.com>\"]\nemail_from = \"PBX <pbx@example.com>\"\n",
    ));
    assert_eq!(c.alert.email_to, ["Ops <ops@example.com>"]);
    assert_eq!(c.alert.email_from, "PBX <pbx@example.com>");
}

#[test]
fn every_alert_key_resolves() {
    let c = ok(&plus(
        r#"[alert]
email_to = ["ops@example.com", "night@example.com"]
email_from = "pbx@example.com"
smtp = "[2001:db8::25]"
tls = "tls"
smtp_user = "pbx"
smtp_password = "hunter2"
tls_ca = "/etc/sip-ha/ca.pem"
timeout = "3s"
digest_window = "0s"
reminder = "0s"
syslog_facility = "local3"

[[alert.snmp]]
host = "192.168.0.5"

[[alert.snmp]]
host = "nms.example.com:1162"
community = "s3cret"
"#,
    ));
    let a = &c.alert;
    assert_eq!(a.email_to, ["ops@example.com", "night@example.com"]);
    assert_eq!(a.email_from, "pbx@example.com");
    assert_eq!(
        a.mail,
        MailVia::Smtp(Smtp {
            host: "2001:db8::25".into(),
            port: 465,
            tls: TlsMode::Tls,
            user: Some("pbx".into()),
            password: Some("hunter2".into()),
            tls_ca: Some("/etc/sip-ha/ca.pem".into()),
        })
    );
    assert_eq!(a.timeout, Duration::from_secs(3));
    assert_eq!(a.digest_window, Duration::ZERO, "zero: no digest");
    assert_eq!(a.reminder, None, "zero: no reminder");
    assert_eq!(a.syslog_facility, Facility::from_name("local3").unwrap());
    assert_eq!(a.syslog_facility.code(), 19 * 8);
    assert_eq!(
        a.snmp,
        [
            SnmpTarget {
                host: "192.168.0.5".into(),
                port: 162,
                community: "public".into()
            },
            SnmpTarget {
                host: "nms.example.com".into(),
                port: 1162,
                community: "s3cret".into()
            }
        ]
    );
    // The password never shows in what check-config prints.
    let printed = format!("{c:#?}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("(hidden)"));

    // The port follows the TLS mode unless written.
    let port = |tls: &str, smtp: &str| {
        let c = ok(&plus(&format!(
            "[alert]\nemail_to = [\"o@x.org\"]\nsmtp = \"{smtp}\"\n{tls}"
        )));
        match c.alert.mail {
            MailVia::Smtp(s) => (s.tls, s.port),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(port("", "mail.x.org"), (TlsMode::StartTls, 587));
    assert_eq!(port("tls = \"none\"\n", "mail.x.org"), (TlsMode::None, 25));
    assert_eq!(
        port("tls = \"tls\"\n", "mail.x.org:2465"),
        (TlsMode::Tls, 2465)
    );

    let c = ok(&plus(
        "[alert]\nemail_to = [\"o@x.org\"]\nsendmail = \"/usr/sbin/sendmail\"\n",
    ));
    assert_eq!(c.alert.mail, MailVia::Sendmail("/usr/sbin/sendmail".into()));
}

#[test]
fn alert_mistakes_are_named_with_their_line() {
    // Lines: 35 [alert], 36 on.
    let e = err(&plus("[alert]\nsmtp = \"mail.example.com:0\"\n"));
    assert_error(&e, 36, 8, &["port is not a number from 1 to 65535"]);
    let e = err(&plus("[alert]\nsmtp = \"2001:db8::25\"\n"));
    assert_error(&e, 36, 8, &["IPv6 address goes in brackets"]);
    let e = err(&plus("[alert]\nsmtp = \"mail example.com\"\n"));
    assert_error(&e, 36, 8, &["cannot read \"mail example.com\""]);
    let e = err(&plus(
        "[alert]\nsmtp = \"mail.example.com\"\ntls = \"ssl\"\n",
    ));
    assert_error(
        &e,
        37,
        7,
        &["unknown tls mode `ssl`", "\"starttls\" (port 587)"],
    );
    let e = err(&plus("[alert]\nsmtp_user = \"pbx\"\n"));
    assert_error(&e, 36, 1, &["`smtp_user` without `smtp_password`"]);
    let e = err(&plus("[alert]\nsmtp_password = \"x\"\n"));
    assert_error(&e, 36, 1, &["`smtp_password` without `smtp_user`"]);
    let e = err(&plus(
        "[alert]\nsmtp = \"mail.example.com\"\nsendmail = \"/usr/sbin/sendmail\"\n",
    ));
    assert_error(&e, 37, 1, &["both `sendmail` and `smtp` (line 36) are set"]);
    let e = err(&plus("[alert]\nsendmail = \"sendmail\"\n"));
    assert_error(&e, 36, 12, &["`sendmail` is not an absolute path"]);
    let e = err(&plus(
        "[alert]\nsendmail = \"/usr/sbin/sendmail\"\ntls = \"none\"\n",
    ));
    assert_error(&e, 37, 1, &["`tls` is for `smtp`"]);
    let e = err(&plus("[alert]\ntls = \"none\"\ntls_ca = \"/etc/ca.pem\"\n"));
    assert_error(&e, 37, 1, &["`tls_ca` is set but tls = \"none\""]);
    let e = err(&plus("[alert]\ntimeout = \"0s\"\n"));
    assert_error(&e, 36, 11, &["timeout must be more than zero"]);
    let e = err(&plus("[alert]\ndigest_window = \"soon\"\n"));
    assert_error(&e, 36, 17, &["cannot read `digest_window`"]);
    let e = err(&plus("[alert]\nsyslog_facility = \"local9\"\n"));
    assert_error(
        &e,
        36,
        19,
        &["unknown syslog facility `local9`", "local7", "daemon"],
    );
    let e = err(&plus("[[alert.snmp]]\ncommunity = \"x\"\n"));
    assert_error(&e, 35, 1, &["missing `host` in [[alert.snmp]]"]);
    let e = err(&plus("[[alert.snmp]]\nhost = \"nms:99999\"\n"));
    assert_error(&e, 36, 8, &["\"nms:99999\": the port is not a number"]);
    let e = err(&plus("[[alert.snmp]]\nhost = \"nms\"\ncommunity = \"\"\n"));
    assert_error(&e, 37, 13, &["`community` is empty"]);
    let e = err(&plus("[[alert.snmp]]\nhost = \"nms\"\nport = 162\n"));
    assert_error(&e, 37, 1, &["unknown key `port` in [[alert.snmp]]"]);
}

#[test]
fn unwise_alert_settings_are_warnings() {
    let c = ok(&plus(
        "[alert]\nemail_to = [\"o@x.org\"]\nsmtp = \"mail.x.org\"\ntls = \"none\"\nsmtp_user = \"u\"\nsmtp_password = \"p\"\n",
    ));
    assert_eq!(
        c.warnings,
        [format!(
            "{FILE}:40:1: with tls = \"none\" the SMTP password goes to mail.x.org unencrypted"
        )]
    );
    // To this machine itself, nothing crosses a network.
    let c = ok(&plus(
        "[alert]\nemail_to = [\"o@x.org\"]\nsmtp = \"127.0.0.1:25\"\ntls = \"none\"\nsmtp_user = \"u\"\nsmtp_password = \"p\"\n",
    ));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let c = ok(&plus("[alert]\nsmtp = \"mail.x.org\"\n"));
    assert_eq!(
        c.warnings,
        [format!(
            "{FILE}:36:1: mail is configured but `email_to` is empty: no mail is sent"
        )]
    );
}

#[test]
fn a_missing_sendmail_is_an_error_for_check_config_and_a_warning_for_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sip-ha.toml");
    let src = plus("[alert]\nemail_to = [\"o@x.org\"]\nsendmail = \"/nonexistent/sendmail\"\n");
    std::fs::write(&path, &src).unwrap();
    let e = check(&path).unwrap_err();
    assert_eq!((e.line, e.column), (Some(37), Some(12)), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("sendmail program /nonexistent/sendmail: does not exist"),
        "{text}"
    );
    assert!(text.contains("postfix, exim4 or msmtp-mta"), "{text}");
    let c = load(&path).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].contains("/nonexistent/sendmail: does not exist")
            && c.warnings[0].contains("alert mail stays queued"),
        "{:?}",
        c.warnings
    );
    // Present but not executable.
    let program = dir.path().join("sendmail");
    std::fs::write(&program, "#!/bin/sh\n").unwrap();
    let src = plus(&format!(
        "[alert]\nemail_to = [\"o@x.org\"]\nsendmail = \"{}\"\n",
        program.display()
    ));
    std::fs::write(&path, &src).unwrap();
    let e = check(&path).unwrap_err();
    assert!(e.to_string().contains("is not executable"), "{e}");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(check(&path).is_ok());
}

// ---- several problems at once

#[test]
fn all_problems_are_reported_in_file_order() {
    let src = with("fail_after = 3", "fail_after = 0")
        .replace(r#"path = "/etc/asterisk""#, r#"path = "etc""#)
        .replace(r#"interval = "1s""#, r#"interval = "soon""#);
    let e = err(&src);
    let lines: Vec<_> = e.all().map(|e| e.line.unwrap_or(0)).collect();
    assert_eq!(lines, [14, 15, 31], "{e}");
    assert_eq!(e.to_string().lines().count(), 3, "{e}");
}

// ---- load: the file itself

#[test]
fn an_unreadable_file_says_how_to_fix_it() {
    let e = load(Path::new("/nonexistent/sip-ha.toml")).unwrap_err();
    assert_eq!((e.line, e.column), (None, None));
    assert_eq!(
        e.to_string(),
        "cannot read /nonexistent/sip-ha.toml: No such file or directory; create it from the example sip-ha.toml or pass --config"
    );
}

#[cfg(unix)]
#[test]
fn a_world_readable_ami_secret_is_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sip-ha.toml");
    let src = plus("[[health.check]]\nkind = \"ami\"\nuser = \"sipha\"\nsecret = \"s3cret\"\n");
    std::fs::write(&path, &src).unwrap();

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = load(&path).unwrap();
    assert_eq!(
        c.warnings,
        [format!(
            "sip-ha.toml is world-readable and holds an AMI secret (line 38); run: chmod 600 {}",
            path.display()
        )]
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(load(&path).unwrap().warnings.is_empty());

    // An SMTP password too: both named, each with its first line.
    let src = format!(
        "{src}[alert]\nemail_to = [\"o@x.org\"]\nsmtp = \"mail.x.org\"\nsmtp_user = \"u\"\nsmtp_password = \"p\"\n"
    );
    std::fs::write(&path, &src).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        load(&path).unwrap().warnings,
        [format!(
            "sip-ha.toml is world-readable and holds an AMI secret (line 38) and an SMTP password (line 43); run: chmod 600 {}",
            path.display()
        )]
    );
}

#[test]
fn a_file_that_is_not_utf8_gets_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sip-ha.toml");
    std::fs::write(&path, b"[cluster]\nname = \"p\xffx\"\n").unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!((e.line, e.column), (Some(2), Some(10)), "{e}");
    assert!(e.message.contains("UTF-8"), "{e}");
}
