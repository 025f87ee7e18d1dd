//! `sip-ha run` from cron: the lock, the state carried from pass to pass,
//! the log lines, a corrupt state file. Each pass runs in an empty network
//! namespace, so the example config's addresses are never reached and every
//! probe fails at once: a server whose service is down.

mod common;

use common::example::{example_in, text};
use common::syslog::SyslogCapture;
use std::fs::OpenOptions;
use std::path::Path;
use std::process::Output;

const BIN: &str = env!("CARGO_BIN_EXE_sip-ha");

fn pass(log: &SyslogCapture, cfg: &Path, extra: &[&str]) -> Output {
    log.command(Path::new(BIN), true)
        .arg("--config")
        .arg(cfg)
        .args(["--node", "master"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_second_pass_exits_quietly_while_the_lock_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = example_in(dir.path());
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    // Hold the lock as a running pass or loop would.
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.path().join("state/lock"))
        .unwrap();
    lock.lock().unwrap();
    let log = SyslogCapture::new();
    let o = pass(&log, &cfg, &["run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(o.stdout.is_empty(), "quiet: {}", text(&o));
    assert!(!dir.path().join("state/state.json").exists(), "did nothing");
    let lines = log.lines();
    assert!(
        lines.iter().any(|l| l.contains("sip-ha[")
            && l.contains("holds")
            && l.contains("this pass does nothing")),
        "a log line says why: {lines:?}"
    );
    drop(lock);
    let o = pass(&log, &cfg, &["run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        dir.path().join("state/state.json").exists(),
        "ran once the lock was free"
    );
}

#[test]
fn passes_carry_state_until_the_service_counts_as_down() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = example_in(dir.path());
    let log = SyslogCapture::new();
    // fail_after = 3 in the example: three failed passes.
    for _ in 0..3 {
        let o = pass(&log, &cfg, &["run"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("state/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["memory"]["health"], "down");
    assert_eq!(state["memory"]["fail_streak"], 3);
    assert_eq!(
        state["memory"]["stance"], "yield",
        "never active while down"
    );
    let history = std::fs::read_to_string(dir.path().join("state/history.log")).unwrap();
    assert!(
        history.contains("master service-down: local service failed 3 checks in a row"),
        "{history}"
    );
    let lines = log.lines();
    assert!(
        lines.iter().any(|l| l.contains("service-down")),
        "{lines:?}"
    );

    let o = pass(&log, &cfg, &["-v"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "critical: {out}");
    assert!(out.contains("SERVICE DOWN LOCALLY"), "{out}");
    assert!(
        out.contains("one of the services on this server needs attention"),
        "{out}"
    );
    assert!(out.contains("service-down"), "history on the screen: {out}");
}

#[test]
fn dash_l_logs_each_probe() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = example_in(dir.path());
    let log = SyslogCapture::new();
    let o = pass(&log, &cfg, &["run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        !log.lines().iter().any(|l| l.contains("probe sip:")),
        "no detail without -l"
    );
    let o = pass(&log, &cfg, &["-l", "run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines = log.lines();
    assert!(
        lines.iter().any(|l| l.contains("probe sip: FAIL")),
        "-l logs each probe: {lines:?}"
    );
}

#[test]
fn a_corrupt_state_file_is_kept_aside_and_the_node_starts_as_standby() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = example_in(dir.path());
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(
        dir.path().join("state/state.json"),
        b"{\"format\":1,\"node\":\"mas",
    )
    .unwrap();
    let log = SyslogCapture::new();
    let o = pass(&log, &cfg, &["run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is corrupt") && err.contains("safe defaults"),
        "{err}"
    );
    let kept = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("state.json.bad-")
        });
    assert!(kept);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("state/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["memory"]["stance"], "yield");
}

#[test]
fn the_loop_keeps_logging_after_the_syslog_daemon_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = example_in(dir.path());
    let mut log = SyslogCapture::new();
    let mut child = log
        .command(Path::new(BIN), true)
        .arg("--config")
        .arg(&cfg)
        .args(["--node", "master", "run", "--loop"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("state/loop.pid");
    fn wait(mut what: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if what() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }
    assert!(wait(|| pid_file.exists()), "the loop wrote its pid");
    let mut seen = Vec::new();
    assert!(
        wait(|| {
            seen.extend(log.lines());
            seen.iter().any(|l| l.contains("loop started"))
        }),
        "{seen:?}"
    );
    log.restart();
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", pid.trim()])
        .status()
        .unwrap();
    assert!(hup.success());
    let mut after = Vec::new();
    let got = wait(|| {
        after.extend(log.lines());
        after.iter().any(|l| l.contains("SIGHUP: reloaded"))
    });
    let _ = std::process::Command::new("kill")
        .args(["-TERM", pid.trim()])
        .status();
    let _ = child.wait();
    assert!(
        got,
        "no line reached the restarted syslog socket: {after:?}"
    );
}

#[test]
fn sip_ha_log_prints_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = example_in(dir.path());
    let log = SyslogCapture::new();
    for _ in 0..3 {
        pass(&log, &cfg, &["run"]);
    }
    let o = pass(&log, &cfg, &["log"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(out.contains("master service-down"), "{out}");
    let o = pass(&log, &cfg, &["log", "-n", "1"]);
    let last = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(last.lines().count(), 1, "{last}");
    assert_eq!(last.lines().next(), out.lines().last());
}
