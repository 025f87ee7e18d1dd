//! The binary as an operator runs it: help, -v, --json, check-config, and
//! bad configurations refused before anything is written.

mod common;

use common::example::{example_in, text};
use std::process::Command;

/// The binary, run in a new, empty network namespace (`unshare --net`):
/// `-v` probes the peer and the witness, and the example config's
/// 192.168.0.x addresses must not be reached from a test. In there, every
/// probe fails at once with "network unreachable" and nothing leaves the
/// machine.
fn bin() -> Command {
    let mut c = Command::new("unshare");
    c.args(["--net", "--"]).arg(env!("CARGO_BIN_EXE_sip-ha"));
    c.env_remove("SIP_HA_CONFIG");
    c
}

#[test]
fn help_lists_the_old_tools_flags() {
    for flag in ["-?", "-h"] {
        let o = bin().arg(flag).output().unwrap();
        assert!(o.status.success(), "{flag}: {}", text(&o));
        let out = text(&o);
        for f in [
            "-l, --log",
            "-v, --verify",
            "-c, --copy",
            "-d, --disable",
            "-f, --failover",
            "-c, --copy",
            "-?",
        ] {
            assert!(out.contains(f), "{flag} should list {f}:\n{out}");
        }
    }
}

#[test]
fn verify_prints_the_header_and_says_unknown_before_any_pass() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = example_in(dir.path());
    let o = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["--node", "master", "-v"])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(
        out.starts_with("SIP-HA High Availability Routines for Asterisk\n-v verify information:\n"),
        "{out}"
    );
    assert!(
        out.contains("master value      : 1 - this server is MASTER"),
        "{out}"
    );
    assert!(
        out.contains("service address   : 192.168.0.120 controlled by SIP-HA"),
        "{out}"
    );
    assert_eq!(o.status.code(), Some(3), "no pass has run: unknown");
    assert!(
        !dir.path().join("state/state.json").exists(),
        "-v writes no state"
    );
}

#[test]
fn verify_json_parses_and_has_the_fields() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = example_in(dir.path());
    let o = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["--node", "slave", "-v", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["node"], "slave");
    assert_eq!(v["role"], "slave");
    assert_eq!(v["active"], false);
    assert_eq!(v["service_address"], "192.168.0.120");
    assert_eq!(v["holds_address"], false);
    assert_eq!(v["state"], "unknown");
    // Nothing answers in an empty namespace: every path failed, no report.
    let paths = v["peer"]["paths"].as_array().expect("peer paths");
    let names: Vec<_> = paths.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ssh", "sip", "tcp"]);
    assert!(paths.iter().all(|p| p["ok"] == false));
    assert!(v["peer"]["report"].is_null());
    assert_eq!(v["local_health"][0]["name"], "sip");
    assert_eq!(v["local_health"][0]["ok"], false);
    assert!(v.get("last_change").is_some() && v.get("last_sync").is_some());
}

#[test]
fn config_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = example_in(dir.path());
    let o = bin()
        .env("SIP_HA_CONFIG", &cfg)
        .args(["--node", "master", "check-config"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("this server is the master (192.168.0.110 on eth0)"));
}

#[test]
fn unreadable_config_is_exit_3_for_verify() {
    let o = bin()
        .args(["--config", "/nonexistent/sip-ha.toml", "-v"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(
        text(&o).contains("/nonexistent/sip-ha.toml"),
        "{}",
        text(&o)
    );
}

#[test]
fn node_that_is_not_here_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = example_in(dir.path());
    // 192.168.0.110/100 are not on this machine: no --node, no identity.
    let o = bin()
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--node master|slave"), "{}", text(&o));
}

/// Each bad config is refused with its line, and no state is written.
#[test]
fn bad_configs_are_refused_with_line_and_nothing_written() {
    // (what to replace, with what, the text whose line the error must name,
    // words the error must say)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "fail_after = 3",
            "fail_after = 3\nfall_after = 3",
            "fall_after",
            "unknown",
        ),
        (
            "address = \"192.168.0.100\"",
            "address = \"192.168.0.110\"",
            "address = \"192.168.0.110\"\ninterface = \"eth1\"",
            "same address as the master",
        ),
        (
            "service_address = \"192.168.0.120/24\"",
            "service_address = \"192.168.0.110/24\"",
            "service_address",
            "management",
        ),
        (
            "interval = \"1s\"",
            "interval = \"0s\"",
            "interval = \"0s\"",
            "more than zero",
        ),
    ];
    for (from, to, marker, words) in cases {
        let dir = tempfile::tempdir().unwrap();
        let cfg = example_in(dir.path());
        let src = std::fs::read_to_string(&cfg).unwrap();
        assert!(src.contains(from), "example has {from}");
        let bad = src.replacen(from, to, 1);
        let at = bad.find(marker).expect("marker in the bad config");
        let line = bad[..at].matches('\n').count() + 1;
        std::fs::write(&cfg, &bad).unwrap();
        for args in [&["check-config"][..], &["-v"][..]] {
            let o = bin()
                .arg("--config")
                .arg(&cfg)
                .args(["--node", "master"])
                .args(args)
                .output()
                .unwrap();
            let out = text(&o);
            assert!(!o.status.success(), "{to}: refused");
            assert!(
                out.contains(&format!("sip-ha.toml:{line}:")),
                "{to}: names line {line}:\n{out}"
            );
            assert!(
                out.to_lowercase().contains(words),
                "{to}: says {words}:\n{out}"
            );
        }
        assert!(!dir.path().join("state").exists(), "{to}: nothing written");
    }
}

#[test]
fn check_config_never_prints_the_ami_secret() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = example_in(dir.path());
    let src = std::fs::read_to_string(&cfg).unwrap();
    let ami = "\n[[health.check]]\nkind = \"ami\"\nuser = \"sipha\"\nsecret = \"s3cret-xyz\"\n";
    let src = src.replacen("\n[peer]", &format!("{ami}\n[peer]"), 1);
    std::fs::write(&cfg, src).unwrap();
    let o = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["--node", "master", "check-config"])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("Ami {"), "the check is listed: {out}");
    assert!(!out.contains("s3cret-xyz"), "{out}");
    assert!(out.contains("(hidden)"), "{out}");
}
