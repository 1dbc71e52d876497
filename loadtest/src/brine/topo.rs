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
}

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
                let dir = write("top", &addr).write(&root.path().join("top"), "master")?;
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
                let dir = write(&id, &addr)
                    .set("syndic_master", &parent_addr)
                    .set("syndic_master_port", parent_port)
                    .write(&root.path().join(&id), "master")?;
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
            top,
            sampler: None,
            sampling_since: None,
            _net: net,
            root,
        })
    }

    /// The last-tier syndic of every chain (where minions attach).
    pub fn leaves(&self) -> Vec<&Master> {
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
        };
        let e = Topo::start(&o).err().unwrap().to_string();
        assert!(
            e.contains("salt-master not found") && e.contains("cargo build"),
            "{e}"
        );
    }
}
