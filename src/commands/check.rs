//! `sip-ha check`: run the local health probes once, one line each; exit 0
//! when all pass, 1 when any fails. Usable as it is as a keepalived
//! `vrrp_script`, a Pacemaker monitor or a Nagios check.

use crate::cli::Cli;
use crate::probe;
use anyhow::Result;

pub fn run(cli: &Cli) -> Result<i32> {
    let cfg = match crate::config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sip-ha: {e:#}");
            return Ok(3);
        }
    };
    let rt = super::runtime()?;
    let results = rt.block_on(probe::run_checks(&cfg.health.checks));
    if results.is_empty() {
        println!("OK: no [[health.check]] configured");
        return Ok(0);
    }
    for r in &results {
        println!(
            "{} {}: {:.1} ms: {}",
            if r.ok { "OK  " } else { "FAIL" },
            r.name,
            r.latency.as_secs_f64() * 1000.0,
            r.detail
        );
    }
    Ok(if results.iter().all(|r| r.ok) { 0 } else { 1 })
}
