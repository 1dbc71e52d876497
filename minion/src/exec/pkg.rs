//! The `pkg` module for the Debian family, as Salt's `aptpkg` and
//! `dpkg_lowpkg`: `pkg.install`, `pkg.remove`, `pkg.purge`, `pkg.version`,
//! `pkg.list_pkgs`, `pkg.latest_version`, `pkg.refresh_db`... on top of
//! `dpkg-query`, `dpkg`, `apt-get` and `apt-cache`.
//!
//! The invariant: every function that changes packages reports what it did
//! by comparing the installed set before and after (Salt's
//! `{name: {"old": "1.0", "new": "2.0"}}`), never by trusting the tool's
//! output; every command runs non-interactively with a time limit. The
//! sync functions here are shared with the `pkg` state module.

use super::{opt, Call, CallFuture, ExecError, Function, Outcome};
use crate::files::FileClient;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Time limit of a query (`dpkg-query`, `apt-cache`).
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(120);
/// Time limit of a command that changes packages or fetches indexes.
pub(crate) const CHANGE_TIMEOUT: Duration = Duration::from_secs(1800);

/// What a finished command said.
#[derive(Debug, Clone)]
pub(crate) struct CmdOut {
    pub retcode: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOut {
    /// stderr, or stdout when stderr is empty, trimmed: for error messages.
    pub fn said(&self) -> String {
        let e = self.stderr.trim();
        if e.is_empty() {
            self.stdout.trim().to_string()
        } else {
            e.to_string()
        }
    }
}

/// Run `argv` with `env` added, stdin closed, in its own process group,
/// and wait at most `timeout` (then the group is killed and this is an
/// error). Output goes to anonymous temp files, not pipes, so a daemon
/// that keeps them open (an init script's `start`) cannot make us wait.
pub(crate) fn run_cmd(
    argv: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<CmdOut, String> {
    run_cmd_until(argv, env, timeout, None)
}

/// [`run_cmd`] that also stops (kills the group) when `cancel` fires
/// (`saltutil.kill_job`, shutdown).
pub(crate) fn run_cmd_until(
    argv: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
    cancel: Option<&CancellationToken>,
) -> Result<CmdOut, String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let what = argv.join(" ");
    let mut out = tempfile::tempfile().map_err(|e| format!("{what}: temp file: {e}"))?;
    let mut err = tempfile::tempfile().map_err(|e| format!("{what}: temp file: {e}"))?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .envs(env.iter().copied())
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|e| format!("{what}: {e}"))?)
        .stderr(err.try_clone().map_err(|e| format!("{what}: {e}"))?)
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {prog}: {e}"))?;
    drop(cmd);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline || cancel.is_some_and(|c| c.is_cancelled()) => {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.wait();
                if Instant::now() < deadline {
                    return Err(format!("{what} was cancelled"));
                }
                return Err(format!("{what} timed out after {}s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("{what}: {e}")),
        }
    };
    let read = |f: &mut std::fs::File| {
        let mut s = String::new();
        let _ = f.rewind();
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        s.push_str(&String::from_utf8_lossy(&buf));
        s
    };
    let stdout = read(&mut out);
    let stderr = read(&mut err);
    use std::os::unix::process::ExitStatusExt;
    let retcode = status
        .code()
        .unwrap_or_else(|| -status.signal().unwrap_or(1));
    Ok(CmdOut {
        retcode,
        stdout,
        stderr,
    })
}

const APT_ENV: &[(&str, &str)] = &[
    ("DEBIAN_FRONTEND", "noninteractive"),
    ("APT_LISTBUGS_FRONTEND", "none"),
    ("APT_LISTCHANGES_FRONTEND", "none"),
];

/// A package name as dpkg accepts it (`name` or `name:arch`); anything
/// else (options, spaces, shell text) is refused before a command sees it.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.:_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid package name {name:?}"))
    }
}

/// One line of the dpkg database.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DpkgEntry {
    /// `name`, or `name:arch` for a foreign architecture.
    pub name: String,
    pub version: String,
    /// The status word: `installed`, `config-files`, `half-installed`...
    pub status: String,
    /// `hold` when the package is held.
    pub want: String,
}

fn native_arch() -> String {
    run_cmd(&["dpkg", "--print-architecture"], &[], QUERY_TIMEOUT)
        .map(|o| o.stdout.trim().to_string())
        .unwrap_or_default()
}

/// Parse `dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\t${Status}\n'`.
pub(crate) fn parse_dpkg_query(text: &str, native: &str) -> Vec<DpkgEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (name, version, arch, status) = (f.next()?, f.next()?, f.next()?, f.next()?);
            let mut st = status.split_whitespace();
            let want = st.next().unwrap_or_default().to_string();
            let status = st.nth(1).unwrap_or_default().to_string();
            let name = if arch.is_empty() || arch == "all" || arch == native || native.is_empty() {
                name.to_string()
            } else {
                format!("{name}:{arch}")
            };
            Some(DpkgEntry {
                name,
                version: version.to_string(),
                status,
                want,
            })
        })
        .collect()
}

/// Every package dpkg knows about.
pub(crate) fn dpkg_entries() -> Result<Vec<DpkgEntry>, String> {
    let o = run_cmd(
        &[
            "dpkg-query",
            "-W",
            "-f",
            "${Package}\t${Version}\t${Architecture}\t${Status}\n",
        ],
        &[],
        QUERY_TIMEOUT,
    )?;
    if o.retcode != 0 {
        return Err(format!("dpkg-query failed: {}", o.said()));
    }
    Ok(parse_dpkg_query(&o.stdout, &native_arch()))
}

/// Installed packages: name → versions (Salt's `versions_as_list=True`).
/// `removed` lists packages whose configuration files remain instead.
pub(crate) fn installed(removed: bool) -> Result<BTreeMap<String, Vec<String>>, String> {
    let want = if removed { "config-files" } else { "installed" };
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in dpkg_entries()? {
        if e.status == want {
            m.entry(e.name).or_default().push(e.version);
        }
    }
    Ok(m)
}

/// Salt's `compare_dicts` of two package lists: `{name: {old, new}}` for
/// every package whose versions differ (`""` for absent).
pub(crate) fn diff(
    old: &BTreeMap<String, Vec<String>>,
    new: &BTreeMap<String, Vec<String>>,
) -> Map<String, Value> {
    let mut ch = Map::new();
    let join = |v: Option<&Vec<String>>| v.map(|v| v.join(",")).unwrap_or_default();
    for k in old.keys().chain(new.keys()) {
        let (o, n) = (join(old.get(k)), join(new.get(k)));
        if o != n {
            ch.insert(k.clone(), json!({"old": o, "new": n}));
        }
    }
    ch
}

/// `dpkg --compare-versions a op b` (op: lt le eq ne ge gt).
pub(crate) fn version_cmp(a: &str, op: &str, b: &str) -> Result<bool, String> {
    let o = run_cmd(
        &["dpkg", "--compare-versions", a, op, b],
        &[],
        QUERY_TIMEOUT,
    )?;
    match o.retcode {
        0 => Ok(true),
        1 => Ok(false),
        _ => Err(format!(
            "cannot compare versions {a:?} and {b:?}: {}",
            o.said()
        )),
    }
}

/// Does one of `versions` fulfil Salt's version spec (`1.0`, `=1.0`,
/// `>=1.0`, `<2`, `1.0*`)?
pub(crate) fn fulfills(versions: &[String], spec: &str) -> Result<bool, String> {
    let spec = spec.trim();
    let (op, ver) = split_spec(spec)?;
    for v in versions {
        let hit = if op == "eq" && ver.ends_with('*') {
            v.starts_with(ver.trim_end_matches('*'))
        } else {
            version_cmp(v, op, ver)?
        };
        if hit {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `>=1.0` → (`ge`, `1.0`); a bare version is `eq`.
pub(crate) fn split_spec(spec: &str) -> Result<(&'static str, &str), String> {
    let ops: [(&str, &str); 7] = [
        (">=", "ge"),
        ("<=", "le"),
        ("==", "eq"),
        (">", "gt"),
        ("<", "lt"),
        ("=", "eq"),
        ("", "eq"),
    ];
    for (p, op) in ops {
        if let Some(rest) = spec.strip_prefix(p) {
            let rest = rest.trim();
            if rest.is_empty() || rest.contains(['<', '>', '=', ' ']) {
                break;
            }
            return Ok((op, rest));
        }
    }
    Err(format!("Invalid version specification '{spec}'"))
}

/// `apt-cache policy` per package: name → (installed, candidate), `None`
/// for `(none)`.
pub(crate) type Policy = BTreeMap<String, (Option<String>, Option<String>)>;

/// `apt-cache policy` of `names`.
pub(crate) fn policy(names: &[String]) -> Result<Policy, String> {
    let mut argv = vec!["apt-cache", "-q", "policy"];
    argv.extend(names.iter().map(String::as_str));
    let o = run_cmd(&argv, APT_ENV, QUERY_TIMEOUT)?;
    if o.retcode != 0 {
        return Err(format!("apt-cache policy failed: {}", o.said()));
    }
    Ok(parse_policy(&o.stdout))
}

pub(crate) fn parse_policy(text: &str) -> Policy {
    let mut m = BTreeMap::new();
    let mut cur: Option<String> = None;
    let val = |s: &str| {
        let s = s.trim();
        (s != "(none)" && !s.is_empty()).then(|| s.to_string())
    };
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            let name = line.trim_end_matches(':').to_string();
            m.insert(name.clone(), (None, None));
            cur = Some(name);
        } else if let Some(name) = &cur {
            let t = line.trim_start();
            if let Some(v) = t.strip_prefix("Installed:") {
                if let Some(e) = m.get_mut(name) {
                    e.0 = val(v);
                }
            } else if let Some(v) = t.strip_prefix("Candidate:") {
                if let Some(e) = m.get_mut(name) {
                    e.1 = val(v);
                }
            }
        }
    }
    m
}

/// Salt's `latest_version` for each name: the candidate when it is newer
/// than what is installed (or nothing is installed), else `""`.
pub(crate) fn latest_versions(
    names: &[String],
    refresh: bool,
    cancel: Option<&CancellationToken>,
) -> Result<BTreeMap<String, String>, String> {
    for n in names {
        check_name(n)?;
    }
    if refresh {
        refresh_db(cancel)?;
    }
    let pol = policy(names)?;
    let cur = installed(false)?;
    let mut out = BTreeMap::new();
    for n in names {
        let cand = pol.get(n).and_then(|p| p.1.clone());
        let latest = match (cand, cur.get(n)) {
            (None, _) => String::new(),
            (Some(c), None) => c,
            (Some(c), Some(vs)) => {
                let mut newer = true;
                for v in vs {
                    if version_cmp(&c, "le", v)? {
                        newer = false;
                    }
                }
                if newer {
                    c
                } else {
                    String::new()
                }
            }
        };
        out.insert(n.clone(), latest);
    }
    Ok(out)
}

/// `apt-get update`; Salt's shape: repo line → `true` (fetched), `null`
/// (unchanged), `false` (ignored or failed).
pub(crate) fn refresh_db(cancel: Option<&CancellationToken>) -> Result<Map<String, Value>, String> {
    let o = run_cmd_until(
        &["apt-get", "-q", "update", "-o", "DPkg::Lock::Timeout=60"],
        APT_ENV,
        CHANGE_TIMEOUT,
        cancel,
    )?;
    let ret = parse_update(&o.stdout);
    if o.retcode != 0 && ret.is_empty() {
        return Err(format!("Error updating the package database: {}", o.said()));
    }
    Ok(ret)
}

/// The repository lines of `apt-get update` output.
pub(crate) fn parse_update(text: &str) -> Map<String, Value> {
    let size = regex::Regex::new(r" \[[^\]]+B\]$").ok();
    let mut ret = Map::new();
    for line in text.lines() {
        let mut cols = line.split_whitespace();
        let Some(kind) = cols.next() else { continue };
        let ident = cols.collect::<Vec<_>>().join(" ");
        let (ident, v) = if kind.starts_with("Get") {
            let ident = match &size {
                Some(re) => re.replace(&ident, "").to_string(),
                None => ident,
            };
            (ident, Value::Bool(true))
        } else if kind.starts_with("Hit") {
            (ident, Value::Null)
        } else if kind.starts_with("Ign") || kind.starts_with("Err") {
            (ident, Value::Bool(false))
        } else {
            continue;
        };
        ret.insert(ident, v);
    }
    ret
}

/// What to install: packages from the repositories (name, version spec)
/// and local `.deb` files.
#[derive(Debug, Default, Clone)]
pub(crate) struct InstallRequest {
    pub repo: Vec<(String, Option<String>)>,
    pub debs: Vec<PathBuf>,
    pub refresh: bool,
    pub fromrepo: Option<String>,
    pub reinstall: bool,
    /// The job's cancellation: kills apt or dpkg.
    pub cancel: Option<CancellationToken>,
}

/// The outcome of an install or removal: what changed, and the errors of
/// the commands (changes may be partial when there are errors).
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub changes: Map<String, Value>,
    pub errors: Vec<String>,
}

/// `name=version` for apt-get; operators other than `=` leave the choice
/// to apt (the state checks the result).
fn apt_target(name: &str, spec: Option<&str>) -> String {
    match spec.map(split_spec) {
        Some(Ok(("eq", v))) => format!("{name}={v}"),
        _ => name.to_string(),
    }
}

/// `dpkg-deb -f path Package Version`.
pub(crate) fn deb_fields(path: &std::path::Path) -> Result<(String, String), String> {
    let p = path.to_string_lossy();
    let o = run_cmd(
        &["dpkg-deb", "-f", &p, "Package", "Version"],
        &[],
        QUERY_TIMEOUT,
    )?;
    if o.retcode != 0 {
        return Err(format!("{p} is not a readable .deb: {}", o.said()));
    }
    let mut name = String::new();
    let mut version = String::new();
    for l in o.stdout.lines() {
        if let Some(v) = l.strip_prefix("Package:") {
            name = v.trim().to_string();
        } else if let Some(v) = l.strip_prefix("Version:") {
            version = v.trim().to_string();
        }
    }
    if name.is_empty() {
        return Err(format!("{p} has no Package field"));
    }
    Ok((name, version))
}

/// Install: `dpkg -i` for the `.deb` files, then `apt-get install` for
/// the repository packages. Errors of the commands are collected, not
/// returned early, so the changes are always reported.
pub(crate) fn install(req: &InstallRequest) -> Result<Applied, String> {
    for (n, _) in &req.repo {
        check_name(n)?;
    }
    let old = installed(false)?;
    let mut errors = Vec::new();
    if req.refresh {
        if let Err(e) = refresh_db(req.cancel.as_ref()) {
            errors.push(e);
        }
    }
    if !req.debs.is_empty() {
        let paths: Vec<String> = req
            .debs
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let mut argv = vec!["dpkg", "-i", "--force-confold", "--force-confdef"];
        argv.extend(paths.iter().map(String::as_str));
        let o = run_cmd_until(&argv, APT_ENV, CHANGE_TIMEOUT, req.cancel.as_ref())?;
        if o.retcode != 0 {
            errors.push(format!("dpkg -i failed: {}", o.said()));
        }
    }
    if !req.repo.is_empty() {
        let targets: Vec<String> = req
            .repo
            .iter()
            .map(|(n, v)| apt_target(n, v.as_deref()))
            .collect();
        let mut argv = vec![
            "apt-get",
            "-q",
            "-y",
            "-o",
            "DPkg::Options::=--force-confold",
            "-o",
            "DPkg::Options::=--force-confdef",
            "-o",
            "DPkg::Lock::Timeout=60",
        ];
        if req.repo.iter().any(|(_, v)| v.is_some()) {
            argv.push("--allow-downgrades");
        }
        if req.reinstall {
            argv.push("--reinstall");
        }
        if let Some(r) = &req.fromrepo {
            argv.extend(["-t", r.as_str()]);
        }
        argv.push("install");
        argv.extend(targets.iter().map(String::as_str));
        let o = run_cmd_until(&argv, APT_ENV, CHANGE_TIMEOUT, req.cancel.as_ref())?;
        if o.retcode != 0 {
            errors.push(format!("apt-get install failed: {}", o.said()));
        }
    }
    let new = installed(false)?;
    Ok(Applied {
        changes: diff(&old, &new),
        errors,
    })
}

/// `apt-get remove` (or `purge`) of those of `names` that are installed
/// (or, for purge, have configuration files left). Purge reports Salt's
/// `{"removed": {...}, "installed": {...}}`.
pub(crate) fn remove(
    names: &[String],
    purge: bool,
    cancel: Option<&CancellationToken>,
) -> Result<Applied, String> {
    for n in names {
        check_name(n)?;
    }
    let old = installed(false)?;
    let old_removed = installed(true)?;
    let targets: Vec<&str> = names
        .iter()
        .filter(|n| old.contains_key(*n) || (purge && old_removed.contains_key(*n)))
        .map(String::as_str)
        .collect();
    if targets.is_empty() {
        return Ok(Applied::default());
    }
    let mut argv = vec!["apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=60"];
    argv.push(if purge { "purge" } else { "remove" });
    argv.extend(targets.iter().copied());
    let o = run_cmd_until(&argv, APT_ENV, CHANGE_TIMEOUT, cancel)?;
    let mut errors = Vec::new();
    if o.retcode != 0 {
        errors.push(format!(
            "apt-get {} failed: {}",
            if purge { "purge" } else { "remove" },
            o.said()
        ));
    }
    let new = installed(false)?;
    let changes = diff(&old, &new);
    let changes = if purge {
        let new_removed = installed(true)?;
        let mut m = Map::new();
        m.insert(
            "removed".into(),
            Value::Object(diff(&old_removed, &new_removed)),
        );
        m.insert("installed".into(), Value::Object(changes));
        m
    } else {
        changes
    };
    Ok(Applied { changes, errors })
}

/// `dpkg-query` fields of installed packages, as `pkg.info_installed`.
pub(crate) fn info_installed(names: &[String]) -> Result<Map<String, Value>, String> {
    for n in names {
        check_name(n)?;
    }
    const FIELDS: [&str; 11] = [
        "Package",
        "Version",
        "Architecture",
        "Status",
        "Section",
        "Priority",
        "Installed-Size",
        "Maintainer",
        "Source",
        "Homepage",
        "Description",
    ];
    let fmt: String = FIELDS
        .iter()
        .map(|f| format!("{f}\x1f${{{f}}}\x1e"))
        .collect::<String>()
        + "\x1d";
    let mut argv = vec!["dpkg-query", "-W", "-f", fmt.as_str()];
    argv.extend(names.iter().map(String::as_str));
    let o = run_cmd(&argv, &[], QUERY_TIMEOUT)?;
    let mut ret = Map::new();
    for rec in o.stdout.split('\x1d') {
        let mut info = Map::new();
        let mut name = String::new();
        let mut status = String::new();
        for field in rec.split('\x1e') {
            let Some((k, v)) = field.split_once('\x1f') else {
                continue;
            };
            match k {
                "Package" => name = v.to_string(),
                "Status" => status = v.to_string(),
                _ => {}
            }
            let key = match k {
                "Installed-Size" => "installed_size".to_string(),
                _ => k.to_ascii_lowercase(),
            };
            if !v.is_empty() {
                info.insert(key, Value::String(v.to_string()));
            }
        }
        if !name.is_empty() && status.ends_with(" installed") {
            ret.insert(name, Value::Object(info));
        }
    }
    if ret.is_empty() && !names.is_empty() {
        return Err(format!(
            "Error: package(s) not installed: {}",
            names.join(", ")
        ));
    }
    Ok(ret)
}

/// `apt-mark hold` (or `unhold`) each of `names`; Salt's per-package
/// `{name, changes, result, comment}`.
pub(crate) fn set_hold(
    names: &[String],
    hold: bool,
    test: bool,
) -> Result<Map<String, Value>, String> {
    for n in names {
        check_name(n)?;
    }
    let entries = dpkg_entries()?;
    let mut ret = Map::new();
    for n in names {
        let entry = entries
            .iter()
            .find(|e| &e.name == n && e.status == "installed");
        let held = entry.is_some_and(|e| e.want == "hold");
        let (result, comment, changes) = match entry {
            None => (
                Value::Bool(false),
                format!("Package {n} not installed."),
                json!({}),
            ),
            Some(_) if held == hold => (
                Value::Bool(true),
                if hold {
                    format!("Package {n} is already set to be held.")
                } else {
                    format!("Package {n} is already set not to be held.")
                },
                json!({}),
            ),
            Some(_) if test => (
                Value::Null,
                if hold {
                    format!("Package {n} is set to be held.")
                } else {
                    format!("Package {n} is set not to be held.")
                },
                json!({}),
            ),
            Some(_) => {
                let verb = if hold { "hold" } else { "unhold" };
                let o = run_cmd(&["apt-mark", verb, n], APT_ENV, QUERY_TIMEOUT)?;
                if o.retcode != 0 {
                    (
                        Value::Bool(false),
                        format!("apt-mark {verb} {n} failed: {}", o.said()),
                        json!({}),
                    )
                } else if hold {
                    (
                        Value::Bool(true),
                        format!("Package {n} is now being held."),
                        json!({"old": "install", "new": "hold"}),
                    )
                } else {
                    (
                        Value::Bool(true),
                        format!("Package {n} is no longer being held."),
                        json!({"old": "hold", "new": "install"}),
                    )
                }
            }
        };
        ret.insert(
            n.clone(),
            json!({"name": n, "changes": changes, "result": result, "comment": comment}),
        );
    }
    Ok(ret)
}

/// `pkgs:` as Salt takes it: a list of names or `{name: version}`
/// mappings (a comma list or JSON text from the command line).
pub(crate) fn parse_pkgs(v: &Value) -> Result<Vec<(String, Option<String>)>, String> {
    let items: Vec<Value> = match v {
        Value::Array(a) => a.clone(),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(a)) => a,
            _ => s
                .split(',')
                .map(|x| Value::String(x.trim().to_string()))
                .collect(),
        },
        Value::Object(_) => vec![v.clone()],
        other => return Err(format!("Invalidly formatted 'pkgs' parameter: {other}")),
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Value::String(s) if !s.is_empty() => out.push((s, None)),
            Value::Object(m) => {
                for (k, v) in m {
                    let ver = match v {
                        Value::Null => None,
                        Value::String(s) if s.is_empty() => None,
                        Value::String(s) => Some(s),
                        other @ (Value::Number(_) | Value::Bool(_)) => Some(other.to_string()),
                        other => return Err(format!("Invalid version for package '{k}': {other}")),
                    };
                    out.push((k, ver));
                }
            }
            other => return Err(format!("Invalidly formatted 'pkgs' parameter: {other}")),
        }
    }
    if out.is_empty() {
        return Err("Invalidly formatted 'pkgs' parameter: no packages".into());
    }
    for (n, _) in &out {
        check_name(n)?;
    }
    Ok(out)
}

/// `sources:` as Salt takes it: a list of `{name: path_or_url}`.
pub(crate) fn parse_sources(v: &Value) -> Result<Vec<(String, String)>, String> {
    let items: Vec<Value> = match v {
        Value::Array(a) => a.clone(),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(a)) => a,
            _ => return Err(format!("Invalidly formatted 'sources' parameter: {s}")),
        },
        Value::Object(_) => vec![v.clone()],
        other => return Err(format!("Invalidly formatted 'sources' parameter: {other}")),
    };
    let mut out = Vec::new();
    for item in items {
        let Value::Object(m) = item else {
            return Err(format!(
                "Invalidly formatted 'sources' parameter: {item} is not a {{name: source}} mapping"
            ));
        };
        for (k, v) in m {
            let Value::String(src) = v else {
                return Err(format!("Invalid source for package '{k}': {v}"));
            };
            check_name(&k)?;
            out.push((k, src));
        }
    }
    if out.is_empty() {
        return Err("Invalidly formatted 'sources' parameter: no sources".into());
    }
    Ok(out)
}

/// Make each source a local `.deb`: `salt://` is cached from the master,
/// a local absolute path is used as is. The file must hold the package
/// it is listed under.
pub(crate) async fn fetch_sources(
    files: &FileClient,
    saltenv: &str,
    sources: &[(String, String)],
) -> Result<Vec<(String, PathBuf)>, String> {
    let mut out = Vec::new();
    for (name, src) in sources {
        let path = if let Some(u) = crate::files::parse_salt_url(src) {
            let env = u.saltenv.as_deref().unwrap_or(saltenv);
            files
                .cache_file(env, &u.path)
                .await
                .map_err(|e| format!("Unable to cache {src}: {e}"))?
                .ok_or_else(|| format!("Source file '{src}' not found"))?
        } else if src.starts_with('/') {
            PathBuf::from(src)
        } else {
            return Err(format!(
                "Unsupported source '{src}' for package '{name}' (salt:// or an absolute path)"
            ));
        };
        if !path.is_file() {
            return Err(format!("Source file '{src}' not found"));
        }
        out.push((name.clone(), path));
    }
    Ok(out)
}

/// Check each fetched `.deb` holds the package it is listed under;
/// returns its version.
pub(crate) fn check_debs(debs: &[(String, PathBuf)]) -> Result<Vec<String>, String> {
    let mut versions = Vec::new();
    for (name, path) in debs {
        let (real, version) = deb_fields(path)?;
        if &real != name {
            return Err(format!(
                "Source '{}' holds package '{real}', not '{name}'",
                path.display()
            ));
        }
        versions.push(version);
    }
    Ok(versions)
}

// ---- execution functions ------------------------------------------------

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "pkg.install",
        params: &[
            opt("name"),
            opt("refresh"),
            opt("fromrepo"),
            opt("skip_verify"),
            opt("debconf"),
            opt("pkgs"),
            opt("sources"),
            opt("reinstall"),
        ],
        varargs: false,
        kwargs: true,
        doc: "Install the passed package, add refresh=True to update the dpkg database.\n\n\
              name\n    The package to install (ignored when pkgs or sources is given).\n\
              version\n    Install this version of name (``apt-get install name=version``).\n\
              refresh\n    Run ``apt-get update`` first.\n\
              fromrepo\n    Target release (``apt-get -t``).\n\
              pkgs\n    A list of packages, each a name or ``{name: version}``.\n\
              sources\n    A list of ``{name: source}`` .deb files, source being a salt:// URL\n    \
              or an absolute path; installed with ``dpkg -i``.\n\
              reinstall\n    Reinstall packages that are already installed.\n\n\
              Returns a dict of what changed: ``{'<package>': {'old': '<old-version>',\n\
              'new': '<new-version>'}}``\n\n\
              CLI Example:\n\n    salt '*' pkg.install <package name>\n    \
              salt '*' pkg.install pkgs='[\"foo\", {\"bar\": \"1.2.3-0ubuntu0\"}]'\n    \
              salt '*' pkg.install sources='[{\"foo\": \"salt://debs/foo.deb\"}]'\n",
        handler: exec_install,
    },
    Function {
        name: "pkg.remove",
        params: &[opt("name"), opt("pkgs")],
        varargs: false,
        kwargs: true,
        doc: "Remove packages using ``apt-get remove``.\n\n\
              name\n    The package (or comma-separated packages) to remove.\n\
              pkgs\n    A list of packages to remove; name is ignored when given.\n\n\
              Returns a dict of what changed: ``{'<package>': {'old': '<old-version>',\n\
              'new': ''}}``\n\n\
              CLI Example:\n\n    salt '*' pkg.remove <package name>\n    \
              salt '*' pkg.remove <package1>,<package2>,<package3>\n    \
              salt '*' pkg.remove pkgs='[\"foo\", \"bar\"]'\n",
        handler: exec_remove,
    },
    Function {
        name: "pkg.purge",
        params: &[opt("name"), opt("pkgs")],
        varargs: false,
        kwargs: true,
        doc: "Remove packages via ``apt-get purge`` along with all configuration files.\n\n\
              Returns ``{'removed': {...}, 'installed': {...}}``: packages whose\n\
              configuration files went, and packages that were uninstalled.\n\n\
              CLI Example:\n\n    salt '*' pkg.purge <package name>\n    \
              salt '*' pkg.purge pkgs='[\"foo\", \"bar\"]'\n",
        handler: exec_purge,
    },
    Function {
        name: "pkg.version",
        params: &[],
        varargs: true,
        kwargs: true,
        doc: "Returns a string representing the package version or an empty string if\n\
              not installed. If more than one package name is specified, a dict of\n\
              name/version pairs is returned.\n\n\
              CLI Example:\n\n    salt '*' pkg.version <package name>\n    \
              salt '*' pkg.version <package1> <package2> <package3> ...\n",
        handler: exec_version,
    },
    Function {
        name: "pkg.list_pkgs",
        params: &[opt("versions_as_list"), opt("removed"), opt("purge_desired")],
        varargs: false,
        kwargs: true,
        doc: "List the packages currently installed in a dict::\n\n    \
              {'<package_name>': '<version>'}\n\n\
              versions_as_list\n    Each version is a list (a package may have several).\n\
              removed\n    List packages removed with their configuration files left.\n\n\
              CLI Example:\n\n    salt '*' pkg.list_pkgs\n    \
              salt '*' pkg.list_pkgs versions_as_list=True\n",
        handler: exec_list_pkgs,
    },
    Function {
        name: "pkg.latest_version",
        params: &[],
        varargs: true,
        kwargs: true,
        doc: "Return the latest version of the named package available for upgrade or\n\
              installation (``apt-cache policy`` candidate). If more than one package\n\
              name is specified, a dict of name/version pairs is returned. An empty\n\
              string is returned when the installed version is the latest.\n\n\
              refresh\n    Update the package database first (default True).\n\n\
              CLI Example:\n\n    salt '*' pkg.latest_version <package name>\n    \
              salt '*' pkg.latest_version <package name> refresh=False\n    \
              salt '*' pkg.latest_version <package1> <package2> <package3> ...\n",
        handler: exec_latest_version,
    },
    Function {
        name: "pkg.available_version",
        params: &[],
        varargs: true,
        kwargs: true,
        doc: "This function is an alias of ``latest_version``.\n\n\
              CLI Example:\n\n    salt '*' pkg.available_version <package name>\n",
        handler: exec_latest_version,
    },
    Function {
        name: "pkg.upgrade_available",
        params: &[opt("name")],
        varargs: false,
        kwargs: true,
        doc: "Check whether or not an upgrade is available for a given package.\n\n\
              CLI Example:\n\n    salt '*' pkg.upgrade_available <package name>\n",
        handler: exec_upgrade_available,
    },
    Function {
        name: "pkg.refresh_db",
        params: &[],
        varargs: false,
        kwargs: true,
        doc: "Updates the APT database to latest packages based upon repositories.\n\n\
              Returns a dict, with the keys being package databases and the values\n\
              being the result of the update attempt: ``True`` (updated), ``False``\n\
              (failed) or ``None`` (unchanged).\n\n\
              CLI Example:\n\n    salt '*' pkg.refresh_db\n",
        handler: exec_refresh_db,
    },
    Function {
        name: "pkg.info_installed",
        params: &[],
        varargs: true,
        kwargs: true,
        doc: "Return the information of the named package(s) installed on the system\n\
              (every installed package when none is named).\n\n\
              CLI Example:\n\n    salt '*' pkg.info_installed <package1>\n    \
              salt '*' pkg.info_installed <package1> <package2> <package3> ...\n",
        handler: exec_info_installed,
    },
    Function {
        name: "pkg.hold",
        params: &[opt("name"), opt("pkgs")],
        varargs: false,
        kwargs: true,
        doc: "Set package in 'hold' state, meaning it will not be upgraded\n\
              (``apt-mark hold``).\n\n\
              Returns per package ``{'name', 'changes', 'result', 'comment'}``.\n\n\
              CLI Example:\n\n    salt '*' pkg.hold <package name>\n    \
              salt '*' pkg.hold pkgs='[\"foo\", \"bar\"]'\n",
        handler: exec_hold,
    },
    Function {
        name: "pkg.unhold",
        params: &[opt("name"), opt("pkgs")],
        varargs: false,
        kwargs: true,
        doc: "Set package current in 'hold' state to install state, meaning it will\n\
              be upgraded (``apt-mark unhold``).\n\n\
              CLI Example:\n\n    salt '*' pkg.unhold <package name>\n    \
              salt '*' pkg.unhold pkgs='[\"foo\", \"bar\"]'\n",
        handler: exec_unhold,
    },
];

fn exec_err(e: String) -> ExecError {
    ExecError::Execution(e)
}

/// Run a blocking function of this module or `service` on the blocking
/// pool; its error string becomes an execution error.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ExecError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ExecError::Execution(format!("task failed: {e}")))?
        .map_err(exec_err)
}

/// Positional names (`*names`), each possibly a comma list.
fn varargs_names(c: &Call<'_>) -> Result<Vec<String>, ExecError> {
    let mut names = Vec::new();
    for v in &c.args.varargs {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => v.to_string(),
            other => return Err(ExecError::InvalidArgs(format!("invalid name {other}"))),
        };
        names.extend(split_names(&s)?);
    }
    Ok(names)
}

/// A comma list of package names, each checked.
fn split_names(s: &str) -> Result<Vec<String>, ExecError> {
    let names: Vec<String> = s
        .split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect();
    for n in &names {
        check_name(n).map_err(ExecError::InvalidArgs)?;
    }
    Ok(names)
}

/// `name` (maybe a comma list) or `pkgs`.
fn remove_names(c: &Call<'_>) -> Result<Vec<String>, ExecError> {
    if let Some(p) = c.arg("pkgs") {
        return Ok(parse_pkgs(p)
            .map_err(ExecError::InvalidArgs)?
            .into_iter()
            .map(|(n, _)| n)
            .collect());
    }
    let names = split_names(&c.str_arg("name")?.unwrap_or_default())?;
    if names.is_empty() {
        return Err(ExecError::InvalidArgs("name or pkgs is required".into()));
    }
    Ok(names)
}

/// Fail like Salt when a change command reported errors.
fn applied_outcome(a: Applied, what: &str) -> Result<Outcome, ExecError> {
    if a.errors.is_empty() {
        return Ok(Outcome::ok(Value::Object(a.changes)));
    }
    Err(ExecError::Execution(format!(
        "Problem encountered {what} package(s). Changes: {}. Errors: {}",
        Value::Object(a.changes),
        a.errors.join("; ")
    )))
}

fn exec_install<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let refresh = c.bool_arg("refresh", false)?;
        let reinstall = c.bool_arg("reinstall", false)?;
        let fromrepo = c.str_arg("fromrepo")?;
        let version = match c.args.kwargs.get("version") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
            Some(v) => {
                return Err(ExecError::InvalidArgs(format!(
                    "version must be a string, not {v}"
                )))
            }
        };
        let mut req = InstallRequest {
            refresh,
            reinstall,
            fromrepo,
            cancel: Some(c.ctx.cancel.clone()),
            ..Default::default()
        };
        if let Some(s) = c.arg("sources") {
            let sources = parse_sources(s).map_err(ExecError::InvalidArgs)?;
            let saltenv = c
                .args
                .kwargs
                .get("saltenv")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| c.ctx.saltenv.clone())
                .unwrap_or_else(|| "base".into());
            let debs = fetch_sources(&c.ctx.files, &saltenv, &sources)
                .await
                .map_err(exec_err)?;
            let checked = debs.clone();
            blocking(move || check_debs(&checked)).await?;
            req.debs = debs.into_iter().map(|(_, p)| p).collect();
        } else if let Some(p) = c.arg("pkgs") {
            req.repo = parse_pkgs(p).map_err(ExecError::InvalidArgs)?;
        } else {
            let names = split_names(&c.str_arg("name")?.unwrap_or_default())?;
            if names.is_empty() {
                return Err(ExecError::InvalidArgs(
                    "name, pkgs or sources is required".into(),
                ));
            }
            let v = if names.len() == 1 { version } else { None };
            req.repo = names.into_iter().map(|n| (n, v.clone())).collect();
        }
        let a = blocking(move || install(&req)).await?;
        applied_outcome(a, "installing")
    })
}

fn exec_remove<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let names = remove_names(c)?;
        let cancel = c.ctx.cancel.clone();
        let a = blocking(move || remove(&names, false, Some(&cancel))).await?;
        applied_outcome(a, "removing")
    })
}

fn exec_purge<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let names = remove_names(c)?;
        let cancel = c.ctx.cancel.clone();
        let a = blocking(move || remove(&names, true, Some(&cancel))).await?;
        applied_outcome(a, "purging")
    })
}

/// One name → its value; several → a dict (Salt's convention).
fn one_or_dict(names: &[String], m: BTreeMap<String, Value>) -> Value {
    if names.len() == 1 {
        m.into_values()
            .next()
            .unwrap_or(Value::String(String::new()))
    } else {
        Value::Object(m.into_iter().collect())
    }
}

fn exec_version<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let names = varargs_names(c)?;
        if names.is_empty() {
            return Err(ExecError::InvalidArgs("no package names given".into()));
        }
        let as_list = c.kwarg_bool("versions_as_list", false)?;
        let cur = blocking(|| installed(false)).await?;
        let m: BTreeMap<String, Value> = names
            .iter()
            .map(|n| {
                let vs = cur.get(n).cloned().unwrap_or_default();
                let v = if as_list && !vs.is_empty() {
                    json!(vs)
                } else {
                    json!(vs.join(","))
                };
                (n.clone(), v)
            })
            .collect();
        Ok(Outcome::ok(one_or_dict(&names, m)))
    })
}

fn exec_list_pkgs<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let as_list = c.bool_arg("versions_as_list", false)?;
        let removed = c.bool_arg("removed", false)? || c.bool_arg("purge_desired", false)?;
        let cur = blocking(move || installed(removed)).await?;
        let m: Map<String, Value> = cur
            .into_iter()
            .map(|(k, v)| {
                let v = if as_list {
                    json!(v)
                } else {
                    json!(v.join(","))
                };
                (k, v)
            })
            .collect();
        Ok(Outcome::ok(Value::Object(m)))
    })
}

fn exec_latest_version<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let names = varargs_names(c)?;
        if names.is_empty() {
            return Ok(Outcome::ok(json!("")));
        }
        let refresh = c.kwarg_bool("refresh", true)?;
        let n2 = names.clone();
        let cancel = c.ctx.cancel.clone();
        let m = blocking(move || latest_versions(&n2, refresh, Some(&cancel))).await?;
        let m = m.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        Ok(Outcome::ok(one_or_dict(&names, m)))
    })
}

fn exec_upgrade_available<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let name = c
            .str_arg("name")?
            .ok_or_else(|| ExecError::InvalidArgs("name is required".into()))?;
        check_name(&name).map_err(ExecError::InvalidArgs)?;
        let refresh = c.kwarg_bool("refresh", true)?;
        let n = vec![name.clone()];
        let cancel = c.ctx.cancel.clone();
        let m = blocking(move || latest_versions(&n, refresh, Some(&cancel))).await?;
        Ok(Outcome::ok(Value::Bool(
            m.get(&name).is_some_and(|v| !v.is_empty()),
        )))
    })
}

fn exec_refresh_db<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let cancel = c.ctx.cancel.clone();
        let m = blocking(move || refresh_db(Some(&cancel))).await?;
        Ok(Outcome::ok(Value::Object(m)))
    })
}

fn exec_hold<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    hold_outcome(c, true)
}

fn exec_unhold<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    hold_outcome(c, false)
}

fn hold_outcome<'a>(c: &'a Call<'a>, hold: bool) -> CallFuture<'a> {
    Box::pin(async move {
        let names = remove_names(c)?;
        let test = c.kwarg_bool("test", false)?;
        let m = blocking(move || set_hold(&names, hold, test)).await?;
        Ok(Outcome::ok(Value::Object(m)))
    })
}

fn exec_info_installed<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let names = varargs_names(c)?;
        let m = blocking(move || info_installed(&names)).await?;
        Ok(Outcome::ok(Value::Object(m)))
    })
}

#[cfg(test)]
pub(crate) mod testdeb {
    //! Build throw-away `.deb` packages named `brine-test-<unique>` and
    //! purge them again when the guard drops.
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// A unique package name for one test.
    pub fn unique(prefix: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        format!("brine-test-{prefix}{:x}{:x}", std::process::id(), nanos)
    }

    /// Build `name_version.deb` in `dir` holding
    /// `/usr/share/<name>/version`.
    pub fn build(dir: &Path, name: &str, version: &str) -> PathBuf {
        let root = dir.join(format!("{name}-{version}"));
        let share = root.join("usr/share").join(name);
        std::fs::create_dir_all(root.join("DEBIAN")).expect("mkdir DEBIAN");
        std::fs::create_dir_all(&share).expect("mkdir share");
        std::fs::write(share.join("version"), version).expect("write payload");
        std::fs::write(
            root.join("DEBIAN/control"),
            format!(
                "Package: {name}\nVersion: {version}\nArchitecture: all\n\
                 Maintainer: Brine tests <brine@example.invalid>\nSection: misc\n\
                 Priority: optional\nDescription: Brine test package\n throw-away\n"
            ),
        )
        .expect("write control");
        let deb = dir.join(format!("{name}_{version}_all.deb"));
        let st = Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&root)
            .arg(&deb)
            .output()
            .expect("dpkg-deb");
        assert!(st.status.success(), "dpkg-deb: {st:?}");
        deb
    }

    /// Tests that install packages take this so dpkg's lock is not fought over.
    pub static DPKG_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Purges the package on drop (also when the test fails).
    pub struct PurgeGuard(pub String);

    impl Drop for PurgeGuard {
        fn drop(&mut self) {
            let _ = Command::new("dpkg").args(["--purge", &self.0]).output();
        }
    }

    /// `dpkg -s name` succeeds and says installed.
    pub fn dpkg_installed(name: &str) -> bool {
        Command::new("dpkg-query")
            .args(["-W", "-f", "${Status}", name])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).ends_with(" installed"))
    }
}

#[cfg(test)]
mod tests {
    use super::testdeb::{build, dpkg_installed, unique, PurgeGuard};
    use super::*;
    use crate::exec::testutil::run;

    #[test]
    fn parses_dpkg_query_and_policy() {
        let q = "bash\t5.2-1\tamd64\tinstall ok installed\n\
                 libc6\t2.36\ti386\tinstall ok installed\n\
                 old\t1.0\tall\tdeinstall ok config-files\n";
        let e = parse_dpkg_query(q, "amd64");
        assert_eq!(e[0].name, "bash");
        assert_eq!(e[1].name, "libc6:i386");
        assert_eq!(
            (e[2].status.as_str(), e[2].want.as_str()),
            ("config-files", "deinstall")
        );

        let p = "bash:\n  Installed: 5.2-1\n  Candidate: 5.2-2\n  Version table:\n \
                 *** 5.2-1 100\nnope:\n  Installed: (none)\n  Candidate: (none)\n";
        let m = parse_policy(p);
        assert_eq!(m["bash"], (Some("5.2-1".into()), Some("5.2-2".into())));
        assert_eq!(m["nope"], (None, None));

        let u = parse_update(
            "Hit:1 http://deb.debian.org/debian bookworm InRelease\n\
             Get:2 http://deb.debian.org/debian bookworm-updates InRelease [55.4 kB]\n\
             Err:3 http://x.invalid/debian y InRelease\nReading package lists...\n",
        );
        assert_eq!(
            Value::Object(u),
            json!({
                "http://deb.debian.org/debian bookworm InRelease": null,
                "http://deb.debian.org/debian bookworm-updates InRelease": true,
                "http://x.invalid/debian y InRelease": false,
            })
        );
    }

    #[test]
    fn specs_names_and_arguments() {
        assert_eq!(split_spec(">=1.0").expect("spec"), ("ge", "1.0"));
        assert_eq!(split_spec("1.0").expect("spec"), ("eq", "1.0"));
        assert_eq!(split_spec("=1.0").expect("spec"), ("eq", "1.0"));
        assert!(split_spec(">=").is_err());
        assert!(split_spec("1 2").is_err());
        assert!(fulfills(&["1.0-1".into()], ">=1.0").expect("cmp"));
        assert!(!fulfills(&["1.0-1".into()], "2.0").expect("cmp"));
        assert!(fulfills(&["1.0-1".into()], "1.0*").expect("glob"));
        assert!(check_name("libc6:amd64").is_ok());
        assert!(check_name("-rf").is_err());
        assert!(check_name("a b").is_err());
        assert_eq!(
            parse_pkgs(&json!(["a", {"b": "1.0"}, {"c": null}])).expect("pkgs"),
            vec![
                ("a".into(), None),
                ("b".into(), Some("1.0".into())),
                ("c".into(), None)
            ]
        );
        assert_eq!(parse_pkgs(&json!("a,b")).expect("pkgs").len(), 2);
        assert!(parse_pkgs(&json!([1])).is_err());
        assert!(parse_sources(&json!(["x"])).is_err());
        assert_eq!(
            parse_sources(&json!([{"a": "/x.deb"}])).expect("sources"),
            vec![("a".to_string(), "/x.deb".to_string())]
        );
        let old = BTreeMap::from([("a".to_string(), vec!["1".to_string()])]);
        let new = BTreeMap::from([("b".to_string(), vec!["2".to_string()])]);
        assert_eq!(
            Value::Object(diff(&old, &new)),
            json!({"a": {"old": "1", "new": ""}, "b": {"old": "", "new": "2"}})
        );
    }

    #[test]
    fn run_cmd_reports_and_times_out() {
        let o = run_cmd(
            &["sh", "-c", "echo hi; echo err >&2; exit 3"],
            &[],
            QUERY_TIMEOUT,
        )
        .expect("run");
        assert_eq!(
            (o.retcode, o.stdout.as_str(), o.stderr.as_str()),
            (3, "hi\n", "err\n")
        );
        let e = run_cmd(&["sleep", "5"], &[], Duration::from_millis(200)).expect_err("timeout");
        assert!(e.contains("timed out"), "{e}");
        let token = CancellationToken::new();
        let t2 = token.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            t2.cancel();
        });
        let started = Instant::now();
        let e = run_cmd_until(&["sleep", "5"], &[], QUERY_TIMEOUT, Some(&token))
            .expect_err("cancelled");
        assert!(e.contains("cancelled"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(run_cmd(&["/nonexistent/brine"], &[], QUERY_TIMEOUT).is_err());
    }

    /// The execution functions against the real dpkg database.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exec_functions_on_a_real_deb() {
        let _lock = super::testdeb::DPKG_LOCK.lock().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let name = unique("x");
        let _guard = PurgeGuard(name.clone());
        let deb = build(dir.path(), &name, "1.0");
        let src = json!([{ name.clone(): deb.to_string_lossy() }]);

        let o = run("pkg.version", vec![json!(name)], json!({})).await;
        assert_eq!(o.ret, json!(""));
        let o = run("pkg.install", vec![], json!({"sources": src})).await;
        assert!(o.success, "{o:?}");
        assert_eq!(o.ret, json!({ name.clone(): {"old": "", "new": "1.0"} }));
        assert!(dpkg_installed(&name));
        let o = run("pkg.version", vec![json!(name), json!("bash")], json!({})).await;
        assert_eq!(o.ret[&name], "1.0");
        assert!(o.ret["bash"].as_str().is_some_and(|v| !v.is_empty()));
        let o = run("pkg.list_pkgs", vec![], json!({"versions_as_list": true})).await;
        assert_eq!(o.ret[&name], json!(["1.0"]));
        let o = run(
            "pkg.latest_version",
            vec![json!(name)],
            json!({"refresh": false}),
        )
        .await;
        assert_eq!(o.ret, json!(""));
        let o = run(
            "pkg.upgrade_available",
            vec![json!(name)],
            json!({"refresh": false}),
        )
        .await;
        assert_eq!(o.ret, json!(false));
        let o = run("pkg.hold", vec![json!(name)], json!({})).await;
        assert_eq!(
            o.ret[&name]["comment"],
            format!("Package {name} is now being held.")
        );
        assert_eq!(
            o.ret[&name]["changes"],
            json!({"old": "install", "new": "hold"})
        );
        let o = run("pkg.hold", vec![json!(name)], json!({})).await;
        assert_eq!(o.ret[&name]["changes"], json!({}));
        let o = run("pkg.list_pkgs", vec![], json!({})).await;
        assert_eq!(o.ret[&name], "1.0", "a held package is installed");
        let o = run("pkg.unhold", vec![json!(name)], json!({})).await;
        assert_eq!(o.ret[&name]["result"], true);
        let o = run("pkg.info_installed", vec![json!(name)], json!({})).await;
        assert_eq!(o.ret[&name]["version"], "1.0");
        let o = run("pkg.remove", vec![json!(name)], json!({})).await;
        assert_eq!(o.ret, json!({ name.clone(): {"old": "1.0", "new": ""} }));
        assert!(!dpkg_installed(&name));
        let o = run("pkg.remove", vec![json!(name)], json!({})).await;
        assert_eq!(o.ret, json!({}));

        // From the master: salt://debs/<name>.deb, cached then dpkg -i.
        let srv = dir.path().join("srv");
        std::fs::create_dir_all(srv.join("debs")).expect("mkdir srv");
        let v2 = build(dir.path(), &name, "2.0");
        std::fs::copy(&v2, srv.join(format!("debs/{name}.deb"))).expect("copy deb");
        let master: std::sync::Arc<dyn crate::files::Ask> =
            std::sync::Arc::new(crate::files::fake::FakeMaster::serving("base", &srv));
        let mut ctx = crate::exec::testutil::ctx(
            "pkg.install",
            vec![],
            json!({"sources": [{ name.clone(): format!("salt://debs/{name}.deb") }]}),
        );
        ctx.files = std::sync::Arc::new(FileClient::new(Some(master), dir.path().join("cache")));
        let o = crate::exec::Registry::new().call(ctx).await;
        assert_eq!(
            o.ret,
            json!({ name.clone(): {"old": "", "new": "2.0"} }),
            "{o:?}"
        );
        let o = run("pkg.purge", vec![json!(name)], json!({})).await;
        assert_eq!(
            o.ret["installed"],
            json!({ name.clone(): {"old": "2.0", "new": ""} })
        );
        assert!(!dpkg_installed(&name));
        let o = run(
            "pkg.install",
            vec![],
            json!({"sources": [{"x": "/nonexistent.deb"}]}),
        )
        .await;
        assert!(!o.success);
        let o = run("pkg.install", vec![json!("-oops")], json!({})).await;
        assert!(!o.success);
        assert!(o
            .ret
            .as_str()
            .is_some_and(|s| s.contains("invalid package name")));
    }
}
