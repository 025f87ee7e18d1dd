//! Two "servers" on one machine for the sync tests: [`Pair`] is a master
//! whose `[[sync.path]]` is `src`, and a real sshd whose `authorized_keys`
//! forces `sip-ha --config <same config> --node slave serve --sync-prefix
//! <dst>`, so the receiver is the real binary's `serve`, writing the path
//! under `<dst>`. With [`snapshot`] and [`assert_same`] to compare the trees.

use super::sshd::TestSshd;
use super::tree::snapshot;
use sip_ha::link::PeerLink;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const SIP_HA: &str = env!("CARGO_BIN_EXE_sip-ha");

/// Two servers on one machine: `src` is the master's sync path, the slave
/// receives it at `dst/<src>`.
pub struct Pair {
    pub sshd: TestSshd,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub src: PathBuf,
    pub dst_root: PathBuf,
    pub state: PathBuf,
}

impl Drop for Pair {
    fn drop(&mut self) {
        super::sshd::stop_kept_masters(&self.state.join("ssh"));
    }
}

impl Pair {
    pub fn new(max_delete_percent: u32) -> Pair {
        let sshd = TestSshd::start();
        let dir = tempfile::Builder::new()
            .prefix("sip-ha-sync.")
            .tempdir()
            .unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let src = base.join("src/asterisk");
        std::fs::create_dir_all(&src).unwrap();
        let dst = base.join("dst");
        std::fs::create_dir_all(&dst).unwrap();
        let dst_root = dst.join(src.strip_prefix("/").unwrap());
        let state = base.join("state");
        let config = base.join("sip-ha.toml");
        let head = sshd.master_config("sync-test", "192.0.2.121/24", &state, SIP_HA, "60s");
        std::fs::write(
            &config,
            format!(
                r#"{head}
[sync]
max_delete_percent = {max_delete_percent}

[[sync.path]]
path = "{src}"
exclude = ["*.tmp"]
"#,
                src = src.display(),
            ),
        )
        .unwrap();
        sshd.authorize(Some(&format!(
            "exec {SIP_HA} --config {} --node slave serve --sync-prefix {}",
            config.display(),
            dst.display()
        )));
        Pair {
            sshd,
            dir,
            config,
            src,
            dst_root,
            state,
        }
    }

    /// Make the master active in its state (as a pass that took the
    /// address would): `sip-ha sync` runs on the active node only.
    pub fn make_active(&self) {
        std::fs::create_dir_all(&self.state).unwrap();
        let mut st = sip_ha::state::State::fresh(sip_ha_core::Role::Master);
        st.memory.stance = sip_ha_core::Stance::Active;
        sip_ha::state::save(&self.state, &st).unwrap();
    }

    /// `sip-ha sync` on the master, not started yet.
    pub fn sync_command(&self) -> Command {
        let mut c = Command::new(SIP_HA);
        c.arg("--config")
            .arg(&self.config)
            .args(["--node", "master", "sync"])
            .env_remove("SIP_HA_CONFIG")
            .stdin(Stdio::null());
        c
    }

    pub fn sync(&self, args: &[&str]) -> Output {
        self.sync_command().args(args).output().unwrap()
    }

    pub fn sync_ok(&self) -> Summary {
        let out = self.sync(&[]);
        assert!(out.status.success(), "sync failed:\n{}", text(&out));
        summary(&out)
    }

    pub async fn link(&self) -> PeerLink {
        let ssh = self.sshd.ssh_config(SIP_HA);
        PeerLink::connect(
            &ssh,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &self.dir.path().join("c"),
        )
        .await
        .unwrap()
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[derive(Debug)]
pub struct Summary {
    pub files: u64,
    pub data: u64,
    pub wire: u64,
}

/// Parse `sync: N files sent (B bytes of data), ...; W bytes on the wire; T s`.
pub fn summary(out: &Output) -> Summary {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains("bytes on the wire"))
        .unwrap_or_else(|| panic!("no summary line:\n{}", text(out)));
    let num = |before: &str| -> u64 {
        let head = &line[..line.find(before).unwrap()];
        head.rsplit(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .unwrap()
            .parse()
            .unwrap()
    };
    Summary {
        files: num(" files sent"),
        data: num(" bytes of data"),
        wire: num(" bytes on the wire"),
    }
}

pub fn assert_same(pair: &Pair) {
    let (a, b) = (snapshot(&pair.src), snapshot(&pair.dst_root));
    if a != b {
        let only_a: Vec<_> = a.keys().filter(|k| b.get(*k) != a.get(*k)).collect();
        let only_b: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
        panic!("trees differ: differing or missing on the standby {only_a:?}, extra {only_b:?}");
    }
}

/// The standby's saved manifest describes its tree exactly: the same paths
/// as a full scan of it now, each with the same content and compared
/// metadata. Its closing rescan reads only the directories a session wrote
/// in (`ScanOptions::relist`), so this catches a write it failed to note.
pub fn assert_standby_manifest_exact(pair: &Pair) {
    let cfg = sip_ha::config::load(&pair.config).unwrap();
    assert_manifest_exact(&pair.state, &cfg.sync.paths[0], &pair.dst_root);
}

/// [`assert_standby_manifest_exact`] for the configured path `sp`, kept
/// under `root` by a standby whose state is in `state`.
pub fn assert_manifest_exact(state: &Path, sp: &sip_ha::config::SyncPath, root: &Path) {
    use sip_ha::sync::{scan, session, Manifest};
    let saved = Manifest::load(&session::manifest_file(state, "recv", &sp.path));
    assert_eq!(
        saved.status,
        sip_ha::sync::LoadStatus::Loaded,
        "{:?}",
        saved.warning
    );
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    let excludes = session::excludes(sp).unwrap();
    let (now, _) = scan(root, &excludes, &Manifest::new(), later).unwrap();
    let (saved, now) = (saved.manifest.entries(), now.entries());
    let differ: Vec<String> = now
        .iter()
        .filter(|(p, e)| saved.get(*p).is_none_or(|s| !s.same(e)))
        .map(|(p, e)| format!("{p}: saved {:?}, on disk {e:?}", saved.get(p)))
        .chain(
            saved
                .keys()
                .filter(|p| !now.contains_key(*p))
                .map(|p| format!("{p} (gone)")),
        )
        .collect();
    assert!(
        differ.is_empty(),
        "the standby's manifest is stale for {differ:?}"
    );
}
