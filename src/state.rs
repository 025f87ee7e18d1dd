//! What a node remembers between passes, and the lock that keeps passes apart.
//!
//! `state_dir/state.json` holds the decision core's [`Memory`] (who is active
//! as far as this node knows, the epoch, the maintenance flag, the health and
//! peer counters, the last change) and the last sync. It is written
//! atomically: a temp file in the same directory, fsync, rename, fsync of the
//! directory. A missing file starts from safe defaults; a corrupt one is kept
//! aside for inspection and also starts from safe defaults, which are never
//! "active": the core must see the service healthy before it takes anything.
//!
//! `state_dir/lock` is held with an exclusive `flock` for the whole of a pass
//! (or the whole life of a loop), so a cron pass never runs beside another.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sip_ha_core::{Memory, Role};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
/// Bumped when the file's meaning changes incompatibly.
const FORMAT: u32 = 1;

/// The last sync this node ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub at_ms: u64,
    pub ok: bool,
    pub files: u64,
    pub bytes: u64,
    pub error: Option<String>,
}

/// The contents of `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    /// Which node wrote it: a state file copied from the other server is
    /// refused rather than believed.
    pub node: Role,
    /// When it was last written (ms since the epoch).
    pub updated_ms: u64,
    pub memory: Memory,
    pub last_sync: Option<SyncRecord>,
    /// Syncs that failed in a row (for the "sync failing" alert).
    #[serde(default)]
    pub sync_failures: u32,
}

impl State {
    pub fn fresh(node: Role) -> State {
        State {
            format: FORMAT,
            node,
            updated_ms: 0,
            memory: Memory::default(),
            last_sync: None,
            sync_failures: 0,
        }
    }
}

/// How loading went.
#[derive(Debug)]
pub struct Loaded {
    pub state: State,
    /// Set when the file was missing, corrupt or from the other node: what
    /// happened and what was done, for the log and the operator.
    pub notice: Option<String>,
}

/// Create `state_dir` (mode 0700) if it does not exist.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| {
            format!(
                "cannot create the state directory {} (set [cluster] state_dir to a writable place)",
                dir.display()
            )
        })
}

pub fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// Read the state of `node`. Never fails for a bad file: it falls back to
/// fresh, safe state and says why in `notice`. Fails only when the file
/// exists but cannot be read at all (permissions, I/O error).
pub fn load(dir: &Path, node: Role) -> Result<Loaded> {
    let path = state_path(dir);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Ok(Loaded {
                state: State::fresh(node),
                notice: None,
            })
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read the state file {}", path.display()))
        }
    };
    let problem = match serde_json::from_str::<State>(&text) {
        Ok(s) if s.format != FORMAT => format!(
            "state file {} has format {}, this sip-ha reads format {FORMAT}",
            path.display(),
            s.format
        ),
        Ok(s) if s.node != node => format!(
            "state file {} was written by the {}, but this is the {node}",
            path.display(),
            s.node
        ),
        Ok(s) => {
            return Ok(Loaded {
                state: s,
                notice: None,
            })
        }
        Err(e) => format!("state file {} is corrupt ({e})", path.display()),
    };
    let aside = dir.join(format!("{STATE_FILE}.bad-{}", now_ms()));
    let kept = match fs::rename(&path, &aside) {
        Ok(()) => format!("kept it as {}", aside.display()),
        Err(e) => format!("could not move it aside: {e}"),
    };
    Ok(Loaded {
        state: State::fresh(node),
        notice: Some(format!(
            "{problem}; {kept}; starting from safe defaults (standby until the service is seen healthy)"
        )),
    })
}

/// Write the state atomically.
pub fn save(dir: &Path, state: &State) -> Result<()> {
    let mut state = state.clone();
    state.updated_ms = now_ms();
    let json = serde_json::to_vec_pretty(&state).context("cannot encode the state")?;
    write_atomic(&state_path(dir), &json)
}

/// Replace `path` with `bytes` so that a reader sees either the old or the
/// new contents, never a mix, even across a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes).map_err(Into::into))
}

/// [`write_atomic`], with the contents written by `write` (streamed: a
/// large manifest need not be built in memory first).
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {} (is the disk full?)", path.display()))
}

/// The exclusive lock of a pass or loop; released when dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Take the lock without waiting. `Ok(None)` means another pass or loop
/// holds it.
pub fn try_lock(dir: &Path) -> Result<Option<Lock>> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            sweep_stale_temps(dir);
            sweep_stale_temps(&dir.join("sync"));
            Ok(Some(Lock { _file: file }))
        }
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Remove the temp files of [`write_atomic`] (`.NAME.tmp-PID`) in `dir`
/// whose writer is gone (killed between write and rename): the state
/// directory does not collect them. A live writer's are left alone.
/// Best effort: a file that cannot be removed stays for the next time.
fn sweep_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.starts_with('.'))
            .and_then(|n| n.rsplit_once(".tmp-"))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_ha_core::Stance;

    /// A killed writer's temp file goes when the lock is next taken; a live
    /// one's, and other files, stay.
    #[test]
    fn stale_temp_files_are_swept_at_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        // Past pid_max: no such process.
        let dead = dir.path().join(".state.json.tmp-99999999");
        let live = dir
            .path()
            .join(format!(".state.json.tmp-{}", std::process::id()));
        let other = dir.path().join("notes.tmp-1");
        for f in [&dead, &live, &other] {
            fs::write(f, b"x").unwrap();
        }
        let lock = try_lock(dir.path()).unwrap();
        assert!(lock.is_some());
        assert!(!dead.exists(), "a dead writer's temp file stayed");
        assert!(live.exists() && other.exists());
    }

    #[test]
    fn missing_file_gives_fresh_standby_state() {
        let dir = tempfile::tempdir().unwrap();
        let l = load(dir.path(), Role::Master).unwrap();
        assert_eq!(l.state.memory.stance, Stance::Yield);
        assert!(l.notice.is_none());
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::fresh(Role::Slave);
        s.memory.epoch = 7;
        s.memory.stance = Stance::Active;
        save(dir.path(), &s).unwrap();
        let l = load(dir.path(), Role::Slave).unwrap();
        assert_eq!(l.state.memory.epoch, 7);
        assert_eq!(l.state.memory.stance, Stance::Active);
        // No temp file left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn corrupt_file_is_kept_aside_and_never_active() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            state_path(dir.path()),
            b"{\"format\":1,\"node\":\"master\",\"memo",
        )
        .unwrap();
        let l = load(dir.path(), Role::Master).unwrap();
        assert_eq!(l.state.memory.stance, Stance::Yield);
        let notice = l.notice.unwrap();
        assert!(
            notice.contains("corrupt") && notice.contains("safe defaults"),
            "{notice}"
        );
        let kept = fs::read_dir(dir.path()).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("state.json.bad-")
        });
        assert!(kept, "the corrupt file is kept for inspection");
    }

    #[test]
    fn state_of_the_other_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::fresh(Role::Master);
        s.memory.stance = Stance::Active;
        save(dir.path(), &s).unwrap();
        let l = load(dir.path(), Role::Slave).unwrap();
        assert_eq!(l.state.memory.stance, Stance::Yield);
        assert!(l.notice.unwrap().contains("written by the master"));
    }

    #[test]
    fn second_lock_is_refused_while_the_first_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let first = try_lock(dir.path()).unwrap();
        assert!(first.is_some());
        assert!(try_lock(dir.path()).unwrap().is_none());
        drop(first);
        assert!(try_lock(dir.path()).unwrap().is_some());
    }
}
