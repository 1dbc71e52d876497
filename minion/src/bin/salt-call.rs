//! `salt-call`: run an execution module function on this minion.

brine_common::global_allocator!();

use brine_common::{cli, config};
use brine_minion::call::{self, CallArgs};

#[tokio::main]
async fn main() {
    let args: CallArgs = cli::parse_args();
    if args.ssh_stdio {
        // salt-ssh's runner: options come over the channel, logs to stderr.
        cli::client_config("salt-call", &args.client, |_, _| Ok(()));
        let code = brine_minion::ssh_run::serve(tokio::io::stdin(), tokio::io::stdout()).await;
        std::process::exit(code);
    }
    let cfg = cli::client_config("salt-call", &args.client, config::load_minion);
    std::process::exit(call::run(args, cfg).await);
}
