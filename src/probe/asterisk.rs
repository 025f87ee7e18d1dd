//! Is Asterisk running and past boot? Ask it: `asterisk -rx "core show
//! uptime"`.
//!
//! `asterisk -r` connects to the running daemon over its control socket
//! (`asterisk.ctl` in the run directory) and `-x` runs one CLI command. The
//! verdict comes from the OUTPUT, never the exit status alone, because
//! `asterisk -rx` exits 0 for any session it managed to open, even one that
//! answered `No such command` (which is what the CLI says in the first half
//! second of boot, before the core commands are registered):
//!
//! | output contains                          | verdict                  |
//! |------------------------------------------|--------------------------|
//! | `System uptime:`                         | healthy                  |
//! | `Unable to connect to remote asterisk`   | not running (exit 1)     |
//! | `No such command`                        | still booting            |
//! | anything else, or nothing                | failed, output quoted    |
//!
//! With `rundir` set, the control socket is named explicitly, as the
//! Pacemaker resource agent does: `asterisk -r -s RUNDIR/asterisk.ctl -x
//! ...`. The `command` may carry leading words (`sudo -n asterisk`): it is
//! split on whitespace, without shell quoting.

use super::command::{describe_status, first_nonblank, run_captured};
use super::Verdict;
use std::io;
use std::path::Path;

/// The CLI command whose answer proves Asterisk is up.
pub const UPTIME_COMMAND: &str = "core show uptime";

/// Run the check. No timeout: the caller adds it, and dropping this future
/// kills the child.
pub(crate) async fn probe(command: &str, rundir: Option<&Path>) -> Verdict {
    let mut words = command.split_whitespace();
    let Some(program) = words.next() else {
        return Err("the asterisk command is empty".to_string());
    };
    let mut args: Vec<String> = words.map(str::to_string).collect();
    match rundir {
        Some(dir) => {
            let ctl = dir.join("asterisk.ctl");
            args.extend([
                "-r".to_string(),
                "-s".to_string(),
                ctl.display().to_string(),
                "-x".to_string(),
                UPTIME_COMMAND.to_string(),
            ]);
        }
        None => args.extend(["-rx".to_string(), UPTIME_COMMAND.to_string()]),
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = match run_captured(program, &arg_refs).await {
        Ok(output) => output,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "asterisk command not found: {program} (is Asterisk installed? set `command` to its full path)"
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(format!("cannot run {program}: permission denied"))
        }
        Err(e) => return Err(format!("cannot run {program}: {e}")),
    };
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push('\n');
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    judge(&text, &describe_status(output.status))
}

/// The verdict from what `asterisk -rx` printed.
fn judge(output: &str, status: &str) -> Verdict {
    let line_with = |needle: &str| {
        output
            .lines()
            .map(str::trim)
            .find(|l| l.contains(needle))
            .map(str::to_string)
    };
    if let Some(line) = line_with("System uptime:") {
        return Ok(format!("Asterisk is running ({line})"));
    }
    if let Some(line) = line_with("Unable to connect to remote asterisk") {
        return Err(format!("Asterisk is not running ({line})"));
    }
    if let Some(line) = line_with("No such command") {
        return Err(format!(
            "Asterisk is still booting (its CLI answered: {line})"
        ));
    }
    Err(match first_nonblank(output.as_bytes()) {
        Some(line) => format!("unexpected answer to `{UPTIME_COMMAND}` ({status}): {line}"),
        None => format!("`{UPTIME_COMMAND}` printed nothing ({status})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judged_by_output_not_exit_status() {
        assert!(judge("System uptime: 1 hour, 2 minutes\n", "exited 0").is_ok());
        let e = judge(
            "Unable to connect to remote asterisk (does /var/run/asterisk/asterisk.ctl exist?)",
            "exited 1",
        )
        .unwrap_err();
        assert!(e.starts_with("Asterisk is not running ("), "{e}");
        let e = judge("No such command 'core show uptime' (type 'core show help core show uptime' for other possible commands)", "exited 0").unwrap_err();
        assert!(e.starts_with("Asterisk is still booting"), "{e}");
        let e = judge("\n", "exited 0").unwrap_err();
        assert!(e.contains("printed nothing"), "{e}");
        let e = judge("Segmentation fault\n", "exited 139").unwrap_err();
        assert!(e.contains("Segmentation fault") && e.contains("139"), "{e}");
    }
}
