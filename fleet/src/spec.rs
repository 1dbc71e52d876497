//! The fleet file as written: its YAML schema, read with unknown keys
//! refused, plus Salt roster files it points at.
//!
//! Invariant: nothing here decides the layout; a [`FleetFile`] is the
//! operator's text in typed form, every field optional that the file may
//! leave out, and every parse error names the file and the line.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Extra config options: any YAML mapping, kept sorted for deterministic
/// output.
pub type Opts = BTreeMap<String, serde_json::Value>;

/// Errors reading the fleet file or a roster it names.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML or does not fit the schema; `message`
    /// carries the line and column.
    #[error("cannot parse {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
}

/// The whole fleet file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    /// The top master.
    pub master: NodeSpec,
    /// Defaults for every daemon (ssh access, `root_dir`, extra options).
    #[serde(default)]
    pub defaults: Defaults,
    /// Minions that talk to the top master directly.
    #[serde(default)]
    pub hosts: Vec<HostEntry>,
    /// A Salt roster whose hosts are placed by `rules` (without rules they
    /// talk to the top master directly).
    #[serde(default)]
    pub roster: Option<PathBuf>,
    /// Which datacenter each id of `roster` goes to (first match wins).
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Datacenters by name (names are unique in the whole fleet).
    #[serde(default)]
    pub datacenters: BTreeMap<String, DatacenterSpec>,
}

/// One datacenter: its syndics, its hosts and datacenters below it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatacenterSpec {
    /// Syndics of this datacenter; its hosts are spread over them.
    #[serde(default)]
    pub syndics: Vec<NodeSpec>,
    /// Minions of this datacenter.
    #[serde(default)]
    pub hosts: Vec<HostEntry>,
    /// A Salt roster: without `rules` all its hosts are in this
    /// datacenter, with them each id goes where the first matching rule says.
    #[serde(default)]
    pub roster: Option<PathBuf>,
    /// Placement of this datacenter's `roster` ids.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Defaults for this datacenter and the ones below (over the fleet's).
    #[serde(default)]
    pub defaults: Defaults,
    /// Datacenters below this one (their syndics report to this one's).
    #[serde(default)]
    pub datacenters: BTreeMap<String, DatacenterSpec>,
    /// The datacenter above this one, the flat alternative to nesting
    /// (only on datacenters at the top level of the file).
    #[serde(default)]
    pub parent: Option<String>,
}

/// Roster-id placement: ids matching the glob `match` go to `datacenter`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A glob over roster ids (Salt's fnmatch).
    #[serde(rename = "match")]
    pub pattern: String,
    /// The datacenter's name.
    pub datacenter: String,
}

/// Defaults that apply to every daemon below where they are set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// SSH user (roster `user`, default `root`).
    pub user: Option<String>,
    /// SSH port (roster `port`, default 22).
    pub ssh_port: Option<u16>,
    /// SSH private key (roster `priv`).
    #[serde(rename = "priv")]
    pub priv_key: Option<String>,
    /// Run with sudo (roster `sudo`).
    pub sudo: Option<bool>,
    /// Salt's `root_dir`; `{id}` is replaced by the daemon's id.
    pub root_dir: Option<String>,
    /// Extra options for every rendered minion config.
    pub minion_opts: Option<Opts>,
    /// Extra options for every rendered master and syndic config.
    pub master_opts: Option<Opts>,
}

/// One daemon as written: the top master, a syndic or (as a mapping in a
/// `hosts` list) a minion.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// The daemon's id (a minion's defaults to its `host`).
    pub id: Option<String>,
    /// Address others (and SSH) reach it at (defaults to its `id`).
    pub host: Option<String>,
    /// Address a master or syndic binds (default: `host` when it is an IP
    /// address, else `0.0.0.0`).
    pub interface: Option<String>,
    /// A master's or syndic's publish port (default 4505).
    pub publish_port: Option<u16>,
    /// A master's or syndic's return port (default 4506).
    pub ret_port: Option<u16>,
    /// SSH user.
    pub user: Option<String>,
    /// SSH port.
    pub ssh_port: Option<u16>,
    /// SSH private key.
    #[serde(rename = "priv")]
    pub priv_key: Option<String>,
    /// Run with sudo.
    pub sudo: Option<bool>,
    /// Salt's `root_dir` for this daemon (`{id}` is replaced).
    pub root_dir: Option<String>,
    /// Extra minion options (minions only).
    pub minion_opts: Option<Opts>,
    /// Extra master options (top master and syndics only).
    pub master_opts: Option<Opts>,
}

/// A `hosts` entry: a bare name (id and host at once) or a mapping.
#[derive(Debug, Clone)]
pub struct HostEntry(pub NodeSpec);

impl<'de> Deserialize<'de> for HostEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HostEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a host name or a mapping with id/host")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HostEntry, E> {
                Ok(HostEntry(NodeSpec {
                    id: Some(v.to_string()),
                    ..NodeSpec::default()
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HostEntry, A::Error> {
                NodeSpec::deserialize(de::value::MapAccessDeserializer::new(map)).map(HostEntry)
            }
        }
        d.deserialize_any(V)
    }
}

/// One entry of a Salt roster file.
#[derive(Debug, Clone, PartialEq)]
pub struct RosterEntry {
    /// The roster id (the minion id).
    pub id: String,
    /// `host` (default: the id).
    pub host: String,
    /// `port`.
    pub port: Option<u16>,
    /// `user`.
    pub user: Option<String>,
    /// Every other key (`priv`, `sudo`, `passwd`, `timeout`, ...), passed on
    /// into the rendered roster untouched.
    pub options: Opts,
}

/// Reads a fleet file.
pub fn read_fleet(path: &Path) -> Result<FleetFile, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_fleet(&text).map_err(|message| LoadError::Parse {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses fleet file text (the error carries line and column).
pub fn parse_fleet(text: &str) -> Result<FleetFile, String> {
    serde_norway::from_str(text).map_err(|e| e.to_string())
}

/// Reads a Salt roster file (`id: {host, port, user, ...}`; an entry that
/// is a bare string is its host), in id order.
pub fn read_roster(path: &Path) -> Result<Vec<RosterEntry>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_roster(&text).map_err(|message| LoadError::Parse {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses roster text.
pub fn parse_roster(text: &str) -> Result<Vec<RosterEntry>, String> {
    let raw: Option<BTreeMap<String, serde_json::Value>> =
        serde_norway::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (id, v) in raw.unwrap_or_default() {
        let mut options = match v {
            serde_json::Value::String(host) => {
                Opts::from([("host".to_string(), serde_json::Value::String(host))])
            }
            serde_json::Value::Object(m) => m.into_iter().collect(),
            serde_json::Value::Null => Opts::new(),
            other => {
                return Err(format!(
                    "roster entry {id}: expected a mapping, got {other}"
                ))
            }
        };
        let host = match options.remove("host") {
            None => id.clone(),
            Some(serde_json::Value::String(h)) => h,
            Some(other) => return Err(format!("roster entry {id}: host {other} is not a string")),
        };
        let port = match options.remove("port") {
            None => None,
            Some(p) => Some(
                p.as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("roster entry {id}: port {p} is not a port number"))?,
            ),
        };
        let user = match options.remove("user") {
            None => None,
            Some(serde_json::Value::String(u)) => Some(u),
            Some(other) => return Err(format!("roster entry {id}: user {other} is not a string")),
        };
        out.push(RosterEntry {
            id,
            host,
            port,
            user,
            options,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_or_mappings() {
        let f = parse_fleet(
            "master: {id: top, host: 10.0.0.1}\nhosts: [web1, {id: db1, host: 10.0.0.9, ssh_port: 2222}]\n",
        )
        .unwrap();
        assert_eq!(f.hosts[0].0.id.as_deref(), Some("web1"));
        assert_eq!(f.hosts[1].0.host.as_deref(), Some("10.0.0.9"));
        assert_eq!(f.hosts[1].0.ssh_port, Some(2222));
    }

    #[test]
    fn bad_yaml_and_unknown_keys_name_the_line() {
        let e =
            parse_fleet("master: {id: top}\ndatacenters:\n  dc1:\n    sydnics: []\n").unwrap_err();
        assert!(e.contains("sydnics") && e.contains("line 4"), "{e}");
        let e = parse_fleet("master: {id: top}\nhosts: [a, b\n").unwrap_err();
        assert!(e.contains("line"), "{e}");
        let e = parse_fleet("master: {id: top}\nhosts: [{id: a, bogus: 1}]\n").unwrap_err();
        assert!(e.contains("bogus") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn roster_entries_keep_their_options() {
        let r = parse_roster(
            "web1:\n  host: 10.0.0.5\n  user: admin\n  port: 2222\n  sudo: true\n  priv: /k\nweb2: 10.0.0.6\nweb3:\n",
        )
        .unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].host, "10.0.0.5");
        assert_eq!(r[0].port, Some(2222));
        assert_eq!(r[0].user.as_deref(), Some("admin"));
        assert_eq!(r[0].options["sudo"], serde_json::json!(true));
        assert_eq!(r[1].host, "10.0.0.6");
        assert_eq!(r[2].host, "web3");
        assert!(parse_roster("web1: {port: 0}\n")
            .unwrap_err()
            .contains("web1"));
        assert!(parse_roster("").unwrap().is_empty());
    }
}
