//! Alert mail: what it says ([`Draft`], built by pure functions) and how it
//! leaves this server ([`Mailer`], over lettre).
//!
//! A draft is subject and body only; sender, recipients and transport come
//! from the configuration when it is sent, so a queued draft goes to the
//! recipients configured *then*. Its `Date:` header is when it was written,
//! so a mail delayed by a mail server outage still says when it happened.
//!
//! Transports (`[alert]`):
//!
//! * `smtp = "host:port"` with `tls = "starttls"` (default, port 587: the
//!   upgrade must succeed, mail is never sent in clear by surprise),
//!   `"tls"` (implicit TLS, 465) or `"none"` (25); `smtp_user` and
//!   `smtp_password` to log in. Certificates are checked against the
//!   public (Mozilla) roots, plus `tls_ca` if given.
//! * `sendmail = "/usr/sbin/sendmail"`: the local mail program, run as
//!   `sendmail -i -f FROM -- TO...`.
//! * Neither: SMTP to `localhost:25` without TLS, the local mail server.
//!
//! Every delivery is bounded by `[alert] timeout` (lettre's own default
//! would wait 60 s per step).

use crate::config::{Alert, MailVia, TlsMode};
use anyhow::{anyhow, Context, Result};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSendmailTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use sip_ha_core::Event;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// A mail to send: what the queue stores, one file each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draft {
    pub subject: String,
    pub body: String,
    /// When it was written (ms since the epoch): its `Date:` header.
    pub created_ms: u64,
}

/// What every alert mail shows besides its events.
#[derive(Debug, Clone, Copy)]
pub struct MailContext<'a> {
    pub cluster: &'a str,
    /// `master` or `slave`.
    pub node: &'a str,
    /// The `-v` screen, as `Status::render` prints it.
    pub screen: &'a str,
    /// The last good sync, one line; `None`: none recorded.
    pub last_sync: Option<&'a str>,
    /// The last lines of the history log, oldest first.
    pub history: &'a [String],
    /// This server's hostname.
    pub host: &'a str,
}

/// How many event kinds a digest's subject names before "...".
const SUBJECT_KINDS: usize = 4;

/// The mail for one event, or a digest of several (oldest first).
pub fn event_mail(cx: &MailContext, events: &[Event], now_ms: u64) -> Draft {
    let mut body = String::new();
    let subject = match events {
        [ev] => {
            let _ = writeln!(
                body,
                "{} on the {} of {}, {}:",
                ev.kind,
                cx.node,
                cx.cluster,
                crate::log::local_time(ev.at_ms)
            );
            let _ = writeln!(body, "{}", ev.reason);
            format!("[sip-ha] {}: {} {}", cx.cluster, cx.node, ev.kind)
        }
        _ => {
            let mut kinds: Vec<String> = Vec::new();
            for ev in events {
                let k = ev.kind.to_string();
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
            }
            let mut named = kinds
                .iter()
                .take(SUBJECT_KINDS)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if kinds.len() > SUBJECT_KINDS {
                named.push_str(", ...");
            }
            let _ = writeln!(
                body,
                "{} events on the {} of {}, in order:",
                events.len(),
                cx.node,
                cx.cluster
            );
            let _ = writeln!(body);
            for (i, ev) in events.iter().enumerate() {
                let _ = writeln!(
                    body,
                    "{:>3}. {} {}: {}",
                    i + 1,
                    crate::log::local_time(ev.at_ms),
                    ev.kind,
                    ev.reason
                );
            }
            format!(
                "[sip-ha] {}: {} {} events: {named}",
                cx.cluster,
                cx.node,
                events.len()
            )
        }
    };
    finish(cx, &mut body);
    Draft {
        subject,
        body,
        created_ms: now_ms,
    }
}

/// "Still degraded": the cluster has not been normal since `since_ms`.
pub fn reminder_mail(cx: &MailContext, since_ms: u64, now_ms: u64) -> Draft {
    let mut body = String::new();
    let minutes = now_ms.saturating_sub(since_ms) / 60_000;
    let _ = writeln!(
        body,
        "The {} of {} is still not in its normal state: degraded since {} ({} h {:02} min).",
        cx.node,
        cx.cluster,
        crate::log::local_time(since_ms),
        minutes / 60,
        minutes % 60
    );
    let _ = writeln!(
        body,
        "This reminder repeats every [alert] reminder until the state is normal again."
    );
    finish(cx, &mut body);
    Draft {
        subject: format!("[sip-ha] {}: {} still degraded", cx.cluster, cx.node),
        body,
        created_ms: now_ms,
    }
}

/// What `sip-ha alert --test` mails.
pub fn test_mail(cx: &MailContext, now_ms: u64) -> Draft {
    let mut body = String::new();
    let _ = writeln!(
        body,
        "A test from `sip-ha alert --test` on the {} of {}: mail from sip-ha reaches you.",
        cx.node, cx.cluster
    );
    finish(cx, &mut body);
    Draft {
        subject: format!("[sip-ha] {}: {} test", cx.cluster, cx.node),
        body,
        created_ms: now_ms,
    }
}

/// The parts every mail ends with: status, last sync, history, signature.
fn finish(cx: &MailContext, body: &mut String) {
    let _ = writeln!(body);
    let _ = writeln!(body, "Status now (sip-ha -v on the {}):", cx.node);
    let _ = writeln!(body);
    if cx.screen.trim().is_empty() {
        let _ = writeln!(body, "  (not available)");
    } else {
        for line in cx.screen.lines() {
            let _ = writeln!(body, "  {line}");
        }
    }
    let _ = writeln!(body);
    let _ = writeln!(
        body,
        "Last good sync: {}",
        cx.last_sync.unwrap_or("none recorded")
    );
    let _ = writeln!(body);
    if cx.history.is_empty() {
        let _ = writeln!(body, "History: empty");
    } else {
        let _ = writeln!(body, "History (the end of history.log):");
        for line in cx.history {
            let _ = writeln!(body, "  {line}");
        }
    }
    let _ = writeln!(body);
    let _ = writeln!(body, "-- ");
    let _ = writeln!(body, "sip-ha on {}", cx.host);
}

/// How mail leaves: the configured transport, sender and recipients.
pub struct Mailer {
    via: Via,
    from: Mailbox,
    to: Vec<Mailbox>,
    timeout: Duration,
    /// "smtp mail.example.com:587 (starttls)", for messages.
    describe: String,
}

enum Via {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Sendmail(AsyncSendmailTransport<Tokio1Executor>),
}

impl Mailer {
    /// The mailer for `cfg`; `Ok(None)` when there is nobody to mail.
    /// Fails when the configuration cannot make one (an unreadable
    /// `tls_ca`, say), which the caller reports on every send.
    pub fn new(cfg: &Alert) -> Result<Option<Mailer>> {
        if cfg.email_to.is_empty() {
            return Ok(None);
        }
        let from: Mailbox = cfg
            .email_from
            .parse()
            .with_context(|| format!("email_from \"{}\" is not an address", cfg.email_from))?;
        let to = cfg
            .email_to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>()
                    .with_context(|| format!("email_to \"{t}\" is not an address"))
            })
            .collect::<Result<Vec<_>>>()?;
        let (via, describe) = match &cfg.mail {
            MailVia::Sendmail(program) => (
                Via::Sendmail(AsyncSendmailTransport::new_with_command(program)),
                format!("sendmail {}", program.display()),
            ),
            MailVia::Smtp(smtp) => {
                let describe = format!(
                    "smtp {}:{} ({})",
                    bracket(&smtp.host),
                    smtp.port,
                    smtp.tls.as_str()
                );
                let tls = match smtp.tls {
                    TlsMode::None => Tls::None,
                    mode => {
                        let mut params = TlsParameters::builder(smtp.host.clone());
                        if let Some(ca) = &smtp.tls_ca {
                            let pem = std::fs::read(ca)
                                .with_context(|| format!("cannot read tls_ca {}", ca.display()))?;
                            let cert = Certificate::from_pem(&pem).with_context(|| {
                                format!("tls_ca {} holds no PEM certificate", ca.display())
                            })?;
                            params = params.add_root_certificate(cert);
                        }
                        let params = params
                            .build_rustls()
                            .with_context(|| format!("cannot set up TLS for {}", smtp.host))?;
                        if mode == TlsMode::Tls {
                            Tls::Wrapper(params)
                        } else {
                            Tls::Required(params)
                        }
                    }
                };
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
                        .port(smtp.port)
                        .tls(tls)
                        .timeout(Some(cfg.timeout));
                if let (Some(user), Some(password)) = (&smtp.user, &smtp.password) {
                    builder = builder
                        .credentials(Credentials::new(user.clone(), password.expose().to_owned()));
                }
                (Via::Smtp(builder.build()), describe)
            }
        };
        Ok(Some(Mailer {
            via,
            from,
            to,
            timeout: cfg.timeout,
            describe,
        }))
    }

    /// "smtp host:port (tls mode)" or "sendmail /path".
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// The recipients, comma-separated, for messages.
    pub fn recipients(&self) -> String {
        self.to
            .iter()
            .map(|m| m.email.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The message for `draft`, as it goes on the wire.
    pub fn message(&self, draft: &Draft) -> Result<Message> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(draft.subject.clone())
            .date(SystemTime::UNIX_EPOCH + Duration::from_millis(draft.created_ms))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            b = b.to(to.clone());
        }
        b.body(draft.body.clone())
            .context("cannot build the alert mail")
    }

    /// Hand `draft` to the transport; Ok once the server (or sendmail)
    /// accepted it. Bounded by `[alert] timeout`.
    pub async fn send(&self, draft: &Draft) -> Result<()> {
        let message = self.message(draft)?;
        // lettre's errors print their cause themselves: keep them as text,
        // so that the cause is not said twice.
        let sending = async {
            match &self.via {
                Via::Smtp(t) => t
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow!("{e}")),
                Via::Sendmail(t) => t.send(message).await.map_err(|e| anyhow!("{e}")),
            }
        };
        // lettre's timeout bounds each step of the SMTP dialogue; this bounds
        // the whole (and sendmail, which has none of its own).
        match tokio::time::timeout(self.timeout + Duration::from_millis(500), sending).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e).with_context(|| format!("{} refused or failed", self.describe)),
            Err(_) => Err(anyhow!(
                "{} did not finish within {}",
                self.describe,
                humantime::format_duration(self.timeout)
            )),
        }
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_ha_core::EventKind;

    fn cx<'a>(history: &'a [String]) -> MailContext<'a> {
        MailContext {
            cluster: "pbx",
            node: "slave",
            screen:
                "SIP-HA High Availability Routines for Asterisk\nACTIVE SERVICES ON THIS SERVER",
            last_sync: Some("2024-01-01 10:00:00.000 +0000, 12 files, 3456 bytes"),
            history,
            host: "pbx2",
        }
    }

    fn ev(kind: EventKind, reason: &str, at_ms: u64) -> Event {
        Event {
            kind,
            reason: reason.into(),
            at_ms,
        }
    }

    #[test]
    fn one_event_names_cluster_node_and_kind() {
        let history = vec!["line one".to_string(), "line two".to_string()];
        let d = event_mail(
            &cx(&history),
            &[ev(
                EventKind::Takeover,
                "the master's service is down",
                1_700_000_000_000,
            )],
            1_700_000_000_500,
        );
        assert_eq!(d.subject, "[sip-ha] pbx: slave takeover");
        assert!(
            d.body.contains("the master's service is down"),
            "{}",
            d.body
        );
        assert!(
            d.body.contains("  ACTIVE SERVICES ON THIS SERVER"),
            "{}",
            d.body
        );
        assert!(d
            .body
            .contains("Last good sync: 2024-01-01 10:00:00.000 +0000, 12 files"));
        assert!(d.body.contains("  line two"));
        assert!(d.body.contains("sip-ha on pbx2"));
        assert_eq!(d.created_ms, 1_700_000_000_500);
    }

    #[test]
    fn a_digest_counts_and_lists_every_event_in_order() {
        let events: Vec<Event> = [
            EventKind::PeerLost,
            EventKind::PeerBack,
            EventKind::PeerLost,
            EventKind::Isolated,
            EventKind::WitnessBack,
            EventKind::ServiceDown,
        ]
        .iter()
        .enumerate()
        .map(|(i, k)| ev(*k, &format!("reason {i}"), 1_700_000_000_000 + i as u64))
        .collect();
        let d = event_mail(&cx(&[]), &events, 1_700_000_060_000);
        assert_eq!(
            d.subject,
            "[sip-ha] pbx: slave 6 events: peer-lost, peer-back, isolated, witness-back, ..."
        );
        let mut at = 0;
        for i in 0..6 {
            let needle = format!("{:>3}. ", i + 1);
            let pos = d.body.find(&needle).expect("numbered line");
            assert!(pos > at, "in order");
            at = pos;
            assert!(d.body.contains(&format!("reason {i}")));
        }
        assert!(d.body.contains("History: empty"));
    }

    #[test]
    fn a_reminder_says_since_when() {
        let d = reminder_mail(&cx(&[]), 0, 2 * 3_600_000 + 5 * 60_000);
        assert_eq!(d.subject, "[sip-ha] pbx: slave still degraded");
        assert!(d.body.contains("(2 h 05 min)"), "{}", d.body);
    }

    fn alert_cfg() -> Alert {
        Alert {
            email_to: vec!["ops@example.com".into(), "Night <night@example.com>".into()],
            email_from: "sip-ha@pbx1.example.com".into(),
            mail: MailVia::Smtp(crate::config::Smtp {
                host: "::1".into(),
                port: 2525,
                tls: TlsMode::StartTls,
                user: None,
                password: None,
                tls_ca: None,
            }),
            timeout: Duration::from_secs(3),
            digest_window: Duration::from_secs(60),
            reminder: None,
            syslog_facility: crate::log::Facility::DAEMON,
            snmp: vec![],
        }
    }

    #[test]
    fn the_message_has_sender_recipients_subject_and_the_draft_date() {
        let m = Mailer::new(&alert_cfg()).unwrap().unwrap();
        assert_eq!(m.describe(), "smtp [::1]:2525 (starttls)");
        assert_eq!(m.recipients(), "ops@example.com, night@example.com");
        let d = Draft {
            subject: "[sip-ha] pbx: slave takeover".into(),
            body: "hello\n".into(),
            created_ms: 0,
        };
        let wire = String::from_utf8(m.message(&d).unwrap().formatted()).unwrap();
        assert!(wire.contains("From: sip-ha@pbx1.example.com"), "{wire}");
        let to = wire
            .split("\r\n")
            .find(|l| l.starts_with("To: "))
            .unwrap_or_default();
        assert!(
            to.contains("ops@example.com") && to.contains("Night <night@example.com>"),
            "{wire}"
        );
        assert!(
            wire.contains("Subject: [sip-ha] pbx: slave takeover"),
            "{wire}"
        );
        assert!(wire.contains("Date: Thu, 01 Jan 1970 00:00:00"), "{wire}");
    }

    #[test]
    fn no_recipient_no_mailer_and_a_bad_tls_ca_says_which_file() {
        let mut cfg = alert_cfg();
        cfg.email_to.clear();
        assert!(Mailer::new(&cfg).unwrap().is_none());
        let mut cfg = alert_cfg();
        if let MailVia::Smtp(s) = &mut cfg.mail {
            s.tls_ca = Some("/nonexistent/ca.pem".into());
        }
        let e = Mailer::new(&cfg).err().expect("an error");
        assert!(
            format!("{e:#}").contains("cannot read tls_ca /nonexistent/ca.pem"),
            "{e:#}"
        );
    }
}
