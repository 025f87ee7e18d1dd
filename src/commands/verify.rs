//! `sip-ha -v`: the status screen, or `--json`. Reads the state without
//! taking the lock, so it works while a loop or a pass runs.

use crate::cli::Cli;
use crate::status::{Gathered, Status};
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
    let me = cfg.node(role);
    let holds = match crate::identity::local_addresses() {
        Ok(addrs) => Some(addrs.iter().any(|(ifname, ip)| {
            *ifname == me.interface && *ip == cfg.cluster.service_address.addr()
        })),
        Err(e) => {
            notices.push(format!("{e:#}"));
            None
        }
    };
    let gathered = Gathered {
        holds_address: holds,
        history: log::history_tail(dir, HISTORY_LINES),
        notices,
        ..Gathered::default()
    };
    let status = Status::build(&cfg, role, &loaded.state, gathered);
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(status.exit_code)
}
