//! `salt-run`: run a master-side runner function (jobs.*, manage.*).

brine_common::global_allocator!();

use brine_common::{cli, config};
use brine_master::cli::run::{self, RunArgs};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: RunArgs = cli::parse_args();
    let cfg = cli::client_config("salt-run", &args.client, config::load_master);
    std::process::exit(run::run(args, &cfg).await);
}
