//! `sip-ha -c`: copying the program and the config to the peer through
//! `sip-ha serve`. First the install requests against `serve` in memory (a
//! session cut in the middle of a transfer), then `sip-ha serve` as a
//! process with a broken config, then the whole command over a real sshd
//! whose `authorized_keys` forces `<peer dir>/sip-ha serve`, as in
//! production.

mod common;

use common::sshd::TestSshd;
use sip_ha::link::frame;
use sip_ha::link::protocol::{self, InstallTarget, SOFTWARE_VERSION};
use sip_ha::link::{serve, LocalNode, PeerLink, Request, Response, StatusReply};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use tokio::io::{AsyncWriteExt, DuplexStream};

const SIP_HA: &str = env!("CARGO_BIN_EXE_sip-ha");

const OLD_CONFIG: &str = "# the peer's old config\n";

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Generous: these tests share two cores with other builds.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

/// The example config, a valid one.
fn example() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sip-ha.toml")).unwrap()
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---------------------------------------------------------------------------
// serve, in memory.

/// Installs into a directory; no status.
struct Dir(PathBuf);

impl LocalNode for Dir {
    fn status(&self) -> anyhow::Result<StatusReply> {
        anyhow::bail!("no status here")
    }
    fn install_path(&self, target: InstallTarget) -> anyhow::Result<PathBuf> {
        Ok(self.0.join(match target {
            InstallTarget::Binary => "sip-ha",
            InstallTarget::Config => "sip-ha.toml",
        }))
    }
}

/// A node that takes no installs (the trait's default).
struct NoInstalls;

impl LocalNode for NoInstalls {
    fn status(&self) -> anyhow::Result<StatusReply> {
        anyhow::bail!("no status here")
    }
}

/// A directory with an old program and config, and a [`Dir`] serving it.
fn peer_dir() -> (tempfile::TempDir, Dir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sip-ha"), b"old program").unwrap();
    std::fs::write(dir.path().join("sip-ha.toml"), OLD_CONFIG).unwrap();
    let node = Dir(dir.path().to_path_buf());
    (dir, node)
}

fn assert_old_files_only(dir: &Path) {
    assert_eq!(std::fs::read(dir.join("sip-ha")).unwrap(), b"old program");
    assert_eq!(
        std::fs::read_to_string(dir.join("sip-ha.toml")).unwrap(),
        OLD_CONFIG
    );
    assert_eq!(
        names(dir),
        set(&["sip-ha", "sip-ha.toml"]),
        "a temporary file was left behind"
    );
}

/// Runs `serve` for `source` and `client` on the other end of a pipe, the
/// handshake done; the client's end is closed when `client` returns.
async fn with_server<F, Fut>(source: &dyn LocalNode, client: F) -> anyhow::Result<()>
where
    F: FnOnce(tokio::io::ReadHalf<DuplexStream>, tokio::io::WriteHalf<DuplexStream>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let (input, output) = tokio::io::split(server_end);
    let talk = async move {
        let (mut r, mut w) = tokio::io::split(client_end);
        protocol::client_handshake(&mut r, &mut w).await.unwrap();
        client(r, w).await
    };
    let (served, ()) = tokio::join!(serve(input, output, source), talk);
    served
}

async fn ask<R, W>(r: &mut R, w: &mut W, request: &Request) -> Response
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    frame::send(w, request).await.unwrap();
    frame::recv(r).await.unwrap().unwrap()
}

fn begin(size: u64) -> Request {
    Request::InstallBegin {
        target: InstallTarget::Config,
        size,
        mode: 0o600,
    }
}

#[tokio::test]
async fn session_ending_mid_transfer_leaves_the_old_file() {
    let (dir, node) = peer_dir();
    let path = dir.path().to_path_buf();
    let served = with_server(&node, |mut r, mut w| async move {
        assert_eq!(ask(&mut r, &mut w, &begin(100)).await, Response::Ok);
        let chunk = Request::InstallChunk(b"[cluster]\n".to_vec());
        assert_eq!(ask(&mut r, &mut w, &chunk).await, Response::Ok);
        assert_eq!(names(&path).len(), 3, "the temporary file is there");
    })
    .await;
    served.expect("a clean end between frames");
    assert_old_files_only(dir.path());
}

#[tokio::test]
async fn frame_cut_short_mid_transfer_leaves_the_old_file() {
    let (dir, node) = peer_dir();
    let served = with_server(&node, |mut r, mut w| async move {
        assert_eq!(ask(&mut r, &mut w, &begin(100)).await, Response::Ok);
        // Half a chunk, then the connection drops.
        w.write_all(&60u32.to_be_bytes()).await.unwrap();
        w.write_all(&[2; 20]).await.unwrap();
        w.flush().await.unwrap();
    })
    .await;
    let err = format!("{:#}", served.unwrap_err());
    assert!(err.contains("in the middle of a frame"), "{err}");
    assert_old_files_only(dir.path());
}

#[tokio::test]
async fn refused_chunk_ends_the_transfer_and_the_session_goes_on() {
    let (dir, node) = peer_dir();
    let served = with_server(&node, |mut r, mut w| async move {
        // No transfer yet.
        let chunk = Request::InstallChunk(vec![1; 10]);
        match ask(&mut r, &mut w, &chunk).await {
            Response::Error(e) => assert!(e.contains("no file transfer in progress"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(ask(&mut r, &mut w, &begin(5)).await, Response::Ok);
        match ask(&mut r, &mut w, &chunk).await {
            Response::Error(e) => assert!(e.contains("more than the 5 bytes announced"), "{e}"),
            other => panic!("{other:?}"),
        }
        // The transfer is gone: a commit has nothing to commit.
        let commit = Request::InstallCommit { blake3: [0; 32] };
        match ask(&mut r, &mut w, &commit).await {
            Response::Error(e) => assert!(e.contains("no file transfer in progress"), "{e}"),
            other => panic!("{other:?}"),
        }
        // An abort with nothing to abort is fine; so is an abort mid-way.
        assert_eq!(
            ask(&mut r, &mut w, &Request::InstallAbort).await,
            Response::Ok
        );
        assert_eq!(ask(&mut r, &mut w, &begin(5)).await, Response::Ok);
        assert_eq!(
            ask(&mut r, &mut w, &Request::InstallAbort).await,
            Response::Ok
        );
        // The session still answers.
        match ask(&mut r, &mut w, &Request::Status).await {
            Response::Error(e) => assert_eq!(e, "no status here"),
            other => panic!("{other:?}"),
        }
    })
    .await;
    served.unwrap();
    assert_old_files_only(dir.path());
}

#[tokio::test]
async fn whole_config_over_serve() {
    let (dir, node) = peer_dir();
    let config = example().into_bytes();
    let expected_path = dir.path().join("sip-ha.toml");
    let served = with_server(&node, |mut r, mut w| async move {
        assert_eq!(
            ask(&mut r, &mut w, &begin(config.len() as u64)).await,
            Response::Ok
        );
        for piece in config.chunks(1000) {
            let chunk = Request::InstallChunk(piece.to_vec());
            assert_eq!(ask(&mut r, &mut w, &chunk).await, Response::Ok);
        }
        let commit = Request::InstallCommit {
            blake3: *blake3::hash(&config).as_bytes(),
        };
        let mut prev = expected_path.as_os_str().to_owned();
        prev.push(".prev");
        assert_eq!(
            ask(&mut r, &mut w, &commit).await,
            Response::Installed {
                path: expected_path.display().to_string(),
                previous: Some(PathBuf::from(prev).display().to_string()),
            }
        );
    })
    .await;
    served.unwrap();
    assert_eq!(
        names(dir.path()),
        set(&["sip-ha", "sip-ha.toml", "sip-ha.toml.prev"])
    );
}

#[tokio::test]
async fn a_node_without_installs_refuses_them() {
    let served = with_server(&NoInstalls, |mut r, mut w| async move {
        match ask(&mut r, &mut w, &begin(5)).await {
            Response::Error(e) => assert!(e.contains("does not accept the configuration"), "{e}"),
            other => panic!("{other:?}"),
        }
    })
    .await;
    served.unwrap();
}

// ---------------------------------------------------------------------------
// `sip-ha serve` as a process.

/// A peer whose config does not load still serves, says why on status, and
/// takes a good config: how a broken peer is repaired with -c.
#[tokio::test]
async fn serve_with_a_broken_config_takes_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sip-ha.toml");
    std::fs::write(&cfg, "[cluster]\nnme = \"pbx\"\n").unwrap();
    let mut child = tokio::process::Command::new(SIP_HA)
        .arg("--config")
        .arg(&cfg)
        .args(["--node", "slave", "serve"])
        .env_remove("SIP_HA_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut w = tokio::io::BufWriter::new(child.stdin.take().unwrap());
    let mut r = tokio::io::BufReader::new(child.stdout.take().unwrap());
    protocol::client_handshake(&mut r, &mut w).await.unwrap();

    match ask(&mut r, &mut w, &Request::Status).await {
        Response::Error(e) => assert!(e.contains(&format!("{}:2:1", cfg.display())), "{e}"),
        other => panic!("{other:?}"),
    }
    let good = example().into_bytes();
    assert_eq!(
        ask(&mut r, &mut w, &begin(good.len() as u64)).await,
        Response::Ok
    );
    let chunk = Request::InstallChunk(good.clone());
    assert_eq!(ask(&mut r, &mut w, &chunk).await, Response::Ok);
    let commit = Request::InstallCommit {
        blake3: *blake3::hash(&good).as_bytes(),
    };
    match ask(&mut r, &mut w, &commit).await {
        Response::Installed { path, previous } => {
            assert_eq!(path, cfg.display().to_string());
            assert!(previous.is_some());
        }
        other => panic!("{other:?}"),
    }
    drop(w);
    drop(r);
    let status = child.wait().await.unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(&cfg).unwrap(), good);
    assert!(sip_ha::config::load(&cfg).is_ok());
}

// ---------------------------------------------------------------------------
// `sip-ha -c` over a real sshd.

/// The peer: a real sshd whose authorized_keys runs `<dir>/sip-ha serve`,
/// installing into `dir`. `dir` starts with an old program (a script that
/// notes each run in `old_runs` and then runs the test binary) and an old
/// config.
struct Peer {
    sshd: TestSshd,
    dir: PathBuf,
    old_program: Vec<u8>,
    old_runs: PathBuf,
}

impl Peer {
    fn start() -> Peer {
        let sshd = TestSshd::start();
        let dir = sshd.dir().join("peer");
        std::fs::create_dir(&dir).unwrap();
        Peer::with_dir(sshd, std::fs::canonicalize(&dir).unwrap())
    }

    fn with_dir(sshd: TestSshd, dir: PathBuf) -> Peer {
        let old_runs = sshd.dir().join("old-runs");
        let old_program = format!(
            "#!/bin/sh\necho ran >> {}\nexec {SIP_HA} \"$@\"\n",
            old_runs.display()
        )
        .into_bytes();
        let program = dir.join("sip-ha");
        std::fs::write(&program, &old_program).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("sip-ha.toml"), OLD_CONFIG).unwrap();
        let peer = Peer {
            sshd,
            dir,
            old_program,
            old_runs,
        };
        peer.force(&format!("exec {}", peer.serve_command()));
        peer
    }

    /// What the forced command runs: the peer's installed program.
    fn serve_command(&self) -> String {
        format!(
            "{dir}/sip-ha serve --install-dir {dir} --status-file {dir}/status.json",
            dir = self.dir.display()
        )
    }

    fn force(&self, command: &str) {
        self.sshd.authorize(Some(command));
    }

    fn program(&self) -> PathBuf {
        self.dir.join("sip-ha")
    }

    fn config(&self) -> PathBuf {
        self.dir.join("sip-ha.toml")
    }

    fn old_runs(&self) -> usize {
        std::fs::read_to_string(&self.old_runs)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn assert_untouched(&self) {
        assert_eq!(std::fs::read(self.program()).unwrap(), self.old_program);
        assert_eq!(std::fs::read_to_string(self.config()).unwrap(), OLD_CONFIG);
    }
}

/// This node: a config whose peer (the slave) is the test sshd on
/// 127.0.0.1; this node is the master at 127.0.0.2 (`--node master`).
struct Local {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Local {
    fn new(peer: &Peer) -> Local {
        let dir = tempfile::Builder::new()
            .prefix("sip-ha-c.")
            .tempdir()
            .unwrap();
        let config = dir.path().join("sip-ha.toml");
        let sshd = &peer.sshd;
        let remote_command = format!("{}/sip-ha", peer.dir.display());
        std::fs::write(
            &config,
            sshd.master_config(
                "copy-test",
                "192.0.2.120/24",
                &dir.path().join("state"),
                &remote_command,
                "20s",
            ),
        )
        .unwrap();
        Local { dir, config }
    }

    /// `sip-ha --config <config> --node master -c`.
    fn copy(&self) -> Output {
        Command::new(SIP_HA)
            .arg("--config")
            .arg(&self.config)
            .args(["--node", "master", "-c"])
            .env_remove("SIP_HA_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

fn ours() -> Vec<u8> {
    std::fs::read(SIP_HA).unwrap()
}

#[test]
fn copy_installs_program_and_config_and_keeps_the_previous() {
    let peer = Peer::start();
    let local = Local::new(&peer);
    let o = local.copy();
    let out = text(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}\nsshd:\n{}",
        peer.sshd.log()
    );

    let prog = peer.program().display().to_string();
    let conf = peer.config().display().to_string();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("copied sip-ha {SOFTWARE_VERSION} to 127.0.0.1:{prog} (previous kept as {prog}.prev)"),
            format!(
                "copied {} to 127.0.0.1:{conf} (previous kept as {conf}.prev)",
                local.config.display()
            ),
            format!("127.0.0.1 runs sip-ha {SOFTWARE_VERSION}, as before"),
        ],
        "{out}"
    );

    assert!(
        std::fs::read(peer.program()).unwrap() == ours(),
        "the new program is ours"
    );
    assert_eq!(
        std::fs::read(peer.dir.join("sip-ha.prev")).unwrap(),
        peer.old_program
    );
    let mode = std::fs::metadata(peer.program())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    let our_mode = std::fs::metadata(SIP_HA).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, our_mode);
    assert_eq!(
        std::fs::read(peer.config()).unwrap(),
        std::fs::read(&local.config).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(peer.dir.join("sip-ha.toml.prev")).unwrap(),
        OLD_CONFIG
    );
    assert_eq!(
        std::fs::metadata(peer.config())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        peer.old_runs(),
        1,
        "the second session must have run the new program, not the old one"
    );
    assert_eq!(
        names(&peer.dir),
        set(&["sip-ha", "sip-ha.prev", "sip-ha.toml", "sip-ha.toml.prev"])
    );
    let history = std::fs::read_to_string(local.dir.path().join("state/history.log")).unwrap();
    assert!(
        history.contains(&format!(
            "copied sip-ha {SOFTWARE_VERSION} to 127.0.0.1:{prog}"
        )),
        "{history}"
    );

    // Again: the .prev files are now the first copies.
    std::fs::write(
        &local.config,
        std::fs::read_to_string(&local.config).unwrap() + "# edited\n",
    )
    .unwrap();
    let o = local.copy();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(std::fs::read(peer.dir.join("sip-ha.prev")).unwrap() == ours());
    assert!(std::fs::read(peer.program()).unwrap() == ours());
    let first = std::fs::read_to_string(peer.dir.join("sip-ha.toml.prev")).unwrap();
    assert!(
        !first.contains("# edited") && first.contains("copy-test"),
        "{first}"
    );
    assert!(std::fs::read_to_string(peer.config())
        .unwrap()
        .ends_with("# edited\n"));
    assert_eq!(peer.old_runs(), 1);
    assert_eq!(
        names(&peer.dir),
        set(&["sip-ha", "sip-ha.prev", "sip-ha.toml", "sip-ha.toml.prev"])
    );
}

/// The peer cannot keep its current program (its `.prev` name is taken by
/// a directory): it refuses, and nothing changes there.
#[test]
fn peer_that_cannot_keep_the_previous_refuses() {
    let peer = Peer::start();
    let blocker = peer.dir.join("sip-ha.prev");
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("keep-me"), b"x").unwrap();
    let local = Local::new(&peer);

    let o = local.copy();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        err.contains(&format!(
            "sip-ha: sip-ha on 127.0.0.1 refused the sip-ha program: cannot keep the current {} as {}: ",
            peer.program().display(),
            blocker.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(
            "sip-ha: nothing was changed on 127.0.0.1: its sip-ha and config are as they were"
        ),
        "{err}"
    );
    assert!(o.stdout.is_empty(), "{}", text(&o));
    peer.assert_untouched();
    assert_eq!(
        names(&peer.dir),
        set(&["sip-ha", "sip-ha.prev", "sip-ha.toml"]),
        "no temporary file left"
    );
    assert_eq!(names(&blocker), set(&["keep-me"]));
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The peer's disk has no room for the program: refused before any byte
/// travels, the old files stay, -c says so.
#[test]
fn full_disk_on_the_peer_leaves_its_files() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let sshd = TestSshd::start();
    let dir = sshd.dir().join("peer");
    std::fs::create_dir(&dir).unwrap();
    let dir = std::fs::canonicalize(&dir).unwrap();
    let _mount = Tmpfs::mount(&dir, "256k");
    let peer = Peer::with_dir(sshd, dir);
    let local = Local::new(&peer);

    let o = local.copy();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        err.contains(&format!(
            "cannot make room for {} bytes in {}: No space left on device",
            ours().len(),
            peer.dir.display()
        )),
        "{err}"
    );
    assert!(err.contains("nothing was changed on 127.0.0.1"), "{err}");
    peer.assert_untouched();
    assert_eq!(names(&peer.dir), set(&["sip-ha", "sip-ha.toml"]));
}

/// The new program is in place but the peer does not start it (here the
/// forced command fails from the second session on): -c stops before the
/// config, says what the peer has, and how to go back.
#[test]
fn peer_that_does_not_start_the_new_program() {
    let peer = Peer::start();
    let once = peer.sshd.dir().join("started-once");
    peer.force(&format!(
        "test -e {once} && {{ echo 'cannot execute' >&2; exit 126; }}; touch {once}; exec {}",
        peer.serve_command(),
        once = once.display()
    ));
    let local = Local::new(&peer);

    let o = local.copy();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let prog = peer.program().display().to_string();
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with(&format!(
            "copied sip-ha {SOFTWARE_VERSION} to 127.0.0.1:{prog} (previous kept as {prog}.prev)"
        )),
        "{}",
        text(&o)
    );
    assert!(
        err.contains("the new sip-ha on 127.0.0.1 does not start"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "127.0.0.1:{prog} is the new sip-ha {SOFTWARE_VERSION}, but the config there is unchanged; the program it replaced is kept as {prog}.prev: to go back, run `mv {prog}.prev {prog}` there"
        )),
        "{err}"
    );
    assert!(std::fs::read(peer.program()).unwrap() == ours());
    assert_eq!(
        std::fs::read(peer.dir.join("sip-ha.prev")).unwrap(),
        peer.old_program
    );
    assert_eq!(std::fs::read_to_string(peer.config()).unwrap(), OLD_CONFIG);
}

/// `PeerLink::install` with bytes in memory, over the real link: the peer
/// refuses a config that does not load, with the loader's file:line:col, and
/// a program that is not one; the session goes on and takes a good config.
#[tokio::test]
async fn link_install_refuses_what_the_peer_cannot_use() {
    let peer = Peer::start();
    let ssh = peer.sshd.ssh_config("sip-ha");
    let control = tempfile::Builder::new()
        .prefix("sip-ha-ctl.")
        .tempdir()
        .unwrap();
    let mut link = tokio::time::timeout(
        CONNECT_TIMEOUT,
        PeerLink::connect(&ssh, LOCALHOST, control.path()),
    )
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e:#}\nsshd:\n{}", peer.sshd.log()));
    let conf = peer.config().display().to_string();

    let good = example();
    let bad = good.replacen("failback = \"manual\"", "failbak = \"manual\"", 1);
    let line = bad.lines().position(|l| l.starts_with("failbak")).unwrap() + 1;
    let err = link
        .install(InstallTarget::Config, bad.as_bytes())
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with(&format!(
            "sip-ha on 127.0.0.1 refused the configuration: refusing {conf}: the configuration \
             sent does not load: {conf}:{line}:1: unknown key `failbak`"
        )),
        "{msg}"
    );

    let err = link
        .install(InstallTarget::Binary, &b"#!/bin/sh\nexit 0\n"[..])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a Linux program"), "{err:#}");
    peer.assert_untouched();
    assert_eq!(names(&peer.dir), set(&["sip-ha", "sip-ha.toml"]));

    let done = link
        .install(InstallTarget::Config, good.as_bytes())
        .await
        .unwrap();
    link.close().await;
    assert_eq!(done.path, conf);
    assert_eq!(done.previous, Some(format!("{conf}.prev")));
    assert_eq!(std::fs::read_to_string(peer.config()).unwrap(), good);
    assert_eq!(
        names(&peer.dir),
        set(&["sip-ha", "sip-ha.toml", "sip-ha.toml.prev"])
    );
}
