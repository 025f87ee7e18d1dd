//! The mail queue: `state_dir/alerts/queue/`, one file per message, so an
//! alert written during an outage (the mail server down too) is sent when
//! the server is back, even after sip-ha or the machine restarted.
//!
//! * A message is written there first, atomically (temp file, fsync,
//!   rename), and removed only after the server accepted it. A crash
//!   between the two sends it twice rather than never.
//! * File names sort by time, then by a sequence number:
//!   `0001700000000000-000000.json`. A new name always sorts after the last
//!   one, even if the clock went back ([`next_name`]).
//! * [`Queue::flush`] sends in that order and stops at the first failure, so
//!   mail never arrives out of order. Checking an empty queue is one
//!   `readdir`.
//! * The queue holds at most [`CAP`] messages: past that, the oldest are
//!   dropped (and the caller logs each to syslog) rather than filling the
//!   disk or blocking anything.
//! * A file that cannot be read back (corrupt, truncated by a full disk) is
//!   moved to `alerts/bad/` so it cannot block the queue forever.

use super::email::{Draft, Mailer};
use crate::state::write_atomic;
use anyhow::{Context, Result};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// At most this many messages wait; past it, the oldest are dropped.
pub const CAP: usize = 1000;

const SUFFIX: &str = ".json";

/// The queue directory of a state directory.
#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
    cap: usize,
}

/// What a flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Messages the server accepted (and that were removed).
    pub sent: usize,
    /// Messages still waiting after the flush.
    pub left: usize,
    /// Why the flush stopped early, if it did.
    pub error: Option<String>,
    /// Unreadable files moved to `alerts/bad/`.
    pub set_aside: Vec<String>,
}

/// What [`Queue::push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The new message's file name.
    pub name: String,
    /// Subjects of the oldest messages dropped to stay within the cap.
    pub dropped: Vec<String>,
}

impl Queue {
    /// The queue of `state_dir` (`state_dir/alerts/queue`).
    pub fn new(state_dir: &Path) -> Queue {
        Queue {
            dir: state_dir.join("alerts").join("queue"),
            cap: CAP,
        }
    }

    /// The same queue with another cap (for tests).
    pub fn with_cap(mut self, cap: usize) -> Queue {
        self.cap = cap.max(1);
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The waiting messages' names, oldest first. A queue that was never
    /// made is empty.
    pub fn names(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot list the alert queue {}", self.dir.display()))
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| parse_name(n).is_some())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Write `draft` as the newest message. Drops the oldest when the queue
    /// is full.
    pub fn push(&self, draft: &Draft, now_ms: u64) -> Result<Pushed> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create the alert queue {}", self.dir.display()))?;
        let names = self.names()?;
        let mut dropped = Vec::new();
        for old in overflow(&names, self.cap) {
            let subject = self.read(old).map_or_else(|_| old.clone(), |d| d.subject);
            match fs::remove_file(self.dir.join(old)) {
                Ok(()) => dropped.push(subject),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot drop {old} from the full alert queue"))
                }
            }
        }
        let name = next_name(names.last().map(String::as_str), now_ms);
        let json = serde_json::to_vec_pretty(draft).context("cannot encode an alert mail")?;
        write_atomic(&self.dir.join(&name), &json)?;
        Ok(Pushed { name, dropped })
    }

    /// The message in file `name`.
    pub fn read(&self, name: &str) -> Result<Draft> {
        let path = self.dir.join(name);
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))
    }

    /// Send every waiting message, oldest first, removing each once the
    /// server accepted it; stop at the first that fails.
    pub async fn flush(&self, mailer: &Mailer) -> FlushReport {
        let mut report = FlushReport::default();
        let names = match self.names() {
            Ok(n) => n,
            Err(e) => {
                report.error = Some(format!("{e:#}"));
                return report;
            }
        };
        let total = names.len();
        let mut done = 0;
        for name in &names {
            let draft = match self.read(name) {
                Ok(d) => d,
                // Gone meanwhile (dropped by a full queue): nothing to send.
                Err(_) if !self.dir.join(name).exists() => {
                    done += 1;
                    continue;
                }
                Err(e) => {
                    done += 1;
                    match self.set_aside(name) {
                        Ok(to) => report
                            .set_aside
                            .push(format!("{e:#}; moved to {}", to.display())),
                        Err(e2) => {
                            report.error = Some(format!("{e:#}; {e2:#}"));
                            break;
                        }
                    }
                    continue;
                }
            };
            if let Err(e) = mailer.send(&draft).await {
                report.error = Some(format!("{e:#}"));
                break;
            }
            done += 1;
            report.sent += 1;
            if let Err(e) = fs::remove_file(self.dir.join(name)) {
                if e.kind() != ErrorKind::NotFound {
                    // Sent, but it would be sent again: say so and stop.
                    report.error = Some(format!(
                        "sent {name} but cannot remove it from the queue: {e}"
                    ));
                    break;
                }
            }
        }
        report.left = total - done;
        report
    }

    fn set_aside(&self, name: &str) -> Result<PathBuf> {
        let bad = self.dir.with_file_name("bad");
        fs::create_dir_all(&bad).with_context(|| format!("cannot create {}", bad.display()))?;
        let to = bad.join(name);
        fs::rename(self.dir.join(name), &to)
            .with_context(|| format!("cannot move {name} out of the alert queue"))?;
        Ok(to)
    }
}

/// `(ms, sequence)` of a queue file name; `None` for anything else (temp
/// files start with a dot and do not match).
pub fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (ms, seq) = stem.split_once('-')?;
    if ms.len() != 16 || seq.len() != 6 {
        return None;
    }
    if !ms.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The name of a message written at `now_ms` after the newest, `last`. It
/// sorts after `last` whatever the clock says: with the clock at or behind
/// `last`'s time, it takes `last`'s time and the next sequence number.
pub fn next_name(last: Option<&str>, now_ms: u64) -> String {
    let (ms, seq) = match last.and_then(parse_name) {
        Some((last_ms, last_seq)) if now_ms <= last_ms => {
            if last_seq < 999_999 {
                (last_ms, last_seq + 1)
            } else {
                (last_ms + 1, 0)
            }
        }
        _ => (now_ms, 0),
    };
    format!("{ms:016}-{seq:06}{SUFFIX}")
}

/// The oldest names to drop so that one more fits within `cap` (`names` is
/// oldest first).
pub fn overflow(names: &[String], cap: usize) -> &[String] {
    let excess = (names.len() + 1).saturating_sub(cap.max(1));
    &names[..excess.min(names.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(subject: &str) -> Draft {
        Draft {
            subject: subject.into(),
            body: "body\n".into(),
            created_ms: 1,
        }
    }

    #[test]
    fn names_sort_by_time_then_sequence_even_when_the_clock_goes_back() {
        assert_eq!(
            next_name(None, 1_700_000_000_000),
            "0001700000000000-000000.json"
        );
        let a = next_name(None, 5_000);
        let b = next_name(Some(&a), 5_000);
        let c = next_name(Some(&b), 4_000); // clock went back
        let d = next_name(Some(&c), 6_000);
        assert_eq!(b, "0000000000005000-000001.json");
        assert_eq!(c, "0000000000005000-000002.json");
        assert_eq!(d, "0000000000006000-000000.json");
        let mut sorted = vec![d.clone(), b.clone(), c.clone(), a.clone()];
        sorted.sort();
        assert_eq!(sorted, vec![a, b, c, d]);
        let full = format!("{:016}-999999.json", 7_000);
        assert_eq!(
            next_name(Some(&full), 7_000),
            "0000000000007001-000000.json"
        );
        assert_eq!(parse_name(".0000000000007001-000000.json.tmp-1"), None);
        assert_eq!(parse_name("0000000000007001-000000.json"), Some((7001, 0)));
        assert_eq!(parse_name("notes.txt"), None);
    }

    #[test]
    fn overflow_drops_the_oldest_to_make_room_for_one() {
        let names: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
        assert!(overflow(&names, 10).is_empty());
        assert!(overflow(&names, 6).is_empty());
        assert_eq!(overflow(&names, 5), &names[..1]);
        assert_eq!(overflow(&names, 3), &names[..3]);
        assert!(overflow(&[], 1).is_empty());
    }

    #[test]
    fn push_keeps_order_and_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path()).with_cap(3);
        assert!(q.names().unwrap().is_empty(), "no queue yet: empty");
        for i in 0..3 {
            let p = q.push(&draft(&format!("m{i}")), 1_000).unwrap();
            assert!(p.dropped.is_empty());
        }
        let p = q.push(&draft("m3"), 1_000).unwrap();
        assert_eq!(p.dropped, vec!["m0".to_string()]);
        let subjects: Vec<String> = q
            .names()
            .unwrap()
            .iter()
            .map(|n| q.read(n).unwrap().subject)
            .collect();
        assert_eq!(subjects, ["m1", "m2", "m3"]);
        // No temp files left.
        let all = fs::read_dir(q.dir()).unwrap().count();
        assert_eq!(all, 3);
    }

    #[tokio::test]
    async fn a_flush_that_cannot_connect_keeps_everything_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        q.push(&draft("first"), 1).unwrap();
        q.push(&draft("second"), 2).unwrap();
        // A port nothing listens on: connection refused at once.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cfg = crate::config::Alert {
            email_to: vec!["ops@example.com".into()],
            email_from: "sip-ha@localhost".into(),
            mail: crate::config::MailVia::Smtp(crate::config::Smtp {
                host: "127.0.0.1".into(),
                port,
                tls: crate::config::TlsMode::None,
                user: None,
                password: None,
                tls_ca: None,
            }),
            timeout: std::time::Duration::from_secs(2),
            digest_window: std::time::Duration::ZERO,
            reminder: None,
            syslog_facility: crate::log::Facility::DAEMON,
            snmp: vec![],
        };
        let mailer = Mailer::new(&cfg).unwrap().unwrap();
        let r = q.flush(&mailer).await;
        assert_eq!((r.sent, r.left), (0, 2), "{r:?}");
        assert!(
            r.error
                .as_deref()
                .unwrap_or("")
                .contains(&format!("127.0.0.1:{port}")),
            "{r:?}"
        );
        assert_eq!(q.names().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_corrupt_file_is_set_aside_not_a_blockage() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        q.push(&draft("fine"), 1).unwrap();
        let bad = next_name(None, 0);
        fs::write(q.dir().join(&bad), b"{\"subj").unwrap();
        // A sendmail that reads the message, accepts it (exit 0) and
        // delivers nowhere. (/bin/true raced: exiting before the message
        // was written, it broke the pipe now and then.)
        let sendmail = dir.path().join("sendmail");
        fs::write(&sendmail, "#!/bin/sh\ncat >/dev/null\n").unwrap();
        fs::set_permissions(
            &sendmail,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let cfg = crate::config::Alert {
            email_to: vec!["ops@example.com".into()],
            email_from: "sip-ha@localhost".into(),
            mail: crate::config::MailVia::Sendmail(sendmail),
            timeout: std::time::Duration::from_secs(5),
            digest_window: std::time::Duration::ZERO,
            reminder: None,
            syslog_facility: crate::log::Facility::DAEMON,
            snmp: vec![],
        };
        let mailer = Mailer::new(&cfg).unwrap().unwrap();
        let r = q.flush(&mailer).await;
        assert_eq!((r.sent, r.left), (1, 0), "{r:?}");
        assert_eq!(r.set_aside.len(), 1, "{r:?}");
        assert!(dir.path().join("alerts/bad").join(&bad).exists());
    }
}
