//! Two hosts on one machine: a pair of network namespaces joined by a veth
//! cable, for tests that need a real link (netlink, ARP, neighbour
//! discovery).
//!
//! ```text
//!   siphat-<pid>-<n>-a                     siphat-<pid>-<n>-b
//!   sipha-a  10.250.<x>.1/24  <--veth-->   sipha-b  10.250.<x>.2/24
//!            fd5a:fa:<x>::1/64                      fd5a:fa:<x>::2/64
//! ```
//!
//! The addresses are test-only and exist only inside the namespaces; nothing
//! is routed out of them. [`Pair`] deletes both namespaces on drop (which
//! removes the veth too), and [`Pair::new`] first deletes namespaces left by
//! earlier test processes that are no longer running.
//!
//! Code under test runs "on" a host through [`in_ns`]: a fresh thread joins
//! the namespace with `setns(2)` and runs a current-thread tokio runtime, so
//! every socket it opens (netlink, packet) belongs to that namespace. Other
//! threads of the test process are unaffected.
//!
//! Code that needs no async runtime (a plain socket loop, a readiness check)
//! uses [`in_ns_sync`] or [`enter`] instead.
//!
//! Processes started inside a namespace (`ip netns exec NS ...`) keep it
//! alive after `ip netns del`, and outlive a test process that is killed.
//! [`delete`] therefore kills every process still in the namespace first, and
//! [`reap_stale_with_prefix`] does the same for namespaces of dead test
//! processes (the lab in `tests/lab/` names its namespaces differently and
//! reaps them with it).
//!
//! Needs root (`ip netns add`); [`Pair::new_or_skip`] returns `None`, after
//! saying so, when not root.

#![allow(dead_code)] // each test binary uses a different part

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every namespace these tests make.
pub const PREFIX: &str = "siphat-";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One end of the pair.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace name, for `ip -n` and [`in_ns`].
    pub ns: String,
    /// Its end of the veth.
    pub interface: String,
    /// Management addresses (/24 and /64).
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

impl Host {
    /// Runs `ip -n <ns> args...`, panicking on failure; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs `ip netns exec <ns> program args...`; returns stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", self.ns.as_str(), program];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs `f()` to completion inside this host's namespace: see [`in_ns`].
    pub fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        in_ns(&self.ns, f)
    }
}

/// Two namespaces joined by a veth, up and addressed. Deleted on drop.
#[derive(Debug)]
pub struct Pair {
    pub a: Host,
    pub b: Host,
    /// The `x` of 10.250.x.0/24 and fd5a:fa:x::/64.
    pub x: u8,
}

impl Pair {
    /// Builds a new pair. Panics (with `ip`'s message) if it cannot.
    pub fn new() -> Pair {
        reap_stale();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let x = (n % 250) as u8;
        let host = |side: &str, last: u8| Host {
            ns: format!("{PREFIX}{pid}-{n}-{side}"),
            interface: format!("sipha-{side}"),
            ipv4: Ipv4Addr::new(10, 250, x, last),
            ipv6: Ipv6Addr::new(0xfd5a, 0xfa, u16::from(x), 0, 0, 0, 0, u16::from(last)),
        };
        let pair = Pair {
            a: host("a", 1),
            b: host("b", 2),
            x,
        };
        // From here on, Drop cleans up whatever was made.
        ip(&["netns", "add", &pair.a.ns]);
        ip(&["netns", "add", &pair.b.ns]);
        // Created directly inside the namespaces, so the fixed names never
        // clash between pairs.
        ip(&[
            "link",
            "add",
            &pair.a.interface,
            "netns",
            &pair.a.ns,
            "type",
            "veth",
            "peer",
            "name",
            &pair.b.interface,
            "netns",
            &pair.b.ns,
        ]);
        for h in [&pair.a, &pair.b] {
            h.ip(&["link", "set", "lo", "up"]);
            h.ip(&[
                "addr",
                "add",
                &format!("{}/24", h.ipv4),
                "dev",
                &h.interface,
            ]);
            h.ip(&[
                "addr",
                "add",
                &format!("{}/64", h.ipv6),
                "dev",
                &h.interface,
                "nodad",
            ]);
            h.ip(&["link", "set", &h.interface, "up"]);
        }
        // Until the kernel's link watcher has seen the carrier (up to about
        // a second), the veth drops what is sent on it; its operational
        // state turns UP at that moment.
        for h in [&pair.a, &pair.b] {
            let start = std::time::Instant::now();
            while !h
                .ip(&["link", "show", "dev", &h.interface])
                .contains("state UP")
            {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(30),
                    "{} in {} never came up",
                    h.interface,
                    h.ns
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        pair
    }

    /// [`Pair::new`] when running as root; otherwise says why it skips and
    /// returns `None`.
    pub fn new_or_skip() -> Option<Pair> {
        if !is_root() {
            eprintln!("skipped: network namespace tests need root");
            return None;
        }
        Some(Pair::new())
    }

    /// 10.250.x.`host`: an address on the pair's IPv4 link.
    pub fn v4(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.x, host)
    }

    /// fd5a:fa:x::`host`: an address on the pair's IPv6 link.
    pub fn v6(&self, host: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd5a, 0xfa, u16::from(self.x), 0, 0, 0, 0, host)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for h in [&self.a, &self.b] {
            delete(&h.ns);
        }
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `ip args...`; panics with its stderr if it fails; returns stdout.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip (iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f()` and the future it returns on a new thread that has joined the
/// network namespace `name` (`/run/netns/<name>`), on a current-thread tokio
/// runtime built there. A panic inside is passed on to the caller.
///
/// `f` itself runs on that thread before the future starts, so it may also
/// change per-thread state (capabilities) that the future should see.
pub fn in_ns<F, Fut, T>(name: &str, f: F) -> T
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = T>,
    T: Send,
{
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            enter(name);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async { f().await })
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `f` to completion on a new thread that has joined the network
/// namespace `name`, without an async runtime: for plain sockets. A panic
/// inside is passed on to the caller.
pub fn in_ns_sync<F, T>(name: &str, f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            enter(name);
            f()
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Moves the calling thread into the network namespace `name` for good.
/// Only for threads made for the purpose: the thread cannot come back, and
/// every socket it opens from now on belongs to `name`.
pub fn enter(name: &str) {
    let path = format!("/run/netns/{name}");
    let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

/// The processes whose network namespace is `name` (`ip netns pids`),
/// except this test process itself.
pub fn pids_in(name: &str) -> Vec<i32> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|&p| p != me)
        .collect()
}

/// SIGKILLs every process in the namespace `name` (see [`pids_in`]) and
/// waits, up to 10 s, until none is left. These are processes the tests
/// started there (sshd, Kamailio, sip-ha, ssh) or that those started.
pub fn kill_all_in(name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let pids = pids_in(name);
        if pids.is_empty() || std::time::Instant::now() > deadline {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Deletes the namespace `name` after killing what still runs in it; a
/// namespace that does not exist is not an error.
pub fn delete(name: &str) {
    if !std::path::Path::new(&format!("/run/netns/{name}")).exists() {
        return;
    }
    kill_all_in(name);
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Deletes `siphat-<pid>-...` namespaces whose test process is gone (a run
/// killed before its Drop ran).
fn reap_stale() {
    reap_stale_with_prefix(PREFIX);
}

/// Deletes the namespaces named `<prefix><pid>-...` whose test process `pid`
/// is no longer running, killing what still runs in them (see [`delete`]).
pub fn reap_stale_with_prefix(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if pid_is_gone(name, prefix) {
            delete(name);
        }
    }
}

/// Whether `name` is `<prefix><pid>-...` and process `pid` is gone.
pub fn pid_is_gone(name: &str, prefix: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    let Some(pid) = rest
        .split(['-', '.'])
        .next()
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return false;
    };
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}
