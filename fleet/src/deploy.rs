//! Bulk minion deploy (`brine-fleet deploy`): every minion of a fleet's
//! plan installed on its host over SSH, in parallel with bounded
//! concurrency: the `salt-minion` binary at `<root>/usr/bin/salt-minion`,
//! its rendered config at its install path, an RSA key pair made on the
//! deploying side (only when the host has none) and pre-accepted on the
//! master the minion reports to (Salt's `--gen-keys` + preseed), and a
//! service (a systemd unit when PID 1 is systemd, else a background process
//! with a pid file under the root). With `--syndics` the syndics go too:
//! `salt-syndic`, its key pair in its `syndic_pki_dir`, accepted on the
//! master above it and granted the syndic role there.
//!
//! Invariant: every host is first probed read-only (hashes of what is
//! installed, its public key, whether the minion runs), and only what
//! differs is written; a second run over an unchanged fleet writes nothing
//! and reports every host `unchanged`. A binary of another version is
//! replaced only with `--upgrade`. `--dry-run` probes and reports, and
//! writes nothing anywhere. One host failing or hanging never holds back
//! the others (each host runs under its own deadline).

use crate::layout::{Daemon, Kind};
use crate::render;
use brine_common::crypto::{KeyPair, PublicKey};
use brine_ssh::command::{sh_quote, Common, HostKeys};
use brine_ssh::remote::{self, Remote};
use brine_ssh::roster::Host;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How the minion is kept running on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceMode {
    /// A systemd unit when the host's PID 1 is systemd, else a process.
    Auto,
    /// Always a systemd unit.
    Systemd,
    /// Always a background process with a pid file.
    Process,
}

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `salt-minion` binary to install.
    pub minion_bin: PathBuf,
    /// Deploy the syndics too (`salt-syndic`, with their role granted).
    pub syndics: bool,
    /// The `salt-syndic` binary to install (with `syndics`).
    pub syndic_bin: PathBuf,
    /// Replace a binary of another version.
    pub upgrade: bool,
    /// Probe and report only.
    pub dry_run: bool,
    /// Hosts worked on at once.
    pub max_procs: usize,
    /// Host key policy (`-i` ignores them).
    pub host_keys: HostKeys,
    /// `--known-hosts-file`.
    pub known_hosts: Option<PathBuf>,
    /// `--priv`: the default private key for login.
    pub privkey: Option<PathBuf>,
    /// The default login user.
    pub user: String,
    /// SSH connect timeout, seconds.
    pub timeout: u64,
    /// The longest one host may take, seconds.
    pub deadline: u64,
    /// The config directory of a master of the fleet on this machine.
    pub master_config: Option<PathBuf>,
    /// systemd, process, or decided per host.
    pub service: ServiceMode,
}

/// The result of one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It had no minion binary; everything was put in place.
    Installed,
    /// A binary of another version was replaced (`--upgrade`).
    Upgraded,
    /// The binary was right; something else (config, key, service) changed.
    Updated,
    /// Nothing to do.
    Unchanged,
    /// `--dry-run`: something would change.
    WouldChange,
    /// Stopped with a reason.
    Failed,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Installed => "installed",
            Outcome::Upgraded => "upgraded",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::WouldChange => "would change",
            Outcome::Failed => "failed",
        })
    }
}

/// One host's line of the result table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The minion id.
    pub id: String,
    /// Its ssh host.
    pub host: String,
    /// What happened.
    pub outcome: Outcome,
    /// What changed (or would change), in order.
    pub changes: Vec<String>,
    /// Why it failed (or a note).
    pub reason: String,
}

/// A master of the fleet whose config directory is on this machine.
#[derive(Debug, Clone)]
struct LocalMaster {
    id: String,
    pki_dir: PathBuf,
    sock_dir: PathBuf,
    cachedir: PathBuf,
}

/// Everything shared by the hosts of one run.
struct Ctx {
    opts: Options,
    common: Common,
    /// The binaries to install by kind, with their sha256.
    binaries: BTreeMap<Kind, (Vec<u8>, String)>,
    hosts: BTreeMap<String, Host>,
    daemons: Vec<Daemon>,
    local: Option<LocalMaster>,
}

/// A problem before any host was touched (bad binary, master config...).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// The key store's staging directory under a master's `pki_dir` (never
/// listed as keys): temporary files of accepted keys and grants go there.
const STAGING: &str = ".staging";

/// hex sha256.
fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A setting of a daemon's rendered config, as text.
fn setting(d: &Daemon, key: &str) -> Option<String> {
    let f = d.files.first()?;
    let v: serde_json::Value = serde_norway::from_str(&f.text).ok()?;
    match v.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn root_of(d: &Daemon) -> PathBuf {
    d.root_dir.clone().unwrap_or_else(|| PathBuf::from("/"))
}

/// Where a minion's files go on its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `<root>/usr/bin/salt-minion`.
    pub bin: String,
    /// The config file (`<root>/etc/salt/minion`).
    pub config: String,
    /// The config directory given to `-c`.
    pub config_dir: String,
    /// Its `pki_dir`.
    pub pki_dir: String,
    /// Where its own key pair goes (`minion.pem`/`.pub`): the `pki_dir` of
    /// a minion, the `syndic_pki_dir` of a syndic.
    pub key_dir: String,
    /// `<root>/var/run/salt-minion.pid` (process mode).
    pub pid_file: String,
    /// Its stdout/stderr in process mode.
    pub console_log: String,
    /// The systemd unit name.
    pub unit: String,
}

/// The paths of minion `d` on its host.
pub fn paths(d: &Daemon) -> Paths {
    let root = root_of(d);
    let s = |p: PathBuf| p.display().to_string();
    let pki = setting(d, "pki_dir")
        .unwrap_or_else(|| s(root.join("etc/salt/pki").join(d.kind.config_name())));
    let unit = if d.root_dir.is_none() {
        format!("{}.service", d.kind.binary())
    } else {
        let clean: String =
            d.id.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
        format!("{}-{clean}.service", d.kind.binary())
    };
    let key_dir = match d.kind {
        Kind::Minion => pki.clone(),
        Kind::Master | Kind::Syndic => {
            setting(d, "syndic_pki_dir").unwrap_or_else(|| format!("{pki}/syndic"))
        }
    };
    Paths {
        key_dir,
        bin: s(root.join("usr/bin").join(d.kind.binary())),
        config: d
            .files
            .first()
            .map(|f| s(f.install_path.clone()))
            .unwrap_or_else(|| s(d.config_dir().join(d.kind.config_name()))),
        config_dir: s(d.config_dir()),
        pki_dir: pki,
        pid_file: s(root.join(format!("var/run/{}.pid", d.kind.binary()))),
        console_log: s(root.join(format!("var/log/salt/{}.out", d.kind.binary()))),
        unit,
    }
}

/// The systemd unit of minion `d`.
pub fn unit_text(d: &Daemon, p: &Paths) -> String {
    format!(
        "# Written by brine-fleet deploy.\n[Unit]\nDescription=Brine {kind} {id}\n\
         After=network-online.target\nWants=network-online.target\n\n[Service]\n\
         Type=simple\nExecStart={bin} -c {dir}\nRestart=on-failure\nRestartSec=2\n\
         KillMode=mixed\nTimeoutStopSec=15\n\n[Install]\nWantedBy=multi-user.target\n",
        kind = d.kind,
        id = d.id,
        bin = p.bin,
        dir = p.config_dir
    )
}

/// `/etc/systemd/system/<unit>`.
fn unit_path(p: &Paths) -> String {
    format!("/etc/systemd/system/{}", p.unit)
}

/// The read-only probe: hashes of binary, config and unit, systemd or
/// not, whether the minion runs, and the public key if a pair is there.
fn probe_script(p: &Paths) -> String {
    format!(
        "B={b}; C={c}; K={k}; P={pid}; U={u}; N={n}\n\
         command -v sha256sum >/dev/null || {{ echo 'sha256sum (coreutils) not found on the host' >&2; exit 3; }}\n\
         h() {{ if [ -f \"$1\" ]; then sha256sum \"$1\" | cut -d' ' -f1; else echo none; fi; }}\n\
         echo \"bin=$(h \"$B\")\"; echo \"cfg=$(h \"$C\")\"; echo \"unit=$(h \"$U\")\"\n\
         if [ \"$(cat /proc/1/comm 2>/dev/null)\" = systemd ]; then echo systemd=yes; \
           if systemctl is-active --quiet \"$N\"; then echo active=yes; else echo active=no; fi; \
         else echo systemd=no; fi\n\
         pid=$(cat \"$P\" 2>/dev/null)\n\
         if [ -n \"$pid\" ] && kill -0 \"$pid\" 2>/dev/null && tr '\\0' ' ' < /proc/$pid/cmdline 2>/dev/null | grep -qF -- \"$B\"; \
           then echo running=yes; else echo running=no; fi\n\
         if [ -f \"$K/minion.pem\" ]; then echo pem=yes; else echo pem=no; fi\n\
         if [ -f \"$K/minion.pub\" ]; then echo --pub--; cat \"$K/minion.pub\"; fi\n",
        b = sh_quote(&p.bin),
        c = sh_quote(&p.config),
        k = sh_quote(&p.key_dir),
        pid = sh_quote(&p.pid_file),
        u = sh_quote(&unit_path(p)),
        n = sh_quote(&p.unit),
    )
}

/// What the probe found on a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// sha256 of the installed binary (None: absent).
    pub bin: Option<String>,
    /// sha256 of the installed config.
    pub cfg: Option<String>,
    /// sha256 of the installed unit.
    pub unit: Option<String>,
    /// PID 1 is systemd.
    pub systemd: bool,
    /// The unit is active (systemd hosts).
    pub active: bool,
    /// The pid file names a live `salt-minion` of this root.
    pub running: bool,
    /// `minion.pem` is there.
    pub pem: bool,
    /// The text of `minion.pub`, if there.
    pub public: Option<String>,
}

/// Reads the probe's output.
pub fn parse_probe(out: &str) -> Probe {
    let mut p = Probe::default();
    let (head, public) = match out.split_once("--pub--\n") {
        Some((h, k)) => (h, Some(k.to_string())),
        None => (out, None),
    };
    p.public = public;
    let hash = |v: &str| (v != "none" && !v.is_empty()).then(|| v.to_string());
    for line in head.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "bin" => p.bin = hash(v),
            "cfg" => p.cfg = hash(v),
            "unit" => p.unit = hash(v),
            "systemd" => p.systemd = v == "yes",
            "active" => p.active = v == "yes",
            "running" => p.running = v == "yes",
            "pem" => p.pem = v == "yes",
            _ => {}
        }
    }
    p
}

/// Starts (or restarts, when `restart`) the minion as a background
/// process in its own session, its pid in the pid file. Fails when the
/// new process is gone half a second later.
fn process_script(p: &Paths, restart: bool) -> String {
    format!(
        "B={b}; C={c}; P={pid}; L={log}; R={r}\n\
         live() {{ tr -d '\\0' < /proc/$1/cmdline 2>/dev/null | grep -q .; }}\n\
         pid=$(cat \"$P\" 2>/dev/null)\n\
         if [ -n \"$pid\" ] && live \"$pid\" && tr '\\0' ' ' < /proc/$pid/cmdline | grep -qF -- \"$B\"; then\n\
           [ \"$R\" = 1 ] || exit 0\n\
           kill \"$pid\"; i=0\n\
           while live \"$pid\" && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
           live \"$pid\" && kill -9 \"$pid\"\n\
         fi\n\
         mkdir -p \"$(dirname \"$P\")\" \"$(dirname \"$L\")\"\n\
         setsid nohup \"$B\" -c \"$C\" </dev/null >>\"$L\" 2>&1 &\n\
         new=$!; echo \"$new\" > \"$P\"\n\
         sleep 0.5\n\
         if ! live \"$new\"; then echo \"$(basename \"$B\") exited at once: $(tail -n 2 \"$L\" | tr '\\n' ' ')\" >&2; exit 1; fi\n\
         exit 0\n",
        b = sh_quote(&p.bin),
        c = sh_quote(&p.config_dir),
        pid = sh_quote(&p.pid_file),
        log = sh_quote(&p.console_log),
        r = u8::from(restart),
    )
}

/// Enables the unit and starts it (restarts it when `restart`).
fn systemd_script(p: &Paths, reload: bool, restart: bool) -> String {
    let n = sh_quote(&p.unit);
    let mut s = String::from("set -e\n");
    if reload {
        s.push_str("systemctl daemon-reload\n");
    }
    s.push_str(&format!("systemctl enable --quiet {n}\n"));
    if restart {
        s.push_str(&format!("systemctl restart {n}\n"));
    } else {
        s.push_str(&format!(
            "systemctl is-active --quiet {n} || systemctl start {n}\n"
        ));
    }
    s
}

impl Ctx {
    fn remote(&self, id: &str) -> Result<Remote, String> {
        let h = self
            .hosts
            .get(id)
            .ok_or_else(|| format!("{id} has no ssh access in the plan"))?;
        Ok(Remote::of_host(
            self.common.clone(),
            h,
            &self.opts.user,
            self.opts.privkey.clone(),
            self.opts.timeout,
        ))
    }

    fn upstream(&self, d: &Daemon) -> Result<&Daemon, String> {
        let up = d
            .parent()
            .ok_or_else(|| format!("{} reports to no master", d.id))?;
        self.daemons
            .iter()
            .find(|u| u.id == up)
            .ok_or_else(|| format!("its master {up} is not in the plan"))
    }
}

/// Where the accepted key of a minion is kept: this machine or a host.
enum KeyHome {
    Local(LocalMaster),
    Remote(Remote, String),
}

impl KeyHome {
    fn of(ctx: &Ctx, d: &Daemon) -> Result<(KeyHome, String), String> {
        let up = ctx.upstream(d)?;
        if let Some(l) = ctx.local.as_ref().filter(|l| l.id == up.id) {
            return Ok((KeyHome::Local(l.clone()), up.id.clone()));
        }
        let pki = setting(up, "pki_dir").unwrap_or_else(|| {
            root_of(up)
                .join("etc/salt/pki/master")
                .display()
                .to_string()
        });
        Ok((KeyHome::Remote(ctx.remote(&up.id)?, pki), up.id.clone()))
    }

    /// The accepted key stored for `id` and its syndic grant (the
    /// fingerprint it was granted to), each if any.
    async fn accepted(&self, id: &str) -> Result<(Option<String>, Option<String>), String> {
        match self {
            KeyHome::Local(l) => {
                let read = |path: PathBuf| match std::fs::read_to_string(&path) {
                    Ok(t) => Ok(Some(t)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(format!("{}: {e}", path.display())),
                };
                Ok((
                    read(l.pki_dir.join("minions").join(id))?,
                    read(l.pki_dir.join("syndics").join(id))?,
                ))
            }
            KeyHome::Remote(r, pki) => {
                let f = sh_quote(&format!("{pki}/minions/{id}"));
                let g = sh_quote(&format!("{pki}/syndics/{id}"));
                let o = r
                    .run(
                        &format!(
                            "if [ -f {g} ]; then cat {g}; fi; echo; echo --key--; \
                             if [ -f {f} ]; then cat {f}; fi"
                        ),
                        b"",
                    )
                    .await;
                o.ok()
                    .map_err(|e| format!("reading its master's keys: {e}"))?;
                let t = o.text();
                let (grant, key) = t.split_once("--key--\n").unwrap_or(("", ""));
                let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
                Ok((some(key), some(grant)))
            }
        }
    }

    /// Stores `pem` as the accepted key of `id` (a pending key of the id
    /// is dropped: this one supersedes it) and, with `grant`, the syndic
    /// role for that key's fingerprint; a local master is told.
    async fn accept(
        &self,
        id: &str,
        pem: Option<&str>,
        grant: Option<&str>,
        replaced: bool,
    ) -> Result<(), String> {
        match self {
            KeyHome::Local(l) => {
                let write = |sub: &str, text: &str, mode: u32| {
                    use std::io::Write;
                    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
                    let dir = l.pki_dir.join(sub);
                    let path = dir.join(id);
                    // Staged where the key store stages (never listed).
                    let staging = l.pki_dir.join(STAGING);
                    let tmp = staging.join(format!("{id}.brine-tmp.{}", std::process::id()));
                    let _ = std::fs::remove_file(&tmp);
                    let mut mk = std::fs::DirBuilder::new();
                    mk.recursive(true).mode(0o700);
                    mk.create(&dir)
                        .and_then(|_| mk.create(&staging))
                        .and_then(|_| {
                            std::fs::OpenOptions::new()
                                .write(true)
                                .create_new(true)
                                .mode(mode)
                                .open(&tmp)
                        })
                        .and_then(|mut f| f.write_all(text.as_bytes()))
                        .and_then(|_| std::fs::rename(&tmp, &path))
                        .map_err(|e| format!("{}: {e}", path.display()))
                };
                if let Some(pem) = pem {
                    write("minions", pem, 0o644)?;
                    let _ = std::fs::remove_file(l.pki_dir.join("minions_pre").join(id));
                }
                if let Some(fp) = grant {
                    write("syndics", fp, 0o600)?;
                }
                let revoked = if replaced {
                    vec![id.to_string()]
                } else {
                    vec![]
                };
                if let Ok(mut c) =
                    brine_common::client::LocalClient::connect(&l.sock_dir, &l.cachedir).await
                {
                    // Best effort, as salt-key: a master that is not
                    // running reads the key when the minion signs in.
                    let _ = c.keys_changed(revoked).await;
                }
                Ok(())
            }
            KeyHome::Remote(r, pki) => {
                if let Some(pem) = pem {
                    r.upload_via(
                        &format!("{pki}/minions/{id}"),
                        pem.as_bytes(),
                        0o644,
                        0o700,
                        Some(&format!("{pki}/{STAGING}")),
                    )
                    .await
                    .map_err(|e| format!("writing the accepted key: {e}"))?;
                    let pre = sh_quote(&format!("{pki}/minions_pre/{id}"));
                    let _ = r.run(&format!("rm -f {pre}"), b"").await;
                }
                if let Some(fp) = grant {
                    r.upload_via(
                        &format!("{pki}/syndics/{id}"),
                        fp.as_bytes(),
                        0o600,
                        0o700,
                        Some(&format!("{pki}/{STAGING}")),
                    )
                    .await
                    .map_err(|e| format!("granting the syndic role: {e}"))?;
                }
                Ok(())
            }
        }
    }
}

/// The id names a file in its master's key directories: refused when it
/// could not be one there (as the master's key store refuses it).
pub fn key_file_name(id: &str) -> Result<(), String> {
    let bad = id.is_empty()
        || id.starts_with('.')
        || id
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control() || c.is_whitespace());
    if bad {
        return Err(format!(
            "{id:?} cannot be a minion key name (no '/', '\\', leading '.', spaces or control characters)"
        ));
    }
    Ok(())
}

fn same_key(a: &str, b: &str) -> bool {
    match (PublicKey::from_pem(a), PublicKey::from_pem(b)) {
        (Ok(x), Ok(y)) => x.pem() == y.pem(),
        _ => a.trim() == b.trim(),
    }
}

/// Deploys one minion; never panics, every problem is a failed report.
async fn deploy_one(ctx: &Ctx, d: &Daemon) -> Report {
    let mut changes = Vec::new();
    let r = deploy_steps(ctx, d, &mut changes).await;
    let (outcome, reason) = match r {
        Ok(o) => (o, String::new()),
        Err(e) => (Outcome::Failed, e),
    };
    Report {
        id: d.id.clone(),
        host: d.ssh.host.clone(),
        outcome,
        changes,
        reason,
    }
}

async fn deploy_steps(ctx: &Ctx, d: &Daemon, changes: &mut Vec<String>) -> Result<Outcome, String> {
    let dry = ctx.opts.dry_run;
    key_file_name(&d.id)?;
    let r = ctx.remote(&d.id)?;
    let p = paths(d);
    let cfg_text = d
        .files
        .first()
        .map(|f| f.text.clone())
        .ok_or_else(|| "no rendered config".to_string())?;
    let (binary, binary_sha) = ctx
        .binaries
        .get(&d.kind)
        .ok_or_else(|| format!("no {} binary to install", d.kind.binary()))?;
    let out = r.run(&probe_script(&p), b"").await;
    out.ok()?;
    let probe = parse_probe(&out.text());

    // The binary.
    let mut outcome = Outcome::Unchanged;
    let bin_write = match &probe.bin {
        None => {
            outcome = Outcome::Installed;
            changes.push("binary".into());
            true
        }
        Some(h) if h == binary_sha => false,
        Some(h) if ctx.opts.upgrade => {
            outcome = Outcome::Upgraded;
            changes.push(format!(
                "binary {} -> {}",
                &h[..h.len().min(12)],
                &binary_sha[..12]
            ));
            true
        }
        Some(h) => {
            return Err(format!(
                "other version at {} (sha256 {}), use --upgrade",
                p.bin,
                &h[..h.len().min(12)]
            ))
        }
    };
    let cfg_write = probe.cfg.as_deref() != Some(sha256(cfg_text.as_bytes()).as_str());
    if cfg_write {
        changes.push("config".into());
    }
    // The key pair: the host's own when it has one.
    let (new_pair, public) = match (&probe.public, probe.pem) {
        (Some(public), true) => {
            PublicKey::from_pem(public)
                .map_err(|e| format!("{}/minion.pub does not parse: {e}", p.key_dir))?;
            (None, public.clone())
        }
        (None, true) => {
            return Err(format!(
                "{}/minion.pem is there without minion.pub: remove both or add the public key",
                p.key_dir
            ))
        }
        (_, false) if dry => {
            changes.push("key pair".into());
            (None, String::new())
        }
        (_, false) => {
            let kp = tokio::task::spawn_blocking(KeyPair::generate)
                .await
                .map_err(|e| format!("key generation: {e}"))?
                .map_err(|e| format!("key generation: {e}"))?;
            let pem = kp
                .private_pem()
                .map_err(|e| format!("key generation: {e}"))?;
            changes.push("key pair".into());
            let public = kp.public().pem().to_string();
            (Some((pem, public.clone())), public)
        }
    };
    // Pre-accepted on its master.
    let (home, master) = KeyHome::of(ctx, d)?;
    let (accepted, granted) = home.accepted(&d.id).await?;
    let accept = match &accepted {
        _ if public.is_empty() => {
            changes.push(format!("accepted on {master}"));
            None
        }
        Some(k) if same_key(k, &public) => None,
        Some(_) => {
            changes.push(format!("accepted key replaced on {master}"));
            Some(true)
        }
        None => {
            changes.push(format!("accepted on {master}"));
            Some(false)
        }
    };
    // A syndic's role, granted to this key's fingerprint.
    let fingerprint = PublicKey::from_pem(&public)
        .map(|k| k.fingerprint())
        .unwrap_or_default();
    let grant = (d.kind == Kind::Syndic
        && (fingerprint.is_empty() || granted.as_deref().map(str::trim) != Some(&fingerprint)))
    .then(|| {
        changes.push(format!("syndic role on {master}"));
        fingerprint.clone()
    });
    // The service.
    let systemd = match ctx.opts.service {
        ServiceMode::Auto => probe.systemd,
        ServiceMode::Systemd => true,
        ServiceMode::Process => false,
    };
    let restart = bin_write || cfg_write || new_pair.is_some();
    let unit = unit_text(d, &p);
    let unit_write = systemd && probe.unit.as_deref() != Some(sha256(unit.as_bytes()).as_str());
    if unit_write {
        changes.push("unit".into());
    }
    let running = if systemd { probe.active } else { probe.running };
    let start = restart || unit_write || !running;
    if start {
        changes.push(if running { "restarted" } else { "started" }.into());
    }
    if dry {
        return Ok(if changes.is_empty() {
            Outcome::Unchanged
        } else {
            Outcome::WouldChange
        });
    }

    if bin_write {
        r.upload(&p.bin, binary, 0o755, 0o755)
            .await
            .map_err(|e| format!("uploading the binary: {e}"))?;
    }
    if cfg_write {
        r.upload(&p.config, cfg_text.as_bytes(), 0o644, 0o755)
            .await
            .map_err(|e| format!("writing the config: {e}"))?;
    }
    if let Some((pem, public)) = &new_pair {
        r.upload(
            &format!("{}/minion.pem", p.key_dir),
            pem.as_bytes(),
            0o600,
            0o700,
        )
        .await
        .map_err(|e| format!("writing the key pair: {e}"))?;
        r.upload(
            &format!("{}/minion.pub", p.key_dir),
            public.as_bytes(),
            0o644,
            0o700,
        )
        .await
        .map_err(|e| format!("writing the key pair: {e}"))?;
    }
    if accept.is_some() || grant.is_some() {
        let pem = accept.is_some().then_some(public.as_str());
        home.accept(&d.id, pem, grant.as_deref(), accept == Some(true))
            .await?;
    }
    if systemd {
        if unit_write {
            r.upload(&unit_path(&p), unit.as_bytes(), 0o644, 0o755)
                .await
                .map_err(|e| format!("writing the unit: {e}"))?;
        }
        if start || unit_write {
            r.run(&systemd_script(&p, unit_write, running && restart), b"")
                .await
                .ok()
                .map_err(|e| format!("starting {}: {e}", p.unit))?;
        }
    } else if start {
        r.run(&process_script(&p, restart), b"")
            .await
            .ok()
            .map_err(|e| format!("starting {}: {e}", d.kind.binary()))?;
    }
    if outcome == Outcome::Unchanged && !changes.is_empty() {
        outcome = Outcome::Updated;
    }
    Ok(outcome)
}

/// Reads the binary and the local master config, and opens the ssh
/// control directory: everything checked before a host is touched.
fn setup(opts: Options, daemons: Vec<Daemon>) -> Result<Ctx, SetupError> {
    let mut binaries = BTreeMap::new();
    let mut wanted = vec![(Kind::Minion, &opts.minion_bin, "--minion-bin")];
    if opts.syndics {
        wanted.push((Kind::Syndic, &opts.syndic_bin, "--syndic-bin"));
    }
    for (kind, path, flag) in wanted {
        let bytes = std::fs::read(path).map_err(|e| {
            SetupError(format!(
                "the {} binary {}: {e} (give it with {flag})",
                kind.binary(),
                path.display()
            ))
        })?;
        let sha = sha256(&bytes);
        binaries.insert(kind, (bytes, sha));
    }
    let roster = render::roster_text(&daemons);
    let hosts = brine_ssh::roster::parse(&roster, "<fleet plan>")
        .map_err(|e| SetupError(format!("the plan's ssh access: {e}")))?
        .into_iter()
        .map(|h| (h.id.clone(), h))
        .collect();
    let local = match &opts.master_config {
        None => None,
        Some(dir) => {
            let cfg = brine_common::config::load_master(dir, &[])
                .map_err(|e| SetupError(format!("--master-config {}: {e}", dir.display())))?;
            let masters: Vec<&Daemon> = daemons.iter().filter(|d| d.kind != Kind::Minion).collect();
            // Its id names the master of the fleet it is; a config
            // without a fleet id is taken as the top master's.
            let id = if masters.iter().any(|m| m.id == cfg.id) {
                cfg.id.clone()
            } else {
                let top = masters
                    .iter()
                    .find(|m| m.kind == Kind::Master)
                    .map(|m| m.id.clone())
                    .unwrap_or_default();
                eprintln!(
                    "brine-fleet: note: --master-config has id {:?}, not a master of this fleet: taken as the top master {top}",
                    cfg.id
                );
                top
            };
            Some(LocalMaster {
                id,
                pki_dir: cfg.pki_dir.clone(),
                sock_dir: cfg.sock_dir.clone(),
                cachedir: cfg.cachedir.clone(),
            })
        }
    };
    let control_dir = remote::control_dir(opts.host_keys, opts.known_hosts.as_deref())
        .map_err(|e| SetupError(format!("the ssh control directory: {e}")))?;
    let common = Common {
        host_keys: opts.host_keys,
        known_hosts: opts.known_hosts.clone(),
        control_dir,
        control_persist: 60,
        askpass: std::env::current_exe().unwrap_or_default(),
        identities_only: false,
    };
    Ok(Ctx {
        opts,
        common,
        binaries,
        hosts,
        daemons,
        local,
    })
}

/// Deploys every minion of `daemons` (the fleet's plan); `progress` is
/// called as each host finishes (done, total, its report). Reports come
/// back in plan order.
pub async fn deploy(
    opts: Options,
    daemons: Vec<Daemon>,
    mut progress: impl FnMut(usize, usize, &Report),
) -> Result<Vec<Report>, SetupError> {
    let ctx = Arc::new(setup(opts, daemons)?);
    let targets: Vec<usize> = ctx
        .daemons
        .iter()
        .enumerate()
        .filter(|(_, d)| d.kind == Kind::Minion || (ctx.opts.syndics && d.kind == Kind::Syndic))
        .map(|(i, _)| i)
        .collect();
    let total = targets.len();
    let sem = Arc::new(tokio::sync::Semaphore::new(ctx.opts.max_procs.max(1)));
    let deadline = Duration::from_secs(ctx.opts.deadline.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for (slot, i) in targets.iter().copied().enumerate() {
        let (ctx, sem) = (ctx.clone(), sem.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let d = &ctx.daemons[i];
            let r = match tokio::time::timeout(deadline, deploy_one(&ctx, d)).await {
                Ok(r) => r,
                Err(_) => Report {
                    id: d.id.clone(),
                    host: d.ssh.host.clone(),
                    outcome: Outcome::Failed,
                    changes: vec![],
                    reason: format!("did not finish within {deadline:?}"),
                },
            };
            (slot, r)
        });
    }
    let mut reports: Vec<Option<Report>> = vec![None; total];
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        let Ok((slot, r)) = joined else { continue };
        done += 1;
        progress(done, total, &r);
        reports[slot] = Some(r);
    }
    // Close the shared connections this run opened.
    for i in &targets {
        if let Ok(r) = ctx.remote(&ctx.daemons[*i].id) {
            r.close().await;
        }
    }
    Ok(reports
        .into_iter()
        .enumerate()
        .map(|(slot, r)| {
            r.unwrap_or_else(|| {
                let d = &ctx.daemons[targets[slot]];
                Report {
                    id: d.id.clone(),
                    host: d.ssh.host.clone(),
                    outcome: Outcome::Failed,
                    changes: vec![],
                    reason: "its task ended without a result".into(),
                }
            })
        })
        .collect())
}

/// The result table: one line per host, columns padded.
pub fn table(reports: &[Report]) -> String {
    let head = ["ID", "HOST", "RESULT", "CHANGED", "REASON"];
    let rows: Vec<[String; 5]> = reports
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.host.clone(),
                r.outcome.to_string(),
                if r.changes.is_empty() {
                    "-".into()
                } else {
                    r.changes.join(", ")
                },
                r.reason.clone(),
            ]
        })
        .collect();
    let mut w = head.map(str::len);
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 5]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i < 4 {
                l.push_str(&format!("{c:<width$}  ", width = w[i]));
            } else {
                l.push_str(c);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(head);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
    out
}

/// `N host(s): a installed, b upgraded, ...` (only counts above zero).
pub fn summary(reports: &[Report]) -> String {
    let all = [
        Outcome::Installed,
        Outcome::Upgraded,
        Outcome::Updated,
        Outcome::Unchanged,
        Outcome::WouldChange,
        Outcome::Failed,
    ];
    let parts: Vec<String> = all
        .iter()
        .filter_map(|o| {
            let n = reports.iter().filter(|r| r.outcome == *o).count();
            (n > 0).then(|| format!("{n} {o}"))
        })
        .collect();
    format!("{} host(s): {}", reports.len(), parts.join(", "))
}

/// Where a binary is by default: beside this executable.
pub fn beside_me(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .unwrap_or_default()
        .join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_is_read() {
        let p = parse_probe(
            "bin=abc\ncfg=none\nunit=none\nsystemd=no\nrunning=yes\npem=yes\n--pub--\n-----BEGIN PUBLIC KEY-----\nx\n",
        );
        assert_eq!(p.bin.as_deref(), Some("abc"));
        assert_eq!(p.cfg, None);
        assert!(!p.systemd && p.running && p.pem);
        assert_eq!(p.public.as_deref(), Some("-----BEGIN PUBLIC KEY-----\nx\n"));
        let p = parse_probe("bin=none\npem=no\n");
        assert_eq!(p, Probe::default());
    }

    #[test]
    fn table_and_summary() {
        let r = vec![
            Report {
                id: "m1".into(),
                host: "10.0.0.1".into(),
                outcome: Outcome::Installed,
                changes: vec!["binary".into(), "config".into()],
                reason: String::new(),
            },
            Report {
                id: "m22".into(),
                host: "10.0.0.2".into(),
                outcome: Outcome::Failed,
                changes: vec![],
                reason: "Connection refused".into(),
            },
        ];
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID   HOST"), "{t}");
        assert!(lines[1].contains("installed  binary, config"), "{t}");
        assert!(
            lines[2].ends_with("failed     -               Connection refused"),
            "{t}"
        );
        assert_eq!(summary(&r), "2 host(s): 1 installed, 1 failed");
    }

    #[test]
    fn key_names() {
        assert!(key_file_name("web1.dc1").is_ok());
        for bad in ["", ".hidden", "../x", "a/b", "a b", "a\\b", "a\nb"] {
            assert!(key_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scripts_quote_paths() {
        let p = Paths {
            bin: "/r/it's/usr/bin/salt-minion".into(),
            config: "/r/etc/salt/minion".into(),
            config_dir: "/r/etc/salt".into(),
            pki_dir: "/r/etc/salt/pki/minion".into(),
            key_dir: "/r/etc/salt/pki/minion".into(),
            pid_file: "/r/var/run/salt-minion.pid".into(),
            console_log: "/r/var/log/salt/salt-minion.out".into(),
            unit: "salt-minion-m1.service".into(),
        };
        for s in [
            probe_script(&p),
            process_script(&p, true),
            systemd_script(&p, true, true),
        ] {
            assert!(!s.contains("/r/it's"), "{s}");
        }
        assert!(probe_script(&p).contains(r"B='/r/it'\''s/usr/bin/salt-minion'"));
        assert!(systemd_script(&p, false, false).contains("|| systemctl start"));
    }
}
