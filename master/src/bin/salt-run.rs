//! `salt-run`: run a master-side runner function (jobs.*, manage.*).

brine_common::global_allocator!();

use brine_common::{cli, config, exit, telemetry};
use brine_master::cli::run::{self, RunArgs};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: RunArgs = cli::parse_args();
    let cfg = match config::load_master(&args.config_dir, &[]) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("salt-run: {e}");
            std::process::exit(exit::CONFIG);
        }
    };
    telemetry::init(&args.log_level, None, "warning");
    std::process::exit(run::run(args, &cfg).await);
}
