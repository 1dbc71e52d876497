//! `salt-master`: parse flags, load config, start the master, stop on SIGTERM.

brine_common::global_allocator!();

use brine_common::cli::{self, DaemonArgs};
use brine_common::{config, exit};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "salt-master", version, about = "The Brine master daemon")]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[tokio::main]
async fn main() {
    let args: Args = cli::parse_args();
    let cfg = cli::daemon_config("salt-master", &args.daemon, config::load_master);
    let nofile = cli::raise_nofile();
    tracing::info!(nofile, "open-files limit");
    let shutdown = cli::shutdown_token();
    let master = match brine_master::master::Master::start(cfg, shutdown.clone()).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("salt-master: {e}");
            std::process::exit(exit::SOFTWARE);
        }
    };
    shutdown.cancelled().await;
    if tokio::time::timeout(std::time::Duration::from_secs(10), master.join())
        .await
        .is_err()
    {
        tracing::warn!("shutdown took longer than 10 s; exiting anyway");
    }
}
