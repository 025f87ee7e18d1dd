//! A real SNMP trap receiver for tests: Net-SNMP's `snmptrapd` (Debian
//! package `snmptrapd`), in the foreground on 127.0.0.1 and a free UDP
//! port, accepting any community (`disableAuthorization yes`) and printing
//! each trap it receives to standard output, OIDs in numbers (`-On`, no
//! MIBs loaded). [`TrapReceiver::start_in`] runs it inside a network
//! namespace, on a given address and port.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BINARY: &str = "/usr/sbin/snmptrapd";

pub struct TrapReceiver {
    child: Child,
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl TrapReceiver {
    /// Start it on 127.0.0.1 and a free port, with its config and
    /// persistent files in `dir`.
    pub fn start(dir: &Path) -> TrapReceiver {
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("a free UDP port");
        TrapReceiver::start_at(dir, None, "127.0.0.1".parse().expect("an address"), port)
    }

    /// Start it inside network namespace `ns`, on `host:port`.
    pub fn start_in(dir: &Path, ns: &str, host: std::net::IpAddr, port: u16) -> TrapReceiver {
        TrapReceiver::start_at(dir, Some(ns), host, port)
    }

    fn start_at(dir: &Path, ns: Option<&str>, host: std::net::IpAddr, port: u16) -> TrapReceiver {
        let conf = dir.join("snmptrapd.conf");
        std::fs::write(&conf, "disableAuthorization yes\n").expect("write snmptrapd.conf");
        let persistent = dir.join("snmp-persist");
        std::fs::create_dir_all(&persistent).expect("persistent dir");
        let mut command = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BINARY]);
                c
            }
            None => Command::new(BINARY),
        };
        let mut child = command
            .args(["-f", "-Lo", "-C", "-c"])
            .arg(&conf)
            .args(["-On", "-m", "", "-M", "/nonexistent"])
            .arg(format!("udp:{}", std::net::SocketAddr::new(host, port)))
            .env("SNMP_PERSISTENT_DIR", &persistent)
            .env("MIBS", "")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start snmptrapd (Debian package snmptrapd installed?)");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let r = TrapReceiver { child, port, lines };
        assert!(
            r.wait_for(|l| l.contains("NET-SNMP version"), Duration::from_secs(10)),
            "snmptrapd did not start: {:?}",
            r.lines()
        );
        r
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Wait until a line satisfies `what`.
    pub fn wait_for(&self, what: impl Fn(&str) -> bool, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.lines().iter().any(|l| what(l)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for TrapReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
