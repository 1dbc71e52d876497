//! Salt's flat roster file: one entry per target id, each a host name (or
//! address) alone or a mapping of connection options, and the master
//! config's `ssh_*` options that are the defaults of every entry. A roster
//! entry wins over a command-line flag, which wins over the master config.
//! Invariant: a parsed [`Host`] is complete (every option has its value or
//! a default) and every parse error names the id (or file) and the key at
//! fault.

use regex::Regex;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Keys a roster entry may have.
const KEYS: [&str; 11] = [
    "host",
    "port",
    "user",
    "passwd",
    "priv",
    "sudo",
    "timeout",
    "minion_opts",
    "thin_dir",
    "ssh_options",
    "root_dir",
];

/// Why a roster could not be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RosterError {
    #[error("roster {file}: {msg}")]
    File { file: String, msg: String },
    #[error("roster entry {id:?}: {key}: {msg}")]
    Entry {
        id: String,
        key: String,
        msg: String,
    },
}

/// One roster entry, as written (defaults not applied yet).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Host {
    pub id: String,
    pub host: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub passwd: Option<String>,
    pub privkey: Option<PathBuf>,
    /// `None`: the master config's `ssh_sudo` decides.
    pub sudo: Option<bool>,
    pub timeout: Option<u64>,
    pub minion_opts: Map<String, Value>,
    pub thin_dir: Option<String>,
    pub ssh_options: Vec<String>,
    /// Brine's prefix for everything the run writes on that host.
    pub root_dir: Option<String>,
}

fn entry_err(id: &str, key: &str, msg: impl Into<String>) -> RosterError {
    RosterError::Entry {
        id: id.to_string(),
        key: key.to_string(),
        msg: msg.into(),
    }
}

fn as_string(id: &str, key: &str, v: &Value) -> Result<String, RosterError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(entry_err(id, key, "expected a string")),
    }
}

fn as_u64(id: &str, key: &str, v: &Value) -> Result<u64, RosterError> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| entry_err(id, key, "expected a whole number"))
}

fn as_bool(id: &str, key: &str, v: &Value) -> Result<bool, RosterError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Ok(true),
            "false" | "no" | "0" | "off" => Ok(false),
            _ => Err(entry_err(id, key, "expected True or False")),
        },
        _ => Err(entry_err(id, key, "expected True or False")),
    }
}

fn entry(id: &str, v: &Value) -> Result<Host, RosterError> {
    let mut h = Host {
        id: id.to_string(),
        host: id.to_string(),
        ..Host::default()
    };
    let m = match v {
        Value::Null => return Ok(h),
        Value::String(s) => {
            h.host = s.clone();
            return Ok(h);
        }
        Value::Object(m) => m,
        _ => return Err(entry_err(id, "<entry>", "expected a host or a mapping")),
    };
    for (key, val) in m {
        match key.as_str() {
            "host" => h.host = as_string(id, key, val)?,
            "port" => {
                let p = as_u64(id, key, val)?;
                h.port = Some(
                    u16::try_from(p)
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| entry_err(id, key, "expected a port 1-65535"))?,
                );
            }
            "user" => h.user = Some(as_string(id, key, val)?),
            "passwd" => h.passwd = Some(as_string(id, key, val)?),
            "priv" => h.privkey = Some(PathBuf::from(as_string(id, key, val)?)),
            "sudo" => h.sudo = Some(as_bool(id, key, val)?),
            "timeout" => h.timeout = Some(as_u64(id, key, val)?),
            "minion_opts" => match val {
                Value::Object(o) => h.minion_opts = o.clone(),
                Value::Null => {}
                _ => return Err(entry_err(id, key, "expected a mapping")),
            },
            "thin_dir" => h.thin_dir = Some(as_string(id, key, val)?),
            "root_dir" => h.root_dir = Some(as_string(id, key, val)?),
            "ssh_options" => match val {
                Value::Array(a) => {
                    for o in a {
                        h.ssh_options.push(as_string(id, key, o)?);
                    }
                }
                Value::Null => {}
                _ => return Err(entry_err(id, key, "expected a list of options")),
            },
            other => {
                return Err(entry_err(
                    id,
                    other,
                    format!("unknown key (known: {})", KEYS.join(", ")),
                ))
            }
        }
    }
    if h.host.is_empty() {
        return Err(entry_err(id, "host", "empty"));
    }
    Ok(h)
}

/// Parse roster YAML text (`file` names it in errors).
pub fn parse(text: &str, file: &str) -> Result<Vec<Host>, RosterError> {
    let v: Value = serde_norway::from_str(text).map_err(|e| RosterError::File {
        file: file.to_string(),
        msg: e.to_string(),
    })?;
    let m = match v {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        _ => {
            return Err(RosterError::File {
                file: file.to_string(),
                msg: "expected a mapping of id to host".to_string(),
            })
        }
    };
    let sorted: BTreeMap<String, Value> = m.into_iter().collect();
    sorted.iter().map(|(id, v)| entry(id, v)).collect()
}

/// Read and parse the roster file at `path`.
pub fn load(path: &Path) -> Result<Vec<Host>, RosterError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| RosterError::File {
        file: file.clone(),
        msg: e.to_string(),
    })?;
    parse(&text, &file)
}

/// The master config options salt-ssh reads (Salt's names), as the
/// defaults under the command-line flags. `None`: not set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SshOptions {
    pub roster_file: Option<PathBuf>,
    pub user: Option<String>,
    pub privkey: Option<PathBuf>,
    pub passwd: Option<String>,
    pub port: Option<u16>,
    pub sudo: Option<bool>,
    pub timeout: Option<u64>,
    pub max_procs: Option<usize>,
    pub identities_only: Option<bool>,
    pub known_hosts_file: Option<PathBuf>,
}

impl SshOptions {
    /// Read `DIR/master` then `DIR/master.d/*.conf` (in name order, later
    /// files win, as the master reads them). Missing files are empty; a
    /// bad value is an error naming the file and the key.
    pub fn load(dir: &Path) -> Result<SshOptions, RosterError> {
        let mut files = vec![dir.join("master")];
        let mut extra: Vec<PathBuf> = std::fs::read_dir(dir.join("master.d"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        extra.sort();
        files.extend(extra);
        let mut o = SshOptions::default();
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            o.merge_text(&text, &f.display().to_string())?;
        }
        Ok(o)
    }

    /// Apply the `ssh_*` keys of one config file's text.
    pub fn merge_text(&mut self, text: &str, file: &str) -> Result<(), RosterError> {
        let v: Value = serde_norway::from_str(text).map_err(|e| RosterError::File {
            file: file.to_string(),
            msg: e.to_string(),
        })?;
        let Value::Object(m) = v else {
            return Ok(());
        };
        let at = format!("master config {file}");
        for (key, val) in &m {
            if val.is_null() {
                continue;
            }
            match key.as_str() {
                "roster_file" => self.roster_file = Some(as_string(&at, key, val)?.into()),
                "ssh_user" => self.user = Some(as_string(&at, key, val)?),
                "ssh_priv" => self.privkey = Some(as_string(&at, key, val)?.into()),
                "ssh_passwd" => {
                    let p = as_string(&at, key, val)?;
                    self.passwd = (!p.is_empty()).then_some(p);
                }
                "ssh_port" => {
                    let p = as_u64(&at, key, val)?;
                    self.port = Some(
                        u16::try_from(p)
                            .ok()
                            .filter(|p| *p > 0)
                            .ok_or_else(|| entry_err(&at, key, "expected a port 1-65535"))?,
                    );
                }
                "ssh_sudo" => self.sudo = Some(as_bool(&at, key, val)?),
                "ssh_timeout" => self.timeout = Some(as_u64(&at, key, val)?),
                "ssh_max_procs" => {
                    let n = as_u64(&at, key, val)?;
                    self.max_procs = Some(
                        usize::try_from(n)
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| entry_err(&at, key, "expected a number above 0"))?,
                    );
                }
                "ssh_identities_only" => self.identities_only = Some(as_bool(&at, key, val)?),
                "known_hosts_file" => {
                    self.known_hosts_file = Some(as_string(&at, key, val)?.into())
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// How the target names roster ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TgtType {
    Glob,
    Pcre,
    List,
}

/// The hosts whose id `tgt` matches, in roster order (by id).
pub fn select(hosts: &[Host], tgt: &str, kind: TgtType) -> Result<Vec<Host>, String> {
    match kind {
        TgtType::Glob => Ok(hosts
            .iter()
            .filter(|h| brine_common::glob::fnmatch(tgt, &h.id))
            .cloned()
            .collect()),
        TgtType::Pcre => {
            let re = Regex::new(&format!("^(?:{tgt})$"))
                .map_err(|e| format!("bad regular expression {tgt:?}: {e}"))?;
            Ok(hosts
                .iter()
                .filter(|h| re.is_match(&h.id))
                .cloned()
                .collect())
        }
        TgtType::List => {
            let ids: Vec<&str> = tgt
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            Ok(hosts
                .iter()
                .filter(|h| ids.contains(&h.id.as_str()))
                .cloned()
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ROSTER: &str = r#"
web1: 10.0.0.1
web2:
  host: 10.0.0.2
  port: 2222
  user: fred
  passwd: s3cret
  priv: /root/.ssh/id
  sudo: True
  timeout: 5
  minion_opts:
    log_level: debug
  thin_dir: /opt/thin
  ssh_options:
    - "Compression=yes"
  root_dir: /srv/h2
db1:
"#;

    #[test]
    fn parses_salt_roster() {
        let hs = parse(ROSTER, "r").expect("parse");
        let ids: Vec<&str> = hs.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["db1", "web1", "web2"]);
        assert_eq!(hs[0].host, "db1");
        assert_eq!(hs[1].host, "10.0.0.1");
        let w = &hs[2];
        assert_eq!(w.port, Some(2222));
        assert_eq!(w.user.as_deref(), Some("fred"));
        assert_eq!(w.passwd.as_deref(), Some("s3cret"));
        assert_eq!(w.sudo, Some(true));
        assert_eq!(hs[0].sudo, None);
        assert_eq!(w.timeout, Some(5));
        assert_eq!(w.minion_opts.get("log_level"), Some(&json!("debug")));
        assert_eq!(w.ssh_options, ["Compression=yes"]);
        assert_eq!(w.root_dir.as_deref(), Some("/srv/h2"));
    }

    #[test]
    fn errors_name_id_and_key() {
        let e = parse("h1:\n  port: 99999\n", "r").expect_err("bad port");
        assert_eq!(
            e.to_string(),
            "roster entry \"h1\": port: expected a port 1-65535"
        );
        let e = parse("h1:\n  colour: red\n", "r").expect_err("unknown");
        assert!(e
            .to_string()
            .starts_with("roster entry \"h1\": colour: unknown key"));
        let e = parse("h1:\n  sudo: maybe\n", "r").expect_err("bool");
        assert!(e.to_string().contains("sudo"), "{e}");
        assert!(parse("- a\n- b\n", "r").is_err());
        assert!(parse(": : :\n", "r").is_err());
    }

    #[test]
    fn master_config_ssh_options() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join("master"),
            "ssh_user: fred\nssh_priv: /k/id\nssh_passwd: pw\nssh_port: 2222\n\
             ssh_sudo: True\nssh_timeout: 9\nssh_max_procs: 7\n\
             ssh_identities_only: true\nknown_hosts_file: /k/kh\nroster_file: /r\n\
             interface: 0.0.0.0\n",
        )
        .expect("write");
        std::fs::create_dir(dir.path().join("master.d")).expect("mkdir");
        std::fs::write(dir.path().join("master.d/b.conf"), "ssh_port: 2200\n").expect("w");
        std::fs::write(dir.path().join("master.d/a.conf"), "ssh_port: 1\n").expect("w");
        std::fs::write(dir.path().join("master.d/c.txt"), "ssh_port: 3\n").expect("w");
        let o = SshOptions::load(dir.path()).expect("load");
        assert_eq!(
            o,
            SshOptions {
                roster_file: Some("/r".into()),
                user: Some("fred".into()),
                privkey: Some("/k/id".into()),
                passwd: Some("pw".into()),
                port: Some(2200),
                sudo: Some(true),
                timeout: Some(9),
                max_procs: Some(7),
                identities_only: Some(true),
                known_hosts_file: Some("/k/kh".into()),
            }
        );
        let e = SshOptions::default()
            .merge_text("ssh_port: 70000\n", "m")
            .expect_err("bad port");
        assert!(e.to_string().contains("ssh_port"), "{e}");
        let e = SshOptions::default()
            .merge_text("ssh_sudo: perhaps\n", "m")
            .expect_err("bad bool");
        assert!(e.to_string().contains("ssh_sudo"), "{e}");
        let missing = SshOptions::load(&dir.path().join("nope")).expect("none");
        assert_eq!(missing, SshOptions::default());
    }

    #[test]
    fn targets_match_roster_ids() {
        let hs = parse(ROSTER, "r").expect("parse");
        let ids = |t: &str, k| -> Vec<String> {
            select(&hs, t, k)
                .expect("select")
                .into_iter()
                .map(|h| h.id)
                .collect()
        };
        assert_eq!(ids("web*", TgtType::Glob), ["web1", "web2"]);
        assert_eq!(ids("*", TgtType::Glob).len(), 3);
        assert_eq!(ids("web[0-9]|db.", TgtType::Pcre), ["db1", "web1", "web2"]);
        assert_eq!(ids("web", TgtType::Pcre), Vec::<String>::new());
        assert_eq!(ids("db1, web2,nope", TgtType::List), ["db1", "web2"]);
        assert!(select(&hs, "(", TgtType::Pcre).is_err());
    }
}
