//! A real SIP server for tests: Kamailio (Debian's `kamailio` package),
//! started in the foreground with a minimal config in a temporary
//! directory, listening on loopback (IPv4 and IPv6, UDP and TCP) on a
//! random free port.
//!
//! The config answers OPTIONS statelessly (`sl` module) and picks the answer
//! by request-URI user, so one server covers every status a probe must
//! judge:
//!
//! | user      | answer                                  |
//! |-----------|-----------------------------------------|
//! | `nobody`  | 404 Not Found                           |
//! | `down`    | 503 Service Unavailable                 |
//! | `trying`  | 100 Trying, then 200 OK                 |
//! | `stuck`   | 100 Trying, then nothing                |
//! | `silent`  | nothing at all                          |
//! | anyone    | 200 OK                                  |
//!
//! Kamailio forks worker processes; it runs in a process group of its own,
//! and [`Kamailio::kill`] (or dropping it) SIGKILLs the whole group and waits
//! until no process of it is left holding the ports.
//!
//! [`Kamailio::start_with`] runs it the way the two-server lab
//! (`tests/lab/`) needs: inside a network namespace
//! ([`KamailioOptions::netns`]; it is then started through
//! `ip netns exec NS` and its readiness checked from inside), on given
//! addresses and port, in a directory that outlives it, and signing its
//! replies with a `Server:` header ([`KamailioOptions::identity`]) so that a
//! client can tell which server answered. Listening on an address the host
//! does not hold yet (a service address) needs
//! `net.ipv4.ip_nonlocal_bind=1` in that namespace; the caller sets it.

#![allow(dead_code)]

use super::netns;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BINARY: &str = "/usr/sbin/kamailio";
const MODULE_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/kamailio/modules",
    "/usr/lib/aarch64-linux-gnu/kamailio/modules",
    "/usr/lib/kamailio/modules",
];

/// How to start a [`Kamailio`]. The default is what [`Kamailio::start`]
/// does: loopback (IPv4 and IPv6), a free port, a temporary directory, in
/// this network namespace, no `Server:` header.
#[derive(Debug, Clone, Default)]
pub struct KamailioOptions {
    /// Addresses to listen on, each over UDP and TCP; the first one is used
    /// to check readiness, so it must be held by the host (put 127.0.0.1
    /// first). Empty: 127.0.0.1 and ::1.
    pub listen: Vec<IpAddr>,
    /// The port; `None` picks a free one (5060 inside a namespace, where
    /// nothing else listens).
    pub port: Option<u16>,
    /// Replies carry `Server: <identity>` (e.g. `lab-master`).
    pub identity: Option<String>,
    /// Run inside this network namespace (`/run/netns/<name>`).
    pub netns: Option<String>,
    /// Keep the config, log and pid file here (created if missing, left on
    /// drop) instead of a temporary directory. The log is appended to, so
    /// it spans restarts.
    pub dir: Option<PathBuf>,
}

pub struct Kamailio {
    child: Option<Child>,
    pub port: u16,
    /// Where it is checked for readiness.
    ready_addr: IpAddr,
    netns: Option<String>,
    /// The temporary directory, when there is one (removed on drop).
    _temp: Option<tempfile::TempDir>,
    dir: PathBuf,
}

fn config(port: u16, mpath: &Path, listen: &[IpAddr], identity: Option<&str>) -> String {
    let mut listen_lines = String::new();
    for addr in listen {
        let host = match addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        for proto in ["udp", "tcp"] {
            listen_lines.push_str(&format!("listen={proto}:{host}:{port}\n"));
        }
    }
    let server = match identity {
        Some(id) => format!("server_header=\"Server: {id}\"\n"),
        None => String::new(),
    };
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
disable_sctp=yes
enable_tls=no
{server}{listen_lines}mpath="{mpath}/"
loadmodule "sl.so"
loadmodule "pv.so"

request_route {{
    if ($rm != "OPTIONS") {{
        sl_send_reply("501", "Not Implemented");
        exit;
    }}
    if ($rU == "nobody") {{
        sl_send_reply("404", "Not Found");
        exit;
    }}
    if ($rU == "down") {{
        sl_send_reply("503", "Service Unavailable");
        exit;
    }}
    if ($rU == "trying") {{
        sl_send_reply("100", "Trying");
        sl_send_reply("200", "OK");
        exit;
    }}
    if ($rU == "stuck") {{
        sl_send_reply("100", "Trying");
        exit;
    }}
    if ($rU == "silent") {{
        drop;
    }}
    sl_send_reply("200", "OK");
}}
"#,
        mpath = mpath.display()
    )
}

fn module_dir() -> PathBuf {
    MODULE_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("sl.so").exists())
        .expect("Kamailio modules (sl.so) not found: is Debian's kamailio package installed?")
}

/// A port in 20000..60000 that is free on 127.0.0.1 and ::1, UDP and TCP,
/// right now.
fn free_port() -> u16 {
    loop {
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).unwrap();
        let port = 20000 + u16::from_be_bytes(b) % 40000;
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("::1", port)).is_ok()
            && UdpSocket::bind(("::1", port)).is_ok();
        if free {
            return port;
        }
    }
}

impl Kamailio {
    /// Start Kamailio and wait until it answers OPTIONS over UDP and accepts
    /// TCP connections. Panics (with Kamailio's log) if it cannot.
    pub fn start() -> Kamailio {
        Kamailio::start_with(KamailioOptions::default())
    }

    /// [`Kamailio::start`] as `options` say.
    pub fn start_with(options: KamailioOptions) -> Kamailio {
        assert!(
            Path::new(BINARY).exists(),
            "{BINARY} not found: install Debian's kamailio package"
        );
        let mpath = module_dir();
        let listen = if options.listen.is_empty() {
            vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]
        } else {
            options.listen.clone()
        };
        let mut last_log = String::new();
        // A port found free may be taken before Kamailio binds it: retry.
        for _ in 0..5 {
            let (temp, dir) = match &options.dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir)
                        .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
                    (None, dir.clone())
                }
                None => {
                    let temp = tempfile::tempdir().expect("temporary directory for Kamailio");
                    let dir = temp.path().to_path_buf();
                    (Some(temp), dir)
                }
            };
            let port = match (options.port, &options.netns) {
                (Some(port), _) => port,
                (None, Some(_)) => 5060,
                (None, None) => free_port(),
            };
            let cfg = dir.join("kamailio.cfg");
            std::fs::write(
                &cfg,
                config(port, &mpath, &listen, options.identity.as_deref()),
            )
            .expect("write kamailio.cfg");
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("kamailio.log"))
                .expect("open kamailio.log");
            let mut command = match &options.netns {
                Some(ns) => {
                    // `ip netns exec` execs Kamailio in place: the child's
                    // pid and process group are Kamailio's.
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns.as_str(), BINARY]);
                    c
                }
                None => Command::new(BINARY),
            };
            let child = {
                use std::os::unix::process::CommandExt;
                command
                    .arg("-f")
                    .arg(&cfg)
                    .args(["-DD", "-E", "-n", "1", "-m", "32", "-M", "4"])
                    .arg("-w")
                    .arg(&dir)
                    .arg("-Y")
                    .arg(&dir)
                    .arg("-P")
                    .arg(dir.join("kamailio.pid"))
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("duplicate the log file"))
                    .stderr(log)
                    .process_group(0)
                    .spawn()
                    .expect("cannot start kamailio")
            };
            let mut k = Kamailio {
                child: Some(child),
                port,
                ready_addr: listen[0],
                netns: options.netns.clone(),
                _temp: temp,
                dir,
            };
            if k.wait_ready() {
                return k;
            }
            last_log = k.log();
            k.kill();
        }
        panic!("Kamailio did not start; its last log:\n{last_log}");
    }

    /// Its directory (config, log, pid file).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("kamailio.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Whether the main process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false; // exited: bad config or port taken
                }
            }
            let target = SocketAddr::new(self.ready_addr, self.port);
            let ready = match &self.netns {
                Some(ns) => netns::in_ns_sync(ns, || {
                    TcpStream::connect(target).is_ok() && answers_udp(target)
                }),
                None => TcpStream::connect(target).is_ok() && answers_udp(target),
            };
            if ready {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// SIGKILL the whole process group and wait until none of it is alive
    /// (zombies aside: they hold no sockets).
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as i32;
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while group_alive(pgid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One hand-made OPTIONS over UDP; any reply counts (readiness only — the
/// probe under test is not used to decide whether Kamailio is up).
fn answers_udp(target: SocketAddr) -> bool {
    let local = match target {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let Ok(sock) = UdpSocket::bind(local) else {
        return false;
    };
    if sock.connect(target).is_err() {
        return false;
    }
    let Ok(local) = sock.local_addr() else {
        return false;
    };
    let port = target.port();
    let req = format!(
        "OPTIONS sip:ready@{target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKready{port}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:test@{target}>;tag=1\r\n\
         To: <sip:ready@{target}>\r\nCall-ID: ready-{port}\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    if sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .is_err()
        || sock.send(req.as_bytes()).is_err()
    {
        return false;
    }
    let mut buf = [0u8; 2048];
    matches!(sock.recv(&mut buf), Ok(n) if buf[..n].starts_with(b"SIP/2.0 "))
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Is any non-zombie process in process group `pgid` left?
fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        let Some(close) = stat.rfind(')') else {
            return false;
        };
        // After "(comm)": state ppid pgrp ...
        let mut fields = stat[close + 1..].split_whitespace();
        let state = fields.next().unwrap_or("");
        let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
        pgrp == Some(pgid) && state != "Z" && state != "X"
    })
}
