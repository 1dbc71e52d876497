//! The layered loader shared by the master and minion configs.
//!
//! It turns defaults, the main YAML file, the `.d/*.conf` includes, the
//! `SALT_*` environment and the caller's overrides into one figment whose
//! every value remembers the layer it came from, so any error (type errors
//! from extraction, range errors from validation) can name the key and its
//! file, variable or flag. Unknown keys are collected with their file for the
//! daemon to warn about once logging is up, never silently dropped; environment variables that are not config keys are
//! ignored, as Salt ignores them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use figment::error::{Actual, Kind};
use figment::providers::Format;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ConfigError, LoadNotes, Yaml};

/// Name of the defaults layer, so a caller can tell "not configured".
pub(crate) const DEFAULTS: &str = "built-in defaults";
/// Name of the overrides layer.
const COMMAND_LINE: &str = "command line";
/// Name of the environment layer; the variable name is interpolated.
const ENVIRONMENT: &str = "environment variable";
/// Variables Salt reads as config *paths*, never as options.
const PATH_VARIABLES: [&str; 2] = ["master_config", "minion_config"];
/// Bound on the entries read from one include directory.
const MAX_INCLUDES: usize = 10_000;

/// One layer of configuration: a flat dictionary plus where it came from.
struct Layer {
    metadata: Metadata,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// The merged, not yet validated result of loading one daemon's config.
pub(crate) struct Loaded<T> {
    pub(crate) config: T,
    pub(crate) figment: Figment,
    pub(crate) notes: LoadNotes,
}

impl<T> Loaded<T> {
    /// Describes where `key`'s final value came from, for error messages.
    pub(crate) fn origin(&self, key: &str) -> String {
        origin_of(&self.figment, key)
    }

    /// True when no file, variable or flag set `key`.
    pub(crate) fn is_default(&self, key: &str) -> bool {
        self.figment
            .find_metadata(key)
            .is_none_or(|m| m.name == DEFAULTS)
    }

    /// Builds the error for an invalid `key`, naming its origin.
    pub(crate) fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_string(),
            origin: self.origin(key),
            message: message.into(),
        }
    }
}

/// The process environment as UTF-8 pairs (others are skipped).
pub(crate) fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Loads `<config_dir>/<name>`, `<config_dir>/<name>.d/*.conf`, the
/// `SALT_*` entries of `env` and `overrides` over `defaults`.
pub(crate) fn load<T>(
    defaults: &T,
    config_dir: &Path,
    name: &str,
    env: &[(String, String)],
    overrides: &[(&str, serde_json::Value)],
) -> Result<Loaded<T>, ConfigError>
where
    T: Serialize + DeserializeOwned,
{
    let default_dict = Value::serialize(defaults)
        .ok()
        .and_then(|v| v.into_dict())
        .ok_or_else(|| ConfigError::Invalid {
            key: "<all>".to_string(),
            origin: DEFAULTS.to_string(),
            message: "defaults do not serialize to a mapping".to_string(),
        })?;
    let known: BTreeSet<String> = default_dict.keys().cloned().collect();
    let mut unknown_origins = Vec::new();
    let mut figment = Figment::from(Layer {
        metadata: Metadata::named(DEFAULTS),
        dict: default_dict.clone(),
    });

    let mut files = vec![config_dir.join(name)];
    let (included, skipped_includes) = includes(&config_dir.join(format!("{name}.d")))?;
    files.extend(included);
    for path in files {
        let Some(dict) = read_file(&path)? else {
            continue;
        };
        for key in dict.keys().filter(|k| !known.contains(*k)) {
            unknown_origins.push((key.clone(), path.display().to_string()));
        }
        figment = figment.merge(Layer {
            metadata: Metadata::from("config file", Source::File(path)),
            dict,
        });
    }

    figment = figment.merge(Layer {
        metadata: Metadata::named(ENVIRONMENT).interpolater(|_: &Profile, keys: &[&str]| {
            let key = keys.first().copied().unwrap_or_default();
            format!("SALT_{}", key.to_ascii_uppercase())
        }),
        dict: env_dict(env, &default_dict),
    });

    let mut cli = Dict::new();
    for (key, value) in overrides {
        if !known.contains(*key) {
            unknown_origins.push(((*key).to_string(), COMMAND_LINE.to_string()));
            continue;
        }
        let value = Value::serialize(value).map_err(|e| ConfigError::Invalid {
            key: (*key).to_string(),
            origin: COMMAND_LINE.to_string(),
            message: e.kind.to_string(),
        })?;
        cli.insert((*key).to_string(), value);
    }
    figment = figment.merge(Layer {
        metadata: Metadata::named(COMMAND_LINE),
        dict: cli,
    });

    let config = figment.extract::<T>().map_err(from_figment)?;
    Ok(Loaded {
        config,
        figment,
        notes: LoadNotes {
            unknown: unknown_origins,
            skipped_includes,
            origins: Default::default(),
            main_file: config_dir.join(name),
        },
    })
}

/// The `*.conf` files of an include directory in sorted order (Salt's
/// `default_include`), and the entries skipped. A missing
/// directory means no includes.
type Includes = (Vec<PathBuf>, Vec<PathBuf>);

fn includes(dir: &Path) -> Result<Includes, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for entry in entries.take(MAX_INCLUDES) {
        let entry = entry.map_err(|source| ConfigError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("conf") {
            skipped.push(path);
            continue;
        }
        if path.is_dir() {
            skipped.push(path);
            continue;
        }
        files.push(path);
    }
    files.sort();
    skipped.sort();
    Ok((files, skipped))
}

/// Reads one YAML file as a mapping. A missing file is `None`; an empty
/// file (or one holding only comments) is an empty mapping.
fn read_file(path: &Path) -> Result<Option<Dict>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let parsed: Option<Dict> = Yaml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(Some(parsed.unwrap_or_default()))
}

/// The config keys found among `SALT_*` variables. A variable whose key
/// defaults to a string (or to nothing) is kept verbatim, so `SALT_ID=1234`
/// stays the id "1234"; others are parsed like figment parses env values
/// (`5506` is a number, `[a, b]` a list, `true` a bool).
fn env_dict(env: &[(String, String)], defaults: &Dict) -> Dict {
    let mut dict = Dict::new();
    for (name, raw) in env {
        let Some(key) = name.strip_prefix("SALT_") else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        if PATH_VARIABLES.contains(&key.as_str()) {
            continue;
        }
        let value = match defaults.get(&key) {
            None => continue,
            Some(Value::String(..)) | Some(Value::Empty(..)) => Value::from(raw.clone()),
            Some(_) => {
                let Ok(parsed) = raw.parse::<Value>();
                parsed
            }
        };
        dict.insert(key, value);
    }
    dict
}

/// Describes where `key`'s value came from.
fn origin_of(figment: &Figment, key: &str) -> String {
    match figment.find_metadata(key) {
        Some(meta) => describe(meta, &[key]),
        None => DEFAULTS.to_string(),
    }
}

fn describe(meta: &Metadata, path: &[&str]) -> String {
    match &meta.source {
        Some(Source::File(file)) => file.display().to_string(),
        _ if meta.name == ENVIRONMENT => {
            format!(
                "{ENVIRONMENT} {}",
                meta.interpolate(&Profile::Default, path)
            )
        }
        _ => meta.name.to_string(),
    }
}

/// Turns figment's extraction error into ours, naming key and origin.
fn from_figment(err: figment::Error) -> ConfigError {
    let path: Vec<&str> = err.path.iter().map(String::as_str).collect();
    let key = if path.is_empty() {
        "<all>".to_string()
    } else {
        path.join(".")
    };
    let origin = err
        .metadata
        .as_ref()
        .map(|m| describe(m, &path))
        .unwrap_or_else(|| "configuration".to_string());
    let message = match &err.kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!("expected {expected}, found {}", show(actual))
        }
        Kind::Message(m) => m.clone(),
        other => other.to_string(),
    };
    ConfigError::Invalid {
        key,
        origin,
        message,
    }
}

fn show(actual: &Actual) -> String {
    match actual {
        Actual::Str(s) => format!("{s:?}"),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Signed(n) => n.to_string(),
        Actual::Float(n) => n.to_string(),
        Actual::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// `syndic_master`: a string (one upper master) or a list of them. Empty
/// strings are dropped, so `syndic_master: ''` means "not a syndic".
pub(crate) fn string_or_list<'de, D>(de: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match <OneOrMany as serde::Deserialize>::deserialize(de)
        .map_err(|_| serde::de::Error::custom("expected a string or a list of strings"))?
    {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    Ok(list
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// `nodegroups`: a mapping (or Salt 2017.7's list of one-key mappings) of
/// group name to compound target. A list value is a list of minion ids and
/// becomes `L@a,b,c`, unless it holds compound tokens (`and`/`or`/`not`,
/// parentheses or `X@` matchers), which Salt joins with spaces.
pub(crate) fn nodegroups<'de, D>(
    de: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use std::collections::BTreeMap;
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Expr {
        One(String),
        Many(Vec<String>),
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Groups {
        Map(BTreeMap<String, Expr>),
        List(Vec<BTreeMap<String, Expr>>),
    }
    let groups = <Groups as serde::Deserialize>::deserialize(de).map_err(|_| {
        serde::de::Error::custom(
            "expected a mapping of group name to a target string or a list of minion ids",
        )
    })?;
    let pairs: Vec<(String, Expr)> = match groups {
        Groups::Map(map) => map.into_iter().collect(),
        Groups::List(list) => list.into_iter().flatten().collect(),
    };
    Ok(pairs
        .into_iter()
        .map(|(name, expr)| {
            let target = match expr {
                Expr::One(s) => s,
                Expr::Many(items) if items.iter().any(|i| is_compound_token(i)) => items.join(" "),
                Expr::Many(items) => format!("L@{}", items.join(",")),
            };
            (name, target)
        })
        .collect())
}

fn is_compound_token(item: &str) -> bool {
    let t = item.trim();
    matches!(t, "and" | "or" | "not" | "(" | ")")
        || t.contains(char::is_whitespace)
        || t.split_once('@').is_some_and(|(prefix, _)| {
            prefix.len() == 1 && prefix.chars().all(|c| c.is_ascii_uppercase())
        })
}
