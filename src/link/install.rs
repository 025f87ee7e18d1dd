//! Receiving a new copy of sip-ha from the other node (`sip-ha -c`).
//!
//! The peer's `authorized_keys` lets the link run nothing but `sip-ha serve`,
//! so `sip-ha -c` cannot copy files with `scp`: it sends them through the
//! protocol ([`Request::InstallBegin`](super::Request::InstallBegin), chunks,
//! [`InstallCommit`](super::Request::InstallCommit)) and `sip-ha serve` puts
//! them in place with a [`Receiver`]. The client only says *which* file it
//! sends ([`InstallTarget`]); the path is decided here, by the serving node
//! (its own executable, the config it was started with), so a client can
//! never write anywhere else.
//!
//! # How a file is replaced
//!
//! ```text
//!   begin    create .<name>.sip-ha-new.<random> next to the target
//!            (O_EXCL, the final mode), reserve the announced size
//!   chunk    append, hash (BLAKE3); refuse a byte beyond the announced size
//!   commit   size and hash must match, the content must be usable
//!            (a binary: ELF for this machine; a config: it must load),
//!            fsync the file,
//!            keep the old one: hard link <name> -> .<name>.prev.<random>,
//!              rename that over <name>.prev (a copy if links fail),
//!            rename the new file over <name>, fsync the directory
//! ```
//!
//! Each step that replaces something is a `rename(2)` within one directory,
//! so the target always exists and is always either the whole old file or
//! the whole new one, and the old one is in `<name>.prev` before the new one
//! takes its place. Anything that stops a transfer before the last rename
//! (an abort, a wrong hash, a refused content, a full disk, the client
//! vanishing) drops the [`Receiver`], which removes its temporary file: the
//! old file is left exactly as it was.
//!
//! A target that is a symbolic link is resolved first: the file it points to
//! is replaced and the link stays.

use super::protocol::InstallTarget;
use anyhow::{bail, Context};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of an installed configuration, whatever the client asks for: it
/// may hold secrets (the AMI password).
pub const CONFIG_MODE: u32 = 0o600;

/// The largest configuration accepted (it is parsed in memory).
pub const MAX_CONFIG_SIZE: u64 = 4 * 1024 * 1024;

/// What every Linux executable starts with.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// How much of a binary's start is kept to check its ELF header: the magic,
/// class, byte order, ... up to `e_machine` (bytes 18 and 19).
const ELF_HEAD: usize = 20;

/// Where a file went, as the serving node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The file that now holds the new content.
    pub path: String,
    /// Where the content it replaced is kept (`<path>.prev`); `None` if there
    /// was nothing to replace.
    pub previous: Option<String>,
}

/// One file being received. Dropping it before [`commit`](Receiver::commit)
/// succeeds removes the temporary file and leaves the target alone.
#[derive(Debug)]
pub struct Receiver {
    target: InstallTarget,
    /// The file to replace (symbolic links resolved).
    path: PathBuf,
    /// The temporary file next to it, until it is renamed into place.
    temp: Option<PathBuf>,
    file: File,
    size: u64,
    received: u64,
    hasher: blake3::Hasher,
    /// The first bytes of a binary, for the ELF check.
    head: Vec<u8>,
    /// The whole content of a config, to parse it before it is installed.
    config: Vec<u8>,
}

impl Receiver {
    /// Starts receiving `size` bytes to replace `path`, which is the file the
    /// serving node uses for `target`. `mode` is the binary's permission bits
    /// (only 0o777 are kept; it must be executable by its owner); a config is
    /// always written with [`CONFIG_MODE`].
    pub fn begin(
        target: InstallTarget,
        path: &Path,
        size: u64,
        mode: u32,
    ) -> anyhow::Result<Receiver> {
        let path = resolve(path)?;
        let mode = match target {
            InstallTarget::Config => CONFIG_MODE,
            InstallTarget::Binary => mode & 0o777,
        };
        match target {
            InstallTarget::Config if size > MAX_CONFIG_SIZE => bail!(
                "refusing a configuration of {size} bytes for {}: the limit is {MAX_CONFIG_SIZE}",
                path.display()
            ),
            InstallTarget::Binary if size < ELF_MAGIC.len() as u64 => bail!(
                "refusing a program of {size} bytes for {}: too short to be sip-ha",
                path.display()
            ),
            InstallTarget::Binary if mode & 0o100 == 0 => bail!(
                "refusing a program with mode {mode:04o} for {}: its owner could not run it",
                path.display()
            ),
            _ => {}
        }
        let (temp, file) = create_beside(&path, "sip-ha-new", mode)?;
        let mut receiver = Receiver {
            target,
            path,
            temp: Some(temp),
            file,
            size,
            received: 0,
            hasher: blake3::Hasher::new(),
            head: Vec::with_capacity(ELF_HEAD),
            config: Vec::new(),
        };
        // The mode asked for, not the mode the umask left.
        let temp = receiver.temp_path();
        receiver
            .file
            .set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", temp.display()))?;
        receiver.reserve()?;
        Ok(receiver)
    }

    /// What is being replaced.
    pub fn target(&self) -> InstallTarget {
        self.target
    }

    /// The file being replaced.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn temp_path(&self) -> PathBuf {
        self.temp.clone().unwrap_or_default()
    }

    /// Claims the announced size on disk now, so that a full disk is found
    /// before any byte travels. Filesystems that cannot are written as usual.
    fn reserve(&mut self) -> anyhow::Result<()> {
        let Ok(len) = libc::off_t::try_from(self.size) else {
            bail!("refusing a file of {} bytes: too large", self.size);
        };
        if len == 0 {
            return Ok(());
        }
        match nix::fcntl::posix_fallocate(&self.file, 0, len) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL) => Ok(()),
            Err(e) => Err(io::Error::from(e)).with_context(|| {
                format!(
                    "cannot make room for {} bytes in {}",
                    self.size,
                    parent(&self.path).display()
                )
            }),
        }
    }

    /// Appends the next bytes. An error means the transfer cannot go on: drop
    /// the receiver.
    pub fn chunk(&mut self, data: &[u8]) -> anyhow::Result<()> {
        let len = data.len() as u64;
        if self.received + len > self.size {
            bail!(
                "refusing more than the {} bytes announced for {} (got {} so far, then {len} more)",
                self.size,
                self.path.display(),
                self.received
            );
        }
        self.file
            .write_all(data)
            .with_context(|| format!("cannot write {}", self.temp_path().display()))?;
        self.hasher.update(data);
        self.received += len;
        match self.target {
            InstallTarget::Binary if self.head.len() < ELF_HEAD => {
                let take = (ELF_HEAD - self.head.len()).min(data.len());
                self.head.extend_from_slice(&data[..take]);
            }
            InstallTarget::Config => self.config.extend_from_slice(data),
            InstallTarget::Binary => {}
        }
        Ok(())
    }

    /// Checks what was received and puts it in place, keeping the file it
    /// replaces as `<name>.prev`. On error nothing has changed (the
    /// temporary file is removed when the receiver is dropped).
    pub fn commit(mut self, blake3: [u8; 32]) -> anyhow::Result<Installed> {
        let path = self.path.clone();
        if self.received != self.size {
            bail!(
                "refusing {}: got {} of the {} bytes announced",
                path.display(),
                self.received,
                self.size
            );
        }
        let got = self.hasher.finalize();
        if got.as_bytes() != &blake3 {
            bail!(
                "refusing {}: the bytes received have BLAKE3 {}, the sender's have {}; \
                 they were damaged on the way",
                path.display(),
                &got.to_hex()[..16],
                &blake3::Hash::from_bytes(blake3).to_hex()[..16]
            );
        }
        self.check_content()?;
        let temp = self.temp_path();
        self.file
            .sync_all()
            .with_context(|| format!("cannot write {} to disk", temp.display()))?;

        let previous = keep_previous(&path)?;
        fs::rename(&temp, &path).with_context(|| {
            format!(
                "cannot move {} into place as {}",
                temp.display(),
                path.display()
            )
        })?;
        self.temp = None;
        // The new file is in place and in use from now on: a failure here
        // only means it might not survive a power cut, not worth reporting
        // the install as failed (and the old one as unchanged) for.
        if let Err(e) = sync_dir(parent(&path)) {
            eprintln!(
                "sip-ha serve: {} is in place, but writing its directory to disk failed: {e}",
                path.display()
            );
        }
        Ok(Installed {
            path: path.display().to_string(),
            previous: previous.map(|p| p.display().to_string()),
        })
    }

    /// Refuses content the serving node could not use.
    fn check_content(&self) -> anyhow::Result<()> {
        let path = self.path.display();
        match self.target {
            InstallTarget::Binary => {
                if !self.head.starts_with(ELF_MAGIC) {
                    bail!(
                        "refusing {path}: what was sent is not a Linux program (no ELF header; \
                         it starts with \"{}\")",
                        super::protocol::printable(&self.head[..self.head.len().min(8)], 8)
                    );
                }
                if let Some(ours) = own_elf_head() {
                    let kind = |h: &[u8]| {
                        (
                            h.get(4..6).map(<[u8]>::to_vec),
                            h.get(18..20).map(<[u8]>::to_vec),
                        )
                    };
                    if self.head.len() >= ELF_HEAD && kind(&self.head) != kind(&ours) {
                        bail!(
                            "refusing {path}: the program sent is built for another kind of \
                             machine than this one (ELF class, byte order or machine differ)"
                        );
                    }
                }
                Ok(())
            }
            InstallTarget::Config => {
                let text = std::str::from_utf8(&self.config).map_err(|e| {
                    anyhow::anyhow!(
                        "refusing {path}: the configuration sent is not UTF-8 text (at byte {})",
                        e.valid_up_to()
                    )
                })?;
                crate::config::parse(text, &self.path)
                    .map(drop)
                    .with_context(|| {
                        format!("refusing {path}: the configuration sent does not load")
                    })
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = fs::remove_file(temp);
        }
    }
}

/// `path` with symbolic links resolved, or as given if it does not exist
/// yet. Refuses anything but an absolute path to a regular file (or
/// nothing) in an existing directory.
fn resolve(path: &Path) -> anyhow::Result<PathBuf> {
    if !path.is_absolute() || path.file_name().is_none() {
        bail!(
            "cannot install to {}: not an absolute file path",
            path.display()
        );
    }
    let path = match fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(e).with_context(|| format!("cannot resolve {}", path.display())),
    };
    match fs::metadata(&path) {
        Ok(m) if !m.is_file() => bail!(
            "cannot install to {}: it is there but not a regular file",
            path.display()
        ),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = parent(&path);
            if !dir.is_dir() {
                bail!(
                    "cannot install to {}: the directory {} does not exist",
                    path.display(),
                    dir.display()
                );
            }
        }
        Err(e) => return Err(e).with_context(|| format!("cannot look at {}", path.display())),
    }
    Ok(path)
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// Creates a new file `.<name>.<tag>.<random>` in `path`'s directory with
/// `O_EXCL`, so nothing existing is ever opened or followed.
fn create_beside(path: &Path, tag: &str, mode: u32) -> anyhow::Result<(PathBuf, File)> {
    let dir = parent(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut last = None;
    for _ in 0..8 {
        let temp = dir.join(format!(".{name}.{tag}.{}", random_suffix()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot create a temporary file in {}", dir.display())
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free name")))
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    if getrandom::fill(&mut bytes).is_err() {
        // Not secret, only distinct: O_EXCL catches a collision.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        bytes[..4].copy_from_slice(&nanos.to_le_bytes());
        bytes[4..].copy_from_slice(&(std::process::id() as u16).to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Keeps the current `path` (if any) as `<path>.prev`, replacing an older
/// `.prev`, without ever removing `path` itself. Returns the `.prev` path.
fn keep_previous(path: &Path) -> anyhow::Result<Option<PathBuf>> {
    match fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot look at {}", path.display())),
    }
    let mut prev = path.as_os_str().to_owned();
    prev.push(".prev");
    let prev = PathBuf::from(prev);

    // A hard link costs nothing and is the very file; a copy where links
    // are not allowed.
    let (staged, file) = create_beside(path, "prev", 0o600)?;
    drop(file);
    let linked = fs::remove_file(&staged).and_then(|()| fs::hard_link(path, &staged));
    let staged_result = match linked {
        Ok(()) => Ok(()),
        Err(_) => copy_file(path, &staged),
    };
    let result = staged_result
        .with_context(|| format!("cannot keep a copy of {}", path.display()))
        .and_then(|()| {
            fs::rename(&staged, &prev).with_context(|| {
                format!(
                    "cannot keep the current {} as {}",
                    path.display(),
                    prev.display()
                )
            })
        });
    // Also after a successful rename: when `staged` and `prev` were already
    // the same file, rename(2) leaves both names.
    let _ = fs::remove_file(&staged);
    result?;
    Ok(Some(prev))
}

/// Copies `from` to the new file `to` (which must not exist) with its mode,
/// and writes it to disk.
fn copy_file(from: &Path, to: &Path) -> io::Result<()> {
    let mut src = File::open(from)?;
    let mode = src.metadata()?.permissions().mode() & 0o7777;
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    io::copy(&mut src, &mut dst)?;
    dst.set_permissions(fs::Permissions::from_mode(mode))?;
    dst.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The start of this process's own executable, to check that a program sent
/// is for the same kind of machine.
fn own_elf_head() -> Option<Vec<u8>> {
    let mut head = vec![0u8; ELF_HEAD];
    File::open("/proc/self/exe")
        .and_then(|mut f| f.read_exact(&mut head))
        .ok()?;
    head.starts_with(ELF_MAGIC).then_some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const GOOD_CONFIG: &str = "[cluster]\nname = \"pbx\"\nservice_address = \"192.0.2.120/24\"\n\n\
        [nodes.master]\naddress = \"192.0.2.110\"\ninterface = \"eth0\"\n\n\
        [nodes.slave]\naddress = \"192.0.2.100\"\ninterface = \"eth0\"\n";

    /// A program for this machine: our own ELF header, then filler.
    fn program(filler: u8, len: usize) -> Vec<u8> {
        let mut bytes = own_elf_head().expect("tests run from an ELF executable");
        bytes.resize(len, filler);
        bytes
    }

    fn hash(bytes: &[u8]) -> [u8; 32] {
        *blake3::hash(bytes).as_bytes()
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// Sends `bytes` in chunks of `chunk` and commits with their hash.
    fn install(
        target: InstallTarget,
        path: &Path,
        bytes: &[u8],
        chunk: usize,
    ) -> anyhow::Result<Installed> {
        let mut rx = Receiver::begin(target, path, bytes.len() as u64, 0o755)?;
        for piece in bytes.chunks(chunk) {
            rx.chunk(piece)?;
        }
        rx.commit(hash(bytes))
    }

    /// A directory holding an old `sip-ha` and `sip-ha.toml`.
    fn old_files() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("sip-ha");
        let cfg = dir.path().join("sip-ha.toml");
        fs::write(&bin, b"old program").unwrap();
        fs::write(&cfg, b"# old config\n").unwrap();
        (dir, bin, cfg)
    }

    /// The old files are there, unchanged, and nothing else is.
    fn assert_untouched(dir: &Path, bin: &Path, cfg: &Path) {
        assert_eq!(fs::read(bin).unwrap(), b"old program");
        assert_eq!(fs::read(cfg).unwrap(), b"# old config\n");
        assert_eq!(
            names(dir),
            BTreeSet::from(["sip-ha".into(), "sip-ha.toml".into()]),
            "a temporary file was left behind"
        );
    }

    #[test]
    fn binary_replaced_and_previous_kept() {
        let (dir, bin, _) = old_files();
        let new = program(1, 3 * 1000 + 17);
        let done = install(InstallTarget::Binary, &bin, &new, 1000).unwrap();
        assert_eq!(done.path, bin.display().to_string());
        let prev = dir.path().join("sip-ha.prev");
        assert_eq!(done.previous, Some(prev.display().to_string()));
        assert_eq!(fs::read(&bin).unwrap(), new);
        assert_eq!(fs::read(&prev).unwrap(), b"old program");
        assert_eq!(mode(&bin), 0o755);

        // Again: the .prev is now the first new one.
        let newer = program(2, 5000);
        install(InstallTarget::Binary, &bin, &newer, 4096).unwrap();
        assert_eq!(fs::read(&bin).unwrap(), newer);
        assert_eq!(fs::read(&prev).unwrap(), new);
        assert_eq!(
            names(dir.path()),
            BTreeSet::from(["sip-ha".into(), "sip-ha.prev".into(), "sip-ha.toml".into()])
        );
    }

    #[test]
    fn first_install_has_no_previous() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("sip-ha");
        let done = install(InstallTarget::Binary, &bin, &program(0, 64), 10).unwrap();
        assert_eq!(done.previous, None);
        assert_eq!(names(dir.path()), BTreeSet::from(["sip-ha".into()]));
    }

    #[test]
    fn config_replaced_with_mode_0600() {
        let (dir, _, cfg) = old_files();
        fs::set_permissions(&cfg, fs::Permissions::from_mode(0o644)).unwrap();
        let done = install(InstallTarget::Config, &cfg, GOOD_CONFIG.as_bytes(), 7).unwrap();
        assert_eq!(fs::read_to_string(&cfg).unwrap(), GOOD_CONFIG);
        assert_eq!(mode(&cfg), CONFIG_MODE, "whatever the request said");
        let prev = dir.path().join("sip-ha.toml.prev");
        assert_eq!(done.previous, Some(prev.display().to_string()));
        assert_eq!(fs::read(&prev).unwrap(), b"# old config\n");
        assert_eq!(mode(&prev), 0o644, "the previous one as it was");
    }

    #[test]
    fn wrong_hash_refused() {
        let (dir, bin, cfg) = old_files();
        let new = program(1, 100);
        let mut rx = Receiver::begin(InstallTarget::Binary, &bin, 100, 0o755).unwrap();
        rx.chunk(&new).unwrap();
        let err = rx.commit(hash(b"something else")).unwrap_err().to_string();
        assert!(err.contains("damaged on the way"), "{err}");
        assert_untouched(dir.path(), &bin, &cfg);
    }

    #[test]
    fn more_bytes_than_announced_refused() {
        let (dir, bin, cfg) = old_files();
        let mut rx = Receiver::begin(InstallTarget::Binary, &bin, 30, 0o755).unwrap();
        rx.chunk(&program(1, 20)).unwrap();
        let err = rx.chunk(&[1; 11]).unwrap_err().to_string();
        assert!(
            err.starts_with("refusing more than the 30 bytes announced"),
            "{err}"
        );
        drop(rx);
        assert_untouched(dir.path(), &bin, &cfg);
    }

    #[test]
    fn fewer_bytes_than_announced_refused() {
        let (dir, bin, cfg) = old_files();
        let new = program(1, 50);
        let mut rx = Receiver::begin(InstallTarget::Binary, &bin, 51, 0o755).unwrap();
        rx.chunk(&new).unwrap();
        let err = rx.commit(hash(&new)).unwrap_err().to_string();
        assert!(err.contains("got 50 of the 51 bytes announced"), "{err}");
        assert_untouched(dir.path(), &bin, &cfg);
    }

    #[test]
    fn abort_leaves_the_old_file() {
        let (dir, bin, cfg) = old_files();
        let mut rx = Receiver::begin(InstallTarget::Binary, &bin, 100, 0o755).unwrap();
        rx.chunk(&program(1, 40)).unwrap();
        assert_eq!(names(dir.path()).len(), 3, "the temporary file exists");
        drop(rx);
        assert_untouched(dir.path(), &bin, &cfg);
    }

    #[test]
    fn config_that_does_not_load_refused_with_its_position() {
        let (dir, bin, cfg) = old_files();
        let bad = GOOD_CONFIG.replace("name = \"pbx\"", "nme = \"pbx\"");
        let err = install(InstallTarget::Config, &cfg, bad.as_bytes(), 1000).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with(&format!(
                "refusing {}: the configuration sent does not load: {}:2:1: ",
                cfg.display(),
                cfg.display()
            )),
            "{msg}"
        );
        assert!(msg.contains("nme"), "{msg}");
        assert_untouched(dir.path(), &bin, &cfg);

        let err = install(InstallTarget::Config, &cfg, b"name = \"\xff\"", 1000).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
        assert_untouched(dir.path(), &bin, &cfg);
    }

    #[test]
    fn non_elf_binary_refused() {
        let (dir, bin, cfg) = old_files();
        let script = b"#!/bin/sh\necho hi\n";
        let err = install(InstallTarget::Binary, &bin, script, 1000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a Linux program"), "{err}");
        assert!(err.contains("#!/bin/s"), "{err}");
        assert_untouched(dir.path(), &bin, &cfg);

        // An ELF file for another machine.
        let mut foreign = program(0, 64);
        foreign[18] ^= 0xff;
        let err = install(InstallTarget::Binary, &bin, &foreign, 1000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("another kind of machine"), "{err}");
        assert_untouched(dir.path(), &bin, &cfg);
    }

    #[test]
    fn begin_refusals() {
        let (dir, bin, cfg) = old_files();
        let err = Receiver::begin(InstallTarget::Binary, &bin, 100, 0o644).unwrap_err();
        assert!(err.to_string().contains("could not run it"), "{err}");
        let err = Receiver::begin(InstallTarget::Config, &cfg, MAX_CONFIG_SIZE + 1, 0).unwrap_err();
        assert!(err.to_string().contains("the limit is"), "{err}");
        let err =
            Receiver::begin(InstallTarget::Binary, Path::new("sip-ha"), 100, 0o755).unwrap_err();
        assert!(err.to_string().contains("not an absolute"), "{err}");
        let missing = dir.path().join("no/such/dir/sip-ha");
        let err = Receiver::begin(InstallTarget::Binary, &missing, 100, 0o755).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert_untouched(dir.path(), &bin, &cfg);
    }

    /// If the old file cannot be kept, it is not replaced.
    #[test]
    fn previous_that_cannot_be_kept_stops_the_install() {
        let (dir, bin, cfg) = old_files();
        let prev = dir.path().join("sip-ha.prev");
        fs::create_dir(&prev).unwrap();
        fs::write(prev.join("something"), b"x").unwrap();
        let err = install(InstallTarget::Binary, &bin, &program(1, 64), 1000).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("cannot keep the current"), "{msg}");
        fs::remove_dir_all(&prev).unwrap();
        assert_untouched(dir.path(), &bin, &cfg);
    }

    #[test]
    fn symlinked_target_replaces_the_file_it_points_to() {
        let (dir, _, cfg) = old_files();
        let real_dir = dir.path().join("etc");
        fs::create_dir(&real_dir).unwrap();
        let real = real_dir.join("real.toml");
        fs::rename(&cfg, &real).unwrap();
        std::os::unix::fs::symlink(&real, &cfg).unwrap();
        let done = install(InstallTarget::Config, &cfg, GOOD_CONFIG.as_bytes(), 1000).unwrap();
        assert_eq!(done.path, real.display().to_string());
        assert!(fs::symlink_metadata(&cfg).unwrap().is_symlink());
        assert_eq!(fs::read_to_string(&cfg).unwrap(), GOOD_CONFIG);
        assert_eq!(
            fs::read(real_dir.join("real.toml.prev")).unwrap(),
            b"# old config\n"
        );
    }
}
