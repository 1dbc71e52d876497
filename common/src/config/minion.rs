//! `MinionConfig`: the options of `salt-minion` and `salt-call`.
//!
//! Field names are Salt's option names. [`load_minion`] keeps the module's
//! invariant: the returned config is validated (id usable as a file name,
//! a reachable master port, grains an object) and its paths are already
//! under `root_dir`. As in Salt, an id that no layer sets comes from the
//! `minion_id` file in the config directory when present, else the host
//! name, so renaming a host does not silently change its minion id.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::load::{self, Loaded};
use super::{check_id, hostname, normalise_level, under_root, ConfigError, LoadNotes};

/// Options of a minion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MinionConfig {
    /// The minion's identity: its key's name on the master and its target.
    pub id: String,
    /// Host name or IP of the master.
    pub master: String,
    /// The master's request port (the publish port comes in the auth reply).
    pub master_port: u16,
    /// Pins the master's public key fingerprint before first contact.
    pub master_finger: Option<String>,
    /// Minion key pair and the cached master key.
    pub pki_dir: PathBuf,
    /// State that can be rebuilt (job data, grains cache).
    pub cachedir: PathBuf,
    /// Local ipc sockets.
    pub sock_dir: PathBuf,
    /// Prefix for every path above (Salt's `root_dir`).
    pub root_dir: PathBuf,
    /// Where the daemon appends its log.
    pub log_file: PathBuf,
    /// Console level, a Salt level name.
    pub log_level: String,
    /// Log file level; `None` means the same as `log_level`.
    pub log_level_logfile: Option<String>,
    /// Seconds between auth attempts while the key is pending.
    pub acceptance_wait_time: u64,
    /// Cap for the growing wait between auth attempts; 0 = no growth.
    pub acceptance_wait_time_max: u64,
    /// Milliseconds before the first reconnect attempt.
    pub recon_default: u64,
    /// Largest reconnect back-off in milliseconds.
    pub recon_max: u64,
    /// Jitter reconnects so a restarted master is not stampeded.
    pub recon_randomize: bool,
    /// Upper bound in seconds of the jitter before re-authenticating when
    /// the master rotates its publish key.
    pub random_reauth_delay: u64,
    /// Static grains merged over the detected ones; must be an object.
    pub grains: serde_json::Value,
    /// Largest frame accepted from the wire, to bound memory per message.
    pub max_frame_bytes: usize,
    /// Default file server environment of `cp.*` and `cmd.script`
    /// (Salt's `saltenv`; `base` when unset).
    pub saltenv: Option<String>,
    /// Compile only this pillar environment (Salt's `pillarenv`).
    pub pillarenv: Option<String>,
    /// Salt's `beacons:` option: beacon name → its config, in Salt's form
    /// (a list of single-key dicts, e.g. `load: [{averages: {1m: [0, 2]}},
    /// {interval: 10}]`). Must be a mapping; each beacon's own config is
    /// checked by the minion when it loads it (a bad one is skipped).
    pub beacons: serde_json::Value,
    /// `host:port` of the opt-in Prometheus endpoint (`/metrics`,
    /// `/healthz`, `/readyz`); unset = no endpoint. See
    /// `brine_common::metrics`.
    pub metrics_bind: Option<String>,
    /// Keys found in the files (or overrides) that this struct does not
    /// know, with their files, and skipped includes; filled by the loader
    /// for the daemon to log.
    #[serde(skip)]
    pub load_notes: LoadNotes,
}

impl Default for MinionConfig {
    fn default() -> Self {
        MinionConfig {
            id: hostname(),
            master: "salt".to_string(),
            master_port: 4506,
            master_finger: None,
            pki_dir: PathBuf::from("/etc/salt/pki/minion"),
            cachedir: PathBuf::from("/var/cache/salt/minion"),
            sock_dir: PathBuf::from("/var/run/salt/minion"),
            root_dir: PathBuf::from("/"),
            log_file: PathBuf::from("/var/log/salt/minion"),
            log_level: "warning".to_string(),
            log_level_logfile: None,
            acceptance_wait_time: 10,
            acceptance_wait_time_max: 0,
            recon_default: 1000,
            recon_max: 10_000,
            recon_randomize: true,
            random_reauth_delay: 10,
            grains: serde_json::Value::Object(serde_json::Map::new()),
            max_frame_bytes: 16 * 1024 * 1024,
            saltenv: None,
            pillarenv: None,
            beacons: serde_json::Value::Object(serde_json::Map::new()),
            metrics_bind: None,
            load_notes: LoadNotes::default(),
        }
    }
}

impl MinionConfig {
    /// The level for the log file (`log_level_logfile`, else `log_level`).
    pub fn logfile_level(&self) -> &str {
        self.log_level_logfile.as_deref().unwrap_or(&self.log_level)
    }
}

/// Loads the minion config from `config_dir` (`minion`, `minion.d/*.conf`),
/// the process environment and `overrides` (CLI flags, highest precedence).
pub fn load_minion(
    config_dir: &Path,
    overrides: &[(&str, serde_json::Value)],
) -> Result<MinionConfig, ConfigError> {
    let env = load::process_env();
    load_minion_with_env(config_dir, &env, overrides)
}

/// [`load_minion`] with the environment given explicitly (tests, embedding).
pub fn load_minion_with_env(
    config_dir: &Path,
    env: &[(String, String)],
    overrides: &[(&str, serde_json::Value)],
) -> Result<MinionConfig, ConfigError> {
    let loaded = load::load(
        &MinionConfig::default(),
        config_dir,
        "minion",
        env,
        overrides,
    )?;
    finish(loaded, config_dir)
}

fn finish(loaded: Loaded<MinionConfig>, config_dir: &Path) -> Result<MinionConfig, ConfigError> {
    let mut cfg = loaded.config.clone();
    if loaded.is_default("id") {
        let path = config_dir.join("minion_id");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let id = text.trim();
                check_id(id).map_err(|message| ConfigError::Invalid {
                    key: "id".to_string(),
                    origin: path.display().to_string(),
                    message,
                })?;
                cfg.id = id.to_string();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ConfigError::Read { path, source }),
        }
    }
    check_id(&cfg.id).map_err(|m| loaded.invalid("id", m))?;
    if cfg.master.trim().is_empty() {
        return Err(loaded.invalid("master", "must not be empty"));
    }
    if cfg.master_port == 0 {
        return Err(loaded.invalid("master_port", "port 0 is not allowed"));
    }
    cfg.log_level =
        normalise_level(&cfg.log_level).map_err(|e| loaded.invalid("log_level", e.to_string()))?;
    if let Some(level) = &cfg.log_level_logfile {
        cfg.log_level_logfile = Some(
            normalise_level(level)
                .map_err(|e| loaded.invalid("log_level_logfile", e.to_string()))?,
        );
    }
    if cfg.recon_max < cfg.recon_default {
        return Err(loaded.invalid(
            "recon_max",
            format!("must be at least recon_default ({})", cfg.recon_default),
        ));
    }
    if !cfg.grains.is_object() {
        return Err(loaded.invalid("grains", "expected a mapping of grain name to value"));
    }
    if cfg.beacons.is_null() {
        cfg.beacons = serde_json::Value::Object(serde_json::Map::new());
    }
    if !cfg.beacons.is_object() {
        return Err(loaded.invalid("beacons", "expected a mapping of beacon name to its config"));
    }
    if cfg.max_frame_bytes == 0 {
        return Err(loaded.invalid("max_frame_bytes", "must be greater than 0"));
    }
    if let Some(bind) = &cfg.metrics_bind {
        crate::metrics::check_bind(bind).map_err(|m| loaded.invalid("metrics_bind", m))?;
    }
    if cfg.root_dir.as_os_str().is_empty() {
        return Err(loaded.invalid("root_dir", "must not be empty"));
    }

    let root = std::path::absolute(&cfg.root_dir)
        .map_err(|e| loaded.invalid("root_dir", e.to_string()))?;
    cfg.pki_dir = under_root(&root, &cfg.pki_dir);
    cfg.cachedir = under_root(&root, &cfg.cachedir);
    cfg.sock_dir = under_root(&root, &cfg.sock_dir);
    cfg.log_file = under_root(&root, &cfg.log_file);
    cfg.root_dir = root;
    let mut notes = loaded.notes.clone();
    for key in [
        "pki_dir", "cachedir", "sock_dir", "log_file", "master", "root_dir",
    ] {
        notes.origins.insert(key.to_string(), loaded.origin(key));
    }
    cfg.load_notes = notes;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs;

    fn load(
        dir: &Path,
        vars: &[(&str, &str)],
        overrides: &[(&str, serde_json::Value)],
    ) -> Result<MinionConfig, ConfigError> {
        let env: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load_minion_with_env(dir, &env, overrides)
    }

    #[test]
    fn defaults_without_any_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = load(dir.path(), &[], &[]).expect("load");
        assert_eq!(cfg.id, hostname());
        assert_eq!(cfg.master, "salt");
        assert_eq!(cfg.master_port, 4506);
        assert_eq!(cfg.pki_dir, PathBuf::from("/etc/salt/pki/minion"));
        assert_eq!(cfg.log_level, "warning");
        assert_eq!((cfg.recon_default, cfg.recon_max), (1000, 10_000));
        assert!(cfg.recon_randomize);
        assert_eq!(cfg.acceptance_wait_time, 10);
        assert_eq!(cfg.grains, json!({}));
    }

    #[test]
    fn file_includes_env_and_overrides_stack() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join("minion"),
            "id: web1\nmaster: 10.0.0.5\ngrains:\n  roles: [web]\n  dc: east\n",
        )
        .expect("write");
        let d = dir.path().join("minion.d");
        fs::create_dir(&d).expect("mkdir");
        fs::write(
            d.join("grains.conf"),
            "grains:\n  dc: west\nmaster_port: 5506\n",
        )
        .expect("write");
        fs::write(d.join("ignored.yaml"), "master_port: 1\n").expect("write");
        let cfg = load(
            dir.path(),
            &[("SALT_MASTER", "10.0.0.6")],
            &[("id", json!("web2"))],
        )
        .expect("load");
        assert_eq!(cfg.id, "web2");
        assert_eq!(cfg.master, "10.0.0.6");
        assert_eq!(cfg.master_port, 5506);
        assert_eq!(cfg.grains, json!({"roles": ["web"], "dc": "west"}));
    }

    #[test]
    fn minion_id_file_is_used_only_when_id_is_unset() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("minion_id"), "cached-id\n").expect("write");
        assert_eq!(load(dir.path(), &[], &[]).expect("load").id, "cached-id");
        fs::write(dir.path().join("minion"), "id: configured\n").expect("write");
        assert_eq!(load(dir.path(), &[], &[]).expect("load").id, "configured");
    }

    #[test]
    fn invalid_values_name_key_and_origin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("minion");
        fs::write(&file, "master_port: 0\n").expect("write");
        let err = load(dir.path(), &[], &[]).expect_err("port 0").to_string();
        assert_eq!(
            err,
            format!(
                "invalid value for 'master_port' in {}: port 0 is not allowed",
                file.display()
            )
        );
        fs::write(&file, "grains: [a, b]\n").expect("write");
        let err = load(dir.path(), &[], &[]).expect_err("grains").to_string();
        assert!(err.starts_with("invalid value for 'grains' in "), "{err}");
        fs::write(&file, "id: '../etc'\n").expect("write");
        assert!(load(dir.path(), &[], &[]).is_err());
        fs::write(&file, "recon_default: 5000\nrecon_max: 100\n").expect("write");
        let err = load(dir.path(), &[], &[]).expect_err("recon").to_string();
        assert!(err.contains("'recon_max'"), "{err}");
        fs::write(&file, "recon_randomize: maybe\n").expect("write");
        let err = load(dir.path(), &[], &[]).expect_err("bool").to_string();
        assert!(
            err.contains("'recon_randomize'") && err.contains("expected a boolean"),
            "{err}"
        );
        fs::write(&file, "beacons: [load]\n").expect("write");
        let err = load(dir.path(), &[], &[]).expect_err("beacons").to_string();
        assert!(err.contains("'beacons'"), "{err}");
        fs::write(&file, "beacons:\n  load:\n    - interval: 5\n").expect("write");
        let cfg = load(dir.path(), &[], &[]).expect("beacons map");
        assert_eq!(cfg.beacons, json!({"load": [{"interval": 5}]}));
        fs::write(&file, "flibble: 1\n").expect("write");
        assert_eq!(
            load(dir.path(), &[], &[])
                .expect("load")
                .load_notes
                .unknown_keys(),
            vec!["flibble"]
        );
    }

    #[test]
    fn root_dir_prefixes_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("m1");
        let cfg = load(
            dir.path(),
            &[],
            &[("root_dir", json!(root)), ("pki_dir", json!("pki"))],
        )
        .expect("load");
        assert_eq!(cfg.pki_dir, root.join("pki"));
        assert_eq!(cfg.cachedir, root.join("var/cache/salt/minion"));
        assert_eq!(cfg.sock_dir, root.join("var/run/salt/minion"));
        assert_eq!(cfg.log_file, root.join("var/log/salt/minion"));
    }

    #[test]
    fn metrics_bind_is_off_by_default_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = load(dir.path(), &[], &[]).expect("defaults");
        assert_eq!(cfg.metrics_bind, None);
        fs::write(dir.path().join("minion"), "metrics_bind: 127.0.0.1:9105\n").expect("write");
        let cfg = load(dir.path(), &[], &[]).expect("load");
        assert_eq!(cfg.metrics_bind.as_deref(), Some("127.0.0.1:9105"));
        let cfg = load(dir.path(), &[("SALT_METRICS_BIND", "[::1]:9200")], &[]).expect("env");
        assert_eq!(cfg.metrics_bind.as_deref(), Some("[::1]:9200"));
        fs::write(dir.path().join("minion"), "metrics_bind: nowhere\n").expect("write");
        let err = load(dir.path(), &[], &[]).expect_err("no port").to_string();
        assert!(
            err.starts_with("invalid value for 'metrics_bind' in ") && err.contains("host:port"),
            "{err}"
        );
        let err = load(dir.path(), &[], &[("metrics_bind", json!("h:70000"))])
            .expect_err("port range")
            .to_string();
        assert!(err.contains("'metrics_bind' in command line"), "{err}");
    }
}
