//! `sip-ha check-config`: validate, then print the resolved configuration
//! with this node's identity. Stricter than a run: what the file names on
//! this machine (the `sendmail` program) must be there.

use crate::cli::Cli;
use anyhow::Result;

pub fn run(cli: &Cli) -> Result<i32> {
    let (cfg, role) = match super::check_or_refuse(cli) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    let me = cfg.node(role);
    let peer = cfg.node(role.peer());
    println!("{}: valid", cfg.path.display());
    println!(
        "this server is the {role} ({} on {})",
        me.address, me.interface
    );
    println!("its peer is the {} ({})", role.peer(), peer.address);
    println!();
    println!("{cfg:#?}");
    Ok(0)
}
