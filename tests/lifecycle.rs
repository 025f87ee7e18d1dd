//! The resident loop's life in the two-server lab: hooks run on each change
//! with their environment (a failing one never blocks the move), SIGTERM
//! leaves the address where it is, SIGHUP reloads the config and keeps the
//! old one when the new one is invalid, and `failback = "auto"` hands back
//! after the hold-down. Needs root; skips otherwise.

mod common;
mod lab;

use lab::{Lab, LabOptions, Role};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(45);

fn settled(lab: &Lab) {
    let ok = lab.wait_until(PATIENCE, || {
        lab.holder() == Some(Role::Master) && lab.slave().status_json()["state"] == "normal"
    });
    assert!(ok, "never settled:\n{}", lab.diagnostics());
}

fn signal_loop(lab: &Lab, role: Role, sig: &str) {
    let pid =
        std::fs::read_to_string(lab.node(role).state_dir().join("loop.pid")).expect("loop.pid");
    let out = std::process::Command::new("kill")
        .args([&format!("-{sig}"), pid.trim()])
        .output()
        .unwrap();
    assert!(out.status.success(), "kill -{sig} {pid}");
}

#[test]
fn hooks_run_with_their_environment_and_a_failing_one_does_not_block() {
    // Each hook appends its environment to a file in the node's directory;
    // the master's on_standby hook also fails, which must not matter.
    let hooks = LabOptions::default()
        .set(
            "hooks.on_active",
            "\"echo active $SIPHA_STATE $SIPHA_NODE $SIPHA_PEER $SIPHA_ADDRESS >> {node_dir}/hooks.log\"",
        )
        .set(
            "hooks.on_standby",
            "\"echo standby $SIPHA_STATE $SIPHA_NODE >> {node_dir}/hooks.log; exit 3\"",
        )
        .set("hooks.timeout", "\"5s\"")
        .start_loops();
    let Some(lab) = Lab::start_or_skip(hooks) else {
        return;
    };
    settled(&lab);
    lab.master().kill_sip_service();
    let moved = lab.wait_until(PATIENCE, || lab.holder() == Some(Role::Slave));
    assert!(
        moved,
        "the failing hook blocked the move:\n{}",
        lab.diagnostics()
    );
    let read = |role: Role| {
        std::fs::read_to_string(lab.node(role).dir().join("hooks.log")).unwrap_or_default()
    };
    let ok = lab.wait_until(PATIENCE, || {
        read(Role::Slave).contains("active active slave master")
    });
    assert!(ok, "slave hooks: {:?}", read(Role::Slave));
    assert!(
        read(Role::Slave).contains(&lab.service_address().to_string()),
        "{}",
        read(Role::Slave)
    );
    let ok = lab.wait_until(PATIENCE, || {
        read(Role::Master).contains("standby standby master")
    });
    assert!(ok, "master hooks: {:?}", read(Role::Master));
    let failed = lab.wait_until(PATIENCE, || {
        lab.master()
            .loop_log()
            .contains("failed with exit status: 3")
    });
    assert!(
        failed,
        "the failing hook is logged:\n{}",
        lab.master().loop_log()
    );
}

#[test]
fn sigterm_stops_the_loop_and_leaves_the_address() {
    let Some(lab) = Lab::start_or_skip(LabOptions::default().start_loops()) else {
        return;
    };
    settled(&lab);
    let status = lab.master().stop_loop();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        lab.master().holds_service_address(),
        "a restart of sip-ha is not a failover"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        lab.holder(),
        Some(Role::Master),
        "and the slave does not take it"
    );
    lab.master().start_loop();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.holder(), Some(Role::Master), "nor after the restart");
}

#[test]
fn sighup_reloads_and_keeps_the_old_config_when_the_new_one_is_invalid() {
    let Some(lab) = Lab::start_or_skip(LabOptions::default().start_loops()) else {
        return;
    };
    settled(&lab);
    let cfg = lab.master().config_path();
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{good}\n[health]\nintervall = \"1s\"\n")).unwrap();
    signal_loop(&lab, Role::Master, "HUP");
    let refused = lab.wait_until(PATIENCE, || {
        lab.master()
            .loop_log()
            .contains("new configuration refused, keeping the old one")
    });
    assert!(refused, "{}", lab.master().loop_log());
    assert!(
        lab.master().loop_running(),
        "still running on the old config"
    );
    std::fs::write(&cfg, &good).unwrap();
    signal_loop(&lab, Role::Master, "HUP");
    let reloaded = lab.wait_until(PATIENCE, || {
        lab.master().loop_log().contains("SIGHUP: reloaded")
    });
    assert!(reloaded, "{}", lab.master().loop_log());
    assert_eq!(lab.holder(), Some(Role::Master));
}

#[test]
fn auto_failback_hands_back_after_the_hold_down() {
    let options = LabOptions::default()
        .set("cluster.failback", "\"auto\"")
        .set("cluster.failback_hold_down", "\"2s\"")
        .start_loops();
    let Some(lab) = Lab::start_or_skip(options) else {
        return;
    };
    settled(&lab);
    lab.master().kill_sip_service();
    let moved = lab.wait_until(PATIENCE, || lab.holder() == Some(Role::Slave));
    assert!(moved, "{}", lab.diagnostics());
    lab.master().start_sip_service();
    let back = lab.wait_until(PATIENCE, || lab.holder() == Some(Role::Master));
    assert!(back, "{}", lab.diagnostics());
    assert!(
        lab.slave().history().contains("auto-failback"),
        "{}",
        lab.slave().history()
    );
}

#[test]
fn the_active_loop_pushes_its_sync_paths_to_the_standby() {
    // Both "servers" share this machine's filesystem, so the slave's serve
    // receives under its own directory (hidden test option --sync-prefix):
    // <slave dir>/recv/<lab dir>/data mirrors <lab dir>/data.
    if !lab::root_or_skip() {
        return;
    }
    let options = LabOptions::default()
        .set("sync.interval", "\"1s\"")
        .append("[[sync.path]]\npath = \"{lab_dir}/data\"\n")
        .serve_args("--sync-prefix {node_dir}/recv")
        .start_loops();
    // The lab directory exists only once the lab starts, so the data is
    // written just after; until then the loop refuses the empty source.
    let lab = Lab::start(options);
    let data = lab.dir().join("data");
    std::fs::create_dir_all(data.join("voicemail/default/1000/INBOX")).unwrap();
    std::fs::write(
        data.join("extensions.conf"),
        "[default]\nexten => 1000,1,Answer()\n",
    )
    .unwrap();
    std::fs::write(
        data.join("voicemail/default/1000/INBOX/msg0000.txt"),
        "callerid=100\n",
    )
    .unwrap();
    settled(&lab);
    let mirror = lab
        .slave()
        .dir()
        .join("recv")
        .join(data.strip_prefix("/").unwrap());
    let arrived = lab.wait_until(PATIENCE, || {
        std::fs::read_to_string(mirror.join("voicemail/default/1000/INBOX/msg0000.txt"))
            .ok()
            .as_deref()
            == Some("callerid=100\n")
    });
    assert!(arrived, "not pushed:\n{}", lab.diagnostics());
    // A change on the active server follows within an interval or two.
    std::fs::write(
        data.join("extensions.conf"),
        "[default]\nexten => 1000,1,Voicemail(1000)\n",
    )
    .unwrap();
    let followed = lab.wait_until(PATIENCE, || {
        std::fs::read_to_string(mirror.join("extensions.conf"))
            .ok()
            .as_deref()
            == Some("[default]\nexten => 1000,1,Voicemail(1000)\n")
    });
    assert!(followed, "change not pushed:\n{}", lab.diagnostics());
    let status = lab.master().status_json();
    assert_eq!(status["last_sync"]["ok"], true, "{status:#}");
    // The source disappears (an unmounted disk): the push is refused, the
    // standby's copy is kept, and the operator is told.
    std::fs::rename(&data, lab.dir().join("data.away")).unwrap();
    let refused = lab.wait_until(PATIENCE, || lab.master().history().contains("sync-refused"));
    assert!(refused, "{}", lab.master().history());
    assert!(
        mirror.join("extensions.conf").exists(),
        "the standby's copy is kept"
    );
}
