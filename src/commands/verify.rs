//! `sip-ha -v`: the status screen, or `--json`. It runs one round of probes
//! (local, witness, each peer path) for a live picture, and reads the state
//! without taking the lock, so it works while a loop or a pass runs.

use crate::cli::Cli;
use crate::observe::Observer;
use crate::status::{Gathered, PeerLine, Status};
use crate::{log, state};
use anyhow::Result;

/// How many history lines the screen shows.
const HISTORY_LINES: usize = 5;

pub fn run(cli: &Cli, json: bool) -> Result<i32> {
    let (cfg, role) = match super::load(cli) {
        Ok(v) => v,
        Err(e) => {
            // Exit 3, "unknown", as monitoring plugins expect.
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "state": "unknown", "error": format!("{e:#}") })
                );
            }
            eprintln!("sip-ha: {e:#}");
            return Ok(3);
        }
    };
    let dir = &cfg.cluster.state_dir;
    let mut notices: Vec<String> = cfg.warnings.clone();
    let loaded = state::load(dir, role)?;
    notices.extend(loaded.notice);
    let logger = super::logger(cli, None, Some(role)).with_facility(cfg.alert.syslog_facility);
    let rt = super::runtime()?;
    let round = rt.block_on(async { Observer::new(&cfg, role).all_paths().round(&logger).await });
    let peer = cfg.node(role.peer());
    let gathered = Gathered {
        holds_address: Some(round.holds_address),
        probes: Some(round.probes),
        witness: Some(round.witness),
        peer: Some(PeerLine {
            role: role.peer(),
            address: peer.address.to_string(),
            paths: round.peer_paths,
            report: round.peer_view.report,
        }),
        history: log::history_tail(dir, HISTORY_LINES),
        notices,
    };
    let status = Status::build(&cfg, role, &loaded.state, gathered);
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(status.exit_code)
}
