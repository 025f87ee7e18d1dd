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

#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BINARY: &str = "/usr/sbin/kamailio";
const MODULE_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/kamailio/modules",
    "/usr/lib/aarch64-linux-gnu/kamailio/modules",
    "/usr/lib/kamailio/modules",
];

pub struct Kamailio {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn config(port: u16, mpath: &Path) -> String {
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
disable_sctp=yes
enable_tls=no
listen=udp:127.0.0.1:{port}
listen=tcp:127.0.0.1:{port}
listen=udp:[::1]:{port}
listen=tcp:[::1]:{port}
mpath="{mpath}/"
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
        assert!(
            Path::new(BINARY).exists(),
            "{BINARY} not found: install Debian's kamailio package"
        );
        let mpath = module_dir();
        let mut last_log = String::new();
        // A port found free may be taken before Kamailio binds it: retry.
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let cfg = dir.path().join("kamailio.cfg");
            std::fs::write(&cfg, config(port, &mpath)).unwrap();
            let log = std::fs::File::create(dir.path().join("kamailio.log")).unwrap();
            let child = {
                use std::os::unix::process::CommandExt;
                Command::new(BINARY)
                    .arg("-f")
                    .arg(&cfg)
                    .args(["-DD", "-E", "-n", "1", "-m", "32", "-M", "4"])
                    .arg("-w")
                    .arg(dir.path())
                    .arg("-Y")
                    .arg(dir.path())
                    .arg("-P")
                    .arg(dir.path().join("kamailio.pid"))
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .process_group(0)
                    .spawn()
                    .expect("cannot start kamailio")
            };
            let mut k = Kamailio {
                child: Some(child),
                port,
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

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("kamailio.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false; // exited: bad config or port taken
                }
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.answers_udp() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// One hand-made OPTIONS over UDP; any reply counts (readiness only —
    /// the probe under test is not used to decide whether Kamailio is up).
    fn answers_udp(&self) -> bool {
        let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
            return false;
        };
        if sock.connect(("127.0.0.1", self.port)).is_err() {
            return false;
        }
        let local = sock.local_addr().unwrap();
        let req = format!(
            "OPTIONS sip:ready@127.0.0.1:{port} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bKready{port}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:test@127.0.0.1>;tag=1\r\n\
             To: <sip:ready@127.0.0.1>\r\nCall-ID: ready-{port}\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            port = self.port
        );
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if sock.send(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 2048];
        matches!(sock.recv(&mut buf), Ok(n) if buf[..n].starts_with(b"SIP/2.0 "))
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
