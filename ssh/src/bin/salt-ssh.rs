//! `salt-ssh`: run execution functions on roster hosts over SSH.

brine_common::global_allocator!();

use brine_common::{cli, config};
use brine_ssh::SshArgs;

#[tokio::main]
async fn main() {
    // ssh runs this executable as SSH_ASKPASS when a password is used.
    if let Some(code) = brine_ssh::askpass() {
        std::process::exit(code);
    }
    let args: SshArgs = cli::parse_args();
    let master = cli::client_config("salt-ssh", &args.client, config::load_master);
    std::process::exit(brine_ssh::run(args, master).await);
}
