//! The README demo (`sudo make demo`): the two-server lab with sip-ha's
//! default timings, a client calling the service address every 50 ms, the
//! master's SIP service killed, and a timeline a person can read, then the
//! final `sip-ha -v` of both servers. Ignored in the normal suite (the
//! failover tests cover the same ground); `make demo` runs it.

mod common;
mod lab;

use lab::{Lab, LabOptions, Role};
use std::time::{Duration, Instant};

#[test]
#[ignore = "the README demo: run by `make demo`"]
fn demo() {
    if !lab::root_or_skip() {
        return;
    }
    println!("Starting two servers (master, slave) and a client in network namespaces:");
    println!("  each server runs sshd, Kamailio and `sip-ha run --loop` (interval 1s).");
    let lab = Lab::start(LabOptions::default().interval("1s").start_loops());
    let t = lab.timeline();
    let normal = lab.wait_until(Duration::from_secs(60), || {
        lab.master().holds_service_address() && lab.slave().status_json()["state"] == "normal"
    });
    assert!(normal, "{}", lab.diagnostics());
    t.mark(format!(
        "normal state: the master holds {}",
        lab.service_address()
    ));
    lab.client().start();
    std::thread::sleep(Duration::from_secs(2));

    let fault = t.mark("FAULT: Kamailio killed on the master");
    lab.master().kill_sip_service();
    let (mut detected, mut released, mut moved, mut answered) = (false, false, false, false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(detected && moved && answered) && Instant::now() < deadline {
        if !detected && lab.master().history().contains("service-down") {
            detected = true;
            t.mark("detected: the master's sip-ha counts its service as down");
        }
        if !released && !lab.master().holds_service_address() {
            released = true;
            t.mark("the master released the service address");
        }
        if !moved && lab.slave().holds_service_address() {
            moved = true;
            t.mark("address moved: the slave holds it and sent gratuitous ARP");
        }
        if !answered {
            if let Some(at) = lab.client().snapshot().first_answer_by(Role::Slave, fault) {
                answered = true;
                t.mark_at(at, "first good reply to the client, from the slave");
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs(1));
    let log = lab.client().stop();
    println!();
    println!("Timeline:");
    t.print();
    println!();
    println!("Client: {}", log.summary());
    for role in [Role::Master, Role::Slave] {
        println!();
        println!("=== sip-ha -v on the {role}:");
        print!(
            "{}",
            String::from_utf8_lossy(&lab.node(role).sip_ha(&["-v"]).stdout)
        );
    }
    assert!(moved && answered, "{}", lab.diagnostics());
}
