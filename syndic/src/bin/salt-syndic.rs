//! `salt-syndic`: parse flags, load the master config, run the syndic.

brine_common::global_allocator!();

use brine_common::cli::{self, DaemonArgs};
use brine_common::{config, exit};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "salt-syndic",
    version,
    about = "The Brine syndic: a relay between masters (reads DIR/master, as Salt's syndic does)"
)]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[tokio::main]
async fn main() {
    let args: Args = cli::parse_args();
    let cfg = cli::daemon_config("salt-syndic", &args.daemon, config::load_master);
    // Checked before any socket is bound; `run` builds the same view.
    if let Err(e) = config::SyndicConfig::of(&cfg) {
        eprintln!("salt-syndic: {e}");
        std::process::exit(exit::CONFIG);
    }
    cli::raise_nofile();
    let shutdown = cli::shutdown_token();
    if let Err(e) = brine_syndic::syndic::run(cfg, shutdown).await {
        eprintln!("salt-syndic: {e}");
        std::process::exit(exit::SOFTWARE);
    }
}
