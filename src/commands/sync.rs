//! `sip-ha sync`: push the `[sync]` paths to the standby now.
//!
//! Sync flows one way, from the active server (the one holding the service
//! address, or whose state says it is taking it) to the standby; on the
//! standby this command refuses and names the active server. It takes the
//! state lock like `sip-ha run`, so it never runs beside a pass, connects
//! to `sip-ha serve` on the peer, runs [`push_showing`] (with a progress bar on a terminal) and ends with one
//! summary line. The result is recorded in the state (`last_sync`), which
//! `-v` shows. Then each `[[sync.target]]` is mirrored (even when the peer
//! could not be reached), with one summary line each. With a loop running,
//! it is handed to the loop instead (as `-f` is: `driver::requests`), which
//! pushes on its own session and answers with the same lines.
//!
//! `--dry-run` compares and lists what would change, and changes nothing;
//! `--verify` hashes every file on both sides instead of trusting
//! unchanged stat data.
//!
//! Exit status: 0 all paths synced, 1 refused or some path failed, 2 the
//! configuration or the link failed.

use crate::cli::{Cli, SyncArgs};
use crate::config::Config;
use crate::driver::requests::{self, SyncAsk, SyncReport};
use crate::link::PeerLink;
use crate::log::Logger;
use crate::state::{self, SyncRecord};
use crate::sync::send::{push_showing, Progress, PushOptions, SyncSummary};
use crate::sync::target;
use anyhow::Result;
use sip_ha_core::{Role, Stance};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub fn run(cli: &Cli, args: &SyncArgs) -> Result<i32> {
    let (cfg, role) = match super::load_or_refuse(cli) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let log = super::logger(cli, Some(&cfg), Some(role));
    if cfg.sync.paths.is_empty() {
        eprintln!(
            "sip-ha: no [[sync.path]] in {}: nothing to sync",
            cfg.path.display()
        );
        return Ok(1);
    }
    let dir = cfg.cluster.state_dir.clone();
    state::ensure_dir(&dir)?;
    let Some(_lock) = state::try_lock(&dir)? else {
        if requests::loop_pid(&dir).is_some() {
            return hand_off(&cfg, args);
        }
        eprintln!(
            "sip-ha: another sip-ha pass or the loop holds {}/lock: try again in a moment \
             (the loop pushes every {} on its own)",
            dir.display(),
            humantime::format_duration(cfg.sync.interval)
        );
        return Ok(1);
    };
    let loaded = state::load(&dir, role)?;
    let mut st = loaded.state;
    let me = cfg.node(role);
    let holds = crate::identity::holds(&me.interface, cfg.cluster.service_address.addr())?;
    if !holds && st.memory.stance != Stance::Active {
        eprintln!("sip-ha: {}", requests::standby_refusal(&cfg, role));
        return Ok(1);
    }
    let opts = PushOptions {
        dry_run: args.dry_run,
        verify: args.verify,
    };
    let rt = super::runtime()?;
    let result = rt.block_on(sync(&cfg, role, &log, opts));
    let peer: Result<i32> = match result {
        Ok(sum) => {
            let report = SyncReport::new(&Ok(sum.clone()), opts.dry_run);
            report.print();
            if !opts.dry_run {
                log.info(&sum.to_string());
                st.last_sync = Some(sum.record());
                state::save(&dir, &st)?;
            }
            Ok(report.code)
        }
        Err(e) => {
            eprintln!("sip-ha: {e:#}");
            log.error(&format!("sync failed: {e:#}"));
            if !opts.dry_run {
                st.last_sync = Some(SyncRecord {
                    at_ms: state::now_ms(),
                    ok: false,
                    files: 0,
                    bytes: 0,
                    error: Some(format!("{e:#}")),
                });
                state::save(&dir, &st)?;
            }
            Ok(2)
        }
    };
    // Local mirrors, also when the peer could not be reached.
    let targets = rt.block_on(target::push_targets(&cfg, &dir, &log, opts));
    Ok(peer?.max(target::print(&targets, opts.dry_run)))
}

/// The loop holds the lock: it runs the push, this waits for its report.
fn hand_off(cfg: &Config, args: &SyncArgs) -> Result<i32> {
    let ask = SyncAsk {
        dry_run: args.dry_run,
        verify: args.verify,
    };
    // A push may wait for one already running, then take as long itself.
    let wait = 2 * crate::driver::push_limit(cfg) + Duration::from_secs(30);
    let report = match requests::submit_sync(&cfg.cluster.state_dir, ask, wait)? {
        Some(requests::Answer {
            sync: Some(report), ..
        }) => report,
        Some(requests::Answer { error: Some(e), .. }) => {
            SyncReport::refused(&format!("the sip-ha loop could not run the sync: {e}"), 2)
        }
        Some(_) => SyncReport::refused("the sip-ha loop answered something else", 2),
        None => SyncReport::refused(
            &format!("the sip-ha loop did not answer within {wait:?}: see syslog"),
            2,
        ),
    };
    report.print();
    Ok(report.code)
}

async fn sync(cfg: &Config, role: Role, log: &Logger, opts: PushOptions) -> Result<SyncSummary> {
    use anyhow::Context;
    let host = cfg.node(role.peer()).address;
    let control = cfg.cluster.state_dir.join("ssh");
    let mut link = PeerLink::connect_kept(&cfg.ssh, host, &control)
        .await
        .with_context(|| format!("cannot reach sip-ha on the standby ({host}) to sync"))?;
    let bar = Bar::new();
    let result = push_showing(&mut link, cfg, &cfg.cluster.state_dir, log, opts, &bar).await;
    bar.bar.finish_and_clear();
    link.close().await;
    result
}

/// The progress bar on a terminal: bytes of the files to send, and how
/// many files. Drawn on stderr, and only if it is a terminal (cron and
/// scripts see the summary line alone).
struct Bar {
    bar: indicatif::ProgressBar,
    files: AtomicU64,
    done: AtomicU64,
}

impl Bar {
    fn new() -> Bar {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(0),
            indicatif::ProgressDrawTarget::stderr(),
        );
        // A fixed template: an error here would be ours; plain bar then.
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "sync {bar:30} {bytes}/{total_bytes}, {msg} files, {bytes_per_sec}, eta {eta}",
        ) {
            bar.set_style(style);
        }
        Bar {
            bar,
            files: AtomicU64::new(0),
            done: AtomicU64::new(0),
        }
    }

    fn show_files(&self) {
        let (done, files) = (self.done.load(Relaxed), self.files.load(Relaxed));
        self.bar.set_message(format!("{done}/{files}"));
    }
}

impl Progress for Bar {
    fn planned(&self, files: u64, bytes: u64) {
        self.files.fetch_add(files, Relaxed);
        self.bar.inc_length(bytes);
        self.show_files();
    }

    fn sent(&self, bytes: u64) {
        self.done.fetch_add(1, Relaxed);
        self.bar.inc(bytes);
        self.show_files();
    }
}
