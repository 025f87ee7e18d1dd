//! Alerts against real parts: aiosmtpd (an SMTP server, plain, STARTTLS and
//! implicit TLS), msmtp (a real sendmail), Net-SNMP's snmptrapd, and a
//! syslog socket. Everything listens on loopback or inside an empty network
//! namespace.
//!
//! The in-process tests drive [`Alerter`] the way the driver does; the
//! others run the `sip-ha` binary: `alert --test`, and cron passes whose
//! event mail waits in the queue until a mail server is there.

mod common;

use common::example::example_in;
use common::smtp::{body, free_port, header, SmtpServer, SmtpTls, TestCa, PYTHON};
use common::snmptrapd::TrapReceiver;
use common::syslog::SyslogCapture;
use sip_ha::alert::Alerter;
use sip_ha::config::Config;
use sip_ha::log::Logger;
use sip_ha_core::{Event, EventKind, Role};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_sip-ha");
const WAIT: Duration = Duration::from_secs(15);

/// A valid config with `alert` as its `[alert]` table (and whatever
/// follows it), state in `dir/state`. Its addresses are never contacted by
/// these tests.
fn config(dir: &Path, alert: &str) -> Config {
    let text = format!(
        r#"[cluster]
name = "pbx"
service_address = "192.168.0.120/24"
state_dir = "{state}"

[nodes.master]
address = "192.168.0.110"
interface = "eth0"

[nodes.slave]
address = "192.168.0.100"
interface = "eth1"

[peer]
witness = ["192.168.0.1"]

[alert]
{alert}
"#,
        state = dir.join("state").display()
    );
    let path = dir.join("sip-ha.toml");
    std::fs::write(&path, text).unwrap();
    match sip_ha::config::check(&path) {
        Ok(c) => c,
        Err(e) => panic!("test config refused:\n{e}"),
    }
}

fn smtp_none(port: u16) -> String {
    format!(
        "email_to = [\"ops@example.com\"]\nemail_from = \"sip-ha@pbx2.example.com\"\nsmtp = \"127.0.0.1:{port}\"\ntls = \"none\"\ntimeout = \"5s\"\n"
    )
}

fn alerter(cfg: &Config, role: Role) -> Alerter {
    let dir = &cfg.cluster.state_dir;
    std::fs::create_dir_all(dir).unwrap();
    let log = Logger::new(role.as_str(), Some(dir.clone()), false);
    Alerter::new(cfg, role, dir, log)
}

fn ev(kind: EventKind, reason: &str) -> Event {
    Event {
        kind,
        reason: reason.into(),
        at_ms: sip_ha::state::now_ms(),
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---- mail, in process

#[tokio::test]
async fn an_event_is_mailed_with_its_reason_the_screen_and_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(dir.path());
    let cfg = config(dir.path(), &smtp_none(smtp.port));
    let mut a = alerter(&cfg, Role::Slave);
    sip_ha::log::append_history(
        &cfg.cluster.state_dir,
        "slave",
        sip_ha::state::now_ms(),
        "peer-lost: the master is unreachable on every path",
    )
    .unwrap();

    a.event(
        &ev(EventKind::Takeover, "taking over: the master's service is down"),
        "SIP-HA High Availability Routines for Asterisk\nACTIVE SERVICES ON THIS SERVER - this server is SLAVE\n",
        Some("2024-05-01 10:00:00.000 +0000, 12 files, 3456 bytes"),
    )
    .await;
    // A takeover does not wait for the digest window: it is queued at once.
    assert_eq!(a.queue().names().unwrap().len(), 1);
    let r = a.flush().await;
    assert_eq!((r.sent, r.left, r.error.as_deref()), (1, 0, None), "{r:?}");
    assert!(
        a.queue().names().unwrap().is_empty(),
        "removed once accepted"
    );

    let got = smtp.wait_for(1, WAIT);
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(
        header(m, "Subject").as_deref(),
        Some("[sip-ha] pbx: slave takeover"),
        "{m}"
    );
    assert_eq!(
        header(m, "From").as_deref(),
        Some("sip-ha@pbx2.example.com")
    );
    assert_eq!(header(m, "To").as_deref(), Some("ops@example.com"));
    assert_eq!(header(m, "X-RcptTo").as_deref(), Some("ops@example.com"));
    let b = &body(m);
    assert!(
        b.contains("taking over: the master's service is down"),
        "{b}"
    );
    assert!(
        b.contains("ACTIVE SERVICES ON THIS SERVER - this server is SLAVE"),
        "{b}"
    );
    assert!(
        b.contains("Last good sync: 2024-05-01 10:00:00.000 +0000, 12 files, 3456 bytes"),
        "{b}"
    );
    assert!(
        b.contains("slave peer-lost: the master is unreachable on every path"),
        "history: {b}"
    );
}

#[tokio::test]
async fn mail_written_while_the_server_is_down_arrives_in_order_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut smtp = SmtpServer::start(dir.path());
    let cfg = config(
        dir.path(),
        &format!("{}digest_window = \"0s\"\n", smtp_none(smtp.port)),
    );
    let mut a = alerter(&cfg, Role::Master);
    a.event(&ev(EventKind::PeerLost, "before the outage"), "", None)
        .await;
    assert_eq!(a.flush().await.sent, 1);

    smtp.stop();
    a.event(
        &ev(EventKind::ServiceDown, "first during the outage"),
        "",
        None,
    )
    .await;
    a.event(
        &ev(EventKind::Release, "second during the outage"),
        "",
        None,
    )
    .await;
    let r = a.flush().await;
    assert_eq!((r.sent, r.left), (0, 2), "{r:?}");
    let why = r.error.unwrap_or_default();
    assert!(why.contains(&format!("127.0.0.1:{}", smtp.port)), "{why}");
    // sip-ha restarts meanwhile: the queue is on disk.
    drop(a);

    smtp.restart();
    let mut a = alerter(&cfg, Role::Master);
    let r = a.flush().await;
    assert_eq!((r.sent, r.left, r.error.as_deref()), (2, 0, None), "{r:?}");
    let got = smtp.wait_for(3, WAIT);
    let subjects: Vec<String> = got.iter().filter_map(|m| header(m, "Subject")).collect();
    assert_eq!(
        subjects,
        [
            "[sip-ha] pbx: master peer-lost",
            "[sip-ha] pbx: master service-down",
            "[sip-ha] pbx: master release"
        ]
    );
    assert!(body(&got[1]).contains("first during the outage"));
    assert!(body(&got[2]).contains("second during the outage"));
}

#[tokio::test]
async fn a_mail_server_that_hangs_is_given_up_after_the_timeout() {
    // Accepts the connection and never says a word (a mail server wedged
    // during the outage).
    let dir = tempfile::tempdir().unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let cfg = config(
        dir.path(),
        &format!(
            "email_to = [\"ops@example.com\"]\nsmtp = \"127.0.0.1:{port}\"\ntls = \"none\"\ntimeout = \"1s\"\n"
        ),
    );
    let mut a = alerter(&cfg, Role::Slave);
    a.event(&ev(EventKind::Takeover, "hung server"), "", None)
        .await;
    let started = std::time::Instant::now();
    let r = a.flush().await;
    let took = started.elapsed();
    assert_eq!((r.sent, r.left), (0, 1), "{r:?}");
    assert!(took < Duration::from_secs(3), "gave up after {took:?}");
    assert!(
        r.error.as_deref().unwrap_or("").contains("timed out")
            || r.error.as_deref().unwrap_or("").contains("did not finish"),
        "{r:?}"
    );
    drop(silent);
}

#[tokio::test]
async fn five_events_in_one_window_make_one_mail_that_lists_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(dir.path());
    let cfg = config(
        dir.path(),
        &format!("{}digest_window = \"60s\"\n", smtp_none(smtp.port)),
    );
    let mut a = alerter(&cfg, Role::Slave);
    let t0 = sip_ha::state::now_ms();
    let kinds = [
        EventKind::PeerLost,
        EventKind::PeerBack,
        EventKind::PeerLost,
        EventKind::PeerBack,
        EventKind::PeerLost,
    ];
    for (i, kind) in kinds.iter().enumerate() {
        let e = Event {
            kind: *kind,
            reason: format!("flap number {i}"),
            at_ms: t0 + i as u64 * 1000,
        };
        a.event(&e, "SCREEN", None).await;
    }
    a.tick(t0 + 30_000);
    assert!(a.queue().names().unwrap().is_empty(), "window still open");
    // The window survives a restart (it is in pending.json).
    drop(a);
    let mut a = alerter(&cfg, Role::Slave);
    a.tick(t0 + 61_000);
    assert_eq!(a.queue().names().unwrap().len(), 1, "one mail for five");
    let r = a.flush().await;
    assert_eq!(r.sent, 1, "{r:?}");
    let got = smtp.wait_for(1, WAIT);
    assert_eq!(got.len(), 1);
    assert_eq!(
        header(&got[0], "Subject").as_deref(),
        Some("[sip-ha] pbx: slave 5 events: peer-lost, peer-back")
    );
    let b = &body(&got[0]);
    let mut at = 0;
    for i in 0..5 {
        let pos = b
            .find(&format!("flap number {i}"))
            .unwrap_or_else(|| panic!("event {i} missing: {b}"));
        assert!(pos > at, "in order: {b}");
        at = pos;
    }
    // Nothing more goes out later.
    a.tick(t0 + 200_000);
    assert!(a.queue().names().unwrap().is_empty());
}

#[tokio::test]
async fn starttls_and_implicit_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    for (mode, host) in [("starttls", "localhost"), ("tls", "127.0.0.1")] {
        let sub = dir.path().join(mode);
        std::fs::create_dir_all(&sub).unwrap();
        let tls = match mode {
            "starttls" => SmtpTls::StartTls {
                cert: ca.cert.clone(),
                key: ca.key.clone(),
            },
            _ => SmtpTls::Implicit {
                cert: ca.cert.clone(),
                key: ca.key.clone(),
            },
        };
        let smtp = SmtpServer::start_with(&sub, free_port(), tls);
        let alert = format!(
            "email_to = [\"ops@example.com\"]\nsmtp = \"{host}:{}\"\ntls = \"{mode}\"\ntimeout = \"5s\"\ndigest_window = \"0s\"\n",
            smtp.port
        );
        // Without the private CA the certificate is not trusted: nothing is
        // sent in clear instead, the mail waits.
        let cfg = config(&sub, &alert);
        let mut a = alerter(&cfg, Role::Master);
        a.event(&ev(EventKind::Takeover, &format!("over {mode}")), "", None)
            .await;
        let r = a.flush().await;
        assert_eq!((r.sent, r.left), (0, 1), "{mode}: {r:?}");
        let why = r.error.unwrap_or_default().to_lowercase();
        assert!(
            why.contains("certificate") || why.contains("issuer"),
            "{mode}: {why}"
        );
        drop(a);

        let cfg = config(
            &sub,
            &format!("{alert}tls_ca = \"{}\"\n", ca.ca_cert.display()),
        );
        let mut a = alerter(&cfg, Role::Master);
        let r = a.flush().await;
        assert_eq!(
            (r.sent, r.left, r.error.as_deref()),
            (1, 0, None),
            "{mode}: {r:?}"
        );
        let got = smtp.wait_for(1, WAIT);
        assert_eq!(got.len(), 1, "{mode}");
        assert!(body(&got[0]).contains(&format!("over {mode}")), "{mode}");
    }
}

// ---- traps

#[tokio::test]
async fn each_event_is_a_trap_at_snmptrapd_with_cluster_node_kind_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let traps = TrapReceiver::start(dir.path());
    let cfg = config(
        dir.path(),
        &format!(
            "[[alert.snmp]]\nhost = \"127.0.0.1:{}\"\ncommunity = \"s3cret\"\n",
            traps.port
        ),
    );
    let mut a = alerter(&cfg, Role::Slave);
    a.event(
        &ev(EventKind::Takeover, "the master stopped answering"),
        "",
        None,
    )
    .await;
    a.settle().await;
    let arrived = traps.wait_for(|l| l.contains("the master stopped answering"), WAIT);
    let lines = traps.lines();
    assert!(arrived, "{lines:?}");
    let trap = lines
        .iter()
        .find(|l| l.contains("the master stopped answering"))
        .unwrap();
    for part in [
        ".1.3.6.1.2.1.1.3.0 = Timeticks:",
        ".1.3.6.1.6.3.1.1.4.1.0 = OID: .1.3.6.1.4.1.99999.1.0.1",
        ".1.3.6.1.4.1.99999.1.1.1.0 = STRING: \"pbx\"",
        ".1.3.6.1.4.1.99999.1.1.2.0 = STRING: \"slave\"",
        ".1.3.6.1.4.1.99999.1.1.3.0 = STRING: \"takeover\"",
        ".1.3.6.1.4.1.99999.1.1.4.0 = STRING: \"the master stopped answering\"",
    ] {
        assert!(trap.contains(part), "{part:?} not in {trap}");
    }
}

// ---- the binary

/// `[alert]` for `alert --test` against these servers (0: not configured).
fn alert_for_test(smtp_port: u16, trap_port: u16) -> String {
    let mut a = String::from("syslog_facility = \"local3\"\n");
    if smtp_port != 0 {
        a.push_str(&format!(
            "email_to = [\"ops@example.com\"]\nsmtp = \"127.0.0.1:{smtp_port}\"\ntls = \"none\"\ntimeout = \"5s\"\n"
        ));
    }
    if trap_port != 0 {
        a.push_str(&format!(
            "[[alert.snmp]]\nhost = \"127.0.0.1:{trap_port}\"\n"
        ));
    }
    a
}

fn alert_test(log: &SyslogCapture, dir: &Path) -> Output {
    log.command(Path::new(BIN), false)
        .arg("--config")
        .arg(dir.join("sip-ha.toml"))
        .args(["--node", "master", "alert", "--test"])
        .output()
        .unwrap()
}

#[test]
fn alert_test_reaches_every_channel_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut smtp = SmtpServer::start(dir.path());
    let traps = TrapReceiver::start(dir.path());
    config(dir.path(), &alert_for_test(smtp.port, traps.port));
    let log = SyslogCapture::new();

    let o = alert_test(&log, dir.path());
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "one line per channel: {out}");
    assert_eq!(
        lines[0],
        format!(
            "OK   email: sent to ops@example.com via smtp 127.0.0.1:{} (none)",
            smtp.port
        )
    );
    assert_eq!(
        lines[1],
        "OK   syslog: a notice line at local3 (priority 157) went to /dev/log"
    );
    assert!(
        lines[2].starts_with(&format!("OK   snmp 127.0.0.1:{}: trap sent", traps.port)),
        "{out}"
    );

    let got = smtp.wait_for(1, WAIT);
    assert_eq!(got.len(), 1);
    assert_eq!(
        header(&got[0], "Subject").as_deref(),
        Some("[sip-ha] pbx: master test")
    );
    assert!(
        traps.wait_for(
            |l| l.contains(".1.3.6.1.4.1.99999.1.0.99") && l.contains("STRING: \"test\""),
            WAIT
        ),
        "{:?}",
        traps.lines()
    );
    let sys = log.lines();
    assert!(
        sys.iter()
            .any(|l| l.starts_with("<157>") && l.contains("alert test from the master of pbx")),
        "local3.notice = 19 * 8 + 5 = 157: {sys:?}"
    );

    // The mail server and the trap receiver go away: exit 1, and why.
    smtp.stop();
    drop(traps);
    let o = alert_test(&log, dir.path());
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with(&format!(
            "FAIL email: smtp 127.0.0.1:{} (none) refused or failed: ",
            smtp.port
        )) && lines[0].contains("Connection refused"),
        "{out}"
    );
    assert!(lines[1].starts_with("OK   syslog"), "{out}");
    assert!(
        lines[2].starts_with("FAIL snmp 127.0.0.1:") && lines[2].contains("port unreachable"),
        "{out}"
    );
}

#[test]
fn syslog_lines_carry_the_configured_facility() {
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &alert_for_test(0, 0));
    let log = SyslogCapture::new();
    let o = alert_test(&log, dir.path());
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "SKIP email: no email_to in [alert]",
            "OK   syslog: a notice line at local3 (priority 157) went to /dev/log",
            "SKIP snmp: no [[alert.snmp]] receiver",
        ]
    );
    // A whole pass with -l (each probe, each decision, the events), in an
    // empty network namespace: every line at local3, whatever its severity.
    let o = log
        .command(Path::new(BIN), true)
        .arg("--config")
        .arg(dir.path().join("sip-ha.toml"))
        .args(["--node", "master", "-l", "run"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines = log.lines();
    assert!(lines.len() >= 3, "{lines:?}");
    for l in &lines {
        let pri: u32 = l
            .strip_prefix('<')
            .and_then(|r| r.split_once('>'))
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or_else(|| panic!("no <priority>: {l}"));
        assert_eq!(pri / 8, 19, "facility local3 (19): {l}");
    }
}

#[test]
fn the_sendmail_transport_hands_mail_to_a_real_sendmail() {
    // msmtp (Debian's msmtp) is a sendmail-compatible program that relays
    // to the SMTP server in its ~/.msmtprc: here, aiosmtpd.
    let msmtp = Path::new("/usr/bin/msmtp");
    assert!(
        msmtp.exists(),
        "msmtp is missing: run scripts/install-test-deps.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(dir.path());
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let rc = home.join(".msmtprc");
    std::fs::write(
        &rc,
        format!(
            "account default\nhost 127.0.0.1\nport {}\nauth off\ntls off\nfrom sip-ha@localhost\n",
            smtp.port
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    config(
        dir.path(),
        "email_to = [\"ops@example.com\"]\nsendmail = \"/usr/bin/msmtp\"\n",
    );
    let o = std::process::Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("sip-ha.toml"))
        .args(["--node", "master", "alert", "--test"])
        .env("HOME", &home)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.lines()
            .next()
            .is_some_and(|l| l == "OK   email: sent to ops@example.com via sendmail /usr/bin/msmtp"),
        "{}",
        text(&o)
    );
    let got = smtp.wait_for(1, WAIT);
    assert_eq!(got.len(), 1);
    assert_eq!(
        header(&got[0], "Subject").as_deref(),
        Some("[sip-ha] pbx: master test")
    );
    assert_eq!(
        header(&got[0], "X-RcptTo").as_deref(),
        Some("ops@example.com")
    );

    // A sendmail that is not there: alert --test says so on the email line
    // and still tries the others; check-config names it, with its line.
    let cfg_path = dir.path().join("sip-ha.toml");
    let text_cfg = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("/usr/bin/msmtp", "/nonexistent/sendmail");
    std::fs::write(&cfg_path, text_cfg).unwrap();
    let log = SyslogCapture::new();
    let o = log
        .command(Path::new(BIN), false)
        .arg("--config")
        .arg(&cfg_path)
        .args(["--node", "master", "alert", "--test"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("FAIL email: sendmail /nonexistent/sendmail refused or failed: "),
        "{out}"
    );
    assert!(out.contains("OK   syslog:"), "{out}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("warning: ")
            && String::from_utf8_lossy(&o.stderr).contains("/nonexistent/sendmail: does not exist"),
        "{}",
        text(&o)
    );
    let o = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&cfg_path)
        .args(["--node", "master", "check-config"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}:19:12: sendmail program /nonexistent/sendmail: does not exist",
            cfg_path.display()
        )),
        "{err}"
    );
}

/// Cron passes in an empty network namespace: the service is down (every
/// probe fails), and the third pass's event mails cannot leave (no network
/// at all). They wait in the queue; the next pass, in a namespace with a
/// mail server on its loopback, sends them, in order.
#[test]
fn a_pass_queues_its_event_mail_and_a_later_pass_sends_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = example_in(dir.path());
    let port = 2525;
    let src = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            "smtp = \"mail.example.com\"",
            &format!("smtp = \"127.0.0.1:{port}\""),
        )
        .replace("tls = \"starttls\"", "tls = \"none\"")
        .replace("digest_window = \"60s\"", "digest_window = \"0s\"");
    assert!(src.contains("127.0.0.1:2525") && src.contains("digest_window = \"0s\""));
    std::fs::write(&cfg, src).unwrap();
    let pass = || {
        let o = std::process::Command::new("unshare")
            .args(["--net", "--"])
            .arg(BIN)
            .arg("--config")
            .arg(&cfg)
            .args(["--node", "master", "run"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    };
    for _ in 0..3 {
        pass();
    }
    let expected = [
        "[sip-ha] pbx: master service-down",
        "[sip-ha] pbx: master peer-lost",
        "[sip-ha] pbx: master isolated",
    ];
    let queue = dir.path().join("state/alerts/queue");
    assert_eq!(
        std::fs::read_dir(&queue).unwrap().count(),
        3,
        "the third pass's three event mails wait"
    );
    let o = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .args(["--node", "master", "alert"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("3 mail(s) waiting"), "{out}");
    let listed: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.find("[sip-ha]").map(|i| &l[i..]))
        .collect();
    assert_eq!(listed, expected, "{out}");

    // Pass four, with a mail server inside its namespace.
    let mailbox = dir.path().join("mail");
    std::fs::create_dir_all(&mailbox).unwrap();
    let script = r#"
ip link set lo up
"$PYTHON" -m aiosmtpd -n -l "127.0.0.1:$PORT" -c aiosmtpd.handlers.Mailbox "$MAILDIR" 2>/dev/null &
srv=$!
"$PYTHON" -c '
import socket, sys, time
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
' "$PORT" || { echo "aiosmtpd did not start" >&2; kill $srv; exit 3; }
"$BIN" --config "$CFG" --node master run
rc=$?
kill $srv
wait $srv 2>/dev/null
exit $rc
"#;
    let o = std::process::Command::new("unshare")
        .args(["--net", "--", "sh", "-c", script])
        .env("PYTHON", PYTHON)
        .env("PORT", port.to_string())
        .env("MAILDIR", mailbox.join("maildir"))
        .env("BIN", BIN)
        .env("CFG", &cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        std::fs::read_dir(&queue).unwrap().count(),
        0,
        "sent and removed"
    );
    // The same maildir, read as the helper reads it (in arrival order).
    let got = SmtpServer::read_maildir(&mailbox.join("maildir"));
    let subjects: Vec<String> = got.iter().filter_map(|m| header(m, "Subject")).collect();
    assert_eq!(subjects, expected);
    let b = &body(&got[0]);
    assert!(b.contains("local service failed 3 checks in a row"), "{b}");
    assert!(b.contains("SERVICE DOWN LOCALLY"), "the -v screen: {b}");
    assert!(b.contains("master service-down"), "the history: {b}");
}
