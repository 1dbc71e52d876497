//! Typed configuration of every Brine daemon, loaded the way Salt loads it.
//!
//! Layers, lowest precedence first: built-in defaults, the main file
//! (`DIR/master` or `DIR/minion`, YAML), the `DIR/master.d/*.conf` includes in
//! sorted order, `SALT_<KEY>` environment variables, then the caller's
//! command-line overrides. The invariant: a [`MasterConfig`] or
//! [`MinionConfig`] handed out by [`load_master`] / [`load_minion`] has been
//! fully validated (every error names the key and the layer it came from)
//! and already has `root_dir` applied to its paths, so a daemon can bind
//! sockets and open files without re-checking anything. The syndic reads
//! the master config, as Salt's does, through a [`SyndicConfig`] view.

mod load;
mod master;
mod minion;
pub mod paths;
mod syndic;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use master::{load_master, load_master_with_env, MasterConfig};
pub use minion::{load_minion, load_minion_with_env, MinionConfig};
pub use syndic::{LinkTimings, SyndicConfig};

/// How [`LoadNotes::origin`] names a value no file, variable or flag set.
pub const DEFAULTS_ORIGIN: &str = load::DEFAULTS;

/// What loading noticed but did not refuse, for the daemon to log once its
/// logging is up (the config is read before the log file is known).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadNotes {
    /// Each unknown key with the file (or "command line") that set it, in
    /// load order; a key set in two files appears twice.
    pub unknown: Vec<(String, String)>,
    /// Include-directory entries that were not read (no `.conf` suffix, or
    /// a directory).
    pub skipped_includes: Vec<PathBuf>,
    /// Where the options a daemon checks at start-up (its paths, `master`,
    /// `syndic_master`) got their values: a file path, `environment
    /// variable SALT_X`, `command line` or `built-in defaults`. Start-up
    /// errors and warnings name it, so the operator knows which file to fix.
    pub origins: std::collections::BTreeMap<String, String>,
    /// The main config file read (or looked for): `DIR/master` or
    /// `DIR/minion`, named when an option is missing from it.
    pub main_file: PathBuf,
}

impl LoadNotes {
    /// The unknown keys, each once, in the order first met.
    pub fn unknown_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for (k, _) in &self.unknown {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
        keys
    }

    /// Where `key`'s value came from (`built-in defaults` when unknown).
    pub fn origin(&self, key: &str) -> &str {
        self.origins.get(key).map_or(load::DEFAULTS, String::as_str)
    }
}

/// Everything that can go wrong while loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file or include directory exists but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A config file is not valid YAML or its top level is not a mapping.
    #[error("cannot parse {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A key holds a value of the wrong type or outside its allowed range.
    /// `origin` is the file path, `environment variable SALT_X`,
    /// `command line` or `built-in defaults`.
    #[error("invalid value for '{key}' in {origin}: {message}")]
    Invalid {
        key: String,
        origin: String,
        message: String,
    },
    /// A configured path the daemon cannot use (not a directory, below a
    /// regular file, not writable by this user). One line: the option, its
    /// value, where it was set, why, and what to do.
    #[error("{key} {} (from {origin}) is unusable: {message}; set {key} to a path this user can create and write, or fix that path", path.display())]
    Path {
        key: String,
        path: PathBuf,
        origin: String,
        message: String,
    },
    /// A log level that is not one of Salt's level names.
    #[error(
        "unknown log level '{0}' (expected one of: all, garbage, trace, debug, profile, info, warning, error, critical, quiet)"
    )]
    UnknownLogLevel(String),
}

/// YAML as a figment data format, parsed with `serde_norway` (figment's own
/// `yaml` feature would pull in the deprecated `serde_yaml`).
#[derive(Debug, Clone, Copy)]
pub struct Yaml;

impl figment::providers::Format for Yaml {
    type Error = serde_norway::Error;
    const NAME: &'static str = "YAML";

    fn from_str<T: DeserializeOwned>(string: &str) -> Result<T, Self::Error> {
        serde_norway::from_str(string)
    }
}

/// The host name, used for default ids and grains: the fully-qualified name
/// when the kernel's name already has a domain or `/etc/hosts` gives one
/// (no DNS query is made), else the short name, else `localhost`.
pub fn hostname() -> String {
    let short = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    if short.contains('.') {
        return short;
    }
    std::fs::read_to_string("/etc/hosts")
        .ok()
        .and_then(|hosts| fqdn_from_hosts(&hosts, &short))
        .unwrap_or(short)
}

/// Finds `short.domain` among the names of an `/etc/hosts` line that also
/// names `short` (or starts with it), the way `getfqdn` resolves locally.
fn fqdn_from_hosts(hosts: &str, short: &str) -> Option<String> {
    let dotted = format!("{short}.");
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let names: Vec<&str> = line.split_whitespace().skip(1).collect();
        if let Some(fqdn) = names
            .iter()
            .find(|n| n.starts_with(&dotted) && n.len() > dotted.len())
        {
            return Some((*fqdn).to_string());
        }
    }
    None
}

/// Checks a Salt log level name (case-insensitive) and returns it lower-cased.
fn normalise_level(level: &str) -> Result<String, ConfigError> {
    crate::telemetry::level_filter(level).map(|_| level.to_ascii_lowercase())
}

/// Applies Salt's `root_dir` rule to one path: a relative path is taken
/// relative to `root`, an absolute one is re-rooted under it, and a path
/// already under `root` is left alone (so loading twice is harmless).
fn under_root(root: &Path, path: &Path) -> PathBuf {
    if path.starts_with(root) {
        return path.to_path_buf();
    }
    let relative: PathBuf = path
        .components()
        .filter(|c| {
            !matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Prefix(_)
            )
        })
        .collect();
    root.join(relative)
}

/// A daemon id must be usable as a file name in the master's `pki_dir`
/// (Salt refuses the same ids).
fn check_id(id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err("must not be empty".to_string());
    }
    if id == "." || id == ".." || id.contains(['/', '\\', '\0']) {
        return Err(format!(
            "{id:?} is not a valid id (no path separators, '.' or '..')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_found_in_hosts_file() {
        let hosts =
            "127.0.0.1 localhost\n# 10.0.0.9 web1.wrong.example\n127.0.1.1 web1.example.com web1\n";
        assert_eq!(
            fqdn_from_hosts(hosts, "web1").as_deref(),
            Some("web1.example.com")
        );
        assert_eq!(fqdn_from_hosts(hosts, "db1"), None);
    }

    #[test]
    fn hostname_is_never_empty() {
        assert!(!hostname().is_empty());
    }

    #[test]
    fn root_dir_rule() {
        let root = Path::new("/srv/brine");
        assert_eq!(
            under_root(root, Path::new("/etc/salt/pki")),
            PathBuf::from("/srv/brine/etc/salt/pki")
        );
        assert_eq!(
            under_root(root, Path::new("cache")),
            PathBuf::from("/srv/brine/cache")
        );
        assert_eq!(
            under_root(root, Path::new("/srv/brine/pki")),
            PathBuf::from("/srv/brine/pki")
        );
        assert_eq!(
            under_root(Path::new("/"), Path::new("/etc/salt")),
            PathBuf::from("/etc/salt")
        );
    }

    #[test]
    fn ids_that_are_not_file_names_are_refused() {
        assert!(check_id("web1").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("  ").is_err());
        assert!(check_id("..").is_err());
        assert!(check_id("a/b").is_err());
    }

    #[test]
    fn yaml_format_parses_with_serde_norway() {
        use figment::providers::Format;
        let v: std::collections::BTreeMap<String, u16> =
            Yaml::from_str("ret_port: 5506\n").expect("parse");
        assert_eq!(v.get("ret_port"), Some(&5506));
        let fig = figment::Figment::from(Yaml::string("a: [1, 2]"));
        let a: Vec<u8> = fig.extract_inner("a").expect("extract");
        assert_eq!(a, vec![1, 2]);
    }
}
