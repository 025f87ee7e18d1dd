//! The operator hears of a failover from sip-ha, not from a user: in the
//! two-server lab (tests/lab/), with both loops running, a mail server
//! (aiosmtpd) and a trap receiver (snmptrapd) on the LAN's client, the
//! master's SIP service is killed. The slave's takeover arrives as a mail
//! (at once: a takeover does not wait for the digest window) whose body
//! is the slave's `-v` screen, and as a trap.
//!
//! Needs root; skips with a message otherwise.

mod common;
mod lab;

use common::smtp::{body, header, SmtpServer};
use common::snmptrapd::TrapReceiver;
use lab::{Lab, LabOptions, Role};
use std::time::{Duration, Instant};

/// Generous: the machine is shared with other builds.
const PATIENCE: Duration = Duration::from_secs(45);

#[test]
fn a_failover_reaches_the_operator_by_mail_and_by_trap() {
    let options = LabOptions::default()
        .set("alert.email_to", "[\"ops@example.com\"]")
        .set("alert.smtp", "\"{lan}.1:2525\"")
        .set("alert.tls", "\"none\"")
        .set("alert.timeout", "\"3s\"")
        .set("alert.digest_window", "\"60s\"")
        .append("[[alert.snmp]]\nhost = \"{lan}.1:1162\"\n");
    let Some(lab) = Lab::start_or_skip(options) else {
        return;
    };
    let dir = lab.dir().join("operator");
    std::fs::create_dir_all(&dir).unwrap();
    let client = std::net::IpAddr::V4(lab.client_address());
    let smtp = SmtpServer::start_in(&dir, lab.client_ns(), client, 2525);
    let traps = TrapReceiver::start_in(&dir, lab.client_ns(), client, 1162);
    lab.start_loops();
    let settled = lab.wait_until(PATIENCE, || {
        lab.holder() == Some(Role::Master)
            && lab.state_of(Role::Master) == "normal"
            && lab.state_of(Role::Slave) == "normal"
    });
    assert!(settled, "never normal:\n{}", lab.diagnostics());

    lab.timeline().mark("fault: Kamailio killed on the master");
    lab.master().kill_sip_service();
    let killed = Instant::now();
    assert!(
        lab.wait_until(PATIENCE, || lab.holder() == Some(Role::Slave)),
        "the slave never took over:\n{}",
        lab.diagnostics()
    );

    let subject = "[sip-ha] lab: slave takeover";
    let mut mail = None;
    let arrived = lab.wait_until(PATIENCE, || {
        mail = smtp
            .messages()
            .into_iter()
            .find(|m| header(m, "Subject").as_deref() == Some(subject));
        mail.is_some()
    });
    let subjects: Vec<String> = smtp
        .messages()
        .iter()
        .filter_map(|m| header(m, "Subject"))
        .collect();
    assert!(
        arrived,
        "no \"{subject}\" mail; got {subjects:?}\n{}",
        lab.diagnostics()
    );
    eprintln!(
        "takeover mail {:?} after the kill; mails: {subjects:?}",
        killed.elapsed()
    );
    let b = body(&mail.unwrap_or_default());
    assert!(
        b.contains("ACTIVE SERVICES ON THIS SERVER - this server is SLAVE"),
        "the slave's -v screen: {b}"
    );
    assert!(
        b.contains("holds address now : yes"),
        "the screen after the takeover, not before: {b}"
    );
    assert!(b.contains("takeover on the slave of lab"), "{b}");
    assert!(b.contains("History (the end of history.log):"), "{b}");

    assert!(
        traps.wait_for(
            |l| l.contains("STRING: \"slave\"") && l.contains("STRING: \"takeover\""),
            PATIENCE
        ),
        "no takeover trap: {:?}",
        traps.lines()
    );
    // The master saw its own service fail: a trap at once (its mail waits
    // for the digest window).
    assert!(
        traps.wait_for(
            |l| l.contains("STRING: \"master\"") && l.contains("STRING: \"service-down\""),
            PATIENCE
        ),
        "no service-down trap: {:?}",
        traps.lines()
    );
}
