//! From a fleet file to the fleet's daemons: which datacenter each host is
//! in, which syndic or master every daemon reports to (consistent hashing
//! over a datacenter's syndics), and every check an operator needs before
//! anything is written.
//!
//! Invariant: [`resolve`] either returns every daemon of the fleet with its
//! upstream, listen address and ssh access fully decided, or every problem
//! it found (never the first one only), each naming the datacenter and id.
//! The result depends only on the file and the rosters it reads: the same
//! input gives the same daemons in the same order.

use brine_common::ring::SyndicRing as Ring;

/// Virtual nodes per syndic: enough for an even spread over a handful of
/// syndics, cheap to build for hundreds.
const VNODES: u32 = 160;
use crate::spec::{DatacenterSpec, Defaults, FleetFile, NodeSpec, Opts, RosterEntry};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Salt's default publish port.
pub const PUBLISH_PORT: u16 = 4505;
/// Salt's default return port (what minions and syndics connect to).
pub const RET_PORT: u16 = 4506;
/// The roster's default ssh port.
pub const SSH_PORT: u16 = 22;
/// The roster's default ssh user.
pub const SSH_USER: &str = "root";

/// What a daemon is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The top master (`salt-master`).
    Master,
    /// A syndic (`salt-syndic`, master config).
    Syndic,
    /// A minion (`salt-minion`).
    Minion,
}

impl Kind {
    /// `master`, `syndic` or `minion`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Master => "master",
            Kind::Syndic => "syndic",
            Kind::Minion => "minion",
        }
    }

    /// The binary that runs it.
    pub fn binary(self) -> &'static str {
        match self {
            Kind::Master => "salt-master",
            Kind::Syndic => "salt-syndic",
            Kind::Minion => "salt-minion",
        }
    }

    /// The config file it reads in its config directory (a syndic reads
    /// the master config, as in Salt).
    pub fn config_name(self) -> &'static str {
        match self {
            Kind::Master | Kind::Syndic => "master",
            Kind::Minion => "minion",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the deployer reaches a daemon's host over SSH (a Salt roster entry).
#[derive(Debug, Clone, PartialEq)]
pub struct Ssh {
    /// Roster `host`.
    pub host: String,
    /// Roster `port`.
    pub port: u16,
    /// Roster `user`.
    pub user: String,
    /// Every other roster key (`priv`, `sudo`, `passwd`, ...).
    pub options: Opts,
}

/// Where a master or syndic listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Salt's `interface`.
    pub interface: String,
    /// `publish_port`.
    pub publish_port: u16,
    /// `ret_port`.
    pub ret_port: u16,
}

/// The master (top or syndic) a daemon reports to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Its id.
    pub id: String,
    /// Its address (`master` / `syndic_master`).
    pub host: String,
    /// Its `ret_port` (`master_port` / `syndic_master_port`).
    pub port: u16,
}

/// A config file of a daemon: its text and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// The file name in the daemon's config directory (`master`/`minion`).
    pub name: String,
    /// Where it is installed on the daemon's host (under its `root_dir`,
    /// else `/etc/salt/`).
    pub install_path: PathBuf,
    /// The file's content.
    pub text: String,
}

/// One daemon to install and run: all a deployer needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Daemon {
    /// Master, syndic or minion.
    pub kind: Kind,
    /// Its id (unique in the fleet).
    pub id: String,
    /// The datacenter it is in (None: the top level).
    pub datacenter: Option<String>,
    /// The address other daemons reach it at.
    pub host: String,
    /// SSH access to its host.
    pub ssh: Ssh,
    /// Where it listens (masters and syndics).
    pub listen: Option<Listen>,
    /// The master it reports to (syndics and minions).
    pub upstream: Option<Upstream>,
    /// Whether syndics report to it (`order_masters: True`).
    pub order_masters: bool,
    /// Salt's `root_dir`, when set.
    pub root_dir: Option<PathBuf>,
    /// Extra options written into its config.
    pub opts: Opts,
    /// Its rendered config files (filled by [`crate::render`]).
    pub files: Vec<ConfigFile>,
}

impl Daemon {
    /// The id of the master it reports to.
    pub fn parent(&self) -> Option<&str> {
        self.upstream.as_ref().map(|u| u.id.as_str())
    }

    /// `<root_dir or />etc/salt`: where its config directory goes.
    pub fn config_dir(&self) -> PathBuf {
        self.root_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/"))
            .join("etc/salt")
    }
}

/// One thing wrong with a fleet file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The datacenter it is in (None: the top level or the whole file).
    pub datacenter: Option<String>,
    /// The daemon id it is about, when there is one.
    pub id: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.datacenter, &self.id) {
            (Some(dc), Some(id)) => write!(f, "datacenter {dc}, {id}: {}", self.message),
            (Some(dc), None) => write!(f, "datacenter {dc}: {}", self.message),
            (None, Some(id)) => write!(f, "{id}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

/// Every problem found in a fleet file (never empty when returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for Problems {}

/// Options the fleet file decides; `master_opts`/`minion_opts` may not set them.
pub const MANAGED_KEYS: [&str; 13] = [
    "id",
    "interface",
    "publish_port",
    "ret_port",
    "order_masters",
    "syndic_master",
    "syndic_master_port",
    "master",
    "master_port",
    "root_dir",
    "pki_dir",
    "cachedir",
    "sock_dir",
];

/// A datacenter found while walking the file.
struct Dc<'a> {
    name: String,
    spec: &'a DatacenterSpec,
    /// The datacenter above (by nesting or `parent:`).
    parent: Option<String>,
}

/// Collects problems with their place.
#[derive(Default)]
struct Found(Vec<Problem>);

impl Found {
    fn add(&mut self, dc: Option<&str>, id: Option<&str>, message: impl Into<String>) {
        self.0.push(Problem {
            datacenter: dc.map(str::to_string),
            id: id.map(str::to_string),
            message: message.into(),
        });
    }
}

/// A host placed in a datacenter (or at the top, None), before its upstream
/// is known.
struct Placed {
    level: Option<String>,
    spec: NodeSpec,
    /// Set for hosts from a roster file.
    roster: Option<RosterEntry>,
}

/// Lays out the fleet; `base` is the directory relative roster paths are
/// read from.
pub fn resolve(file: &FleetFile, base: &Path) -> Result<Vec<Daemon>, Problems> {
    let mut found = Found::default();
    let dcs = walk(file, &mut found);
    if !found.0.is_empty() {
        // Unknown parents or loops: nothing below can be placed.
        return Err(Problems(found.0));
    }
    let by_name: BTreeMap<&str, &Dc> = dcs.iter().map(|d| (d.name.as_str(), d)).collect();
    let chain = |name: &str| -> Vec<String> {
        // Root first, `name` last; bounded by the number of datacenters
        // (loops were refused above).
        let mut out: Vec<String> = vec![];
        let mut at = Some(name.to_string());
        while let Some(n) = at.filter(|_| out.len() <= dcs.len()) {
            at = by_name.get(n.as_str()).and_then(|d| d.parent.clone());
            out.push(n);
        }
        out.reverse();
        out
    };
    let defaults_at = |level: Option<&str>| -> Defaults {
        let mut d = file.defaults.clone();
        for n in level.map(&chain).unwrap_or_default() {
            if let Some(dc) = by_name.get(n.as_str()) {
                merge(&mut d, &dc.spec.defaults);
            }
        }
        d
    };

    // Hosts by level: listed ones, then roster ones.
    let mut placed: Vec<Placed> = file
        .hosts
        .iter()
        .map(|h| Placed {
            level: None,
            spec: h.0.clone(),
            roster: None,
        })
        .collect();
    place_roster(
        None,
        file.roster.as_deref(),
        &file.rules,
        base,
        &by_name,
        &mut placed,
        &mut found,
    );
    for dc in &dcs {
        placed.extend(dc.spec.hosts.iter().map(|h| Placed {
            level: Some(dc.name.clone()),
            spec: h.0.clone(),
            roster: None,
        }));
        place_roster(
            Some(&dc.name),
            dc.spec.roster.as_deref(),
            &dc.spec.rules,
            base,
            &by_name,
            &mut placed,
            &mut found,
        );
    }

    // The top master.
    let mut daemons = vec![];
    let top_defaults = defaults_at(None);
    let master_id = file.master.id.clone().unwrap_or_default();
    if master_id.is_empty() {
        found.add(None, None, "master: id is missing");
    }
    daemons.push(master_like(
        Kind::Master,
        &master_id,
        None,
        &file.master,
        &top_defaults,
        None,
        &mut found,
    ));
    let top = upstream_of(&daemons[0]);

    // Syndics, root datacenters first (a syndic's upstream must exist).
    let mut rings: BTreeMap<String, Ring> = BTreeMap::new();
    let mut ordered: Vec<&Dc> = dcs.iter().collect();
    ordered.sort_by_key(|d| chain(&d.name).len());
    for dc in &ordered {
        let defaults = defaults_at(Some(&dc.name));
        let above = nearest_with_syndics(&chain(&dc.name), true, &rings);
        let mut ids = vec![];
        for s in &dc.spec.syndics {
            let id = s.id.clone().unwrap_or_default();
            if id.is_empty() {
                found.add(Some(&dc.name), None, "a syndic has no id");
                continue;
            }
            let up = match above {
                Some(ring) => find_upstream(&daemons, ring.assign(&id)),
                None => Some(top.clone()),
            };
            let d = master_like(
                Kind::Syndic,
                &id,
                Some(&dc.name),
                s,
                &defaults,
                up,
                &mut found,
            );
            daemons.push(d);
            ids.push(id);
        }
        if let Ok(ring) = Ring::new(&ids, VNODES) {
            rings.insert(dc.name.clone(), ring);
        }
    }

    // Minions.
    for p in &placed {
        let level = p.level.as_deref();
        let defaults = defaults_at(level);
        let levels = level.map(&chain).unwrap_or_default();
        let mut spec = p.spec.clone();
        if let Some(r) = &p.roster {
            spec.id = Some(r.id.clone());
            spec.host = Some(r.host.clone());
            spec.ssh_port = r.port.or(spec.ssh_port);
            spec.user = r.user.clone().or(spec.user);
        }
        let Some(id) = spec.id.clone().or_else(|| spec.host.clone()) else {
            found.add(level, None, "a host has neither id nor host");
            continue;
        };
        for (set, what) in [
            (spec.interface.is_some(), "interface"),
            (spec.publish_port.is_some(), "publish_port"),
            (spec.ret_port.is_some(), "ret_port"),
            (spec.master_opts.is_some(), "master_opts"),
        ] {
            if set {
                found.add(
                    level,
                    Some(&id),
                    format!("{what} is for masters and syndics, not hosts"),
                );
            }
        }
        let up = match nearest_with_syndics(&levels, false, &rings) {
            Some(ring) => find_upstream(&daemons, ring.assign(&id)),
            None => Some(top.clone()),
        };
        let mut d = base_daemon(Kind::Minion, &id, level, &spec, &defaults, &mut found);
        if let Some(r) = &p.roster {
            d.ssh.options.extend(r.options.clone());
        }
        d.upstream = up;
        let mut opts = defaults.minion_opts.clone().unwrap_or_default();
        opts.extend(spec.minion_opts.clone().unwrap_or_default());
        d.opts = opts;
        daemons.push(d);
    }

    // Who has syndics below.
    let with_syndics: BTreeSet<String> = daemons
        .iter()
        .filter(|d| d.kind == Kind::Syndic)
        .filter_map(|d| d.parent().map(str::to_string))
        .collect();
    for d in &mut daemons {
        d.order_masters = with_syndics.contains(&d.id);
    }

    for dc in &dcs {
        let s = dc.spec;
        if s.syndics.is_empty()
            && !placed.iter().any(|p| p.level.as_deref() == Some(&dc.name))
            && s.roster.is_none()
            && !dcs.iter().any(|c| c.parent.as_deref() == Some(&dc.name))
        {
            found.add(
                Some(&dc.name),
                None,
                "is empty: give it syndics, hosts, a roster or datacenters below it",
            );
        }
    }
    check(&daemons, &mut found);
    if found.0.is_empty() {
        Ok(daemons)
    } else {
        Err(Problems(found.0))
    }
}

/// Walks the datacenters (nested ones after their parent, by name), checks
/// names, `parent:` references and loops.
fn walk<'a>(file: &'a FleetFile, found: &mut Found) -> Vec<Dc<'a>> {
    fn visit<'a>(
        map: &'a BTreeMap<String, DatacenterSpec>,
        parent: Option<&str>,
        out: &mut Vec<Dc<'a>>,
        found: &mut Found,
    ) {
        for (name, spec) in map {
            if name.trim().is_empty() || name.contains(['/', '\\', '\0']) {
                found.add(Some(name), None, "not a valid datacenter name");
            }
            if out.iter().any(|d| &d.name == name) {
                found.add(
                    Some(name),
                    None,
                    "datacenter name used twice (names are unique in the whole fleet)",
                );
            }
            let up = match (parent, &spec.parent) {
                (Some(p), Some(_)) => {
                    found.add(
                        Some(name),
                        None,
                        format!("`parent:` is only for top-level datacenters (this one is nested in {p})"),
                    );
                    Some(p.to_string())
                }
                (Some(p), None) => Some(p.to_string()),
                (None, up) => up.clone(),
            };
            out.push(Dc {
                name: name.clone(),
                spec,
                parent: up,
            });
            visit(&spec.datacenters, Some(name), out, found);
        }
    }
    let mut out = vec![];
    visit(&file.datacenters, None, &mut out, found);
    let parents: BTreeMap<&str, Option<&str>> = out
        .iter()
        .map(|d| (d.name.as_str(), d.parent.as_deref()))
        .collect();
    for d in &out {
        if let Some(p) = d.parent.as_deref() {
            if !parents.contains_key(p) {
                found.add(
                    Some(&d.name),
                    None,
                    format!("parent {p} is not a datacenter of this fleet"),
                );
                continue;
            }
        }
        // Follow parents: a loop comes back to `d` within len steps.
        let mut path = vec![d.name.as_str()];
        let mut at = d.parent.as_deref();
        while let Some(p) = at {
            path.push(p);
            if p == d.name {
                found.add(
                    Some(&d.name),
                    None,
                    format!("datacenters form a loop: {}", path.join(" -> ")),
                );
                break;
            }
            if path.len() > out.len() + 1 {
                break;
            }
            at = parents.get(p).copied().flatten();
        }
    }
    out
}

/// Adds a roster's hosts to `placed`: at `level` without rules, else where
/// the first matching rule says.
fn place_roster(
    level: Option<&str>,
    roster: Option<&Path>,
    rules: &[crate::spec::Rule],
    base: &Path,
    dcs: &BTreeMap<&str, &Dc>,
    placed: &mut Vec<Placed>,
    found: &mut Found,
) {
    for r in rules {
        if !dcs.contains_key(r.datacenter.as_str()) {
            found.add(
                level,
                None,
                format!(
                    "rule '{}' names datacenter {}, which is not in this fleet",
                    r.pattern, r.datacenter
                ),
            );
        }
    }
    let Some(path) = roster else {
        if !rules.is_empty() {
            found.add(level, None, "rules without a roster to apply them to");
        }
        return;
    };
    let path = base.join(path);
    let entries = match crate::spec::read_roster(&path) {
        Ok(e) => e,
        Err(e) => {
            found.add(level, None, e.to_string());
            return;
        }
    };
    let globs: Vec<(brine_common::glob::Glob, &str)> = rules
        .iter()
        .map(|r| {
            (
                brine_common::glob::Glob::new(&r.pattern),
                r.datacenter.as_str(),
            )
        })
        .collect();
    for e in entries {
        let to = if rules.is_empty() {
            level.map(str::to_string)
        } else if let Some((_, dc)) = globs.iter().find(|(g, _)| g.matches(&e.id)) {
            Some((*dc).to_string())
        } else {
            found.add(
                level,
                Some(&e.id),
                format!("matches no rule (roster {})", path.display()),
            );
            continue;
        };
        placed.push(Placed {
            level: to,
            spec: NodeSpec::default(),
            roster: Some(e),
        });
    }
}

/// The closest datacenter of `levels` (root first) that has syndics,
/// skipping the last one when `strictly_above`.
fn nearest_with_syndics<'r>(
    levels: &[String],
    strictly_above: bool,
    rings: &'r BTreeMap<String, Ring>,
) -> Option<&'r Ring> {
    let take = levels.len() - usize::from(strictly_above && !levels.is_empty());
    levels[..take].iter().rev().find_map(|n| rings.get(n))
}

/// The master or syndic `id` as an upstream.
fn find_upstream(daemons: &[Daemon], id: &str) -> Option<Upstream> {
    daemons
        .iter()
        .find(|d| d.id == id && d.kind != Kind::Minion)
        .map(upstream_of)
}

fn upstream_of(d: &Daemon) -> Upstream {
    Upstream {
        id: d.id.clone(),
        host: d.host.clone(),
        port: d.listen.as_ref().map_or(RET_PORT, |l| l.ret_port),
    }
}

/// Later defaults win; option maps merge key by key.
fn merge(into: &mut Defaults, over: &Defaults) {
    fn opt<T: Clone>(a: &mut Option<T>, b: &Option<T>) {
        if b.is_some() {
            a.clone_from(b);
        }
    }
    opt(&mut into.user, &over.user);
    opt(&mut into.ssh_port, &over.ssh_port);
    opt(&mut into.priv_key, &over.priv_key);
    opt(&mut into.sudo, &over.sudo);
    opt(&mut into.root_dir, &over.root_dir);
    for (a, b) in [
        (&mut into.minion_opts, &over.minion_opts),
        (&mut into.master_opts, &over.master_opts),
    ] {
        if let Some(b) = b {
            a.get_or_insert_with(Opts::new).extend(b.clone());
        }
    }
}

/// What every daemon has: id, host, ssh access, root_dir.
fn base_daemon(
    kind: Kind,
    id: &str,
    dc: Option<&str>,
    spec: &NodeSpec,
    defaults: &Defaults,
    found: &mut Found,
) -> Daemon {
    let host = spec.host.clone().unwrap_or_else(|| id.to_string());
    let mut options = Opts::new();
    if let Some(k) = spec.priv_key.as_ref().or(defaults.priv_key.as_ref()) {
        options.insert("priv".into(), serde_json::Value::String(k.clone()));
    }
    if let Some(s) = spec.sudo.or(defaults.sudo) {
        options.insert("sudo".into(), serde_json::Value::Bool(s));
    }
    let root_dir = spec
        .root_dir
        .as_ref()
        .or(defaults.root_dir.as_ref())
        .map(|r| PathBuf::from(r.replace("{id}", id)));
    if let Some(r) = &root_dir {
        if !r.is_absolute() {
            found.add(
                dc,
                Some(id),
                format!("root_dir {} is not an absolute path", r.display()),
            );
        }
    }
    Daemon {
        kind,
        id: id.to_string(),
        datacenter: dc.map(str::to_string),
        ssh: Ssh {
            host: host.clone(),
            port: spec.ssh_port.or(defaults.ssh_port).unwrap_or(SSH_PORT),
            user: spec
                .user
                .clone()
                .or_else(|| defaults.user.clone())
                .unwrap_or_else(|| SSH_USER.to_string()),
            options,
        },
        host,
        listen: None,
        upstream: None,
        order_masters: false,
        root_dir,
        opts: Opts::new(),
        files: vec![],
    }
}

/// The top master or a syndic.
fn master_like(
    kind: Kind,
    id: &str,
    dc: Option<&str>,
    spec: &NodeSpec,
    defaults: &Defaults,
    upstream: Option<Upstream>,
    found: &mut Found,
) -> Daemon {
    let mut d = base_daemon(kind, id, dc, spec, defaults, found);
    if spec.minion_opts.is_some() {
        found.add(
            dc,
            Some(id),
            "minion_opts is for hosts; a master takes master_opts",
        );
    }
    let interface = spec.interface.clone().unwrap_or_else(|| {
        if d.host.parse::<IpAddr>().is_ok() {
            d.host.clone()
        } else {
            "0.0.0.0".to_string()
        }
    });
    d.listen = Some(Listen {
        interface,
        publish_port: spec.publish_port.unwrap_or(PUBLISH_PORT),
        ret_port: spec.ret_port.unwrap_or(RET_PORT),
    });
    d.upstream = upstream;
    let mut opts = defaults.master_opts.clone().unwrap_or_default();
    opts.extend(spec.master_opts.clone().unwrap_or_default());
    d.opts = opts;
    d
}

/// Whether `host` is an IP address or a syntactically valid DNS name.
pub fn valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        // A name of digits and dots only would be a broken IPv4 address.
        && !host.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// The checks over the laid-out daemons.
fn check(daemons: &[Daemon], found: &mut Found) {
    let dc = |d: &Daemon| d.datacenter.clone();
    // Ids.
    let mut seen: BTreeMap<&str, &Daemon> = BTreeMap::new();
    for d in daemons {
        if d.id.is_empty() {
            continue; // reported where it was read
        }
        if d.id == "." || d.id == ".." || d.id.contains(['/', '\\', '\0']) || d.id.trim() != d.id {
            found.add(
                dc(d).as_deref(),
                Some(&d.id),
                "not a valid id (no path separators, '.', '..' or surrounding blanks)",
            );
        }
        if let Some(first) = seen.get(d.id.as_str()) {
            found.add(
                dc(d).as_deref(),
                Some(&d.id),
                format!(
                    "duplicate id: also the {} in {}",
                    first.kind,
                    first
                        .datacenter
                        .as_deref()
                        .map_or("the top level".to_string(), |x| format!("datacenter {x}"))
                ),
            );
        } else {
            seen.insert(&d.id, d);
        }
    }
    // Addresses.
    for d in daemons {
        if !valid_host(&d.host) {
            found.add(
                dc(d).as_deref(),
                Some(&d.id),
                format!(
                    "host {:?} is neither an IP address nor a valid host name",
                    d.host
                ),
            );
        }
        if d.ssh.user.trim().is_empty() {
            found.add(dc(d).as_deref(), Some(&d.id), "ssh user is empty");
        }
        if d.ssh.port == 0 {
            found.add(dc(d).as_deref(), Some(&d.id), "ssh_port 0 is not a port");
        }
        if let Some(l) = &d.listen {
            if l.interface.parse::<IpAddr>().is_err() {
                found.add(
                    dc(d).as_deref(),
                    Some(&d.id),
                    format!("interface {:?} is not an IP address", l.interface),
                );
            }
            if l.publish_port == 0 || l.ret_port == 0 {
                found.add(dc(d).as_deref(), Some(&d.id), "port 0 is not allowed");
            }
            if l.publish_port == l.ret_port {
                found.add(
                    dc(d).as_deref(),
                    Some(&d.id),
                    format!("publish_port and ret_port are both {}", l.ret_port),
                );
            }
        }
        for k in d.opts.keys().filter(|k| MANAGED_KEYS.contains(&k.as_str())) {
            found.add(
                dc(d).as_deref(),
                Some(&d.id),
                format!("{k} is set by the fleet file, not by master_opts/minion_opts"),
            );
        }
    }
    // Ports per address.
    let mut ports: BTreeMap<(String, u16), &Daemon> = BTreeMap::new();
    for d in daemons {
        let Some(l) = &d.listen else { continue };
        let mut mine = vec![l.publish_port];
        if l.ret_port != l.publish_port {
            mine.push(l.ret_port);
        }
        for p in mine {
            let key = (d.host.to_ascii_lowercase(), p);
            match ports.get(&key) {
                Some(other) if other.id != d.id => found.add(
                    dc(d).as_deref(),
                    Some(&d.id),
                    format!("port {p} on {} is also used by {}: give one of them other publish_port/ret_port", d.host, other.id),
                ),
                _ => {
                    ports.insert(key, d);
                }
            }
        }
    }
    // Two daemons of one sort on one host must not share a root_dir
    // (their keys, caches and sockets would be the same files).
    let mut roots: BTreeMap<(String, &str, Option<&Path>), &str> = BTreeMap::new();
    for d in daemons {
        let key = (
            d.host.to_ascii_lowercase(),
            d.kind.config_name(),
            d.root_dir.as_deref(),
        );
        if let Some(other) = roots.get(&key) {
            if *other != d.id {
                found.add(
                    dc(d).as_deref(),
                    Some(&d.id),
                    format!(
                        "shares host {} and root_dir {} with {other}: give each a root_dir (e.g. defaults: {{root_dir: /srv/brine/{{id}}}})",
                        d.host,
                        d.root_dir.as_deref().map_or("/".to_string(), |r| r.display().to_string()),
                    ),
                );
            }
        } else {
            roots.insert(key, &d.id);
        }
    }
    // Every chain of upstreams ends at the top master, without a loop.
    let by_id: BTreeMap<&str, &Daemon> = daemons.iter().map(|d| (d.id.as_str(), d)).collect();
    for d in daemons {
        let mut at = d;
        let mut path = vec![d.id.as_str()];
        while let Some(up) = at.parent() {
            path.push(up);
            let Some(next) = by_id.get(up).filter(|_| path.len() <= daemons.len() + 1) else {
                found.add(
                    dc(d).as_deref(),
                    Some(&d.id),
                    format!(
                        "reports to {}, a loop or no master: {}",
                        up,
                        path.join(" -> ")
                    ),
                );
                break;
            };
            if next.id == d.id {
                found.add(
                    dc(d).as_deref(),
                    Some(&d.id),
                    format!("reports to itself: {}", path.join(" -> ")),
                );
                break;
            }
            at = next;
        }
        if at.parent().is_none() && at.kind != Kind::Master && d.kind != Kind::Master {
            found.add(dc(d).as_deref(), Some(&d.id), "reaches no master");
        }
    }
}
