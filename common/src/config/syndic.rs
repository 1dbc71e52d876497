//! `SyndicConfig`: the view of a [`MasterConfig`] that the syndic's own
//! parts read (its link upward and its forwarder), as in Salt, where
//! `salt-syndic` reads the master's config file.
//!
//! The invariant: a `SyndicConfig` names at least one master above
//! ([`SyndicConfig::of`] refuses a config without `syndic_master`), and its
//! upstream pki dir is resolved; everything else was validated with the
//! master config it came from.

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, MasterConfig, MinionConfig};

/// How a link signs in and reconnects: Salt's minion options, which a
/// syndic has with a `syndic_` prefix for its link upward.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkTimings {
    /// Seconds between sign-in attempts while the key is pending.
    pub acceptance_wait_time: u64,
    /// Cap of the growing wait between sign-in attempts; 0 = no growth.
    pub acceptance_wait_time_max: u64,
    /// Milliseconds before the first reconnect attempt.
    pub recon_default: u64,
    /// Largest reconnect back-off, milliseconds.
    pub recon_max: u64,
    /// Jitter reconnects so a restarted master is not stampeded.
    pub recon_randomize: bool,
    /// Upper bound of the jitter before signing in again after the master
    /// rotated its publish key, seconds.
    pub random_reauth_delay: u64,
}

impl From<&MinionConfig> for LinkTimings {
    fn from(cfg: &MinionConfig) -> Self {
        LinkTimings {
            acceptance_wait_time: cfg.acceptance_wait_time,
            acceptance_wait_time_max: cfg.acceptance_wait_time_max,
            recon_default: cfg.recon_default,
            recon_max: cfg.recon_max,
            recon_randomize: cfg.recon_randomize,
            random_reauth_delay: cfg.random_reauth_delay,
        }
    }
}

/// The syndic's options, taken from the master config it runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct SyndicConfig {
    /// The syndic's id above: the downstream master's `id`.
    pub id: String,
    /// Masters above, tried in order (`syndic_master`); never empty.
    pub masters: Vec<String>,
    /// Their request port when an entry names none (`syndic_master_port`).
    pub master_port: u16,
    /// The syndic's upstream key pair and pinned master keys
    /// (`syndic_pki_dir`).
    pub pki_dir: PathBuf,
    /// Fingerprint required of the master above at first contact
    /// (`syndic_finger`).
    pub finger: Option<String>,
    /// The upstream link's timings: the `syndic_*` forms of the minion's
    /// options (`syndic_acceptance_wait_time`, `syndic_recon_default`, …).
    pub timings: LinkTimings,
    /// How often a batch of returns leaves at the latest
    /// (`syndic_forward_interval_ms`).
    pub forward_interval: Duration,
    /// Most returns in one batch (`syndic_forward_batch`).
    pub forward_batch: usize,
    /// Forward the jobs published here and their returns too
    /// (`syndic_forward_all`).
    pub forward_all: bool,
    /// Tag globs of the events forwarded upward
    /// (`syndic_forward_events`); rets never go up.
    pub forward_events: Vec<String>,
    /// Most returns waiting in the outbox (`syndic_spool_max`).
    pub outbox_max: usize,
    /// Largest frame on the link (`max_frame_bytes`).
    pub max_frame_bytes: usize,
    /// Where `syndic_master` was set (named in start-up warnings).
    pub masters_origin: String,
    /// The main config file (named when `syndic_master` is not set).
    pub main_file: PathBuf,
    /// The syndic process's metrics endpoint (the master config's
    /// `metrics_bind`; checked when that was loaded).
    pub metrics_bind: Option<String>,
}

impl SyndicConfig {
    /// The syndic's view of `cfg`; an error when no master above is set.
    pub fn of(cfg: &MasterConfig) -> Result<Self, ConfigError> {
        let masters: Vec<String> = cfg
            .syndic_master
            .iter()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        if masters.is_empty() {
            return Err(ConfigError::Invalid {
                key: "syndic_master".to_string(),
                origin: match cfg.load_notes.origin("syndic_master") {
                    super::DEFAULTS_ORIGIN => cfg.load_notes.main_file.display().to_string(),
                    o => o.to_string(),
                },
                message: "not set: a syndic needs the address of the master above".to_string(),
            });
        }
        Ok(SyndicConfig {
            id: cfg.id.clone(),
            masters,
            master_port: cfg.syndic_master_port,
            pki_dir: cfg
                .syndic_pki_dir
                .clone()
                .unwrap_or_else(|| cfg.pki_dir.join("syndic")),
            finger: cfg.syndic_finger.clone(),
            timings: LinkTimings {
                acceptance_wait_time: cfg.syndic_acceptance_wait_time,
                acceptance_wait_time_max: cfg.syndic_acceptance_wait_time_max,
                recon_default: cfg.syndic_recon_default,
                recon_max: cfg.syndic_recon_max,
                recon_randomize: cfg.syndic_recon_randomize,
                random_reauth_delay: cfg.syndic_random_reauth_delay,
            },
            forward_interval: Duration::from_millis(cfg.syndic_forward_interval_ms.max(1)),
            forward_batch: cfg.syndic_forward_batch.max(1),
            forward_all: cfg.syndic_forward_all,
            forward_events: cfg.syndic_forward_events.clone(),
            outbox_max: cfg.syndic_spool_max,
            max_frame_bytes: cfg.max_frame_bytes,
            masters_origin: cfg.load_notes.origin("syndic_master").to_string(),
            main_file: cfg.load_notes.main_file.clone(),
            metrics_bind: cfg.metrics_bind.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_master_with_env;
    use std::fs;

    #[test]
    fn a_syndic_needs_a_master_above() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = load_master_with_env(dir.path(), &[], &[]).expect("load");
        let err = SyndicConfig::of(&cfg).expect_err("no syndic_master");
        let text = err.to_string();
        assert!(text.contains("'syndic_master'"), "{text}");
        assert!(
            text.contains(&dir.path().join("master").display().to_string()),
            "names the main file: {text}"
        );
    }

    #[test]
    fn link_timings_come_from_the_syndic_options() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = load_master_with_env(dir.path(), &[], &[]).expect("load");
        let mut with_master = cfg.clone();
        with_master.syndic_master = vec!["top".into()];
        let s = SyndicConfig::of(&with_master).expect("view");
        // Salt-like defaults of the syndic's upstream link.
        assert_eq!(
            (
                s.timings.acceptance_wait_time,
                s.timings.acceptance_wait_time_max,
                s.timings.recon_default,
                s.timings.recon_max,
                s.timings.recon_randomize,
                s.timings.random_reauth_delay
            ),
            (5, 30, 500, 5000, true, 2)
        );
        assert_eq!(s.forward_interval, Duration::from_millis(100));
        assert_eq!((s.forward_batch, s.outbox_max), (500, 1_000_000));

        fs::write(
            dir.path().join("master"),
            "syndic_master: [top1, ' ']\nsyndic_recon_default: 200\nsyndic_recon_max: 900\nsyndic_acceptance_wait_time: 2\nsyndic_random_reauth_delay: 7\nsyndic_recon_randomize: false\n",
        )
        .expect("write");
        let cfg = load_master_with_env(dir.path(), &[], &[]).expect("load");
        let s = SyndicConfig::of(&cfg).expect("view");
        assert_eq!(s.masters, vec!["top1"]);
        assert_eq!((s.timings.recon_default, s.timings.recon_max), (200, 900));
        assert_eq!(s.timings.acceptance_wait_time, 2);
        assert_eq!(s.timings.random_reauth_delay, 7);
        assert!(!s.timings.recon_randomize);
        assert_eq!(s.pki_dir, cfg.pki_dir.join("syndic"));

        fs::write(
            dir.path().join("master"),
            "syndic_recon_default: 2000\nsyndic_recon_max: 1000\n",
        )
        .expect("write");
        let err = load_master_with_env(dir.path(), &[], &[])
            .expect_err("max below default")
            .to_string();
        assert!(err.contains("'syndic_recon_max'"), "{err}");
    }
}
