//! `salt-minion`: parse flags, load config, run the minion until SIGTERM.
//!
//! Memory (README, "Minion memory"): the minion allocates with the system
//! allocator, not mimalloc like the masters, and runs on a current-thread
//! tokio runtime; blocking work goes to tokio's blocking pool as before.
//! Both measured with `minion-mem` (deploy/src/bin/minion-mem.rs).

use brine_common::cli::{self, DaemonArgs};
use brine_common::{config, exit};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "salt-minion", version, about = "The Brine minion daemon")]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

fn main() {
    let args: Args = cli::parse_args();
    let cfg = cli::daemon_config("salt-minion", &args.daemon, config::load_minion);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("salt-minion: cannot start the runtime: {e}");
            std::process::exit(exit::SOFTWARE);
        }
    };
    rt.block_on(async {
        let shutdown = cli::shutdown_token();
        if let Err(e) = brine_minion::daemon::run(cfg, shutdown).await {
            eprintln!("salt-minion: {e}");
            std::process::exit(exit::SOFTWARE);
        }
    });
}
