//! `kill -9` of either side of `sip-ha sync` at random points, 50 times
//! (issue 5): the standby never holds a partial file under its final name,
//! and the next run completes.
//!
//! The master's tree ([`populate`]): a few hundred small files, a few medium
//! ones, two large ones (tens of MiB, so that a run lasts long enough to be
//! cut), some symlinks. Each iteration changes a random part of it
//! ([`change`]: edits, appends, new files and directories, deletions,
//! mode-only changes, symlinks, and always a few KiB in the middle of one
//! large file), starts `sip-ha sync`, and after a random delay (up to the
//! length of a whole run, measured once first) sends SIGKILL to either the
//! sender (`sip-ha sync`) or the receiver (`sip-ha serve` on the standby,
//! started by sshd, found by its command line in /proc). Once neither side
//! runs any more:
//!
//! * every path on the standby, the trash and sip-ha's temp files aside, is
//!   as it was before the change or as it is after: a file has exactly its
//!   old content or its new one (no partial file, no mix), a file the change
//!   kept is never missing, and nothing else is there (no conflict copy:
//!   only the master changed anything);
//! * the next `sip-ha sync` exits 0 with its summary and no conflict, and
//!   then the trees match (content, mode, mtime to the nanosecond,
//!   symlinks) with no temp file left.
//!
//! Only what a user sees is judged, not how the receiver commits (fsync per
//! file or per batch...). At the end, enough kills must have found their
//! victim running and cut a transfer, or the checks proved little. About a
//! minute and a half on two busy cores.
//!
//! Every random choice but the moment of each kill comes from one seed,
//! printed first: `SIP_HA_KILL_SEED=<seed>` runs the same trees and changes
//! again (the kills land wherever real time puts them).

mod common;

use common::sync_pair::{assert_same, summary, text, Pair};
use common::tree::{set_mtime, walk};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sip_ha::sync::receive::{is_temp_name, CONFLICT_MARKER, TEMP_MARKER};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ITERATIONS: u64 = 50;

/// Sizes of the two large files.
const LARGE: [u64; 2] = [24 << 20, 12 << 20];

/// Files from this size on are "medium", from `LARGE_MIN` on "large".
const MEDIUM_MIN: u64 = 128 << 10;
const LARGE_MIN: u64 = 8 << 20;

/// How long anything may take before the test gives up on it (a hang is a
/// failure too, but the machine may be slow and busy).
const TIMEOUT: Duration = Duration::from_secs(120);

/// xorshift64, seeded through splitmix64: one stream per use of the seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut z = seed.wrapping_add(stream.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[self.below(items.len() as u64) as usize])
        }
    }

    fn bytes(&mut self, n: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(n as usize + 8);
        while (v.len() as u64) < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n as usize);
        v
    }

    fn mode(&mut self) -> u32 {
        *self.pick(&[0o644, 0o600, 0o640, 0o755, 0o664]).unwrap()
    }

    /// Give `path` a random mtime, nanoseconds included.
    fn touch(&mut self, path: &Path) {
        let secs = 1_500_000_000 + self.below(200_000_000) as i64;
        set_mtime(path, secs, self.below(1_000_000_000) as i64);
    }
}

/// What a path is, as far as "old or new version" goes.
#[derive(Clone, PartialEq, Eq)]
enum Version {
    File { size: u64, hash: [u8; 32] },
    Dir,
    Link(PathBuf),
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Version::File { size, hash } => {
                write!(f, "a file of {size} bytes, blake3 ")?;
                hash[..6].iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            Version::Dir => write!(f, "a directory"),
            Version::Link(target) => write!(f, "a symlink to {}", target.display()),
        }
    }
}

type Versions = BTreeMap<PathBuf, Version>;

fn versions(root: &Path) -> Versions {
    walk(root, |path, _| version(path))
}

/// What `path` is (`None` if it is gone).
fn version(path: &Path) -> Option<Version> {
    let md = fs::symlink_metadata(path).ok()?;
    Some(if md.file_type().is_symlink() {
        Version::Link(fs::read_link(path).ok()?)
    } else if md.is_dir() {
        Version::Dir
    } else {
        let data = fs::read(path).ok()?;
        Version::File {
            size: data.len() as u64,
            hash: *blake3::hash(&data).as_bytes(),
        }
    })
}

/// The paths of `v` that are files of a size in `sizes`.
fn files(v: &Versions, sizes: std::ops::Range<u64>) -> Vec<PathBuf> {
    v.iter()
        .filter(|(_, v)| matches!(v, Version::File { size, .. } if sizes.contains(size)))
        .map(|(p, _)| p.clone())
        .collect()
}

fn links(v: &Versions) -> Vec<PathBuf> {
    v.iter()
        .filter(|(_, v)| matches!(v, Version::Link(_)))
        .map(|(p, _)| p.clone())
        .collect()
}

/// The directories of `v`, with the root itself as "".
fn dirs(v: &Versions) -> Vec<PathBuf> {
    std::iter::once(PathBuf::new())
        .chain(
            v.iter()
                .filter(|(_, v)| **v == Version::Dir)
                .map(|(p, _)| p.clone()),
        )
        .collect()
}

fn write_file(path: &Path, data: &[u8], mode: u32, rng: &mut Rng) {
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    rng.touch(path);
}

fn small(rng: &mut Rng) -> Vec<u8> {
    let n = rng.below(4097);
    rng.bytes(n)
}

fn medium(rng: &mut Rng) -> Vec<u8> {
    let n = MEDIUM_MIN + rng.below(2 << 20);
    rng.bytes(n)
}

/// The master's first tree.
fn populate(src: &Path, rng: &mut Rng) {
    let dirs = [
        "etc",
        "etc/pjsip.d",
        "monitor",
        "sounds/en",
        "sounds/fr",
        "tftp",
        "voicemail/default/1001/INBOX",
        "voicemail/default/1002/INBOX",
        "voicemail/default/1003/Old",
    ];
    for d in dirs {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    let dirs: Vec<PathBuf> = dirs.iter().map(|d| src.join(d)).collect();
    let names = (0..300)
        .map(|i| (format!("f{i:03}.conf"), false))
        .chain((0..5).map(|i| (format!("m{i}.wav"), true)));
    for (name, is_medium) in names {
        let data = if is_medium { medium(rng) } else { small(rng) };
        let mode = rng.mode();
        let path = rng.pick(&dirs).unwrap().join(name);
        write_file(&path, &data, mode, rng);
    }
    for (i, size) in LARGE.into_iter().enumerate() {
        let data = rng.bytes(size);
        let dir = &dirs[[2, 3][i]];
        write_file(&dir.join(format!("large{i}.wav")), &data, 0o640, rng);
    }
    for i in 0..10 {
        let target = format!("../etc/f{:03}.conf", rng.below(300));
        std::os::unix::fs::symlink(target, rng.pick(&dirs).unwrap().join(format!("l{i}"))).unwrap();
    }
}

/// Change a random part of the tree `now` describes; returns a line saying
/// how much of each kind.
fn change(src: &Path, now: &Versions, rng: &mut Rng) -> String {
    let smalls = files(now, 0..MEDIUM_MIN);
    let not_large = files(now, 0..LARGE_MIN);
    let larges = files(now, LARGE_MIN..u64::MAX);
    let mediums = files(now, MEDIUM_MIN..LARGE_MIN);
    let dirs = dirs(now);
    let mut done = BTreeMap::<&str, u64>::new();
    let mut count = |what| *done.entry(what).or_default() += 1;

    for _ in 0..rng.below(13) {
        let p = src.join(rng.pick(&smalls).unwrap());
        let data = small(rng);
        let mode = if rng.one_in(5) {
            rng.mode()
        } else {
            fs::metadata(&p).unwrap().mode() & 0o7777
        };
        write_file(&p, &data, mode, rng);
        count("edit");
    }
    for _ in 0..rng.below(4) {
        let p = src.join(rng.pick(&not_large).unwrap());
        let n = 1 + rng.below(16 << 10);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&rng.bytes(n)).unwrap();
        drop(f);
        rng.touch(&p);
        count("append");
    }
    for _ in 0..rng.below(3) {
        let p = src.join(rng.pick(&not_large).unwrap());
        let mode = rng.mode();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        rng.touch(&p);
        count("mode");
    }
    if rng.one_in(4) {
        let p = src.join(rng.pick(&mediums).unwrap());
        let data = rng.bytes(fs::metadata(&p).unwrap().len());
        fs::write(&p, data).unwrap();
        rng.touch(&p);
        count("rewrite medium");
    }
    if rng.one_in(2) {
        let target = format!("../elsewhere/{}", rng.below(1000));
        let p = match rng.pick(&links(now)) {
            Some(l) if rng.one_in(2) => {
                fs::remove_file(src.join(l)).unwrap();
                src.join(l)
            }
            _ => src
                .join(rng.pick(&dirs).unwrap())
                .join(format!("l{:x}", rng.next())),
        };
        std::os::unix::fs::symlink(target, p).unwrap();
        count("symlink");
    }
    // A few KiB in the middle of a large file, in place.
    let p = src.join(rng.pick(&larges).unwrap());
    let size = fs::metadata(&p).unwrap().len();
    let n = 1 + rng.below(64 << 10);
    let at = size / 3 + rng.below(size / 3);
    File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .write_all_at(&rng.bytes(n), at)
        .unwrap();
    rng.touch(&p);
    count("large");
    for _ in 0..rng.below(9) {
        let mut dir = src.join(rng.pick(&dirs).unwrap());
        if rng.one_in(5) {
            dir.push(format!("n{:x}", rng.next()));
            let mode = *rng.pick(&[0o755, 0o750, 0o700]).unwrap();
            fs::DirBuilder::new().mode(mode).create(&dir).unwrap();
            count("new dir");
        }
        let data = if rng.one_in(8) {
            medium(rng)
        } else {
            small(rng)
        };
        let mode = rng.mode();
        write_file(&dir.join(format!("c{:x}", rng.next())), &data, mode, rng);
        count("create");
    }
    // Deletions last, so that nothing above works in a deleted directory.
    for _ in 0..rng.below(7) {
        let p = src.join(rng.pick(&smalls).unwrap());
        if fs::remove_file(&p).is_ok() {
            count("delete");
        }
    }
    if rng.one_in(6) {
        let made: Vec<&PathBuf> = dirs
            .iter()
            .filter(|d| d.file_name().is_some_and(|n| n.as_bytes()[0] == b'n'))
            .collect();
        if let Some(d) = rng.pick(&made) {
            if fs::remove_dir_all(src.join(d)).is_ok() {
                count("delete dir");
            }
        }
    }
    format!("{done:?}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Sender,
    Receiver,
}

/// The processes whose command line (its arguments, split) passes `test`.
fn processes(test: impl Fn(&[&[u8]]) -> bool) -> Vec<Pid> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap() {
        let e = e.unwrap();
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if test(&args) {
            found.push(Pid::from_raw(pid));
        }
    }
    found
}

/// The running `sip-ha serve` processes of `pair`'s standby: its command
/// line is `<sip-ha> --config <config> --node slave serve ...` (sshd runs
/// it with `exec`). A process that has exited (a zombie) has no command
/// line.
fn receivers(pair: &Pair) -> Vec<Pid> {
    let config = pair.config.as_os_str().as_bytes();
    processes(|args| {
        args.contains(&b"serve".as_slice()) && args.windows(2).any(|w| w == [b"--config", config])
    })
}

/// On drop, SIGKILL what the test's runs left behind: the SSH masters of
/// the killed senders (they would exit on their own a minute later), found
/// by the test's directory in their command line.
struct Leftovers(PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let dir = self.0.as_os_str().as_bytes();
        for pid in processes(|args| args.iter().any(|a| a.windows(dir.len()).any(|w| w == dir))) {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "waited {TIMEOUT:?} for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Start `sip-ha sync` (its output to `log`), wait `delay`, SIGKILL the
/// victim, then wait until neither side runs. Returns whether the victim
/// was still running when killed.
fn run_and_kill(pair: &Pair, victim: Victim, delay: Duration, log: &Path) -> bool {
    wait_until("the last sip-ha serve to exit", || {
        receivers(pair).is_empty()
    });
    let out = File::create(log).unwrap();
    let mut child = pair
        .sync_command()
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let hit = match victim {
        Victim::Sender => {
            let running = child.try_wait().unwrap().is_none();
            // SIGKILL; the child is not reaped yet, so its pid is still ours.
            child.kill().unwrap();
            running
        }
        // From the sender's start to its end there is a receiver, once
        // sshd has started it.
        Victim::Receiver => loop {
            if let Some(pid) = receivers(pair).first() {
                let _ = kill(*pid, Signal::SIGKILL);
                break true;
            }
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(Duration::from_millis(1));
        },
    };
    wait_until("the sender to exit", || child.try_wait().unwrap().is_some());
    // A receiver that was handed requests before the sender died carries
    // them out, then sees the end of its input. One started later gets
    // nothing to do.
    let left = receivers(pair);
    wait_until("the receiver to exit after the sender", || {
        let now = receivers(pair);
        left.iter().all(|p| !now.contains(p))
    });
    hit
}

/// How a killed run left the standby.
#[derive(Debug, Default)]
struct Left {
    /// Changed paths in their new version (or gone, if deleted).
    new: usize,
    /// Changed paths still in their old version.
    old: usize,
    temps: usize,
}

/// Check the standby after a killed run against the versions before and
/// after the change: each path is as it was before or as it is after
/// (missing only if it is missing in one of them); every problem is listed.
fn judge(dst: &Path, old: &Versions, new: &Versions) -> Result<Left, Vec<String>> {
    let mut left = Left::default();
    let found = walk(dst, |path, md| {
        // A temp file, or the temp symlink a symlink is made as.
        if !md.is_dir() && is_temp_name(path.file_name().unwrap().as_bytes()) {
            left.temps += 1;
            None
        } else {
            version(path)
        }
    });
    let mut wrong = Vec::new();
    let paths: BTreeSet<&PathBuf> = old.keys().chain(new.keys()).chain(found.keys()).collect();
    for rel in paths {
        let (o, n, f) = (old.get(rel), new.get(rel), found.get(rel));
        if f != o && f != n {
            let show = |v: Option<&Version>| v.map_or("missing".to_string(), |v| format!("{v:?}"));
            wrong.push(format!(
                "{}: {} on the standby, {} before the change, {} after",
                rel.display(),
                show(f),
                show(o),
                show(n)
            ));
        } else if o != n {
            if f == n {
                left.new += 1;
            } else {
                left.old += 1;
            }
        }
    }
    if wrong.is_empty() {
        Ok(left)
    } else {
        Err(wrong)
    }
}

/// A full `sip-ha sync`: exit 0, a summary, no conflict; then the trees
/// match, with no temp file or conflict copy on the standby. Returns how
/// long the sync took.
fn complete(pair: &Pair, what: &str) -> Duration {
    let started = Instant::now();
    let out = pair.sync(&[]);
    let took = started.elapsed();
    assert!(out.status.success(), "{what}: sync failed:\n{}", text(&out));
    summary(&out);
    assert!(
        !text(&out).contains("conflict"),
        "{what}: a conflict though only the master changed:\n{}",
        text(&out)
    );
    assert_same(pair);
    let strays = walk(&pair.dst_root, |path, _| {
        let name = path.file_name().unwrap().to_string_lossy();
        (name.contains(TEMP_MARKER) || name.contains(CONFLICT_MARKER)).then_some(())
    });
    assert!(
        strays.is_empty(),
        "{what}: left on the standby: {:?}",
        strays.keys()
    );
    took
}

#[test]
fn kill_either_side_at_random_points() {
    let seed = match std::env::var("SIP_HA_KILL_SEED") {
        Ok(s) => s.parse().expect("SIP_HA_KILL_SEED: a decimal number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    eprintln!("seed {seed} (SIP_HA_KILL_SEED={seed} makes the same trees and changes)");
    let pair = Pair::new(100);
    let _leftovers = Leftovers(pair.config.parent().unwrap().to_path_buf());
    pair.make_active();
    populate(&pair.src, &mut Rng::new(seed, 0));
    complete(&pair, "the first copy");

    // How long a run takes: the delays go up to that.
    let mut old = versions(&pair.src);
    change(&pair.src, &old, &mut Rng::new(seed, 1));
    let full = complete(&pair, "the run that is timed");
    old = versions(&pair.src);
    eprintln!("a run takes {full:?}");

    let log = pair.dir.path().join("killed-run.log");
    // Kills that found their victim running, by victim; kills that left a
    // transfer half done (a temp file, or some changes made and some not).
    let (mut hits, mut cut) = ([0; 2], 0);
    for i in 0..ITERATIONS {
        let mut rng = Rng::new(seed, 2 + i);
        let changed = change(&pair.src, &old, &mut rng);
        let new = versions(&pair.src);
        let victim = if rng.one_in(2) {
            Victim::Sender
        } else {
            Victim::Receiver
        };
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 + 1));
        let hit = run_and_kill(&pair, victim, delay, &log);
        let what = format!(
            "iteration {i} (seed {seed}): {changed}, {victim:?} killed after {delay:?}{}",
            if hit { "" } else { " (it had already ended)" }
        );
        match judge(&pair.dst_root, &old, &new) {
            Ok(left) => {
                eprintln!("{what}: left {left:?}");
                hits[victim as usize] += usize::from(hit);
                cut += usize::from(left.temps > 0 || (left.new > 0 && left.old > 0));
            }
            Err(wrong) => panic!(
                "{what}: on the standby:\n  {}\nthe killed run said:\n{}",
                wrong.join("\n  "),
                fs::read_to_string(&log).unwrap_or_default()
            ),
        }
        complete(&pair, &format!("{what}, then the next run"));
        old = new;
    }
    eprintln!("kills of a running sender, receiver: {hits:?}; mid-transfer: {cut}");
    // The kills must land where they matter, or the checks above prove
    // little. About 20 of 25 per side hit, and about 20 of 50 cut a
    // transfer, when a run lasts as long as the one measured.
    for victim in [Victim::Sender, Victim::Receiver] {
        let n = hits[victim as usize];
        assert!(n >= 5, "only {n} kills found the {victim:?} running");
    }
    assert!(cut >= 3, "only {cut} kills cut a transfer");
}
