//! One file per thing the command line can ask for. Each returns the exit
//! status; errors are printed here, once, with their whole context chain.

mod alert;
mod check;
mod check_config;
mod copy;
mod history;
mod operator;
mod run;
mod serve;
mod sync;
mod verify;

use crate::cli::{Cli, Command, RunArgs};
use crate::config::{self, Config};
use crate::log::Logger;
use anyhow::Result;
use sip_ha_core::Command as CoreCommand;
use sip_ha_core::Role;

/// Run what the command line asked for and return the exit status.
pub fn dispatch(cli: Cli) -> i32 {
    if cli.command.is_some() && cli.action.any() {
        eprintln!("sip-ha: give either a one-letter action (-v, -f, -c, -d, --enable) or a subcommand, not both");
        return 2;
    }
    let result = match (&cli.command, &cli.action) {
        (Some(Command::Check), _) => check::run(&cli),
        (Some(Command::CheckConfig), _) => check_config::run(&cli),
        (Some(Command::Serve(args)), _) => serve::run(&cli, args),
        (Some(Command::Run(args)), _) => run::run(&cli, args),
        (Some(Command::Alert(args)), _) => alert::run(&cli, args),
        (Some(Command::Log(args)), _) => history::run(&cli, args),
        (Some(Command::Sync(args)), _) => sync::run(&cli, args),
        (None, a) if a.verify => verify::run(&cli, cli.json),
        (None, a) if a.failover => operator::run(&cli, CoreCommand::Failover { force: cli.force }),
        (None, a) if a.disable => operator::run(&cli, CoreCommand::Disable),
        (None, a) if a.enable => operator::run(&cli, CoreCommand::Enable),
        (None, a) if a.copy => copy::run(&cli),
        // A bare `sip-ha` runs one pass, as the old scripts did from cron.
        (None, _) => run::run(&cli, &RunArgs::default()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sip-ha: {e:#}");
            2
        }
    }
}

/// Load the config and work out which node this is. Either failing means
/// the configuration is unusable here: nothing else may run.
pub(crate) fn load(cli: &Cli) -> Result<(Config, Role)> {
    load_with(cli, config::load)
}

fn load_with(
    cli: &Cli,
    read: fn(&std::path::Path) -> std::result::Result<Config, config::ConfigError>,
) -> Result<(Config, Role)> {
    let cfg = read(&cli.config)?;
    let role = crate::identity::which_node(&cfg, cli.node.as_deref())?;
    Ok((cfg, role))
}

/// [`load`], or print why the configuration is refused and return the
/// exit status to use (2): nothing else may run.
pub(crate) fn load_or_refuse(cli: &Cli) -> std::result::Result<(Config, Role), i32> {
    refuse(load(cli))
}

/// [`load_or_refuse`] with [`config::check`]: what `check-config` uses,
/// where what the file names on this machine must be there too.
pub(crate) fn check_or_refuse(cli: &Cli) -> std::result::Result<(Config, Role), i32> {
    refuse(load_with(cli, config::check))
}

fn refuse(loaded: Result<(Config, Role)>) -> std::result::Result<(Config, Role), i32> {
    loaded.map_err(|e| {
        eprintln!("sip-ha: {e:#}");
        eprintln!("sip-ha: configuration refused; nothing was done");
        2
    })
}

/// The async runtime a command runs its probes and I/O on: one thread, as
/// the work is a handful of sockets and child processes.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A logger for this run: syslog, plus the history log once the state
/// directory is known.
pub(crate) fn logger(cli: &Cli, cfg: Option<&Config>, role: Option<Role>) -> Logger {
    Logger::new(
        role.map_or("sip-ha", |r| r.as_str()),
        cfg.map(|c| c.cluster.state_dir.clone()),
        cli.log,
    )
    .with_facility(cfg.map_or_else(Default::default, |c| c.alert.syslog_facility))
}
