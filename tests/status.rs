//! The `-v` screen in each situation of the reference (shared/reference/
//! status-output.md), built from a config, a state and what was gathered.

use sip_ha::config;
use sip_ha::state::State;
use sip_ha::status::{Gathered, Overall, Status};
use sip_ha_core::{Health, Report, Role, Stance};
use std::path::Path;

fn cfg() -> config::Config {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sip-ha.toml")).unwrap();
    config::parse(&src, Path::new("sip-ha.toml")).unwrap()
}

fn state(role: Role, stance: Stance, health: Health) -> State {
    let mut s = State::fresh(role);
    s.memory.stance = stance;
    s.memory.health = health;
    s
}

fn peer_report(role: Role, holds: bool) -> Report {
    Report {
        role,
        stance: if holds { Stance::Active } else { Stance::Ready },
        holds_address: holds,
        health: Health::Up,
        maintenance: false,
        epoch: 1,
        active: Some(if holds { role } else { role.peer() }),
    }
}

fn build(role: Role, st: &State, holds: bool, peer_holds: Option<bool>) -> Status {
    let mut s = st.clone();
    s.memory.last_peer = peer_holds.map(|h| peer_report(role.peer(), h));
    Status::build(
        &cfg(),
        role,
        &s,
        Gathered {
            holds_address: Some(holds),
            ..Gathered::default()
        },
    )
}

fn lines(s: &Status) -> String {
    s.render()
}

#[test]
fn header_has_the_reference_lines_in_order() {
    let s = build(
        Role::Master,
        &state(Role::Master, Stance::Active, Health::Up),
        true,
        Some(false),
    );
    let out = lines(&s);
    let want = [
        "SIP-HA High Availability Routines for Asterisk",
        "-v verify information:",
        "master value      : 1 - this server is MASTER",
        "master server is  : 192.168.0.110 management",
        "slave server is   : 192.168.0.100 management",
        "interface         : eth0 physical",
        "timestamp         : ",
        "service address   : 192.168.0.120 controlled by SIP-HA",
    ];
    let got: Vec<&str> = out.lines().take(want.len()).collect();
    for (g, w) in got.iter().zip(want) {
        assert!(g.starts_with(w), "{g:?} should start with {w:?}\n{out}");
    }
    // MM/DD/YYYY-HH:MM:SS
    let ts = got[6].trim_start_matches("timestamp         : ");
    assert_eq!(ts.len(), 19, "{ts}");
    assert_eq!(&ts[2..3], "/");
    assert_eq!(&ts[10..11], "-");
}

#[test]
fn master_active_is_normal() {
    let s = build(
        Role::Master,
        &state(Role::Master, Stance::Active, Health::Up),
        true,
        Some(false),
    );
    assert_eq!(s.state, Overall::Normal);
    assert_eq!(s.exit_code, 0);
    assert_eq!(
        s.lines,
        vec![
            "ACTIVE SERVICES ON THIS SERVER - this server is MASTER",
            "- NOW IN NORMAL STATE -",
            "SIP-HA will replicate local files to 192.168.0.100",
        ]
    );
}

#[test]
fn slave_with_master_active_is_normal() {
    let s = build(
        Role::Slave,
        &state(Role::Slave, Stance::Ready, Health::Up),
        false,
        Some(true),
    );
    assert_eq!(s.state, Overall::Normal);
    assert_eq!(s.exit_code, 0);
    assert_eq!(
        s.lines,
        vec!["ACTIVE SERVICES ON OTHER SERVER - this server is SLAVE"]
    );
    assert!(s
        .render()
        .contains("master value      : 0 - this server is SLAVE"));
}

#[test]
fn service_down_locally_is_critical() {
    let s = build(
        Role::Master,
        &state(Role::Master, Stance::Yield, Health::Down),
        false,
        Some(true),
    );
    assert_eq!(s.state, Overall::ServiceDown);
    assert_eq!(s.exit_code, 2);
    assert_eq!(
        s.lines,
        vec![
            "not active for services on this server for 192.168.0.120",
            "one of the services on this server needs attention",
            "SERVICE DOWN LOCALLY",
        ]
    );
}

#[test]
fn slave_active_after_master_failed_is_degraded_and_says_failback_is_manual() {
    let s = build(
        Role::Slave,
        &state(Role::Slave, Stance::Active, Health::Up),
        true,
        Some(false),
    );
    assert_eq!(s.state, Overall::FailedOver);
    assert_eq!(s.exit_code, 1);
    assert_eq!(
        s.lines[0],
        "ACTIVE SERVICES ON THIS SERVER - this server is SLAVE"
    );
    assert!(s.lines[1].contains("failback is manual") && s.lines[1].contains("sip-ha -f"));
    assert_eq!(
        s.lines[2],
        "SIP-HA will replicate local files to 192.168.0.110"
    );
}

#[test]
fn both_holding_is_split_brain_and_critical() {
    let s = build(
        Role::Master,
        &state(Role::Master, Stance::Active, Health::Up),
        true,
        Some(true),
    );
    assert_eq!(s.state, Overall::SplitBrain);
    assert_eq!(s.exit_code, 2);
}

#[test]
fn disabled_server_says_how_to_enable() {
    let mut st = state(Role::Master, Stance::Yield, Health::Up);
    st.memory.maintenance = true;
    let s = build(Role::Master, &st, false, Some(true));
    assert_eq!(s.state, Overall::Disabled);
    assert!(s.render().contains("sip-ha --enable"));
}

#[test]
fn nobody_active_is_critical() {
    let s = build(
        Role::Slave,
        &state(Role::Slave, Stance::Ready, Health::Up),
        false,
        Some(false),
    );
    assert_eq!(s.exit_code, 2);
    assert!(s.lines[0].contains("NO SERVER IS ACTIVE"));
}

#[test]
fn json_has_the_documented_fields() {
    let s = build(
        Role::Master,
        &state(Role::Master, Stance::Active, Health::Up),
        true,
        Some(false),
    );
    let v: serde_json::Value = serde_json::to_value(&s).unwrap();
    for key in [
        "node",
        "role",
        "active",
        "state",
        "service_address",
        "holds_address",
        "peer",
        "last_change",
        "last_sync",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["state"], "normal");
    assert_eq!(v["role"], "master");
    assert_eq!(v["active"], true);
    assert_eq!(v["holds_address"], true);
    assert_eq!(v["peer"], "unknown", "no probe ran: the peer is unknown");
}
