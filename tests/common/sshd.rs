//! A real OpenSSH server for tests: [`TestSshd`].
//!
//! Each instance lives in its own temporary directory with a fresh ed25519
//! host key, a fresh client key, its own `authorized_keys` and
//! `known_hosts` (or in a directory the caller names, see
//! [`SshdOptions::dir`], where keys and `authorized_keys` survive a restart,
//! as on a real server that reboots), and runs `/usr/sbin/sshd -D -e -f <dir>/sshd_config` as a
//! child process that is killed when the value is dropped. It is ready when
//! sshd logs `Server listening on`, which works wherever sshd runs: on
//! loopback here, or inside a network namespace when started through a
//! wrapper such as `ip netns exec NS` (set [`SshdOptions::wrapper`], and give
//! the address and port, since a free port cannot be picked from outside).
//!
//! sshd logs to stderr; [`TestSshd::log`] returns it, and it is printed if
//! the server fails to start. Needs openssh-server and ssh-keygen
//! (`scripts/install-test-deps.sh`). As root, sshd needs `/run/sshd`, which
//! is created.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

pub const SSHD: &str = "/usr/sbin/sshd";

/// How long sshd may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a [`TestSshd`].
#[derive(Debug, Clone)]
pub struct SshdOptions {
    /// `ListenAddress`.
    pub listen: IpAddr,
    /// `Port`; `None` picks a free one (only meaningful when sshd runs in
    /// this network namespace).
    pub port: Option<u16>,
    /// A command prefix to start sshd through, e.g.
    /// `["ip", "netns", "exec", "node-a"]`.
    pub wrapper: Vec<OsString>,
    /// The user the client logs in as; default: the user running the tests.
    pub user: Option<String>,
    /// Extra `sshd_config` lines.
    pub extra_config: String,
    /// Keep everything in this directory (created if missing) instead of a
    /// temporary one, and leave it in place on drop. Keys and
    /// `authorized_keys` already there are reused, so an sshd restarted on
    /// the same directory has the same host key and the same logins.
    pub dir: Option<PathBuf>,
}

impl Default for SshdOptions {
    fn default() -> Self {
        SshdOptions {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: None,
            wrapper: Vec::new(),
            user: None,
            extra_config: String::new(),
            dir: None,
        }
    }
}

/// A running sshd and the files a client needs to reach it.
pub struct TestSshd {
    /// The temporary directory, when sshd has one (removed on drop).
    _temp: Option<tempfile::TempDir>,
    dir: PathBuf,
    pub listen: IpAddr,
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// The server's public host key, `ssh-ed25519 AAAA...`.
    pub host_public_key: String,
    /// A private key whose public half is authorized (see [`authorize`]).
    ///
    /// [`authorize`]: TestSshd::authorize
    pub client_key: PathBuf,
    /// A known_hosts file holding this server's host key.
    pub known_hosts: PathBuf,
    /// The server's `AuthorizedKeysFile`.
    pub authorized_keys: PathBuf,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl TestSshd {
    /// An sshd on 127.0.0.1, on a free port.
    pub fn start() -> TestSshd {
        TestSshd::start_with(SshdOptions::default())
    }

    pub fn start_with(options: SshdOptions) -> TestSshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (scripts/install-test-deps.sh)"
        );
        let (temp, dir) = match &options.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
                (None, dir.clone())
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("sip-ha-sshd.")
                    .tempdir()
                    .expect("temporary directory");
                let dir = temp.path().to_path_buf();
                (Some(temp), dir)
            }
        };
        let path = dir.as_path();
        let user = options.user.clone().unwrap_or_else(current_user);
        let port = options.port.unwrap_or_else(|| free_port(options.listen));

        let host_key = path.join("host_ed25519");
        keygen_if_missing(&host_key, "sip-ha test host");
        let host_public_key = public_key(&host_key);
        let client_key = path.join("client_ed25519");
        keygen_if_missing(&client_key, "sip-ha test client");

        let authorized_keys = path.join("authorized_keys");
        let known_hosts = path.join("known_hosts");
        let config = path.join("sshd_config");
        let listen = match options.listen {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        // `SetEnv SHLVL=1`: sessions start without the user's ~/.bashrc.
        // sshd runs every command through the user's shell, and bash reads
        // ~/.bashrc when started by sshd as a top-level shell; with SHLVL
        // set it is a second level and does not. Root's .bashrc on this
        // build machine runs pyenv init (~0.1 s a session), which the
        // benchmarks would count to rsync (one session a run) and hardly to
        // sip-ha's loop (one session in all). Stray shell output is tested
        // with a command that prints (tests/link.rs).
        std::fs::write(
            &config,
            format!(
                "ListenAddress {listen}:{port}\n\
                 HostKey {host_key}\n\
                 PidFile {pid}\n\
                 AuthorizedKeysFile {authorized_keys}\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\n\
                 PrintMotd no\n\
                 PrintLastLog no\n\
                 LogLevel INFO\n\
                 SetEnv SHLVL=1\n\
                 {extra}\n",
                host_key = host_key.display(),
                pid = path.join("sshd.pid").display(),
                authorized_keys = authorized_keys.display(),
                extra = options.extra_config,
            ),
        )
        .expect("write sshd_config");
        let _ = std::fs::create_dir_all("/run/sshd");

        let mut command = match options.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(SSHD);
                c
            }
            None => Command::new(SSHD),
        };
        command
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start sshd");

        // Collect sshd's log; tell the waiting test when it listens.
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("sshd stderr");
        let log_writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("Server listening on") {
                    let _ = ready_tx.send(true);
                }
                let mut log = log_writer.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            let _ = ready_tx.send(false);
        });

        let mut sshd = TestSshd {
            _temp: temp,
            dir,
            listen: options.listen,
            port,
            user,
            host_public_key,
            client_key,
            known_hosts,
            authorized_keys,
            child,
            log,
        };
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(true) => {}
            Ok(false) => panic!("sshd exited before listening:\n{}", sshd.log()),
            Err(_) => {
                let _ = sshd.child.kill();
                panic!(
                    "sshd did not listen within {START_TIMEOUT:?}:\n{}",
                    sshd.log()
                )
            }
        }
        std::fs::write(&sshd.known_hosts, sshd.known_hosts_line() + "\n")
            .expect("write known_hosts");
        // A restart on a kept directory keeps the logins set up before.
        if !sshd.authorized_keys.exists() {
            sshd.authorize(None);
        }
        sshd
    }

    /// The server's directory (temporary and removed on drop, unless
    /// [`SshdOptions::dir`] named it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `known_hosts` line for this server: `[addr]:port ssh-ed25519 ...`.
    pub fn known_hosts_line(&self) -> String {
        let host = if self.port == 22 {
            self.listen.to_string()
        } else {
            format!("[{}]:{}", self.listen, self.port)
        };
        format!("{host} {}", self.host_public_key)
    }

    /// Authorizes only [`client_key`](Self::client_key), with a forced
    /// command if given (sshd runs it instead of what the client asks for,
    /// through the user's shell; the request is in `$SSH_ORIGINAL_COMMAND`).
    pub fn authorize(&self, forced_command: Option<&str>) {
        let key = public_key(&self.client_key);
        std::fs::write(
            &self.authorized_keys,
            authorized_keys_line(&key, forced_command),
        )
        .expect("write authorized_keys");
    }

    /// Makes `public_key` (`ssh-ed25519 AAAA...`) the only authorized key,
    /// locked down as on a production peer:
    /// `restrict,command="<command>" <key>`. `restrict` turns off every
    /// forwarding, the pty and `~/.ssh/rc`; sshd runs the forced command
    /// instead of whatever the client asked for.
    pub fn authorize_restricted(&self, public_key: &str, command: &str) {
        std::fs::write(
            &self.authorized_keys,
            format!(
                "restrict,command=\"{}\" {}\n",
                command.replace('\\', "\\\\").replace('"', "\\\""),
                public_key.trim()
            ),
        )
        .expect("write authorized_keys");
    }

    /// The listening sshd's process id (each connection is a child of it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the sshd process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Adds another public key (`ssh-ed25519 AAAA...`) to `authorized_keys`.
    pub fn authorize_key(&self, public_key: &str, forced_command: Option<&str>) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.authorized_keys)
            .expect("open authorized_keys");
        file.write_all(authorized_keys_line(public_key, forced_command).as_bytes())
            .expect("append to authorized_keys");
    }

    /// Generates a new ed25519 key pair in the server's directory, not
    /// authorized; returns the private key's path.
    pub fn new_key(&self, name: &str) -> PathBuf {
        let path = self.dir().join(name);
        keygen(&path, name);
        path
    }

    /// sip-ha's `[ssh]` settings for reaching this server.
    pub fn ssh_config(&self, remote_command: &str) -> sip_ha::config::Ssh {
        sip_ha::config::Ssh {
            user: self.user.clone(),
            port: self.port,
            identity: self.client_key.clone(),
            known_hosts: self.known_hosts.clone(),
            connect_timeout: Duration::from_secs(20),
            remote_command: remote_command.to_string(),
        }
    }

    /// The head of a config file (`[cluster]`, `[nodes]`, `[ssh]`,
    /// `[peer]`) whose master is this machine and whose slave is reached
    /// through this sshd; tests append their `[sync]` and the rest.
    /// `service_address` differs between test crates that may run passes
    /// at the same time.
    pub fn master_config(
        &self,
        name: &str,
        service_address: &str,
        state_dir: &Path,
        remote_command: &str,
        connect_timeout: &str,
    ) -> String {
        format!(
            r#"# {name}: this node is the master, the peer the test sshd.
[cluster]
name = "{name}"
service_address = "{service_address}"
state_dir = "{state}"

[nodes.master]
address = "127.0.0.2"
interface = "lo"

[nodes.slave]
address = "127.0.0.1"
interface = "lo"

[ssh]
user = "{user}"
port = {port}
identity = "{identity}"
known_hosts = "{known_hosts}"
connect_timeout = "{connect_timeout}"
remote_command = "{remote_command}"

[peer]
witness = ["127.0.0.3"]
"#,
            state = state_dir.display(),
            user = self.user,
            port = self.port,
            identity = self.client_key.display(),
            known_hosts = self.known_hosts.display(),
        )
    }

    /// What sshd has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn authorized_keys_line(public_key: &str, forced_command: Option<&str>) -> String {
    match forced_command {
        Some(command) => format!(
            "command=\"{}\",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding {}\n",
            command.replace('\\', "\\\\").replace('"', "\\\""),
            public_key.trim()
        ),
        None => format!("{}\n", public_key.trim()),
    }
}

/// Stops every SSH master with its socket in `control_dir`: those syncs
/// keep (`PeerLink::connect_kept`) and any left by a sip-ha killed in a
/// test, so that a test leaves no ssh process behind (they would otherwise
/// idle out after a few minutes).
pub fn stop_kept_masters(control_dir: &Path) {
    let Ok(dir) = std::fs::read_dir(control_dir) else {
        return;
    };
    for conn in dir.flatten() {
        if !conn
            .file_name()
            .to_string_lossy()
            .starts_with(".ssh-connection")
        {
            continue;
        }
        let socket = conn.path().join("master");
        if socket.exists() {
            let _ = Command::new("ssh")
                .arg("-S")
                .arg(&socket)
                .args(["-O", "exit", "unused"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `ssh-keygen -t ed25519` without a passphrase.
pub fn keygen(path: &Path, comment: &str) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
}

/// [`keygen`], unless `path` already holds a key.
pub fn keygen_if_missing(path: &Path, comment: &str) {
    if !path.exists() {
        keygen(path, comment);
    }
}

/// The public half of a key made by [`keygen`], without its comment.
pub fn public_key(private_key: &Path) -> String {
    let mut pub_path = private_key.as_os_str().to_owned();
    pub_path.push(".pub");
    let text = std::fs::read_to_string(&pub_path).expect("read public key");
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn free_port(addr: IpAddr) -> u16 {
    TcpListener::bind((addr, 0))
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

fn current_user() -> String {
    let uid = nix::unistd::Uid::current();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("name of the current user")
}
