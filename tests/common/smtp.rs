//! A real SMTP server for tests: aiosmtpd (Debian's `python3-aiosmtpd`),
//! on loopback, storing every message it accepts in a maildir.
//!
//! Run with Debian's own Python (`/usr/bin/python3`), which is the one the
//! package installs into. It can be stopped and started again on the same
//! port and maildir, as a mail server that goes down during an outage and
//! comes back. With [`SmtpTls`] it offers STARTTLS (and requires it) or
//! speaks implicit TLS, with a certificate from [`TestCa`]. With
//! [`SmtpServer::start_in`] it runs inside a network namespace (a lab's
//! client, where both servers can reach it).

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PYTHON: &str = "/usr/bin/python3";

/// How the server protects the connection.
#[derive(Debug, Clone)]
pub enum SmtpTls {
    None,
    /// `--tlscert/--tlskey`: STARTTLS offered and required.
    StartTls {
        cert: PathBuf,
        key: PathBuf,
    },
    /// `--smtpscert/--smtpskey`: TLS from the first byte.
    Implicit {
        cert: PathBuf,
        key: PathBuf,
    },
}

pub struct SmtpServer {
    child: Option<Child>,
    pub host: IpAddr,
    pub port: u16,
    netns: Option<String>,
    maildir: PathBuf,
    tls: SmtpTls,
    log: PathBuf,
}

/// A free TCP port on 127.0.0.1 (free when asked; taken by the caller soon
/// after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl SmtpServer {
    /// A plain server on a free port, storing mail in `dir/maildir`.
    pub fn start(dir: &Path) -> SmtpServer {
        SmtpServer::start_with(dir, free_port(), SmtpTls::None)
    }

    pub fn start_with(dir: &Path, port: u16, tls: SmtpTls) -> SmtpServer {
        SmtpServer::start_at(dir, None, [127, 0, 0, 1].into(), port, tls)
    }

    /// A plain server inside network namespace `ns`, on `host:port`.
    pub fn start_in(dir: &Path, ns: &str, host: IpAddr, port: u16) -> SmtpServer {
        SmtpServer::start_at(dir, Some(ns.to_owned()), host, port, SmtpTls::None)
    }

    fn start_at(
        dir: &Path,
        netns: Option<String>,
        host: IpAddr,
        port: u16,
        tls: SmtpTls,
    ) -> SmtpServer {
        let mut s = SmtpServer {
            child: None,
            host,
            port,
            netns,
            maildir: dir.join("maildir"),
            tls,
            log: dir.join("aiosmtpd.log"),
        };
        s.restart();
        s
    }

    /// Start it (again) on the same port and maildir.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("aiosmtpd log");
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, PYTHON]);
                c
            }
            None => Command::new(PYTHON),
        };
        c.args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(SocketAddr::new(self.host, self.port).to_string());
        match &self.tls {
            SmtpTls::None => {}
            SmtpTls::StartTls { cert, key } => {
                c.arg("--tlscert").arg(cert).arg("--tlskey").arg(key);
            }
            SmtpTls::Implicit { cert, key } => {
                c.arg("--smtpscert").arg(cert).arg("--smtpskey").arg(key);
            }
        }
        c.args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&self.maildir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let mut child = c
            .spawn()
            .expect("start aiosmtpd (python3-aiosmtpd installed?)");
        let addr = SocketAddr::new(self.host, self.port);
        let listening = || {
            let try_it = || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
            match &self.netns {
                Some(ns) => super::netns::in_ns_sync(ns, try_it),
                None => try_it(),
            }
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if listening() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "aiosmtpd exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// Stop it (the mail server goes down); the maildir stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every message received so far, oldest first (by arrival time).
    pub fn messages(&self) -> Vec<String> {
        SmtpServer::read_maildir(&self.maildir)
    }

    /// The messages in `maildir`, oldest first (by arrival time).
    pub fn read_maildir(maildir: &Path) -> Vec<String> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(maildir.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let t = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                files.push((t, e.path()));
            }
        }
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| std::fs::read_to_string(p).expect("read a message"))
            .collect()
    }

    /// Wait until at least `n` messages arrived; all of them.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.messages();
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value of header `name` in a raw message (first occurrence, unfolded).
pub fn header(message: &str, name: &str) -> Option<String> {
    let head = message.split("\n\n").next().unwrap_or("");
    let mut value: Option<String> = None;
    for line in head.lines() {
        if let Some(v) = value.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case(name) {
                value = Some(v.trim().to_owned());
            }
        }
    }
    value
}

/// The body of a raw message, decoded if it is quoted-printable (as lettre
/// sends a text with long lines).
pub fn body(message: &str) -> String {
    let raw = message.split_once("\n\n").map_or("", |(_, b)| b);
    let qp = header(message, "Content-Transfer-Encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("quoted-printable"));
    if !qp {
        return raw.to_owned();
    }
    let mut out = Vec::new();
    let bytes = raw.replace("\r\n", "\n").into_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'=');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A private CA and a server certificate for `localhost` / 127.0.0.1 that it
/// signed, made with the `openssl` command.
pub struct TestCa {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path) -> TestCa {
        let run = |args: &[&str]| {
            let o = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl (Debian package openssl)");
            assert!(
                o.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        std::fs::write(
            dir.join("leaf.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=sip-ha test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "server.pem",
        ]);
        TestCa {
            ca_cert: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}
