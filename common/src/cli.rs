//! Helpers every binary's `main` shares: argument parsing with Brine's exit
//! codes, the open-files limit, and the shutdown signal.

use crate::exit;

/// Parse arguments; `--help`/`--version` exit 0, a usage error exits 64
/// (clap alone would exit 2, which `salt` reserves for "nothing matched").
pub fn parse_args<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => exit::OK,
                _ => exit::USAGE,
            };
            let _ = e.print();
            std::process::exit(if code == exit::OK && e.use_stderr() {
                exit::USAGE
            } else {
                code
            });
        }
    }
}

/// Raise the soft open-files limit to the hard limit; returns the new soft
/// limit. Daemons with thousands of peers need it (each zmq connection
/// costs descriptors).
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 0,
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
