//! The failover lifecycle in the two-server lab (tests/lab/): real network
//! namespaces, a real sshd and Kamailio on each server, `sip-ha run --loop`
//! (or cron-style passes) on both, and a client sending SIP OPTIONS to the
//! service address every 50 ms. Each scenario asserts what the operator and
//! the phones would see: who holds the address at the end, that the client
//! is answered by that server (and its ARP entry points there), that it was
//! never answered by both, and what `-v` says. Outage durations are printed,
//! not asserted (the machines are noisy); bench/failover.sh measures them.
//!
//! Needs root; each test skips with a message otherwise.

mod common;
mod lab;

use lab::{Lab, LabOptions, Role, LAN_IF};
use std::time::Duration;

/// Generous: the machine is shared with other builds.
const PATIENCE: Duration = Duration::from_secs(45);

/// A lab with both loops running, settled in the normal state: the master
/// holds the address and both servers say "normal".
fn normal_lab(options: LabOptions) -> Option<Lab> {
    let lab = Lab::start_or_skip(options.start_loops())?;
    let settled = lab.wait_until(PATIENCE, || {
        lab.holder() == Some(Role::Master)
            && lab.state_of(Role::Master) == "normal"
            && lab.state_of(Role::Slave) == "normal"
    });
    assert!(
        settled,
        "the pair never settled in the normal state:\n{}",
        lab.diagnostics()
    );
    Some(lab)
}

/// Wait until `role` holds the address.
fn wait_for_holder(lab: &Lab, role: Role) {
    let moved = lab.wait_until(PATIENCE, || lab.holder() == Some(role));
    assert!(moved, "the {role} never took over:\n{}", lab.diagnostics());
}

/// Wait until `role` holds the address and the running client is answered
/// by it.
fn wait_for_owner(lab: &Lab, role: Role) {
    wait_for_holder(lab, role);
    let answered = lab.wait_until(PATIENCE, || {
        lab.client().snapshot().last_answered_by() == Some(role)
    });
    assert!(
        answered,
        "the client is not answered by the {role}:\n{}",
        lab.diagnostics()
    );
}

/// The client's ARP entry for the service address names `role`'s MAC.
fn assert_client_arp(lab: &Lab, role: Role) {
    let want = lab.node(role).mac(LAN_IF);
    let ok = lab.wait_until(PATIENCE, || {
        lab.client_neigh_mac(lab.service_address()).as_deref() == Some(&want)
    });
    assert!(
        ok,
        "the client's neighbour entry for {} is {:?}, not the {role}'s {want}",
        lab.service_address(),
        lab.client_neigh_mac(lab.service_address())
    );
}

fn report(name: &str, log: &lab::ClientLog) {
    let longest = log.longest_outage().map(|o| o.duration);
    eprintln!("{name}: client outage {longest:?}; {}", log.summary());
}

#[test]
fn sip_service_killed_on_the_master_the_slave_takes_over() {
    let Some(lab) = normal_lab(LabOptions::default()) else {
        return;
    };
    lab.client().start();
    std::thread::sleep(Duration::from_millis(500));
    lab.timeline().mark("fault: Kamailio killed on the master");
    lab.master().kill_sip_service();
    wait_for_owner(&lab, Role::Slave);
    assert_client_arp(&lab, Role::Slave);
    std::thread::sleep(Duration::from_millis(500));
    let log = lab.client().stop();
    report("service killed", &log);
    assert!(
        !log.answered_by_both_at_once(),
        "answered by both: {}",
        log.summary()
    );
    assert_eq!(log.last_answered_by(), Some(Role::Slave));
    let outages = log.outages();
    assert!(
        !outages.is_empty(),
        "killing the service must show as an outage"
    );
    assert!(outages.iter().all(|o| o.recovered), "{outages:?}");
    assert!(
        lab.slave().history().contains("takeover"),
        "{}",
        lab.slave().history()
    );
    assert!(
        lab.master().history().contains("service-down"),
        "{}",
        lab.master().history()
    );
    assert_eq!(lab.state_of(Role::Slave), "failed-over");
    assert_eq!(lab.state_of(Role::Master), "service-down");
}

#[test]
fn master_powered_off_the_slave_takes_over() {
    let Some(lab) = normal_lab(LabOptions::default()) else {
        return;
    };
    lab.client().start();
    std::thread::sleep(Duration::from_millis(500));
    lab.master().power_off();
    wait_for_owner(&lab, Role::Slave);
    assert_client_arp(&lab, Role::Slave);
    let log = lab.client().stop();
    report("power off", &log);
    assert!(!log.answered_by_both_at_once());
    assert!(
        lab.slave().history().contains("unreachable on every path"),
        "{}",
        lab.slave().history()
    );
    let screen = String::from_utf8_lossy(&lab.slave().sip_ha(&["-v"]).stdout).to_string();
    assert!(
        screen.contains("ACTIVE SERVICES ON THIS SERVER - this server is SLAVE"),
        "{screen}"
    );
    assert!(screen.contains("failback is manual"), "{screen}");
}

#[test]
fn master_network_card_fails_the_slave_takes_over() {
    let Some(lab) = normal_lab(LabOptions::default()) else {
        return;
    };
    lab.client().start();
    std::thread::sleep(Duration::from_millis(500));
    // The master's LAN card dies: it no longer reaches the witness, the
    // management link to the slave still works.
    lab.master().link_down(LAN_IF);
    wait_for_owner(&lab, Role::Slave);
    let log = lab.client().stop();
    report("LAN card down", &log);
    assert!(
        lab.master().history().contains("isolated"),
        "{}",
        lab.master().history()
    );
    assert!(
        !lab.master().holds_service_address(),
        "the isolated master released it"
    );
}

#[test]
fn recovered_master_stays_standby_and_f_on_the_slave_fails_back() {
    let Some(lab) = normal_lab(LabOptions::default()) else {
        return;
    };
    lab.master().kill_sip_service();
    wait_for_holder(&lab, Role::Slave);

    // The master comes back: no automatic failback.
    lab.master().start_sip_service();
    let healthy = lab.wait_until(PATIENCE, || lab.master().status_json()["health"] == "up");
    assert!(healthy, "{}", lab.diagnostics());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.holder(), Some(Role::Slave), "failback is manual");
    let slave_screen = String::from_utf8_lossy(&lab.slave().sip_ha(&["-v"]).stdout).to_string();
    assert!(
        slave_screen.contains("ACTIVE SERVICES ON THIS SERVER - this server is SLAVE"),
        "{slave_screen}"
    );
    assert!(slave_screen.contains("sip-ha -f"), "{slave_screen}");
    let master = lab.master().sip_ha(&["-v"]);
    let master_screen = String::from_utf8_lossy(&master.stdout);
    assert!(
        master_screen.contains("ACTIVE SERVICES ON OTHER SERVER - this server is MASTER"),
        "{master_screen}"
    );
    assert_eq!(master.status.code(), Some(1), "degraded: failed over");

    // The operator checks the master, then hands back from the slave.
    lab.client().start();
    let out = lab.slave().sip_ha(&["-f"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "active service stopped on this server for {} services stop",
            lab.service_address()
        )),
        "{text}"
    );
    wait_for_owner(&lab, Role::Master);
    assert_client_arp(&lab, Role::Master);
    let log = lab.client().stop();
    report("manual failback", &log);
    assert!(!log.answered_by_both_at_once());
    let normal = lab.wait_until(PATIENCE, || {
        lab.state_of(Role::Master) == "normal" && lab.state_of(Role::Slave) == "normal"
    });
    assert!(normal, "{}", lab.diagnostics());
}

#[test]
fn link_between_the_servers_cut_only_one_holds_the_address() {
    let Some(lab) = normal_lab(LabOptions::default()) else {
        return;
    };
    lab.cut_server_link();
    // Long enough for the slave to declare the master dead many times over.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(lab.holder(), Some(Role::Master), "{}", lab.diagnostics());
    let history = lab.slave().history();
    assert!(history.contains("peer-lost"), "{history}");
    assert!(
        history.contains("address-conflict"),
        "the slave saw the master answer: {history}"
    );
    lab.restore_server_link();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.holder(), Some(Role::Master));
}

#[test]
fn a_slave_cut_from_the_witness_never_takes_over() {
    let Some(lab) = normal_lab(LabOptions::default()) else {
        return;
    };
    lab.slave().link_down(LAN_IF);
    lab.master().power_off();
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        !lab.slave().holds_service_address(),
        "{}",
        lab.diagnostics()
    );
    assert!(
        lab.slave().history().contains("isolated"),
        "{}",
        lab.slave().history()
    );
}

#[test]
fn both_made_to_hold_the_address_is_resolved_and_reported() {
    let Some(lab) = normal_lab(LabOptions::default()) else {
        return;
    };
    lab.slave()
        .ip(&["addr", "add", &lab.service_cidr(), "dev", LAN_IF]);
    let one = lab.wait_until(PATIENCE, || {
        lab.holder().is_some() && lab.slave().history().contains("split-brain")
    });
    assert!(one, "{}", lab.diagnostics());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        lab.holder(),
        Some(Role::Master),
        "the master's epoch is higher: it keeps the address"
    );
    let history = lab.slave().history();
    assert!(
        history.contains("split brain: both servers held the service address"),
        "{history}"
    );
}

#[test]
fn disable_hands_over_and_the_node_stays_out_until_enabled() {
    let Some(lab) = normal_lab(LabOptions::default()) else {
        return;
    };
    lab.master().sip_ha_ok(&["-d"]);
    wait_for_holder(&lab, Role::Slave);
    assert_eq!(lab.state_of(Role::Master), "disabled");
    // Even with the slave's service down, a disabled master stays out.
    lab.slave().kill_sip_service();
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !lab.master().holds_service_address(),
        "{}",
        lab.diagnostics()
    );
    // Enabled again, it takes over from the failed slave.
    lab.master().sip_ha_ok(&["--enable"]);
    let back = lab.wait_until(PATIENCE, || lab.holder() == Some(Role::Master));
    assert!(back, "{}", lab.diagnostics());
}

#[test]
fn cron_mode_master_failure_slave_takes_over() {
    // No loops: the test calls `sip-ha run` once a second on each server,
    // as cron would (every minute in real life).
    let Some(lab) = Lab::start_or_skip(LabOptions::default()) else {
        return;
    };
    let pass = |lab: &Lab| {
        for n in lab.nodes() {
            let out = n.run_pass();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let settled = lab.wait_until(PATIENCE, || {
        pass(&lab);
        lab.holder() == Some(Role::Master)
    });
    assert!(settled, "{}", lab.diagnostics());
    lab.master().kill_sip_service();
    let moved = lab.wait_until(PATIENCE, || {
        pass(&lab);
        std::thread::sleep(Duration::from_millis(700));
        lab.holder() == Some(Role::Slave)
    });
    assert!(moved, "{}", lab.diagnostics());
    assert!(lab.slave().history().contains("takeover"));

    // The master is repaired; its passes see it healthy again.
    lab.master().start_sip_service();
    let up = lab.wait_until(PATIENCE, || {
        lab.master().run_pass();
        std::thread::sleep(Duration::from_millis(300));
        lab.master().status_json()["health"] == "up"
    });
    assert!(up, "{}", lab.diagnostics());
    // `-f` on the slave in cron mode: the master takes over at once (the
    // slave wakes it and, with no loop there, its serve starts a pass),
    // not at its next cron minute: no pass is run by hand here.
    lab.slave().sip_ha_ok(&["-f"]);
    let back = lab.wait_until(PATIENCE, || lab.holder() == Some(Role::Master));
    assert!(back, "{}", lab.diagnostics());
}

#[test]
fn a_release_stops_the_gratuitous_arp_so_the_peer_can_take_over() {
    // A long, dense announcement burst (60 x 50 ms) still running when the
    // master's service dies: the master must stop announcing an address it
    // gave up, or the slave's duplicate probe sees it and holds off.
    let options = LabOptions::default()
        .set("cluster.garp_count", "60")
        .set("cluster.garp_interval", "\"50ms\"")
        .start_loops();
    let Some(lab) = Lab::start_or_skip(options) else {
        return;
    };
    let held = lab.wait_until(PATIENCE, || lab.holder() == Some(Role::Master));
    assert!(held, "{}", lab.diagnostics());
    lab.master().kill_sip_service();
    wait_for_holder(&lab, Role::Slave);
    let history = lab.slave().history();
    assert!(!history.contains("address-conflict"), "{history}");
}
