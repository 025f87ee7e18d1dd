//! `sip-ha alert --test`: one test message on every configured channel,
//! through the real transports (mail skips the digest window and the queue),
//! one line per channel:
//!
//! ```text
//! OK   email: sent to ops@example.com via smtp mail.example.com:587 (starttls)
//! OK   syslog: a notice line at local3 (priority 157) went to /dev/log
//! FAIL snmp 192.168.0.5:162: 192.168.0.5:162 answered port unreachable: ...
//! ```
//!
//! Exit 0 when every configured channel worked, 1 when one did not.
//! `sip-ha alert` alone shows what waits in the mail queue.

use crate::alert::{self, email, snmp, Mailer, Queue};
use crate::cli::{AlertArgs, Cli};
use crate::log::Level;
use crate::state;
use crate::status::{Gathered, Status};
use anyhow::Result;
use std::os::unix::fs::FileTypeExt;
use std::time::Duration;

/// How long to listen for an ICMP "port unreachable" after a test trap.
const TRAP_LISTEN: Duration = Duration::from_millis(300);

pub fn run(cli: &Cli, args: &AlertArgs) -> Result<i32> {
    // Not check-config's strict load: a missing sendmail program is the
    // email channel's FAIL line, and the other channels are still tried.
    let (cfg, role) = match super::load_or_refuse(cli) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    if !args.test {
        return show_queue(&cfg);
    }
    let log = super::logger(cli, Some(&cfg), Some(role));
    let loaded = state::load(&cfg.cluster.state_dir, role)?;
    let status = Status::build(&cfg, role, &loaded.state, Gathered::default());
    let screen = status.render();
    let sync = alert::sync_line(loaded.state.last_sync.as_ref());
    let history = crate::log::history_tail(&cfg.cluster.state_dir, alert::HISTORY_LINES);
    let host = alert::hostname();
    let cx = email::MailContext {
        cluster: &cfg.cluster.name,
        node: role.as_str(),
        screen: &screen,
        last_sync: sync.as_deref(),
        history: &history,
        host: &host,
    };
    let rt = super::runtime()?;
    let mut lines: Vec<(Outcome, String)> = Vec::new();

    // Mail: straight through the transport.
    lines.push(match Mailer::new(&cfg.alert) {
        Ok(None) => (Outcome::Skip, "email: no email_to in [alert]".to_owned()),
        Err(e) => (Outcome::Fail, format!("email: {e:#}")),
        Ok(Some(mailer)) => {
            let draft = email::test_mail(&cx, state::now_ms());
            match rt.block_on(mailer.send(&draft)) {
                Ok(()) => (
                    Outcome::Ok,
                    format!(
                        "email: sent to {} via {}",
                        mailer.recipients(),
                        mailer.describe()
                    ),
                ),
                Err(e) => (Outcome::Fail, format!("email: {e:#}")),
            }
        }
    });

    // Syslog: syslog(3) reports nothing back, so check that a syslog
    // daemon's socket is there to take the line.
    let facility = cfg.alert.syslog_facility;
    log.log(
        Level::Notice,
        &format!(
            "alert test from the {role} of {} (sip-ha alert --test)",
            cfg.cluster.name
        ),
    );
    let priority = facility.code() + libc::LOG_NOTICE;
    lines.push(match std::fs::metadata("/dev/log") {
        Ok(m) if m.file_type().is_socket() => (
            Outcome::Ok,
            format!("syslog: a notice line at {facility} (priority {priority}) went to /dev/log"),
        ),
        Ok(_) => (
            Outcome::Fail,
            "syslog: /dev/log is not a socket: no syslog daemon takes the line".to_owned(),
        ),
        Err(e) => (
            Outcome::Fail,
            format!("syslog: no /dev/log ({e}): is a syslog daemon (rsyslog, systemd-journald) running?"),
        ),
    });

    // SNMP: one trap per receiver.
    if cfg.alert.snmp.is_empty() {
        lines.push((Outcome::Skip, "snmp: no [[alert.snmp]] receiver".to_owned()));
    }
    for target in &cfg.alert.snmp {
        let info = snmp::TrapInfo {
            cluster: cfg.cluster.name.clone(),
            node: role.to_string(),
            kind: "test".to_owned(),
            number: snmp::TEST_NUMBER,
            reason: "sip-ha alert --test".to_owned(),
        };
        let name = snmp::describe(target);
        lines.push(
            match rt.block_on(snmp::send(target, &info, Some(TRAP_LISTEN))) {
                Ok(()) => (
                    Outcome::Ok,
                    format!(
                        "snmp {name}: trap sent, no error back within {} ms (traps are not acknowledged)",
                        TRAP_LISTEN.as_millis()
                    ),
                ),
                Err(e) => (Outcome::Fail, format!("snmp {name}: {e:#}")),
            },
        );
    }

    for (outcome, line) in &lines {
        println!("{} {line}", outcome.label());
    }
    Ok(if lines.iter().any(|(o, _)| *o == Outcome::Fail) {
        1
    } else {
        0
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Fail,
    Skip,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "OK  ",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        }
    }
}

/// `sip-ha alert`: what waits in the queue, oldest first.
fn show_queue(cfg: &crate::config::Config) -> Result<i32> {
    let queue = Queue::new(&cfg.cluster.state_dir);
    let names = queue.names()?;
    if names.is_empty() {
        println!("alert queue {}: empty", queue.dir().display());
        return Ok(0);
    }
    println!(
        "alert queue {}: {} mail(s) waiting, oldest first:",
        queue.dir().display(),
        names.len()
    );
    for name in &names {
        match queue.read(name) {
            Ok(d) => println!("  {}  {}", crate::log::local_time(d.created_ms), d.subject),
            Err(e) => println!("  {name}: {e:#}"),
        }
    }
    Ok(0)
}
