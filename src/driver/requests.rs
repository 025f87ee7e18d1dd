//! How `-f`, `-d`, `--enable` and `sip-ha sync` reach a running loop.
//!
//! Only one process may act for a node at a time (the state lock), and a
//! resident loop holds that lock for its whole life. So an operator command
//! given while the loop runs is written to `state_dir/request.json`
//! (atomically), the loop is woken with SIGUSR1, and the command waits for
//! `state_dir/answer.json` with the same id (for `sip-ha sync`, once the
//! loop's push of it ended: [`SyncReport`]). The loop's pid is in
//! `state_dir/loop.pid`; before signalling it, its command name is checked,
//! so a stale pid reused by another program is never signalled.

use crate::state::{self, write_atomic};
use crate::sync::send::{PushOptions, SyncSummary};
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use sip_ha_core::{Command, Event};
use std::path::Path;
use std::time::{Duration, Instant};

const REQUEST_FILE: &str = "request.json";
const ANSWER_FILE: &str = "answer.json";
const PID_FILE: &str = "loop.pid";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Request {
    id: u64,
    #[serde(default)]
    command: Option<Command>,
    #[serde(default)]
    sync: Option<SyncAsk>,
}

/// What the operator asked of a running loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Asked {
    Command(Command),
    Sync(SyncAsk),
}

/// `sip-ha sync`'s options, for the loop's push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncAsk {
    pub dry_run: bool,
    pub verify: bool,
}

impl SyncAsk {
    pub fn options(self) -> PushOptions {
        PushOptions {
            dry_run: self.dry_run,
            verify: self.verify,
        }
    }
}

/// What `sip-ha sync` prints and its exit status, whether it pushed itself
/// or the loop did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// For standard output; the summary line last.
    pub out: Vec<String>,
    /// For standard error.
    pub err: Vec<String>,
    /// 0 all paths synced, 1 refused or a path failed, 2 the link failed.
    pub code: i32,
}

impl SyncReport {
    /// The report of a push (`Err`: it could not run or the link broke).
    pub fn new(result: &Result<SyncSummary, String>, dry_run: bool) -> SyncReport {
        let sum = match result {
            Ok(sum) => sum,
            Err(e) => return SyncReport::refused(e, 2),
        };
        let mut out = sum.planned.clone();
        out.extend(sum.conflicts.iter().map(|c| format!("conflict: {c}")));
        out.push(if dry_run {
            format!(
                "dry run, nothing changed: {} changes to make; {sum}",
                sum.planned.len()
            )
        } else {
            sum.to_string()
        });
        SyncReport {
            out,
            err: (sum.warnings.iter().map(|w| format!("sip-ha: warning: {w}")))
                .chain(sum.errors.iter().map(|e| format!("sip-ha: {e}")))
                .collect(),
            code: if sum.ok() { 0 } else { 1 },
        }
    }

    /// No push: why.
    pub fn refused(why: &str, code: i32) -> SyncReport {
        SyncReport {
            out: Vec::new(),
            err: vec![format!("sip-ha: {why}")],
            code,
        }
    }

    /// Print it: the details, the errors, then the summary line.
    pub fn print(&self) {
        let (summary, details) = match self.out.split_last() {
            Some((last, rest)) => (Some(last), rest),
            None => (None, &[][..]),
        };
        for line in details {
            println!("{line}");
        }
        for line in &self.err {
            eprintln!("{line}");
        }
        if let Some(line) = summary {
            println!("{line}");
        }
    }
}

/// Why a standby does not push.
pub fn standby_refusal(cfg: &crate::config::Config, role: sip_ha_core::Role) -> String {
    let peer = role.peer();
    format!(
        "this server is standby: sync flows from the active server ({peer}, {}) only",
        cfg.node(peer).address
    )
}

/// What the loop did with a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub id: u64,
    pub events: Vec<Event>,
    pub holds_after: bool,
    /// Set when the round itself failed.
    pub error: Option<String>,
    /// The answer to `sip-ha sync`.
    #[serde(default)]
    pub sync: Option<SyncReport>,
}

/// Record this process as the node's loop.
pub fn write_pid(dir: &Path) -> Result<()> {
    write_atomic(
        &dir.join(PID_FILE),
        format!("{}\n", std::process::id()).as_bytes(),
    )
}

pub fn remove_pid(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(PID_FILE));
}

/// The running loop's pid, if there is one.
pub fn loop_pid(dir: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(dir.join(PID_FILE)).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    // Is it still sip-ha? (A pid is reused after the process exits.)
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "sip-ha").then_some(Pid::from_raw(pid))
}

/// Wake the loop for a round now. Returns whether there was one to wake.
pub fn wake_loop(dir: &Path) -> Result<bool> {
    let Some(pid) = loop_pid(dir) else {
        return Ok(false);
    };
    kill(pid, Signal::SIGUSR1)
        .with_context(|| format!("cannot signal the sip-ha loop (pid {pid})"))?;
    Ok(true)
}

/// Hand `command` to the loop and wait for its answer.
pub fn submit(dir: &Path, command: Command, wait: Duration) -> Result<Option<Answer>> {
    submit_request(
        dir,
        Request {
            id: state::now_ms(),
            command: Some(command),
            sync: None,
        },
        wait,
    )
}

/// Hand `sip-ha sync` to the loop and wait for its answer.
pub fn submit_sync(dir: &Path, ask: SyncAsk, wait: Duration) -> Result<Option<Answer>> {
    submit_request(
        dir,
        Request {
            id: state::now_ms(),
            command: None,
            sync: Some(ask),
        },
        wait,
    )
}

fn submit_request(dir: &Path, request: Request, wait: Duration) -> Result<Option<Answer>> {
    let id = request.id;
    let req = serde_json::to_vec(&request).context("cannot encode the request")?;
    write_atomic(&dir.join(REQUEST_FILE), &req)?;
    if !wake_loop(dir)? {
        let _ = std::fs::remove_file(dir.join(REQUEST_FILE));
        anyhow::bail!(
            "no sip-ha loop runs for {} although its lock is held",
            dir.display()
        );
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(dir.join(ANSWER_FILE)) {
            if let Ok(a) = serde_json::from_str::<Answer>(&text) {
                if a.id == id {
                    return Ok(Some(a));
                }
            }
        }
        if loop_pid(dir).is_none() {
            bail!("the sip-ha loop stopped before it answered: see syslog");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(None)
}

/// Take a pending request (the loop calls this each round).
pub fn take(dir: &Path) -> Option<(u64, Asked)> {
    let path = dir.join(REQUEST_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    let req: Request = serde_json::from_str(&text).ok()?;
    match (req.command, req.sync) {
        (Some(c), _) => Some((req.id, Asked::Command(c))),
        (None, Some(s)) => Some((req.id, Asked::Sync(s))),
        (None, None) => None,
    }
}

/// Answer a request.
pub fn answer(dir: &Path, answer: &Answer) -> Result<()> {
    let bytes = serde_json::to_vec(answer).context("cannot encode the answer")?;
    write_atomic(&dir.join(ANSWER_FILE), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_request_reaches_the_loop_with_its_options() {
        let dir = tempfile::tempdir().unwrap();
        let ask = SyncAsk {
            dry_run: false,
            verify: true,
        };
        let req = Request {
            id: 7,
            command: None,
            sync: Some(ask),
        };
        write_atomic(
            &dir.path().join(REQUEST_FILE),
            &serde_json::to_vec(&req).unwrap(),
        )
        .unwrap();
        assert_eq!(take(dir.path()), Some((7, Asked::Sync(ask))));
        assert_eq!(take(dir.path()), None, "taken once");
        // A request of an older sip-ha (no "sync" key) is still a command.
        let old = r#"{"id":8,"command":"disable"}"#;
        std::fs::write(dir.path().join(REQUEST_FILE), old).unwrap();
        assert_eq!(
            take(dir.path()),
            Some((8, Asked::Command(Command::Disable)))
        );
    }

    #[test]
    fn the_report_puts_the_summary_last_and_exits_by_the_result() {
        let mut sum = SyncSummary {
            files_sent: 2,
            planned: vec!["update  /etc/asterisk/sip.conf (10 bytes)".into()],
            ..Default::default()
        };
        let r = SyncReport::new(&Ok(sum.clone()), true);
        assert_eq!(r.code, 0);
        assert_eq!(r.out[0], sum.planned[0]);
        assert!(
            r.out[1].starts_with("dry run, nothing changed: 1 changes to make; sync: 2 files sent")
        );
        sum.errors.push("/etc/asterisk: the standby refused".into());
        let r = SyncReport::new(&Ok(sum), false);
        assert_eq!(r.code, 1);
        assert_eq!(r.err, vec!["sip-ha: /etc/asterisk: the standby refused"]);
        assert!(r.out.last().unwrap().starts_with("sync: 2 files sent"));
        let r = SyncReport::new(&Err("no SSH session".into()), false);
        assert_eq!((r.code, r.out.len()), (2, 0));
    }
}
