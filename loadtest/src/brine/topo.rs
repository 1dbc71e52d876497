//! A Brine topology for the load test: a top `salt-master` (or an attached
//! running one) and `syndics x tiers` `salt-syndic` processes started from
//! the workspace's own binaries. Each syndic is granted the syndic role by
//! its parent before it starts, with `salt-key` as an operator would
//! ([`brine_deploy::topology::seed_syndic`]; with `--attach` that writes
//! into the attached master's `pki_dir`).
//!
//! Each master gets its own loopback address in a block `127.A.B.0/24`
//! this process holds ([`Net::fresh`], so parallel runs and tests do not
//! collide) with the publish and return ports, and its config and
//! `root_dir` under one temporary directory; configs, spawning, readiness
//! and stopping go through [`brine_deploy::launch`]. Memory of every
//! started master is sampled once a second by a background thread.
//! With a file size ([`TopoOptions::file_size`]) the top's `file_roots`
//! is `{base: [<temp dir>/top/file_roots/base]}` holding [`FILE_NAME`]
//! with random content, and every syndic's `file_roots` is empty, so a
//! syndic serves the top's file from its cache.
//! Invariant: every process is owned by a `Master` that stops it by PID
//! (SIGTERM, then SIGKILL) when dropped, so whatever way a run ends, no
//! daemon outlives it.

use brine_common::config;
use brine_deploy::launch::{self, ConfigFile, LaunchError, Net, Stop, DAEMON_ENV};
use brine_deploy::memory::try_rss_kib;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors starting a topology.
#[derive(Debug, thiserror::Error)]
pub enum TopoError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("config: {0}")]
    Config(#[from] brine_common::config::ConfigError),
    #[error("cannot make {id} a syndic of its parent with salt-key: {why}")]
    Seed { id: String, why: String },
    #[error("cannot write the file server's file {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The file a run with a file size puts in the top's `file_roots`.
pub const FILE_NAME: &str = "big.bin";

pub use brine_deploy::launch::bin_dir;

/// How long a master gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

/// How to build the topology.
#[derive(Debug, Clone)]
pub struct TopoOptions {
    pub syndics: u32,
    pub tiers: u32,
    pub heartbeat_secs: u64,
    pub forward_ms: u64,
    pub pub_port: u16,
    pub ret_port: u16,
    /// Config dir of a running top master to attach to instead of starting one.
    pub attach: Option<PathBuf>,
    /// Address of the attached top (when its config binds 0.0.0.0).
    pub attach_addr: String,
    pub bin_dir: PathBuf,
    pub ready_secs: u64,
    /// Bytes of [`FILE_NAME`] in the top's `file_roots` (`None`: no
    /// file, and every master keeps its default `file_roots`). Not with
    /// `attach` (`RunConfig::validate` refuses it; ignored here).
    pub file_size: Option<u64>,
}

/// The file the top master serves (`salt://big.bin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedFile {
    /// Where it is on disk, under the top's `file_roots`.
    pub path: PathBuf,
    pub size: u64,
}

impl ServedFile {
    /// Its `salt://` URL.
    pub fn url(&self) -> String {
        format!("salt://{FILE_NAME}")
    }
}

/// Writes `size` random bytes to `path` (1 MiB at a time).
pub fn write_random_file(path: &Path, size: u64) -> Result<(), TopoError> {
    use rand::RngCore;
    use std::io::Write;
    let err = |source| TopoError::File {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let file = std::fs::File::create(path).map_err(err)?;
    let mut out = std::io::BufWriter::new(file);
    let mut buf = vec![0u8; 1 << 20];
    let mut rng = rand::thread_rng();
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        out.write_all(&buf[..n]).map_err(err)?;
        left -= n as u64;
    }
    out.into_inner()
        .map_err(|e| err(e.into_error()))?
        .sync_all()
        .map_err(err)
}

/// One master process of the topology.
pub struct Master {
    pub id: String,
    pub addr: String,
    pub config_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Master {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails if the process already exited.
    fn check_alive(&mut self) -> Result<(), TopoError> {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(LaunchError::Exited {
                    what: self.id.clone(),
                    status: status.to_string(),
                    log: launch::log_tail(&self.log),
                }
                .into());
            }
        }
        Ok(())
    }

    /// SIGTERM, up to 3 s grace, then SIGKILL; always reaps.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            launch::stop(&mut child, Stop::Term(GRACE));
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.stop();
    }
}

/// RSS samples (KiB, one per second) per master id.
pub type RssSamples = BTreeMap<String, Vec<u64>>;

/// A running topology; dropping it stops every process it started.
pub struct Topo {
    /// Syndics, tier-major within each chain: chain c tier t is
    /// `syndics[c * tiers + t]`.
    pub syndics: Vec<Master>,
    /// The top master (its process is `None` when attached).
    pub top: Master,
    pub tiers: u32,
    pub ret_port: u16,
    /// The top's client channel.
    pub sock_dir: PathBuf,
    pub cachedir: PathBuf,
    /// The file the top serves (with a file size).
    pub file: Option<ServedFile>,
    sampler: Option<(Arc<AtomicBool>, std::thread::JoinHandle<RssSamples>)>,
    /// When RSS sampling began (sample `i` is taken about `i` s later).
    sampling_since: Option<Instant>,
    /// This topology's loopback block, held while it runs.
    _net: Net,
    /// Kept last so the directory outlives the processes using it.
    pub root: tempfile::TempDir,
}

impl Topo {
    /// Writes the configs, starts the masters and waits until each has
    /// opened its client channel.
    pub fn start(o: &TopoOptions) -> Result<Self, TopoError> {
        // Under `cargo run`, build the daemons beside us first (a no-op
        // outside cargo, or when they are up to date).
        if o.bin_dir == launch::bin_dir() {
            launch::ensure_built()?;
        }
        let bins: &[&str] = if o.attach.is_some() {
            &["salt-syndic", "salt-key"]
        } else {
            &["salt-master", "salt-syndic", "salt-key"]
        };
        launch::require_binaries(&o.bin_dir, bins)?;
        let count = o.syndics * o.tiers + 1;
        if count > 250 {
            return Err(LaunchError::TooMany(count).into());
        }
        let root = tempfile::Builder::new()
            .prefix("brine-loadtest-")
            .tempdir()
            .map_err(|source| LaunchError::Io {
                what: "temp dir".into(),
                source,
            })?;
        let net = Net::fresh()?;
        let pub_port = if o.pub_port == 0 { 4505 } else { o.pub_port };
        let ret_port = if o.ret_port == 0 { 4506 } else { o.ret_port };
        let write = |id: &str, addr: &str| -> ConfigFile {
            ConfigFile::new()
                .set("id", id)
                .set("interface", addr)
                .set("root_dir", root.path().join(id).join("root").display())
                .set("publish_port", pub_port)
                .set("ret_port", ret_port)
                .set("auto_accept", true)
                .set("order_masters", true)
                .set("heartbeat_interval", o.heartbeat_secs)
                .set("syndic_forward_interval_ms", o.forward_ms)
                .set("log_level", "warning")
                .set("zmq_backlog", 4096)
                .set("timeout", 5)
        };
        let spawn = |bin: &str, id: &str, addr: &str, dir: &Path| -> Result<Master, TopoError> {
            let log = root.path().join(format!("{id}.log"));
            let child = launch::spawn_daemon(&o.bin_dir.join(bin), dir, &log, &DAEMON_ENV)?;
            Ok(Master {
                id: id.to_string(),
                addr: addr.to_string(),
                config_dir: dir.to_path_buf(),
                log,
                child: Some(child),
            })
        };

        let mut file = None;
        let mut top = match &o.attach {
            Some(dir) => {
                let cfg = config::load_master(dir, &[])?;
                let addr = if cfg.interface.is_unspecified() {
                    o.attach_addr.clone()
                } else {
                    cfg.interface.to_string()
                };
                Master {
                    id: cfg.id.clone(),
                    addr,
                    config_dir: dir.clone(),
                    log: cfg.log_file.clone(),
                    child: None,
                }
            }
            None => {
                let addr = net.host(1)?;
                let mut cfg = write("top", &addr);
                if let Some(size) = o.file_size {
                    let base = root.path().join("top").join("file_roots").join("base");
                    let path = base.join(FILE_NAME);
                    write_random_file(&path, size)?;
                    let roots = serde_json::json!({ "base": [base] });
                    cfg = cfg.set("file_roots", roots);
                    file = Some(ServedFile { path, size });
                }
                let dir = cfg.write(&root.path().join("top"), "master")?;
                spawn("salt-master", "top", &addr, &dir)?
            }
        };
        let top_cfg = config::load_master(&top.config_dir, &[])?;
        let up_port = if o.attach.is_some() {
            top_cfg.ret_port
        } else {
            ret_port
        };
        let mut syndics = Vec::new();
        let mut host = 2u32;
        for c in 0..o.syndics {
            let (mut parent_addr, mut parent_port) = (top.addr.clone(), up_port);
            let mut parent_dir = top.config_dir.clone();
            for t in 0..o.tiers {
                let id = if o.tiers == 1 {
                    format!("syndic{}", c + 1)
                } else {
                    format!("syndic{}-t{}", c + 1, t + 1)
                };
                let addr = net.host(host)?;
                host += 1;
                let mut cfg = write(&id, &addr)
                    .set("syndic_master", &parent_addr)
                    .set("syndic_master_port", parent_port);
                if o.file_size.is_some() {
                    // None of its own (not even Salt's default /srv/salt):
                    // it serves what the master above has.
                    cfg = cfg.set("file_roots", "{}");
                }
                let dir = cfg.write(&root.path().join(&id), "master")?;
                // The parent grants the role, as an operator would.
                brine_deploy::topology::seed_syndic(&o.bin_dir, &id, &dir, &parent_dir).map_err(
                    |e| TopoError::Seed {
                        id: id.clone(),
                        why: format!("{e:#}"),
                    },
                )?;
                let syndic = spawn("salt-syndic", &id, &addr, &dir)?;
                parent_dir = dir;
                syndics.push(syndic);
                parent_addr = addr;
                parent_port = ret_port;
            }
        }
        // Ready: the client token and socket exist (written after binding).
        let wait = Duration::from_secs(o.ready_secs);
        for m in std::iter::once(&mut top).chain(syndics.iter_mut()) {
            let cfg = config::load_master(&m.config_dir, &[])?;
            let token = cfg.cachedir.join(brine_common::proto::client::TOKEN_FILE);
            let sock = cfg.sock_dir.join(brine_common::proto::client::SOCKET_NAME);
            launch::wait_ready(&m.id, m.child.as_mut(), &m.log, wait, || {
                token.exists() && sock.exists()
            })?;
        }
        Ok(Topo {
            syndics,
            tiers: o.tiers,
            ret_port,
            sock_dir: top_cfg.sock_dir.clone(),
            cachedir: top_cfg.cachedir.clone(),
            file,
            top,
            sampler: None,
            sampling_since: None,
            _net: net,
            root,
        })
    }

    /// Client channels (id, `sock_dir`, `cachedir`) of every syndic, for
    /// `salt-run`-style calls on each; a syndic whose config does not load
    /// is left out.
    pub fn syndic_clients(&self) -> Vec<(String, PathBuf, PathBuf)> {
        self.syndics
            .iter()
            .filter_map(|m| {
                let cfg = config::load_master(&m.config_dir, &[]).ok()?;
                Some((m.id.clone(), cfg.sock_dir, cfg.cachedir))
            })
            .collect()
    }

    /// The last-tier syndic of every chain (where minions attach); the
    /// top itself when there are no syndics (`--syndics 0`).
    pub fn leaves(&self) -> Vec<&Master> {
        if self.syndics.is_empty() {
            return vec![&self.top];
        }
        let t = self.tiers.max(1) as usize;
        self.syndics.iter().skip(t - 1).step_by(t).collect()
    }

    /// Fails if a started master has exited.
    pub fn check_alive(&mut self) -> Result<(), TopoError> {
        self.top.check_alive()?;
        for s in &mut self.syndics {
            s.check_alive()?;
        }
        Ok(())
    }

    /// Seconds from the start of RSS sampling to `at` (0 before it).
    pub fn sampling_secs(&self, at: Instant) -> f64 {
        self.sampling_since
            .map_or(0.0, |t| at.saturating_duration_since(t).as_secs_f64())
    }

    /// Starts sampling VmRSS of every started master once a second.
    pub fn start_sampling(&mut self) {
        self.sampling_since = Some(Instant::now());
        let pids: Vec<(String, u32)> = std::iter::once(&self.top)
            .chain(self.syndics.iter())
            .filter_map(|m| m.pid().map(|p| (m.id.clone(), p)))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out = RssSamples::new();
            // One day of samples at most.
            for _ in 0..86_400 {
                for (id, pid) in &pids {
                    if let Ok(kib) = try_rss_kib(*pid) {
                        out.entry(id.clone()).or_default().push(kib);
                    }
                }
                // Wake often so stopping is quick; sample once a second.
                for _ in 0..20 {
                    if flag.load(Ordering::SeqCst) {
                        return out;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            out
        });
        self.sampler = Some((stop, handle));
    }

    /// Stops sampling and returns the samples (empty if never started).
    pub fn stop_sampling(&mut self) -> RssSamples {
        match self.sampler.take() {
            Some((stop, h)) => {
                stop.store(true, Ordering::SeqCst);
                h.join().unwrap_or_default()
            }
            None => RssSamples::new(),
        }
    }

    /// Stops syndics (deepest first), then the top.
    pub fn stop(&mut self) {
        let _ = self.stop_sampling();
        for s in self.syndics.iter_mut().rev() {
            s.stop();
        }
        self.top.stop();
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let o = TopoOptions {
            syndics: 1,
            tiers: 1,
            heartbeat_secs: 5,
            forward_ms: 20,
            pub_port: 0,
            ret_port: 0,
            attach: None,
            attach_addr: "127.0.0.1".into(),
            bin_dir: dir.path().to_path_buf(),
            ready_secs: 1,
            file_size: None,
        };
        let e = Topo::start(&o).err().unwrap().to_string();
        assert!(
            e.contains("salt-master not found") && e.contains("cargo build"),
            "{e}"
        );
    }

    #[test]
    fn the_served_file_has_its_size_and_random_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roots/base").join(FILE_NAME);
        let size = (3 << 20) + 5;
        write_random_file(&path, size).unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len() as u64, size);
        // Random: no 4 KiB block is all one byte value.
        assert!(data.chunks(4096).all(|c| c.iter().any(|b| *b != c[0])));
        write_random_file(&path, 0).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        let f = ServedFile { path, size };
        assert_eq!(f.url(), "salt://big.bin");
        // A path that cannot be created names itself.
        let blocked = dir.path().join("roots/base/big.bin/inner");
        let e = write_random_file(&blocked, 1).unwrap_err().to_string();
        assert!(e.contains("inner"), "{e}");
    }
}
