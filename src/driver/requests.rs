//! How `-f`, `-d` and `--enable` reach a running loop.
//!
//! Only one process may act for a node at a time (the state lock), and a
//! resident loop holds that lock for its whole life. So an operator command
//! given while the loop runs is written to `state_dir/request.json`
//! (atomically), the loop is woken with SIGUSR1, and the command waits for
//! `state_dir/answer.json` with the same id. The loop's pid is in
//! `state_dir/loop.pid`; before signalling it, its command name is checked,
//! so a stale pid reused by another program is never signalled.

use crate::state::{self, write_atomic};
use anyhow::{Context, Result};
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
    command: Command,
}

/// What the loop did with a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub id: u64,
    pub events: Vec<Event>,
    pub holds_after: bool,
    /// Set when the round itself failed.
    pub error: Option<String>,
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
    let id = state::now_ms();
    let req = serde_json::to_vec(&Request { id, command }).context("cannot encode the request")?;
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
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(None)
}

/// Take a pending request (the loop calls this each round).
pub fn take(dir: &Path) -> Option<(u64, Command)> {
    let path = dir.join(REQUEST_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    let req: Request = serde_json::from_str(&text).ok()?;
    Some((req.id, req.command))
}

/// Answer a request.
pub fn answer(dir: &Path, answer: &Answer) -> Result<()> {
    let bytes = serde_json::to_vec(answer).context("cannot encode the answer")?;
    write_atomic(&dir.join(ANSWER_FILE), &bytes)
}
