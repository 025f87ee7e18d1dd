//! Any shell command as a health check: `sh -c COMMAND`, exit status 0 is
//! healthy.
//!
//! The escape hatch for whatever the other kinds do not cover (a database
//! query, a license check...). On failure the detail carries the first line
//! the command printed (stderr first, then stdout), so the reason shows on
//! the status screen. A command that outlives its timeout is killed with
//! everything it started: it runs in its own process group, and the whole
//! group gets SIGKILL.

use super::Verdict;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io;
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

/// Run `sh -c command`. No timeout: the caller adds it, and dropping this
/// future kills the command.
pub(crate) async fn probe(command: &str) -> Verdict {
    let output = run_captured("sh", &["-c", command])
        .await
        .map_err(|e| format!("cannot run `sh -c {command}`: {e}"))?;
    if output.status.success() {
        return Ok(match first_line(&output) {
            Some(line) => format!("`{command}` exited 0: {line}"),
            None => format!("`{command}` exited 0"),
        });
    }
    let how = describe_status(output.status);
    Err(match first_line_failure(&output) {
        Some(line) => format!("`{command}` {how}: {line}"),
        None => format!("`{command}` {how} (printed nothing)"),
    })
}

/// `exited 1`, `was killed by signal 9 (SIGKILL)`.
pub(crate) fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exited {code}")
    } else if let Some(sig) = status.signal() {
        match Signal::try_from(sig) {
            Ok(s) => format!("was killed by signal {sig} ({})", s.as_str()),
            Err(_) => format!("was killed by signal {sig}"),
        }
    } else {
        format!("ended with {status}")
    }
}

/// The first non-blank line of stdout (for a success message).
fn first_line(output: &Output) -> Option<String> {
    first_nonblank(&output.stdout)
}

/// The first non-blank line of stderr, else of stdout.
fn first_line_failure(output: &Output) -> Option<String> {
    first_nonblank(&output.stderr).or_else(|| first_nonblank(&output.stdout))
}

pub(crate) fn first_nonblank(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    const MAX: usize = 200;
    if line.chars().count() > MAX {
        Some(format!("{}…", line.chars().take(MAX).collect::<String>()))
    } else {
        Some(line.to_string())
    }
}

/// Run a program with no stdin, capturing stdout and stderr.
///
/// It runs in a process group of its own; if this future is dropped before
/// the program ends (a timeout), the whole group is killed, so a shell's
/// children do not linger.
pub(crate) async fn run_captured(program: &str, args: &[&str]) -> io::Result<Output> {
    let mut attempts = 0;
    let child = loop {
        let spawned = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        match spawned {
            // "Text file busy": the executable is being written (an
            // upgrade in progress, or a script just created while another
            // thread forked). Give the writer a moment.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 5 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => break other?,
        }
    };
    let mut guard = GroupKiller(child.id());
    let output = child.wait_with_output().await;
    // Ended on its own (reaped): nothing to kill, and its pid may be reused.
    guard.0 = None;
    output
}

/// Kills a process group when dropped, unless disarmed.
struct GroupKiller(Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // The leader is not reaped yet (we were dropped while waiting
            // for it), so the group id cannot have been reused.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_nonblank_skips_blank_lines() {
        assert_eq!(first_nonblank(b"\n  \n oops \nmore"), Some("oops".into()));
        assert_eq!(first_nonblank(b" \n"), None);
    }
}
