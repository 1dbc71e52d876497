//! `salt-minion`: parse flags, load config, run the minion until SIGTERM.

brine_common::global_allocator!();

use brine_common::cli::{self, DaemonArgs};
use brine_common::{config, exit};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "salt-minion", version, about = "The Brine minion daemon")]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[tokio::main]
async fn main() {
    let args: Args = cli::parse_args();
    let cfg = cli::daemon_config("salt-minion", &args.daemon, config::load_minion);
    let shutdown = cli::shutdown_token();
    if let Err(e) = brine_minion::daemon::run(cfg, shutdown).await {
        eprintln!("salt-minion: {e}");
        std::process::exit(exit::SOFTWARE);
    }
}
