//! The trash: what sync deletes on the standby is moved here, not unlinked.
//!
//! A deletion mirrored from the active server may be a mistake made there
//! (an operator's `rm` in the wrong voicemail folder). So the standby never
//! unlinks a synced file: [`Trash::put`] moves it to
//! `<trash>/<YYYY-MM-DD>/<its path under the sync root>`, the day being the
//! local date of the deletion, and [`Trash::expire`] removes whole day
//! folders once they are older than the retention. Something deleted twice
//! on one day goes to `<trash>/<day>/+2/<path>`, `+3`, ...: nothing in the
//! trash is ever overwritten (`renameat2(RENAME_NOREPLACE)`).
//!
//! # Where the trash is: `<sync root>/.sip-ha-trash` by default
//!
//! A move into the trash should be a `rename(2)`: instant and atomic for a
//! 300 MiB recording, and needing no free space. That only works on the same
//! filesystem, and each sync path (`/etc/asterisk`,
//! `/var/spool/asterisk/voicemail`, ...) may be on its own filesystem, so a
//! single trash in `state_dir` would turn deletions into copies on many
//! servers. A hidden folder at the top of each sync root is always on the
//! root's filesystem (short of a mount point inside the tree), is mode 0700,
//! and is reserved: the receiver refuses to write under it, its temp sweep
//! skips it, and the sender's scan must exclude [`TRASH_DIR_NAME`] (see
//! `receive::is_internal_name`) so that a trash never syncs back when the
//! roles swap. A trash configured elsewhere still works: a move across
//! filesystems (`EXDEV`) becomes copy, fsync, then remove.

use anyhow::{anyhow, bail, Context, Result};
use chrono::{Local, NaiveDate};
use nix::errno::Errno;
use nix::fcntl::{renameat, renameat2, OFlag, RenameFlags};
use nix::sys::stat::Mode;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The trash folder's name at the top of a sync root (the default place).
pub const TRASH_DIR_NAME: &str = ".sip-ha-trash";

/// How many `+N` alternatives are tried before giving up on a name.
const MAX_ATTEMPTS: u32 = 1000;

/// A trash directory. Cheap to clone: it is just its path.
#[derive(Debug, Clone)]
pub struct Trash {
    dir: PathBuf,
}

impl Trash {
    /// The default trash of a sync root: `<root>/.sip-ha-trash`.
    pub fn default_dir(root: &Path) -> PathBuf {
        root.join(TRASH_DIR_NAME)
    }

    /// Use (and create, mode 0700, if missing) the trash at `dir`.
    pub fn new(dir: &Path) -> Result<Trash> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the trash directory {}", dir.display()))?;
        let md = fs::metadata(dir)
            .with_context(|| format!("cannot read the trash directory {}", dir.display()))?;
        if !md.is_dir() {
            bail!("the trash {} is not a directory", dir.display());
        }
        Ok(Trash {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Move `root/rel` (a file, symlink or whole directory; never followed
    /// if it is a symlink) into today's folder of the trash. Returns where it
    /// went. `rel` must be relative and plain (no `..`), and no directory on
    /// the way from `root` may be a symlink.
    pub fn put(&self, root: &Path, rel: &Path) -> Result<PathBuf> {
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(p) => parts.push(p),
                _ => bail!(
                    "refused to trash {}: not a plain relative path",
                    rel.display()
                ),
            }
        }
        let Some((name, parents)) = parts.split_last() else {
            bail!("refused to trash an empty path");
        };
        let mut dir: OwnedFd = File::open(root)
            .with_context(|| format!("cannot open {}", root.display()))?
            .into();
        let mut walked = root.to_path_buf();
        for p in parents {
            walked.push(p);
            dir = nix::fcntl::openat(
                &dir,
                *p,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(io::Error::from)
            .with_context(|| {
                format!(
                    "cannot trash {}: {} is not a directory (or is a symlink)",
                    root.join(rel).display(),
                    walked.display()
                )
            })?;
        }
        self.put_at(&dir, name, &root.join(rel), rel)
    }

    /// Move the entry `name` of the open directory `src_dir` (whose full
    /// path is `src_path`, for messages and the cross-filesystem copy) to
    /// `<trash>/<today>/<rel>`.
    pub(crate) fn put_at(
        &self,
        src_dir: &OwnedFd,
        name: &OsStr,
        src_path: &Path,
        rel: &Path,
    ) -> Result<PathBuf> {
        let day = Local::now().date_naive().format("%Y-%m-%d").to_string();
        let day_dir = self.dir.join(day);
        for attempt in 1..=MAX_ATTEMPTS {
            let base = if attempt == 1 {
                day_dir.clone()
            } else {
                day_dir.join(format!("+{attempt}"))
            };
            let dest = base.join(rel);
            let Some(dest_parent) = dest.parent() else {
                bail!("refused to trash {}: no file name", src_path.display());
            };
            match fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dest_parent)
            {
                Ok(()) => {}
                // A file of that name is in the way (trashed earlier today
                // as a file, now as a directory): try the next folder.
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists
                        || e.kind() == io::ErrorKind::NotADirectory =>
                {
                    continue
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot create {} in the trash", dest_parent.display())
                    })
                }
            }
            let dest_dir: OwnedFd = File::open(dest_parent)
                .with_context(|| format!("cannot open {}", dest_parent.display()))?
                .into();
            let dest_name = dest.file_name().unwrap_or(name);
            match rename_noreplace(src_dir, name, &dest_dir, dest_name) {
                Ok(()) => {
                    let _ = nix::unistd::fsync(&dest_dir);
                    let _ = nix::unistd::fsync(src_dir);
                    return Ok(dest);
                }
                Err(Errno::EEXIST) | Err(Errno::ENOTEMPTY) => continue,
                // Across filesystems rename checks nothing else: the copy
                // must not overwrite either.
                Err(Errno::EXDEV) if fs::symlink_metadata(&dest).is_ok() => continue,
                Err(Errno::EXDEV) => {
                    copy_then_remove(src_path, &dest)?;
                    return Ok(dest);
                }
                Err(e) => {
                    return Err(io::Error::from(e)).with_context(|| {
                        format!(
                            "cannot move {} into the trash as {}",
                            src_path.display(),
                            dest.display()
                        )
                    })
                }
            }
        }
        Err(anyhow!(
            "cannot move {} into the trash: {MAX_ATTEMPTS} names under {} are taken",
            src_path.display(),
            day_dir.display()
        ))
    }

    /// Delete the day folders older than `days` days (by their name: a
    /// folder named for a day more than `days` days before today). Anything
    /// else in the trash is left alone. Returns how many folders went.
    pub fn expire(&self, days: u32) -> Result<usize> {
        let today = Local::now().date_naive();
        let cutoff = today
            .checked_sub_days(chrono::Days::new(u64::from(days)))
            .unwrap_or(NaiveDate::MIN);
        let entries = fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list the trash {}", self.dir.display()))?;
        let mut removed = 0;
        let mut failed = Vec::new();
        for entry in entries {
            let entry =
                entry.with_context(|| format!("cannot list the trash {}", self.dir.display()))?;
            let Some(day) = entry
                .file_name()
                .to_str()
                .and_then(|n| NaiveDate::parse_from_str(n, "%Y-%m-%d").ok())
            else {
                continue;
            };
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if day >= cutoff || !is_dir {
                continue;
            }
            // remove_dir_all never follows symlinks inside the tree.
            match fs::remove_dir_all(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => failed.push(format!("{}: {e}", entry.path().display())),
            }
        }
        if !failed.is_empty() {
            bail!(
                "trash expiry removed {removed} day folder(s) but could not remove {}",
                failed.join("; ")
            );
        }
        Ok(removed)
    }
}

/// `renameat2(RENAME_NOREPLACE)`, falling back to check-then-rename on a
/// filesystem that does not support the flag (the trash is ours: the race is
/// with ourselves only).
fn rename_noreplace(
    src_dir: &OwnedFd,
    name: &OsStr,
    dest_dir: &OwnedFd,
    dest_name: &OsStr,
) -> nix::Result<()> {
    match renameat2(
        src_dir,
        name,
        dest_dir,
        dest_name,
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
            match nix::sys::stat::fstatat(
                dest_dir,
                dest_name,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(_) => Err(Errno::EEXIST),
                Err(Errno::ENOENT) => renameat(src_dir, name, dest_dir, dest_name),
                Err(e) => Err(e),
            }
        }
        other => other,
    }
}

/// The trash is on another filesystem: copy the tree (contents, modes,
/// owners, mtimes, symlinks as symlinks), fsync it, and only then remove the
/// original. A failed copy is removed again and the original kept.
fn copy_then_remove(src: &Path, dest: &Path) -> Result<()> {
    if let Err(e) = copy_tree(src, dest) {
        let _ = match fs::symlink_metadata(dest) {
            Ok(md) if md.is_dir() => fs::remove_dir_all(dest),
            Ok(_) => fs::remove_file(dest),
            Err(_) => Ok(()),
        };
        return Err(e).with_context(|| {
            format!(
                "cannot copy {} into the trash on another filesystem ({}); it was left in place",
                src.display(),
                dest.display()
            )
        });
    }
    if let Some(parent) = dest.parent() {
        let _ = File::open(parent).and_then(|d| d.sync_all());
    }
    let md = fs::symlink_metadata(src).with_context(|| format!("cannot stat {}", src.display()))?;
    if md.is_dir() {
        fs::remove_dir_all(src)
    } else {
        fs::remove_file(src)
    }
    .with_context(|| {
        format!(
            "copied {} into the trash as {}, but cannot remove the original",
            src.display(),
            dest.display()
        )
    })?;
    if let Some(parent) = src.parent() {
        let _ = File::open(parent).and_then(|d| d.sync_all());
    }
    Ok(())
}

fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    let md = fs::symlink_metadata(src).with_context(|| format!("cannot stat {}", src.display()))?;
    let ft = md.file_type();
    let times = fs::FileTimes::new().set_modified(
        md.modified()
            .with_context(|| format!("cannot read the mtime of {}", src.display()))?,
    );
    if ft.is_symlink() {
        let target =
            fs::read_link(src).with_context(|| format!("cannot read {}", src.display()))?;
        std::os::unix::fs::symlink(&target, dest)
            .with_context(|| format!("cannot create {}", dest.display()))?;
        // Owner is best effort in the trash (needs root).
        let _ = std::os::unix::fs::lchown(dest, Some(md.uid()), Some(md.gid()));
    } else if ft.is_dir() {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dest)
            .with_context(|| format!("cannot create {}", dest.display()))?;
        for entry in fs::read_dir(src).with_context(|| format!("cannot list {}", src.display()))? {
            let entry = entry.with_context(|| format!("cannot list {}", src.display()))?;
            copy_tree(&entry.path(), &dest.join(entry.file_name()))?;
        }
        let d = File::open(dest).with_context(|| format!("cannot open {}", dest.display()))?;
        let _ = std::os::unix::fs::fchown(&d, Some(md.uid()), Some(md.gid()));
        d.set_permissions(fs::Permissions::from_mode(md.mode() & 0o7777))
            .with_context(|| format!("cannot set the mode of {}", dest.display()))?;
        d.set_times(times)
            .with_context(|| format!("cannot set the mtime of {}", dest.display()))?;
        d.sync_all()
            .with_context(|| format!("cannot fsync {}", dest.display()))?;
    } else if ft.is_file() {
        let mut from = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(src)
            .with_context(|| format!("cannot open {}", src.display()))?;
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)
            .with_context(|| format!("cannot create {}", dest.display()))?;
        io::copy(&mut from, &mut to)
            .with_context(|| format!("cannot copy {} to {}", src.display(), dest.display()))?;
        let _ = std::os::unix::fs::fchown(to.as_fd(), Some(md.uid()), Some(md.gid()));
        to.set_permissions(fs::Permissions::from_mode(md.mode() & 0o7777))
            .with_context(|| format!("cannot set the mode of {}", dest.display()))?;
        to.set_times(times)
            .with_context(|| format!("cannot set the mtime of {}", dest.display()))?;
        to.sync_all()
            .with_context(|| format!("cannot fsync {}", dest.display()))?;
    } else {
        bail!(
            "{} is a device, fifo or socket: not copied to a trash on another filesystem",
            src.display()
        );
    }
    Ok(())
}
