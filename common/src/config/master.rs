//! `MasterConfig`: the options of `salt-master`, and of `salt-syndic`, which
//! reads the master config as in Salt.
//!
//! Field names are Salt's option names, so an operator's existing
//! `/etc/salt/master` keys mean the same thing here. [`load_master`] keeps
//! the module's invariant: the returned config is validated and its paths
//! are already under `root_dir`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::load::{self, Loaded};
use super::{check_id, hostname, normalise_level, under_root, ConfigError, LoadNotes};

/// Options of a master (and of the syndic's lower master).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MasterConfig {
    /// Names this master to syndics above it and in job paths.
    pub id: String,
    /// Address both ports bind to.
    pub interface: IpAddr,
    /// PUB socket port; 0 lets the OS choose (tests).
    pub publish_port: u16,
    /// ROUTER (request/return) port; 0 lets the OS choose (tests).
    pub ret_port: u16,
    /// Accept every new minion key without `salt-key` (unsafe, Salt's flag).
    pub auto_accept: bool,
    /// File of id globs whose keys are accepted on sight.
    pub autosign_file: Option<PathBuf>,
    /// Master key pair and the minion key state directories.
    pub pki_dir: PathBuf,
    /// Job cache and other state that can be rebuilt.
    pub cachedir: PathBuf,
    /// Local ipc sockets the CLIs use to reach this master.
    pub sock_dir: PathBuf,
    /// Prefix for every path above (Salt's `root_dir`), so a whole master
    /// can live under one directory.
    pub root_dir: PathBuf,
    /// Where the daemon appends its log.
    pub log_file: PathBuf,
    /// Console level, a Salt level name.
    pub log_level: String,
    /// Log file level; `None` means the same as `log_level`.
    pub log_level_logfile: Option<String>,
    /// Hours a job's returns stay in the job cache; 0 keeps them forever.
    pub keep_jobs: u64,
    /// Default seconds `salt` waits for returns.
    pub timeout: u64,
    /// Seconds a `saltutil.find_job` probe may take.
    pub gather_job_timeout: u64,
    /// True on a master that has syndics below it (adds relay data to loads).
    pub order_masters: bool,
    /// Named compound targets for `salt -N`.
    #[serde(deserialize_with = "load::nodegroups")]
    pub nodegroups: BTreeMap<String, String>,
    /// Seconds between minion presence pings.
    pub heartbeat_interval: u64,
    /// High-water mark of the PUB socket (messages queued per subscriber).
    pub pub_hwm: i32,
    /// Listen backlog of the ROUTER socket.
    pub zmq_backlog: i32,
    /// Largest frame accepted from the wire, to bound memory per message.
    pub max_frame_bytes: usize,
    /// Largest job return stored. A larger one is replaced by an error
    /// return naming its size (counted `returns_too_large`), so the job
    /// shows why instead of the minion "not returning".
    pub max_return_bytes: usize,
    /// Refuse new minion keys past this many accepted ones; 0 = unlimited.
    pub max_minions: usize,
    /// Upper masters of a syndic (string or list); empty = not a syndic.
    #[serde(deserialize_with = "load::string_or_list")]
    pub syndic_master: Vec<String>,
    /// Request port of the upper master(s).
    pub syndic_master_port: u16,
    /// How often a syndic flushes batched returns upward.
    pub syndic_forward_interval_ms: u64,
    /// Most returns a syndic sends upward in one batch.
    pub syndic_forward_batch: usize,
    /// Forward upward the jobs published at this syndic itself (an
    /// operator running `salt` on the syndic) with their returns, as
    /// Salt's syndic does. Off by default: those jobs stay in this
    /// syndic's job cache, and the master above holds only the jobs it
    /// sent (see ARCHITECTURE.md, "Jobs published at a syndic").
    pub syndic_forward_all: bool,
    /// Tag globs of the events a syndic forwards from its bus to the
    /// master above (Salt's `tagmatch`: exact or `fnmatch`). Default
    /// `["*"]`: everything, as Salt's syndic forwards its whole bus.
    /// `salt/job/<jid>/ret/<id>` never goes up whatever this says: the
    /// master above fires its own when it accepts the forwarded returns,
    /// so each return shows once on its bus. Empty: no events go up.
    #[serde(deserialize_with = "load::string_or_list")]
    pub syndic_forward_events: Vec<String>,
    /// Most returns a syndic's outbox holds for the master above (the
    /// option keeps its old name); past it the oldest are dropped,
    /// counted and logged.
    pub syndic_spool_max: usize,
    /// Seconds between a syndic's sign-in attempts above while its key is
    /// pending there (the minion's `acceptance_wait_time`).
    pub syndic_acceptance_wait_time: u64,
    /// Cap of the growing wait between those attempts; at most
    /// `syndic_acceptance_wait_time` means no growth.
    pub syndic_acceptance_wait_time_max: u64,
    /// Milliseconds before the syndic's first reconnect to the master above.
    pub syndic_recon_default: u64,
    /// Largest reconnect back-off above, in milliseconds.
    pub syndic_recon_max: u64,
    /// Jitter the syndic's reconnects so a restarted top is not stampeded.
    pub syndic_recon_randomize: bool,
    /// Upper bound in seconds of the jitter before the syndic signs in
    /// again when the master above restarts or rotates its publish key.
    pub syndic_random_reauth_delay: u64,
    /// The syndic's upstream identity; the loader sets `<pki_dir>/syndic`
    /// when unset.
    pub syndic_pki_dir: Option<PathBuf>,
    /// Fingerprint (`salt-key -F master` on the master above: SHA-256,
    /// colon-separated hex) the syndic requires of the upper master's key
    /// at first contact, before any key is pinned (Salt's `syndic_finger`,
    /// the syndic's `master_finger`). The loader lowercases it.
    pub syndic_finger: Option<String>,
    /// The file server's roots per environment (`salt://` paths), searched
    /// in order; not under `root_dir`, as in Salt.
    pub file_roots: BTreeMap<String, Vec<PathBuf>>,
    /// Pillar SLS roots per environment, each with its `top.sls`.
    pub pillar_roots: BTreeMap<String, Vec<PathBuf>>,
    /// File server backends; only `roots` exists here.
    #[serde(deserialize_with = "load::string_or_list")]
    pub fileserver_backend: Vec<String>,
    /// Regular expressions of paths the file server hides.
    #[serde(deserialize_with = "load::string_or_list")]
    pub file_ignore_regex: Vec<String>,
    /// Globs of paths the file server hides.
    #[serde(deserialize_with = "load::string_or_list")]
    pub file_ignore_glob: Vec<String>,
    /// Allow minions to push files to the master (`cp.push`).
    pub file_recv: bool,
    /// Largest file a minion may push, in MiB.
    pub file_recv_max_size: u64,
    /// Bytes per file chunk on the request channel.
    pub file_buffer_size: usize,
    /// Put this master's options in every pillar under `master`.
    pub pillar_opts: bool,
    /// How pillar SLS data is merged (`smart`, `recurse`, `overwrite`,
    /// `none`; `smart` is `recurse` for YAML).
    pub pillar_source_merging_strategy: String,
    /// Merge lists instead of replacing them when pillar data is merged.
    pub pillar_merge_lists: bool,
    /// Fire `salt/presence/present` and `salt/presence/change` on the event
    /// bus every `loop_interval` seconds (Salt's option, off by default).
    pub presence_events: bool,
    /// Seconds between the master's maintenance rounds that fire the
    /// presence events (Salt's `loop_interval`).
    pub loop_interval: u64,
    /// Largest event (tag plus JSON data, in bytes) a minion may send to
    /// the master's event bus (Salt's `max_event_size`); larger ones are
    /// refused and counted (`events_refused`).
    pub max_event_size: usize,
    /// `host:port` of the opt-in Prometheus endpoint (`/metrics`,
    /// `/healthz`, `/readyz`); unset = no endpoint. See
    /// `brine_common::metrics`.
    pub metrics_bind: Option<String>,
    /// Salt's `reactor`: a list of one-key mappings, event tag glob →
    /// reactor SLS files (a path or a list; absolute paths or `salt://`
    /// paths in the `base` file roots), in the order written.
    #[serde(deserialize_with = "reactor_map")]
    pub reactor: Vec<BTreeMap<String, Vec<String>>>,
    /// Reactions run at once (Salt's `reactor_worker_threads`).
    pub reactor_worker_threads: usize,
    /// Reactions waiting for a worker before new ones are dropped and
    /// counted `reactor_dropped` (Salt's `reactor_worker_hwm`).
    pub reactor_worker_hwm: usize,
    /// React also to the `salt/job/<jid>/...` events of jobs the reactor
    /// itself published (and to events whose `user` is `Reactor`). Off by
    /// default, so a reaction to its own job's return cannot loop forever.
    pub reactor_react_to_own_jobs: bool,
    /// Keys found in the files (or overrides) that this struct does not
    /// know, with their files, and skipped includes; filled by the loader
    /// for the daemon to log.
    #[serde(skip)]
    pub load_notes: LoadNotes,
}

/// `reactor`: Salt's list of one-key mappings `{tag glob: sls or [sls]}`;
/// a single mapping (several globs) is taken too. Empty globs or paths
/// are refused by name.
fn reactor_map<'de, D>(de: D) -> Result<Vec<BTreeMap<String, Vec<String>>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Files {
        One(String),
        Many(Vec<String>),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Map {
        List(Vec<BTreeMap<String, Files>>),
        One(BTreeMap<String, Files>),
        Nothing(()),
    }
    let entries = match Map::deserialize(de).map_err(|_| {
        serde::de::Error::custom(
            "expected a list of mappings of a tag glob to a reactor SLS file or a list of them",
        )
    })? {
        Map::List(v) => v,
        Map::One(m) => m.into_iter().map(|e| BTreeMap::from([e])).collect(),
        Map::Nothing(()) => Vec::new(),
    };
    let mut out = Vec::new();
    for entry in entries {
        for (glob, files) in entry {
            let files = match files {
                Files::One(f) => vec![f],
                Files::Many(v) => v,
            };
            let files: Vec<String> = files.into_iter().map(|f| f.trim().to_string()).collect();
            if glob.trim().is_empty() || files.iter().any(String::is_empty) {
                return Err(serde::de::Error::custom(format!(
                    "reactor entry '{glob}': empty tag glob or empty file name"
                )));
            }
            out.push(BTreeMap::from([(glob, files)]));
        }
    }
    Ok(out)
}

/// Salt's `file_buffer_size` default (256 KiB).
pub const DEFAULT_FILE_BUFFER_SIZE: usize = 262_144;

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            id: format!("{}_master", hostname()),
            interface: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            publish_port: 4505,
            ret_port: 4506,
            auto_accept: false,
            autosign_file: None,
            pki_dir: PathBuf::from("/etc/salt/pki/master"),
            cachedir: PathBuf::from("/var/cache/salt/master"),
            sock_dir: PathBuf::from("/var/run/salt/master"),
            root_dir: PathBuf::from("/"),
            log_file: PathBuf::from("/var/log/salt/master"),
            log_level: "warning".to_string(),
            log_level_logfile: None,
            keep_jobs: 24,
            timeout: 5,
            gather_job_timeout: 10,
            order_masters: false,
            nodegroups: BTreeMap::new(),
            heartbeat_interval: 2,
            pub_hwm: 1_000,
            zmq_backlog: 1000,
            max_frame_bytes: 16 * 1024 * 1024,
            max_return_bytes: 8 * 1024 * 1024,
            max_minions: 0,
            syndic_master: Vec::new(),
            syndic_master_port: 4506,
            syndic_forward_interval_ms: 100,
            syndic_forward_batch: 500,
            syndic_forward_all: false,
            syndic_forward_events: vec!["*".to_string()],
            syndic_spool_max: 1_000_000,
            syndic_acceptance_wait_time: 5,
            syndic_acceptance_wait_time_max: 30,
            syndic_recon_default: 500,
            syndic_recon_max: 5000,
            syndic_recon_randomize: true,
            syndic_random_reauth_delay: 2,
            syndic_pki_dir: None,
            syndic_finger: None,
            file_roots: BTreeMap::from([("base".to_string(), vec![PathBuf::from("/srv/salt")])]),
            pillar_roots: BTreeMap::from([(
                "base".to_string(),
                vec![PathBuf::from("/srv/pillar")],
            )]),
            fileserver_backend: vec!["roots".to_string()],
            file_ignore_regex: Vec::new(),
            file_ignore_glob: Vec::new(),
            file_recv: false,
            file_recv_max_size: 100,
            file_buffer_size: DEFAULT_FILE_BUFFER_SIZE,
            pillar_opts: false,
            pillar_source_merging_strategy: "smart".to_string(),
            pillar_merge_lists: false,
            presence_events: false,
            loop_interval: 60,
            max_event_size: 1_048_576,
            metrics_bind: None,
            reactor: Vec::new(),
            reactor_worker_threads: 10,
            reactor_worker_hwm: 10_000,
            reactor_react_to_own_jobs: false,
            load_notes: LoadNotes::default(),
        }
    }
}

impl MasterConfig {
    /// The level for the log file (`log_level_logfile`, else `log_level`).
    pub fn logfile_level(&self) -> &str {
        self.log_level_logfile.as_deref().unwrap_or(&self.log_level)
    }

    /// True when this master relays for one or more upper masters.
    pub fn is_syndic(&self) -> bool {
        !self.syndic_master.is_empty()
    }
}

/// Loads the master config from `config_dir` (`master`, `master.d/*.conf`),
/// the process environment and `overrides` (CLI flags, highest precedence).
pub fn load_master(
    config_dir: &Path,
    overrides: &[(&str, serde_json::Value)],
) -> Result<MasterConfig, ConfigError> {
    let env = load::process_env();
    load_master_with_env(config_dir, &env, overrides)
}

/// [`load_master`] with the environment given explicitly (tests, embedding).
pub fn load_master_with_env(
    config_dir: &Path,
    env: &[(String, String)],
    overrides: &[(&str, serde_json::Value)],
) -> Result<MasterConfig, ConfigError> {
    let loaded = load::load(
        &MasterConfig::default(),
        config_dir,
        "master",
        env,
        overrides,
    )?;
    finish(loaded)
}

fn finish(loaded: Loaded<MasterConfig>) -> Result<MasterConfig, ConfigError> {
    let mut cfg = loaded.config.clone();
    check_id(&cfg.id).map_err(|m| loaded.invalid("id", m))?;
    if cfg.syndic_master_port == 0 {
        return Err(loaded.invalid("syndic_master_port", "port 0 is not allowed"));
    }
    if cfg.publish_port != 0 && cfg.publish_port == cfg.ret_port {
        return Err(loaded.invalid(
            "ret_port",
            format!("must differ from publish_port ({})", cfg.publish_port),
        ));
    }
    cfg.log_level =
        normalise_level(&cfg.log_level).map_err(|e| loaded.invalid("log_level", e.to_string()))?;
    if let Some(level) = &cfg.log_level_logfile {
        cfg.log_level_logfile = Some(
            normalise_level(level)
                .map_err(|e| loaded.invalid("log_level_logfile", e.to_string()))?,
        );
    }
    let positive: [(&str, u64); 12] = [
        ("reactor_worker_threads", cfg.reactor_worker_threads as u64),
        ("reactor_worker_hwm", cfg.reactor_worker_hwm as u64),
        ("loop_interval", cfg.loop_interval),
        ("max_event_size", cfg.max_event_size as u64),
        ("max_return_bytes", cfg.max_return_bytes as u64),
        ("timeout", cfg.timeout),
        ("gather_job_timeout", cfg.gather_job_timeout),
        ("heartbeat_interval", cfg.heartbeat_interval),
        ("max_frame_bytes", cfg.max_frame_bytes as u64),
        ("syndic_forward_interval_ms", cfg.syndic_forward_interval_ms),
        ("syndic_forward_batch", cfg.syndic_forward_batch as u64),
        ("syndic_spool_max", cfg.syndic_spool_max as u64),
    ];
    if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(loaded.invalid(key, "must be greater than 0"));
    }
    if cfg.syndic_recon_max < cfg.syndic_recon_default {
        return Err(loaded.invalid(
            "syndic_recon_max",
            format!(
                "must be at least syndic_recon_default ({})",
                cfg.syndic_recon_default
            ),
        ));
    }
    if cfg.max_return_bytes > cfg.max_frame_bytes {
        return Err(loaded.invalid(
            "max_return_bytes",
            format!(
                "must not exceed max_frame_bytes ({}): a return travels in one frame",
                cfg.max_frame_bytes
            ),
        ));
    }
    if let Some(b) = cfg
        .fileserver_backend
        .iter()
        .find(|b| b.as_str() != "roots")
    {
        return Err(loaded.invalid(
            "fileserver_backend",
            format!("backend {b:?} is not available (only 'roots' is)"),
        ));
    }
    for re in &cfg.file_ignore_regex {
        if let Err(e) = regex::Regex::new(re) {
            return Err(loaded.invalid("file_ignore_regex", format!("{re:?}: {e}")));
        }
    }
    if cfg.file_buffer_size == 0 || cfg.file_buffer_size + 4096 > cfg.max_frame_bytes {
        return Err(loaded.invalid(
            "file_buffer_size",
            format!(
                "must be greater than 0 and at least 4 KiB below max_frame_bytes ({}): a chunk travels in one frame",
                cfg.max_frame_bytes
            ),
        ));
    }
    if !["smart", "recurse", "overwrite", "none"]
        .contains(&cfg.pillar_source_merging_strategy.as_str())
    {
        return Err(loaded.invalid(
            "pillar_source_merging_strategy",
            "must be one of smart, recurse, overwrite, none",
        ));
    }
    if cfg.pub_hwm < 0 {
        return Err(loaded.invalid("pub_hwm", "must not be negative (0 = unlimited)"));
    }
    if cfg.zmq_backlog <= 0 {
        return Err(loaded.invalid("zmq_backlog", "must be greater than 0"));
    }
    if let Some((name, _)) = cfg.nodegroups.iter().find(|(_, t)| t.trim().is_empty()) {
        return Err(loaded.invalid("nodegroups", format!("group '{name}' has an empty target")));
    }
    if let Some(f) = &cfg.syndic_finger {
        cfg.syndic_finger = Some(check_finger(f).map_err(|m| loaded.invalid("syndic_finger", m))?);
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
    cfg.autosign_file = cfg.autosign_file.map(|p| under_root(&root, &p));
    cfg.syndic_pki_dir = Some(match cfg.syndic_pki_dir {
        Some(p) => under_root(&root, &p),
        None => cfg.pki_dir.join("syndic"),
    });
    cfg.root_dir = root;
    let mut notes = loaded.notes.clone();
    for key in [
        "pki_dir",
        "cachedir",
        "sock_dir",
        "log_file",
        "syndic_pki_dir",
        "syndic_master",
        "root_dir",
    ] {
        notes.origins.insert(key.to_string(), loaded.origin(key));
    }
    cfg.load_notes = notes;
    Ok(cfg)
}

/// A key fingerprint as `salt-key -F` prints it: 32 bytes of SHA-256 as
/// colon-separated hex pairs (either case). Returns it lowercased.
fn check_finger(f: &str) -> Result<String, String> {
    let f = f.trim().to_ascii_lowercase();
    let pairs: Vec<&str> = f.split(':').collect();
    if pairs.len() == 32
        && pairs
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Ok(f)
    } else {
        Err("expected a SHA-256 key fingerprint as 'salt-key -F master' prints it (32 colon-separated hex pairs)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(
        dir: &Path,
        vars: &[(&str, &str)],
        overrides: &[(&str, serde_json::Value)],
    ) -> Result<MasterConfig, ConfigError> {
        load_master_with_env(dir, &env(vars), overrides)
    }

    #[test]
    fn syndic_finger_is_checked_and_lowercased() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = ["AB"; 32].join(":");
        fs::write(
            dir.path().join("master"),
            format!("syndic_finger: '{good}'\n"),
        )
        .expect("write");
        let cfg = load(dir.path(), &[], &[]).expect("load");
        assert_eq!(cfg.syndic_finger, Some(["ab"; 32].join(":")));
        for bad in [
            "abc",
            &["ab"; 31].join(":"),
            &["zz"; 32].join(":"),
            &["abc"; 32].join(":"),
        ] {
            fs::write(
                dir.path().join("master"),
                format!("syndic_finger: '{bad}'\n"),
            )
            .expect("write");
            let err = load(dir.path(), &[], &[]).expect_err(bad).to_string();
            assert!(err.contains("syndic_finger"), "{err}");
        }
        fs::write(dir.path().join("master"), "id: x\n").expect("write");
        assert_eq!(
            load(dir.path(), &[], &[]).expect("load").syndic_finger,
            None
        );
    }

    #[test]
    fn defaults_without_any_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = load(dir.path(), &[], &[]).expect("load");
        assert!(cfg.id.ends_with("_master"));
        assert_eq!(cfg.interface, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!((cfg.publish_port, cfg.ret_port), (4505, 4506));
        assert!(!cfg.auto_accept);
        assert_eq!(cfg.pki_dir, PathBuf::from("/etc/salt/pki/master"));
        assert_eq!(cfg.cachedir, PathBuf::from("/var/cache/salt/master"));
        assert_eq!(cfg.log_file, PathBuf::from("/var/log/salt/master"));
        assert_eq!(cfg.log_level, "warning");
        assert_eq!(cfg.logfile_level(), "warning");
        assert_eq!(cfg.keep_jobs, 24);
        assert_eq!(cfg.timeout, 5);
        assert_eq!(cfg.max_frame_bytes, 16 * 1024 * 1024);
        assert!(!cfg.is_syndic());
        assert_eq!(
            cfg.syndic_pki_dir,
            Some(PathBuf::from("/etc/salt/pki/master/syndic"))
        );
        assert!(cfg.load_notes.unknown.is_empty());
    }

    #[test]
    fn main_file_then_sorted_includes() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join("master"),
            "ret_port: 5506\npublish_port: 5505\nlog_level: info\ninterface: 127.0.0.1\n",
        )
        .expect("write");
        let d = dir.path().join("master.d");
        fs::create_dir(&d).expect("mkdir");
        fs::write(d.join("20-b.conf"), "ret_port: 7000\n").expect("write");
        fs::write(d.join("10-a.conf"), "ret_port: 6000\nkeep_jobs: 0\n").expect("write");
        fs::write(d.join("99-z.conf.bak"), "ret_port: 9999\n").expect("write");
        fs::write(d.join("notes.txt"), "this: is not yaml: at all: [\n").expect("write");
        let cfg = load(dir.path(), &[], &[]).expect("load");
        assert_eq!(cfg.publish_port, 5505);
        assert_eq!(cfg.ret_port, 7000, "20-b.conf is read after 10-a.conf");
        assert_eq!(cfg.keep_jobs, 0);
        assert_eq!(cfg.log_level, "info");
        assert_eq!(cfg.interface, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(cfg.load_notes.unknown.is_empty());
    }

    #[test]
    fn empty_file_is_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("master"), "# nothing set yet\n").expect("write");
        let cfg = load(dir.path(), &[], &[]).expect("load");
        assert_eq!(cfg.ret_port, 4506);
    }

    #[test]
    fn environment_overrides_files_and_cli_overrides_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join("master"),
            "ret_port: 5506\nlog_level: info\n",
        )
        .expect("write");
        let vars = [
            ("SALT_RET_PORT", "6506"),
            ("SALT_LOG_LEVEL", "debug"),
            ("SALT_MASTER_CONFIG", "/elsewhere"),
            ("SALT_NOT_AN_OPTION", "x"),
            ("RET_PORT", "1"),
            ("SALT_AUTO_ACCEPT", "true"),
            ("SALT_ID", "12345"),
            ("SALT_SYNDIC_MASTER", "[top1, top2]"),
        ];
        let cfg = load(dir.path(), &vars, &[]).expect("load");
        assert_eq!(cfg.ret_port, 6506);
        assert_eq!(cfg.log_level, "debug");
        assert!(cfg.auto_accept);
        assert_eq!(cfg.id, "12345", "string options stay strings");
        assert_eq!(cfg.syndic_master, vec!["top1", "top2"]);
        assert!(
            cfg.load_notes.unknown.is_empty(),
            "stray SALT_ vars are ignored"
        );

        let cfg = load(
            dir.path(),
            &vars,
            &[("ret_port", json!(7506)), ("log_level", json!("error"))],
        )
        .expect("load");
        assert_eq!(cfg.ret_port, 7506);
        assert_eq!(cfg.log_level, "error");
    }

    #[test]
    fn unknown_keys_are_reported_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(
            dir.path().join("master"),
            "ext_pillar: [{cmd_yaml: x}]\nret_port: 4506\n",
        )
        .expect("write");
        let d = dir.path().join("master.d");
        fs::create_dir(&d).expect("mkdir");
        fs::write(d.join("a.conf"), "ext_pillar: []\nworker_threads: 5\n").expect("write");
        let cfg = load(dir.path(), &[], &[("bogus_flag", json!(1))]).expect("load");
        assert_eq!(
            cfg.load_notes.unknown_keys(),
            vec!["ext_pillar", "worker_threads", "bogus_flag"]
        );
    }

    /// The daemon logs these notes once logging is up; the test checks the
    /// record (a scoped tracing subscriber races with other test threads
    /// over tracing's per-callsite interest cache and loses lines).
    #[test]
    fn unknown_keys_and_skipped_includes_are_recorded_with_their_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("master.d");
        fs::create_dir(&d).expect("mkdir");
        let conf = d.join("extra.conf");
        fs::write(&conf, "worker_threads: 5\n").expect("write");
        fs::write(d.join("README"), "not read\n").expect("write");
        let loaded = load::load(
            &MasterConfig::default(),
            dir.path(),
            "master",
            &[],
            &[("bogus_flag", json!(1))],
        )
        .expect("load");
        assert_eq!(
            loaded.notes.unknown_keys(),
            ["worker_threads", "bogus_flag"]
        );
        assert_eq!(
            loaded.notes.unknown,
            vec![
                ("worker_threads".to_string(), conf.display().to_string()),
                ("bogus_flag".to_string(), "command line".to_string()),
            ]
        );
        assert_eq!(loaded.notes.skipped_includes, vec![d.join("README")]);
    }

    #[test]
    fn type_errors_name_key_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("master");
        fs::write(&file, "ret_port: abc\n").expect("write");
        let err = load(dir.path(), &[], &[]).expect_err("must fail");
        assert_eq!(
            err.to_string(),
            format!(
                "invalid value for 'ret_port' in {}: expected u16, found \"abc\"",
                file.display()
            )
        );
        fs::write(&file, "publish_port: 70000\n").expect("write");
        let err = load(dir.path(), &[], &[])
            .expect_err("must fail")
            .to_string();
        assert!(
            err.contains("'publish_port'") && err.contains("70000"),
            "{err}"
        );
        fs::write(&file, "interface: 300.1.1.1\n").expect("write");
        let err = load(dir.path(), &[], &[])
            .expect_err("must fail")
            .to_string();
        assert!(
            err.starts_with("invalid value for 'interface' in "),
            "{err}"
        );
        assert!(err.contains(&file.display().to_string()), "{err}");
    }

    #[test]
    fn range_errors_name_key_and_origin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("master.d");
        fs::create_dir(&d).expect("mkdir");
        let inc = d.join("log.conf");
        fs::write(&inc, "log_level: loud\n").expect("write");
        let err = load(dir.path(), &[], &[])
            .expect_err("bad level")
            .to_string();
        assert!(
            err.starts_with(&format!(
                "invalid value for 'log_level' in {}: unknown log level 'loud'",
                inc.display()
            )),
            "{err}"
        );

        fs::write(&inc, "id: ''\n").expect("write");
        let err = load(dir.path(), &[], &[])
            .expect_err("empty id")
            .to_string();
        assert_eq!(
            err,
            format!(
                "invalid value for 'id' in {}: must not be empty",
                inc.display()
            )
        );

        fs::write(&inc, "syndic_master_port: 0\n").expect("write");
        let err = load(dir.path(), &[], &[]).expect_err("port 0").to_string();
        assert!(err.contains("'syndic_master_port'"), "{err}");

        fs::remove_file(&inc).expect("rm");
        let err = load(dir.path(), &[("SALT_RET_PORT", "4505")], &[])
            .expect_err("same ports")
            .to_string();
        assert_eq!(err, "invalid value for 'ret_port' in environment variable SALT_RET_PORT: must differ from publish_port (4505)");
        let err = load(dir.path(), &[("SALT_RET_PORT", "x")], &[])
            .expect_err("not a port")
            .to_string();
        assert_eq!(err, "invalid value for 'ret_port' in environment variable SALT_RET_PORT: expected u16, found \"x\"");
        let err = load(dir.path(), &[], &[("heartbeat_interval", json!(0))])
            .expect_err("zero")
            .to_string();
        assert_eq!(
            err,
            "invalid value for 'heartbeat_interval' in command line: must be greater than 0"
        );
    }

    #[test]
    fn unreadable_or_invalid_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("master"), "ret_port: [unclosed\n").expect("write");
        assert!(matches!(
            load(dir.path(), &[], &[]),
            Err(ConfigError::Parse { .. })
        ));
        fs::write(dir.path().join("master"), "- a list\n- not a mapping\n").expect("write");
        assert!(matches!(
            load(dir.path(), &[], &[]),
            Err(ConfigError::Parse { .. })
        ));
        fs::remove_file(dir.path().join("master")).expect("rm");
        fs::create_dir(dir.path().join("master")).expect("mkdir");
        assert!(matches!(
            load(dir.path(), &[], &[]),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn root_dir_prefixes_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        fs::write(
            dir.path().join("master"),
            format!(
                "root_dir: {}\ncachedir: cache\nsock_dir: {}/run\nautosign_file: /etc/salt/autosign.conf\n",
                root.display(),
                root.display()
            ),
        )
        .expect("write");
        let cfg = load(dir.path(), &[], &[]).expect("load");
        assert_eq!(cfg.root_dir, root);
        assert_eq!(cfg.pki_dir, root.join("etc/salt/pki/master"));
        assert_eq!(cfg.cachedir, root.join("cache"));
        assert_eq!(cfg.sock_dir, root.join("run"), "already under root_dir");
        assert_eq!(cfg.log_file, root.join("var/log/salt/master"));
        assert_eq!(cfg.autosign_file, Some(root.join("etc/salt/autosign.conf")));
        assert_eq!(
            cfg.syndic_pki_dir,
            Some(root.join("etc/salt/pki/master/syndic"))
        );
    }

    #[test]
    fn syndic_master_string_or_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("master");
        fs::write(&file, "syndic_master: top.example.com\n").expect("write");
        let cfg = load(dir.path(), &[], &[]).expect("load");
        assert_eq!(cfg.syndic_master, vec!["top.example.com"]);
        assert!(cfg.is_syndic());
        fs::write(&file, "syndic_master:\n  - top1\n  - top2\n").expect("write");
        let cfg = load(dir.path(), &[], &[]).expect("load");
        assert_eq!(cfg.syndic_master, vec!["top1", "top2"]);
        fs::write(&file, "syndic_master: ''\n").expect("write");
        assert!(!load(dir.path(), &[], &[]).expect("load").is_syndic());
        fs::write(&file, "syndic_master: {a: b}\n").expect("write");
        let err = load(dir.path(), &[], &[]).expect_err("mapping").to_string();
        assert!(
            err.contains("'syndic_master'") && err.contains("expected a string or a list"),
            "{err}"
        );
    }

    #[test]
    fn syndic_forward_all_is_a_boolean_off_by_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("master");
        assert!(!load(dir.path(), &[], &[]).expect("load").syndic_forward_all);
        fs::write(&file, "syndic_forward_all: True\n").expect("write");
        assert!(load(dir.path(), &[], &[]).expect("load").syndic_forward_all);
        fs::write(&file, "syndic_forward_all: sometimes\n").expect("write");
        let err = load(dir.path(), &[], &[]).expect_err("bool").to_string();
        assert!(
            err.contains("'syndic_forward_all'") && err.contains("expected a boolean"),
            "{err}"
        );
        let cfg = load(dir.path(), &[("SALT_SYNDIC_FORWARD_ALL", "true")], &[]).expect("env");
        assert!(cfg.syndic_forward_all);
        assert!(cfg.load_notes.origin("syndic_master") == "built-in defaults");
        fs::write(&file, "pki_dir: /srv/pki\n").expect("write");
        let cfg = load(dir.path(), &[], &[]).expect("load");
        assert_eq!(cfg.load_notes.origin("pki_dir"), file.display().to_string());
    }

    #[test]
    fn syndic_forward_events_is_a_glob_or_a_list_all_by_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("master");
        let cfg = load(dir.path(), &[], &[]).expect("load");
        assert_eq!(cfg.syndic_forward_events, ["*"]);
        fs::write(&file, "syndic_forward_events: myapp/*\n").expect("write");
        let cfg = load(dir.path(), &[], &[]).expect("load");
        assert_eq!(cfg.syndic_forward_events, ["myapp/*"]);
        fs::write(
            &file,
            "syndic_forward_events: [salt/beacon/*, 'salt/minion/*/start']\n",
        )
        .expect("write");
        let cfg = load(dir.path(), &[], &[]).expect("load");
        assert_eq!(
            cfg.syndic_forward_events,
            ["salt/beacon/*", "salt/minion/*/start"]
        );
        fs::write(&file, "syndic_forward_events: []\n").expect("write");
        assert!(load(dir.path(), &[], &[])
            .expect("load")
            .syndic_forward_events
            .is_empty());
    }

    #[test]
    fn nodegroups_string_and_list_forms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("master");
        fs::write(
            &file,
            "nodegroups:\n  web: 'G@role:web and E@web\\d+'\n  db: [db1, db2, db3]\n  mixed:\n    - 'G@foo:bar'\n    - or\n    - 'G@foo:baz'\n",
        )
        .expect("write");
        let cfg = load(dir.path(), &[], &[]).expect("load");
        assert_eq!(cfg.nodegroups["web"], "G@role:web and E@web\\d+");
        assert_eq!(cfg.nodegroups["db"], "L@db1,db2,db3");
        assert_eq!(cfg.nodegroups["mixed"], "G@foo:bar or G@foo:baz");
        fs::write(&file, "nodegroups:\n  - g1: 'L@a,b'\n  - g2: [c]\n").expect("write");
        let cfg = load(dir.path(), &[], &[]).expect("load");
        assert_eq!(cfg.nodegroups["g1"], "L@a,b");
        assert_eq!(cfg.nodegroups["g2"], "L@c");
    }

    #[test]
    fn overridden_log_level_is_normalised() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = load(
            dir.path(),
            &[],
            &[
                ("log_level", json!("DEBUG")),
                ("log_level_logfile", json!("Info")),
            ],
        )
        .expect("load");
        assert_eq!(cfg.log_level, "debug");
        assert_eq!(cfg.logfile_level(), "info");
    }

    #[test]
    fn metrics_bind_is_off_by_default_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = load(dir.path(), &[], &[]).expect("defaults");
        assert_eq!(cfg.metrics_bind, None);
        fs::write(dir.path().join("master"), "metrics_bind: 127.0.0.1:9105\n").expect("write");
        let cfg = load(dir.path(), &[], &[]).expect("load");
        assert_eq!(cfg.metrics_bind.as_deref(), Some("127.0.0.1:9105"));
        let cfg = load(dir.path(), &[("SALT_METRICS_BIND", "[::1]:9200")], &[]).expect("env");
        assert_eq!(cfg.metrics_bind.as_deref(), Some("[::1]:9200"));
        fs::write(dir.path().join("master"), "metrics_bind: nowhere\n").expect("write");
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

    #[test]
    fn reactor_takes_salts_list_and_its_worker_options() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = load(dir.path(), &[], &[]).expect("defaults");
        assert!(cfg.reactor.is_empty());
        assert_eq!(cfg.reactor_worker_threads, 10);
        assert_eq!(cfg.reactor_worker_hwm, 10_000);
        assert!(!cfg.reactor_react_to_own_jobs);
        fs::write(
            dir.path().join("master"),
            "reactor:\n  - 'salt/beacon/*/load/':\n    - /srv/reactor/load.sls\n    - salt://r/two.sls\n  - 'myapp/*': /srv/reactor/app.sls\nreactor_worker_threads: 2\n",
        )
        .expect("write");
        let cfg = load(dir.path(), &[], &[]).expect("reactor");
        assert_eq!(cfg.reactor.len(), 2);
        assert_eq!(
            cfg.reactor[0]["salt/beacon/*/load/"],
            ["/srv/reactor/load.sls", "salt://r/two.sls"]
        );
        assert_eq!(cfg.reactor[1]["myapp/*"], ["/srv/reactor/app.sls"]);
        assert_eq!(cfg.reactor_worker_threads, 2);
        fs::write(dir.path().join("master"), "reactor: [3]\n").expect("write");
        let err = load(dir.path(), &[], &[]).expect_err("bad").to_string();
        assert!(err.contains("reactor"), "{err}");
        fs::write(dir.path().join("master"), "reactor_worker_threads: 0\n").expect("write");
        let err = load(dir.path(), &[], &[]).expect_err("zero").to_string();
        assert!(err.contains("reactor_worker_threads"), "{err}");
    }
}
