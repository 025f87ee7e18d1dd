//! Is a process alive? By pidfile, by name, or both, read from `/proc`.
//!
//! * **pidfile**: read the pid, then `/proc/PID/stat`. No such directory
//!   means the pidfile is stale (the daemon died without removing it —
//!   `kill -9` leaves Asterisk's behind). State `Z` (zombie) or `X` (dead)
//!   means it has exited and only its parent has not noticed yet.
//! * **name**: scan `/proc/*/comm` (the kernel's name for the process,
//!   at most 15 bytes) and the basename of `argv[0]` from
//!   `/proc/*/cmdline`, skipping zombies.
//! * **both**: the pid from the pidfile must also carry that name; this
//!   catches a stale pidfile whose pid the kernel has since given to some
//!   other process.
//!
//! This is a liveness check only: a hung Asterisk still has a pid. Pair it
//! with `sip` or `asterisk` checks.

use super::Verdict;
use std::io;
use std::path::{Path, PathBuf};

/// Run the check. `/proc` is read on the blocking pool.
pub(crate) async fn probe(pidfile: Option<&Path>, name: Option<&str>) -> Verdict {
    let pidfile = pidfile.map(Path::to_path_buf);
    let name = name.map(str::to_string);
    tokio::task::spawn_blocking(move || check(pidfile.as_deref(), name.as_deref()))
        .await
        .unwrap_or_else(|e| Err(format!("the process check failed to run: {e}")))
}

fn check(pidfile: Option<&Path>, name: Option<&str>) -> Verdict {
    match (pidfile, name) {
        (Some(pidfile), name) => by_pidfile(pidfile, name),
        (None, Some(name)) => by_name(name),
        (None, None) => Err("a process check needs a pidfile or a name".to_string()),
    }
}

fn by_pidfile(pidfile: &Path, name: Option<&str>) -> Verdict {
    let shown = pidfile.display();
    let text = match std::fs::read_to_string(pidfile) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "pidfile {shown} does not exist (the service is not running, or writes its pid elsewhere)"
            ))
        }
        Err(e) => return Err(format!("cannot read pidfile {shown}: {e}")),
    };
    let first = text.lines().next().unwrap_or("").trim();
    let pid = match first.parse::<u32>() {
        Ok(pid) if pid > 0 => pid,
        _ => {
            return Err(format!(
                "pidfile {shown} does not hold a pid (it starts with {first:?})"
            ))
        }
    };
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let state = match read_state(&proc_dir) {
        Ok(state) => state,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "pidfile {shown} names pid {pid} which is not running (stale pidfile)"
            ))
        }
        Err(e) => return Err(format!("cannot read /proc/{pid}/stat: {e}")),
    };
    if is_dead(state) {
        return Err(format!(
            "pidfile {shown} names pid {pid} which has exited (zombie, state {state}; its parent has not reaped it)"
        ));
    }
    let comm = read_comm(&proc_dir).unwrap_or_default();
    if let Some(name) = name {
        if !matches_name(&proc_dir, name) {
            return Err(format!(
                "pidfile {shown} names pid {pid}, which is {comm:?}, not {name:?} (stale pidfile whose pid was reused)"
            ));
        }
    }
    Ok(format!("pid {pid} ({comm}) from {shown} is running"))
}

fn by_name(name: &str) -> Verdict {
    let entries = std::fs::read_dir("/proc").map_err(|e| format!("cannot list /proc: {e}"))?;
    let mut running = Vec::new();
    let mut zombies = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let dir = entry.path();
        if !matches_name(&dir, name) {
            continue;
        }
        // The process may have exited since: treat unreadable as gone.
        match read_state(&dir) {
            Ok(state) if is_dead(state) => zombies.push(pid),
            Ok(_) => running.push(pid),
            Err(_) => {}
        }
    }
    running.sort_unstable();
    zombies.sort_unstable();
    match (running.as_slice(), zombies.as_slice()) {
        ([pid], _) => Ok(format!("process {name:?} is running (pid {pid})")),
        ([], []) => Err(format!("no process named {name:?} is running")),
        ([], z) => Err(format!(
            "process {name:?} exists only as a zombie (pid {}): it has exited",
            join(z)
        )),
        (pids, _) => Ok(format!(
            "process {name:?} is running ({} processes: pids {})",
            pids.len(),
            join(&pids[..pids.len().min(10)])
        )),
    }
}

fn join(pids: &[u32]) -> String {
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Does the process in `dir` (`/proc/PID`) go by `name`, as its `comm` or
/// the basename of its `argv[0]`?
fn matches_name(dir: &Path, name: &str) -> bool {
    if read_comm(dir).is_some_and(|comm| comm == name) {
        return true;
    }
    let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let argv0 = String::from_utf8_lossy(argv0);
    // Some daemons rewrite argv[0] into "name: what I am doing".
    let argv0 = argv0.split(' ').next().unwrap_or_default();
    let base = argv0.rsplit('/').next().unwrap_or_default();
    !base.is_empty() && (base == name || base.strip_suffix(':') == Some(name))
}

fn read_comm(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("comm"))
        .ok()
        .map(|s| s.trim_end_matches('\n').to_string())
}

/// The state letter from `/proc/PID/stat`: `pid (comm) S ...`; the comm may
/// itself contain spaces and parentheses, so look after the last `)`.
fn read_state(dir: &Path) -> io::Result<char> {
    let stat = std::fs::read_to_string(dir.join("stat"))?;
    parse_state(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc stat format: {stat:?}"),
        )
    })
}

fn parse_state(stat: &str) -> Option<char> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

fn is_dead(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_after_the_last_paren() {
        assert_eq!(parse_state("42 (a) b) (c) Z 1 2"), Some('Z'));
        assert_eq!(parse_state("1 (init) S 0"), Some('S'));
        assert_eq!(parse_state("garbage"), None);
    }
}
