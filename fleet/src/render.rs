//! Config files of the laid-out daemons, in Salt's option names, and
//! writing them out: `DIR/<id>/master` or `DIR/<id>/minion` per daemon and
//! `DIR/roster` (a Salt roster of every host) for salt-ssh.
//!
//! Invariant: the text depends only on the daemons (fixed key order, extra
//! options sorted), so rendering the same fleet twice gives byte-identical
//! files, and a file whose content is already right is not rewritten.
//! Every config rendered here loads with Brine's own loader ([`validate`]).

use crate::layout::{ConfigFile, Daemon, Kind};
use crate::spec::Opts;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The first line of every rendered file.
pub const HEADER: &str =
    "# Rendered by brine-fleet from the fleet file: edit that file and render again.\n";

/// One YAML scalar as `key: value` (quoted by the YAML writer when needed).
fn line(out: &mut String, key: &str, value: Value) {
    let v = serde_norway::to_string(&value).unwrap_or_default();
    out.push_str(key);
    out.push_str(": ");
    out.push_str(v.trim_end());
    out.push('\n');
}

/// Salt's paths of a daemon's sort under `root` (`pki_dir`, `cachedir`,
/// `sock_dir`, `log_file`).
fn rooted_paths(root: &Path, sort: &str) -> [(&'static str, PathBuf); 4] {
    [
        ("pki_dir", root.join("etc/salt/pki").join(sort)),
        ("cachedir", root.join("var/cache/salt").join(sort)),
        ("sock_dir", root.join("var/run/salt").join(sort)),
        ("log_file", root.join("var/log/salt").join(sort)),
    ]
}

/// The config text of one daemon.
pub fn config_text(d: &Daemon) -> String {
    let mut out = String::from(HEADER);
    line(&mut out, "id", Value::String(d.id.clone()));
    if let Some(l) = &d.listen {
        line(&mut out, "interface", Value::String(l.interface.clone()));
        line(&mut out, "publish_port", l.publish_port.into());
        line(&mut out, "ret_port", l.ret_port.into());
        if d.order_masters {
            line(&mut out, "order_masters", Value::Bool(true));
        }
    }
    if let Some(up) = &d.upstream {
        let (host_key, port_key) = match d.kind {
            Kind::Minion => ("master", "master_port"),
            Kind::Master | Kind::Syndic => ("syndic_master", "syndic_master_port"),
        };
        line(&mut out, host_key, Value::String(up.host.clone()));
        line(&mut out, port_key, up.port.into());
    }
    if let Some(root) = &d.root_dir {
        line(
            &mut out,
            "root_dir",
            Value::String(root.display().to_string()),
        );
        for (k, p) in rooted_paths(root, d.kind.config_name()) {
            line(&mut out, k, Value::String(p.display().to_string()));
        }
    }
    if !d.opts.is_empty() {
        out.push_str(&serde_norway::to_string(&d.opts).unwrap_or_default());
    }
    out
}

/// Fills `files` of every daemon with its config.
pub fn fill(daemons: &mut [Daemon]) {
    for d in daemons {
        let name = d.kind.config_name().to_string();
        d.files = vec![ConfigFile {
            install_path: d.config_dir().join(&name),
            name,
            text: config_text(d),
        }];
    }
}

/// A Salt roster of every daemon's host: `id: {host, port, user, ...}`.
pub fn roster_text(daemons: &[Daemon]) -> String {
    let mut all: BTreeMap<&str, Opts> = BTreeMap::new();
    for d in daemons {
        let mut e = Opts::new();
        e.insert("host".into(), Value::String(d.ssh.host.clone()));
        e.insert("port".into(), d.ssh.port.into());
        e.insert("user".into(), Value::String(d.ssh.user.clone()));
        for (k, v) in &d.ssh.options {
            e.entry(k.clone()).or_insert_with(|| v.clone());
        }
        all.insert(&d.id, e);
    }
    format!(
        "{HEADER}{}",
        serde_norway::to_string(&all).unwrap_or_default()
    )
}

/// Every file to write under `dir`, in a fixed order: each daemon's config
/// (`dir/<id>/<name>`), then `dir/roster`.
pub fn outputs(daemons: &[Daemon], dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = daemons
        .iter()
        .flat_map(|d| {
            d.files
                .iter()
                .map(|f| (dir.join(&d.id).join(&f.name), f.text.clone()))
        })
        .collect();
    out.push((dir.join("roster"), roster_text(daemons)));
    out
}

/// Directories under `dir` that are no daemon's (a daemon removed from
/// the fleet since an earlier render), sorted; render leaves them alone.
pub fn stale_dirs(daemons: &[Daemon], dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !daemons.iter().any(|d| e.file_name() == d.id.as_str()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// What happened to one output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written (new or changed).
    Changed,
    /// Already had this content; left alone.
    Unchanged,
}

/// Writes `outputs`, leaving files that already have the content alone.
pub fn write(outputs: &[(PathBuf, String)]) -> std::io::Result<Vec<(PathBuf, Written)>> {
    let mut done = vec![];
    for (path, text) in outputs {
        if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
            done.push((path.clone(), Written::Unchanged));
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Write aside, then rename: a reader never sees half a file.
        let tmp = path.with_extension("brine-fleet-tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
        done.push((path.clone(), Written::Changed));
    }
    Ok(done)
}

/// Loads every daemon's rendered config (written under `dir` by [`write()`])
/// with Brine's own loader (masters and syndics with `MasterConfig`,
/// syndics also through `SyndicConfig::of`, minions with `MinionConfig`),
/// with no `SALT_*` environment; the first error of each daemon.
pub fn validate(daemons: &[Daemon], dir: &Path) -> Vec<(String, String)> {
    use brine_common::config::{load_master_with_env, load_minion_with_env, SyndicConfig};
    let mut bad = vec![];
    for d in daemons {
        let cfg_dir = dir.join(&d.id);
        let r = match d.kind {
            Kind::Master => load_master_with_env(&cfg_dir, &[], &[]).map(|_| ()),
            Kind::Syndic => load_master_with_env(&cfg_dir, &[], &[])
                .and_then(|c| SyndicConfig::of(&c))
                .map(|_| ()),
            Kind::Minion => load_minion_with_env(&cfg_dir, &[], &[]).map(|_| ()),
        };
        if let Err(e) = r {
            bad.push((d.id.clone(), e.to_string()));
        }
    }
    bad
}
