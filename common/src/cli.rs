//! Helpers every binary's `main` shares: argument parsing with Brine's exit
//! codes, the flags of daemons ([`DaemonArgs`]) and client CLIs
//! ([`ClientArgs`]) with their config-or-exit-78 loaders, the open-files
//! limit, and the shutdown signal.

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

/// A token cancelled when SIGINT or SIGTERM arrives (call inside a tokio
/// runtime): the one shutdown signal every daemon passes to its `run`.
pub fn shutdown_token() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        t.cancel();
    });
    token
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

/// Flags every daemon takes (`salt-master`, `salt-minion`, `salt-syndic`).
#[derive(clap::Args, Debug, Clone)]
pub struct DaemonArgs {
    /// Configuration directory (reads DIR/master or DIR/minion, and the
    /// matching .d/*.conf files).
    #[arg(
        short = 'c',
        long = "config-dir",
        default_value = "/etc/salt",
        env = "SALT_CONFIG_DIR"
    )]
    pub config_dir: std::path::PathBuf,
    /// Console log level (overrides log_level).
    #[arg(short = 'l', long = "log-level")]
    pub log_level: Option<String>,
}

/// Flags every client CLI takes (`salt`, `salt-run`, `salt-key`,
/// `salt-call`), flattened into each one's arguments; the sibling of
/// [`DaemonArgs`]. `salt-key` drops the `-l` short form (Salt's `salt-key -l`
/// lists keys) and keeps `--log-level`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ClientArgs {
    /// Configuration directory (reads DIR/master, or DIR/minion for
    /// salt-call, and the matching .d/*.conf files).
    #[arg(
        short = 'c',
        long = "config-dir",
        default_value = "/etc/salt",
        env = "SALT_CONFIG_DIR"
    )]
    pub config_dir: std::path::PathBuf,
    /// Console log level (logs go to stderr).
    #[arg(short = 'l', long = "log-level", default_value = "warning")]
    pub log_level: String,
}

/// What a daemon needs from its config to start logging.
pub trait DaemonConfig {
    fn log_level(&self) -> &str;
    fn log_file(&self) -> &std::path::Path;
    fn logfile_level(&self) -> &str;
    fn load_notes(&self) -> &crate::config::LoadNotes;
    /// The paths the daemon creates or writes at start-up, checked before
    /// anything else runs (a bad one is a config error, exit 78).
    fn start_paths(&self) -> Vec<crate::config::paths::PathCheck>;
}

/// One [`crate::config::paths::PathCheck`] naming where `key` was set.
fn path_check(
    notes: &crate::config::LoadNotes,
    key: &'static str,
    path: &std::path::Path,
    kind: crate::config::paths::PathKind,
) -> crate::config::paths::PathCheck {
    crate::config::paths::PathCheck {
        key,
        path: path.to_path_buf(),
        kind,
        origin: notes.origin(key).to_string(),
    }
}

impl DaemonConfig for crate::config::MasterConfig {
    fn log_level(&self) -> &str {
        &self.log_level
    }
    fn log_file(&self) -> &std::path::Path {
        &self.log_file
    }
    fn logfile_level(&self) -> &str {
        crate::config::MasterConfig::logfile_level(self)
    }
    fn load_notes(&self) -> &crate::config::LoadNotes {
        &self.load_notes
    }
    fn start_paths(&self) -> Vec<crate::config::paths::PathCheck> {
        use crate::config::paths::PathKind::{AppendFile, Dir};
        let n = &self.load_notes;
        let mut v = vec![
            path_check(n, "pki_dir", &self.pki_dir, Dir),
            path_check(n, "cachedir", &self.cachedir, Dir),
            path_check(n, "sock_dir", &self.sock_dir, Dir),
        ];
        if let (true, Some(p)) = (self.is_syndic(), &self.syndic_pki_dir) {
            v.push(path_check(n, "syndic_pki_dir", p, Dir));
        }
        v.push(path_check(n, "log_file", &self.log_file, AppendFile));
        v
    }
}

impl DaemonConfig for crate::config::MinionConfig {
    fn log_level(&self) -> &str {
        &self.log_level
    }
    fn log_file(&self) -> &std::path::Path {
        &self.log_file
    }
    fn logfile_level(&self) -> &str {
        crate::config::MinionConfig::logfile_level(self)
    }
    fn load_notes(&self) -> &crate::config::LoadNotes {
        &self.load_notes
    }
    fn start_paths(&self) -> Vec<crate::config::paths::PathCheck> {
        use crate::config::paths::PathKind::{AppendFile, Dir};
        let n = &self.load_notes;
        // The minion does not use sock_dir (no local socket yet).
        vec![
            path_check(n, "pki_dir", &self.pki_dir, Dir),
            path_check(n, "cachedir", &self.cachedir, Dir),
            path_check(n, "log_file", &self.log_file, AppendFile),
        ]
    }
}

/// Load a client CLI's config (exit 78 with `name: error` on stderr, as
/// [`daemon_config`] does) and start console logging at `-l`/`--log-level`;
/// clients keep no log file.
pub fn client_config<C>(name: &str, args: &ClientArgs, load: Loader<C>) -> C {
    let cfg = match load(&args.config_dir, &[]) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(exit::CONFIG);
        }
    };
    crate::telemetry::init(&args.log_level, None, "warning");
    cfg
}

/// A config loader: the directory `-c` names, and overrides from flags.
pub type Loader<C> =
    fn(&std::path::Path, &[(&str, serde_json::Value)]) -> Result<C, crate::config::ConfigError>;

/// Load a daemon's config and check the paths it names (exit 78 with one
/// line on error: the option, its value, the file that set it and what to
/// do), start logging, warn about unknown keys by name.
pub fn daemon_config<C: DaemonConfig>(name: &str, args: &DaemonArgs, load: Loader<C>) -> C {
    let mut overrides = vec![];
    if let Some(l) = &args.log_level {
        overrides.push(("log_level", serde_json::Value::String(l.clone())));
    }
    let cfg = match load(&args.config_dir, &overrides).and_then(|c| {
        crate::config::paths::check(&c.start_paths())?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(exit::CONFIG);
        }
    };
    crate::telemetry::init(cfg.log_level(), Some(cfg.log_file()), cfg.logfile_level());
    let notes = cfg.load_notes();
    for (key, file) in &notes.unknown {
        tracing::warn!(key = %key, file = %file, "unknown configuration key ignored");
    }
    for path in &notes.skipped_includes {
        tracing::debug!(file = %path.display(), "include skipped: not a *.conf file");
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser, Debug)]
    struct Client {
        #[command(flatten)]
        client: ClientArgs,
    }

    /// Whether `C`'s `--config-dir` falls back to `SALT_CONFIG_DIR` (checked
    /// on the definition: changing the environment would race other tests).
    fn config_dir_reads_env<C: CommandFactory>() -> bool {
        C::command()
            .get_arguments()
            .find(|a| a.get_id() == "config_dir")
            .and_then(|a| a.get_env())
            .is_some_and(|e| e == "SALT_CONFIG_DIR")
    }

    #[test]
    fn client_args_defaults_and_flags() {
        let c = Client::try_parse_from(["x"]).expect("parse").client;
        if std::env::var_os("SALT_CONFIG_DIR").is_none() {
            assert_eq!(c.config_dir, std::path::PathBuf::from("/etc/salt"));
        }
        assert_eq!(c.log_level, "warning");
        let c = Client::try_parse_from(["x", "-c", "/srv/salt", "-l", "debug"])
            .expect("parse")
            .client;
        assert_eq!(c.config_dir, std::path::PathBuf::from("/srv/salt"));
        assert_eq!(c.log_level, "debug");
        let c = Client::try_parse_from(["x", "--config-dir=/a", "--log-level", "info"])
            .expect("parse")
            .client;
        assert_eq!(
            (c.config_dir.to_str(), c.log_level.as_str()),
            (Some("/a"), "info")
        );
        assert!(config_dir_reads_env::<Client>());
    }
}
