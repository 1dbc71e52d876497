//! Beacons: checks the minion runs on its own, every `interval` seconds,
//! that send an event to the master when their config says so (Salt's
//! beacon system). Configured under `beacons:` in the minion config and in
//! the minion's pillar (the config wins per beacon name, as in Salt), in
//! Salt's form: a beacon name mapped to a list of single-key dicts, e.g.
//! `load: [{averages: {1m: [0.0, 2.0]}}, {interval: 10}]`.
//!
//! [`Beacons`] holds the running config (what `beacons.list` shows and
//! `beacons.add/delete/enable/disable` change, at once) and what each
//! beacon remembers between runs. The invariant: a beacon whose config is
//! bad is skipped (logged once per config, counted), never the loop; a
//! beacon fires only what its evaluation in [`checks`] returns, and the
//! loop ([`run`]) never has more than [`MAX_IN_FLIGHT`] events waiting for
//! the master (more are dropped and counted), so a beacon cannot flood.
//!
//! Events are tagged `salt/beacon/<minion id>/<beacon name>/<sub tag>` and
//! carry the minion's `id` in their data, as Salt's.

pub mod checks;
pub mod read;

use crate::files::Ask;
use crate::running::RunningJobs;
use brine_common::proto::{EventLoad, ReplyBody, RequestBody};
use checks::{DiskWatch, Exclude, FileWatch, LoadCfg, ServiceCfg, ServiceLast, Snapshot};
use regex::Regex;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The beacon modules this minion has (`beacons.list_available`).
pub const AVAILABLE: &[&str] = &[
    "diskusage",
    "inotify",
    "load",
    "memusage",
    "service",
    "status",
];

/// How often the loop looks at the beacons (Salt's `loop_interval`
/// default); a beacon without `interval` runs every tick.
pub const LOOP_INTERVAL: Duration = Duration::from_secs(1);

/// Events sent and not yet answered, at most.
pub const MAX_IN_FLIGHT: usize = 64;

/// How long one event may wait for the master's answer.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Options every beacon takes, besides its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    /// Seconds between runs.
    pub interval: f64,
    pub enabled: bool,
    /// Which module runs it (`beacon_module`, else the beacon's name), so
    /// one module can run under several names.
    pub module: String,
    /// Skip runs while a `state.*` job runs here.
    pub disable_during_state_run: bool,
}

/// A beacon module's own config, checked.
#[derive(Debug, Clone)]
pub enum Kind {
    /// The watches and `onchangeonly`.
    DiskUsage(Vec<DiskWatch>, bool),
    Load(LoadCfg),
    /// The threshold and `onchangeonly`.
    MemUsage(f64, bool),
    Service(BTreeMap<String, ServiceCfg>),
    Inotify(Vec<FileWatch>),
    Status(Vec<(String, Vec<Value>)>),
}

/// One beacon's config, checked.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub meta: Meta,
    pub kind: Kind,
}

/// Salt's list of single-key dicts as one map (a plain map, Salt's older
/// form, and an empty config are accepted too).
pub fn list_to_dict(name: &str, raw: &Value) -> Result<Map<String, Value>, String> {
    match raw {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => Ok(m.clone()),
        Value::Array(items) => {
            let mut out = Map::new();
            for item in items {
                let Value::Object(m) = item else {
                    return Err(format!(
                        "Configuration for {name} beacon must be a list of dictionaries, not {item}"
                    ));
                };
                out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            Ok(out)
        }
        other => Err(format!(
            "Configuration for {name} beacon must be a list of dictionaries, not {other}"
        )),
    }
}

fn as_bool(key: &str, v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(format!("{key} must be True or False, not {s:?}")),
        },
        Value::Number(n) => Ok(n.as_f64().is_some_and(|f| f != 0.0)),
        other => Err(format!("{key} must be True or False, not {other}")),
    }
}

fn as_f64(key: &str, v: &Value) -> Result<f64, String> {
    let f = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().trim_end_matches('%').trim().parse().ok(),
        _ => None,
    };
    f.filter(|f| f.is_finite())
        .ok_or_else(|| format!("{key} must be a number, not {v}"))
}

/// Takes `key` out of `m` as a bool.
fn take_bool(m: &mut Map<String, Value>, key: &str, default: bool) -> Result<bool, String> {
    m.remove(key)
        .filter(|v| !v.is_null())
        .map_or(Ok(default), |v| as_bool(key, &v))
}

/// Checks one beacon's config (`raw` as written under `beacons: <name>:`).
pub fn parse(name: &str, raw: &Value) -> Result<Parsed, String> {
    let mut m = list_to_dict(name, raw)?;
    let interval = match m.remove("interval").filter(|v| !v.is_null()) {
        None => LOOP_INTERVAL.as_secs_f64(),
        Some(v) => {
            let i = as_f64("interval", &v)?;
            if i <= 0.0 {
                return Err(format!("interval must be greater than 0, not {v}"));
            }
            i
        }
    };
    let enabled = take_bool(&mut m, "enabled", true)?;
    let disable_during_state_run = take_bool(&mut m, "disable_during_state_run", false)?;
    let module = match m.remove("beacon_module") {
        None | Some(Value::Null) => name.to_string(),
        Some(Value::String(s)) => s,
        Some(v) => return Err(format!("beacon_module must be a string, not {v}")),
    };
    let kind = match module.as_str() {
        "diskusage" => parse_diskusage(m)?,
        "load" => parse_load(m)?,
        "memusage" => parse_memusage(m)?,
        "service" => parse_service(m)?,
        "inotify" => parse_inotify(m)?,
        "status" => parse_status(m),
        other => {
            return Err(format!(
                "Beacon \"{other}\" is not available (available: {})",
                AVAILABLE.join(", ")
            ))
        }
    };
    Ok(Parsed {
        meta: Meta {
            interval,
            enabled,
            module,
            disable_during_state_run,
        },
        kind,
    })
}

fn unknown(beacon: &str, m: &Map<String, Value>) -> Result<(), String> {
    match m.keys().next() {
        None => Ok(()),
        Some(k) => Err(format!(
            "Configuration for {beacon} beacon: unknown option {k:?}"
        )),
    }
}

fn parse_diskusage(mut m: Map<String, Value>) -> Result<Kind, String> {
    let onchangeonly = take_bool(&mut m, "onchangeonly", false)?;
    if m.is_empty() {
        return Err(
            "Configuration for diskusage beacon requires at least one mount point (e.g. - /: 63%)"
                .into(),
        );
    }
    let mut watches = Vec::new();
    for (mount, v) in m {
        let percent = as_f64(&format!("the threshold of {mount}"), &v)?;
        let re = Regex::new(&format!("^(?:{mount})$"))
            .map_err(|e| format!("mount point {mount:?} is not a valid regular expression: {e}"))?;
        watches.push(DiskWatch { mount, re, percent });
    }
    Ok(Kind::DiskUsage(watches, onchangeonly))
}

fn parse_load(mut m: Map<String, Value>) -> Result<Kind, String> {
    let onchangeonly = take_bool(&mut m, "onchangeonly", false)?;
    let emitatstartup = take_bool(&mut m, "emitatstartup", true)?;
    let Some(Value::Object(avg)) = m.remove("averages") else {
        return Err("Averages configuration is required for load beacon (averages: {1m: [lo, hi], 5m: .., 15m: ..})".into());
    };
    unknown("load", &m)?;
    let mut ranges = [None; 3];
    for (k, v) in &avg {
        let Some(i) = checks::LOAD_KEYS.iter().position(|x| x == k) else {
            return Err(format!(
                "Configuration for load beacon: averages takes 1m, 5m or 15m, not {k:?}"
            ));
        };
        match v.as_array().map(Vec::as_slice) {
            Some([lo, hi]) => {
                let (lo, hi) = (as_f64(k, lo)?, as_f64(k, hi)?);
                if lo > hi {
                    return Err(format!("load beacon: {k}: {lo} is above {hi}"));
                }
                ranges[i] = Some((lo, hi));
            }
            _ => {
                return Err(format!(
                    "Configuration for load beacon: {k} must be a list of two numbers"
                ))
            }
        }
    }
    if ranges.iter().all(Option::is_none) {
        return Err("Configuration for load beacon: averages needs 1m, 5m or 15m".into());
    }
    Ok(Kind::Load(LoadCfg {
        ranges,
        onchangeonly,
        emitatstartup,
    }))
}

fn parse_memusage(mut m: Map<String, Value>) -> Result<Kind, String> {
    let onchangeonly = take_bool(&mut m, "onchangeonly", false)?;
    let Some(p) = m.remove("percent") else {
        return Err(
            "Configuration for memusage beacon requires percent (e.g. - percent: 63%)".into(),
        );
    };
    unknown("memusage", &m)?;
    Ok(Kind::MemUsage(as_f64("percent", &p)?, onchangeonly))
}

fn parse_service(mut m: Map<String, Value>) -> Result<Kind, String> {
    let Some(Value::Object(svcs)) = m.remove("services") else {
        return Err("Services configuration is required for service beacon (services: {name: {onchangeonly: True}})".into());
    };
    unknown("service", &m)?;
    if svcs.is_empty() {
        return Err("Configuration for service beacon: services is empty".into());
    }
    let mut out = BTreeMap::new();
    for (name, v) in svcs {
        let mut o = match v {
            Value::Null => Map::new(),
            Value::Object(o) => o,
            other => {
                return Err(format!(
                    "Configuration for service beacon: {name} must be a dictionary, not {other}"
                ))
            }
        };
        let cfg = ServiceCfg {
            onchangeonly: take_bool(&mut o, "onchangeonly", false)?,
            emitatstartup: take_bool(&mut o, "emitatstartup", true)?,
            delay: o
                .remove("delay")
                .filter(|v| !v.is_null())
                .map_or(Ok(0.0), |v| as_f64("delay", &v))?,
            uncleanshutdown: match o.remove("uncleanshutdown") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s),
                Some(v) => return Err(format!("uncleanshutdown must be a pid file path, not {v}")),
            },
        };
        unknown("service", &o)?;
        out.insert(name, cfg);
    }
    Ok(Kind::Service(out))
}

/// Polling sees these changes; the other inotify mask names are mapped
/// to the change that shows them, or refused.
fn mask_entry(name: &str) -> Result<(&'static str, String), String> {
    let n = name.trim().trim_start_matches("IN_").to_ascii_lowercase();
    let canon = match n.as_str() {
        "create" | "moved_to" => "create",
        "delete" | "moved_from" => "delete",
        "modify" | "close_write" => "modify",
        "attrib" => "attrib",
        "delete_self" | "move_self" => "delete_self",
        _ => {
            return Err(format!(
                "inotify mask {name:?} cannot be seen by polling (this minion watches files by polling; use create, delete, modify, attrib, delete_self, close_write, moved_to, moved_from or move_self)"
            ))
        }
    };
    Ok((canon, format!("IN_{}", n.to_ascii_uppercase())))
}

fn parse_inotify(mut m: Map<String, Value>) -> Result<Kind, String> {
    // Salt's options that change nothing when polling.
    m.remove("coalesce");
    let Some(Value::Object(files)) = m.remove("files") else {
        return Err(
            "Configuration for inotify beacon requires files (files: {/path: {mask: [modify]}})"
                .into(),
        );
    };
    unknown("inotify", &m)?;
    let mut watches = Vec::new();
    for (path, v) in files {
        if !path.starts_with('/') {
            return Err(format!("inotify beacon: {path:?} is not an absolute path"));
        }
        let mut o = match v {
            Value::Null => Map::new(),
            Value::Object(o) => o,
            other => {
                return Err(format!(
                    "inotify beacon: {path} must be a dictionary, not {other}"
                ))
            }
        };
        let mut mask = BTreeMap::new();
        match o.remove("mask") {
            None | Some(Value::Null) => {
                for n in ["create", "delete", "modify"] {
                    let (c, shown) = mask_entry(n)?;
                    mask.insert(c.to_string(), shown);
                }
            }
            Some(Value::Array(names)) => {
                for n in names {
                    let Value::String(n) = n else {
                        return Err(format!(
                            "inotify beacon: {path}: mask entries are names, not {n}"
                        ));
                    };
                    let (c, shown) = mask_entry(&n)?;
                    mask.insert(c.to_string(), shown);
                }
            }
            Some(v) => {
                return Err(format!(
                    "inotify beacon: {path}: mask must be a list, not {v}"
                ))
            }
        }
        let recurse = take_bool(&mut o, "recurse", false)?;
        o.remove("auto_add");
        let mut exclude = Vec::new();
        match o.remove("exclude") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for it in items {
                    match it {
                        Value::String(s) => exclude.push(Exclude::Prefix(s)),
                        Value::Object(e) => {
                            for (p, opt) in e {
                                let regex = opt
                                    .get("regex")
                                    .map_or(Ok(false), |v| as_bool("regex", v))?;
                                exclude.push(if regex {
                                    Exclude::Re(Regex::new(&p).map_err(|e| {
                                        format!("inotify beacon: exclude {p:?}: {e}")
                                    })?)
                                } else {
                                    Exclude::Prefix(p)
                                });
                            }
                        }
                        other => {
                            return Err(format!("inotify beacon: {path}: bad exclude {other}"))
                        }
                    }
                }
            }
            Some(v) => {
                return Err(format!(
                    "inotify beacon: {path}: exclude must be a list, not {v}"
                ))
            }
        }
        unknown("inotify", &o)?;
        watches.push(FileWatch {
            path: path.trim_end_matches('/').to_string().replace("//", "/"),
            mask,
            recurse,
            exclude,
        });
    }
    for w in &mut watches {
        if w.path.is_empty() {
            w.path = "/".into();
        }
    }
    Ok(Kind::Inotify(watches))
}

fn parse_status(m: Map<String, Value>) -> Kind {
    if m.is_empty() {
        return Kind::Status(vec![
            ("loadavg".into(), vec![json!("all")]),
            ("meminfo".into(), vec![json!("all")]),
        ]);
    }
    Kind::Status(
        m.into_iter()
            .map(|(f, v)| {
                let items = match v {
                    Value::Array(a) => a,
                    Value::Null => vec![json!("all")],
                    other => vec![other],
                };
                (f, items)
            })
            .collect(),
    )
}

/// What one beacon remembers between runs.
#[derive(Debug, Default)]
enum Memory {
    #[default]
    Nothing,
    Load(Option<[f64; 3]>),
    Service(BTreeMap<String, Option<ServiceLast>>),
    /// What a threshold beacon with `onchangeonly` saw above its threshold.
    Above(std::collections::BTreeSet<String>),
    Files(Vec<Option<Snapshot>>),
}

/// One configured beacon in the loop.
struct Slot {
    /// The config it was parsed from (a new config resets the memory).
    raw: Value,
    parsed: Result<Parsed, String>,
    last_run: Option<Instant>,
    memory: Memory,
}

impl Slot {
    /// A beacon met for the first time or with a new config: checked
    /// (a bad one is said once and counted), with nothing remembered.
    fn new(name: &str, raw: &Value, bad: &mut u64) -> Self {
        let parsed = parse(name, raw);
        if let Err(e) = &parsed {
            *bad += 1;
            warn!(beacon = %name, error = %e, "beacon config is invalid; beacon skipped");
        }
        Slot {
            raw: raw.clone(),
            parsed,
            last_run: None,
            memory: Memory::Nothing,
        }
    }
}

#[derive(Default)]
struct Inner {
    /// `beacons:` of the minion config, as changed by `beacons.*`.
    opts: Map<String, Value>,
    /// `beacons:` of the pillar, as last seen.
    pillar: Map<String, Value>,
    slots: BTreeMap<String, Slot>,
    /// Configs found bad, counted once per config seen.
    bad: u64,
}

/// The running beacon config and each beacon's memory.
pub struct Beacons {
    inner: Mutex<Inner>,
    /// Where `beacons.save` writes (`<config dir>/minion.d/beacons.conf`).
    save_path: Option<PathBuf>,
    /// The jobs running here (`disable_during_state_run`).
    running: Option<Arc<RunningJobs>>,
}

/// What a `beacons.*` change did: Salt's `{comment, result}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub result: bool,
    pub comment: String,
}

impl Change {
    fn ok(comment: String) -> Self {
        Change {
            result: true,
            comment,
        }
    }
    fn fail(comment: String) -> Self {
        Change {
            result: false,
            comment,
        }
    }
    pub fn to_value(&self) -> Value {
        json!({"comment": self.comment, "result": self.result})
    }
}

fn is_enabled_key(k: &str) -> bool {
    k == "enabled"
}

/// Sets `enabled` in one beacon's config, in the form it is written in.
fn set_enabled(raw: &mut Value, on: bool) {
    match raw {
        Value::Array(items) => {
            for it in items.iter_mut() {
                if let Some(o) = it.as_object_mut().filter(|o| o.contains_key("enabled")) {
                    o.insert("enabled".into(), json!(on));
                    return;
                }
            }
            items.push(json!({ "enabled": on }));
        }
        Value::Object(o) => {
            o.insert("enabled".into(), json!(on));
        }
        other => *other = json!([{ "enabled": on }]),
    }
}

impl Beacons {
    /// Beacons from the config's `beacons:`; `save_path` is where
    /// `beacons.save` writes; `running` the jobs table the loop checks for
    /// `disable_during_state_run`.
    pub fn new(
        opts: &Value,
        save_path: Option<PathBuf>,
        running: Option<Arc<RunningJobs>>,
    ) -> Self {
        Beacons {
            inner: Mutex::new(Inner {
                opts: opts.as_object().cloned().unwrap_or_default(),
                ..Inner::default()
            }),
            save_path,
            running,
        }
    }

    /// `<dir of the main config file>/minion.d/beacons.conf`.
    pub fn save_path_for(main_file: &std::path::Path) -> Option<PathBuf> {
        let dir = main_file.parent()?;
        (!dir.as_os_str().is_empty()).then(|| dir.join("minion.d").join("beacons.conf"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        brine_common::sync::lock(&self.inner)
    }

    /// Takes the pillar's `beacons:` (not a mapping: ignored, with a
    /// warning, as Salt refuses it).
    pub fn set_pillar(&self, pillar: &Value) {
        let p = match pillar.get("beacons") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                warn!(got = %other, "pillar beacons: is not a mapping; ignored");
                Map::new()
            }
        };
        let mut g = self.lock();
        if g.pillar != p {
            g.pillar = p;
        }
    }

    /// The beacons config: pillar's, then the config's over it.
    pub fn list(&self, include_pillar: bool, include_opts: bool) -> Map<String, Value> {
        let g = self.lock();
        let mut out = Map::new();
        if include_pillar {
            out.extend(g.pillar.clone());
        }
        if include_opts {
            out.extend(g.opts.clone());
        }
        out
    }

    /// How many bad beacon configs were met (each once).
    pub fn bad_configs(&self) -> u64 {
        self.lock().bad
    }

    pub fn add(&self, name: &str, data: &Value, test: bool) -> Change {
        let merged = self.list(true, true);
        if merged.contains_key(name) {
            return Change::ok(format!("Beacon {name} is already configured."));
        }
        if let Err(e) = parse(name, data) {
            let module = list_to_dict(name, data)
                .ok()
                .and_then(|m| {
                    m.get("beacon_module")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| name.to_string());
            if !AVAILABLE.contains(&module.as_str()) {
                return Change::fail(format!("Beacon \"{module}\" is not available."));
            }
            return Change::fail(format!(
                "Beacon {name} configuration invalid, not adding.\n{e}"
            ));
        }
        if test {
            return Change::ok(format!("Beacon: {name} would be added."));
        }
        self.lock().opts.insert(name.to_string(), data.clone());
        Change::ok(format!("Added beacon: {name}."))
    }

    pub fn modify(&self, name: &str, data: &Value, test: bool) -> Change {
        let current = self.lock().opts.get(name).cloned();
        let Some(current) = current else {
            return Change::fail(format!("Beacon {name} is not configured."));
        };
        if &current == data {
            return Change::ok(format!("Job {name} in correct state"));
        }
        if let Err(e) = parse(name, data) {
            return Change::fail(format!(
                "Beacon {name} configuration invalid, not modifying.\n{e}"
            ));
        }
        if test {
            return Change::ok(format!("Beacon: {name} would be modified."));
        }
        self.lock().opts.insert(name.to_string(), data.clone());
        Change::ok(format!("Modified beacon: {name}."))
    }

    pub fn delete(&self, name: &str, test: bool) -> Change {
        let mut g = self.lock();
        if !g.opts.contains_key(name) {
            if g.pillar.contains_key(name) {
                return Change::fail(format!(
                    "Cannot delete beacon item {name}, it is configured in pillar."
                ));
            }
            return Change::fail(format!("Beacon {name} is not configured."));
        }
        if test {
            return Change::ok(format!("Beacon: {name} would be deleted."));
        }
        g.opts.remove(name);
        Change::ok(format!("Deleted beacon: {name}."))
    }

    /// Turns all beacons (`name` `None`) or one on or off.
    pub fn set_enabled(&self, name: Option<&str>, on: bool, test: bool) -> Change {
        let word = if on { "Enabled" } else { "Disabled" };
        let verb = if on { "enabled" } else { "disabled" };
        let mut g = self.lock();
        let Some(name) = name else {
            if test {
                return Change::ok(format!("Beacons would be {verb}."));
            }
            g.opts.insert("enabled".into(), json!(on));
            return Change::ok(format!("{word} beacons on minion."));
        };
        if is_enabled_key(name) || !(g.opts.contains_key(name) || g.pillar.contains_key(name)) {
            return Change::fail(format!("Beacon {name} is not currently configured."));
        }
        if !g.opts.contains_key(name) {
            return Change::fail(format!(
                "Cannot {} beacon item {name}, it is configured in pillar.",
                if on { "enable" } else { "disable" }
            ));
        }
        if test {
            return Change::ok(format!("Beacon {name} would be {verb}."));
        }
        if let Some(raw) = g.opts.get_mut(name) {
            set_enabled(raw, on);
        }
        Change::ok(format!("{word} beacon {name} on minion."))
    }

    /// `beacons.reset`: forget the beacons of the config and those added
    /// at run time (as Salt's reset empties `opts['beacons']`); the
    /// pillar's stay. Nothing is written: a restart reads the config files
    /// again.
    pub fn reset(&self, test: bool) -> Change {
        if test {
            return Change::ok("Beacons would be reset.".into());
        }
        self.lock().opts.clear();
        Change::ok("Beacon configuration reset.".into())
    }

    /// Writes the config's beacons (not the pillar's) to
    /// `<config dir>/minion.d/beacons.conf`, as Salt does.
    pub fn save(&self) -> Change {
        let Some(path) = &self.save_path else {
            return Change::fail(
                "Unable to write beacons: the minion's config directory is unknown".into(),
            );
        };
        let opts = self.lock().opts.clone();
        let text = if opts.is_empty() {
            String::new()
        } else {
            match serde_norway::to_string(&json!({ "beacons": opts })) {
                Ok(t) => t,
                Err(e) => return Change::fail(format!("Unable to write to beacons file: {e}")),
            }
        };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("conf.tmp");
            std::fs::write(&tmp, text.as_bytes())?;
            std::fs::rename(&tmp, path)
        };
        match write() {
            Ok(()) => Change::ok(format!("Beacons saved to {}.", path.display())),
            Err(e) => Change::fail(format!(
                "Unable to write to beacons file at {}: {e}",
                path.display()
            )),
        }
    }

    fn state_running(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.list().iter().any(|j| j.fun.starts_with("state.")))
    }

    /// One pass of the loop at `now`: every beacon that is due runs, and
    /// the events they fire come back, tagged and shaped for `id`.
    pub fn tick(&self, now: Instant, id: &str) -> Vec<EventLoad> {
        let merged = self.list(true, true);
        let mut g = self.lock();
        g.slots.retain(|k, _| merged.contains_key(k));
        if merged
            .get("enabled")
            .is_some_and(|v| as_bool("enabled", v) == Ok(false))
        {
            return vec![];
        }
        let mut out = Vec::new();
        let mut procs: Option<Result<std::collections::BTreeSet<String>, String>> = None;
        let state_running = self.state_running();
        let mut bad = 0;
        for (name, raw) in merged.iter().filter(|(k, _)| !is_enabled_key(k)) {
            let slot = g
                .slots
                .entry(name.clone())
                .or_insert_with(|| Slot::new(name, raw, &mut bad));
            if &slot.raw != raw {
                *slot = Slot::new(name, raw, &mut bad);
            }
            let Ok(p) = &slot.parsed else { continue };
            if !p.meta.enabled || (p.meta.disable_during_state_run && state_running) {
                continue;
            }
            let due = slot.last_run.is_none_or(|t| {
                now.saturating_duration_since(t).as_secs_f64() + 0.05 >= p.meta.interval
            });
            if !due {
                continue;
            }
            slot.last_run = Some(now);
            let fired = match run_one(&p.kind, &mut slot.memory, now, &mut procs) {
                Ok(f) => f,
                Err(e) => {
                    debug!(beacon = %name, error = %e, "beacon could not read the system");
                    continue;
                }
            };
            out.extend(fired.into_iter().map(|d| shape(id, name, d)));
        }
        g.bad += bad;
        out
    }
}

/// Salt's event for one beacon return: tag
/// `salt/beacon/<id>/<name>/<data's tag>`, the data without `tag`, with `id`.
pub fn shape(id: &str, name: &str, data: Value) -> EventLoad {
    let mut data = match data {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("data".into(), other);
            m
        }
    };
    let sub = match data.remove("tag") {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    data.entry("id").or_insert_with(|| json!(id));
    EventLoad {
        tag: format!("salt/beacon/{id}/{name}/{sub}"),
        data: Value::Object(data),
    }
}

/// Seconds since a fixed point, for the `service` beacon's `delay`.
fn secs(now: Instant) -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    now.saturating_duration_since(*START.get_or_init(Instant::now))
        .as_secs_f64()
}

/// A threshold beacon's events, kept once per crossing with `onchangeonly`.
fn crossings(
    onchangeonly: bool,
    fired: Vec<Value>,
    memory: &mut Memory,
    key: impl Fn(&Value) -> String,
) -> Vec<Value> {
    if !onchangeonly {
        return fired;
    }
    if !matches!(memory, Memory::Above(_)) {
        *memory = Memory::Above(Default::default());
    }
    match memory {
        Memory::Above(above) => checks::only_crossings(fired, key, above),
        _ => fired,
    }
}

fn run_one(
    kind: &Kind,
    memory: &mut Memory,
    now: Instant,
    procs: &mut Option<Result<std::collections::BTreeSet<String>, String>>,
) -> Result<Vec<Value>, String> {
    Ok(match kind {
        Kind::Load(cfg) => {
            if !matches!(memory, Memory::Load(_)) {
                *memory = Memory::Load(None);
            }
            let Memory::Load(last) = memory else {
                return Ok(vec![]);
            };
            checks::load(cfg, read::loadavg()?, last)
        }
        Kind::MemUsage(t, onchange) => {
            let fired = checks::memusage(*t, read::mem_percent()?);
            crossings(*onchange, fired, memory, |_| String::new())
        }
        Kind::DiskUsage(w, onchange) => {
            let fired = checks::diskusage(w, &read::disk_usage()?);
            crossings(*onchange, fired, memory, |e| {
                e["mount"].as_str().unwrap_or_default().to_string()
            })
        }
        Kind::Service(svcs) => {
            let names = procs
                .get_or_insert_with(read::process_names)
                .as_ref()
                .map_err(Clone::clone)?;
            if !matches!(memory, Memory::Service(_)) {
                *memory = Memory::Service(BTreeMap::new());
            }
            let Memory::Service(lasts) = memory else {
                return Ok(vec![]);
            };
            let mut out = Vec::new();
            for (name, cfg) in svcs {
                let running = names.contains(name);
                let unclean = cfg
                    .uncleanshutdown
                    .as_deref()
                    .is_some_and(|f| std::path::Path::new(f).exists());
                let last = lasts.entry(name.clone()).or_default();
                out.extend(checks::service(
                    name,
                    cfg,
                    running,
                    unclean,
                    secs(now),
                    last,
                ));
            }
            out
        }
        Kind::Inotify(watches) => {
            if !matches!(memory, Memory::Files(v) if v.len() == watches.len()) {
                *memory = Memory::Files(vec![None; watches.len()]);
            }
            let Memory::Files(snaps) = memory else {
                return Ok(vec![]);
            };
            let mut out = Vec::new();
            for (w, prev) in watches.iter().zip(snaps.iter_mut()) {
                let (now_snap, capped) = read::snapshot(w);
                if capped {
                    debug!(path = %w.path, max = read::MAX_WATCHED_PATHS, "inotify beacon: too many paths; the rest are not watched");
                }
                out.extend(checks::inotify(w, prev.as_ref(), &now_snap));
                *prev = Some(now_snap);
            }
            out
        }
        Kind::Status(wanted) => {
            let stamp = chrono::Utc::now()
                .format("%Y-%m-%dT%H:%M:%S%.6f")
                .to_string();
            checks::status(wanted, &stamp, &mut read::status_fun)
        }
    })
}

/// Sends one event to the master and waits for its answer: `Ok` is
/// success; a refusal or no answer is an error saying why.
pub async fn send_event(master: &dyn Ask, ev: EventLoad, timeout: Duration) -> Result<(), String> {
    match master.ask(RequestBody::Event(ev), timeout).await {
        Ok(ReplyBody::Ok) => Ok(()),
        Ok(ReplyBody::Refused(r)) => Err(r.to_string()),
        Ok(_) => Err("the master answered the event with something other than Ok".into()),
        Err(e) => Err(format!("sending the event to the master: {e}")),
    }
}

/// The beacon loop: every [`LOOP_INTERVAL`] takes the pillar's beacons,
/// runs the beacons that are due (on a blocking thread: they read `/proc`
/// and walk directories) and sends what they fire to the master.
pub async fn run(
    beacons: Arc<Beacons>,
    id: String,
    pillar: Arc<RwLock<Value>>,
    master: Arc<dyn Ask>,
    shutdown: CancellationToken,
) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut tick = tokio::time::interval(LOOP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut dropped: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot = brine_common::sync::read(&pillar).clone();
        beacons.set_pillar(&snapshot);
        if beacons.list(true, true).is_empty() {
            continue;
        }
        let (b, i) = (beacons.clone(), id.clone());
        let events = match tokio::task::spawn_blocking(move || b.tick(Instant::now(), &i)).await {
            Ok(ev) => ev,
            Err(e) => {
                warn!(error = %e, "beacon pass failed");
                continue;
            }
        };
        for ev in events {
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                dropped += 1;
                warn!(tag = %ev.tag, dropped, "too many beacon events waiting for the master; event dropped");
                continue;
            };
            let master = master.clone();
            tokio::spawn(async move {
                let tag = ev.tag.clone();
                match send_event(master.as_ref(), ev, EVENT_TIMEOUT).await {
                    Ok(()) => debug!(%tag, "beacon event sent"),
                    Err(e) => warn!(%tag, error = %e, "beacon event not delivered"),
                }
                drop(permit);
            });
        }
    }
}

#[cfg(test)]
mod tests;
