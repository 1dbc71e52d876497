//! The beacons' evaluations, pure: each takes this tick's readings, the
//! beacon's parsed config and what it remembers from earlier ticks, and
//! returns the data of the events to fire (Salt's beacon return: a list of
//! dicts, a `tag` key being the sub-tag). No clock and no I/O here, so every
//! rule (fires once per crossing, re-arms, fires every interval while
//! exceeded) is tested without timing; the readers that feed them live in
//! [`super::read`].
//!
//! Semantics follow Salt's beacon modules: `diskusage` and `memusage` fire
//! at every run while at or above their threshold (reactors written for
//! Salt expect the repeats; `interval` bounds the rate), or with Brine's
//! `onchangeonly` once per upward crossing ([`only_crossings`]); `load` fires every
//! run while outside a range, or with `onchangeonly` once per crossing;
//! `service` reports every run, or with `onchangeonly` once per change;
//! `inotify` (here by polling) reports each change seen; `status` reports
//! every run.

use regex::Regex;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// `load`'s config: `averages: {1m: [lo, hi], 5m: .., 15m: ..}`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadCfg {
    /// `[lo, hi]` per window, in the order 1m, 5m, 15m (`None`: unchecked).
    pub ranges: [Option<(f64, f64)>; 3],
    pub onchangeonly: bool,
    pub emitatstartup: bool,
}

/// The averages' keys, in `/proc/loadavg` order.
pub const LOAD_KEYS: [&str; 3] = ["1m", "5m", "15m"];

/// `load`: `now` are the 1, 5 and 15 minute averages; `last` the averages
/// of the previous run (`None` at the first run). Without `onchangeonly`
/// it fires whenever an average is outside its range. With it, it fires
/// when an average goes above its upper bound (from at or below it) or
/// below its lower bound (from at or above it): once per crossing; at the
/// first run it fires when out of range unless `emitatstartup` is false
/// (the option's documented meaning; Salt's own code seeds its memory with
/// the first reading and so never fires at start-up).
pub fn load(cfg: &LoadCfg, now: [f64; 3], last: &mut Option<[f64; 3]>) -> Vec<Value> {
    let outside = |i: usize, v: f64| cfg.ranges[i].is_some_and(|(lo, hi)| v < lo || v > hi);
    let fire = if !cfg.onchangeonly {
        (0..3).any(|i| outside(i, now[i]))
    } else {
        match *last {
            None => cfg.emitatstartup && (0..3).any(|i| outside(i, now[i])),
            Some(prev) => (0..3).any(|i| {
                cfg.ranges[i].is_some_and(|(lo, hi)| {
                    (now[i] > hi && prev[i] <= hi) || (now[i] < lo && prev[i] >= lo)
                })
            }),
        }
    };
    *last = Some(now);
    if fire {
        vec![json!({"1m": now[0], "5m": now[1], "15m": now[2]})]
    } else {
        vec![]
    }
}

/// `memusage`: fires `{memusage: percent}` while `percent >= threshold`.
pub fn memusage(threshold: f64, percent: f64) -> Vec<Value> {
    if percent >= threshold {
        vec![json!({ "memusage": round1(percent) })]
    } else {
        vec![]
    }
}

/// One `diskusage` watch: a mount point (a regular expression matched
/// against the whole mount point, as Salt does) and its threshold.
#[derive(Debug, Clone)]
pub struct DiskWatch {
    pub mount: String,
    pub re: Regex,
    pub percent: f64,
}

/// `diskusage`: `usage` is `(mount point, percent used)` per mounted
/// filesystem; fires `{diskusage: percent, mount: mount point}` for each
/// watched one at or above its threshold.
pub fn diskusage(watches: &[DiskWatch], usage: &[(String, f64)]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for w in watches {
        for (mount, pct) in usage {
            if w.re.is_match(mount) && *pct >= w.percent && seen.insert(mount.clone()) {
                out.push(json!({"diskusage": round1(*pct), "mount": mount}));
            }
        }
    }
    out
}

/// `onchangeonly` for the threshold beacons (`diskusage`, `memusage`), a
/// Brine option named after `load`'s and `service`'s: of this run's
/// events, keep those whose key (the mount point, or the beacon) was not
/// above its threshold at the previous run, and remember which keys are
/// above now. So a beacon fires once when its value crosses the threshold
/// upward and fires again only after it went below and crossed again;
/// without the option Salt's rule (fire every run while above) holds.
pub fn only_crossings(
    fired: Vec<Value>,
    key: impl Fn(&Value) -> String,
    above: &mut BTreeSet<String>,
) -> Vec<Value> {
    let now: BTreeSet<String> = fired.iter().map(&key).collect();
    let out = fired
        .into_iter()
        .filter(|e| !above.contains(&key(e)))
        .collect();
    *above = now;
    out
}

/// One service the `service` beacon watches.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceCfg {
    pub onchangeonly: bool,
    pub emitatstartup: bool,
    /// Seconds a change must last before it is reported (`onchangeonly`).
    pub delay: f64,
    /// A pid file: when the service is not running and this file exists,
    /// the event says `uncleanshutdown: true`.
    pub uncleanshutdown: Option<String>,
}

/// What the `service` beacon remembers of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceLast {
    pub running: bool,
    /// When a change waiting for its `delay` was seen (seconds).
    pub pending_since: Option<f64>,
}

/// `service`: `running` is whether a process of that name runs, `unclean`
/// whether its pid file is there, `now` seconds on any monotonic clock.
/// Each event is `{<name>: {running: bool[, uncleanshutdown: bool]},
/// service_name: <name>, tag: <name>}` as Salt's.
pub fn service(
    name: &str,
    cfg: &ServiceCfg,
    running: bool,
    unclean: bool,
    now: f64,
    last: &mut Option<ServiceLast>,
) -> Vec<Value> {
    let mut inner = Map::new();
    inner.insert("running".into(), json!(running));
    if cfg.uncleanshutdown.is_some() && !running {
        inner.insert("uncleanshutdown".into(), json!(unclean));
    }
    let mut event = Map::new();
    event.insert(name.to_string(), Value::Object(inner));
    event.insert("service_name".into(), json!(name));
    event.insert("tag".into(), json!(name));
    let event = Value::Object(event);
    if !cfg.onchangeonly {
        return vec![event];
    }
    let delayed = cfg.delay > 0.0;
    match last {
        None => {
            *last = Some(ServiceLast {
                running,
                pending_since: delayed.then_some(now),
            });
            if cfg.emitatstartup && !delayed {
                return vec![event];
            }
            vec![]
        }
        Some(l) => {
            if l.running != running {
                l.running = running;
                if !delayed {
                    l.pending_since = None;
                    return vec![event];
                }
                l.pending_since = Some(now);
            }
            match l.pending_since {
                Some(t) if now - t > cfg.delay => {
                    l.pending_since = None;
                    vec![event]
                }
                _ => vec![],
            }
        }
    }
}

/// What the polling `inotify` beacon knows of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub mtime_ns: i128,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub ino: u64,
    pub is_dir: bool,
}

/// Every path under one watch, with its stat.
pub type Snapshot = BTreeMap<String, Stat>;

/// One `inotify` watch (`files: {path: {mask, recurse, auto_add, exclude}}`).
#[derive(Debug, Clone)]
pub struct FileWatch {
    pub path: String,
    /// The changes polling can see (`create`, `delete`, `modify`,
    /// `attrib`, `delete_self`) that the mask asks for, each with the
    /// name it is reported as (`IN_MODIFY`, or `IN_CLOSE_WRITE` when the
    /// mask said `close_write`).
    pub mask: BTreeMap<String, String>,
    pub recurse: bool,
    pub exclude: Vec<Exclude>,
}

/// A path (prefix) or a regular expression not to report.
#[derive(Debug, Clone)]
pub enum Exclude {
    Prefix(String),
    Re(Regex),
}

impl Exclude {
    fn hides(&self, path: &str) -> bool {
        match self {
            Exclude::Prefix(p) => path.starts_with(p.as_str()),
            Exclude::Re(r) => r.is_match(path),
        }
    }
}

/// The directory a path's event is reported under (pyinotify's
/// `event.path`): the watched path itself, or the directory holding it.
fn parent_of(w: &FileWatch, p: &str) -> String {
    if p == w.path {
        return p.to_string();
    }
    match p.rsplit_once('/') {
        Some(("", _)) => "/".into(),
        Some((dir, _)) => dir.to_string(),
        None => w.path.clone(),
    }
}

/// `inotify` by polling: compares this run's snapshot of a watch with the
/// previous one (none at the first run: nothing fires, the first snapshot
/// is the baseline). A new path is `IN_CREATE`, a path gone `IN_DELETE`
/// (the watched path itself: `IN_DELETE_SELF`), a changed size or mtime
/// `IN_MODIFY`, a changed mode or owner `IN_ATTRIB`; a path replaced by
/// another file (new inode) is `IN_DELETE` then `IN_CREATE`. Only the
/// changes in the watch's mask are reported, each as Salt's
/// `{tag: <dir>, path: <full path>, change: IN_X}`.
pub fn inotify(w: &FileWatch, prev: Option<&Snapshot>, now: &Snapshot) -> Vec<Value> {
    let Some(prev) = prev else { return vec![] };
    let mut out = Vec::new();
    let mut push = |change: &str, p: &str| {
        let key = change.trim_start_matches("IN_").to_ascii_lowercase();
        let Some(name) = w.mask.get(&key) else { return };
        if w.exclude.iter().any(|e| e.hides(p)) {
            return;
        }
        out.push(json!({"tag": parent_of(w, p), "path": p, "change": name}));
    };
    let gone = |p: &str| {
        if p == w.path {
            "IN_DELETE_SELF"
        } else {
            "IN_DELETE"
        }
    };
    for (p, old) in prev {
        match now.get(p) {
            None => push(gone(p), p),
            Some(new) if new.ino != old.ino || new.is_dir != old.is_dir => {
                push(gone(p), p);
                push("IN_CREATE", p);
            }
            Some(new) => {
                if !new.is_dir && (new.size != old.size || new.mtime_ns != old.mtime_ns) {
                    push("IN_MODIFY", p);
                }
                if (new.mode, new.uid, new.gid) != (old.mode, old.uid, old.gid) {
                    push("IN_ATTRIB", p);
                }
            }
        }
    }
    for p in now.keys() {
        if !prev.contains_key(p) {
            push("IN_CREATE", p);
        }
    }
    out
}

/// `status`: `(function, items)` pairs and a way to call `status.<fun>`;
/// one event a run, tagged with the time as Salt's, whose `data` holds
/// each function's full return (`all`) or the items asked for.
pub fn status(
    wanted: &[(String, Vec<Value>)],
    stamp: &str,
    call: &mut dyn FnMut(&str) -> Option<Value>,
) -> Vec<Value> {
    let mut data = Map::new();
    for (fun, items) in wanted {
        let Some(ret) = call(fun) else { continue };
        let mut picked = Map::new();
        let mut all = false;
        for item in items {
            match item {
                Value::String(s) if s == "all" => all = true,
                Value::String(s) => {
                    if let Some(v) = ret.get(s) {
                        picked.insert(s.clone(), v.clone());
                    }
                }
                Value::Number(n) => {
                    if let Some(v) = n.as_u64().and_then(|i| ret.get(i as usize)) {
                        picked.insert(n.to_string(), v.clone());
                    }
                }
                _ => {}
            }
        }
        data.insert(fun.clone(), if all { ret } else { Value::Object(picked) });
    }
    vec![json!({"tag": stamp, "data": data})]
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcfg(onchange: bool, startup: bool) -> LoadCfg {
        LoadCfg {
            ranges: [Some((0.0, 2.0)), None, Some((0.1, 1.0))],
            onchangeonly: onchange,
            emitatstartup: startup,
        }
    }

    #[test]
    fn load_without_onchangeonly_fires_every_run_out_of_range() {
        let c = lcfg(false, true);
        let mut last = None;
        assert!(
            load(&c, [1.0, 9.0, 0.5], &mut last).is_empty(),
            "5m unchecked"
        );
        let ev = load(&c, [3.0, 0.0, 0.5], &mut last);
        assert_eq!(ev, vec![json!({"1m": 3.0, "5m": 0.0, "15m": 0.5})]);
        assert_eq!(load(&c, [3.0, 0.0, 0.5], &mut last).len(), 1);
        assert_eq!(load(&c, [1.0, 0.0, 0.05], &mut last).len(), 1, "below 15m");
    }

    #[test]
    fn load_onchangeonly_fires_once_per_crossing_and_rearms() {
        let c = lcfg(true, true);
        let mut last = None;
        assert!(load(&c, [1.0, 0.0, 0.5], &mut last).is_empty(), "in range");
        assert_eq!(load(&c, [2.5, 0.0, 0.5], &mut last).len(), 1, "crossed up");
        assert!(load(&c, [3.0, 0.0, 0.5], &mut last).is_empty(), "stays up");
        assert!(load(&c, [1.5, 0.0, 0.5], &mut last).is_empty(), "back in");
        assert_eq!(load(&c, [2.1, 0.0, 0.5], &mut last).len(), 1, "re-armed");
        assert_eq!(load(&c, [1.0, 0.0, 0.05], &mut last).len(), 1, "15m down");
        assert!(load(&c, [1.0, 0.0, 0.01], &mut last).is_empty());
    }

    #[test]
    fn load_emitatstartup() {
        let mut last = None;
        assert_eq!(load(&lcfg(true, true), [5.0, 0.0, 0.5], &mut last).len(), 1);
        let mut last = None;
        assert!(load(&lcfg(true, false), [5.0, 0.0, 0.5], &mut last).is_empty());
        assert!(load(&lcfg(true, false), [5.0, 0.0, 0.5], &mut last).is_empty());
    }

    #[test]
    fn memusage_threshold() {
        assert!(memusage(63.0, 62.9).is_empty());
        assert_eq!(memusage(63.0, 63.04), vec![json!({"memusage": 63.0})]);
        assert_eq!(memusage(63.0, 80.0).len(), 1);
    }

    #[test]
    fn only_crossings_fires_once_per_upward_crossing_per_key() {
        let mount = |e: &Value| e["mount"].as_str().unwrap_or_default().to_string();
        let ev = |m: &str| json!({"diskusage": 70.0, "mount": m});
        let mut above = BTreeSet::new();
        let mut run = |fired: Vec<Value>| only_crossings(fired, mount, &mut above).len();
        assert_eq!(run(vec![]), 0, "below");
        assert_eq!(run(vec![ev("/a")]), 1, "/a crossed");
        assert_eq!(run(vec![ev("/a")]), 0, "/a stays above");
        assert_eq!(run(vec![ev("/a"), ev("/b")]), 1, "/b crossed, /a still up");
        assert_eq!(run(vec![ev("/b")]), 0, "/a went below");
        assert_eq!(run(vec![ev("/a"), ev("/b")]), 1, "/a crossed again");
        assert_eq!(run(vec![]), 0);
        assert_eq!(run(vec![ev("/a"), ev("/b")]), 2, "both re-armed");
    }

    #[test]
    fn diskusage_matches_whole_mount_points() {
        let w = |m: &str, p: f64| DiskWatch {
            mount: m.into(),
            re: Regex::new(&format!("^(?:{m})$")).expect("re"),
            percent: p,
        };
        let usage = vec![
            ("/".to_string(), 70.0),
            ("/boot".to_string(), 10.0),
            ("/mnt/a".to_string(), 90.0),
        ];
        assert_eq!(
            diskusage(&[w("/", 63.0)], &usage),
            vec![json!({"diskusage": 70.0, "mount": "/"})]
        );
        assert!(diskusage(&[w("/boot", 50.0)], &usage).is_empty());
        let ev = diskusage(&[w("/mnt/.*", 50.0), w("/mnt/a", 10.0)], &usage);
        assert_eq!(ev, vec![json!({"diskusage": 90.0, "mount": "/mnt/a"})]);
    }

    #[test]
    fn service_every_run_or_on_change() {
        let every = ServiceCfg {
            emitatstartup: true,
            ..Default::default()
        };
        let mut last = None;
        let ev = service("nginx", &every, true, false, 0.0, &mut last);
        assert_eq!(
            ev,
            vec![json!({"nginx": {"running": true}, "service_name": "nginx", "tag": "nginx"})]
        );
        assert_eq!(
            service("nginx", &every, true, false, 1.0, &mut last).len(),
            1
        );

        let change = ServiceCfg {
            onchangeonly: true,
            emitatstartup: true,
            uncleanshutdown: Some("/run/x.pid".into()),
            ..Default::default()
        };
        let mut last = None;
        assert_eq!(service("x", &change, true, false, 0.0, &mut last).len(), 1);
        assert!(service("x", &change, true, false, 1.0, &mut last).is_empty());
        let ev = service("x", &change, false, true, 2.0, &mut last);
        assert_eq!(
            ev[0]["x"],
            json!({"running": false, "uncleanshutdown": true})
        );
        assert!(service("x", &change, false, true, 3.0, &mut last).is_empty());
        assert_eq!(service("x", &change, true, false, 4.0, &mut last).len(), 1);

        let quiet = ServiceCfg {
            onchangeonly: true,
            ..Default::default()
        };
        let mut last = None;
        assert!(service("x", &quiet, true, false, 0.0, &mut last).is_empty());
        assert_eq!(service("x", &quiet, false, false, 1.0, &mut last).len(), 1);
    }

    #[test]
    fn service_delay_waits_for_the_change_to_last() {
        let c = ServiceCfg {
            onchangeonly: true,
            emitatstartup: true,
            delay: 10.0,
            ..Default::default()
        };
        let mut last = None;
        assert!(service("x", &c, true, false, 0.0, &mut last).is_empty());
        assert_eq!(
            service("x", &c, true, false, 11.0, &mut last).len(),
            1,
            "startup, delayed"
        );
        assert!(service("x", &c, false, false, 20.0, &mut last).is_empty());
        assert!(service("x", &c, false, false, 25.0, &mut last).is_empty());
        assert_eq!(service("x", &c, false, false, 31.0, &mut last).len(), 1);
        assert!(service("x", &c, false, false, 50.0, &mut last).is_empty());
    }

    fn st(ino: u64, size: u64, mode: u32, is_dir: bool) -> Stat {
        Stat {
            mtime_ns: 1,
            size,
            mode,
            uid: 0,
            gid: 0,
            ino,
            is_dir,
        }
    }

    #[test]
    fn inotify_polling_reports_changes_in_the_mask() {
        let mask = ["create", "delete", "modify", "attrib", "delete_self"]
            .iter()
            .map(|s| (s.to_string(), format!("IN_{}", s.to_ascii_uppercase())))
            .collect();
        let w = FileWatch {
            path: "/d".into(),
            mask,
            recurse: true,
            exclude: vec![Exclude::Prefix("/d/skip".into())],
        };
        let mut a = Snapshot::new();
        a.insert("/d".into(), st(1, 0, 0o755, true));
        a.insert("/d/f".into(), st(2, 5, 0o644, false));
        a.insert("/d/g".into(), st(3, 5, 0o644, false));
        assert!(inotify(&w, None, &a).is_empty(), "baseline");
        assert!(inotify(&w, Some(&a), &a).is_empty(), "nothing changed");
        let mut b = a.clone();
        b.insert("/d/f".into(), st(2, 6, 0o644, false));
        b.insert("/d/g".into(), st(3, 5, 0o600, false));
        b.insert("/d/new".into(), st(4, 0, 0o644, false));
        b.insert("/d/skip/x".into(), st(5, 0, 0o644, false));
        let ev = inotify(&w, Some(&a), &b);
        assert_eq!(
            ev,
            vec![
                json!({"tag": "/d", "path": "/d/f", "change": "IN_MODIFY"}),
                json!({"tag": "/d", "path": "/d/g", "change": "IN_ATTRIB"}),
                json!({"tag": "/d", "path": "/d/new", "change": "IN_CREATE"}),
            ]
        );
        let c = Snapshot::new();
        let ev = inotify(&w, Some(&a), &c);
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0]["change"], "IN_DELETE_SELF");
        assert_eq!(ev[1]["change"], "IN_DELETE");

        let only_create = FileWatch {
            mask: [("create".to_string(), "IN_CREATE".to_string())]
                .into_iter()
                .collect(),
            ..w.clone()
        };
        assert_eq!(inotify(&only_create, Some(&a), &b).len(), 1);
    }

    #[test]
    fn status_picks_items() {
        let mut call = |f: &str| match f {
            "loadavg" => Some(json!({"1-min": 0.5, "5-min": 0.2, "15-min": 0.1})),
            _ => None,
        };
        let wanted = vec![
            ("loadavg".to_string(), vec![json!("1-min")]),
            ("nosuch".to_string(), vec![json!("all")]),
        ];
        let ev = status(&wanted, "2026-01-01T00:00:00", &mut call);
        assert_eq!(
            ev,
            vec![json!({"tag": "2026-01-01T00:00:00", "data": {"loadavg": {"1-min": 0.5}}})]
        );
        let all = vec![("loadavg".to_string(), vec![json!("all")])];
        let ev = status(&all, "t", &mut call);
        assert_eq!(ev[0]["data"]["loadavg"]["15-min"], 0.1);
    }
}
