//! `sip-ha run --loop`: stay resident and run a round every
//! `health.interval`.
//!
//! * After a round in which anything failed (a local probe, the witness,
//!   every path to the peer, or the peer's own health) the next one comes after a fifth of the interval, so a
//!   failure is confirmed `fail_after` times quickly rather than slowly.
//! * SIGUSR1 starts a round at once: an operator command is waiting, or the
//!   peer just gave the address up and wants this node to take it.
//! * SIGTERM and SIGINT stop the loop *without* dropping the address: a
//!   restart of sip-ha is not a failover.
//! * SIGHUP reloads the configuration; an invalid one is refused, logged,
//!   and the old one stays in force.
//! * Between rounds, the pushes of the sync paths are looked after: one
//!   that ended is recorded (and an operator's `sip-ha sync` answered), and
//!   a change seen by the watch starts one at once (see `watch`).

use super::requests::{self, Answer, Asked};
use super::Driver;
use crate::config;
use anyhow::{Context, Result};
use sip_ha_core::Role;
use std::path::PathBuf;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Run until SIGTERM or SIGINT. The caller holds the state lock.
pub async fn run(mut driver: Driver, config_path: PathBuf, role: Role) -> Result<()> {
    let dir = driver.cfg().cluster.state_dir.clone();
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("cannot watch SIGUSR1")?;
    requests::write_pid(&dir)?;
    driver.log().log(
        crate::log::Level::Notice,
        &format!("loop started as the {role}"),
    );

    loop {
        let (request, sync_ask) = match requests::take(&dir) {
            Some((id, Asked::Command(c))) => (Some((id, c)), None),
            Some((id, Asked::Sync(a))) => (None, Some((id, a))),
            None => (None, None),
        };
        let result = driver.round(request.map(|(_, c)| c)).await;
        driver.reap();
        let mut hurry = false;
        match &result {
            Ok(outcome) => {
                driver.refresh_announce(outcome.holds);
                let o = &outcome.observed;
                let peer_unwell = o
                    .peer_view
                    .report
                    .as_ref()
                    .is_some_and(|r| r.health != sip_ha_core::Health::Up);
                hurry = o.probes.iter().any(|p| !p.ok)
                    || !o.witness_ok
                    || !o.peer_view.reachable
                    || peer_unwell;
            }
            Err(e) => driver.log().error(&format!("round failed: {e:#}")),
        }
        if let Some((id, _)) = request {
            let answer = match &result {
                Ok(o) => Answer {
                    id,
                    events: o.events.clone(),
                    holds_after: o.holds,
                    error: None,
                    sync: None,
                },
                Err(e) => Answer {
                    id,
                    events: Vec::new(),
                    holds_after: false,
                    error: Some(format!("{e:#}")),
                    sync: None,
                },
            };
            if let Err(e) = requests::answer(&dir, &answer) {
                driver.log().error(&format!("{e:#}"));
            }
        }
        if let Some((id, ask)) = sync_ask {
            let holds = result.as_ref().is_ok_and(|o| o.holds);
            driver.ask_sync(id, ask, holds);
        }

        let interval = driver.cfg().health.interval;
        let pause = if hurry { interval / 5 } else { interval };
        let next_round = tokio::time::Instant::now() + pause.max(Duration::from_millis(10));
        // Until the next round, look after the pushes.
        let stop = loop {
            let woke = tokio::select! {
                _ = tokio::time::sleep_until(next_round) => Woke::Round,
                _ = usr1.recv() => Woke::Round,
                _ = hup.recv() => Woke::Reload,
                _ = term.recv() => Woke::Stop,
                _ = int.recv() => Woke::Stop,
                news = driver.sync_news() => Woke::Sync(news),
            };
            match woke {
                Woke::Round => break false,
                Woke::Reload => {
                    reload(&mut driver, &config_path, role);
                    break false;
                }
                Woke::Stop => break true,
                Woke::Sync(news) => driver.on_sync_news(news).await,
            }
        };
        if stop {
            break;
        }
    }
    driver.settle().await;
    requests::remove_pid(&dir);
    driver.log().log(
        crate::log::Level::Notice,
        "loop stopped (the service address stays where it is)",
    );
    Ok(())
}

/// What ended a wait between rounds.
enum Woke {
    Round,
    Reload,
    Stop,
    Sync(super::push::Wake),
}

fn reload(driver: &mut Driver, path: &std::path::Path, role: Role) {
    match config::load(path) {
        Ok(cfg) if cfg.cluster.state_dir != driver.cfg().cluster.state_dir => {
            driver.log().error(&format!(
            "SIGHUP: {} moves state_dir; restart sip-ha for that. Keeping the old configuration",
            path.display()
        ))
        }
        Ok(cfg) => {
            for w in &cfg.warnings {
                driver.log().warn(w);
            }
            driver.reload(cfg);
            driver.log().log(
                crate::log::Level::Notice,
                &format!("SIGHUP: reloaded {} (still the {role})", path.display()),
            );
        }
        Err(e) => driver.log().error(&format!(
            "SIGHUP: new configuration refused, keeping the old one: {e:#}"
        )),
    }
}
