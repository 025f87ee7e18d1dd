//! `-f` (manual failover), `-d` (disable) and `--enable`: an operator's
//! command, carried out by the decision core in a round, so it follows the
//! same rules as everything else (`-f` only to a ready peer, `-d` hands over
//! first). If a resident loop runs, the command is handed to it; otherwise
//! this process runs the round itself under the lock.

use crate::cli::Cli;
use crate::driver::{requests, Driver};
use crate::state;
use crate::status::stopped_line;
use anyhow::{bail, Result};
use sip_ha_core::{Command, Event, EventKind};
use std::time::{Duration, Instant};

/// How long to wait for a loop's answer, or for a cron pass to finish.
const WAIT: Duration = Duration::from_secs(15);

pub fn run(cli: &Cli, command: Command) -> Result<i32> {
    let (cfg, role) = match super::load_or_refuse(cli) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let log = super::logger(cli, Some(&cfg), Some(role));
    let dir = cfg.cluster.state_dir.clone();
    state::ensure_dir(&dir)?;
    let service = cfg.cluster.service_address.addr().to_string();

    let deadline = Instant::now() + WAIT;
    let (events, holds) = loop {
        if let Some(_lock) = state::try_lock(&dir)? {
            // No loop: run the round here.
            let loaded = state::load(&dir, role)?;
            if let Some(n) = &loaded.notice {
                eprintln!("sip-ha: {n}");
            }
            let rt = super::runtime()?;
            let mut driver = Driver::one_shot(cfg.clone(), role, loaded.state, log.clone());
            let outcome = rt.block_on(async {
                let r = driver.round(Some(command)).await;
                driver.settle().await;
                r
            })?;
            break (outcome.events, outcome.holds);
        }
        if requests::loop_pid(&dir).is_some() {
            match requests::submit(&dir, command, WAIT)? {
                Some(answer) => {
                    if let Some(e) = answer.error {
                        bail!("the sip-ha loop could not carry it out: {e}");
                    }
                    break (answer.events, answer.holds_after);
                }
                None => bail!("the sip-ha loop did not answer within {WAIT:?}: see syslog"),
            }
        }
        // A cron pass holds the lock: it is short, wait for it.
        if Instant::now() > deadline {
            bail!(
                "{}/lock stayed held for {WAIT:?} and no loop answers",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    print_events(&events);
    let refused = events.iter().any(|e| e.kind == EventKind::Refused);
    match command {
        Command::Failover { .. } if !refused && !holds => {
            println!("{}", stopped_line(&service));
            println!("the {} takes the service address over", role.peer());
        }
        Command::Disable => {
            println!("this server is disabled: it will not take {service} until `sip-ha --enable`");
        }
        Command::Enable if !refused => println!("this server is enabled"),
        _ => {}
    }
    Ok(if refused { 1 } else { 0 })
}

fn print_events(events: &[Event]) {
    for e in events {
        println!("{}: {}", e.kind, e.reason);
    }
}
