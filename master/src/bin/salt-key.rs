//! `salt-key`: parses arguments, starts console logging and runs
//! [`brine_master::key_cli::run`] against `<config-dir>/pki/master` (or
//! `--pki-dir`). The lead replaces the pki path with the real config loader.

use brine_common::exit;
use brine_master::key_cli::{run, KeyArgs};
use clap::Parser;
use std::io::IsTerminal;

fn main() {
    let mut args = match KeyArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            // Printing help or a usage error to a closed terminal is moot.
            let _ = e.print();
            std::process::exit(code);
        }
    };
    args.stdout_is_tty = std::io::stdout().is_terminal();
    init_logging(&args.log_level);
    let pki_dir = args
        .pki_dir
        .clone()
        .unwrap_or_else(|| args.config_dir.join("pki").join("master"));
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    let code = run(
        &args,
        &pki_dir,
        false,
        &mut stdin,
        &mut stdout,
        &mut |_change| {},
    );
    std::process::exit(code);
}

/// Maps Salt's log level names onto a tracing filter on stderr.
fn init_logging(level: &str) {
    let filter = match level {
        "all" | "garbage" | "trace" => "trace",
        "debug" | "profile" => "debug",
        "info" => "info",
        "warning" => "warn",
        "error" | "critical" => "error",
        _ => "off",
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .try_init();
}
