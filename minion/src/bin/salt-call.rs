//! `salt-call`: run an execution module function on this minion.

brine_common::global_allocator!();

use brine_common::{cli, config, exit, telemetry};
use brine_minion::call::{self, CallArgs};

#[tokio::main]
async fn main() {
    let args: CallArgs = cli::parse_args();
    let cfg = match config::load_minion(&args.config_dir, &[]) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("salt-call: {e}");
            std::process::exit(exit::CONFIG);
        }
    };
    telemetry::init(&args.log_level, None, "warning");
    std::process::exit(call::run(args, cfg).await);
}
