//! SQLite databases in a sync path (`sqlite = ["astdb.sqlite3"]`): sent as
//! a consistent snapshot, never as the live file.
//!
//! Asterisk writes its astdb at any moment, and in WAL mode the newest
//! rows are not even in the database file but in its `-wal` beside it. A
//! copy of the live file can be half a transaction, or miss what the WAL
//! holds. So for each listed database the sender's scan
//! ([`scan_with`](super::scan::scan_with)) does not hash the live file: it
//! takes a snapshot with SQLite's online backup API (one step, inside one
//! read transaction, so the copy is one committed state of the database,
//! WAL included), checks it (`PRAGMA quick_check`), and describes the
//! database by the snapshot: its size and hash, with the live file's mode
//! and owner, and as mtime the time of the database's last change (the
//! newer of the file's and its WAL's). The sender then reads the snapshot
//! where it would read the live file ([`source_file`]). The `-wal`, `-shm`
//! and `-journal` files are excluded on both sides ([`sibling_excludes`]).
//!
//! A snapshot is taken again only when the database or its WAL changed
//! (their stat is kept beside the snapshot, with its hash), so a quiet run
//! reads nothing. A database that cannot be snapshotted (locked for longer
//! than [`WAIT`], not a database, corrupt) is left out of the run and
//! marked unsettled, so the other side keeps its copy: never a half-written
//! database.
//!
//! Snapshots live in `state_dir/sync/sqlite-<hash of the sync path>/`; each
//! destination (the peer, each `[[sync.target]]`) has its own state
//! directory and so its own snapshots.

use super::chunk;
use super::manifest::{RelPath, Time};
use super::scan::RACY_WINDOW;
use crate::config::SyncPath;
use anyhow::{anyhow, bail, Context, Result};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeSet;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How long a database may stay locked before it is skipped for this run.
pub const WAIT: Duration = Duration::from_secs(5);

/// The files SQLite keeps beside a database; they never travel.
pub const SIBLINGS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// The databases of one sync path, and where their snapshots go.
#[derive(Debug, Clone)]
pub struct Snapshots {
    /// The databases, relative to the sync root.
    pub dbs: BTreeSet<RelPath>,
    /// Where the snapshots are kept.
    pub dir: PathBuf,
}

impl Snapshots {
    /// The snapshots of `sp`'s databases, kept under `state_dir`; `None`
    /// when it lists none.
    pub fn of(sp: &SyncPath, state_dir: &Path) -> Result<Option<Snapshots>> {
        if sp.sqlite.is_empty() {
            return Ok(None);
        }
        let dbs = sp
            .sqlite
            .iter()
            .map(|p| {
                RelPath::from_path(p).with_context(|| {
                    format!(
                        "the sqlite database {} of {}",
                        p.display(),
                        sp.path.display()
                    )
                })
            })
            .collect::<Result<_>>()?;
        Ok(Some(Snapshots {
            dbs,
            dir: snapshot_dir(state_dir, &sp.path),
        }))
    }
}

/// Where the snapshots of the databases of the sync path `sync_path` go.
pub fn snapshot_dir(state_dir: &Path, sync_path: &Path) -> PathBuf {
    let key = blake3::hash(sync_path.as_os_str().as_encoded_bytes());
    state_dir
        .join("sync")
        .join(format!("sqlite-{}", chunk::short_hex(key.as_bytes())))
}

/// The snapshot of the database `rel` in `dir`.
pub fn snapshot_file(dir: &Path, rel: &RelPath) -> PathBuf {
    let key = blake3::hash(rel.as_bytes());
    dir.join(format!("{}.sqlite3", chunk::short_hex(key.as_bytes())))
}

/// The file the sender reads for `rel` of the sync path `sp`: the snapshot
/// for a listed database, else the file itself.
pub fn source_file(sp: &SyncPath, state_dir: &Path, rel: &RelPath) -> PathBuf {
    if sp.sqlite.iter().any(|db| db.as_path() == rel.as_path()) {
        snapshot_file(&snapshot_dir(state_dir, &sp.path), rel)
    } else {
        sp.path.join(rel.as_path())
    }
}

/// Exclude patterns for the `-wal`, `-shm` and `-journal` files of `sp`'s
/// databases.
pub fn sibling_excludes(sp: &SyncPath) -> Vec<String> {
    sp.sqlite
        .iter()
        .flat_map(|db| {
            let escaped = globset::escape(&db.to_string_lossy());
            SIBLINGS.map(|s| format!("{escaped}{s}"))
        })
        .collect()
}

/// A snapshot ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub path: PathBuf,
    pub size: u64,
    pub hash: [u8; 32],
    /// The database's last change (its file's or its WAL's mtime).
    pub mtime: Time,
    /// Whether it was taken this time (else the last one still stands).
    pub taken: bool,
}

/// The stat of a database and its WAL that says whether it changed. Not
/// the ctime: SQLite running as root `fchown`s the WAL whenever it opens
/// it, even to read (which changes the ctime, not the content).
fn state_key(live: &Path) -> Result<(String, Time)> {
    let describe = |md: &fs::Metadata| {
        format!(
            "{} {} {} {}.{}",
            md.dev(),
            md.ino(),
            md.size(),
            md.mtime(),
            md.mtime_nsec()
        )
    };
    let db = fs::metadata(live).with_context(|| format!("cannot stat {}", live.display()))?;
    let mut key = describe(&db);
    let mut changed = Time::new(db.mtime(), db.mtime_nsec());
    let mut wal = live.as_os_str().to_owned();
    wal.push("-wal");
    match fs::metadata(&wal) {
        // An empty WAL holds nothing (a reader, this one too, may create it).
        Ok(md) if md.len() == 0 => key.push_str("; empty wal"),
        Ok(md) => {
            key.push_str("; wal ");
            key.push_str(&describe(&md));
            changed = changed.max(Time::new(md.mtime(), md.mtime_nsec()));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => key.push_str("; no wal"),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot stat {}", Path::new(&wal).display()))
        }
    }
    Ok((key, changed))
}

/// What is kept beside a snapshot: the database's state it was taken from,
/// and the snapshot's size, mtime and hash.
struct Record {
    key: String,
    size: u64,
    mtime: Time,
    hash: [u8; 32],
}

impl Record {
    fn file(snapshot: &Path) -> PathBuf {
        let mut p = snapshot.as_os_str().to_owned();
        p.push(".state");
        PathBuf::from(p)
    }

    fn to_text(&self) -> String {
        format!(
            "{}\n{} {}.{}\n{}\n",
            self.key,
            self.size,
            self.mtime.secs,
            self.mtime.nanos,
            hex(&self.hash)
        )
    }

    fn parse(text: &str) -> Option<Record> {
        let mut lines = text.lines();
        let key = lines.next()?.to_string();
        let (size, mtime) = lines.next()?.split_once(' ')?;
        let (secs, nanos) = mtime.split_once('.')?;
        let hash_hex = lines.next()?;
        let mut hash = [0u8; 32];
        if hash_hex.len() != 64 {
            return None;
        }
        for (i, b) in hash.iter_mut().enumerate() {
            *b = u8::from_str_radix(hash_hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Record {
            key,
            size: size.parse().ok()?,
            mtime: Time::new(secs.parse().ok()?, nanos.parse().ok()?),
            hash,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The snapshot of the live database `live` at `snapshot`: the last one if
/// the database has not changed since, else a new one. `now` is the scan's
/// clock: a database changed within [`RACY_WINDOW`] of it is snapshotted
/// again next time whatever its stat says.
pub fn take(live: &Path, snapshot: &Path, now: SystemTime) -> Result<Snapshot> {
    let record_file = Record::file(snapshot);
    let (key, changed) = state_key(live)?;
    if let Some(r) = fs::read_to_string(&record_file)
        .ok()
        .and_then(|t| Record::parse(&t))
    {
        let same_snapshot = fs::symlink_metadata(snapshot).is_ok_and(|md| {
            md.is_file() && md.size() == r.size && Time::new(md.mtime(), md.mtime_nsec()) == r.mtime
        });
        if r.key == key && same_snapshot {
            return Ok(Snapshot {
                path: snapshot.to_path_buf(),
                size: r.size,
                hash: r.hash,
                mtime: r.mtime,
                taken: false,
            });
        }
    }
    // The record goes first: a crash below must not leave an old record
    // beside a new snapshot.
    match fs::remove_file(&record_file) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot remove {}", record_file.display()))
        }
    }
    let dir = snapshot
        .parent()
        .ok_or_else(|| anyhow!("the snapshot {} has no directory", snapshot.display()))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let temp = with_suffix(snapshot, ".tmp");
    remove_with_siblings(&temp)?;
    let result = backup(live, &temp);
    if let Err(e) = result {
        remove_with_siblings(&temp)?;
        return Err(e);
    }
    let (size, hash) = finish(&temp, changed)?;
    fs::rename(&temp, snapshot)
        .with_context(|| format!("cannot rename {} to {}", temp.display(), snapshot.display()))?;
    let racy = changed >= Time::from_system(now).minus(RACY_WINDOW);
    if !racy {
        let record = Record {
            key,
            size,
            mtime: changed,
            hash,
        };
        write_atomic(&record_file, record.to_text().as_bytes())?;
    }
    Ok(Snapshot {
        path: snapshot.to_path_buf(),
        size,
        hash,
        mtime: changed,
        taken: true,
    })
}

/// Copy the database `live` into the new file `to`, in one backup step (one
/// read transaction: a consistent state), then check the copy.
fn backup(live: &Path, to: &Path) -> Result<()> {
    let src = Connection::open_with_flags(
        live,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open the database {}", live.display()))?;
    src.busy_timeout(Duration::from_millis(500))
        .context("cannot set a busy timeout")?;
    let mut dst = Connection::open_with_flags(
        to,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot create the snapshot {}", to.display()))?;
    {
        let started = Instant::now();
        let b = Backup::new(&src, &mut dst)
            .with_context(|| format!("cannot start a backup of {}", live.display()))?;
        loop {
            // All pages in one step: one read transaction, so the copy is
            // one committed state however busy the writers are.
            match b
                .step(-1)
                .with_context(|| format!("the backup of {} failed", live.display()))?
            {
                StepResult::Done => break,
                StepResult::More | StepResult::Busy | StepResult::Locked
                    if started.elapsed() < WAIT =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => bail!(
                    "{} stayed locked for more than {} s: not sent this run",
                    live.display(),
                    WAIT.as_secs()
                ),
            }
        }
    }
    let check: String = dst
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .with_context(|| format!("cannot check the snapshot of {}", live.display()))?;
    if check != "ok" {
        bail!(
            "the snapshot of {} fails SQLite's quick_check ({check}): the database may be \
             corrupt; not sent",
            live.display()
        );
    }
    dst.close()
        .map_err(|(_, e)| e)
        .with_context(|| format!("cannot close the snapshot {}", to.display()))?;
    Ok(())
}

/// Make the finished copy private, give it the database's last change as
/// mtime, flush it; its size and hash.
fn finish(temp: &Path, changed: Time) -> Result<(u64, [u8; 32])> {
    fs::set_permissions(temp, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("cannot set the mode of {}", temp.display()))?;
    let ts = nix::sys::time::TimeSpec::new(changed.secs, i64::from(changed.nanos));
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        temp,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("cannot set the mtime of {}", temp.display()))?;
    let mut file =
        fs::File::open(temp).with_context(|| format!("cannot open {}", temp.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot flush {}", temp.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", temp.display())),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, *hasher.finalize().as_bytes()))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Remove `path` and the files SQLite may have left beside it.
fn remove_with_siblings(path: &Path) -> Result<()> {
    let all =
        std::iter::once(path.to_path_buf()).chain(SIBLINGS.iter().map(|s| with_suffix(path, s)));
    for p in all {
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", p.display())),
        }
    }
    Ok(())
}

/// Write `path` whole or not at all.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let temp = with_suffix(path, ".tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", temp.display()))?;
    fs::rename(&temp, path).with_context(|| format!("cannot rename {}", temp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(path: &Path, rows: u32) -> Connection {
        let c = Connection::open(path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT);",
        )
        .unwrap();
        for i in 0..rows {
            c.execute("INSERT INTO t (v) VALUES (?1)", [format!("row {i}")])
                .unwrap();
        }
        c
    }

    fn rows(path: &Path) -> u32 {
        let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_snapshot_holds_what_the_wal_holds_and_is_reused_until_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("astdb.sqlite3");
        let snap = dir.path().join("snaps/x.sqlite3");
        // Kept open, so the rows stay in the WAL, not in the file.
        let writer = db(&live, 10);
        writer
            .execute_batch("PRAGMA wal_autocheckpoint=0;")
            .unwrap();
        assert!(with_suffix(&live, "-wal").exists());
        let later = SystemTime::now() + Duration::from_secs(60);
        let s = take(&live, &snap, later).unwrap();
        assert!(s.taken);
        assert_eq!(rows(&snap), 10);
        assert_eq!(s.size, fs::metadata(&snap).unwrap().len());
        assert_eq!(s.hash, *blake3::hash(&fs::read(&snap).unwrap()).as_bytes());
        let again = take(&live, &snap, later).unwrap();
        assert!(!again.taken, "unchanged: the last snapshot stands");
        assert_eq!(again.hash, s.hash);

        writer
            .execute("INSERT INTO t (v) VALUES ('more')", [])
            .unwrap();
        let s2 = take(&live, &snap, later).unwrap();
        assert!(s2.taken);
        assert_eq!(rows(&snap), 11);
        assert!(s2.mtime >= s.mtime);
        // Changed within the racy window: no record is kept, so it is taken
        // again next time even though its stat did not change.
        writer
            .execute("INSERT INTO t (v) VALUES ('again')", [])
            .unwrap();
        let now = SystemTime::now();
        assert!(take(&live, &snap, now).unwrap().taken);
        assert!(!Record::file(&snap).exists());
        assert!(take(&live, &snap, now).unwrap().taken);
        assert_eq!(rows(&snap), 12);
    }

    #[test]
    fn not_a_database_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("astdb.sqlite3");
        fs::write(&live, vec![7u8; 8192]).unwrap();
        let snap = dir.path().join("s/x.sqlite3");
        let e = take(&live, &snap, SystemTime::now()).unwrap_err();
        assert!(format!("{e:#}").contains("not a database"), "{e:#}");
        assert!(!snap.exists());
        assert_eq!(fs::read_dir(dir.path().join("s")).unwrap().count(), 0);
    }

    #[test]
    fn records_round_trip() {
        let r = Record {
            key: "1 2 3 4.5; no wal".into(),
            size: 4096,
            mtime: Time::new(1_700_000_000, 123),
            hash: [0xab; 32],
        };
        let back = Record::parse(&r.to_text()).unwrap();
        assert_eq!(
            (back.key, back.size, back.mtime, back.hash),
            (r.key, r.size, r.mtime, r.hash)
        );
        assert!(Record::parse("junk").is_none());
    }

    #[test]
    fn the_sender_reads_the_snapshot_of_a_listed_database_only() {
        let sp = SyncPath {
            path: "/var/lib/asterisk".into(),
            exclude: vec![],
            delete: true,
            max_file_size: None,
            sqlite: vec!["astdb.sqlite3".into()],
        };
        let state = Path::new("/var/lib/sip-ha");
        let db = RelPath::new(b"astdb.sqlite3").unwrap();
        let other = RelPath::new(b"other.sqlite3").unwrap();
        assert!(source_file(&sp, state, &db).starts_with(state));
        assert_eq!(
            source_file(&sp, state, &other),
            Path::new("/var/lib/asterisk/other.sqlite3")
        );
        assert_eq!(
            sibling_excludes(&sp),
            [
                "astdb.sqlite3-wal",
                "astdb.sqlite3-shm",
                "astdb.sqlite3-journal"
            ]
        );
    }
}
