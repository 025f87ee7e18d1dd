//! One server of the lab: [`NodeHandle`], from [`Lab::node`](super::Lab::node).
//!
//! Everything of a server runs inside its network namespace, started with
//! `ip netns exec <ns> ...`: sshd, Kamailio, every `sip-ha` command and the
//! `sip-ha run --loop`. Its files live in its own directory (see the module
//! documentation of `lab`). Every method takes `&self`; the handles of the
//! running daemons sit behind a mutex.
//!
//! Faults a test can inject here: [`NodeHandle::kill_sip_service`] (the PBX
//! dies, the server stays up), [`NodeHandle::power_off`] (everything dies,
//! links go dark, the service address is gone as after a reboot),
//! [`NodeHandle::link_down`] (one cable pulled), [`NodeHandle::kill_loop`]
//! (sip-ha itself crashes).

use super::{
    ip_in, run_with_timeout, sip, wait_until, Reply, COMMAND_TIMEOUT, LAN_IF, MGMT_IF, SIP_HA,
    SIP_PORT,
};
use crate::common::kamailio::{Kamailio, KamailioOptions};
use crate::common::netns;
use crate::common::sshd::{self, SshdOptions, TestSshd};
use sip_ha_core::Role;
use std::ffi::OsString;
use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// How long `sip-ha run --loop` gets to exit after SIGTERM.
pub const LOOP_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a link brought up may take to show carrier.
const CARRIER_TIMEOUT: Duration = Duration::from_secs(30);

/// What the lab decides about a node before building it.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub role: Role,
    pub ns: String,
    /// The peer's namespace (the other end of eth1).
    pub peer_ns: String,
    /// The client's namespace and the bridge port at the other end of eth0.
    pub client_ns: String,
    pub bridge_port: &'static str,
    pub dir: PathBuf,
    pub mgmt: Ipv4Addr,
    pub lan: Ipv4Addr,
    pub service: Ipv4Addr,
    /// Extra arguments for `sip-ha serve` on this node (its forced
    /// command), `{node_dir}` replaced: e.g. `--sync-prefix {node_dir}/recv`.
    pub serve_args: String,
    /// Global options for `sip-ha run --loop`.
    pub loop_args: Vec<String>,
}

/// The daemons of a node, while they run.
#[derive(Default)]
struct Running {
    sshd: Option<TestSshd>,
    kamailio: Option<Kamailio>,
    run_loop: Option<Child>,
    /// Whether the loop ran when the node was powered off (power_on starts
    /// it again, as systemd would at boot).
    loop_before_power_off: bool,
    powered_off: bool,
}

/// One server of the lab. See the module documentation.
pub struct NodeHandle {
    pub(crate) spec: Spec,
    running: Mutex<Running>,
}

impl NodeHandle {
    pub(crate) fn new(spec: Spec) -> NodeHandle {
        NodeHandle {
            spec,
            running: Mutex::new(Running::default()),
        }
    }

    // ---------------------------------------------------------------------
    // Who and where.

    pub fn role(&self) -> Role {
        self.spec.role
    }

    /// Its network namespace, for `ip -n`, `ip netns exec` and `in_ns`.
    pub fn ns(&self) -> &str {
        &self.spec.ns
    }

    /// Its directory: everything on this server's "disk".
    pub fn dir(&self) -> &Path {
        &self.spec.dir
    }

    /// Its `sip-ha.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.spec.dir.join("sip-ha.toml")
    }

    /// The text of its `sip-ha.toml`.
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(self.config_path()).unwrap_or_default()
    }

    /// Its `state_dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.spec.dir.join("state")
    }

    /// Its management address, on eth1 (the `[nodes]` address).
    pub fn management_address(&self) -> Ipv4Addr {
        self.spec.mgmt
    }

    /// Its fixed address on the LAN, on eth0.
    pub fn lan_address(&self) -> Ipv4Addr {
        self.spec.lan
    }

    /// The interface the service address goes on.
    pub fn interface(&self) -> &'static str {
        LAN_IF
    }

    // ---------------------------------------------------------------------
    // Running things inside it.

    /// Runs `sip-ha --config <its config> args...` inside its namespace
    /// (never with `--node`: it finds out which node it is). Panics if it
    /// runs longer than [`COMMAND_TIMEOUT`].
    pub fn sip_ha(&self, args: &[&str]) -> Output {
        let mut command = self.sip_ha_command();
        command.args(args);
        run_with_timeout(&mut command, COMMAND_TIMEOUT)
    }

    /// [`NodeHandle::sip_ha`], panicking (with its output) unless it exits
    /// 0; its stdout.
    pub fn sip_ha_ok(&self, args: &[&str]) -> String {
        let out = self.sip_ha(args);
        assert!(
            out.status.success(),
            "sip-ha {} in {} exited {}:\n{}{}",
            args.join(" "),
            self.ns(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn sip_ha_command(&self) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.ns(), SIP_HA, "--config"])
            .arg(self.config_path())
            .env_remove("SIP_HA_CONFIG");
        command
    }

    /// One pass: `sip-ha run`.
    pub fn run_pass(&self) -> Output {
        self.sip_ha(&["run"])
    }

    /// `sip-ha -v --json`, parsed. Panics if stdout is not JSON.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.sip_ha(&["-v", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "sip-ha -v --json in {} printed no JSON ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
                self.ns(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Its history log (`state_dir/history.log`); empty if none yet.
    pub fn history(&self) -> String {
        std::fs::read_to_string(self.state_dir().join("history.log")).unwrap_or_default()
    }

    /// Lets the key `public_key` log in to this node's sshd as root
    /// without the forced command: for a benchmark's rsync beside sip-ha.
    pub fn authorize_plain_key(&self, public_key: &str) {
        let running = self.lock();
        let sshd = running.sshd.as_ref().expect("this node's sshd is running");
        sshd.authorize_key(public_key, None);
    }

    /// Runs `program args...` inside its namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.ns(), program])
            .args(args);
        run_with_timeout(&mut command, COMMAND_TIMEOUT)
    }

    /// `ip -n <ns> args...`; panics on failure; stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        ip_in(self.ns(), args)
    }

    /// Runs `f()` and its future inside the namespace on a thread of this
    /// process (see `netns::in_ns`): to call sip-ha's library there, e.g.
    /// `node.in_ns(|| sip_ha::address::add("eth0", net))`.
    pub fn in_ns<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        netns::in_ns(self.ns(), f)
    }

    /// One SIP OPTIONS from inside this server to `target`.
    pub fn sip_options(&self, target: SocketAddr, timeout: Duration) -> Option<Reply> {
        netns::in_ns_sync(self.ns(), || sip::options_once(target, timeout))
    }

    /// One SIP OPTIONS to its own Kamailio on 127.0.0.1:5060.
    pub fn sip_ping_local(&self) -> Option<Reply> {
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, SIP_PORT));
        self.sip_options(target, Duration::from_secs(5))
    }

    // ---------------------------------------------------------------------
    // The sip-ha loop.

    /// Starts `sip-ha run --loop` inside the namespace, its stdout and
    /// stderr appended to `loop.log` in the node's directory. Panics if
    /// one is already running.
    pub fn start_loop(&self) {
        let mut running = self.lock();
        if let Some(child) = running.run_loop.as_mut() {
            assert!(
                !matches!(child.try_wait(), Ok(None)),
                "the {} loop is already running",
                self.role()
            );
        }
        let log_path = self.loop_log_path();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", log_path.display()));
        let _ = writeln!(log, "=== lab: sip-ha run --loop started");
        let child = self
            .sip_ha_command()
            .args(&self.spec.loop_args)
            .args(["run", "--loop"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicate the loop log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start sip-ha run --loop in {}: {e}", self.ns()));
        running.run_loop = Some(child);
    }

    /// Stops the loop with SIGTERM (which must not drop the address) and
    /// returns its exit status; `None` if no loop was started. Panics,
    /// after SIGKILLing it, if it is still running
    /// [`LOOP_STOP_TIMEOUT`] later.
    pub fn stop_loop(&self) -> Option<ExitStatus> {
        let mut child = self.lock().run_loop.take()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).ok()?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let mut status = None;
        wait_until(LOOP_STOP_TIMEOUT, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        match status {
            Some(status) => Some(status),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the {} loop did not stop within {LOOP_STOP_TIMEOUT:?} of SIGTERM; killed",
                    self.role()
                );
            }
        }
    }

    /// SIGKILLs the loop (sip-ha crashing); `None` if none was started.
    pub fn kill_loop(&self) -> Option<ExitStatus> {
        let mut child = self.lock().run_loop.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Whether a loop was started and is still running.
    pub fn loop_running(&self) -> bool {
        self.lock()
            .run_loop
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn loop_log_path(&self) -> PathBuf {
        self.spec.dir.join("loop.log")
    }

    /// What the loops of this node printed so far.
    pub fn loop_log(&self) -> String {
        std::fs::read_to_string(self.loop_log_path()).unwrap_or_default()
    }

    // ---------------------------------------------------------------------
    // The SIP service.

    /// Starts Kamailio in the namespace: UDP and TCP on 127.0.0.1, the
    /// management address and the service address, port 5060, replies
    /// signed `Server: lab-<node>`. Waits until it answers on 127.0.0.1.
    /// Panics if it is already running or cannot start.
    pub fn start_sip_service(&self) {
        let mut running = self.lock();
        assert!(
            running.kamailio.is_none(),
            "Kamailio already runs on the {}",
            self.role()
        );
        running.kamailio = Some(Kamailio::start_with(KamailioOptions {
            listen: vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V4(self.spec.mgmt),
                IpAddr::V4(self.spec.service),
            ],
            port: Some(SIP_PORT),
            identity: Some(sip::identity(self.role())),
            netns: Some(self.spec.ns.clone()),
            dir: Some(self.spec.dir.join("kamailio")),
        }));
    }

    /// Kills Kamailio (all its processes, SIGKILL): the PBX dies while the
    /// server stays up. Nothing happens if it is not running.
    pub fn kill_sip_service(&self) {
        let kamailio = self.lock().kamailio.take();
        drop(kamailio);
    }

    /// Whether the lab's Kamailio of this node is running.
    pub fn sip_service_running(&self) -> bool {
        self.lock()
            .kamailio
            .as_mut()
            .is_some_and(Kamailio::is_running)
    }

    // ---------------------------------------------------------------------
    // Power and links.

    /// Pulls the plug: SIGKILLs everything running in the namespace (the
    /// sip-ha loop, its ssh masters, sshd and its sessions, Kamailio), sets
    /// eth0 and eth1 down and removes the service address (it does not
    /// survive a reboot). The node directory stays, as a disk would.
    pub fn power_off(&self) {
        let mut running = self.lock();
        running.loop_before_power_off = running
            .run_loop
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if let Some(mut child) = running.run_loop.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        running.kamailio = None;
        running.sshd = None;
        netns::kill_all_in(self.ns());
        for iface in [LAN_IF, MGMT_IF] {
            self.ip(&["link", "set", iface, "down"]);
        }
        let service = format!("{}/24", self.spec.service);
        let _ = Command::new("ip")
            .args(["-n", self.ns(), "addr", "del", &service, "dev", LAN_IF])
            .stderr(Stdio::null())
            .status();
        running.powered_off = true;
    }

    /// Boots the node again: links up, sshd and Kamailio started, and the
    /// sip-ha loop if it ran at power-off (as its systemd unit would).
    pub fn power_on(&self) {
        for iface in [LAN_IF, MGMT_IF] {
            self.link_up(iface);
        }
        let start_loop = {
            let mut running = self.lock();
            running.powered_off = false;
            std::mem::take(&mut running.loop_before_power_off)
        };
        self.start_sshd();
        self.start_sip_service();
        if start_loop {
            self.start_loop();
        }
    }

    /// Whether the node is powered off.
    pub fn is_powered_off(&self) -> bool {
        self.lock().powered_off
    }

    /// Sets `iface` (`"eth0"` or `"eth1"`) down: its cable is pulled.
    pub fn link_down(&self, iface: &str) {
        self.ip(&["link", "set", iface, "down"]);
    }

    /// Sets `iface` up, and waits for carrier if the other end is up.
    pub fn link_up(&self, iface: &str) {
        self.ip(&["link", "set", iface, "up"]);
        let (other_ns, other_if) = match iface {
            LAN_IF => (self.spec.client_ns.as_str(), self.spec.bridge_port),
            MGMT_IF => (self.spec.peer_ns.as_str(), MGMT_IF),
            _ => return,
        };
        if admin_up(other_ns, other_if) {
            let up = wait_until(CARRIER_TIMEOUT, || {
                self.ip(&["link", "show", "dev", iface])
                    .contains("state UP")
            });
            assert!(up, "{iface} in {} has no carrier", self.ns());
        }
    }

    /// The MAC address of `iface`, `aa:bb:cc:dd:ee:ff`.
    pub fn mac(&self, iface: &str) -> String {
        let out = self.ip(&["-o", "link", "show", "dev", iface]);
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC on {iface} in {}: {out}", self.ns()))
            .to_string()
    }

    /// Whether the service address is on eth0 now (`ip -n <ns> addr`).
    pub fn holds_service_address(&self) -> bool {
        let out = self.ip(&["-o", "-4", "addr", "show", "dev", LAN_IF]);
        let want = format!("inet {}/", self.spec.service);
        out.contains(&want)
    }

    // ---------------------------------------------------------------------
    // Logs.

    /// What sshd logged since it last started.
    pub fn sshd_log(&self) -> String {
        self.lock()
            .sshd
            .as_ref()
            .map(TestSshd::log)
            .unwrap_or_default()
    }

    /// Kamailio's log (all its runs).
    pub fn kamailio_log(&self) -> String {
        std::fs::read_to_string(self.spec.dir.join("kamailio/kamailio.log")).unwrap_or_default()
    }

    /// Addresses, loop log, history and log tails, for failure messages.
    pub fn diagnostics(&self) -> String {
        let addresses = Command::new("ip")
            .args(["-n", self.ns(), "-br", "addr"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        format!(
            "--- {role} ({ns}){off}\naddresses:\n{addresses}\
             loop.log (tail):\n{loop_log}\nhistory.log (tail):\n{history}\n\
             sshd (tail):\n{sshd}\nkamailio (tail):\n{kamailio}\n",
            role = self.role(),
            ns = self.ns(),
            off = if self.is_powered_off() {
                " [powered off]"
            } else {
                ""
            },
            loop_log = tail(&self.loop_log(), 40),
            history = tail(&self.history(), 20),
            sshd = tail(&self.sshd_log(), 10),
            kamailio = tail(&self.kamailio_log(), 10),
        )
    }

    // ---------------------------------------------------------------------
    // Building (called by the lab).

    /// Creates the directory, the state directory and the SSH client key.
    pub(crate) fn prepare_dir(&self) {
        for dir in [self.dir().to_path_buf(), self.state_dir()] {
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        }
        sshd::keygen_if_missing(
            &self.spec.dir.join("id_ed25519"),
            &format!("sip-ha lab {}", self.role()),
        );
    }

    /// Starts sshd in the namespace on the management address, port 22,
    /// keeping its keys and logins in `sshd/`.
    pub(crate) fn start_sshd(&self) {
        let sshd = TestSshd::start_with(SshdOptions {
            listen: IpAddr::V4(self.spec.mgmt),
            port: Some(22),
            wrapper: ["ip", "netns", "exec", self.ns()]
                .into_iter()
                .map(OsString::from)
                .collect(),
            user: None,
            extra_config: String::new(),
            dir: Some(self.spec.dir.join("sshd")),
        });
        self.lock().sshd = Some(sshd);
    }

    /// Makes this node trust `peer`'s host key (its known_hosts) and lets
    /// it log in to `peer`, where it may only run `sip-ha serve`.
    pub(crate) fn trust_peer(&self, peer: &NodeHandle) {
        let peer_running = peer.lock();
        let peer_sshd = peer_running
            .sshd
            .as_ref()
            .expect("the peer's sshd is running");
        let known_hosts = self.spec.dir.join("known_hosts");
        std::fs::write(&known_hosts, peer_sshd.known_hosts_line() + "\n")
            .unwrap_or_else(|e| panic!("write {}: {e}", known_hosts.display()));
        let extra = peer
            .spec
            .serve_args
            .replace("{node_dir}", &peer.spec.dir.display().to_string());
        let forced = format!(
            "{SIP_HA} --config {} serve {extra}",
            peer.config_path().display()
        );
        peer_sshd.authorize_restricted(
            &sshd::public_key(&self.spec.dir.join("id_ed25519")),
            &forced,
        );
    }

    /// Kills everything of the node without a word (the lab's Drop).
    pub(crate) fn shutdown(&self) {
        let mut running = self.lock();
        if let Some(mut child) = running.run_loop.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        running.kamailio = None;
        running.sshd = None;
        drop(running);
        netns::kill_all_in(self.ns());
    }

    fn lock(&self) -> MutexGuard<'_, Running> {
        // A test that panicked while holding it leaves consistent handles.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `iface` in `ns` is administratively up.
fn admin_up(ns: &str, iface: &str) -> bool {
    let out = ip_in(ns, &["-o", "link", "show", "dev", iface]);
    out.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .is_some_and(|(flags, _)| flags.split(',').any(|f| f == "UP"))
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut s = lines[start..].join("\n");
    s.push('\n');
    s
}
