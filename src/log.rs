//! Logging: syslog(3) for the system log, and a history log on each node.
//!
//! Syslog goes through the C library's `syslog(3)`, not the `syslog` crate:
//! glibc reconnects to `/dev/log` when the syslog daemon is restarted and the
//! socket recreated, while the crate keeps writing into the dead socket and
//! drops the errors. Every event and error goes to syslog; `-l` adds the
//! detail of the pass (each probe, each decision).
//!
//! The history log, `state_dir/history.log`, has one line per event on each
//! node: local time, node, event and reason. It is rotated by size, keeping a
//! few old files, and `sip-ha -v` shows its last lines.

use anyhow::{Context, Result};
use chrono::{Local, TimeZone};
use sip_ha_core::Event;
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Once;

const HISTORY_FILE: &str = "history.log";
/// Rotate the history log past this size.
const HISTORY_MAX_BYTES: u64 = 1024 * 1024;
/// How many rotated history files to keep (history.log.1 .. .N).
const HISTORY_KEEP: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Notice,
    Info,
    Debug,
}

impl Level {
    fn priority(self) -> libc::c_int {
        match self {
            Level::Error => libc::LOG_ERR,
            Level::Warning => libc::LOG_WARNING,
            Level::Notice => libc::LOG_NOTICE,
            Level::Info => libc::LOG_INFO,
            Level::Debug => libc::LOG_DEBUG,
        }
    }
}

/// A syslog facility: which log a line goes to on the syslog side (rsyslog
/// routes on it, e.g. `local3.* /var/log/sip-ha.log`). The priority a line
/// carries on the wire is `facility * 8 + severity`; the constants in
/// `libc` are already multiplied, so `LOG_LOCAL3` is 19 * 8 = 152.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Facility {
    name: &'static str,
    code: libc::c_int,
}

/// Every facility a program may log to, by the name `syslog_facility` takes.
/// `kern` is not here: only the kernel may log there.
const FACILITIES: [(&str, libc::c_int); 19] = [
    ("auth", libc::LOG_AUTH),
    ("authpriv", libc::LOG_AUTHPRIV),
    ("cron", libc::LOG_CRON),
    ("daemon", libc::LOG_DAEMON),
    ("ftp", libc::LOG_FTP),
    ("lpr", libc::LOG_LPR),
    ("mail", libc::LOG_MAIL),
    ("news", libc::LOG_NEWS),
    ("syslog", libc::LOG_SYSLOG),
    ("user", libc::LOG_USER),
    ("uucp", libc::LOG_UUCP),
    ("local0", libc::LOG_LOCAL0),
    ("local1", libc::LOG_LOCAL1),
    ("local2", libc::LOG_LOCAL2),
    ("local3", libc::LOG_LOCAL3),
    ("local4", libc::LOG_LOCAL4),
    ("local5", libc::LOG_LOCAL5),
    ("local6", libc::LOG_LOCAL6),
    ("local7", libc::LOG_LOCAL7),
];

impl Facility {
    /// `daemon`, the default.
    pub const DAEMON: Facility = Facility {
        name: "daemon",
        code: libc::LOG_DAEMON,
    };

    /// The facility called `name` (`daemon`, `local3`...), if there is one.
    pub fn from_name(name: &str) -> Option<Facility> {
        FACILITIES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(name, code)| Facility { name, code })
    }

    /// The names `from_name` knows, for error messages.
    pub fn names() -> impl Iterator<Item = &'static str> {
        FACILITIES.iter().map(|(n, _)| *n)
    }

    pub fn name(self) -> &'static str {
        self.name
    }

    /// The value `syslog(3)` takes (already shifted: facility number * 8).
    pub fn code(self) -> libc::c_int {
        self.code
    }
}

impl Default for Facility {
    fn default() -> Facility {
        Facility::DAEMON
    }
}

impl std::fmt::Debug for Facility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl std::fmt::Display for Facility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Where this run's log lines go.
#[derive(Debug, Clone)]
pub struct Logger {
    /// `-l`: log the detail of this run, not only events and errors.
    pub detailed: bool,
    /// Also echo to standard error (a person at a terminal, or the tests).
    pub echo: bool,
    /// The node's name, written into each history line.
    pub node: String,
    /// Where history.log lives; `None` before the config is known.
    pub history_dir: Option<PathBuf>,
    /// `[alert] syslog_facility`; `daemon` until the config is known.
    pub facility: Facility,
}

static OPEN: Once = Once::new();

impl Logger {
    pub fn new(node: &str, history_dir: Option<PathBuf>, detailed: bool) -> Logger {
        Logger {
            detailed,
            echo: false,
            node: node.to_string(),
            history_dir,
            facility: Facility::DAEMON,
        }
    }

    /// The same logger, logging to `facility`.
    pub fn with_facility(mut self, facility: Facility) -> Logger {
        self.facility = facility;
        self
    }

    fn open_syslog(&self) {
        // The facility given here is only the default: each line names its
        // own (below), so a SIGHUP that changes it takes effect at once.
        let facility = self.facility.code();
        OPEN.call_once(|| {
            // The ident must outlive every syslog call: it is leaked on purpose.
            static IDENT: &[u8] = b"sip-ha\0";
            // SAFETY: IDENT is a static NUL-terminated string; openlog keeps
            // the pointer, which stays valid for the life of the process.
            unsafe {
                libc::openlog(
                    IDENT.as_ptr().cast(),
                    libc::LOG_PID | libc::LOG_NDELAY,
                    facility,
                )
            };
        });
    }

    /// Send one line to syslog (and standard error when echoing). Debug and
    /// info lines are sent only with `-l`.
    pub fn log(&self, level: Level, msg: &str) {
        if matches!(level, Level::Debug | Level::Info) && !self.detailed {
            return;
        }
        if self.echo {
            eprintln!(
                "{} sip-ha[{}]: {msg}",
                local_time(now_ms()),
                std::process::id()
            );
        }
        self.open_syslog();
        // A message with an interior NUL is cut there rather than lost.
        let clean: String = msg.chars().take_while(|c| *c != '\0').collect();
        if let Ok(c) = CString::new(clean) {
            // SAFETY: the format is a static "%s" and the argument a valid C
            // string, so syslog reads exactly one NUL-terminated string.
            unsafe {
                libc::syslog(
                    self.facility.code() | level.priority(),
                    c"%s".as_ptr(),
                    c.as_ptr(),
                )
            };
        }
    }

    pub fn error(&self, msg: &str) {
        self.log(Level::Error, msg)
    }
    pub fn warn(&self, msg: &str) {
        self.log(Level::Warning, msg)
    }
    pub fn info(&self, msg: &str) {
        self.log(Level::Info, msg)
    }
    pub fn debug(&self, msg: &str) {
        self.log(Level::Debug, msg)
    }

    /// Record an event: syslog at notice level and a line in the history.
    pub fn event(&self, ev: &Event) {
        let line = format!("{}: {}", ev.kind, ev.reason);
        self.log(Level::Notice, &line);
        if let Some(dir) = &self.history_dir {
            if let Err(e) = append_history(dir, &self.node, ev.at_ms, &line) {
                self.log(Level::Error, &format!("{e:#}"));
            }
        }
    }
}

fn now_ms() -> u64 {
    crate::state::now_ms()
}

/// Format a time in ms since the epoch as local time, as the history shows.
pub fn local_time(ms: u64) -> String {
    match Local.timestamp_millis_opt(ms as i64).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.3f %z").to_string(),
        None => format!("@{ms}ms"),
    }
}

/// Append one line to the history log, rotating it first if it is too big.
pub fn append_history(dir: &Path, node: &str, at_ms: u64, line: &str) -> Result<()> {
    let path = dir.join(HISTORY_FILE);
    if fs::metadata(&path).map(|m| m.len()).unwrap_or(0) >= HISTORY_MAX_BYTES {
        rotate(dir)?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open the history log {}", path.display()))?;
    let text = format!("{} {node} {line}\n", local_time(at_ms));
    // One write call per line, in append mode: lines never interleave.
    f.write_all(text.as_bytes()).with_context(|| {
        format!(
            "cannot write the history log {} (is the disk full?)",
            path.display()
        )
    })
}

fn rotate(dir: &Path) -> Result<()> {
    for n in (1..HISTORY_KEEP).rev() {
        let from = dir.join(format!("{HISTORY_FILE}.{n}"));
        if from.exists() {
            fs::rename(&from, dir.join(format!("{HISTORY_FILE}.{}", n + 1)))
                .with_context(|| format!("cannot rotate {}", from.display()))?;
        }
    }
    let path = dir.join(HISTORY_FILE);
    fs::rename(&path, dir.join(format!("{HISTORY_FILE}.1")))
        .with_context(|| format!("cannot rotate {}", path.display()))
}

/// The whole history, rotated files first (oldest first).
pub fn history_all(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for n in (1..=HISTORY_KEEP).rev() {
        if let Ok(text) = fs::read_to_string(dir.join(format!("{HISTORY_FILE}.{n}"))) {
            out.extend(text.lines().map(str::to_string));
        }
    }
    if let Ok(text) = fs::read_to_string(dir.join(HISTORY_FILE)) {
        out.extend(text.lines().map(str::to_string));
    }
    out
}

/// The last `n` lines of the history log (fewer if it is shorter).
pub fn history_tail(dir: &Path, n: usize) -> Vec<String> {
    let Ok(f) = fs::File::open(dir.join(HISTORY_FILE)) else {
        return Vec::new();
    };
    let mut lines: std::collections::VecDeque<String> =
        std::collections::VecDeque::with_capacity(n + 1);
    for line in BufReader::new(f).lines().map_while(|l| l.ok()) {
        if lines.len() == n {
            lines.pop_front();
        }
        lines.push_back(line);
    }
    lines.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_ha_core::EventKind;

    #[test]
    fn history_keeps_the_last_lines_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(1000);
        for i in 0..1200 {
            append_history(
                dir.path(),
                "master",
                1_700_000_000_000,
                &format!("event {i} {long}"),
            )
            .unwrap();
        }
        assert!(
            dir.path().join("history.log.1").exists(),
            "rotated past 1 MiB"
        );
        let tail = history_tail(dir.path(), 3);
        assert_eq!(tail.len(), 3);
        assert!(tail[2].contains("master event 1199"), "{}", tail[2]);
    }

    #[test]
    fn event_is_written_to_history() {
        let dir = tempfile::tempdir().unwrap();
        let log = Logger::new("slave", Some(dir.path().to_path_buf()), false);
        log.event(&Event {
            kind: EventKind::Takeover,
            reason: "taking over: the master's service is down".into(),
            at_ms: 1_700_000_000_000,
        });
        let tail = history_tail(dir.path(), 10);
        assert_eq!(tail.len(), 1);
        assert!(
            tail[0].contains("slave takeover: taking over: the master's service is down"),
            "{}",
            tail[0]
        );
    }
}
