//! `-c`: copy this sip-ha (the running program and its config file) to the
//! other server, as the old tool's `-c` did.
//!
//! The other server's `authorized_keys` only lets this node run
//! `sip-ha serve` there (`restrict,command="/usr/local/sbin/sip-ha serve"`),
//! so nothing is copied with `scp`: the files travel through the link
//! protocol and `sip-ha serve` puts them in place, each next to the file it
//! replaces, keeping that one as `<name>.prev` (see [`crate::link::install`]).
//! The peer decides the paths: its own program, and the config it was started
//! with.
//!
//! The steps, each a separate SSH session:
//!
//! 1. Send the program. The peer's running `serve` is the *old* one; it only
//!    checks that what it gets is a program for its machine.
//! 2. Connect again: the forced command now starts the *new* program, and
//!    its hello must report this node's version; anything else means the
//!    peer's `authorized_keys` runs some other file.
//! 3. Send the config, on that same session, so that the new program (the
//!    same code as here) checks that it loads: an older program could
//!    refuse keys it does not know yet.
//!
//! A failure at any step stops there and says exactly what the peer has:
//! nothing changed, or the new program with the old config (and how to go
//! back).

use crate::cli::Cli;
use crate::config::Config;
use crate::link::ssh::Unconfirmed;
use crate::link::{protocol::SOFTWARE_VERSION, InstallTarget, Installed, PeerLink};
use crate::log::Level;
use crate::state;
use anyhow::{anyhow, Context, Result};
use sip_ha_core::Role;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Why `-c` stopped, and what the peer has now.
struct Failure {
    error: anyhow::Error,
    /// One sentence about the peer's files after the failure.
    peer_state: String,
}

/// A [`Failure`] leaving the peer in `peer_state`, unless the error says
/// that the last file may have been installed after all.
fn fail(peer_state: &str) -> impl FnOnce(anyhow::Error) -> Failure + '_ {
    move |error| {
        let peer_state = if error.downcast_ref::<Unconfirmed>().is_some() {
            "the peer may or may not have the new file: run `sip-ha -c` again once the link \
             works"
                .to_string()
        } else {
            peer_state.to_string()
        };
        Failure { error, peer_state }
    }
}

pub fn run(cli: &Cli) -> Result<i32> {
    let (cfg, role) = match super::load(cli) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("sip-ha: {e:#}");
            eprintln!("sip-ha: configuration refused; nothing was copied");
            return Ok(2);
        }
    };
    let log = super::logger(cli, Some(&cfg), Some(role));
    state::ensure_dir(&cfg.cluster.state_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match rt.block_on(copy(&cfg, role)) {
        Ok(summary) => {
            log.log(Level::Notice, &summary);
            if let Err(e) = crate::log::append_history(
                &cfg.cluster.state_dir,
                role.as_str(),
                state::now_ms(),
                &summary,
            ) {
                log.error(&format!("{e:#}"));
            }
            Ok(0)
        }
        Err(Failure { error, peer_state }) => {
            eprintln!("sip-ha: {error:#}");
            eprintln!("sip-ha: {peer_state}");
            log.error(&format!("copy to the {} failed: {error:#}", role.peer()));
            Ok(1)
        }
    }
}

/// Copies the program, checks that it runs there, copies the config.
/// Prints a line per file copied; returns a one-line summary for the log.
async fn copy(cfg: &Config, role: Role) -> Result<String, Failure> {
    let host = cfg.node(role.peer()).address;
    let at = host_in_path(host);
    let control = cfg.cluster.state_dir.join("ssh");
    let ours = SOFTWARE_VERSION;
    let unchanged =
        format!("nothing was changed on {host}: its sip-ha and config are as they were");

    // 1. The program.
    let program = running_program().map_err(fail(&unchanged))?;
    let mut link = PeerLink::connect(&cfg.ssh, host, &control)
        .await
        .map_err(|e| {
            e.context(format!(
                "cannot reach sip-ha on {host} to copy to it (-c goes through `sip-ha serve` \
                 there; a first copy is installed by hand, see README \"Install\")"
            ))
        })
        .map_err(fail(&unchanged))?;
    let before = link.peer_hello().software.clone();
    let sent = link.install(InstallTarget::Binary, program.as_path()).await;
    link.close().await;
    let bin = sent.map_err(fail(&unchanged))?;
    println!("copied sip-ha {ours} to {at}:{}", with_previous(&bin));

    // 2. The new program answers.
    let back = match &bin.previous {
        Some(prev) => format!(
            "the program it replaced is kept as {prev}: to go back, run `mv {prev} {}` there",
            bin.path
        ),
        None => "there was no program there before".to_string(),
    };
    let half = format!(
        "{at}:{} is the new sip-ha {ours}, but the config there is unchanged; {back}",
        bin.path
    );
    let mut link = PeerLink::connect(&cfg.ssh, host, &control)
        .await
        .map_err(|e| e.context(format!("the new sip-ha on {host} does not start")))
        .map_err(fail(&half))?;
    let now = link.peer_hello().software.clone();
    if now != ours {
        link.close().await;
        return Err(Failure {
            error: anyhow!(
                "after the copy, {host} still answers as sip-ha {now}, not {ours}: its \
                 authorized_keys starts another program than {} (see `command=` there)",
                bin.path
            ),
            peer_state: half,
        });
    }

    // 3. The config, checked by the new program.
    let sent = link
        .install(InstallTarget::Config, cfg.path.as_path())
        .await;
    link.close().await;
    let conf = sent.map_err(fail(&half))?;
    println!(
        "copied {} to {at}:{}",
        cfg.path.display(),
        with_previous(&conf)
    );
    if before == ours {
        println!("{host} runs sip-ha {ours}, as before");
    } else {
        println!("{host} now runs sip-ha {ours} (it ran {before})");
    }
    Ok(format!(
        "copied sip-ha {ours} to {at}:{} and {} to {at}:{}",
        bin.path,
        cfg.path.display(),
        conf.path
    ))
}

/// `<path> (previous kept as <prev>)`, or `<path> (nothing there before)`.
fn with_previous(done: &Installed) -> String {
    match &done.previous {
        Some(prev) => format!("{} (previous kept as {prev})", done.path),
        None => format!("{} (nothing there before)", done.path),
    }
}

/// An address as it goes before `:path` (IPv6 in brackets).
fn host_in_path(host: IpAddr) -> String {
    match host {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// The program to send: `/proc/self/exe`, the very program running (so the
/// version sent is ours even if the file at its path was replaced since it
/// started), or its path where /proc is not mounted.
fn running_program() -> Result<PathBuf> {
    let live = Path::new("/proc/self/exe");
    if std::fs::File::open(live).is_ok() {
        return Ok(live.to_path_buf());
    }
    std::env::current_exe().context("cannot find the path of the running sip-ha")
}
