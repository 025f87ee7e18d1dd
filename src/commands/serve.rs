//! `sip-ha serve`: the far end of the link. The other server starts it over
//! SSH and talks to it over standard input and output, so nothing else may
//! print to stdout here: errors go to stderr and syslog.
//!
//! A configuration that does not load does not stop `serve`: status and wake
//! requests are then answered with the loader's message, but `sip-ha -c` from
//! the other server can still install a good configuration (and program).
//! That is how a peer with a broken config is repaired without a shell.

use crate::cli::{Cli, ServeArgs};
use crate::config::Config;
use crate::link::{self, InstallTarget, Installed, LocalNode, StatusReply};
use crate::log::{Level, Logger};
use crate::state;
use crate::sync::session::SyncSetup;
use anyhow::{anyhow, Context, Result};
use sip_ha_core::Role;
use std::path::PathBuf;

/// Answers status requests from this node's state file and interface, and
/// installs over this program and its config.
struct NodeStatus {
    /// The config file serve was started with (absolute).
    config_path: PathBuf,
    /// The config and this node's role, or why they could not be had.
    loaded: std::result::Result<(Config, Role), String>,
    log: Logger,
    /// `--sync-prefix`: receive sync paths under this directory (tests).
    sync_prefix: Option<PathBuf>,
}

impl NodeStatus {
    fn loaded(&self) -> Result<(&Config, Role)> {
        self.loaded
            .as_ref()
            .map(|(cfg, role)| (cfg, *role))
            .map_err(|e| anyhow!("{e}"))
    }
}

impl LocalNode for NodeStatus {
    fn status(&self) -> Result<StatusReply> {
        let (cfg, role) = self.loaded()?;
        let loaded = state::load(&cfg.cluster.state_dir, role)?;
        let me = cfg.node(role);
        let holds = crate::identity::holds(&me.interface, cfg.cluster.service_address.addr())?;
        let node = sip_ha_core::Node::new(role, crate::driver::policy(cfg), loaded.state.memory);
        let report = node.report(holds);
        // A state not written for a while means the loop or cron is not
        // running there: say so, the caller sees it in -v.
        let age_ms = state::now_ms().saturating_sub(loaded.state.updated_ms);
        let summary = match loaded.notice {
            Some(n) => n,
            None if loaded.state.updated_ms == 0 => "no pass has run yet".to_string(),
            None => format!("state written {} ms ago", age_ms),
        };
        Ok(StatusReply {
            software_version: link::protocol::SOFTWARE_VERSION.to_string(),
            cluster: cfg.cluster.name.clone(),
            report,
            summary,
        })
    }

    /// Wake the loop; with no loop (cron mode), start a pass now, so a
    /// handover from the peer does not wait for the next minute's cron.
    fn wake(&self) -> Result<bool> {
        let (cfg, role) = self.loaded()?;
        if crate::driver::requests::wake_loop(&cfg.cluster.state_dir)? {
            return Ok(true);
        }
        use std::os::unix::process::CommandExt;
        // A process of its own (own group, no stdio of ours): it outlives
        // this SSH session, and its output cannot corrupt the protocol.
        std::process::Command::new(running_program()?)
            .arg("--config")
            .arg(&self.config_path)
            .args(["--node", role.as_str(), "run"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .context("cannot start a pass to take over")?;
        Ok(true)
    }

    fn install_path(&self, target: InstallTarget) -> Result<PathBuf> {
        match target {
            InstallTarget::Binary => running_program(),
            InstallTarget::Config => Ok(self.config_path.clone()),
        }
    }

    fn sync_setup(&self) -> Result<SyncSetup> {
        let (cfg, role) = self.loaded()?;
        // Sync flows from the active server only: a server that holds the
        // service address takes none (two actives would overwrite each
        // other's changes).
        let me = cfg.node(role);
        if crate::identity::holds(&me.interface, cfg.cluster.service_address.addr())? {
            anyhow::bail!(
                "this server ({role}) holds the service address {}: it is the active one and \
                 takes no sync",
                cfg.cluster.service_address.addr()
            );
        }
        Ok(SyncSetup {
            paths: cfg.sync.paths.clone(),
            state_dir: cfg.cluster.state_dir.clone(),
            trash_days: cfg.sync.trash_days,
            node: role.as_str().to_string(),
            prefix: self.sync_prefix.clone(),
        })
    }

    fn sync_refused(&self, message: &str) {
        eprintln!("sip-ha serve: sync: {message}");
        self.log
            .error(&format!("sync from the other server refused: {message}"));
    }

    fn installed(&self, done: &Installed) {
        self.log.log(
            Level::Notice,
            &format!(
                "sip-ha serve: the other node installed {}{}",
                done.path,
                done.previous
                    .as_ref()
                    .map_or(String::new(), |p| format!(" (previous kept as {p})"))
            ),
        );
    }
}

/// The path of the running executable. Linux reports a file replaced since
/// it started as "<path> (deleted)": the path to replace is then `<path>`.
fn running_program() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the path of the running sip-ha")?;
    if !exe.exists() {
        if let Some(live) = exe
            .to_str()
            .and_then(|s| s.strip_suffix(" (deleted)"))
            .map(PathBuf::from)
        {
            return Ok(live);
        }
    }
    Ok(exe)
}

pub fn run(cli: &Cli, args: &ServeArgs) -> Result<i32> {
    let rt = super::runtime()?;
    rt.block_on(async {
        let node: Box<dyn LocalNode> = match &args.status_file {
            Some(path) => Box::new(link::StatusFile(path.clone())),
            None => {
                let loaded = super::load(cli).map_err(|e| format!("{e:#}"));
                if let Err(e) = &loaded {
                    eprintln!("sip-ha serve: {e}");
                }
                let log = match &loaded {
                    Ok((cfg, role)) => super::logger(cli, Some(cfg), Some(*role)),
                    Err(_) => super::logger(cli, None, None),
                };
                let config_path = std::path::absolute(&cli.config).with_context(|| {
                    format!("cannot resolve the config path {}", cli.config.display())
                })?;
                let sync_prefix = match &args.sync_prefix {
                    Some(p) => Some(
                        std::path::absolute(p)
                            .with_context(|| format!("cannot resolve {}", p.display()))?,
                    ),
                    None => None,
                };
                Box::new(NodeStatus {
                    config_path,
                    loaded,
                    log,
                    sync_prefix,
                })
            }
        };
        match &args.install_dir {
            Some(dir) => {
                let dir = std::path::absolute(dir)
                    .with_context(|| format!("cannot resolve {}", dir.display()))?;
                let redirected = link::InstallDir {
                    inner: node.as_ref(),
                    dir,
                };
                link::serve_stdio(&redirected).await
            }
            None => link::serve_stdio(node.as_ref()).await,
        }
    })?;
    Ok(0)
}
