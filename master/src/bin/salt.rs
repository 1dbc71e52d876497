//! `salt`: run a function on the minions a target matches.

brine_common::global_allocator!();

use brine_common::{cli, config, exit, telemetry};
use brine_master::cli::salt::{self, MasterRef, SaltArgs};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: SaltArgs = cli::parse_args();
    let cfg = match config::load_master(&args.config_dir, &[]) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("salt: {e}");
            std::process::exit(exit::CONFIG);
        }
    };
    telemetry::init(&args.log_level, None, "warning");
    let master = MasterRef {
        sock_dir: cfg.sock_dir.clone(),
        cachedir: cfg.cachedir.clone(),
        timeout: cfg.timeout,
        gather_job_timeout: cfg.gather_job_timeout,
        nodegroups: cfg.nodegroups.clone(),
    };
    let code = salt::run(args, master).await;
    std::process::exit(code);
}
