//! A whole Brine topology on loopback: top master, syndics (any depth) and
//! minions as real processes, each master on its own `127.x.y.z` address
//! with the standard ports 4505/4506, everything under one root directory.
//!
//! Used by the end-to-end tests, the demo and `fleet-bench` (the load test
//! has its own topology of masters only, on the same [`launch`]
//! pieces, and borrows [`seed_syndic`]). Every process is started from the
//! workspace's own binaries through [`launch`] and stopped by
//! PID when the [`Topology`] is dropped (SIGTERM, then SIGKILL after a grace
//! period); the topology holds its loopback block ([`Net`]) until then.
//!
//! Each syndic is made a trusted syndic of its parent before it starts, the
//! way an operator would with `salt-key` ([`seed_syndic`]): its key pair is
//! generated ahead, its public key pre-accepted on the parent, and the
//! parent grants it the syndic role (`salt-key --grant-syndic`).

use crate::launch::{self, ConfigFile, Net, Stop, DAEMON_ENV};
use anyhow::{bail, Context, Result};
use brine_common::sync::lock;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub use crate::launch::{bin_dir, ensure_built};

/// How long a stopped daemon gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// One topology at a time per process: tests in one binary run in parallel
/// threads, and a 2-core machine is better served by running them in turn.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A master (top or syndic) of the topology.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub addr: String,
    pub config_dir: PathBuf,
    /// The syndic's upstream master id (None for the top).
    pub parent: Option<String>,
}

/// A minion of the topology.
#[derive(Debug, Clone)]
pub struct MinionNode {
    pub id: String,
    pub config_dir: PathBuf,
    /// The master it attaches to.
    pub master: String,
    pub grains: serde_json::Value,
}

/// How to build a topology.
#[derive(Debug, Clone)]
pub struct Builder {
    syndics: usize,
    tiers: usize,
    direct_minions: usize,
    minions_per_syndic: usize,
    auto_accept: bool,
    master_extra: Vec<String>,
    top_extra: Vec<String>,
    minion_extra: Vec<String>,
    grains: BTreeMap<String, serde_json::Value>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            syndics: 0,
            tiers: 1,
            direct_minions: 0,
            minions_per_syndic: 0,
            auto_accept: true,
            master_extra: vec![],
            top_extra: vec![],
            minion_extra: vec![],
            grains: BTreeMap::new(),
        }
    }
}

impl Builder {
    /// Syndics directly under the top master.
    pub fn syndics(mut self, n: usize) -> Self {
        self.syndics = n;
        self
    }
    /// Depth of each syndic chain (1 = top → syndic → minions).
    pub fn tiers(mut self, n: usize) -> Self {
        self.tiers = n.max(1);
        self
    }
    pub fn direct_minions(mut self, n: usize) -> Self {
        self.direct_minions = n;
        self
    }
    pub fn minions_per_syndic(mut self, n: usize) -> Self {
        self.minions_per_syndic = n;
        self
    }
    /// Accept every key automatically (default true); false leaves keys
    /// pending for `salt-key`.
    pub fn auto_accept(mut self, yes: bool) -> Self {
        self.auto_accept = yes;
        self
    }
    /// Extra YAML lines for every master config.
    pub fn master_config(mut self, line: &str) -> Self {
        self.master_extra.push(line.to_string());
        self
    }
    /// Extra YAML lines for the top master's config only (after the
    /// lines for every master).
    pub fn top_config(mut self, line: &str) -> Self {
        self.top_extra.push(line.to_string());
        self
    }
    /// Extra YAML lines for every minion config.
    pub fn minion_config(mut self, line: &str) -> Self {
        self.minion_extra.push(line.to_string());
        self
    }
    /// Static grains for one minion id.
    pub fn grains(mut self, id: &str, grains: serde_json::Value) -> Self {
        self.grains.insert(id.to_string(), grains);
        self
    }

    /// Write every config and start every process; returns once the top
    /// master sees every minion (or fails after `wait`).
    pub fn start(self, wait: Duration) -> Result<Topology> {
        ensure_built()?;
        let guard = lock(&ONE_AT_A_TIME);
        let dir = tempfile::Builder::new().prefix("brine-topo-").tempdir()?;
        let net = Net::fresh()?;
        let mut topo = Topology {
            root: dir,
            bin: bin_dir(),
            procs: BTreeMap::new(),
            top: Node {
                id: "top".into(),
                addr: net.host(1)?,
                config_dir: PathBuf::new(),
                parent: None,
            },
            syndics: vec![],
            minions: vec![],
            builder: self.clone(),
            net,
            _turn: guard,
        };
        let top = topo.top.clone();
        topo.top.config_dir = topo.write_master(&top)?;
        let mut host = 2u32;
        let mut leaves: Vec<String> = vec![];
        for s in 0..self.syndics {
            let mut parent = topo.top.id.clone();
            for t in 0..self.tiers {
                let id = if self.tiers == 1 {
                    format!("syndic{}", s + 1)
                } else {
                    format!("syndic{}-t{}", s + 1, t + 1)
                };
                let mut node = Node {
                    id: id.clone(),
                    addr: topo.net.host(host)?,
                    config_dir: PathBuf::new(),
                    parent: Some(parent.clone()),
                };
                host += 1;
                node.config_dir = topo.write_master(&node)?;
                topo.syndics.push(node);
                parent = id;
            }
            leaves.push(parent);
        }
        for i in 0..self.direct_minions {
            let id = format!("minion{}", i + 1);
            topo.add_minion_config(&id, "top")?;
        }
        for (s, leaf) in leaves.iter().enumerate() {
            for i in 0..self.minions_per_syndic {
                let id = format!("s{}m{}", s + 1, i + 1);
                topo.add_minion_config(&id, leaf)?;
            }
        }
        for s in topo.syndics.clone() {
            let parent = s
                .parent
                .as_deref()
                .and_then(|p| topo.node(p))
                .context("parent node")?;
            seed_syndic(&topo.bin, &s.id, &s.config_dir, &parent.config_dir)?;
        }
        topo.spawn_master("top", "salt-master")?;
        for s in topo.syndics.clone() {
            topo.spawn_master(&s.id, "salt-syndic")?;
        }
        for m in topo.minions.clone() {
            topo.spawn_minion(&m.id)?;
        }
        if self.auto_accept {
            let expect: Vec<String> = topo.minions.iter().map(|m| m.id.clone()).collect();
            topo.wait_up(&expect, wait)?;
        }
        Ok(topo)
    }
}

/// A running topology. Dropping it stops every process it started.
pub struct Topology {
    pub root: tempfile::TempDir,
    pub bin: PathBuf,
    procs: BTreeMap<String, Child>,
    pub top: Node,
    pub syndics: Vec<Node>,
    pub minions: Vec<MinionNode>,
    builder: Builder,
    /// This topology's loopback block, held until it is dropped.
    net: Net,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Topology {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The top master or the syndic named `id`.
    pub fn node(&self, id: &str) -> Option<&Node> {
        if self.top.id == id {
            Some(&self.top)
        } else {
            self.syndics.iter().find(|s| s.id == id)
        }
    }

    fn write_master(&self, node: &Node) -> Result<PathBuf> {
        let dir = self.root.path().join(&node.id);
        let mut cfg = ConfigFile::new()
            .set("id", &node.id)
            .set("interface", &node.addr)
            .set("root_dir", dir.join("root").display())
            .set("auto_accept", self.builder.auto_accept)
            .set("order_masters", true)
            .set("log_level", "info")
            .set("heartbeat_interval", 1)
            .set("timeout", 5)
            .set("syndic_forward_interval_ms", 20);
        if let Some(p) = &node.parent {
            let parent = self.node(p).context("parent node")?;
            cfg = cfg
                .set("syndic_master", &parent.addr)
                .set("syndic_master_port", 4506);
        }
        for l in &self.builder.master_extra {
            cfg = cfg.raw(l);
        }
        if node.parent.is_none() {
            for l in &self.builder.top_extra {
                cfg = cfg.raw(l);
            }
        }
        Ok(cfg.write(&dir, "master")?)
    }

    fn add_minion_config(&mut self, id: &str, master: &str) -> Result<()> {
        let addr = self.node(master).context("master node")?.addr.clone();
        let dir = self.root.path().join(format!("m-{id}"));
        let grains = self
            .builder
            .grains
            .get(id)
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        ConfigFile::new()
            .set("id", id)
            .set("master", &addr)
            .set("master_port", 4506)
            .set("root_dir", dir.join("root").display())
            .set("log_level", "info")
            .set("acceptance_wait_time", 1)
            .set("recon_default", 200)
            .set("recon_max", 2000)
            .set("random_reauth_delay", 1)
            .set("grains", serde_json::to_string(&grains)?)
            .raw(&self.builder.minion_extra.join("\n"))
            .write(&dir, "minion")?;
        self.minions.push(MinionNode {
            id: id.to_string(),
            config_dir: dir,
            master: master.to_string(),
            grains,
        });
        Ok(())
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.root.path().join(format!("{id}.log"))
    }

    /// Start (or restart) a master or syndic process by id.
    pub fn spawn_master(&mut self, id: &str, bin: &str) -> Result<()> {
        let node = self.node(id).context("no such master")?.clone();
        let child = launch::spawn_daemon(
            &self.bin.join(bin),
            &node.config_dir,
            &self.log_path(id),
            &DAEMON_ENV,
        )?;
        self.procs.insert(id.to_string(), child);
        Ok(())
    }

    /// Start (or restart) the syndic `id`.
    pub fn start_syndic(&mut self, id: &str) -> Result<()> {
        self.spawn_master(id, "salt-syndic")
    }

    /// Start (or restart) the minion `id`.
    pub fn spawn_minion(&mut self, id: &str) -> Result<()> {
        let m = self
            .minions
            .iter()
            .find(|m| m.id == id)
            .context("no such minion")?
            .clone();
        let child = launch::spawn_daemon(
            &self.bin.join("salt-minion"),
            &m.config_dir,
            &self.log_path(id),
            &[],
        )?;
        self.procs.insert(id.to_string(), child);
        Ok(())
    }

    /// Configure and start one more minion `id` behind master `master`
    /// (the top or a syndic), after the topology started.
    pub fn add_minion(&mut self, id: &str, master: &str) -> Result<()> {
        self.add_minion_config(id, master)?;
        self.spawn_minion(id)
    }

    /// Freeze (SIGSTOP) or resume (SIGCONT) a process of this topology: a
    /// host that stops answering without closing its connections.
    pub fn freeze(&self, id: &str, frozen: bool) -> Result<()> {
        let pid = self.pid(id).context("not running")?;
        let sig = if frozen {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        kill(Pid::from_raw(pid as i32), sig)?;
        Ok(())
    }

    /// `salt ARGS --async` on master `on`: the jid it printed.
    pub fn salt_async(&self, on: &str, args: &[&str]) -> Result<String> {
        let mut all = args.to_vec();
        all.push("--async");
        let out = self.cli(on, "salt", &all)?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.trim()
            .rsplit(' ')
            .next()
            .filter(|j| brine_common::jid::is_jid(j))
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "no jid in {text:?} ({})",
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })
    }

    /// The log of process `id`, without colour codes.
    pub fn plain_log(&self, id: &str) -> String {
        crate::hostile::strip_ansi(&self.log(id))
    }

    /// PID of a process started by this topology.
    pub fn pid(&self, id: &str) -> Option<u32> {
        self.procs.get(id).map(|c| c.id())
    }

    /// Stop one process: SIGTERM (or SIGKILL when `hard`), then reap it.
    pub fn stop(&mut self, id: &str, hard: bool) -> Result<()> {
        let Some(mut child) = self.procs.remove(id) else {
            bail!("{id} is not running");
        };
        launch::stop(
            &mut child,
            if hard { Stop::Kill } else { Stop::Term(GRACE) },
        );
        Ok(())
    }

    /// Run a CLI (`salt`, `salt-key`, `salt-run`) against master `on`.
    pub fn cli(&self, on: &str, bin: &str, args: &[&str]) -> Result<Output> {
        let node = self.node(on).context("no such master")?;
        let out = Command::new(self.bin.join(bin))
            .arg("-c")
            .arg(&node.config_dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {bin}"))?;
        Ok(out)
    }

    /// `salt` on the top master.
    pub fn salt(&self, args: &[&str]) -> Result<Output> {
        self.cli("top", "salt", args)
    }

    /// `salt-run manage.stats` of the top master as JSON (`Null` when it
    /// cannot be read: the master is down, or answered something else).
    pub fn stats(&self) -> serde_json::Value {
        self.stats_on("top")
    }

    /// `salt-run manage.stats` of master `on` (the top or a syndic), as
    /// [`Topology::stats`].
    pub fn stats_on(&self, on: &str) -> serde_json::Value {
        self.cli(on, "salt-run", &["manage.stats", "--out", "json"])
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// `salt-run jobs.lookup_jid JID` on master `on` as JSON: the returns
    /// it stored (`Null` while it cannot answer).
    pub fn lookup_jid(&self, on: &str, jid: &str) -> serde_json::Value {
        self.cli(on, "salt-run", &["jobs.lookup_jid", jid, "--out", "json"])
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// One counter of [`Topology::stats`] (0 when absent).
    pub fn stat(&self, name: &str) -> u64 {
        self.stats()[name].as_u64().unwrap_or(0)
    }

    /// Wait until `manage.up` on the top master lists every id in `ids`.
    pub fn wait_up(&self, ids: &[String], wait: Duration) -> Result<()> {
        self.wait_up_on("top", ids, wait)
    }

    pub fn wait_up_on(&self, master: &str, ids: &[String], wait: Duration) -> Result<()> {
        let mut last = String::new();
        let up = launch::poll_until(wait, Duration::from_millis(200), || {
            let Ok(out) = self.cli(master, "salt-run", &["manage.up", "--out", "json"]) else {
                return false;
            };
            if !out.status.success() {
                last = String::from_utf8_lossy(&out.stderr).to_string();
                return false;
            }
            let up: Vec<String> = serde_json::from_slice(&out.stdout).unwrap_or_default();
            last = format!("up: {up:?}");
            ids.iter().all(|i| up.contains(i))
        });
        if up {
            return Ok(());
        }
        bail!(
            "not every minion came up on {master} within {wait:?} (last: {last}); logs in {}",
            self.root.path().display()
        )
    }

    /// Wait until a condition holds (polling, bounded).
    pub fn eventually<F: FnMut() -> bool>(&self, wait: Duration, what: &str, f: F) -> Result<()> {
        if launch::poll_until(wait, Duration::from_millis(100), f) {
            return Ok(());
        }
        bail!("{what}: not true within {wait:?}")
    }

    /// The log file of a process (for failure messages).
    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.root.path().join(format!("{id}.log"))).unwrap_or_default()
    }
}

/// Makes `id` (config in `syndic_dir`) a trusted syndic of the master
/// configured in `parent_dir` before either runs, with the operator's
/// tools: `salt-key --gen-keys` writes the syndic's upstream key pair into
/// its `syndic_pki_dir`, the public key is pre-accepted by copying it into
/// the parent's `minions/` (Salt's pre-seeding), and `salt-key
/// --grant-syndic ID -y` on the parent grants the role. Idempotent.
pub fn seed_syndic(bin: &Path, id: &str, syndic_dir: &Path, parent_dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let syndic = brine_common::config::load_master(syndic_dir, &[])
        .with_context(|| format!("config of {id}"))?;
    let parent = brine_common::config::load_master(parent_dir, &[])
        .with_context(|| format!("config of the parent of {id}"))?;
    let pki = syndic
        .syndic_pki_dir
        .clone()
        .unwrap_or_else(|| syndic.pki_dir.join("syndic"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&pki)
        .with_context(|| format!("creating {}", pki.display()))?;
    let salt_key = |dir: &Path, args: &[&str]| -> Result<()> {
        let out = Command::new(bin.join("salt-key"))
            .arg("-c")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running salt-key")?;
        if !out.status.success() {
            bail!(
                "salt-key {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    let pki_arg = pki.to_str().context("syndic pki dir is not UTF-8")?;
    salt_key(
        syndic_dir,
        &["--gen-keys", "minion", "--gen-keys-dir", pki_arg],
    )?;
    // Creates the parent's key directories if it never ran.
    salt_key(parent_dir, &["-l", "acc"])?;
    let accepted = parent.pki_dir.join("minions").join(id);
    if !accepted.exists() {
        std::fs::copy(pki.join("minion.pub"), &accepted)
            .with_context(|| format!("pre-accepting {id} on its parent"))?;
    }
    salt_key(parent_dir, &["--grant-syndic", id, "-y"])
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Minions first, then syndics, then the top (fewer reconnect storms).
        let ids: Vec<String> = self.procs.keys().cloned().collect();
        let (masters, minions): (Vec<String>, Vec<String>) = ids
            .into_iter()
            .partition(|i| self.top.id == *i || self.syndics.iter().any(|s| s.id == *i));
        for id in minions.iter().chain(masters.iter().rev()) {
            if let Some(mut c) = self.procs.remove(id) {
                launch::stop(&mut c, Stop::Term(GRACE));
            }
        }
    }
}
