//! The two-server lab: a master and a slave "server", each a network
//! namespace with its own sshd, Kamailio and sip-ha, plus a client that
//! watches the service address from the LAN. Failover, sync and alert tests
//! and the README demo are built on it.
//!
//! # Topology
//!
//! ```text
//!                 client namespace (also the LAN and the witness)
//!          +---------------------------------------------------------+
//!          |  br0 10.77.N.1/24    (the "gateway": peer.witness)      |
//!          |   |-- lan-m                                  lan-s --|  |
//!          +---|--------------------------------------------------|--+
//!              | veth                                      veth   |
//!     master   | eth0 10.77.N.10/24               slave    eth0 10.77.N.20/24
//!   namespace  |  (+ 10.77.N.100/24          namespace     |  (+ 10.77.N.100/24
//!              |   when it holds it)                       |   when it holds it)
//!              | eth1 10.78.N.1/30 <---- veth ----> eth1 10.78.N.2/30
//!                   management link: SSH, the peer's sip/tcp paths
//! ```
//!
//! * **Service LAN**: a bridge in the client namespace joins both servers'
//!   `eth0` and the client's own address, 10.77.N.1. The service address
//!   10.77.N.100/24 moves between the servers' `eth0`; each server also has
//!   a fixed LAN address (.10 and .20) so it reaches the witness even when it
//!   does not hold the service address.
//! * **Management link**: a direct cable (veth) between the servers' `eth1`.
//!   The management addresses 10.78.N.1 and .2 are the `[nodes]` addresses
//!   of the config: sip-ha finds out which node it is from them (no
//!   `--node` anywhere in the lab) and reaches the peer there over SSH.
//!   [`Lab::cut_server_link`] pulls that cable while both servers still see
//!   the client.
//! * The addresses exist only inside the lab's namespaces; nothing routes out
//!   (no default route anywhere), so N may repeat between labs without harm.
//!   Interface names are fixed (`eth0`, `eth1`, `br0`, `lan-m`, `lan-s`)
//!   because each is created directly inside its namespace.
//!
//! # Each server
//!
//! A directory `<lab dir>/<node>/` holds all of one server's files, as its
//! own disk would (see [`NodeHandle`]):
//!
//! ```text
//! sip-ha.toml        this node's config (see below)
//! id_ed25519[.pub]   its SSH client key, authorized on the peer
//! known_hosts        the peer's host key (strict checking)
//! state/             state_dir: state.json, history.log, ssh/ (control socket)
//! sshd/              sshd_config, host key, authorized_keys:
//!                    restrict,command="<sip-ha> --config <peer's sip-ha.toml> serve"
//! kamailio/          kamailio.cfg, kamailio.log
//! loop.log           stdout and stderr of `sip-ha run --loop`
//! ```
//!
//! sshd runs inside the node's namespace on its management address, port 22;
//! Kamailio runs there too, with `net.ipv4.ip_nonlocal_bind=1` so it listens
//! on the service address before it holds it (UDP and TCP on 127.0.0.1, the
//! management address and the service address, port 5060). Kamailio signs
//! its replies `Server: lab-master` / `Server: lab-slave`, which is how the
//! client tells who answered.
//!
//! # The config
//!
//! Both servers get the same text ([`LabOptions`] describes the defaults and
//! how a test changes them) except `state_dir` and the SSH key and
//! known_hosts paths: on real servers these are the same paths on two disks,
//! but the lab's two servers share one filesystem. The file says so.
//!
//! # Using it
//!
//! ```ignore
//! let Some(lab) = Lab::start_or_skip(LabOptions::default()) else { return };
//! lab.client().start();
//! lab.node(Role::Master).start_loop();
//! lab.node(Role::Slave).start_loop();
//! lab.wait_until(MINUTE, || lab.node(Role::Master).holds_service_address());
//! lab.timeline().mark("master powered off");
//! lab.node(Role::Master).power_off();
//! assert!(lab.wait_until(MINUTE, || lab.client().snapshot().last_answered_by() == Some(Role::Slave)));
//! let log = lab.client().stop();
//! eprintln!("{}", log.summary());
//! ```
//!
//! # Faults
//!
//! * On the link between the servers: [`Lab::cut_server_link`] (no carrier
//!   on either side), [`Lab::loss`] / [`Lab::jitter`] / [`Lab::netem`] on
//!   `eth1`.
//! * On a server's LAN side: [`NodeHandle::link_down`]`("eth0")`,
//!   [`Lab::loss`] / [`Lab::jitter`] / [`Lab::netem`] on `eth0`.
//! * On a server: [`NodeHandle::kill_sip_service`] (Kamailio dies),
//!   [`NodeHandle::power_off`], [`NodeHandle::kill_loop`] (sip-ha crashes).
//!
//! This project's machines (CI included) run a kernel without netem. There
//! [`Lab::netem`] carries out `loss P%` with nftables (as [`Lab::loss`]
//! does) and `delay D [J]` (with or without loss) with [`Lab::jitter`]: an
//! NFQUEUE rule and a delayer thread in the test process, see the module
//! `jitter`. Impairments apply to what a server *sends* on the interface;
//! impair both ends for both directions.
//!
//! Never assert wall-clock bounds: wait with generous timeouts
//! ([`Lab::wait_until`]) and measure ([`ClientLog::outages`]); the machine is
//! shared with other builds.
//!
//! # Cleaning up
//!
//! Dropping the [`Lab`], panic or not, stops the client, kills every process
//! in its namespaces (sip-ha, its ssh masters, sshd and its sessions,
//! Kamailio) and deletes the namespaces (which deletes the veths and the
//! bridge) and the lab directory. [`Lab::start`] first does the same for the
//! labs of test processes that are gone. Names carry the test process's pid
//! and a counter (`siphal-<pid>-<n>-master`), so labs run in parallel.
//! Set `SIP_HA_LAB_KEEP=1` to keep the lab directory (logs, state) after the
//! test; its path is printed.
//!
//! Needs root; [`Lab::start_or_skip`] says so and returns `None` otherwise.

#![allow(dead_code)] // each test binary uses a different part

mod client;
mod config;
mod jitter;
mod node;
pub mod sip;
mod timeline;

// Re-exported for the test files; each uses only some.
#[allow(unused_imports)]
pub use client::{Client, ClientLog, Outage, Probe, Switch};
pub use config::LabOptions;
#[allow(unused_imports)]
pub use jitter::{JitterSpec, JitterStats};
pub use node::NodeHandle;
pub use sip::Reply;
pub use sip_ha_core::Role;
pub use timeline::Timeline;

use crate::common::netns;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Prefix of every lab namespace and lab directory:
/// `siphal-<pid>-<n>-<master|slave|client>`, `siphal-<pid>-<n>.XXXXXX`.
pub const PREFIX: &str = "siphal-";

/// The sip-ha binary under test.
pub const SIP_HA: &str = env!("CARGO_BIN_EXE_sip-ha");

/// The interface names inside the namespaces.
pub const LAN_IF: &str = "eth0";
pub const MGMT_IF: &str = "eth1";
const BRIDGE: &str = "br0";

/// The SIP port Kamailio listens on everywhere in the lab.
pub const SIP_PORT: u16 = 5060;

/// Generous upper bound for anything the lab waits for while building
/// itself (links coming up, daemons starting).
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Upper bound for one `sip-ha` command (not the loop).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The running lab. See the module documentation.
pub struct Lab {
    id: String,
    net: u8,
    client_ns: String,
    /// Master, then slave.
    nodes: [NodeHandle; 2],
    client: Client,
    timeline: Timeline,
    options: LabOptions,
    dir: PathBuf,
    /// Removes the lab directory on drop (unless SIP_HA_LAB_KEEP is set).
    dir_guard: Option<tempfile::TempDir>,
    /// The delayers of [`Lab::jitter`], stopped on drop.
    jitters: jitter::Jitters,
}

impl Lab {
    /// Builds and starts the lab: namespaces, links, addresses, sshd and
    /// Kamailio on both servers, configs checked with `sip-ha
    /// check-config` on each (which also proves identity detection). The
    /// sip-ha loops are not started unless [`LabOptions::start_loops`].
    /// Panics, with what failed, if any part cannot start; whatever was
    /// built is torn down.
    pub fn start(options: LabOptions) -> Lab {
        reap_stale();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let id = format!("{PREFIX}{pid}-{n}");
        // Cosmetic only: the addresses never leave the lab's namespaces.
        let net = u8::try_from(n % 250 + 1).expect("n % 250 + 1 fits a byte");
        let dir_guard = tempfile::Builder::new()
            .prefix(&format!("{id}."))
            .tempdir_in(base_dir())
            .expect("create the lab directory");
        let dir = dir_guard.path().to_path_buf();
        let ns = |name: &str| format!("{id}-{name}");
        let service = service_address(net);
        let nodes = [Role::Master, Role::Slave].map(|role| {
            let (mgmt, lan) = match role {
                Role::Master => (mgmt_address(net, 1), lan_address(net, 10)),
                Role::Slave => (mgmt_address(net, 2), lan_address(net, 20)),
            };
            NodeHandle::new(node::Spec {
                role,
                ns: ns(role.as_str()),
                peer_ns: ns(role.peer().as_str()),
                client_ns: ns("client"),
                bridge_port: bridge_port(role),
                dir: dir.join(role.as_str()),
                mgmt,
                lan,
                service,
                serve_args: options.serve_args.clone(),
                loop_args: options.loop_args.clone(),
            })
        });
        let client_ns = ns("client");
        let lab = Lab {
            client: Client::new(
                client_ns.clone(),
                lan_address(net, 1),
                SocketAddr::new(IpAddr::V4(service), SIP_PORT),
            ),
            id,
            net,
            client_ns,
            nodes,
            timeline: Timeline::new(),
            options,
            dir,
            dir_guard: Some(dir_guard),
            jitters: jitter::Jitters::default(),
        };
        // From here on, Drop tears down whatever was built.
        lab.build_network();
        lab.build_servers();
        lab.timeline.mark("lab ready");
        if lab.options.start_loops {
            for node in &lab.nodes {
                node.start_loop();
            }
        }
        lab
    }

    /// [`Lab::start`] when running as root; otherwise says why it skips and
    /// returns `None`.
    pub fn start_or_skip(options: LabOptions) -> Option<Lab> {
        root_or_skip().then(|| Lab::start(options))
    }

    fn build_network(&self) {
        let [master, slave] = &self.nodes;
        for ns in [&master.spec.ns, &slave.spec.ns, &self.client_ns] {
            netns::ip(&["netns", "add", ns]);
            ip_in(ns, &["link", "set", "lo", "up"]);
        }
        let c = self.client_ns.as_str();
        // The LAN: a bridge in the client namespace, the client's address
        // on the bridge itself.
        ip_in(
            c,
            &[
                "link",
                "add",
                BRIDGE,
                "type",
                "bridge",
                "forward_delay",
                "0",
            ],
        );
        let client_cidr = format!("{}/24", self.client_address());
        ip_in(c, &["addr", "add", &client_cidr, "dev", BRIDGE]);
        ip_in(c, &["link", "set", BRIDGE, "up"]);
        for node in &self.nodes {
            let port = bridge_port(node.role());
            netns::ip(&[
                "link",
                "add",
                LAN_IF,
                "netns",
                &node.spec.ns,
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                c,
            ]);
            ip_in(c, &["link", "set", port, "master", BRIDGE]);
            ip_in(c, &["link", "set", port, "up"]);
            let lan_cidr = format!("{}/24", node.lan_address());
            ip_in(&node.spec.ns, &["addr", "add", &lan_cidr, "dev", LAN_IF]);
        }
        // The management cable.
        netns::ip(&[
            "link",
            "add",
            MGMT_IF,
            "netns",
            &master.spec.ns,
            "type",
            "veth",
            "peer",
            "name",
            MGMT_IF,
            "netns",
            &slave.spec.ns,
        ]);
        for node in &self.nodes {
            let cidr = format!("{}/30", node.management_address());
            ip_in(&node.spec.ns, &["addr", "add", &cidr, "dev", MGMT_IF]);
            // Kamailio listens on the service address before holding it.
            let out = node.exec("sysctl", &["-qw", "net.ipv4.ip_nonlocal_bind=1"]);
            assert!(
                out.status.success(),
                "sysctl ip_nonlocal_bind in {}: {}",
                node.ns(),
                String::from_utf8_lossy(&out.stderr)
            );
            for iface in [LAN_IF, MGMT_IF] {
                ip_in(&node.spec.ns, &["link", "set", iface, "up"]);
            }
        }
        for node in &self.nodes {
            wait_link_up(&node.spec.ns, LAN_IF);
            wait_link_up(&node.spec.ns, MGMT_IF);
            wait_link_up(c, bridge_port(node.role()));
        }
        wait_link_up(c, BRIDGE);
    }

    fn build_servers(&self) {
        for node in &self.nodes {
            node.prepare_dir();
        }
        for node in &self.nodes {
            node.start_sshd();
        }
        // Each node trusts the other's host key and may log in there, to
        // `sip-ha serve` only.
        for node in &self.nodes {
            let peer = self.node(node.role().peer());
            node.trust_peer(peer);
        }
        for node in &self.nodes {
            let text = config::render(&self.options, &self.config_params(node));
            write_private(&node.config_path(), &text);
        }
        for node in &self.nodes {
            node.start_sip_service();
        }
        for node in &self.nodes {
            let out = node.sip_ha(&["check-config"]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "sip-ha check-config refused {} (LabOptions?):\n{}{}",
                node.config_path().display(),
                String::from_utf8_lossy(&out.stderr),
                node.config_text()
            );
            let want = format!("this server is the {}", node.role());
            assert!(
                stdout.contains(&want),
                "in {}, sip-ha check-config does not say {want:?}:\n{stdout}",
                node.ns()
            );
        }
    }

    fn config_params(&self, node: &NodeHandle) -> config::Params {
        config::Params {
            role: node.role(),
            net: self.net,
            service: format!("{}/24", self.service_address()),
            master: self.nodes[0].management_address(),
            slave: self.nodes[1].management_address(),
            witness: self.client_address(),
            state_dir: node.state_dir(),
            identity: node.dir().join("id_ed25519"),
            known_hosts: node.dir().join("known_hosts"),
            node_dir: node.dir().to_path_buf(),
            lab_dir: self.dir.clone(),
        }
    }

    /// One server.
    pub fn node(&self, role: Role) -> &NodeHandle {
        match role {
            Role::Master => &self.nodes[0],
            Role::Slave => &self.nodes[1],
        }
    }

    pub fn master(&self) -> &NodeHandle {
        self.node(Role::Master)
    }

    pub fn slave(&self) -> &NodeHandle {
        self.node(Role::Slave)
    }

    pub fn nodes(&self) -> &[NodeHandle; 2] {
        &self.nodes
    }

    /// The watching client (see [`Client`]).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client's namespace (holds the LAN bridge).
    pub fn client_ns(&self) -> &str {
        &self.client_ns
    }

    /// `siphal-<pid>-<n>`: the prefix of this lab's namespaces.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The N of 10.77.N.0/24 and 10.78.N.0/30.
    pub fn net(&self) -> u8 {
        self.net
    }

    /// The lab directory (one subdirectory per server).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &LabOptions {
        &self.options
    }

    /// 10.77.N.100, the address that moves.
    pub fn service_address(&self) -> Ipv4Addr {
        service_address(self.net)
    }

    /// `10.77.N.100/24`, as `ip addr add` and the config write it.
    pub fn service_cidr(&self) -> String {
        format!("{}/24", self.service_address())
    }

    /// 10.77.N.1, the client, which is also the witness.
    pub fn client_address(&self) -> Ipv4Addr {
        lan_address(self.net, 1)
    }

    /// The fault and event recorder (see [`Timeline`]).
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Which server holds the service address: `None` when neither does, or
    /// (split brain) both.
    pub fn holder(&self) -> Option<Role> {
        match (
            self.master().holds_service_address(),
            self.slave().holds_service_address(),
        ) {
            (true, false) => Some(Role::Master),
            (false, true) => Some(Role::Slave),
            _ => None,
        }
    }

    /// What `sip-ha -v --json` on `role` says the state is ("normal", ...).
    pub fn state_of(&self, role: Role) -> String {
        self.node(role).status_json()["state"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    }

    /// Starts `sip-ha run --loop` on both servers.
    pub fn start_loops(&self) {
        for node in &self.nodes {
            node.start_loop();
        }
    }

    /// Stops both loops (SIGTERM).
    pub fn stop_loops(&self) {
        for node in &self.nodes {
            node.stop_loop();
        }
    }

    /// The MAC the client's neighbour table has for `addr`, if it has a
    /// usable entry (`ip -n <client> neigh show to <addr>`).
    pub fn client_neigh_mac(&self, addr: impl Into<IpAddr>) -> Option<String> {
        let addr = addr.into().to_string();
        let out = ip_in(&self.client_ns, &["neigh", "show", "to", &addr]);
        out.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some(addr.as_str()) {
                return None;
            }
            let words: Vec<&str> = words.collect();
            let mac = words
                .iter()
                .position(|w| *w == "lladdr")
                .and_then(|i| words.get(i + 1))?;
            let failed = words.iter().any(|w| *w == "FAILED" || *w == "INCOMPLETE");
            (!failed).then(|| mac.to_string())
        })
    }

    /// One SIP OPTIONS from the client to `target` (outside the watcher);
    /// the reply, if one came within `timeout`.
    pub fn client_options(&self, target: SocketAddr, timeout: Duration) -> Option<Reply> {
        netns::in_ns_sync(&self.client_ns, || sip::options_once(target, timeout))
    }

    /// Pulls the management cable: both `eth1` ends go down, so neither
    /// server has carrier on it (the SSH, sip and tcp peer paths fail) while
    /// both still reach the client over the LAN.
    pub fn cut_server_link(&self) {
        for node in &self.nodes {
            ip_in(node.ns(), &["link", "set", MGMT_IF, "down"]);
        }
    }

    /// Plugs the management cable back in and waits for carrier.
    pub fn restore_server_link(&self) {
        for node in &self.nodes {
            ip_in(node.ns(), &["link", "set", MGMT_IF, "up"]);
        }
        for node in &self.nodes {
            wait_link_up(node.ns(), MGMT_IF);
        }
    }

    /// Impairs what `role`'s server sends on `iface` with `tc netem`:
    /// `spec` is netem's, e.g. `"loss 5% delay 50ms 100ms"`. Replaces any
    /// earlier impairment there.
    ///
    /// Some kernels lack netem (`CONFIG_NET_SCH_NETEM`; this project's
    /// machines among them). There a spec of only `loss P%` is carried out
    /// by [`Lab::loss`] (nftables), and one with `delay D [J]` by
    /// [`Lab::jitter`] (see [`JitterSpec::from_netem`] for what it reads);
    /// anything else (correlations, distributions, `reorder`, `rate`, ...)
    /// panics, saying so.
    pub fn netem(&self, role: Role, iface: &str, spec: &str) {
        self.clear_netem(role, iface);
        if netem_supported() {
            let ns = self.node(role).ns();
            let mut args = vec!["qdisc", "replace", "dev", iface, "root", "netem"];
            args.extend(spec.split_whitespace());
            tc_in(ns, &args);
            return;
        }
        match JitterSpec::from_netem(spec) {
            Ok(j) if j.is_loss_only() => self.loss(role, iface, j.loss_percent),
            Ok(j) => self.jitter(role, iface, j),
            Err(e) => panic!(
                "this kernel has no netem (CONFIG_NET_SCH_NETEM), and {spec:?} cannot be \
                 emulated without it: {e}. Without netem the lab does \"delay D [J]\" and \
                 \"loss P%\" (Lab::jitter, Lab::loss)."
            ),
        }
    }

    /// Whether this kernel has `tc netem` (see [`Lab::netem`]). Without
    /// it, [`Lab::netem`] still does delay, jitter and loss.
    pub fn netem_supported(&self) -> bool {
        netem_supported()
    }

    /// Drops `percent` % of the IP packets `role`'s server sends on `iface`,
    /// at random, with nftables (an `output` rule in its namespace: ARP
    /// still passes). Works without netem; 100 makes a black hole that
    /// keeps carrier, unlike a pulled cable. Replaces an earlier loss there.
    pub fn loss(&self, role: Role, iface: &str, percent: u32) {
        assert!(percent <= 100, "loss of {percent}%?");
        let node = self.node(role);
        let table = nft_table(iface);
        let _ = nft_in(node.ns(), &format!("delete table inet {table}"));
        let matcher = if percent == 100 {
            String::new()
        } else {
            format!("numgen random mod 100 < {percent} ")
        };
        let script = format!(
            "add table inet {table}\n\
             add chain inet {table} out {{ type filter hook output priority 0; }}\n\
             add rule inet {table} out oifname \"{iface}\" {matcher}drop\n"
        );
        if let Err(e) = nft_in(node.ns(), &script) {
            panic!("nft in {}: {e}", node.ns());
        }
    }

    /// Removes what [`Lab::netem`], [`Lab::loss`] and [`Lab::jitter`] put
    /// on `iface`.
    pub fn clear_netem(&self, role: Role, iface: &str) {
        let _ = self.clear_jitter(role, iface);
        let ns = self.node(role).ns();
        let _ = Command::new("tc")
            .args(["-n", ns, "qdisc", "del", "dev", iface, "root"])
            .stderr(Stdio::null())
            .status();
        let _ = nft_in(ns, &format!("delete table inet {}", nft_table(iface)));
    }

    /// Polls `cond` every 50 ms until it holds (true) or `timeout` passes
    /// (false). Give generous timeouts and assert on the result, never on
    /// the time taken.
    pub fn wait_until(&self, timeout: Duration, cond: impl FnMut() -> bool) -> bool {
        wait_until(timeout, cond)
    }

    /// Everything useful when a lab test fails: the timeline, each server's
    /// addresses, loop log, history and the tails of sshd's and Kamailio's
    /// logs. Put it in assertion messages.
    pub fn diagnostics(&self) -> String {
        let mut s = format!("=== lab {} in {}\n", self.id, self.dir.display());
        s.push_str("--- timeline\n");
        s.push_str(&self.timeline.render());
        for node in &self.nodes {
            s.push_str(&node.diagnostics());
        }
        s
    }

    /// The topology, as printed by the README demo.
    pub fn describe(&self) -> String {
        let m = self.master();
        let sl = self.slave();
        format!(
            "client/witness {client} -- LAN bridge -- master {ml} / slave {sl_lan}\n\
             service address {service}/24 (moves between the servers' {LAN_IF})\n\
             management link {MGMT_IF}: master {mm} <-> slave {sm} (SSH to `sip-ha serve`)\n",
            client = self.client_address(),
            ml = m.lan_address(),
            sl_lan = sl.lan_address(),
            service = self.service_address(),
            mm = m.management_address(),
            sm = sl.management_address(),
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.client.stop_quietly();
        // While the namespaces still exist: their rules go first.
        self.clear_all_jitter();
        for node in &self.nodes {
            node.shutdown();
        }
        for ns in [
            &self.nodes[0].spec.ns,
            &self.nodes[1].spec.ns,
            &self.client_ns,
        ] {
            netns::delete(ns);
        }
        if std::env::var_os("SIP_HA_LAB_KEEP").is_some() {
            if let Some(guard) = self.dir_guard.take() {
                let kept = guard.keep();
                eprintln!("lab {}: directory kept at {}", self.id, kept.display());
            }
        }
    }
}

/// Whether lab tests can run here (as root); if not, says why the calling
/// test skips. For tests that start their lab in a way of their own.
pub fn root_or_skip() -> bool {
    let root = netns::is_root();
    if !root {
        eprintln!(
            "skipped: the two-server lab needs root (network namespaces, sshd); \
             run the suite as root (sudo scripts/test.sh)"
        );
    }
    root
}

fn service_address(net: u8) -> Ipv4Addr {
    lan_address(net, 100)
}

fn lan_address(net: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, net, host)
}

fn mgmt_address(net: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, net, host)
}

/// The client-side end of a server's LAN cable.
fn bridge_port(role: Role) -> &'static str {
    match role {
        Role::Master => "lan-m",
        Role::Slave => "lan-s",
    }
}

/// Where lab directories go: the temporary directory, unless its path is so
/// long that the SSH control socket under `<lab>/<node>/state/ssh` would
/// not fit a socket path (sip-ha refuses such a state_dir); then /tmp.
fn base_dir() -> PathBuf {
    // <base>/siphal-<pid>-<n>.XXXXXX/master/state/ssh
    const LAB_SUFFIX: usize = 48;
    let tmp = std::env::temp_dir();
    if tmp.as_os_str().len() + LAB_SUFFIX <= sip_ha::link::ssh::MAX_CONTROL_DIR_LEN {
        tmp
    } else {
        PathBuf::from("/tmp")
    }
}

/// Tears down labs of test processes that are gone: kills what runs in
/// their namespaces, deletes those, removes their directories.
fn reap_stale() {
    netns::reap_stale_with_prefix(PREFIX);
    for base in [std::env::temp_dir(), PathBuf::from("/tmp")] {
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if netns::pid_is_gone(name, PREFIX) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Writes `text` to `path` readable by its owner only, as `sip-ha.toml`
/// is installed (sip-ha may refuse a world-readable one holding secrets).
fn write_private(path: &Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `ip -n <ns> args...`; panics with ip's message on failure; stdout.
pub fn ip_in(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    netns::ip(&all)
}

/// `tc -n <ns> args...`; panics with tc's message on failure.
fn tc_in(ns: &str, args: &[&str]) {
    let out = Command::new("tc")
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run tc (iproute2): {e}"));
    assert!(
        out.status.success(),
        "tc -n {ns} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the kernel has netem: tried once, on a namespace of its own.
fn netem_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let ns = format!("{PREFIX}{}-netem", std::process::id());
        netns::ip(&["netns", "add", &ns]);
        let ok = Command::new("tc")
            .args([
                "-n", &ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        netns::delete(&ns);
        ok
    })
}

/// The nftables table [`Lab::loss`] uses for `iface`.
fn nft_table(iface: &str) -> String {
    format!("lab_loss_{}", iface.replace('-', "_"))
}

/// Runs the nft `script` in `ns`.
fn nft_in(ns: &str, script: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (install nftables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Waits until `iface` in `ns` is operationally up (carrier seen). A veth
/// drops what is sent on it until then (up to about a second).
pub fn wait_link_up(ns: &str, iface: &str) {
    let up = wait_until(SETUP_TIMEOUT, || {
        ip_in(ns, &["link", "show", "dev", iface]).contains("state UP")
    });
    assert!(up, "{iface} in {ns} never came up");
}

/// Polls `cond` every 50 ms until it holds (true) or `timeout` passes
/// (false).
pub fn wait_until(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    wait_until_every(Duration::from_millis(50), timeout, cond)
}

/// [`wait_until`], polling every `step` (a benchmark's finer clock).
pub fn wait_until_every(step: Duration, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(step);
    }
}

/// Runs `command` with stdout and stderr captured, killing it if it runs
/// longer than `timeout` (then panics, with what it printed).
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let out = out_reader.join().unwrap_or_default();
                let err = err_reader.join().unwrap_or_default();
                panic!(
                    "{command:?} ran longer than {timeout:?}; killed.\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                );
            }
            Err(e) => panic!("waiting for {command:?}: {e}"),
        }
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}
