//! `salt-call`: run an execution module function on this minion.

brine_common::global_allocator!();

use brine_common::{cli, config};
use brine_minion::call::{self, CallArgs};

#[tokio::main]
async fn main() {
    let args: CallArgs = cli::parse_args();
    let cfg = cli::client_config("salt-call", &args.client, config::load_minion);
    std::process::exit(call::run(args, cfg).await);
}
