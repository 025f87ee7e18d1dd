//! The `sip-ha` binary: parse the command line and hand over to the library.

use clap::Parser;

fn main() {
    let cli = sip_ha::cli::Cli::parse();
    std::process::exit(sip_ha::commands::dispatch(cli));
}
