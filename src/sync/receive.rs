//! Writing on the standby: only inside the sync root, never half-written.
//!
//! `sip-ha serve` on the standby receives files from the active server and
//! must uphold three promises, whatever arrives and whenever it is killed:
//!
//! 1. **Nothing outside the root.** Paths arrive as bytes relative to one
//!    sync root. [`Receiver::resolve`] refuses absolute paths, `..`, `.`,
//!    empty components, NUL, reserved names (the trash, temp files), and any
//!    path that would go through a symlink. Every write then walks from the
//!    root one directory at a time with `openat(O_NOFOLLOW | O_DIRECTORY)`
//!    and acts on the last directory's descriptor (`openat`, `renameat`,
//!    `fchown`...), so a symlink planted between the check and the write
//!    cannot redirect it either. Devices, fifos and sockets are never made.
//! 2. **Never a half-written file under its real name.** A file is written
//!    to `.<name>.sip-ha-tmp-<random>` in the same directory (`O_EXCL`, mode
//!    0600), its BLAKE3 checked against the sender's, its mode, owner and
//!    mtime set, fsynced, and only then renamed over the target, and the
//!    directory fsynced. Readers see the old file or the new one. A wrong
//!    hash, a full disk, an error, or dropping the [`IncomingFile`] removes
//!    the temp file; a `kill -9` leaves it, and [`Receiver::cleanup_temp`]
//!    removes such leftovers at the start of the next run.
//! 3. **Nothing lost.** A deletion moves the file into the [`Trash`]; a
//!    directory or symlink that a file replaces goes there too; and a
//!    conflicting local version can be kept beside the new one as
//!    `NAME.sip-ha-conflict-NODE-YYYYMMDDTHHMMSS`.
//!
//! Owners travel **by name**: a file owned by `asterisk` on the active
//! server belongs to `asterisk` here even if the uids differ. A name unknown
//! on this host falls back to the sender's numeric id, with a warning
//! (collected, see [`Receiver::take_warnings`]). Mtimes are set to the
//! nanosecond.
//!
//! Directory mtimes: every operation puts back the mtime of the directory
//! it changed an entry in, so a directory's mtime is only ever what
//! [`Receiver::dir`] set (or was before), whatever order the entries come in.
//!
//! A typical file transfer, with [`chunk`](super::chunk):
//!
//! ```no_run
//! # use sip_ha::sync::{chunk, receive::{Receiver, FileMeta}};
//! # fn f(rx: &mut Receiver, meta: FileMeta, pieces: Vec<anyhow::Result<chunk::Piece>>,
//! #      sender_hash: [u8; 32]) -> anyhow::Result<()> {
//! let mut old = rx.open_existing(b"sip.conf")?;
//! let sig = match old.as_mut() {
//!     Some(f) => chunk::signature(&mut *f)?,
//!     None => chunk::Signature::empty(),
//! };
//! // ... send `sig` to the sender, receive `pieces` ...
//! let mut incoming = rx.begin_file(b"sip.conf", meta)?;
//! chunk::apply(old.as_mut(), &sig, pieces.into_iter(), &mut incoming)?;
//! incoming.commit(&sender_hash)?;
//! # Ok(()) }
//! ```

use super::stream_hash::StreamHash;
use super::trash::{Trash, TRASH_DIR_NAME};
use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{fstat, fstatat, futimens, mkdirat, utimensat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Group, Uid, User};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Marks a file being received: `.<name>.sip-ha-tmp-<16 hex digits>`.
pub const TEMP_MARKER: &str = ".sip-ha-tmp-";
/// Marks a kept conflicting version: `<name>.sip-ha-conflict-<node>-<time>`.
pub const CONFLICT_MARKER: &str = ".sip-ha-conflict-";

/// Longest part of the target's name kept in a temp name, so that the temp
/// name stays under the 255-byte limit.
const TEMP_NAME_KEEP: usize = 200;

/// Metadata of a file, directory or symlink as the sender has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Permission bits (`0o7777` at most; the file type is not here).
    pub mode: u32,
    /// Owner and group by name, as on the sender; `None` when the sender
    /// has no name for the id.
    pub user: Option<String>,
    pub group: Option<String>,
    /// The sender's numeric ids: used when the name is unknown here.
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// For a file: the size the sender announced, to check free space
    /// before writing (0 if unknown). Ignored for directories and symlinks.
    pub size: u64,
}

impl FileMeta {
    /// The metadata of something on this host (from `symlink_metadata`),
    /// with user and group names looked up here.
    pub fn from_metadata(md: &fs::Metadata) -> FileMeta {
        let user = User::from_uid(Uid::from_raw(md.uid()))
            .ok()
            .flatten()
            .map(|u| u.name);
        let group = Group::from_gid(Gid::from_raw(md.gid()))
            .ok()
            .flatten()
            .map(|g| g.name);
        FileMeta {
            mode: md.mode() & 0o7777,
            user,
            group,
            uid: md.uid(),
            gid: md.gid(),
            mtime_ns: md
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(md.mtime_nsec()),
            size: if md.is_file() { md.size() } else { 0 },
        }
    }
}

/// True for names this module makes for itself and that must never be
/// synced: temp files being received and the trash folder. The sender's scan
/// excludes them (on both nodes: roles swap).
pub fn is_internal_name(name: &[u8]) -> bool {
    name == TRASH_DIR_NAME.as_bytes() || is_temp_name(name)
}

/// True for `.<name>.sip-ha-tmp-<16 lowercase hex digits>`.
pub fn is_temp_name(name: &[u8]) -> bool {
    let marker = TEMP_MARKER.as_bytes();
    if name.len() < 2 + marker.len() + 16 || name[0] != b'.' {
        return false;
    }
    let (head, hex) = name.split_at(name.len() - 16);
    head.ends_with(marker)
        && hex
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// True for a conflict copy `<name>.sip-ha-conflict-<node>-<time>`: the
/// sender's diff must not delete these on the standby.
pub fn is_conflict_copy(name: &[u8]) -> bool {
    let marker = CONFLICT_MARKER.as_bytes();
    name.windows(marker.len()).any(|w| w == marker)
}

/// Writes into one sync root. One per sync path; not shared between
/// threads (each transfer is sequential).
#[derive(Debug)]
pub struct Receiver {
    root: PathBuf,
    trash: Trash,
    /// The trash's path under the root when it is inside it (refused as a
    /// target, skipped by the temp sweep).
    trash_rel: Option<PathBuf>,
    users: HashMap<String, Option<Uid>>,
    groups: HashMap<String, Option<Gid>>,
    warnings: Warnings,
}

/// Warnings collected during a run, deduplicated.
#[derive(Debug, Clone, Default)]
struct Warnings(Arc<Mutex<(Vec<String>, HashSet<String>)>>);

impl Warnings {
    /// Record `text` once per `key`.
    fn once(&self, key: &str, text: String) {
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if w.1.insert(key.to_string()) {
            w.0.push(text);
        }
    }

    fn take(&self) -> Vec<String> {
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        w.1.clear();
        std::mem::take(&mut w.0)
    }
}

/// An open directory on the way to a target, and the target's name in it.
struct Parent {
    fd: OwnedFd,
    name: OsString,
    /// The target's full path, for messages.
    path: PathBuf,
    /// The target's path relative to the root.
    rel: PathBuf,
}

impl Receiver {
    /// Receive into `root` (created, mode 0755, if missing), moving what is
    /// deleted or replaced into the trash at `trash_dir` (created, mode 0700;
    /// [`Trash::default_dir`] gives the default, `<root>/.sip-ha-trash`).
    pub fn new(root: &Path, trash_dir: &Path) -> Result<Receiver> {
        if !root.is_absolute() {
            bail!("the sync root {} is not an absolute path", root.display());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(root)
            .with_context(|| format!("cannot create the sync root {}", root.display()))?;
        let trash = Trash::new(trash_dir)?;
        let croot = fs::canonicalize(root)
            .with_context(|| format!("cannot resolve the sync root {}", root.display()))?;
        let ctrash = fs::canonicalize(trash_dir)
            .with_context(|| format!("cannot resolve the trash {}", trash_dir.display()))?;
        let trash_rel = ctrash
            .strip_prefix(&croot)
            .ok()
            .map(Path::to_path_buf)
            .filter(|r| !r.as_os_str().is_empty());
        if ctrash == croot {
            bail!(
                "the trash cannot be the sync root itself ({})",
                root.display()
            );
        }
        let warnings = Warnings::default();
        let (rdev, tdev) = (fs::metadata(&croot)?.dev(), fs::metadata(&ctrash)?.dev());
        if rdev != tdev {
            warnings.once(
                "trash-fs",
                format!(
                    "the trash {} is on another filesystem than {}: deletions there are copies, not renames",
                    trash_dir.display(),
                    root.display()
                ),
            );
        }
        Ok(Receiver {
            root: root.to_path_buf(),
            trash,
            trash_rel,
            users: HashMap::new(),
            groups: HashMap::new(),
            warnings,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn trash(&self) -> &Trash {
        &self.trash
    }

    /// The warnings since the last call (unknown user or group names,
    /// owners that could not be set, a trash on another filesystem), each
    /// once.
    pub fn take_warnings(&self) -> Vec<String> {
        self.warnings.take()
    }

    /// Check `rel` (relative to the root, as sent) and return the path it
    /// names. Refuses absolute paths, `..`, `.` and empty components, NUL,
    /// reserved names, and a path any of whose existing directories is a
    /// symlink or not a directory. The last component may be anything
    /// (a symlink there is replaced or trashed, never followed).
    pub fn resolve(&self, rel: &[u8]) -> Result<PathBuf> {
        let parts = self.check_rel(rel)?;
        let mut path = self.root.clone();
        if let Some((_, parents)) = parts.split_last() {
            for p in parents {
                path.push(p);
                match fs::symlink_metadata(&path) {
                    Ok(md) if md.file_type().is_symlink() => {
                        return Err(escape(rel, &path));
                    }
                    Ok(md) if !md.is_dir() => return Err(not_a_dir(rel, &path)),
                    Ok(_) => {}
                    // Missing: created (as a directory) when written.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Ok(self.root.join(OsStr::from_bytes(rel)))
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot stat {}", path.display()))
                    }
                }
            }
        }
        Ok(self.root.join(OsStr::from_bytes(rel)))
    }

    /// The lexical checks of [`resolve`](Self::resolve): the components.
    fn check_rel<'a>(&self, rel: &'a [u8]) -> Result<Vec<&'a OsStr>> {
        let shown = String::from_utf8_lossy(rel);
        let root = self.root.display();
        let refuse = |why: &str| anyhow!("refused: {shown:?} in {root} {why}");
        if rel.is_empty() {
            return Err(refuse("is empty"));
        }
        if rel.contains(&0) {
            return Err(refuse("contains a NUL byte"));
        }
        if rel[0] == b'/' {
            return Err(refuse(
                "is absolute: only paths relative to the sync root are accepted",
            ));
        }
        let mut parts = Vec::new();
        for c in rel.split(|b| *b == b'/') {
            match c {
                b"" => return Err(refuse("has an empty component (// or a trailing /)")),
                b"." => return Err(refuse("has a '.' component")),
                b".." => return Err(refuse("has a '..' component: it would leave the sync root")),
                _ if is_temp_name(c) => return Err(refuse("names a sip-ha temp file (reserved)")),
                _ => parts.push(OsStr::from_bytes(c)),
            }
        }
        if let Some(t) = &self.trash_rel {
            if Path::new(OsStr::from_bytes(rel)).starts_with(t) {
                return Err(refuse("is in the sip-ha trash (reserved)"));
            }
        }
        Ok(parts)
    }

    /// Walk to the directory holding `rel`, one `openat(O_NOFOLLOW)` at a
    /// time. With `create`, missing directories are made (mode 0700 until
    /// [`dir`](Self::dir) sets theirs); without, a missing one gives
    /// `Ok(None)`.
    fn open_parent(&self, rel: &[u8], create: bool) -> Result<Option<Parent>> {
        let parts = self.check_rel(rel)?;
        let Some((name, parents)) = parts.split_last() else {
            bail!("refused: empty path");
        };
        let mut fd = self.open_root()?;
        let mut path = self.root.clone();
        for p in parents {
            path.push(p);
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let next = match openat(&fd, *p, flags, Mode::empty()) {
                Ok(next) => next,
                Err(Errno::ENOENT) if create => {
                    preserving_mtime(&fd, || {
                        match mkdirat(&fd, *p, Mode::from_bits_truncate(0o700)) {
                            Ok(()) | Err(Errno::EEXIST) => Ok(()),
                            Err(e) => Err(io::Error::from(e)).with_context(|| {
                                format!("cannot create the directory {}", path.display())
                            }),
                        }
                    })?;
                    openat(&fd, *p, flags, Mode::empty())
                        .map_err(|e| self.walk_error(e, &fd, p, rel, &path))?
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(e) => return Err(self.walk_error(e, &fd, p, rel, &path)),
            };
            fd = next;
        }
        Ok(Some(Parent {
            fd,
            name: name.to_os_string(),
            path: self.root.join(OsStr::from_bytes(rel)),
            rel: PathBuf::from(OsStr::from_bytes(rel)),
        }))
    }

    /// Open the directory `rel` (empty: the root), never through a
    /// symlink; `None` if it is not there or not a directory.
    fn open_dir(&self, rel: &[u8]) -> Option<OwnedFd> {
        if rel.is_empty() {
            return self.open_root().ok();
        }
        let parent = self.open_parent(rel, false).ok()??;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        openat(&parent.fd, parent.name.as_os_str(), flags, Mode::empty()).ok()
    }

    /// The mtime of the directory `rel` (empty: the root), if it can be
    /// read: taken before a session first writes in it, and put back with
    /// [`set_dir_mtime`](Self::set_dir_mtime) once its writes there are over.
    pub fn dir_mtime(&self, rel: &[u8]) -> Option<TimeSpec> {
        dir_mtime(&self.open_dir(rel)?)
    }

    /// Set the mtime of the directory `rel` (empty: the root). Best effort,
    /// as for every directory mtime: it is cosmetic.
    pub fn set_dir_mtime(&self, rel: &[u8], mtime: TimeSpec) {
        if let Some(fd) = self.open_dir(rel) {
            restore_mtime(&fd, Some(mtime));
        }
    }

    fn walk_error(
        &self,
        e: Errno,
        dir: &OwnedFd,
        p: &OsStr,
        rel: &[u8],
        path: &Path,
    ) -> anyhow::Error {
        if matches!(e, Errno::ELOOP | Errno::ENOTDIR) {
            match fstatat(dir, p, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => return escape(rel, path),
                Ok(_) => return not_a_dir(rel, path),
                Err(_) => {}
            }
        }
        anyhow::Error::from(io::Error::from(e))
            .context(format!("cannot open the directory {}", path.display()))
    }

    fn open_root(&self) -> Result<OwnedFd> {
        let f = File::open(&self.root)
            .with_context(|| format!("cannot open the sync root {}", self.root.display()))?;
        Ok(f.into())
    }

    /// Open the current version of `rel` for reading (to compute its
    /// signature and copy chunks out of it). `None` when it does not exist
    /// or is not a regular file; a symlink is never followed.
    pub fn open_existing(&self, rel: &[u8]) -> Result<Option<File>> {
        let Some(parent) = self.open_parent(rel, false)? else {
            return Ok(None);
        };
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = match openat(&parent.fd, parent.name.as_os_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) | Err(Errno::ELOOP) | Err(Errno::ENXIO) => return Ok(None),
            Err(e) => {
                return Err(io::Error::from(e))
                    .with_context(|| format!("cannot open {}", parent.path.display()))
            }
        };
        let st = fstat(&fd).with_context(|| format!("cannot stat {}", parent.path.display()))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(None);
        }
        Ok(Some(File::from(fd)))
    }

    /// Start receiving the file `rel`: a temp file beside it, mode 0600.
    /// Checks first that `meta.size` bytes are free there.
    pub fn begin_file(&mut self, rel: &[u8], meta: FileMeta) -> Result<IncomingFile> {
        let parent = self.open_parent(rel, true)?.ok_or_else(|| {
            anyhow!(
                "cannot create the directories of {}",
                String::from_utf8_lossy(rel)
            )
        })?;
        if meta.size > 0 {
            let st = nix::sys::statvfs::fstatvfs(&parent.fd).with_context(|| {
                format!("cannot check free space for {}", parent.path.display())
            })?;
            // Blocks available to non-root users: a sync that fits only in
            // root's reserve would leave the standby unable to log.
            let free = st.blocks_available().saturating_mul(st.fragment_size());
            if meta.size > free {
                bail!(
                    "the standby's disk is full: {} needs {} bytes but only {free} are free there; nothing was written, the old file is intact",
                    parent.path.display(),
                    meta.size
                );
            }
        }
        let (uid, gid) = self.owner(&meta, &parent.path);
        let parent_mtime = dir_mtime(&parent.fd);
        let (tmp_name, fd) = create_temp(&parent, |tmp| {
            openat(
                &parent.fd,
                tmp,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
        })?;
        Ok(IncomingFile {
            file: Some(File::from(fd)),
            parent,
            parent_mtime,
            tmp_name,
            hasher: StreamHash::inline(),
            written: 0,
            meta,
            uid,
            gid,
            keep_old: None,
            trash: self.trash.clone(),
            warnings: self.warnings.clone(),
            done: false,
            ino: None,
        })
    }

    /// Create or replace `rel` with a symlink to `target` (which may point
    /// anywhere: it is stored, never followed here).
    pub fn symlink(&mut self, rel: &[u8], target: &[u8], meta: FileMeta) -> Result<()> {
        if target.is_empty() || target.contains(&0) {
            bail!(
                "refused: symlink {:?} has an empty target or one with a NUL byte",
                String::from_utf8_lossy(rel)
            );
        }
        let parent = self.open_parent(rel, true)?.ok_or_else(|| {
            anyhow!(
                "cannot create the directories of {}",
                String::from_utf8_lossy(rel)
            )
        })?;
        let (uid, gid) = self.owner(&meta, &parent.path);
        let parent_mtime = dir_mtime(&parent.fd);
        let target = OsStr::from_bytes(target);
        let (tmp, ()) = create_temp(&parent, |tmp| {
            nix::unistd::symlinkat(target, &parent.fd, tmp)
        })?;
        let result = (|| -> Result<()> {
            self.chown_at(&parent.fd, &tmp, uid, gid, &parent.path)?;
            utimensat(
                &parent.fd,
                tmp.as_os_str(),
                &TimeSpec::UTIME_OMIT,
                &timespec(meta.mtime_ns),
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(io::Error::from)
            .with_context(|| {
                format!(
                    "cannot set the mtime of the symlink {}",
                    parent.path.display()
                )
            })?;
            trash_if_dir(&self.trash, &parent)?;
            renameat(
                &parent.fd,
                tmp.as_os_str(),
                &parent.fd,
                parent.name.as_os_str(),
            )
            .map_err(io::Error::from)
            .with_context(|| {
                format!("cannot put the symlink {} in place", parent.path.display())
            })?;
            nix::unistd::fsync(&parent.fd)
                .map_err(io::Error::from)
                .with_context(|| format!("cannot fsync the directory of {}", parent.path.display()))
        })();
        if result.is_err() {
            let _ = nix::unistd::unlinkat(
                &parent.fd,
                tmp.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        restore_mtime(&parent.fd, parent_mtime);
        result
    }

    /// Create the directory `rel` or update its mode, owner and mtime. An
    /// empty `rel` means the sync root itself. Something else (a file, a
    /// symlink) in its place goes to the trash first.
    pub fn dir(&mut self, rel: &[u8], meta: FileMeta) -> Result<()> {
        if rel.is_empty() {
            let fd = self.open_root()?;
            let (uid, gid) = self.owner(&meta, &self.root.clone());
            let root = self.root.clone();
            return self.set_meta(&fd, &meta, uid, gid, &root);
        }
        let parent = self.open_parent(rel, true)?.ok_or_else(|| {
            anyhow!(
                "cannot create the directories of {}",
                String::from_utf8_lossy(rel)
            )
        })?;
        let (uid, gid) = self.owner(&meta, &parent.path);
        let parent_mtime = dir_mtime(&parent.fd);
        let result = (|| -> Result<()> {
            let name = parent.name.as_os_str();
            let created = match fstatat(&parent.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => false,
                Ok(_) => {
                    self.trash
                        .put_at(&parent.fd, name, &parent.path, &parent.rel)?;
                    true
                }
                Err(Errno::ENOENT) => true,
                Err(e) => {
                    return Err(io::Error::from(e))
                        .with_context(|| format!("cannot stat {}", parent.path.display()))
                }
            };
            if created {
                match mkdirat(&parent.fd, name, Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(io::Error::from(e)).with_context(|| {
                            format!("cannot create the directory {}", parent.path.display())
                        })
                    }
                }
            }
            let fd = openat(
                &parent.fd,
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(io::Error::from)
            .with_context(|| format!("cannot open the directory {}", parent.path.display()))?;
            self.set_meta(&fd, &meta, uid, gid, &parent.path)?;
            if created {
                nix::unistd::fsync(&parent.fd)
                    .map_err(io::Error::from)
                    .with_context(|| {
                        format!("cannot fsync the directory of {}", parent.path.display())
                    })?;
            }
            Ok(())
        })();
        restore_mtime(&parent.fd, parent_mtime);
        result
    }

    /// Delete `rel` (file, symlink or whole directory) by moving it into the
    /// trash. Deleting what is not there is not an error.
    pub fn delete(&mut self, rel: &[u8]) -> Result<()> {
        let Some(parent) = self.open_parent(rel, false)? else {
            return Ok(());
        };
        match fstatat(
            &parent.fd,
            parent.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(_) => {}
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(io::Error::from(e))
                    .with_context(|| format!("cannot stat {}", parent.path.display()))
            }
        }
        let parent_mtime = dir_mtime(&parent.fd);
        let result = self
            .trash
            .put_at(&parent.fd, &parent.name, &parent.path, &parent.rel)
            .map(drop);
        restore_mtime(&parent.fd, parent_mtime);
        result
    }

    /// Keep the current version of `rel` beside it as
    /// `NAME.sip-ha-conflict-NODE-YYYYMMDDTHHMMSS` (local time; `-2`, `-3`...
    /// appended if taken) before an incoming version replaces it. A file or
    /// symlink is hard-linked, so `rel` itself stays in place until the new
    /// version is renamed over it; a directory is renamed. Returns the copy's
    /// path.
    pub fn keep_conflict_copy(
        &mut self,
        rel: &[u8],
        node: &str,
        timestamp: SystemTime,
    ) -> Result<PathBuf> {
        let shown = String::from_utf8_lossy(rel).into_owned();
        let parent = self
            .open_parent(rel, false)?
            .ok_or_else(|| anyhow!("cannot keep a conflict copy of {shown}: it does not exist"))?;
        let parent_mtime = dir_mtime(&parent.fd);
        let result = conflict_copy(&parent, node, timestamp);
        restore_mtime(&parent.fd, parent_mtime);
        result
    }

    /// Remove the temp files a killed earlier run left behind, anywhere
    /// under the root (never following symlinks, skipping the trash).
    /// Touches nothing but regular files and symlinks (a symlink is made
    /// under a temp name too, see [`symlink`](Self::symlink)) named like
    /// `.<name>.sip-ha-tmp-<16 hex>`. Returns how many were removed.
    pub fn cleanup_temp(&self) -> Result<usize> {
        let skip = self.trash_rel.as_ref().map(|r| self.root.join(r));
        let mut removed = 0;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound && dir != self.root => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
            };
            for entry in entries {
                let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
                // file_type() does not follow symlinks.
                let ft = entry
                    .file_type()
                    .with_context(|| format!("cannot stat {}", entry.path().display()))?;
                // Paths are built only for directories and temp files:
                // not 100,000 allocations for a tree of recordings.
                if !ft.is_dir() && !is_temp_name(entry.file_name().as_bytes()) {
                    continue;
                }
                let path = entry.path();
                if ft.is_dir() {
                    if skip.as_deref() != Some(path.as_path()) {
                        stack.push(path);
                    }
                } else if (ft.is_file() || ft.is_symlink())
                    && is_temp_name(entry.file_name().as_bytes())
                {
                    match fs::remove_file(&path) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("cannot remove the leftover temp file {}", path.display())
                            })
                        }
                    }
                }
            }
        }
        Ok(removed)
    }

    /// The uid and gid to give an entry: by name when the name exists here,
    /// else the sender's numbers (with a warning, once per name).
    fn owner(&mut self, meta: &FileMeta, path: &Path) -> (Uid, Gid) {
        let uid = by_name(
            &mut self.users,
            &self.warnings,
            ("user", meta.user.as_deref(), meta.uid),
            |n| User::from_name(n).ok().flatten().map(|u| u.uid),
            path,
        )
        .unwrap_or_else(|| Uid::from_raw(meta.uid));
        let gid = by_name(
            &mut self.groups,
            &self.warnings,
            ("group", meta.group.as_deref(), meta.gid),
            |n| Group::from_name(n).ok().flatten().map(|g| g.gid),
            path,
        )
        .unwrap_or_else(|| Gid::from_raw(meta.gid));
        (uid, gid)
    }

    fn chown_at(&self, dir: &OwnedFd, name: &OsStr, uid: Uid, gid: Gid, path: &Path) -> Result<()> {
        match nix::unistd::fchownat(
            dir,
            name,
            Some(uid),
            Some(gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(()) => Ok(()),
            Err(Errno::EPERM) => {
                warn_eperm(&self.warnings, path);
                Ok(())
            }
            Err(e) => Err(io::Error::from(e))
                .with_context(|| format!("cannot set the owner of {}", path.display())),
        }
    }

    /// Give the regular file `rel`, whose content is already right, the
    /// owner, mode and mtime of `meta`, in place (no copy: a `chmod -R` or
    /// `touch` on the active server costs a few system calls per file, not
    /// a rewrite). Its stat afterwards, for the manifest.
    pub fn file_meta(&mut self, rel: &[u8], meta: FileMeta) -> Result<nix::sys::stat::FileStat> {
        let parent = self.open_parent(rel, false)?.ok_or_else(|| {
            anyhow!(
                "cannot update {}: it is not here",
                String::from_utf8_lossy(rel)
            )
        })?;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = openat(&parent.fd, parent.name.as_os_str(), flags, Mode::empty())
            .map_err(io::Error::from)
            .with_context(|| format!("cannot open {}", parent.path.display()))?;
        let st = fstat(&fd).with_context(|| format!("cannot stat {}", parent.path.display()))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            bail!(
                "cannot update {}: it is not a regular file here",
                parent.path.display()
            );
        }
        let (uid, gid) = self.owner(&meta, &parent.path);
        self.set_meta(&fd, &meta, uid, gid, &parent.path)?;
        fstat(&fd).with_context(|| format!("cannot stat {}", parent.path.display()))
    }

    /// Owner, then mode (chown clears set-id bits), then mtime, of an open
    /// directory.
    fn set_meta(
        &self,
        fd: &OwnedFd,
        meta: &FileMeta,
        uid: Uid,
        gid: Gid,
        path: &Path,
    ) -> Result<()> {
        set_meta_fd(fd, meta, uid, gid, path, &self.warnings)
    }
}

/// A file being received: write its bytes, then [`commit`](Self::commit).
/// Dropped without a commit, its temp file is removed.
pub struct IncomingFile {
    file: Option<File>,
    parent: Parent,
    parent_mtime: Option<TimeSpec>,
    tmp_name: OsString,
    hasher: StreamHash,
    written: u64,
    meta: FileMeta,
    uid: Uid,
    gid: Gid,
    keep_old: Option<(String, SystemTime)>,
    trash: Trash,
    warnings: Warnings,
    done: bool,
    /// The temp file's inode, once it is closed.
    ino: Option<u64>,
}

impl std::fmt::Debug for IncomingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingFile")
            .field("path", &self.parent.path)
            .field("tmp", &self.tmp_name)
            .field("written", &self.written)
            .finish()
    }
}

impl IncomingFile {
    /// Where the file goes once committed.
    pub fn path(&self) -> &Path {
        &self.parent.path
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// On commit, keep the version being replaced beside it as a conflict
    /// copy (see [`Receiver::keep_conflict_copy`]) instead of discarding it.
    pub fn keep_old(&mut self, node: &str, timestamp: SystemTime) {
        self.keep_old = Some((node.to_string(), timestamp));
    }

    /// Hash what is written on a thread of its own if the file is big (see
    /// [`StreamHash::for_rebuild`]): for a file rebuilt mostly from the old
    /// copy's chunks. Only before anything is written.
    pub fn hash_on_a_thread(&mut self) {
        if self.written == 0 {
            self.hasher = StreamHash::for_rebuild(self.meta.size);
        }
    }

    /// Append `bytes`. On any error the temp file is removed at once (a full
    /// disk gets its space back) and the target is untouched.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            bail!(
                "{} was already abandoned after an error",
                self.parent.path.display()
            );
        };
        if let Err(e) = file.write_all(bytes) {
            let err = self.io_failure(e, "write");
            self.abandon();
            return Err(err);
        }
        self.hasher.update(bytes);
        let before = self.written;
        self.written += bytes.len() as u64;
        // Start writing each WRITEBACK_STEP to disk now, in the background,
        // so that the fsync before the rename finds little left to do
        // (the disk works while the rest of the file arrives).
        if before / WRITEBACK_STEP != self.written / WRITEBACK_STEP {
            start_writeback(file, before / WRITEBACK_STEP * WRITEBACK_STEP, self.written);
        }
        Ok(())
    }

    /// Put the file in place if what was written hashes to `expected` (the
    /// sender's BLAKE3 of the whole file): set owner, mode, mtime, fsync,
    /// rename over the target, fsync the directory. On a mismatch or any
    /// error the temp file is removed and the old file left as it was.
    pub fn commit(mut self, expected: &[u8; 32]) -> Result<Placed> {
        let result = self.commit_inner(expected);
        if result.is_err() {
            self.abandon();
        }
        result
    }

    fn commit_inner(&mut self, expected: &[u8; 32]) -> Result<Placed> {
        self.check_and_set_meta(expected)?;
        if let Some(Err(e)) = self.file.as_ref().map(File::sync_all) {
            return Err(self.io_failure(e, "fsync"));
        }
        let placed = self.place()?;
        let synced = nix::unistd::fsync(&self.parent.fd);
        restore_mtime(&self.parent.fd, self.parent_mtime);
        synced.map_err(io::Error::from).with_context(|| {
            format!(
                "{} is in place but its directory could not be fsynced",
                self.parent.path.display()
            )
        })?;
        Ok(placed)
    }

    /// Check what was written against the sender's hash, then set owner,
    /// mode and mtime on the temp file.
    fn check_and_set_meta(&mut self, expected: &[u8; 32]) -> Result<()> {
        let path = &self.parent.path;
        let Some(file) = self.file.as_ref() else {
            bail!("{} was already abandoned after an error", path.display());
        };
        let Some(got) = self.hasher.finalize() else {
            bail!(
                "refused {}: its hash could not be taken (the hashing thread stopped); not put in place, the old file is intact",
                path.display()
            );
        };
        if &got != expected {
            bail!(
                "refused {}: the {} bytes received hash to {} but the sender's file hashes to {}; not put in place, the old file is intact",
                path.display(),
                self.written,
                super::chunk::short_hex(&got),
                super::chunk::short_hex(expected)
            );
        }
        set_meta_fd(file, &self.meta, self.uid, self.gid, path, &self.warnings)
    }

    /// Rename the (durable) temp file over the target, keeping the old
    /// version as a conflict copy if asked, and trashing a directory in
    /// the way. The directory entry is not yet durable.
    fn place(&mut self) -> Result<Placed> {
        let path = self.parent.path.clone();
        if let Some((node, at)) = self.keep_old.take() {
            match fstatat(
                &self.parent.fd,
                self.parent.name.as_os_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(_) => {
                    conflict_copy(&self.parent, &node, at)?;
                }
                Err(Errno::ENOENT) => {}
                Err(e) => {
                    return Err(io::Error::from(e))
                        .with_context(|| format!("cannot stat {}", path.display()))
                }
            }
        }
        trash_if_dir(&self.trash, &self.parent)?;
        renameat(
            &self.parent.fd,
            self.tmp_name.as_os_str(),
            &self.parent.fd,
            self.parent.name.as_os_str(),
        )
        .map_err(io::Error::from)
        .with_context(|| format!("cannot put {} in place", path.display()))?;
        self.done = true;
        // The stat it has in place (a rename changes the ctime): the
        // session learns the file from it without reading it back.
        if let Some(f) = self.file.take() {
            self.ino = fstat(&f).ok().map(|st| st.st_ino);
        }
        // By name, but only if it is still our inode.
        let stat = fstatat(
            &self.parent.fd,
            self.parent.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()
        .filter(|st| Some(st.st_ino) == self.ino);
        // Taken by `check_and_set_meta` before: this is that hash.
        let hash = self
            .hasher
            .finalize()
            .ok_or_else(|| anyhow!("{} has no hash", path.display()))?;
        Ok(Placed { stat, hash })
    }

    /// Check the hash and set owner, mode and mtime, but neither fsync nor
    /// rename: the file waits for [`commit_batch`] with others.
    pub fn stage(mut self, expected: &[u8; 32]) -> Result<Staged> {
        match self.check_and_set_meta(expected) {
            Ok(()) => {
                // Closed now: a batch in waiting holds one descriptor per
                // file (its directory's), not two. No writeback kick here
                // (unlike a big file): the batch's syncfs, on the thread
                // that commits it, writes the data back, and a
                // sync_file_range per small file cost this thread half its
                // time (bench/sync.sh first-small, perf: 40 s -> 31 s).
                if let Some(f) = self.file.take() {
                    self.ino = fstat(&f).ok().map(|st| st.st_ino);
                }
                Ok(Staged(self))
            }
            Err(e) => {
                self.abandon();
                Err(e)
            }
        }
    }

    /// Turn an I/O error while writing into a message; a full disk gets the
    /// plain explanation.
    fn io_failure(&self, e: io::Error, what: &str) -> anyhow::Error {
        let path = self.parent.path.display();
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                let of = match self.meta.size {
                    0 => String::new(),
                    size => format!(" of {size}"),
                };
                anyhow!(
                    "the standby's disk is full writing {path}: it filled after {}{of} bytes ({what}: {e}); the partial copy was removed, freeing its space, and the old file is intact",
                    self.written,
                )
            }
            _ => anyhow::Error::from(e).context(format!(
                "cannot {what} {path} (temp file {}); the old file is intact",
                self.tmp_name.to_string_lossy()
            )),
        }
    }

    /// Close and remove the temp file; the target is untouched.
    fn abandon(&mut self) {
        if self.done {
            return;
        }
        self.file = None;
        self.done = true;
        let _ = nix::unistd::unlinkat(
            &self.parent.fd,
            self.tmp_name.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        restore_mtime(&self.parent.fd, self.parent_mtime);
    }
}

impl Write for IncomingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        IncomingFile::write(self, buf)
            .map(|()| buf.len())
            .map_err(|e| io::Error::other(format!("{e:#}")))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for IncomingFile {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// The id of the owner `name` (of `kind`, "user" or "group") on this host,
/// looked up once per name; `None` when there is no name, or when the name
/// is unknown here (then a warning, once: the sender's number `id` is
/// kept).
fn by_name<T: Copy>(
    cache: &mut HashMap<String, Option<T>>,
    warnings: &Warnings,
    (kind, name, id): (&str, Option<&str>, u32),
    lookup: impl FnOnce(&str) -> Option<T>,
    path: &Path,
) -> Option<T> {
    let name = name?;
    let found = *cache
        .entry(name.to_string())
        .or_insert_with(|| lookup(name));
    if found.is_none() {
        warnings.once(
            &format!("{kind}:{name}"),
            format!(
                "{kind} {name:?} does not exist on this host: {} and others keep the sender's {} {id}",
                path.display(),
                if kind == "user" { "uid" } else { "gid" }
            ),
        );
    }
    found
}

/// A file put in place.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    /// Its stat right after the rename (`None` if that failed).
    pub stat: Option<nix::sys::stat::FileStat>,
    /// Its content's BLAKE3, as checked before the rename.
    pub hash: [u8; 32],
}

/// A received file, checked and with its metadata set, waiting under its
/// temp name for [`commit_batch`]. Dropped, it is removed.
#[derive(Debug)]
pub struct Staged(IncomingFile);

impl Staged {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Put a batch of staged files in place with one `syncfs(2)` per file
/// system instead of an `fsync(2)` per file: it makes every temp file's
/// data durable, then each is renamed over its target. A crash at any
/// point leaves each target old or new, never partial (the leftover temp
/// files are swept by the next session). The renames themselves are made
/// durable by the next batch's `syncfs` and, for the last one, by
/// [`sync_renames`] at the session's end, before it reports done: until
/// then, power lost can at worst put a target back to its old version,
/// which the next sync sends again. One result per file, in order.
pub fn commit_batch(staged: Vec<Staged>) -> Vec<Result<Placed>> {
    let mut files: Vec<IncomingFile> = staged.into_iter().map(|s| s.0).collect();
    let mut results: Vec<Result<Placed>> = files
        .iter()
        .map(|_| {
            Ok(Placed {
                stat: None,
                hash: [0; 32],
            })
        })
        .collect();
    // 1: the data, one syncfs per file system the batch touches.
    let devs = |files: &[IncomingFile]| {
        let mut seen = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            if let Ok(st) = fstat(&f.parent.fd) {
                seen.entry(st.st_dev).or_insert(i);
            }
        }
        seen
    };
    for (dev, first) in devs(&files) {
        if let Err(e) = nix::unistd::syncfs(&files[first].parent.fd) {
            for (i, f) in files.iter_mut().enumerate() {
                if fstat(&f.parent.fd).map(|st| st.st_dev) == Ok(dev) {
                    results[i] = Err(f.io_failure(io::Error::from(e), "flush to disk"));
                    f.abandon();
                }
            }
        }
    }
    // 2: the renames; directory mtimes are put back last to first, so
    // each ends as it was before the batch.
    for (i, f) in files.iter_mut().enumerate() {
        if results[i].is_ok() {
            results[i] = f.place();
            if results[i].is_err() {
                f.abandon();
            }
        }
    }
    // Once per directory (a batch often fills one), with the mtime it had
    // before this batch's first file touched it.
    let mut restored = std::collections::HashSet::new();
    for f in &files {
        if let Ok(st) = fstat(&f.parent.fd) {
            if restored.insert((st.st_dev, st.st_ino)) {
                restore_mtime(&f.parent.fd, f.parent_mtime);
            }
        }
    }
    results
}

/// Make the renames of [`commit_batch`] under `root` durable: one
/// `syncfs(2)` of its file system.
pub fn sync_renames(root: &Path) -> Result<()> {
    let dir = File::open(root).with_context(|| format!("cannot open {}", root.display()))?;
    nix::unistd::syncfs(&dir)
        .map_err(io::Error::from)
        .with_context(|| {
            format!(
                "the files sent are in place under {} but could not be flushed to disk",
                root.display()
            )
        })
}

/// Create a uniquely named temp entry beside `parent.name` with `make`,
/// retrying on a name clash.
fn create_temp<T>(
    parent: &Parent,
    mut make: impl FnMut(&OsStr) -> nix::Result<T>,
) -> Result<(OsString, T)> {
    let name = parent.name.as_bytes();
    let keep = &name[..name.len().min(TEMP_NAME_KEEP)];
    for _ in 0..16 {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random)
            .map_err(|e| anyhow!("cannot get random bytes for a temp name: {e}"))?;
        let mut tmp = Vec::with_capacity(keep.len() + 30);
        tmp.push(b'.');
        tmp.extend_from_slice(keep);
        tmp.extend_from_slice(TEMP_MARKER.as_bytes());
        for b in random {
            tmp.extend_from_slice(format!("{b:02x}").as_bytes());
        }
        let tmp = OsString::from_vec(tmp);
        match make(&tmp) {
            Ok(v) => return Ok((tmp, v)),
            Err(Errno::EEXIST) => continue,
            Err(Errno::ENOSPC | Errno::EDQUOT) => bail!(
                "the standby's disk is full: cannot even create a temp file beside {}; nothing was written, the old file is intact",
                parent.path.display()
            ),
            Err(e) => {
                return Err(io::Error::from(e))
                    .with_context(|| format!("cannot create a temp file beside {}", parent.path.display()))
            }
        }
    }
    bail!(
        "cannot find a free temp name beside {}",
        parent.path.display()
    )
}

/// A directory where a file or symlink is to go: trash it first (a file
/// cannot be renamed over a directory, and its contents must not be lost).
fn trash_if_dir(trash: &Trash, parent: &Parent) -> Result<()> {
    match fstatat(
        &parent.fd,
        parent.name.as_os_str(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => trash
            .put_at(&parent.fd, &parent.name, &parent.path, &parent.rel)
            .map(drop),
        Ok(_) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(io::Error::from(e))
            .with_context(|| format!("cannot stat {}", parent.path.display())),
    }
}

/// See [`Receiver::keep_conflict_copy`].
fn conflict_copy(parent: &Parent, node: &str, timestamp: SystemTime) -> Result<PathBuf> {
    let node: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let stamp = chrono::DateTime::<chrono::Local>::from(timestamp).format("%Y%m%dT%H%M%S");
    let base = format!("{CONFLICT_MARKER}{node}-{stamp}");
    let st = fstatat(
        &parent.fd,
        parent.name.as_os_str(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)
    .with_context(|| format!("cannot keep a conflict copy of {}", parent.path.display()))?;
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    for n in 1..=100u32 {
        let mut copy = parent.name.clone();
        copy.push(&base);
        if n > 1 {
            copy.push(format!("-{n}"));
        }
        let made = if is_dir {
            nix::fcntl::renameat2(
                &parent.fd,
                parent.name.as_os_str(),
                &parent.fd,
                copy.as_os_str(),
                RenameFlags::RENAME_NOREPLACE,
            )
        } else {
            // Without AT_SYMLINK_FOLLOW: a symlink is linked as itself.
            nix::unistd::linkat(
                &parent.fd,
                parent.name.as_os_str(),
                &parent.fd,
                copy.as_os_str(),
                AtFlags::empty(),
            )
        };
        match made {
            Ok(()) => {
                nix::unistd::fsync(&parent.fd)
                    .map_err(io::Error::from)
                    .with_context(|| {
                        format!("cannot fsync the directory of {}", parent.path.display())
                    })?;
                return Ok(parent.path.with_file_name(copy));
            }
            Err(Errno::EEXIST) => continue,
            Err(e) => {
                return Err(io::Error::from(e)).with_context(|| {
                    format!("cannot keep a conflict copy of {}", parent.path.display())
                })
            }
        }
    }
    bail!(
        "cannot keep a conflict copy of {}: 100 names are taken",
        parent.path.display()
    )
}

/// Received data is handed to the disk in steps of this many bytes.
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;

/// Ask the kernel to start writing `from..to` of `file` to disk, without
/// waiting (`sync_file_range(2)`, `SYNC_FILE_RANGE_WRITE`). Only a head
/// start for the fsync or syncfs that follows, which is what makes the data
/// durable: failures here are ignored.
fn start_writeback(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to.saturating_sub(from)))
    else {
        return;
    };
    // SAFETY: a plain system call on a descriptor we own; no memory passed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

fn set_meta_fd(
    fd: impl AsFd,
    meta: &FileMeta,
    uid: Uid,
    gid: Gid,
    path: &Path,
    warnings: &Warnings,
) -> Result<()> {
    // A file this process just created is usually already owned right
    // (root's files, received as root): a chown that changes nothing still
    // costs a journalled inode update.
    let owned =
        fstat(fd.as_fd()).is_ok_and(|st| st.st_uid == uid.as_raw() && st.st_gid == gid.as_raw());
    match if owned {
        Ok(())
    } else {
        nix::unistd::fchown(fd.as_fd(), Some(uid), Some(gid))
    } {
        Ok(()) => {}
        Err(Errno::EPERM) => warn_eperm(warnings, path),
        Err(e) => {
            return Err(io::Error::from(e))
                .with_context(|| format!("cannot set the owner of {}", path.display()))
        }
    }
    nix::sys::stat::fchmod(
        fd.as_fd(),
        Mode::from_bits_truncate((meta.mode & 0o7777) as libc::mode_t),
    )
    .map_err(io::Error::from)
    .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    futimens(fd.as_fd(), &TimeSpec::UTIME_OMIT, &timespec(meta.mtime_ns))
        .map_err(io::Error::from)
        .with_context(|| format!("cannot set the mtime of {}", path.display()))
}

fn warn_eperm(warnings: &Warnings, path: &Path) {
    warnings.once(
        "chown-eperm",
        format!(
            "cannot set owners (not running as root?): {} and others keep this process's owner",
            path.display()
        ),
    );
}

fn timespec(ns: i64) -> TimeSpec {
    TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

fn dir_mtime(fd: &OwnedFd) -> Option<TimeSpec> {
    fstat(fd)
        .ok()
        .map(|st| TimeSpec::new(st.st_mtime, st.st_mtime_nsec))
}

/// Put back a directory's mtime after changing an entry in it. Best effort:
/// a directory mtime is cosmetic, and failing here must not fail a write
/// that is already in place.
fn restore_mtime(fd: &OwnedFd, mtime: Option<TimeSpec>) {
    if let Some(m) = mtime {
        let _ = futimens(fd, &TimeSpec::UTIME_OMIT, &m);
    }
}

/// Run `f`, which changes an entry of the directory `fd`, keeping its mtime.
fn preserving_mtime<T>(fd: &OwnedFd, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let before = dir_mtime(fd);
    let r = f();
    restore_mtime(fd, before);
    r
}

fn escape(rel: &[u8], through: &Path) -> anyhow::Error {
    anyhow!(
        "refused: {:?} escapes the sync root through the symlink {}",
        String::from_utf8_lossy(rel),
        through.display()
    )
}

fn not_a_dir(rel: &[u8], at: &Path) -> anyhow::Error {
    anyhow!(
        "refused: {:?}: {} is not a directory on the standby",
        String::from_utf8_lossy(rel),
        at.display()
    )
}
