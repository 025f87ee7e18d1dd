//! The active loop's watch on its sync paths, in the two-server lab:
//! with `sync.interval` at an hour, only the watch can explain a change
//! reaching the standby. Also `sip-ha sync` handed to a running loop.
//! Needs root; skips otherwise.
//!
//! `bench_sync_latency` (ignored; `bench/sync-latency.sh` runs it) times
//! 100 edits from the active server's file to the standby's copy.

mod common;
mod lab;

use lab::{Lab, LabOptions, Role};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(45);

/// A lab whose master's loop pushes `<lab dir>/data` (leaving out `*.swp`)
/// and whose slave receives it under its own directory (see
/// lifecycle.rs), with `fill` run on the data before the loops start. The
/// data and the slave's copy of it.
fn sync_lab(fill: impl FnOnce(&Path)) -> (Lab, PathBuf, PathBuf) {
    let options = LabOptions::default()
        .set("sync.interval", "\"1h\"")
        .append("[[sync.path]]\npath = \"{lab_dir}/data\"\nexclude = [\"*.swp\"]\n")
        .serve_args("--sync-prefix {node_dir}/recv")
        .loop_args(&["-l"]);
    let lab = Lab::start(options);
    let data = lab.dir().join("data");
    std::fs::create_dir_all(&data).unwrap();
    fill(&data);
    lab.start_loops();
    let settled = lab.wait_until(PATIENCE, || {
        lab.holder() == Some(Role::Master) && lab.state_of(Role::Slave) == "normal"
    });
    assert!(settled, "never settled:\n{}", lab.diagnostics());
    let mirror = lab
        .slave()
        .dir()
        .join("recv")
        .join(data.strip_prefix("/").unwrap());
    (lab, data, mirror)
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Wait until `path` holds `want`; fail saying `what` did not arrive.
fn must_arrive(lab: &Lab, path: &Path, want: &str, what: &str) {
    let arrived = lab.wait_until(PATIENCE, || read(path).as_deref() == Some(want));
    assert!(arrived, "{what}:\n{}", lab.diagnostics());
}

#[test]
fn the_watch_pushes_edits_new_files_and_deletes_but_not_excluded_files() {
    if !lab::root_or_skip() {
        return;
    }
    let (lab, data, mirror) = sync_lab(|data| {
        std::fs::create_dir_all(data.join("voicemail/1000/INBOX")).unwrap();
        std::fs::write(data.join("extensions.conf"), "[default]\n").unwrap();
        std::fs::write(data.join("voicemail/1000/INBOX/msg0000.txt"), "m0\n").unwrap();
        std::fs::write(data.join("keep.conf"), "as on the master\n").unwrap();
    });
    // The first push, when the master became active.
    must_arrive(
        &lab,
        &mirror.join("keep.conf"),
        "as on the master\n",
        "first push",
    );

    std::fs::write(data.join("extensions.conf"), "[default]\nexten => 1\n").unwrap();
    let edited = mirror.join("extensions.conf");
    must_arrive(&lab, &edited, "[default]\nexten => 1\n", "edit not pushed");
    std::fs::create_dir_all(data.join("voicemail/1001/INBOX")).unwrap();
    std::fs::write(data.join("voicemail/1001/INBOX/msg0000.txt"), "new\n").unwrap();
    let new = mirror.join("voicemail/1001/INBOX/msg0000.txt");
    must_arrive(&lab, &new, "new\n", "new file not pushed");
    std::fs::remove_file(data.join("voicemail/1000/INBOX/msg0000.txt")).unwrap();
    let gone = lab.wait_until(PATIENCE, || {
        !mirror.join("voicemail/1000/INBOX/msg0000.txt").exists()
    });
    assert!(gone, "delete not pushed:\n{}", lab.diagnostics());

    // Each push logs the first change that started it (with -l): the
    // excluded file, written first, must be in none of them.
    std::fs::write(data.join("notes.swp"), "an editor's swap file\n").unwrap();
    std::fs::write(data.join("marker.conf"), "after the swap file\n").unwrap();
    must_arrive(
        &lab,
        &mirror.join("marker.conf"),
        "after the swap file\n",
        "marker not pushed",
    );
    // The push logs its line once the standby has confirmed it.
    let logged = lab.wait_until(PATIENCE, || {
        lab.master().loop_log().contains("/data/marker.conf)")
    });
    let log = lab.master().loop_log();
    assert!(logged, "{log}");
    assert!(
        !log.contains("notes.swp"),
        "the excluded file started a push:\n{log}"
    );
    assert!(!mirror.join("notes.swp").exists());

    // An edit by hand on the standby: only a push undoes it.
    std::fs::write(mirror.join("keep.conf"), "edited on the standby\n").unwrap();

    // `sip-ha sync` with the loop running: handed to it (on its own it
    // would find the lock held), --dry-run passed through.
    let out = lab.master().sip_ha_ok(&["sync", "--dry-run"]);
    assert!(out.contains("dry run, nothing changed"), "{out}");
    assert!(out.contains("keep.conf"), "lists the change: {out}");
    assert_eq!(
        read(&mirror.join("keep.conf")).as_deref(),
        Some("edited on the standby\n"),
        "a dry run changed the standby"
    );
    let out = lab.master().sip_ha_ok(&["sync"]);
    let summary = out.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("sync: 1 files sent"),
        "the loop's summary: {out}"
    );
    assert_eq!(
        read(&mirror.join("keep.conf")).as_deref(),
        Some("as on the master\n"),
        "the push is done when the command returns"
    );
    // On the standby, its loop refuses.
    let out = lab.slave().sip_ha(&["sync"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("this server is standby"), "{err}");
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `SIPHA_BENCH_EDITS` edits (default 100), one after another, of a file
/// on the active server in a tree of `SIPHA_BENCH_FILES` other files
/// (default 1000, 100 per directory): the time from each write until the
/// standby's copy has the new content (polled every millisecond), p50 and
/// p95. Reports, does not assert times.
#[test]
#[ignore]
fn bench_sync_latency() {
    if !lab::root_or_skip() {
        return;
    }
    let (edits, files) = (
        env_number("SIPHA_BENCH_EDITS", 100),
        env_number("SIPHA_BENCH_FILES", 1000),
    );
    let (lab, data, mirror) = sync_lab(|data| {
        for i in 0..files {
            let dir = data.join(format!("d{:04}", i / 100));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("f{i}")), format!("{i}\n")).unwrap();
        }
        std::fs::write(data.join("edited.conf"), "edit 0\n").unwrap();
    });
    must_arrive(&lab, &mirror.join("edited.conf"), "edit 0\n", "first push");
    let file = data.join("edited.conf");
    let copy = mirror.join("edited.conf");
    let mut times = Vec::new();
    for n in 1..=edits {
        let want = format!("edit {n}\n");
        let start = Instant::now();
        std::fs::write(&file, &want).unwrap();
        let arrived = lab::wait_until_every(Duration::from_millis(1), PATIENCE, || {
            read(&copy).as_deref() == Some(want.as_str())
        });
        assert!(arrived, "edit {n} never arrived:\n{}", lab.diagnostics());
        times.push(start.elapsed().as_secs_f64());
        // Apart, so that each edit is a push of its own.
        std::thread::sleep(Duration::from_millis(300));
    }
    times.sort_by(|a, b| a.total_cmp(b));
    eprintln!(
        "sync latency: edits={edits} files={files} p50={:.3}s p95={:.3}s min={:.3}s max={:.3}s",
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        times[0],
        times[times.len() - 1]
    );
}
