//! The link to the peer: the framed protocol over in-memory pipes, and the
//! whole path (ssh client, real sshd, `sip-ha serve`) over loopback.

mod common;

use common::sshd::{public_key, TestSshd};
use sip_ha::link::frame::{self, FrameError, MAX_FRAME};
use sip_ha::link::protocol::{self, Hello, GREETING, HELLO_MAGIC};
use sip_ha::link::{
    probe_status, serve, LocalNode, PeerLink, Request, Response, StatusReply, PROTOCOL_VERSION,
};
use sip_ha_core::{Health, Report, Role, Stance};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, DuplexStream};

const SIP_HA: &str = env!("CARGO_BIN_EXE_sip-ha");
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Generous: these tests share two cores with other builds.
const PROBE_TIMEOUT: Duration = Duration::from_secs(90);

fn reply() -> StatusReply {
    StatusReply {
        software_version: "0.1.0-test".into(),
        cluster: "pbx-pair".into(),
        report: Report {
            role: Role::Slave,
            stance: Stance::Ready,
            holds_address: false,
            health: Health::Up,
            maintenance: false,
            epoch: 17,
            active: Some(Role::Master),
        },
        summary: "standby, ready to take over".into(),
    }
}

struct Fixed(StatusReply);

impl LocalNode for Fixed {
    fn status(&self) -> anyhow::Result<StatusReply> {
        Ok(self.0.clone())
    }
}

struct Broken;

impl LocalNode for Broken {
    fn status(&self) -> anyhow::Result<StatusReply> {
        anyhow::bail!("state file unreadable")
    }
}

// ---------------------------------------------------------------------------
// Frames, in memory.

#[tokio::test]
async fn oversize_frame_refused() {
    let len = u32::try_from(MAX_FRAME + 1).unwrap();
    let mut input: &[u8] = &len.to_be_bytes();
    let err = frame::read_frame(&mut input).await.unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "peer sent a frame of {} bytes, more than the {MAX_FRAME} allowed",
            MAX_FRAME + 1
        )
    );
}

#[tokio::test]
async fn truncated_frame_is_an_error() {
    let mut bytes = 100u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[7; 10]);
    let mut input: &[u8] = &bytes;
    let err = frame::read_frame(&mut input).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "connection closed in the middle of a frame (got 14 of 104 bytes)"
    );
}

#[tokio::test]
async fn garbage_payload_is_an_error_not_a_panic() {
    let mut bytes = Vec::new();
    frame::write_frame(&mut bytes, &[0xff; 12]).await.unwrap();
    let mut input: &[u8] = &bytes;
    let err = frame::recv::<_, Response>(&mut input).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("peer sent a malformed Response (12 bytes)"),
        "{err}"
    );
}

#[tokio::test]
async fn empty_stream_is_a_clean_end() {
    let mut input: &[u8] = &[];
    assert!(frame::read_frame(&mut input).await.unwrap().is_none());
}

// ---------------------------------------------------------------------------
// Handshake and serve, in memory.

/// Runs `serve` on one end of an in-memory pipe and `client` on the other;
/// the client's end is closed when `client` returns.
async fn with_server<F, Fut>(source: &dyn LocalNode, client: F) -> anyhow::Result<()>
where
    F: FnOnce(DuplexStream) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let (input, output) = tokio::io::split(server_end);
    let (served, ()) = tokio::join!(serve(input, output, source), client(client_end));
    served
}

#[tokio::test]
async fn serve_answers_until_clean_eof() {
    let source = Fixed(reply());
    let served = with_server(&source, |pipe| async move {
        let (mut r, mut w) = tokio::io::split(pipe);
        let hello = protocol::client_handshake(&mut r, &mut w).await.unwrap();
        assert_eq!(hello, Hello::ours());
        for _ in 0..3 {
            frame::send(&mut w, &Request::Status).await.unwrap();
            let answer: Response = frame::recv(&mut r).await.unwrap().unwrap();
            assert_eq!(answer, Response::Status(reply()));
        }
    })
    .await;
    served.expect("a clean end between frames is a normal end");
}

#[tokio::test]
async fn serve_answers_errors_and_goes_on() {
    let served = with_server(&Broken, |pipe| async move {
        let (mut r, mut w) = tokio::io::split(pipe);
        protocol::client_handshake(&mut r, &mut w).await.unwrap();
        // A request this version does not know (say, from a newer client).
        frame::write_frame(&mut w, &[200, 1, 2]).await.unwrap();
        w.flush().await.unwrap();
        match frame::recv::<_, Response>(&mut r).await.unwrap().unwrap() {
            Response::Error(e) => assert!(e.contains("cannot answer"), "{e}"),
            other => panic!("{other:?}"),
        }
        // A request the source fails on.
        frame::send(&mut w, &Request::Status).await.unwrap();
        match frame::recv::<_, Response>(&mut r).await.unwrap().unwrap() {
            Response::Error(e) => assert!(e.contains("state file unreadable"), "{e}"),
            other => panic!("{other:?}"),
        }
    })
    .await;
    served.unwrap();
}

#[tokio::test]
async fn serve_fails_on_a_frame_cut_short() {
    let source = Fixed(reply());
    let served = with_server(&source, |pipe| async move {
        let (mut r, mut w) = tokio::io::split(pipe);
        protocol::client_handshake(&mut r, &mut w).await.unwrap();
        w.write_all(&50u32.to_be_bytes()).await.unwrap();
        w.write_all(b"only part").await.unwrap();
        w.flush().await.unwrap();
    })
    .await;
    let err = format!("{:#}", served.unwrap_err());
    assert!(
        err.contains("connection closed in the middle of a frame (got 13 of 54 bytes)"),
        "{err}"
    );
}

#[tokio::test]
async fn serve_refuses_an_oversize_frame() {
    let source = Fixed(reply());
    let served = with_server(&source, |pipe| async move {
        let (mut r, mut w) = tokio::io::split(pipe);
        protocol::client_handshake(&mut r, &mut w).await.unwrap();
        w.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        w.flush().await.unwrap();
    })
    .await;
    let err = format!("{:#}", served.unwrap_err());
    assert!(
        err.contains("peer sent a frame of 4294967295 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn client_refuses_a_newer_peer() {
    let (mut client, mut server) = tokio::io::duplex(4096);
    server.write_all(GREETING).await.unwrap();
    let newer = Hello {
        magic: HELLO_MAGIC,
        version: PROTOCOL_VERSION + 1,
        software: "9.9.9".into(),
    };
    frame::send(&mut server, &newer).await.unwrap();
    let (mut r, mut w) = tokio::io::split(&mut client);
    let err = protocol::client_handshake(&mut r, &mut w)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "peer runs sip-ha protocol {}, this node speaks {PROTOCOL_VERSION}: run `sip-ha -c` to copy this version to the peer",
            PROTOCOL_VERSION + 1
        )),
        "{err}"
    );
    assert!(err.contains("9.9.9"), "{err}");
}

#[tokio::test]
async fn serve_refuses_an_older_client() {
    let source = Fixed(reply());
    let served = with_server(&source, |pipe| async move {
        let (mut r, mut w) = tokio::io::split(pipe);
        let mut greeting = [0u8; 8];
        tokio::io::AsyncReadExt::read_exact(&mut r, &mut greeting)
            .await
            .unwrap();
        assert_eq!(&greeting, GREETING);
        let _server: Hello = frame::recv(&mut r).await.unwrap().unwrap();
        let older = Hello {
            magic: HELLO_MAGIC,
            version: 0,
            software: "0.0.1".into(),
        };
        frame::send(&mut w, &older).await.unwrap();
    })
    .await;
    let err = format!("{:#}", served.unwrap_err());
    assert!(
        err.contains("the connecting node runs sip-ha protocol 0"),
        "{err}"
    );
}

#[tokio::test]
async fn serve_refuses_a_foreign_hello() {
    let source = Fixed(reply());
    let served = with_server(&source, |pipe| async move {
        let (mut r, mut w) = tokio::io::split(pipe);
        let mut greeting = [0u8; 8];
        tokio::io::AsyncReadExt::read_exact(&mut r, &mut greeting)
            .await
            .unwrap();
        let _server: Hello = frame::recv(&mut r).await.unwrap().unwrap();
        frame::write_frame(&mut w, b"GET / HTTP/1.0\r\n")
            .await
            .unwrap();
        w.flush().await.unwrap();
    })
    .await;
    assert!(served.is_err());
}

// ---------------------------------------------------------------------------
// Over a real sshd.

/// Writes the status file and a `remote_command` wrapper that runs
/// `sip-ha <args> --status-file FILE`, returning the wrapper's path.
fn serve_wrapper(dir: &Path, status: &StatusReply) -> PathBuf {
    let status_file = dir.join("status.json");
    std::fs::write(&status_file, serde_json::to_string(status).unwrap()).unwrap();
    let wrapper = dir.join("sip-ha-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {SIP_HA} \"$@\" --status-file {}\n",
            status_file.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

fn control_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sip-ha-ctl.")
        .tempdir()
        .unwrap()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".ssh-connection"))
        .collect()
}

#[tokio::test]
async fn status_round_trip_over_sshd() {
    let sshd = TestSshd::start();
    let wrapper = serve_wrapper(sshd.dir(), &reply());
    let ssh = sshd.ssh_config(wrapper.to_str().unwrap());
    let control = control_dir();

    let got = probe_status(&ssh, LOCALHOST, control.path(), PROBE_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nsshd log:\n{}", sshd.log()));
    assert_eq!(got, reply());

    // Several requests on one link.
    let mut link = tokio::time::timeout(
        PROBE_TIMEOUT,
        PeerLink::connect(&ssh, LOCALHOST, control.path()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(link.peer_hello().version, PROTOCOL_VERSION);
    for _ in 0..3 {
        assert_eq!(link.status().await.unwrap(), reply());
    }
    link.close().await;
    assert_eq!(leftovers(control.path()), Vec::<String>::new());
}

#[tokio::test]
async fn unknown_host_key_is_refused() {
    let sshd = TestSshd::start();
    let marker = sshd.dir().join("serve-ran");
    let wrapper = serve_wrapper(sshd.dir(), &reply());
    sshd.authorize(Some(&format!(
        "touch {}; exec {} serve",
        marker.display(),
        wrapper.display()
    )));
    std::fs::write(&sshd.known_hosts, "").unwrap();
    let ssh = sshd.ssh_config(wrapper.to_str().unwrap());
    let control = control_dir();

    let err = probe_status(&ssh, LOCALHOST, control.path(), PROBE_TIMEOUT)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    let expected = format!(
        "host key of 127.0.0.1 is not in {kh}: add it with `ssh-keyscan -p {port} 127.0.0.1 >> {kh}` after checking its fingerprint",
        kh = sshd.known_hosts.display(),
        port = sshd.port
    );
    assert!(msg.starts_with(&expected), "{msg}");
    assert!(
        !marker.exists(),
        "the remote command ran despite the unknown host key"
    );
    assert_eq!(
        std::fs::read_to_string(&sshd.known_hosts).unwrap(),
        "",
        "the host key was added to known_hosts"
    );
    assert_eq!(leftovers(control.path()), Vec::<String>::new());
}

#[tokio::test]
async fn changed_host_key_is_refused() {
    let sshd = TestSshd::start();
    let other = sshd.new_key("other_host_key");
    std::fs::write(
        &sshd.known_hosts,
        format!("[127.0.0.1]:{} {}\n", sshd.port, public_key(&other)),
    )
    .unwrap();
    let wrapper = serve_wrapper(sshd.dir(), &reply());
    let ssh = sshd.ssh_config(wrapper.to_str().unwrap());
    let control = control_dir();

    let err = probe_status(&ssh, LOCALHOST, control.path(), PROBE_TIMEOUT)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with("host key of 127.0.0.1 has CHANGED"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("ssh-keygen -R '[127.0.0.1]:{}'", sshd.port)),
        "{msg}"
    );
}

#[tokio::test]
async fn wrong_identity_is_an_auth_error() {
    let sshd = TestSshd::start();
    let wrapper = serve_wrapper(sshd.dir(), &reply());
    let mut ssh = sshd.ssh_config(wrapper.to_str().unwrap());
    ssh.identity = sshd.new_key("stranger");
    let control = control_dir();

    let err = probe_status(&ssh, LOCALHOST, control.path(), PROBE_TIMEOUT)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with(&format!(
            "{}@127.0.0.1 refused the key {}",
            sshd.user,
            ssh.identity.display()
        )),
        "{msg}"
    );
    assert!(msg.contains("authorized_keys"), "{msg}");
}

#[tokio::test]
async fn missing_identity_file_is_named() {
    let sshd = TestSshd::start();
    let mut ssh = sshd.ssh_config(SIP_HA);
    ssh.identity = sshd.dir().join("no-such-key");
    let control = control_dir();
    let err = probe_status(&ssh, LOCALHOST, control.path(), PROBE_TIMEOUT)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("cannot read the SSH identity file"), "{msg}");
    assert!(msg.contains("ssh-keygen -t ed25519"), "{msg}");
}

#[tokio::test]
async fn stray_shell_output_is_named() {
    let sshd = TestSshd::start();
    let wrapper = serve_wrapper(sshd.dir(), &reply());
    // What a chatty .bashrc does: print before the command runs.
    sshd.authorize(Some(&format!(
        "echo 'Welcome!'; exec {} serve",
        wrapper.display()
    )));
    let ssh = sshd.ssh_config(wrapper.to_str().unwrap());
    let control = control_dir();

    let err = probe_status(&ssh, LOCALHOST, control.path(), PROBE_TIMEOUT)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(
            "the peer's shell printed something before sip-ha started: \"Welcome!\\n\" — remove output from the remote user's shell start-up files (.bashrc)"
        ),
        "{msg}"
    );
    assert_eq!(leftovers(control.path()), Vec::<String>::new());
}

#[tokio::test]
async fn missing_remote_command_says_not_installed() {
    let sshd = TestSshd::start();
    let ssh = sshd.ssh_config("/nonexistent/sip-ha");
    let control = control_dir();

    let err = probe_status(&ssh, LOCALHOST, control.path(), PROBE_TIMEOUT)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with(
            "sip-ha is not installed on the peer at /nonexistent/sip-ha: run `sip-ha -c`"
        ),
        "{msg}"
    );
}

#[tokio::test]
async fn peer_status_error_is_reported() {
    let sshd = TestSshd::start();
    let wrapper = serve_wrapper(sshd.dir(), &reply());
    std::fs::remove_file(sshd.dir().join("status.json")).unwrap();
    let ssh = sshd.ssh_config(wrapper.to_str().unwrap());
    let control = control_dir();

    let err = probe_status(&ssh, LOCALHOST, control.path(), PROBE_TIMEOUT)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with(
            "sip-ha on 127.0.0.1 could not report its status: cannot read the status file"
        ),
        "{msg}"
    );
}

#[tokio::test]
async fn overlong_control_dir_is_refused_up_front() {
    let base = control_dir();
    let long = base.path().join("x".repeat(100));
    let ssh = sip_ha::config::Ssh {
        user: "root".into(),
        port: 22,
        identity: "/nonexistent/key".into(),
        known_hosts: "/nonexistent/known_hosts".into(),
        connect_timeout: Duration::from_secs(5),
        remote_command: SIP_HA.into(),
    };
    let err = PeerLink::connect(&ssh, LOCALHOST, &long).await.unwrap_err();
    assert!(err.to_string().contains("108-byte limit"), "{err}");
    assert!(!long.exists());
}

#[tokio::test]
async fn control_dir_at_the_length_limit_works() {
    let sshd = TestSshd::start();
    let wrapper = serve_wrapper(sshd.dir(), &reply());
    let ssh = sshd.ssh_config(wrapper.to_str().unwrap());
    let base = control_dir();
    let room = sip_ha::link::ssh::MAX_CONTROL_DIR_LEN - base.path().as_os_str().len() - 1;
    let control = base.path().join("c".repeat(room));
    assert_eq!(
        control.as_os_str().len(),
        sip_ha::link::ssh::MAX_CONTROL_DIR_LEN
    );

    let got = probe_status(&ssh, LOCALHOST, &control, PROBE_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(got, reply());
}

/// The error of a status probe to `port` on loopback, where no sshd is.
async fn probe_error(port: u16, connect_timeout: Duration) -> String {
    let keys = tempfile::tempdir().unwrap();
    let identity = keys.path().join("id");
    common::sshd::keygen(&identity, "test");
    let ssh = sip_ha::config::Ssh {
        user: "root".into(),
        port,
        identity,
        known_hosts: keys.path().join("known_hosts"),
        connect_timeout,
        remote_command: SIP_HA.into(),
    };
    let control = control_dir();
    let err = probe_status(&ssh, LOCALHOST, control.path(), PROBE_TIMEOUT)
        .await
        .unwrap_err();
    format!("{err:#}")
}

#[tokio::test]
async fn silent_port_is_a_connect_timeout() {
    // The kernel accepts the TCP connection into the backlog; nothing ever
    // sends an SSH banner.
    let silent = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let port = silent.local_addr().unwrap().port();
    let msg = probe_error(port, Duration::from_secs(2)).await;
    assert!(
        msg.starts_with(&format!(
            "no answer from 127.0.0.1 port {port} within 2s: is the peer up, and the port open?"
        )),
        "{msg}"
    );
    drop(silent);
}

#[tokio::test]
async fn closed_port_is_connection_refused() {
    let port = {
        let l = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let msg = probe_error(port, Duration::from_secs(5)).await;
    assert!(
        msg.starts_with(&format!(
            "127.0.0.1 refused the connection on port {port}: is sshd running on the peer"
        )),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------
// The master kept between syncs.

/// How many times sshd has let the client in so far.
fn logins(sshd: &TestSshd) -> usize {
    sshd.log().matches("Accepted publickey").count()
}

/// The recorded control socket of the kept master for `host`.
fn kept_socket(control: &Path) -> PathBuf {
    let record = std::fs::read(control.join("kept-127.0.0.1")).expect("a kept master is recorded");
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    PathBuf::from(record["ctl"].as_str().unwrap())
}

/// The pid of the ssh master listening on `ctl` (`ssh -O check`).
fn master_pid(ctl: &Path) -> Option<i32> {
    let out = std::process::Command::new("ssh")
        .arg("-S")
        .arg(ctl)
        .args(["-O", "check", "unused"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let pid = text.split("pid=").nth(1)?.split(')').next()?;
    pid.parse().ok()
}

/// Every process below `pid` (its children, theirs, ...).
fn descendants(pid: u32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut queue = vec![pid.to_string()];
    while let Some(p) = queue.pop() {
        let out = std::process::Command::new("pgrep")
            .args(["-P", &p])
            .output()
            .unwrap();
        for child in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            found.push(child.parse().unwrap());
            queue.push(child.to_string());
        }
    }
    found
}

async fn kept(ssh: &sip_ha::config::Ssh, control: &Path) -> PeerLink {
    tokio::time::timeout(
        PROBE_TIMEOUT,
        PeerLink::connect_kept(ssh, LOCALHOST, control),
    )
    .await
    .expect("connect_kept hung")
    .expect("connect_kept failed")
}

/// A sync's master outlives its link and the next sync uses it (one login
/// for two syncs); a status probe never does (it logs in afresh); a kept
/// master that died, that hangs, or that was made with other settings is
/// replaced by a new one, and the link works all the same.
#[tokio::test]
async fn a_sync_master_is_kept_and_reused_but_never_by_a_probe() {
    let sshd = TestSshd::start();
    let wrapper = serve_wrapper(sshd.dir(), &reply());
    let ssh = sshd.ssh_config(wrapper.to_str().unwrap());
    let control = control_dir();

    let mut link = kept(&ssh, control.path()).await;
    assert_eq!(link.status().await.unwrap(), reply());
    link.close().await;
    let first = kept_socket(control.path());
    assert!(first.exists(), "the master is still up after close");
    assert_eq!(logins(&sshd), 1);

    let mut link = kept(&ssh, control.path()).await;
    assert_eq!(link.status().await.unwrap(), reply());
    link.close().await;
    assert_eq!(logins(&sshd), 1, "the second sync reused the first login");
    assert_eq!(kept_socket(control.path()), first);

    // A status probe logs in on its own, and leaves the kept master be.
    let got = probe_status(&ssh, LOCALHOST, control.path(), PROBE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(got, reply());
    assert_eq!(logins(&sshd), 2, "the probe logged in afresh");
    assert!(first.exists());

    // The kept master died (killed): a new one, and the sync goes on.
    let pid = master_pid(&first).expect("the kept master answers ssh -O check");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut link = kept(&ssh, control.path()).await;
    assert_eq!(link.status().await.unwrap(), reply());
    link.close().await;
    assert_eq!(logins(&sshd), 3);
    let second = kept_socket(control.path());
    assert_ne!(second, first);
    assert!(
        !first.parent().unwrap().exists(),
        "the dead master's directory is removed"
    );

    // The peer stops answering on the kept connection (its sshd session
    // frozen, as when the network drops it without a reset): given up
    // after KEPT_GREETING_TIMEOUT, a new session, the link works.
    let frozen = descendants(sshd.pid());
    assert!(
        !frozen.is_empty(),
        "the kept connection has an sshd process"
    );
    for pid in &frozen {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGSTOP,
        );
    }
    let mut link = kept(&ssh, control.path()).await;
    assert_eq!(link.status().await.unwrap(), reply());
    link.close().await;
    for pid in &frozen {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert_eq!(logins(&sshd), 4);
    let third = kept_socket(control.path());
    assert_ne!(third, second);
    assert!(!second.exists(), "the hung master was stopped");

    // Other settings (another known_hosts file, same content): the kept
    // master is not used, and is stopped.
    let mut other = ssh.clone();
    other.known_hosts = sshd.dir().join("known_hosts.copy");
    std::fs::copy(&ssh.known_hosts, &other.known_hosts).unwrap();
    let mut link = kept(&other, control.path()).await;
    assert_eq!(link.status().await.unwrap(), reply());
    link.close().await;
    assert_eq!(logins(&sshd), 5);
    assert!(
        !third.exists(),
        "the master made with the old settings was stopped"
    );

    // A record that is not ours to trust: garbage, or a socket outside the
    // control directory. Ignored and removed; a new session, which works.
    let fourth = kept_socket(control.path());
    for bad in [
        "not json at all".to_string(),
        r#"{"settings":"x","ctl":"/tmp/elsewhere/master","log":null}"#.to_string(),
    ] {
        std::fs::write(control.path().join("kept-127.0.0.1"), bad).unwrap();
        let before = logins(&sshd);
        let mut link = kept(&other, control.path()).await;
        assert_eq!(link.status().await.unwrap(), reply());
        link.close().await;
        assert_eq!(logins(&sshd), before + 1);
        assert_ne!(
            kept_socket(control.path()),
            fourth,
            "a new master is recorded"
        );
    }
    // The masters those records hid are stopped like any other.
    common::sshd::stop_kept_masters(control.path());

    // Leave nothing running.
    let last = kept_socket(control.path());
    if let Some(pid) = master_pid(&last) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}
