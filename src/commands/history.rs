//! `sip-ha log`: print this server's history log (state_dir/history.log and
//! its rotated files, oldest first), or its last N lines.

use crate::cli::{Cli, LogArgs};
use anyhow::Result;

pub fn run(cli: &Cli, args: &LogArgs) -> Result<i32> {
    let (cfg, _) = match super::load_or_refuse(cli) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let lines = crate::log::history_all(&cfg.cluster.state_dir);
    if lines.is_empty() {
        eprintln!(
            "sip-ha: no history yet in {}/history.log",
            cfg.cluster.state_dir.display()
        );
        return Ok(0);
    }
    let skip = args.lines.map_or(0, |n| lines.len().saturating_sub(n));
    for line in &lines[skip..] {
        println!("{line}");
    }
    Ok(0)
}
