//! `salt-cp`: copy local files to the minions a target matches.

brine_common::global_allocator!();

use brine_common::{cli, config};
use brine_master::cli::cp::{self, CpArgs, MasterRef};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: CpArgs = cli::parse_args();
    let cfg = cli::client_config("salt-cp", &args.client, config::load_master);
    let master = MasterRef {
        sock_dir: cfg.sock_dir.clone(),
        cachedir: cfg.cachedir.clone(),
        timeout: cfg.timeout,
        nodegroups: cfg.nodegroups.clone(),
    };
    std::process::exit(cp::run(args, master).await);
}
