//! `salt-minion`: parse flags, load config, run the minion until SIGTERM.

use brine_common::{cli, config, exit, telemetry};
use clap::Parser;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(name = "salt-minion", version, about = "The Brine minion daemon")]
struct Args {
    /// Configuration directory (reads DIR/minion and DIR/minion.d/*.conf).
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
    let cfg = match config::load_minion(&args.config_dir, &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("salt-minion: {e}");
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
    let shutdown = CancellationToken::new();
    let sd = shutdown.clone();
    tokio::spawn(async move {
        cli::shutdown_signal().await;
        sd.cancel();
    });
    if let Err(e) = brine_minion::daemon::run(cfg, shutdown).await {
        eprintln!("salt-minion: {e}");
        std::process::exit(exit::SOFTWARE);
    }
}
