//! `sip-ha run` (one pass: what cron calls) and `sip-ha run --loop` (the
//! resident mode of the systemd unit). Both take the state lock first: a
//! pass that finds it held (another pass, or the loop) exits at once with
//! status 0 and a log line.

use crate::cli::{Cli, RunArgs};
use crate::driver::{resident, Driver};
use crate::log::Level;
use crate::state;
use anyhow::Result;

pub fn run(cli: &Cli, args: &RunArgs) -> Result<i32> {
    let (cfg, role) = match super::load_or_refuse(cli) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let log = super::logger(cli, Some(&cfg), Some(role));
    for w in &cfg.warnings {
        log.warn(w);
    }
    let dir = cfg.cluster.state_dir.clone();
    state::ensure_dir(&dir)?;
    let Some(_lock) = state::try_lock(&dir)? else {
        log.log(
            Level::Notice,
            &format!(
                "another sip-ha pass or the loop holds {}/lock: this pass does nothing",
                dir.display()
            ),
        );
        return Ok(0);
    };
    let loaded = state::load(&dir, role)?;
    if let Some(n) = &loaded.notice {
        log.warn(n);
        eprintln!("sip-ha: {n}");
    }
    let rt = super::runtime()?;
    rt.block_on(async {
        if args.resident {
            let mut log = log;
            // In the foreground or with stderr to a file, also write the log
            // there; under systemd (JOURNAL_STREAM set) syslog is enough.
            log.echo = std::env::var_os("JOURNAL_STREAM").is_none();
            let driver = Driver::new(cfg, role, loaded.state, log);
            resident::run(driver, cli.config.clone(), role).await
        } else {
            let mut driver = Driver::one_shot(cfg, role, loaded.state, log);
            let result = driver.round(None).await;
            driver.settle().await;
            result.map(|_| ())
        }
    })?;
    Ok(0)
}
