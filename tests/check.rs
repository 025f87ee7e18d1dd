//! `sip-ha check` as a keepalived vrrp_script, a Pacemaker monitor or a
//! Nagios check would run it: against a real Kamailio, one line per probe,
//! exit 0 while it answers and 1 once it is killed.

mod common;

use common::kamailio::Kamailio;
use std::process::Command;

#[test]
fn check_exits_0_while_kamailio_answers_and_1_after_it_is_killed() {
    let mut k = Kamailio::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sip-ha.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[cluster]
name = "t"
service_address = "192.0.2.100/24"
state_dir = "{state}"
[nodes.master]
address = "192.0.2.1"
interface = "eth0"
[nodes.slave]
address = "192.0.2.2"
interface = "eth0"
[[health.check]]
kind = "sip-options"
name = "sip-udp"
target = "sip:ping@127.0.0.1:{port}"
[[health.check]]
kind = "sip-options"
name = "sip-tcp"
target = "sip:ping@127.0.0.1:{port};transport=tcp"
"#,
            state = dir.path().join("state").display(),
            port = k.port
        ),
    )
    .unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_sip-ha"))
            .arg("--config")
            .arg(&cfg)
            .arg("check")
            .output()
            .unwrap()
    };
    let o = run();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("OK   sip-udp:") && lines[0].contains("200"),
        "{out}"
    );
    assert!(lines[1].starts_with("OK   sip-tcp:"), "{out}");

    k.kill();
    let o = run();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.lines().all(|l| l.starts_with("FAIL")), "{out}");
    assert!(
        out.contains("refused"),
        "a killed server refuses at once: {out}"
    );
}
