//! The active loop's watch on the `[[sync.path]]`s: a change is pushed at
//! once instead of at the next `sync.interval`.
//!
//! inotify (through `notify`) reports every change under each path. The
//! events are filtered ([`Roots::classify`]): reads and opens (the scan's
//! own, among others) and paths a push would not send (the path's
//! excludes, sync's temp, trash and conflict names) are dropped. What is
//! left goes into a [`Debounce`]: a push is due [`QUIET`] after the last
//! change of a burst (an editor's save is several events), or [`MAX_WAIT`]
//! after its first change if the writes never stop.
//!
//! A lapse in the events (the kernel's queue overflowed, or notify reports
//! an error) asks for a push too, logged: a push compares whole trees, so
//! it finds whatever the lost events were about. Running out of inotify
//! watches (`fs.inotify.max_user_watches`) is different: the watch would
//! silently miss whole directories, so it is given up, with one warning,
//! and pushes come every `sync.interval` only.
//!
//! Each change is also noted in the watch's [`Journal`], so that the push
//! it starts scans only the directories that changed (see
//! [`journal`](mod@crate::sync::journal)).

use crate::config::SyncPath;
use crate::sync::journal::Journal;
use anyhow::{anyhow, Result};
use globset::GlobSet;
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// A push is due this long after the last change of a burst.
pub const QUIET: std::time::Duration = std::time::Duration::from_millis(150);

/// ...or this long after the first change, if changes keep coming.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What the operator reads when the watches run out.
pub fn limit_message(paths: &[SyncPath]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.path.display().to_string()).collect();
    format!(
        "cannot watch {} for changes: the inotify watches ran out \
         (raise the sysctl fs.inotify.max_user_watches, e.g. in /etc/sysctl.d/); \
         until sip-ha is restarted or reloaded, changes are pushed every sync.interval only",
        names.join(", ")
    )
}

/// Why a push is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Files changed: the first path seen, and how many events came.
    Changed { first: PathBuf, events: u64 },
    /// Events were lost (the reason): push, since anything may have changed.
    Lapse(String),
}

/// The watch's news for the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum News {
    /// Push now.
    Push(Due),
    /// A watched root itself was removed or moved: push (the push says
    /// whether the source is still there), then watch it afresh.
    RootGone,
    /// The inotify watches ran out ([`limit_message`]): pushes come every
    /// `sync.interval` only.
    Limit,
}

/// One event, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Nothing a push would send.
    Ignore,
    Change(PathBuf),
    RootGone,
    Lapse(String),
    /// The inotify watches ran out.
    Limit,
}

/// When a push is due, from the changes seen: pure, so the timing can be
/// tested without a file system.
#[derive(Debug, Default)]
pub struct Debounce {
    first: Option<Instant>,
    last: Option<Instant>,
    first_path: Option<PathBuf>,
    events: u64,
    lapse: Option<String>,
    root_gone: bool,
}

impl Debounce {
    pub fn change(&mut self, now: Instant, path: &Path) {
        if self.first_path.is_none() {
            self.first_path = Some(path.to_path_buf());
        }
        self.seen(now);
    }

    fn seen(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.events += 1;
    }

    /// Events were lost: due at once.
    pub fn lapse(&mut self, now: Instant, why: String) {
        self.seen(now);
        self.lapse.get_or_insert(why);
    }

    pub fn root_gone(&mut self, now: Instant) {
        self.seen(now);
        self.root_gone = true;
    }

    /// When the pending changes are due, if there are any.
    pub fn due(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        if self.lapse.is_some() || self.root_gone {
            return Some(first);
        }
        Some((last + QUIET).min(first + MAX_WAIT))
    }

    /// The news, if it is due at `now`; the debounce starts afresh.
    pub fn take(&mut self, now: Instant) -> Option<News> {
        if self.due()? > now {
            return None;
        }
        let taken = std::mem::take(self);
        Some(if taken.root_gone {
            News::RootGone
        } else if let Some(why) = taken.lapse {
            News::Push(Due::Lapse(why))
        } else {
            News::Push(Due::Changed {
                first: taken.first_path.unwrap_or_default(),
                events: taken.events,
            })
        })
    }
}

/// The watched roots and what each leaves out.
pub struct Roots {
    roots: Vec<(PathBuf, GlobSet)>,
}

impl Roots {
    pub fn new(paths: &[SyncPath]) -> Result<Roots> {
        let roots = paths
            .iter()
            .map(|p| Ok((p.path.clone(), crate::sync::session::excludes(p)?)))
            .collect::<Result<_>>()?;
        Ok(Roots { roots })
    }

    /// Whether a change at `path` would be sent by a push.
    fn relevant(&self, path: &Path) -> Option<Signal> {
        for (root, excludes) in &self.roots {
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            if rel.as_os_str().is_empty() {
                return Some(Signal::RootGone);
            }
            // The scan leaves out a directory that matches, and so all below.
            let mut prefix = PathBuf::new();
            for part in rel.components() {
                prefix.push(part);
                if excludes.is_match(&prefix) {
                    return None;
                }
            }
            return Some(Signal::Change(path.to_path_buf()));
        }
        None
    }

    /// Sort one event from notify.
    pub fn classify(&self, event: &notify::Result<Event>) -> Signal {
        let event = match event {
            Ok(e) => e,
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => return Signal::Limit,
            Err(e) => return Signal::Lapse(format!("the watch reported an error: {e}")),
        };
        if event.need_rescan() {
            return Signal::Lapse("the kernel's event queue overflowed".into());
        }
        let writes = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        };
        if !writes {
            return Signal::Ignore;
        }
        let mut out = Signal::Ignore;
        for p in &event.paths {
            match self.relevant(p) {
                Some(Signal::RootGone) => {
                    // Only its removal or move loses the watch.
                    if matches!(
                        event.kind,
                        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                    ) {
                        return Signal::RootGone;
                    }
                    out = Signal::Change(p.clone());
                }
                Some(s) if out == Signal::Ignore => out = s,
                _ => {}
            }
        }
        out
    }
}

/// What the event thread and the loop share.
struct Shared {
    debounce: Mutex<Debounce>,
    journal: Arc<Journal>,
    /// The watches ran out.
    limit: std::sync::atomic::AtomicBool,
    wake: tokio::sync::Notify,
}

/// A running watch on every sync path. Dropping it stops it.
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
    shared: Arc<Shared>,
}

/// Why a watch could not start.
#[derive(Debug)]
pub enum StartError {
    /// The inotify watches ran out ([`limit_message`] of these paths).
    Limit(Vec<SyncPath>),
    Other(anyhow::Error),
}

impl Watch {
    /// Watch every path in `paths`, recursively.
    pub fn start(paths: &[SyncPath]) -> Result<Watch, StartError> {
        let roots = Roots::new(paths).map_err(StartError::Other)?;
        let journal = Journal::new(paths.iter().map(|p| p.path.as_path()));
        let shared = Arc::new(Shared {
            debounce: Mutex::new(Debounce::default()),
            journal: Arc::new(journal),
            limit: Default::default(),
            wake: tokio::sync::Notify::new(),
        });
        let theirs = shared.clone();
        let handler = move |event: notify::Result<Event>| {
            let now = Instant::now();
            let signal = roots.classify(&event);
            // Into the journal first: the push this starts must see it.
            match (&signal, &event) {
                (Signal::Ignore, _) => {}
                (Signal::Change(_), Ok(event)) => note(&theirs.journal, event, now.into_std()),
                _ => theirs.journal.lapse(),
            }
            let mut d = lock(&theirs.debounce);
            match signal {
                Signal::Ignore => return,
                Signal::Change(p) => d.change(now, &p),
                Signal::RootGone => d.root_gone(now),
                Signal::Lapse(why) => d.lapse(now, why),
                Signal::Limit => theirs.limit.store(true, Ordering::Relaxed),
            }
            drop(d);
            theirs.wake.notify_one();
        };
        let mut watcher = notify::recommended_watcher(handler)
            .map_err(|e| StartError::Other(anyhow!("cannot start watching the sync paths: {e}")))?;
        for p in paths {
            if let Err(e) = watcher.watch(&p.path, RecursiveMode::Recursive) {
                return Err(match e.kind {
                    notify::ErrorKind::MaxFilesWatch => StartError::Limit(paths.to_vec()),
                    _ => StartError::Other(anyhow!("cannot watch {}: {e}", p.path.display())),
                });
            }
        }
        Ok(Watch {
            _watcher: watcher,
            shared,
        })
    }

    /// What this watch saw change, for the pushes' scans.
    pub fn journal(&self) -> Arc<Journal> {
        self.shared.journal.clone()
    }

    /// Wait for the next news. Cancel-safe: what was seen stays in the
    /// debounce until taken.
    pub async fn next(&self) -> News {
        loop {
            if self.shared.limit.load(Ordering::Relaxed) {
                return News::Limit;
            }
            let due = {
                let mut d = lock(&self.shared.debounce);
                if let Some(news) = d.take(Instant::now()) {
                    return news;
                }
                d.due()
            };
            match due {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.shared.wake.notified() => {}
                    }
                }
                None => self.shared.wake.notified().await,
            }
        }
    }
}

/// Note a change in the journal. A directory that appeared (made, or a
/// name moved in that is one now) is noted as such: its own watch is added
/// only after this.
fn note(journal: &Journal, event: &Event, now: std::time::Instant) {
    let new_dir = |p: &Path| match event.kind {
        EventKind::Create(CreateKind::Folder) => true,
        EventKind::Modify(ModifyKind::Name(_)) => {
            std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
        }
        _ => false,
    };
    // Written to, or new metadata: the entry alone, its directory's
    // listing is the same. Anything else (made, removed, renamed, or an
    // event notify cannot name) may change the listing.
    let content = matches!(
        event.kind,
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Metadata(_))
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    );
    for p in &event.paths {
        if new_dir(p) {
            journal.note_new_dir(p, now);
        } else if content {
            journal.note_content(p);
        } else {
            journal.note(p);
        }
    }
}

/// A poisoned lock only means a panic elsewhere: the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, MetadataKind, RemoveKind};
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn changed(first: &str, events: u64) -> Option<News> {
        Some(News::Push(Due::Changed {
            first: first.into(),
            events,
        }))
    }

    #[test]
    fn a_burst_is_one_push_after_it_goes_quiet() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        assert_eq!(d.take(t0), None, "nothing seen");
        d.change(t0, Path::new("/a/x.swp"));
        d.change(t0 + ms(50), Path::new("/a/x"));
        d.change(t0 + ms(100), Path::new("/a/x"));
        assert_eq!(d.due(), Some(t0 + ms(100) + QUIET));
        assert_eq!(d.take(t0 + ms(100) + QUIET - ms(1)), None);
        assert_eq!(d.take(t0 + ms(100) + QUIET), changed("/a/x.swp", 3));
        assert_eq!(d.due(), None, "taken: starts afresh");
        d.change(t0 + ms(500), Path::new("/a/y"));
        assert_eq!(d.take(t0 + ms(500) + QUIET), changed("/a/y", 1));
    }

    #[test]
    fn endless_writes_still_push_after_max_wait() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        let mut t = t0;
        let mut n = 0;
        while t < t0 + MAX_WAIT + MAX_WAIT {
            d.change(t, Path::new("/rec/call.wav"));
            t += QUIET / 2;
            n += 1;
        }
        assert_eq!(d.due(), Some(t0 + MAX_WAIT));
        assert_eq!(d.take(t0 + MAX_WAIT), changed("/rec/call.wav", n));
    }

    #[test]
    fn a_lapse_is_due_at_once_and_a_lost_root_wins() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        d.change(t0, Path::new("/a/x"));
        d.lapse(t0 + ms(10), "overflow".into());
        d.change(t0 + ms(20), Path::new("/a/y"));
        assert!(d.due().is_some_and(|at| at <= t0 + ms(20)));
        assert_eq!(
            d.take(t0 + ms(20)),
            Some(News::Push(Due::Lapse("overflow".into())))
        );
        d.root_gone(t0 + ms(30));
        d.lapse(t0 + ms(30), "again".into());
        assert_eq!(d.take(t0 + ms(30)), Some(News::RootGone));
    }

    fn roots() -> Roots {
        Roots::new(&[SyncPath {
            path: "/etc/asterisk".into(),
            exclude: vec!["*.swp".into(), "tmp".into()],
            delete: true,
            max_file_size: None,
            sqlite: Vec::new(),
        }])
        .unwrap()
    }

    fn ev(kind: EventKind, path: &str) -> notify::Result<Event> {
        Ok(Event::new(kind).add_path(path.into()))
    }

    #[test]
    fn writes_under_a_root_count_and_reads_and_excludes_do_not() {
        let r = roots();
        let change = |p: &str| Signal::Change(p.into());
        let modify = EventKind::Modify(ModifyKind::Any);
        let close_write = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let close_read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let attrib = EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any));
        let temp = format!("/etc/asterisk/x{}1", crate::sync::receive::TEMP_MARKER);
        for (event, want) in [
            (
                ev(modify, "/etc/asterisk/sip.conf"),
                change("/etc/asterisk/sip.conf"),
            ),
            (
                ev(EventKind::Create(CreateKind::File), "/etc/asterisk/a/b"),
                change("/etc/asterisk/a/b"),
            ),
            (
                ev(EventKind::Remove(RemoveKind::File), "/etc/asterisk/x"),
                change("/etc/asterisk/x"),
            ),
            (
                ev(close_write, "/etc/asterisk/x"),
                change("/etc/asterisk/x"),
            ),
            (ev(attrib, "/etc/asterisk"), change("/etc/asterisk")),
            (ev(close_read, "/etc/asterisk/x"), Signal::Ignore),
            (ev(open, "/etc/asterisk/x"), Signal::Ignore),
            (ev(modify, "/etc/asterisk/.sip.conf.swp"), Signal::Ignore),
            (ev(modify, "/etc/asterisk/tmp/x/y"), Signal::Ignore),
            (ev(modify, "/etc/asterisk/.sip-ha-trash/a"), Signal::Ignore),
            (
                ev(modify, "/etc/asterisk/sip.conf.sip-ha-conflict-slave-1"),
                Signal::Ignore,
            ),
            (ev(modify, &temp), Signal::Ignore),
            (ev(modify, "/etc/asteriskx/sip.conf"), Signal::Ignore),
            (
                ev(EventKind::Remove(RemoveKind::Folder), "/etc/asterisk"),
                Signal::RootGone,
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(notify::event::RenameMode::From)),
                    "/etc/asterisk",
                ),
                Signal::RootGone,
            ),
        ] {
            assert_eq!(r.classify(&event), want, "{event:?}");
        }
        // A rename from an excluded name to a real one counts.
        let rename = Ok(Event::new(EventKind::Modify(ModifyKind::Name(
            notify::event::RenameMode::Both,
        )))
        .add_path("/etc/asterisk/.x.swp".into())
        .add_path("/etc/asterisk/x".into()));
        assert_eq!(r.classify(&rename), change("/etc/asterisk/x"));
    }

    #[test]
    fn overflow_errors_and_the_watch_limit_are_told_apart() {
        let r = roots();
        let overflow = Ok(Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan));
        assert!(matches!(r.classify(&overflow), Signal::Lapse(_)));
        let io = Err(notify::Error::io(std::io::Error::other("boom")));
        assert!(matches!(r.classify(&io), Signal::Lapse(w) if w.contains("boom")));
        let limit = Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch));
        assert_eq!(r.classify(&limit), Signal::Limit);
        let msg = limit_message(&[SyncPath {
            path: "/var/spool/asterisk".into(),
            exclude: vec![],
            delete: true,
            max_file_size: None,
            sqlite: Vec::new(),
        }]);
        assert!(msg.contains("fs.inotify.max_user_watches"), "{msg}");
        assert!(msg.contains("/var/spool/asterisk"), "{msg}");
    }
}
