//! The probes against real parts where they exist: Kamailio as the SIP
//! server, real processes, real sockets, ICMP on loopback. Asterisk is not
//! installable here, so its CLI and AMI are played by stand-ins, each marked
//! `STAND-IN`, that mimic the documented behaviour
//! (shared/reference/field-notes.md).
//!
//! No test bounds wall-clock time except with a generous timeout proving
//! that a probe does not hang.

mod common;

use common::kamailio::Kamailio;
use sip_ha::config::{Check, CheckKind, SipTarget, Transport, Witness};
use sip_ha::probe::{self, ProbeResult};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};

/// Proves "does not hang": ten times any timeout used below.
const NO_HANG: Duration = Duration::from_secs(10);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(NO_HANG, f)
        .await
        .expect("the probe hung past its timeout")
}

fn check(name: &str, timeout: Duration, kind: CheckKind) -> Check {
    Check {
        name: name.to_string(),
        timeout,
        kind,
    }
}

fn sip(host: &str, port: u16, user: Option<&str>, transport: Transport) -> SipTarget {
    let hp = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let uri = match user {
        Some(u) => format!("sip:{u}@{hp}"),
        None => format!("sip:{hp}"),
    };
    SipTarget {
        uri,
        user: user.map(str::to_string),
        host: host.to_string(),
        port,
        transport,
        alive: Vec::new(),
    }
}

async fn run(kind: CheckKind, timeout: Duration) -> ProbeResult {
    within(probe::run_check(&check("t", timeout, kind))).await
}

fn assert_ok(r: &ProbeResult) {
    assert!(r.ok, "expected OK, got FAIL: {}", r.detail);
}

fn assert_fail(r: &ProbeResult, want: &str) {
    assert!(!r.ok, "expected FAIL, got OK: {}", r.detail);
    assert!(
        r.detail.contains(want),
        "detail {:?} should mention {want:?}",
        r.detail
    );
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

// ------------------------------------------------------------------ SIP ---

const T: Duration = Duration::from_secs(2);

#[tokio::test]
async fn sip_options_over_udp_and_tcp_to_kamailio() {
    let k = Kamailio::start();
    for transport in [Transport::Udp, Transport::Tcp] {
        let target = sip("127.0.0.1", k.port, Some("alice"), transport);
        let r = run(CheckKind::SipOptions(target), T).await;
        assert_ok(&r);
        assert!(r.latency > Duration::ZERO);
        assert!(
            r.detail.starts_with("SIP 200 OK from 127.0.0.1:"),
            "{}",
            r.detail
        );
        assert_eq!(r.name, "t");
    }
}

#[tokio::test]
async fn sip_options_over_ipv6_literal() {
    let k = Kamailio::start();
    for transport in [Transport::Udp, Transport::Tcp] {
        let r = within(probe::sip::options(
            &sip("[::1]", k.port, Some("alice"), transport),
            T,
        ))
        .await;
        assert_ok(&r);
        assert!(r.detail.contains("[::1]:"), "{}", r.detail);
    }
    // The peer probe's way of building a target, without brackets.
    let t = probe::sip::target_for("::1", k.port, Transport::Udp);
    assert_ok(&within(probe::sip::options(&t, T)).await);
}

#[tokio::test]
async fn sip_404_is_alive_by_default_but_not_when_alive_is_2xx() {
    let k = Kamailio::start();
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut target = sip("127.0.0.1", k.port, Some("nobody"), transport);
        let r = run(CheckKind::SipOptions(target.clone()), T).await;
        assert_ok(&r);
        assert!(r.detail.contains("404 Not Found"), "{}", r.detail);

        target.alive = vec![200..=299];
        let r = run(CheckKind::SipOptions(target), T).await;
        assert_fail(&r, "404 Not Found");
        assert!(r.detail.contains("200-299"), "{}", r.detail);
    }
}

#[tokio::test]
async fn sip_503_is_down() {
    let k = Kamailio::start();
    let r = run(
        CheckKind::SipOptions(sip("127.0.0.1", k.port, Some("down"), Transport::Udp)),
        T,
    )
    .await;
    assert_fail(&r, "503 Service Unavailable");
}

#[tokio::test]
async fn sip_provisional_is_skipped_for_the_final_response() {
    let k = Kamailio::start();
    for transport in [Transport::Udp, Transport::Tcp] {
        let r = run(
            CheckKind::SipOptions(sip("127.0.0.1", k.port, Some("trying"), transport)),
            T,
        )
        .await;
        assert_ok(&r);
        assert!(r.detail.contains("200 OK"), "{}", r.detail);
    }
}

#[tokio::test]
async fn sip_provisional_without_final_fails_by_timeout() {
    let k = Kamailio::start();
    let r = run(
        CheckKind::SipOptions(sip("127.0.0.1", k.port, Some("stuck"), Transport::Udp)),
        Duration::from_millis(700),
    )
    .await;
    assert_fail(&r, "100 Trying");
    assert!(
        r.detail.contains("no final response within 700ms"),
        "{}",
        r.detail
    );
}

#[tokio::test]
async fn sip_fails_fast_after_kamailio_is_killed() {
    let mut k = Kamailio::start();
    let udp = sip("127.0.0.1", k.port, Some("alice"), Transport::Udp);
    let tcp = sip("127.0.0.1", k.port, Some("alice"), Transport::Tcp);
    assert_ok(&run(CheckKind::SipOptions(udp.clone()), T).await);
    k.kill();

    // Refused, not timed out: the detail says so. (The timeout is long so
    // that a timeout could not pass for a refusal.)
    let long = Duration::from_secs(5);
    let r = run(CheckKind::SipOptions(udp), long).await;
    assert_fail(&r, "connection refused");
    assert!(r.latency < long, "{r:?}");
    let r = run(CheckKind::SipOptions(tcp), long).await;
    assert_fail(&r, "connection refused");
    assert!(r.latency < long, "{r:?}");
}

#[tokio::test]
async fn sip_silent_udp_socket_fails_by_timeout_without_hanging() {
    // Bound, so no ICMP port unreachable; never read, so no answer.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let r = run(
        CheckKind::SipOptions(sip("127.0.0.1", port, None, Transport::Udp)),
        Duration::from_millis(1200),
    )
    .await;
    assert_fail(&r, "no reply within 1s 200ms");
    // Timer E: retransmitted after 500 ms.
    assert!(r.detail.contains(", sent "), "{}", r.detail);
    drop(silent);
}

#[tokio::test]
async fn sip_request_dropped_by_kamailio_fails_by_timeout() {
    let k = Kamailio::start();
    let r = run(
        CheckKind::SipOptions(sip("127.0.0.1", k.port, Some("silent"), Transport::Tcp)),
        Duration::from_millis(600),
    )
    .await;
    assert_fail(
        &r,
        "accepted the TCP connection but sent no SIP reply within 600ms",
    );
}

#[tokio::test]
async fn sip_garbage_udp_reply_is_not_sip() {
    let responder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = responder.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok((_, from)) = responder.recv_from(&mut buf).await {
            let _ = responder.send_to(b"HELLO", from).await;
        }
    });
    let r = run(
        CheckKind::SipOptions(sip("127.0.0.1", port, None, Transport::Udp)),
        T,
    )
    .await;
    assert_fail(&r, "not SIP");
    assert!(r.detail.contains("HELLO"), "{}", r.detail);
}

/// A one-shot TCP server that reads the request and answers `reply`.
async fn tcp_responder(reply: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        if let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            let _ = s.write_all(reply).await;
        }
    });
    port
}

#[tokio::test]
async fn sip_garbage_and_truncated_tcp_replies_fail_with_a_reason() {
    let port = tcp_responder(b"HELLO\r\n").await;
    let r = run(
        CheckKind::SipOptions(sip("127.0.0.1", port, None, Transport::Tcp)),
        T,
    )
    .await;
    assert_fail(&r, "not SIP");

    let port = tcp_responder(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1").await;
    let r = run(
        CheckKind::SipOptions(sip("127.0.0.1", port, None, Transport::Tcp)),
        T,
    )
    .await;
    assert_fail(&r, "truncated");
}

// ------------------------------------------------------------- Asterisk ---

/// Write an executable shell script; returns its path.
fn script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn asterisk(command: &str, rundir: Option<&Path>) -> CheckKind {
    CheckKind::Asterisk {
        command: command.to_string(),
        rundir: rundir.map(Path::to_path_buf),
    }
}

#[tokio::test]
async fn asterisk_judged_by_output() {
    let dir = tempfile::tempdir().unwrap();
    // STAND-IN: Asterisk is not in Debian's archive; this mimics the
    // documented `asterisk -rx "core show uptime"` of a running Asterisk
    // (prints `System uptime: ...`, exits 0).
    let running = script(
        dir.path(),
        "asterisk-running",
        "echo 'System uptime: 1 hour, 2 minutes'; exit 0",
    );
    // STAND-IN: Asterisk is not in Debian's archive; this mimics the
    // documented answer when Asterisk is stopped (exit 1).
    let stopped = script(
        dir.path(),
        "asterisk-stopped",
        "echo 'Unable to connect to remote asterisk (does /var/run/asterisk/asterisk.ctl exist?)'; exit 1",
    );
    // STAND-IN: Asterisk is not in Debian's archive; this mimics the
    // documented answer in the first ~0.5 s of boot: `No such command`,
    // yet exit status 0.
    let booting = script(
        dir.path(),
        "asterisk-booting",
        "echo \"No such command 'core show uptime' (type 'core show help core show uptime' for other possible commands)\"; exit 0",
    );

    let r = run(asterisk(&running, None), T).await;
    assert_ok(&r);
    assert!(
        r.detail.contains("System uptime: 1 hour, 2 minutes"),
        "{}",
        r.detail
    );
    assert_fail(
        &run(asterisk(&stopped, None), T).await,
        "Asterisk is not running (",
    );
    assert_fail(
        &run(asterisk(&booting, None), T).await,
        "Asterisk is still booting",
    );
}

#[tokio::test]
async fn asterisk_arguments_with_and_without_rundir() {
    let dir = tempfile::tempdir().unwrap();
    let args_file = dir.path().join("args");
    // STAND-IN: Asterisk is not in Debian's archive; this records its
    // arguments and answers like a running Asterisk.
    let cmd = script(
        dir.path(),
        "asterisk",
        &format!(
            "printf '%s|' \"$@\" > {}; echo 'System uptime: 5 seconds'",
            args_file.display()
        ),
    );
    assert_ok(&run(asterisk(&cmd, None), T).await);
    assert_eq!(
        std::fs::read_to_string(&args_file).unwrap(),
        "-rx|core show uptime|"
    );
    let rundir = Path::new("/run/asterisk-test");
    assert_ok(&run(asterisk(&cmd, Some(rundir)), T).await);
    assert_eq!(
        std::fs::read_to_string(&args_file).unwrap(),
        "-r|-s|/run/asterisk-test/asterisk.ctl|-x|core show uptime|"
    );
}

#[tokio::test]
async fn asterisk_missing_or_hung() {
    let r = run(asterisk("/nonexistent/asterisk", None), T).await;
    assert_fail(&r, "asterisk command not found: /nonexistent/asterisk");

    let dir = tempfile::tempdir().unwrap();
    // STAND-IN: an Asterisk whose CLI never answers (a hung daemon).
    let hung = script(dir.path(), "asterisk-hung", "exec sleep 30");
    let r = run(asterisk(&hung, None), Duration::from_millis(300)).await;
    assert_fail(&r, "did not finish within 300ms");
}

// ------------------------------------------------------------------ AMI ---

#[derive(Clone, Copy)]
enum AmiMode {
    Good,
    BadLogin,
    SshBanner,
}

/// STAND-IN: Asterisk is not in Debian's archive; this mimics the
/// documented Asterisk Manager Interface: the `Asterisk Call Manager/x.y.z`
/// banner, `Action: Login` answered `Response: Success` (or `Response:
/// Error` with `Message: Authentication failed`), an `Event:` interleaved
/// before the answer, `Action: Ping` answered `Response: Success` with
/// `Ping: Pong`, and `Action: Logoff` answered `Response: Goodbye`. CRLF
/// lines, a blank line ending each message, ActionID echoed.
async fn ami_stand_in(mode: AmiMode) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = tokio::spawn(async move {
        let mut actions = Vec::new();
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        if let AmiMode::SshBanner = mode {
            w.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
                .await
                .unwrap();
            return actions;
        }
        w.write_all(b"Asterisk Call Manager/5.0.1\r\n")
            .await
            .unwrap();
        loop {
            // Read one action.
            let mut fields = Vec::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return actions;
                }
                assert!(line.ends_with("\r\n"), "AMI lines end in CRLF: {line:?}");
                let line = line.trim_end().to_string();
                if line.is_empty() {
                    break;
                }
                fields.push(line);
            }
            let get = |k: &str| {
                fields
                    .iter()
                    .find_map(|f| f.strip_prefix(&format!("{k}: ")))
                    .unwrap_or("")
                    .to_string()
            };
            let action = get("Action");
            let id = get("ActionID");
            actions.push(fields.join("|"));
            let reply = match action.as_str() {
                "Login" => {
                    let ok = get("Username") == "hauser"
                        && get("Secret") == "s3cret"
                        && matches!(mode, AmiMode::Good);
                    // An event arriving before the answer.
                    w.write_all(
                        b"Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n",
                    )
                    .await
                    .unwrap();
                    if ok {
                        format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n")
                    } else {
                        format!("Response: Error\r\nActionID: {id}\r\nMessage: Authentication failed\r\n\r\n")
                    }
                }
                "Ping" => {
                    w.write_all(b"Event: PeerStatus\r\nPeer: SIP/100\r\n\r\n")
                        .await
                        .unwrap();
                    format!(
                        "Response: Success\r\nActionID: {id}\r\nPing: Pong\r\nTimestamp: 1700000000.000000\r\n\r\n"
                    )
                }
                "Logoff" => {
                    let _ = w
                        .write_all(
                            b"Response: Goodbye\r\nMessage: Thanks for all the fish.\r\n\r\n",
                        )
                        .await;
                    return actions;
                }
                _ => format!(
                    "Response: Error\r\nActionID: {id}\r\nMessage: Invalid/unknown command\r\n\r\n"
                ),
            };
            if w.write_all(reply.as_bytes()).await.is_err() {
                return actions;
            }
        }
    });
    (port, handle)
}

fn ami(port: u16, secret: &str) -> CheckKind {
    CheckKind::Ami {
        host: "127.0.0.1".into(),
        port,
        user: "hauser".into(),
        secret: secret.into(),
    }
}

#[tokio::test]
async fn ami_login_ping_logoff() {
    let (port, server) = ami_stand_in(AmiMode::Good).await;
    let r = run(ami(port, "s3cret"), T).await;
    assert_ok(&r);
    assert!(
        r.detail.contains("Asterisk Call Manager/5.0.1"),
        "{}",
        r.detail
    );
    assert!(!r.detail.contains("s3cret"));
    let actions = within(server).await.unwrap();
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert!(actions[0].starts_with("Action: Login|"), "{actions:?}");
    assert!(actions[1].starts_with("Action: Ping|"), "{actions:?}");
    assert_eq!(actions[2], "Action: Logoff");
}

#[tokio::test]
async fn ami_login_refused() {
    let (port, _server) = ami_stand_in(AmiMode::BadLogin).await;
    let r = run(ami(port, "wrong-secret"), T).await;
    assert_fail(&r, "AMI login refused: Authentication failed");
    assert!(!r.detail.contains("wrong-secret"), "{}", r.detail);
}

#[tokio::test]
async fn ami_wrong_service_and_closed_port() {
    let (port, _server) = ami_stand_in(AmiMode::SshBanner).await;
    assert_fail(
        &run(ami(port, "s3cret"), T).await,
        "not an Asterisk Manager",
    );
    assert_fail(
        &run(ami(closed_port(), "s3cret"), T).await,
        "connection refused",
    );
}

#[tokio::test]
async fn ami_silent_server_times_out() {
    // Accepts (the kernel does, via the backlog) but never sends a banner.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = run(ami(port, "s3cret"), Duration::from_millis(300)).await;
    assert_fail(&r, "within 300ms");
    drop(listener);
}

// -------------------------------------------------------------- process ---

fn process(pidfile: Option<&Path>, name: Option<&str>) -> CheckKind {
    CheckKind::Process {
        pidfile: pidfile.map(Path::to_path_buf),
        name: name.map(str::to_string),
    }
}

#[tokio::test]
async fn process_by_pidfile() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("me.pid");
    std::fs::write(&pidfile, format!("{}\n", std::process::id())).unwrap();
    assert_ok(&run(process(Some(&pidfile), None), T).await);

    // A pid that has certainly exited: a child we reaped ourselves.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(&pidfile, format!("{dead}\n")).unwrap();
    let r = run(process(Some(&pidfile), None), T).await;
    assert_fail(
        &r,
        &format!(
            "pidfile {} names pid {dead} which is not running (stale pidfile)",
            pidfile.display()
        ),
    );

    let missing = dir.path().join("missing.pid");
    assert_fail(
        &run(process(Some(&missing), None), T).await,
        "does not exist",
    );
    std::fs::write(&pidfile, "garbage\n").unwrap();
    assert_fail(
        &run(process(Some(&pidfile), None), T).await,
        "does not hold a pid",
    );
}

#[tokio::test]
async fn process_by_name() {
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let r = run(process(None, Some("sleep")), T).await;
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_ok(&r);
    assert_fail(
        &run(process(None, Some("no-such-daemon-sip-ha")), T).await,
        "no process named",
    );
}

#[tokio::test]
async fn process_pidfile_and_name_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("asterisk.pid");
    // Our own pid, but we are not "asterisk": a reused pid.
    std::fs::write(&pidfile, format!("{}\n", std::process::id())).unwrap();
    assert_fail(
        &run(process(Some(&pidfile), Some("asterisk")), T).await,
        "pid was reused",
    );
}

// -------------------------------------------------------------- command ---

fn command(c: &str) -> CheckKind {
    CheckKind::Command {
        command: c.to_string(),
    }
}

#[tokio::test]
async fn command_exit_status() {
    assert_ok(&run(command("true"), T).await);
    assert_fail(&run(command("false"), T).await, "exited 1");
    assert_fail(
        &run(command("echo 'database is down' >&2; exit 3"), T).await,
        "exited 3: database is down",
    );
}

#[tokio::test]
async fn command_killed_on_timeout_with_its_children() {
    let r = run(command("sleep 10"), Duration::from_millis(200)).await;
    assert_fail(&r, "did not finish within 200ms");

    // A background grandchild is killed too (the process group goes).
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("bg.pid");
    let r = run(
        command(&format!("sleep 30 & echo $! > {}; wait", pidfile.display())),
        Duration::from_millis(300),
    )
    .await;
    assert_fail(&r, "did not finish");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    within(async {
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_string));
            if matches!(state.as_deref(), None | Some("Z") | Some("X")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

// ------------------------------------------------------------------ TCP ---

#[tokio::test]
async fn tcp_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let kind = |target: String| CheckKind::Tcp { target };
    assert_ok(&run(kind(format!("127.0.0.1:{port}")), T).await);
    assert_ok(&run(kind(format!("localhost:{port}")), T).await);
    assert_fail(
        &run(kind(format!("127.0.0.1:{}", closed_port())), T).await,
        "connection refused",
    );
    assert_fail(&run(kind("no-port".into()), T).await, "not host:port");

    let v6 = TcpListener::bind("[::1]:0").await.unwrap();
    let port6 = v6.local_addr().unwrap().port();
    assert_ok(&run(kind(format!("[::1]:{port6}")), T).await);
}

// -------------------------------------------------------------- witness ---

const W: Duration = Duration::from_secs(2);

#[tokio::test]
async fn icmp_witness_on_loopback() {
    // Root here: a raw socket if unprivileged ICMP sockets are not allowed.
    for ip in ["127.0.0.1", "::1"] {
        let w = Witness::Icmp(ip.parse().unwrap());
        let r = within(probe::witness(&w, W)).await;
        assert_ok(&r);
        assert!(
            r.detail.starts_with(&format!("ICMP echo reply from {ip}")),
            "{}",
            r.detail
        );
        assert_eq!(r.name, format!("icmp {ip}"));
    }
}

/// Run `icmp_netns_inner` (below) in a fresh network namespace, with
/// `setup` run there first, and return its verdict line.
///
/// ping_group_range is per network namespace, so this exercises the
/// unprivileged-socket path and the no-permission path without touching
/// the host's settings.
fn icmp_in_netns(setup: &str, expect: &str, drop_net_raw: bool) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new("unshare");
    cmd.arg("-n");
    if drop_net_raw {
        cmd.args(["setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw"]);
    }
    let out = cmd
        .args(["sh", "-c"])
        .arg(format!(
            "ip link set lo up && {setup} && exec \"$0\" --ignored --exact icmp_netns_inner --nocapture --test-threads=1"
        ))
        .arg(&exe)
        .env("SIP_HA_TEST_ICMP_EXPECT", expect)
        .output()
        .expect("cannot run unshare (util-linux), needed to test ICMP in a network namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "inner ICMP test failed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn icmp_unprivileged_socket_when_ping_group_range_allows() {
    // Without CAP_NET_RAW, so only the datagram socket can work.
    icmp_in_netns(
        "sysctl -qw net.ipv4.ping_group_range='0 2147483647'",
        "dgram",
        true,
    );
}

#[test]
fn icmp_without_any_permission_names_the_fixes() {
    icmp_in_netns("sysctl -qw net.ipv4.ping_group_range='1 0'", "denied", true);
}

/// Runs only inside `icmp_in_netns`.
#[tokio::test]
#[ignore = "run in a network namespace by the icmp_* tests"]
async fn icmp_netns_inner() {
    let Ok(expect) = std::env::var("SIP_HA_TEST_ICMP_EXPECT") else {
        return;
    };
    for ip in ["127.0.0.1", "::1"] {
        let r = within(probe::witness(&Witness::Icmp(ip.parse().unwrap()), W)).await;
        match expect.as_str() {
            "dgram" => {
                assert_ok(&r);
                assert!(
                    r.detail.contains("unprivileged ICMP socket"),
                    "{}",
                    r.detail
                );
            }
            "denied" => {
                assert_fail(&r, "CAP_NET_RAW");
                assert!(
                    r.detail.contains("net.ipv4.ping_group_range"),
                    "{}",
                    r.detail
                );
            }
            other => panic!("unknown expectation {other}"),
        }
    }
}

#[tokio::test]
async fn tcp_witness() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let good = Witness::Tcp(listener.local_addr().unwrap());
    assert_ok(&within(probe::witness(&good, W)).await);
    let bad = Witness::Tcp(SocketAddr::from(([127, 0, 0, 1], closed_port())));
    assert_fail(&within(probe::witness(&bad, W)).await, "connection refused");
}

#[tokio::test]
async fn any_witness_needs_one_answer() {
    let bad1 = Witness::Tcp(SocketAddr::from(([127, 0, 0, 1], closed_port())));
    let bad2 = Witness::Tcp(SocketAddr::from(([127, 0, 0, 1], closed_port())));
    let good = Witness::Icmp("127.0.0.1".parse().unwrap());

    let (any, results) = within(probe::any_witness(&[bad1.clone(), good], W)).await;
    assert!(any, "{results:?}");
    assert_eq!(results.len(), 2);
    assert!(
        !results[0].ok && results[1].ok,
        "results keep their order: {results:?}"
    );

    let (any, results) = within(probe::any_witness(&[bad1, bad2], W)).await;
    assert!(!any, "{results:?}");
    assert_eq!(results.len(), 2);

    let (any, results) = within(probe::any_witness(&[], W)).await;
    assert!(any && results.is_empty());
}

// ------------------------------------------------------------ run_checks ---

#[tokio::test]
async fn run_checks_keeps_order_and_runs_concurrently() {
    let checks = vec![
        check("slow", Duration::from_millis(300), command("sleep 10")),
        check("yes", T, command("true")),
        check("no", T, command("false")),
    ];
    let results = within(probe::run_checks(&checks)).await;
    let names: Vec<_> = results.iter().map(|r| (r.name.as_str(), r.ok)).collect();
    assert_eq!(names, [("slow", false), ("yes", true), ("no", false)]);

    let json = serde_json::to_value(&results[1]).unwrap();
    assert!(json["latency_ms"].as_f64().unwrap() > 0.0, "{json}");
}
