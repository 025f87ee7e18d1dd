//! TEMPORARY entry point, only `sip-ha serve --status-file FILE`, so that the
//! link tests have a binary to run on the far side of SSH. The real command
//! line replaces it; its `serve` becomes one call to
//! `sip_ha::link::serve_stdio(&source)` with a `StatusSource` that reads this
//! node's state.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sip-ha")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer the peer over stdin/stdout (run by the peer over SSH).
    Serve {
        /// Answer status requests with the StatusReply in this JSON file
        /// (tests and labs).
        #[arg(long)]
        status_file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(async {
                match cli.command {
                    Command::Serve { status_file } => {
                        sip_ha::link::serve_stdio(&sip_ha::link::StatusFile(status_file)).await
                    }
                }
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sip-ha: {e:#}");
            ExitCode::FAILURE
        }
    }
}
