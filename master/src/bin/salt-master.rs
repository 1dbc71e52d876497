//! `salt-master`: parse flags, load config, start the master, stop on SIGTERM.

use brine_common::{cli, config, exit, telemetry};
use clap::Parser;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(name = "salt-master", version, about = "The Brine master daemon")]
struct Args {
    /// Configuration directory (reads DIR/master and DIR/master.d/*.conf).
    #[arg(
        short = 'c',
        long = "config-dir",
        default_value = "/etc/salt",
        env = "SALT_CONFIG_DIR"
    )]
    config_dir: PathBuf,
    /// Console log level (overrides log_level).
    #[arg(short = 'l', long = "log-level")]
    log_level: Option<String>,
}

#[tokio::main]
async fn main() {
    let args: Args = cli::parse_args();
    let mut overrides = vec![];
    if let Some(l) = &args.log_level {
        overrides.push(("log_level", serde_json::Value::String(l.clone())));
    }
    let cfg = match config::load_master(&args.config_dir, &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("salt-master: {e}");
            std::process::exit(exit::CONFIG);
        }
    };
    telemetry::init(
        &cfg.log_level,
        Some(&cfg.log_file),
        cfg.log_level_logfile.as_deref().unwrap_or(&cfg.log_level),
    );
    for key in &cfg.unknown_keys {
        tracing::warn!(key = %key, config_dir = %args.config_dir.display(), "unknown config option ignored");
    }
    let nofile = cli::raise_nofile();
    tracing::info!(nofile, "open-files limit");
    let shutdown = CancellationToken::new();
    let master = match brine_master::daemon::Master::start(cfg, shutdown.clone()).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("salt-master: {e}");
            std::process::exit(exit::SOFTWARE);
        }
    };
    cli::shutdown_signal().await;
    shutdown.cancel();
    if tokio::time::timeout(std::time::Duration::from_secs(10), master.join())
        .await
        .is_err()
    {
        tracing::warn!("shutdown took longer than 10 s; exiting anyway");
    }
}
