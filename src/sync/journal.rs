//! The change journal: what changed under each sync path since its last
//! scan began, as the resident loop's watch saw it, so that the next scan
//! lists only the directories whose listing changed
//! ([`ScanOptions::relist`]) and reads only the files whose content or
//! metadata did ([`ScanOptions::refresh`]) instead of stat'ing every file
//! of a 100,000-file tree.
//!
//! The rule that keeps this exact: a scan may trust its previous manifest
//! for a directory only if the journal *tracked* the path without a gap
//! since that manifest's scan began. So:
//!
//! * A journal starts [`Tracking::Unknown`] for each path: the first scan
//!   is full. [`Journal::take`] at each scan's start hands over what was
//!   noted and starts a new, empty record, so every event after that
//!   moment is kept for the next scan (an event of a change made just
//!   before it, still in the kernel's queue, lands in the next record too:
//!   that change is found by the next push, which the same event starts).
//! * A lapse (the kernel's queue overflowed, the watch failed), a path
//!   that cannot be named, or too many directories puts a path back to
//!   `Unknown`. So does a scan whose result was not saved
//!   ([`Journal::forget`]): the manifest on disk is then older than the
//!   record.
//! * A journal belongs to one watch: a watch started afresh has a fresh
//!   journal.
//! * A directory that appears (made, or moved in) is watched only a moment
//!   after its event is told (notify adds the new watch after handing over
//!   the batch of events), and what is written in it meanwhile raises no
//!   event. So a record is trusted only if it began [`SETTLE`] after the
//!   last directory appeared ([`Journal::note_new_dir`]); scans before that
//!   read everything. Directories appear seldom in a PBX's trees (a new
//!   mailbox, a day's recordings folder).
//!
//! A scan run by anything else (a handover push, `--verify`) reads the
//! whole tree and saves a manifest at least as fresh as the record's
//! start, so the record still covers everything since (it may name more
//! directories than needed, never fewer). Changes no watch sees (a file
//! written through mmap, a network file system written from another host)
//! are found by the full check every `sync.interval`.
//!
//! It also keeps, per path, the token of the last push whose session the
//! standby opened, for the standby to trust its own manifest (see
//! "Trusted sessions" in [`session`](mod@super::session)).
//!
//! Pure bookkeeping, no I/O: the watch feeds it paths, the push reads it.

use super::manifest::RelPath;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after a directory appears its watch is surely in place.
pub const SETTLE: Duration = Duration::from_secs(5);

/// More noted paths than this and a full scan is about as cheap (and the
/// record's memory stays bounded).
pub const MAX_NOTED: usize = 16_384;

/// What a scan of one path may skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relist {
    /// Read everything: nothing is known.
    Full,
    /// Only these changed since the previous scan began: the listings of
    /// `dirs`, and the content or metadata of `paths`.
    Only {
        dirs: BTreeSet<RelPath>,
        paths: BTreeSet<RelPath>,
    },
}

/// One path's record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tracking {
    /// Not tracked since the last scan began.
    Unknown,
    /// Tracked since the last scan began (`at`): these changed. Without
    /// a gap if `at` is past `sure_from`.
    Since {
        dirs: BTreeSet<RelPath>,
        paths: BTreeSet<RelPath>,
        at: Instant,
        sure_from: Option<Instant>,
    },
}

/// What a change touched.
#[derive(Debug, Clone, Copy)]
enum Noted {
    /// Its directory's listing (and itself).
    Listing,
    /// Only itself.
    Content,
}

/// The records of every watched sync path. Shared by the watch's event
/// thread and the pushes, so it locks inside.
#[derive(Debug)]
pub struct Journal {
    paths: Mutex<HashMap<PathBuf, Tracking>>,
    /// Per path, the token of the last push whose session the standby
    /// opened: it keeps its manifest under that token (see
    /// `Request::SyncRoot`'s `trust`).
    sessions: Mutex<HashMap<PathBuf, u64>>,
}

impl Journal {
    /// A journal for these sync paths, each `Unknown`.
    pub fn new<'a>(roots: impl IntoIterator<Item = &'a Path>) -> Journal {
        let paths = roots
            .into_iter()
            .map(|r| (r.to_path_buf(), Tracking::Unknown))
            .collect();
        Journal {
            paths: Mutex::new(paths),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The standby opened the session of the push `token` for `root`.
    pub fn session_opened(&self, root: &Path, token: u64) {
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        s.insert(root.to_path_buf(), token);
    }

    /// The token of the last push of `root` whose session the standby
    /// opened, if any.
    pub fn last_session(&self, root: &Path) -> Option<u64> {
        let s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        s.get(root).copied()
    }

    /// Something at `path` (absolute) appeared, went or was renamed (or
    /// the watch cannot tell what happened): its directory's listing and
    /// its own entry. If it is a directory, what is in it too: it is
    /// listed, which costs little if it is not one.
    pub fn note(&self, path: &Path) {
        self.note_at(path, Noted::Listing, None);
    }

    /// The file at `path` was written to, or its metadata changed: only
    /// its own entry (its directory's listing is the same).
    pub fn note_content(&self, path: &Path) {
        self.note_at(path, Noted::Content, None);
    }

    /// A directory appeared at `path` (made, or moved in), at `now`: as
    /// [`note`](Self::note), and no record is trusted until one begins
    /// [`SETTLE`] later.
    pub fn note_new_dir(&self, path: &Path, now: Instant) {
        self.note_at(path, Noted::Listing, Some(now + SETTLE));
    }

    fn note_at(&self, path: &Path, what: Noted, sure_from: Option<Instant>) {
        let mut paths = self.lock();
        for (root, tracking) in paths.iter_mut() {
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let Tracking::Since {
                dirs,
                paths,
                sure_from: sure,
                ..
            } = tracking
            else {
                return;
            };
            if sure_from.is_some() {
                *sure = sure_from.max(*sure);
            }
            match RelPath::from_path(rel) {
                Ok(rel) => {
                    match what {
                        Noted::Listing => {
                            if let Some(parent) = rel.parent() {
                                dirs.insert(parent);
                            }
                            dirs.insert(rel);
                        }
                        Noted::Content => {
                            paths.insert(rel);
                        }
                    }
                    if dirs.len() + paths.len() > MAX_NOTED {
                        *tracking = Tracking::Unknown;
                    }
                }
                // Cannot be named to the scan: read all of it next time.
                Err(_) => *tracking = Tracking::Unknown,
            }
            return;
        }
    }

    /// Events were lost: nothing is known of any path.
    pub fn lapse(&self) {
        for tracking in self.lock().values_mut() {
            *tracking = Tracking::Unknown;
        }
    }

    /// A scan of `root` begins at `now`: what it may skip. The record
    /// starts afresh from now. A path the journal does not know is read in
    /// full.
    pub fn take(&self, root: &Path, now: Instant) -> Relist {
        let mut paths = self.lock();
        let Some(tracking) = paths.get_mut(root) else {
            return Relist::Full;
        };
        let mut sure_from = None;
        let relist = match std::mem::replace(tracking, Tracking::Unknown) {
            Tracking::Unknown => Relist::Full,
            Tracking::Since {
                dirs,
                paths,
                at,
                sure_from: sure,
            } => {
                // Still settling: the next record may not be whole either.
                sure_from = sure.filter(|s| *s > now);
                if sure.is_some_and(|s| at < s) {
                    Relist::Full
                } else {
                    Relist::Only { dirs, paths }
                }
            }
        };
        *tracking = Tracking::Since {
            dirs: BTreeSet::new(),
            paths: BTreeSet::new(),
            at: now,
            sure_from,
        };
        relist
    }

    /// The scan of `root` that took the record did not save its result:
    /// the next one reads everything.
    pub fn forget(&self, root: &Path) {
        if let Some(tracking) = self.lock().get_mut(root) {
            *tracking = Tracking::Unknown;
        }
    }

    /// A poisoned lock only means a panic elsewhere: the worst the record
    /// can be is `Unknown`-worthy, so a poisoned journal forgets all.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Tracking>> {
        self.paths.lock().unwrap_or_else(|e| {
            let mut g = e.into_inner();
            for t in g.values_mut() {
                *t = Tracking::Unknown;
            }
            g
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::from_path(Path::new(s)).unwrap()
    }

    fn dirs(list: &[&str]) -> Relist {
        only(list, &[])
    }

    fn only(dirs: &[&str], paths: &[&str]) -> Relist {
        Relist::Only {
            dirs: dirs.iter().map(|s| rel(s)).collect(),
            paths: paths.iter().map(|s| rel(s)).collect(),
        }
    }

    fn journal() -> Journal {
        Journal::new([Path::new("/etc/asterisk"), Path::new("/var/spool/asterisk")])
    }

    #[test]
    fn the_first_scan_is_full_and_later_ones_list_what_changed() {
        let (j, t) = (journal(), Instant::now());
        let etc = Path::new("/etc/asterisk");
        // Changes before any scan are not trusted: the watch may have
        // missed some while it was set up.
        j.note(Path::new("/etc/asterisk/sip.conf"));
        assert_eq!(j.take(etc, t), Relist::Full);
        assert_eq!(j.take(etc, t), dirs(&[]));
        j.note(Path::new("/etc/asterisk/sip.conf"));
        j.note(Path::new(
            "/var/spool/asterisk/voicemail/default/1000/INBOX/msg0001.wav",
        ));
        assert_eq!(
            j.take(etc, t),
            dirs(&["", "sip.conf"]),
            "the root's listing and the entry itself"
        );
        assert_eq!(
            j.take(Path::new("/var/spool/asterisk"), t),
            Relist::Full,
            "this path's first scan"
        );
        assert_eq!(j.take(etc, t), dirs(&[]), "taken");
        // A file written to, or chmod'ed: only itself is read again.
        j.note_content(Path::new("/etc/asterisk/sip.conf"));
        j.note_content(Path::new("/etc/asterisk/pjsip.d"));
        assert_eq!(
            j.take(etc, t),
            only(&[], &["pjsip.d", "sip.conf"]),
            "the entries themselves, not the root's listing"
        );
    }

    #[test]
    fn paths_elsewhere_are_ignored_and_unknown_roots_are_full() {
        let (j, t) = (journal(), Instant::now());
        j.take(Path::new("/etc/asterisk"), t);
        j.note(Path::new("/etc/asteriskx/sip.conf"));
        j.note(Path::new("/tmp/x"));
        assert_eq!(j.take(Path::new("/etc/asterisk"), t), dirs(&[]));
        assert_eq!(j.take(Path::new("/srv/other"), t), Relist::Full);
    }

    #[test]
    fn a_lapse_a_failed_scan_or_too_much_makes_the_next_scan_full() {
        let (j, t) = (journal(), Instant::now());
        let root = Path::new("/var/spool/asterisk");
        j.take(root, t);
        j.note(Path::new("/var/spool/asterisk/a/b"));
        j.lapse();
        assert_eq!(j.take(root, t), Relist::Full, "after a lapse");
        assert_eq!(j.take(root, t), dirs(&[]));
        j.forget(root);
        assert_eq!(j.take(root, t), Relist::Full, "after a scan not saved");
        for i in 0..=MAX_NOTED {
            j.note(&root.join(format!("d{i}/f")));
        }
        assert_eq!(j.take(root, t), Relist::Full, "more than MAX_NOTED");
        j.note(Path::new("/var/spool/asterisk/a/../b"));
        assert_eq!(j.take(root, t), Relist::Full, "a path that cannot be named");
    }

    #[test]
    fn records_begun_before_a_new_directory_settles_are_not_trusted() {
        let (j, t) = (journal(), Instant::now());
        let root = Path::new("/var/spool/asterisk");
        j.take(root, t);
        let day = Path::new("/var/spool/asterisk/monitor/2026/12/05");
        j.note_new_dir(day, t + Duration::from_secs(1));
        // Begun before the directory appeared: full.
        assert_eq!(j.take(root, t + Duration::from_secs(2)), Relist::Full);
        // Begun (at 2 s) before its watch surely was in place (at 6 s):
        // full again, however late it is taken.
        assert_eq!(j.take(root, t + Duration::from_secs(60)), Relist::Full);
        // Begun at 60 s: whole.
        j.note(&day.join("call.wav"));
        assert_eq!(
            j.take(root, t + Duration::from_secs(61)),
            dirs(&["monitor/2026/12/05", "monitor/2026/12/05/call.wav"])
        );
    }
}
