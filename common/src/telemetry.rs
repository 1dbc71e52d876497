//! Tracing setup for every Brine binary, driven by Salt's log level names.
//!
//! Console output goes to stderr at the configured level (or `RUST_LOG` when
//! it is set); the log file, when it can be opened, gets its own level. The
//! invariant: setting up logging never stops a daemon. A bad level falls
//! back to `error` (Salt's fallback), an unopenable log file is reported on
//! stderr and skipped, and a second `init` leaves the first one in place.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::ConfigError;

/// Map a Salt level name (case-insensitive) to a tracing filter string.
/// tracing has no `profile`, `critical` or `garbage`, so each maps to the
/// nearest level that still shows it; `quiet` turns logging off.
pub fn level_filter(salt_level: &str) -> Result<&'static str, ConfigError> {
    match salt_level.trim().to_ascii_lowercase().as_str() {
        "all" | "garbage" | "trace" => Ok("trace"),
        "debug" => Ok("debug"),
        "profile" | "info" => Ok("info"),
        "warning" => Ok("warn"),
        "error" | "critical" => Ok("error"),
        "quiet" => Ok("off"),
        _ => Err(ConfigError::UnknownLogLevel(salt_level.to_string())),
    }
}

/// Log to stderr at `console_level` (Salt level names, mapped to tracing;
/// `RUST_LOG` overrides when set) and, when `log_file` is given and
/// writable, append to that file at `file_level`. Never fails hard: a log
/// file that cannot be opened is reported on stderr and skipped.
pub fn init(console_level: &str, log_file: Option<&Path>, file_level: &str) {
    let console_filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("brine: ignoring invalid RUST_LOG ({e})");
            salt_filter(console_level)
        }),
        _ => salt_filter(console_level),
    };
    let console = fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(console_filter);
    let file = log_file.and_then(|path| match open_log_file(path) {
        Ok(file) => Some(
            fmt::layer()
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .with_filter(salt_filter(file_level)),
        ),
        Err(e) => {
            eprintln!(
                "brine: cannot open log file {}: {e}; logging to stderr only",
                path.display()
            );
            None
        }
    });
    // Fails only when a global subscriber exists already (a second call in
    // one process); the first setup stays, which is what a caller wants.
    let _already_set = tracing_subscriber::registry()
        .with(console)
        .with(file)
        .try_init();
}

/// A filter for a Salt level; an unknown name is reported and means `error`.
fn salt_filter(level: &str) -> EnvFilter {
    match level_filter(level) {
        Ok(filter) => EnvFilter::new(filter),
        Err(e) => {
            eprintln!("brine: {e}; using 'error'");
            EnvFilter::new("error")
        }
    }
}

/// Opens `path` for appending, creating it and its directory if needed.
fn open_log_file(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salt_levels_map_to_tracing() {
        let cases = [
            ("all", "trace"),
            ("garbage", "trace"),
            ("trace", "trace"),
            ("debug", "debug"),
            ("profile", "info"),
            ("info", "info"),
            ("warning", "warn"),
            ("WARNING", "warn"),
            ("error", "error"),
            ("critical", "error"),
            ("quiet", "off"),
        ];
        for (salt, tracing) in cases {
            assert_eq!(level_filter(salt).expect(salt), tracing, "{salt}");
        }
        let err = level_filter("loud").expect_err("unknown");
        assert!(err.to_string().starts_with("unknown log level 'loud'"));
        assert!(level_filter("warn").is_err(), "Salt has no 'warn' level");
    }

    #[test]
    fn unopenable_log_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, "").expect("write");
        assert!(open_log_file(&blocker.join("master")).is_err());
        let nested = dir.path().join("var/log/salt/master");
        open_log_file(&nested).expect("creates parent dirs");
        assert!(nested.exists());
    }

    #[test]
    fn init_appends_to_the_log_file_at_its_level() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log/master");
        std::fs::create_dir_all(dir.path().join("log")).expect("mkdir");
        std::fs::write(&path, "earlier line\n").expect("write");
        init("quiet", Some(&path), "info");
        tracing::info!(marker = "telemetry-test-info", "file layer works");
        tracing::debug!(marker = "telemetry-test-debug", "below the file level");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("earlier line\n"), "appends: {text}");
        assert!(text.contains("telemetry-test-info"), "{text}");
        assert!(!text.contains("telemetry-test-debug"), "{text}");
        // A second init must not panic or replace the first.
        init("debug", None, "debug");
    }
}
