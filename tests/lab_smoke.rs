//! The two-server lab itself works (tests/lab/): namespaces and links, SSH
//! between the servers with strict host keys, Kamailio on each server, the
//! watching client following the service address when it is moved by hand,
//! identity detection, power cycles, delay, jitter and loss without netem,
//! and a clean teardown.
//!
//! Nothing here needs `sip-ha run`: the address is moved by hand (`ip addr`
//! and sip-ha's own `address::announce`). Needs root; skips otherwise.

mod common;
mod lab;

use lab::{JitterSpec, Lab, LabOptions, NodeHandle, Role, LAN_IF, MGMT_IF};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Generous: the machine is shared with other builds.
const PATIENCE: Duration = Duration::from_secs(60);

/// Whether process `pid` is alive (a zombie is not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn namespaces() -> String {
    common::netns::ip(&["netns", "list"])
}

fn peer_path<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["peer"]["paths"]
        .as_array()
        .and_then(|paths| paths.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no peer path {name:?} in {status:#}"))
}

/// What a lab leaves behind if teardown fails: its namespaces, the
/// processes in them, its directory.
struct Traces {
    namespaces: Vec<String>,
    pids: Vec<i32>,
    dir: std::path::PathBuf,
}

impl Traces {
    fn of(lab: &Lab) -> Traces {
        let namespaces: Vec<String> = [lab.master().ns(), lab.slave().ns(), lab.client_ns()]
            .map(str::to_string)
            .to_vec();
        let pids = namespaces
            .iter()
            .flat_map(|ns| common::netns::pids_in(ns))
            .collect();
        Traces {
            namespaces,
            pids,
            dir: lab.dir().to_path_buf(),
        }
    }

    fn assert_gone(&self) {
        let listed = namespaces();
        for ns in &self.namespaces {
            assert!(!listed.contains(ns.as_str()), "{ns} left behind:\n{listed}");
        }
        let left: Vec<i32> = self.pids.iter().copied().filter(|&p| alive(p)).collect();
        assert!(left.is_empty(), "processes left behind: {left:?}");
        if std::env::var_os("SIP_HA_LAB_KEEP").is_none() {
            assert!(!self.dir.exists(), "{} left behind", self.dir.display());
        }
    }
}

#[test]
fn lab_comes_up_and_leaves_nothing_behind() {
    let Some(lab) = Lab::start_or_skip(LabOptions::default()) else {
        return;
    };
    let traces = Traces::of(&lab);
    let listed = namespaces();
    for ns in &traces.namespaces {
        assert!(listed.contains(ns.as_str()), "{ns} missing from:\n{listed}");
    }
    assert!(
        traces.pids.len() >= 4,
        "sshd and Kamailio on both servers: {:?}",
        traces.pids
    );
    for node in lab.nodes() {
        assert!(node.sip_service_running(), "{}", lab.diagnostics());
        assert!(!node.holds_service_address());
        let eth1 = node.ip(&["-o", "-4", "addr", "show", "dev", "eth1"]);
        assert!(
            eth1.contains(&node.management_address().to_string()),
            "{eth1}"
        );
    }
    // The servers reach the client over the LAN and each other over eth1.
    for node in lab.nodes() {
        let ping = node.exec("ping", &["-c1", "-W5", &lab.client_address().to_string()]);
        assert!(
            ping.status.success(),
            "{}",
            String::from_utf8_lossy(&ping.stdout)
        );
    }
    let peer = lab.slave().management_address().to_string();
    let ping = lab.master().exec("ping", &["-c1", "-W5", &peer]);
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    // Nothing routes out of the lab.
    let routes = lab.master().ip(&["route", "show"]);
    assert!(!routes.contains("default"), "{routes}");
    // The client is running too, a loop, and a delayer on each end of the
    // management link (threads of this process, rules in the namespaces):
    // all of it must go.
    lab.client().start();
    lab.master().start_loop();
    for role in [Role::Master, Role::Slave] {
        lab.jitter(
            role,
            MGMT_IF,
            JitterSpec::new(Duration::from_millis(20), Duration::from_millis(10), 1),
        );
    }
    drop(lab);
    traces.assert_gone();
}

#[test]
fn a_test_that_panics_leaves_nothing_behind() {
    if !lab::root_or_skip() {
        return;
    }
    let traces = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::start(LabOptions::default());
        lab.client().start();
        *traces.lock().expect("traces") = Some(Traces::of(&lab));
        panic!("a lab test fails");
    }));
    assert!(result.is_err());
    let traces = traces
        .into_inner()
        .expect("traces")
        .expect("the lab started");
    traces.assert_gone();
}

#[test]
fn labs_of_dead_test_processes_are_reaped() {
    if !lab::root_or_skip() {
        return;
    }
    // A pid that is certainly gone: a child that ran and was waited for.
    let mut gone = std::process::Command::new("true")
        .spawn()
        .expect("run true");
    let dead = gone.id();
    gone.wait().expect("wait for true");
    // What a test process killed mid-lab leaves: a namespace with a daemon
    // still running in it, and the lab directory.
    let ns = format!("{}{dead}-0-master", lab::PREFIX);
    common::netns::ip(&["netns", "add", &ns]);
    let mut daemon = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "sleep", "600"])
        .spawn()
        .expect("start a process in the stale namespace");
    let dir = tempfile::Builder::new()
        .prefix(&format!("{}{dead}-0.", lab::PREFIX))
        .tempdir()
        .expect("a stale lab directory")
        .keep();

    let _lab = Lab::start(LabOptions::default());
    assert!(
        !namespaces().contains(&ns),
        "{ns} not reaped:\n{}",
        namespaces()
    );
    let reaped = lab::wait_until(PATIENCE, || matches!(daemon.try_wait(), Ok(Some(_))));
    if !reaped {
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
    assert!(reaped, "the process in the stale namespace still runs");
    assert!(!dir.exists(), "{} not removed", dir.display());
}

#[test]
fn the_loop_runs_inside_the_node_with_its_output_logged() {
    let Some(lab) = Lab::start_or_skip(LabOptions::default()) else {
        return;
    };
    let master = lab.master();
    master.start_loop();
    assert!(master
        .loop_log()
        .contains("=== lab: sip-ha run --loop started"));
    // Whatever `run --loop` does in this build, stop_loop ends it (SIGTERM)
    // and reports how.
    let status = master.stop_loop();
    assert!(status.is_some());
    assert!(!master.loop_running());
    assert!(master.stop_loop().is_none(), "nothing left to stop");
}

/// The client's bookkeeping, on a made-up log (no lab needed).
#[test]
fn client_log_finds_outages_switches_and_flaps() {
    use lab::{ClientLog, Probe, Reply};
    let t0 = std::time::Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let from = SocketAddr::from(([10, 77, 1, 100], 5060));
    let reply = |at: u64, role: Role| Reply {
        at: ms(at),
        status: 200,
        reason: "OK".into(),
        server: Some(lab::sip::identity(role)),
        answered_by: Some(role),
        from,
    };
    // Answered by: M M - - - S S - S M
    let who = [
        Some(Role::Master),
        Some(Role::Master),
        None,
        None,
        None,
        Some(Role::Slave),
        Some(Role::Slave),
        None,
        Some(Role::Slave),
        Some(Role::Master),
    ];
    let probes: Vec<Probe> = who
        .iter()
        .enumerate()
        .map(|(seq, role)| {
            let sent = 50 * seq as u64;
            Probe {
                seq,
                sent: ms(sent),
                reply: role.map(|r| reply(sent + 2, r)),
                more: Vec::new(),
            }
        })
        .collect();
    let log = ClientLog {
        probes,
        interval: Duration::from_millis(50),
        complete: true,
        taken: ms(1000),
    };
    let outages = log.outages();
    assert_eq!(outages.len(), 2, "{outages:?}");
    assert_eq!((outages[0].lost, outages[0].recovered), (3, true));
    assert_eq!(outages[0].start, ms(100));
    assert_eq!(outages[0].end, ms(250));
    assert_eq!(outages[0].duration, Duration::from_millis(150));
    assert_eq!(log.longest_outage(), Some(outages[0]));
    assert_eq!(log.last_answered_by(), Some(Role::Master));
    assert_eq!(log.answered_by(Role::Slave), 3);
    let switches = log.switches();
    assert_eq!(switches.len(), 2);
    assert_eq!(
        (switches[0].from, switches[0].to),
        (Role::Master, Role::Slave)
    );
    // Slave, then the master again 200 ms later: both served at once.
    assert!(log.answered_by_both_at_once());
    assert!(
        log.summary()
            .contains("4 lost in 2 outage(s), longest 150 ms"),
        "{}",
        log.summary()
    );

    // One request answered by both servers is the same sign.
    let mut log2 = log.clone();
    log2.probes.truncate(7);
    assert!(!log2.answered_by_both_at_once());
    log2.probes[6].more.push(reply(305, Role::Master));
    assert!(log2.answered_by_both_at_once());

    // A snapshot does not count requests still in flight as lost.
    let mut snapshot = log.clone();
    snapshot.complete = false;
    snapshot.taken = ms(500);
    snapshot.probes[9].reply = None;
    assert_eq!(snapshot.settled().len(), 9);
    assert_eq!(snapshot.outages().len(), 2);
}

#[test]
fn identity_is_found_from_the_servers_own_addresses() {
    let Some(lab) = Lab::start_or_skip(LabOptions::default()) else {
        return;
    };
    for node in lab.nodes() {
        let out = node.sip_ha_ok(&["check-config"]);
        let want = format!(
            "this server is the {} ({} on {LAN_IF})",
            node.role(),
            node.management_address()
        );
        assert!(out.contains(&want), "{out}");
    }
}

#[test]
fn servers_reach_each_other_over_ssh_with_strict_host_keys() {
    let Some(lab) = Lab::start_or_skip(LabOptions::default()) else {
        return;
    };
    let master = lab.master();
    let status = master.status_json();
    assert_eq!(status["node"], "master", "{status:#}");
    let ssh = peer_path(&status, "ssh");
    assert_eq!(ssh["ok"], true, "{status:#}\n{}", lab.diagnostics());
    // The slave's own report came back through `sip-ha serve` over SSH.
    assert_eq!(status["peer"]["report"]["role"], "slave", "{status:#}");
    for path in ["sip", "tcp"] {
        assert_eq!(peer_path(&status, path)["ok"], true, "{status:#}");
    }
    assert!(
        status["witness"]
            .as_array()
            .is_some_and(|w| w.iter().all(|p| p["ok"] == true)),
        "{status:#}"
    );
    // And the other way round.
    let status = lab.slave().status_json();
    assert_eq!(peer_path(&status, "ssh")["ok"], true, "{status:#}");
    assert_eq!(status["peer"]["report"]["role"], "master", "{status:#}");

    // A host key the master does not know is refused.
    let known_hosts = master.dir().join("known_hosts");
    let good = std::fs::read_to_string(&known_hosts).expect("master's known_hosts");
    let stranger = master.dir().join("stranger");
    common::sshd::keygen(&stranger, "not the slave");
    let wrong = format!(
        "{} {}\n",
        lab.slave().management_address(),
        common::sshd::public_key(&stranger)
    );
    std::fs::write(&known_hosts, wrong).expect("write known_hosts");
    let status = master.status_json();
    let ssh = peer_path(&status, "ssh");
    assert_eq!(ssh["ok"], false, "{status:#}");
    std::fs::write(&known_hosts, good).expect("restore known_hosts");

    // Cut the cable between the servers: every peer path fails, the
    // witness on the LAN still answers.
    lab.cut_server_link();
    let status = master.status_json();
    for path in ["ssh", "sip", "tcp"] {
        assert_eq!(peer_path(&status, path)["ok"], false, "{path}: {status:#}");
    }
    assert!(
        status["witness"]
            .as_array()
            .is_some_and(|w| w.iter().all(|p| p["ok"] == true)),
        "{status:#}"
    );
    lab.restore_server_link();
    let back = lab.wait_until(PATIENCE, || {
        peer_path(&master.status_json(), "ssh")["ok"] == true
    });
    assert!(back, "{}", lab.diagnostics());
}

#[test]
fn kamailio_answers_on_each_server_and_signs_its_replies() {
    let Some(lab) = Lab::start_or_skip(LabOptions::default()) else {
        return;
    };
    for node in lab.nodes() {
        let reply = node
            .sip_ping_local()
            .unwrap_or_else(|| panic!("no reply on 127.0.0.1\n{}", lab.diagnostics()));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.answered_by, Some(node.role()), "{reply:?}");
        assert_eq!(
            node.sip_ha(&["check"]).status.code(),
            Some(0),
            "sip-ha check in {}",
            node.ns()
        );
    }
    // Over the management link; then with every packet the master sends
    // there lost (netem, or nftables where the kernel has no netem), then
    // delayed (netem, or the lab's delayer: tests/lab/jitter.rs).
    let master = SocketAddr::from((lab.master().management_address(), lab::SIP_PORT));
    let reply = lab
        .slave()
        .sip_options(master, PATIENCE)
        .expect("the master's Kamailio answers the slave");
    assert_eq!(reply.answered_by, Some(Role::Master));
    lab.netem(Role::Master, "eth1", "loss 100%");
    assert!(lab
        .slave()
        .sip_options(master, Duration::from_secs(1))
        .is_none());
    lab.clear_netem(Role::Master, "eth1");
    assert!(lab.slave().sip_options(master, PATIENCE).is_some());
    lab.netem(Role::Master, "eth1", "delay 200ms");
    let sent = std::time::Instant::now();
    let reply = lab.slave().sip_options(master, PATIENCE).expect("a reply");
    assert!(reply.at.duration_since(sent) >= Duration::from_millis(200));
    lab.clear_netem(Role::Master, "eth1");
    // Nobody holds the service address yet: nobody answers there.
    let service = lab.client().target();
    assert!(lab
        .client_options(service, Duration::from_secs(1))
        .is_none());
}

#[test]
fn client_follows_the_service_address_moved_by_hand() {
    let Some(lab) = Lab::start_or_skip(LabOptions::default()) else {
        return;
    };
    let (master, slave) = (lab.master(), lab.slave());
    let service = lab.service_cidr();
    let t = lab.timeline();

    master.ip(&["addr", "add", &service, "dev", LAN_IF]);
    assert!(master.holds_service_address());
    lab.client().start();
    let by_master = lab.wait_until(PATIENCE, || {
        lab.client().snapshot().last_answered_by() == Some(Role::Master)
    });
    assert!(by_master, "{}", lab.diagnostics());
    assert_eq!(
        lab.client_neigh_mac(lab.service_address()),
        Some(master.mac(LAN_IF))
    );

    // Move it: off the master, and after more than the neighbour table's
    // lock time (1 s, within which Linux ignores a new MAC for an entry),
    // onto the slave with sip-ha's own announcement.
    let removed = t.mark("address removed from the master");
    master.ip(&["addr", "del", &service, "dev", LAN_IF]);
    std::thread::sleep(Duration::from_millis(1500));
    let net: ipnet::IpNet = service.parse().expect("service address");
    let added = slave.in_ns(|| async move {
        sip_ha::address::add(LAN_IF, net)
            .await
            .expect("add the service address on the slave");
        let added = t.mark("address added on the slave");
        sip_ha::address::announce(LAN_IF, net.addr(), 3, Duration::from_millis(100))
            .await
            .expect("announce it");
        added
    });
    assert!(slave.holds_service_address() && !master.holds_service_address());

    let by_slave = lab.wait_until(PATIENCE, || {
        lab.client().snapshot().last_answered_by() == Some(Role::Slave)
    });
    assert!(by_slave, "{}", lab.diagnostics());
    let slave_mac = slave.mac(LAN_IF);
    assert!(lab.wait_until(PATIENCE, || {
        lab.client_neigh_mac(lab.service_address()).as_deref() == Some(slave_mac.as_str())
    }));
    std::thread::sleep(Duration::from_millis(300));
    let log = lab.client().stop();
    log.mark_on(t);
    eprintln!("{}", log.summary());
    t.print();

    assert!(log.answered_by(Role::Master) > 0 && log.answered_by(Role::Slave) > 0);
    assert_eq!(log.last_answered_by(), Some(Role::Slave));
    assert!(!log.answered_by_both_at_once(), "{}", log.summary());
    let switches = log.switches();
    assert_eq!(switches.len(), 1, "{switches:?}");
    assert_eq!(
        (switches[0].from, switches[0].to),
        (Role::Master, Role::Slave)
    );
    // The gap: requests sent while nobody held the address got no reply.
    let gap = log.outages_between(removed, added);
    assert_eq!(gap.len(), 1, "{}", log.summary());
    assert!(gap[0].recovered && gap[0].lost > 1, "{:?}", gap[0]);
    assert_eq!(log.longest_outage(), Some(gap[0]));
}

#[test]
fn power_cycle_keeps_the_servers_keys_and_logins() {
    let Some(lab) = Lab::start_or_skip(LabOptions::default()) else {
        return;
    };
    let slave = lab.slave();
    slave.power_off();
    assert!(slave.is_powered_off());
    assert!(common::netns::pids_in(slave.ns()).is_empty());
    assert!(!slave.sip_service_running());
    let status = lab.master().status_json();
    assert_eq!(peer_path(&status, "ssh")["ok"], false, "{status:#}");

    slave.power_on();
    assert!(slave.sip_ping_local().is_some(), "{}", lab.diagnostics());
    // Same host key and authorized_keys after the reboot: the master's
    // strict known_hosts still accepts it.
    let back = lab.wait_until(PATIENCE, || {
        peer_path(&lab.master().status_json(), "ssh")["ok"] == true
    });
    assert!(back, "{}", lab.diagnostics());
}

/// Round trips of `ping` from a node: the RTT of each reply (ms), sorted,
/// and how many requests got none.
struct Pings {
    sent: usize,
    rtts: Vec<f64>,
}

impl Pings {
    /// `count` pings, 20 ms apart, from `node` to `to`; replies are waited
    /// for as long as ping does (-W 2 for the last ones), however late.
    fn run(node: &NodeHandle, to: Ipv4Addr, count: usize) -> Pings {
        let out = node.exec(
            "ping",
            &[
                "-n",
                "-c",
                &count.to_string(),
                "-i",
                "0.02",
                "-W",
                "2",
                &to.to_string(),
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut seen = std::collections::HashSet::new();
        let mut rtts = Vec::new();
        for line in text.lines() {
            let seq = field(line, "icmp_seq=");
            let time = field(line, "time=").and_then(|t| t.parse::<f64>().ok());
            if let (Some(seq), Some(time)) = (seq, time) {
                if seen.insert(seq.to_string()) {
                    rtts.push(time);
                }
            }
        }
        assert!(
            !rtts.is_empty() || count == 0,
            "no ping reply at all from {to} in {}:\n{text}{}",
            node.ns(),
            String::from_utf8_lossy(&out.stderr)
        );
        rtts.sort_by(|a, b| a.total_cmp(b));
        Pings { sent: count, rtts }
    }

    fn lost(&self) -> usize {
        self.sent - self.rtts.len()
    }

    /// The `q` quantile (nearest rank) of the RTTs, in ms.
    fn quantile(&self, q: f64) -> f64 {
        let rank = ((self.rtts.len() - 1) as f64 * q).round() as usize;
        self.rtts[rank]
    }

    fn median(&self) -> f64 {
        self.quantile(0.5)
    }

    /// p90 - p10, in ms.
    fn spread(&self) -> f64 {
        self.quantile(0.9) - self.quantile(0.1)
    }

    fn summary(&self) -> String {
        format!(
            "{} sent, {} lost; RTT ms: p10 {:.2}, median {:.2}, p90 {:.2}, max {:.2}",
            self.sent,
            self.lost(),
            self.quantile(0.1),
            self.median(),
            self.quantile(0.9),
            self.quantile(1.0)
        )
    }
}

/// The word after `key` in `line` (`time=0.045 ms` -> `0.045`).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split_whitespace().next()
}

/// Whether an NFQUEUE rule is left in `node`'s namespace, with either
/// iptables backend.
fn nfqueue_rules(node: &NodeHandle) -> String {
    ["iptables", "iptables-legacy"]
        .iter()
        .map(|iptables| {
            let out = node.exec(iptables, &["-S", "OUTPUT"]);
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .filter(|rules| rules.contains("NFQUEUE"))
        .collect()
}

/// [`Lab::jitter`] (tests/lab/jitter.rs), measured: pings over the
/// management link from the master to the slave, first as the link is,
/// then with 50 ms ± 100 ms and 5% loss on what the master sends there.
///
/// With 50 ± 100 ms each request waits U[-50, 150] ms clamped at 0: a
/// quarter go at once, the rest spread over 0..150 ms, so the median RTT
/// rises by about 50 ms and p90 - p10 by about 130 ms. The bounds leave
/// room for chance, not for a slow machine (which only adds delay): with
/// 400 pings the sample median falls below +30 ms (that is, at least half
/// of the ~380 replies land below the 40th percentile) with probability
/// about 3e-5 (with 200 pings it would be 0.3%: a flaky test), the spread
/// cannot fall below 50 ms unless nine tenths of the replies land in the
/// lower half, and no loss at all among 400 has probability 0.95^400 ~
/// 1e-9. The loss bound (a quarter) is five times the expectation.
#[test]
fn jitter_delays_spreads_and_drops_what_a_server_sends() {
    const PINGS: usize = 400;
    let Some(lab) = Lab::start_or_skip(LabOptions::default()) else {
        return;
    };
    let master = lab.master();
    let to = lab.slave().management_address();
    let before = Pings::run(master, to, PINGS);

    let spec = JitterSpec::new(Duration::from_millis(50), Duration::from_millis(100), 5);
    lab.jitter(Role::Master, MGMT_IF, spec);
    assert!(!nfqueue_rules(master).is_empty(), "no NFQUEUE rule");
    let during = Pings::run(master, to, PINGS);
    let stats = lab
        .clear_jitter(Role::Master, MGMT_IF)
        .expect("a delayer was running");
    let after = Pings::run(master, to, 20);

    eprintln!("without jitter: {}", before.summary());
    eprintln!("with {spec}: {}", during.summary());
    eprintln!("delayer: {stats}");
    eprintln!("after clear_jitter: {}", after.summary());

    assert_eq!(before.lost(), 0, "{}", before.summary());
    let rise = during.median() - before.median();
    assert!(
        rise >= 30.0,
        "the median RTT rose by {rise:.1} ms only:\nbefore: {}\nduring: {}",
        before.summary(),
        during.summary()
    );
    let wider = during.spread() - before.spread();
    assert!(
        wider >= 50.0,
        "p90 - p10 grew by {wider:.1} ms only:\nbefore: {}\nduring: {}",
        before.summary(),
        during.summary()
    );
    assert!(
        during.lost() > 0 && during.lost() <= PINGS / 4,
        "{} of {PINGS} lost with 5% loss:\n{}",
        during.lost(),
        during.summary()
    );
    // Every request went through the delayer; its drops are the losses
    // (a reply can only be missing because its request was dropped).
    assert!(stats.queued >= PINGS as u64, "{stats}");
    assert_eq!(stats.dropped as usize, during.lost(), "{stats}");
    // Cleared: the rule is gone and nothing is lost any more.
    assert_eq!(nfqueue_rules(master), "", "rule left behind");
    assert_eq!(after.lost(), 0, "{}", after.summary());
}

/// What `Lab::netem` hands to the delayer when the kernel has no netem.
#[test]
fn netem_specs_are_read_for_the_delayer() {
    let ms = Duration::from_millis;
    let spec = JitterSpec::from_netem("loss 5% delay 50ms 100ms").expect("a spec");
    assert_eq!(spec, JitterSpec::new(ms(50), ms(100), 5));
    assert_eq!((spec.min_delay(), spec.max_delay()), (ms(0), ms(150)));
    assert!(!spec.is_loss_only());
    let spec = JitterSpec::from_netem("delay 1.5ms").expect("a spec");
    assert_eq!(spec, JitterSpec::new(Duration::from_micros(1500), ms(0), 0));
    let spec = JitterSpec::from_netem("delay 1s 200us loss random 7").expect("a spec");
    assert_eq!(
        spec,
        JitterSpec::new(Duration::from_secs(1), Duration::from_micros(200), 7)
    );
    assert!(JitterSpec::from_netem("loss 100%")
        .expect("a spec")
        .is_loss_only());
    for refused in [
        "delay 50ms 10ms 25%",
        "loss 0.5%",
        "loss 101%",
        "reorder 25%",
        "delay",
        "delay 50 parsecs",
        "delay 10ms distribution normal",
    ] {
        assert!(
            JitterSpec::from_netem(refused).is_err(),
            "{refused:?} accepted"
        );
    }
}
