//! Salt's `key` outputter, `salt-key`'s default: one header per key status
//! (`Accepted Keys:`, `Unaccepted Keys:`, ...), statuses sorted by name, then
//! one line per key: the id, or `id:  fingerprint` when the status holds a
//! map. Brine's `syndics` status (ids holding the syndic role) prints right
//! after the accepted keys it is a subset of.
//!
//! The other outputters render the same [`KeySections`] document so that
//! `salt-key --out json|yaml|txt|nested|raw` print what Salt's would.
//!
//! Invariant: keys print in the order given (the caller sorts them, as
//! `salt-key` does case-insensitively), sections in the order given except
//! where Salt's outputter sorts (key, yaml), and colour codes are Salt's
//! exact sequences, present only when asked for.

use std::io;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use super::nested::nested;
use super::raw::{py_repr, py_str};
use super::OutFormat;

/// Salt's `TextFormat` sequences the key outputter uses.
mod colors {
    pub const RED: &str = "\x1b[0;31m";
    pub const LIGHT_RED: &str = "\x1b[1;31m";
    pub const GREEN: &str = "\x1b[0;32m";
    pub const LIGHT_GREEN: &str = "\x1b[1;32m";
    pub const BLUE: &str = "\x1b[0;34m";
    pub const LIGHT_BLUE: &str = "\x1b[1;34m";
    pub const MAGENTA: &str = "\x1b[0;35m";
    pub const LIGHT_MAGENTA: &str = "\x1b[1;35m";
    pub const CYAN: &str = "\x1b[0;36m";
    pub const LIGHT_CYAN: &str = "\x1b[1;36m";
    pub const ENDC: &str = "\x1b[0m";
}

/// The status of the ids holding the syndic role (Brine's own section).
pub const SYNDICS: &str = "syndics";

/// (header, header colour, entry colour) of a status; an unknown status
/// prints as Salt's `local` one.
fn style(status: &str) -> (&'static str, &'static str, &'static str) {
    match status {
        "minions" => ("Accepted Keys:", colors::LIGHT_GREEN, colors::GREEN),
        "minions_pre" => ("Unaccepted Keys:", colors::LIGHT_RED, colors::RED),
        "minions_rejected" => ("Rejected Keys:", colors::LIGHT_BLUE, colors::BLUE),
        "minions_denied" => ("Denied Keys:", colors::LIGHT_MAGENTA, colors::MAGENTA),
        SYNDICS => ("Syndics:", colors::LIGHT_CYAN, colors::CYAN),
        _ => ("Local Keys:", colors::LIGHT_MAGENTA, colors::MAGENTA),
    }
}

/// One section of `salt-key`'s output: a status (`minions`, `minions_pre`,
/// `local`, ...) and its keys in the order they print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySection {
    pub status: String,
    pub keys: KeyList,
}

/// The keys of a section: ids (a list in json/yaml), or ids with their
/// fingerprints (a map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyList {
    Ids(Vec<String>),
    Fingers(Vec<(String, String)>),
}

/// `salt-key`'s document: sections in the order json, txt and nested print
/// them (Salt's dict order); the key and yaml outputters sort by status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySections(pub Vec<KeySection>);

impl Serialize for KeyList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            KeyList::Ids(ids) => s.collect_seq(ids),
            KeyList::Fingers(entries) => {
                let mut m = s.serialize_map(Some(entries.len()))?;
                for (id, fp) in entries {
                    m.serialize_entry(id, fp)?;
                }
                m.end()
            }
        }
    }
}

impl Serialize for KeySections {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for sec in &self.0 {
            m.serialize_entry(&sec.status, &sec.keys)?;
        }
        m.end()
    }
}

impl KeySections {
    /// The sections from a plain document `{status: [ids] | {id: fp}}`
    /// (statuses and fingerprint ids in the map's sorted order); any other
    /// value is an empty document.
    pub fn from_value(v: &Value) -> KeySections {
        let Value::Object(map) = v else {
            return KeySections::default();
        };
        let sections = map
            .iter()
            .map(|(status, keys)| KeySection {
                status: status.clone(),
                keys: match keys {
                    Value::Object(fingers) => KeyList::Fingers(
                        fingers
                            .iter()
                            .map(|(id, fp)| (id.clone(), py_str(fp)))
                            .collect(),
                    ),
                    Value::Array(ids) => KeyList::Ids(ids.iter().map(py_str).collect()),
                    other => KeyList::Ids(vec![py_str(other)]),
                },
            })
            .collect();
        KeySections(sections)
    }

    /// The same sections sorted by status name (Salt's yaml outputter sorts
    /// mapping keys).
    fn sorted(&self) -> KeySections {
        let mut secs = self.0.clone();
        secs.sort_by(|a, b| a.status.cmp(&b.status));
        KeySections(secs)
    }
}

/// Renders the sections in `format`: `key` as Salt's key outputter, json
/// with `indent` as the json outputter, yaml sorted by status, `txt` as
/// `status: <Python repr>` lines, nested with sections in their order, raw
/// as one Python `repr`.
pub(crate) fn render(
    doc: &KeySections,
    format: OutFormat,
    color: bool,
    indent: Option<usize>,
) -> io::Result<String> {
    Ok(match format {
        OutFormat::Key => render_key(doc, color),
        OutFormat::Json => super::json::render(doc, indent)?,
        OutFormat::Yaml => super::yaml::render(&doc.sorted())?,
        OutFormat::Txt => render_txt(doc),
        // Key lists are not state returns: highstate shows them as nested.
        OutFormat::Nested | OutFormat::Highstate => render_nested(doc, color),
        OutFormat::Raw => {
            let parts: Vec<String> = doc
                .0
                .iter()
                .map(|sec| format!("{}: {}", repr(&sec.status), list_repr(&sec.keys)))
                .collect();
            format!("{{{}}}\n", parts.join(", "))
        }
        OutFormat::Quiet => String::new(),
    })
}

/// Salt's key outputter: statuses sorted by name (syndics right after the
/// accepted keys), a header each, then one key per line.
fn render_key(doc: &KeySections, color: bool) -> String {
    let paint = |c: &'static str| if color { c } else { "" };
    let endc = paint(colors::ENDC);
    let mut sorted: Vec<&KeySection> = doc.0.iter().collect();
    sorted.sort_by_key(|sec| match sec.status.as_str() {
        SYNDICS => ("minions", 1),
        other => (other, 0),
    });
    let mut out = String::new();
    for sec in sorted {
        let (header, hc, ec) = style(&sec.status);
        out.push_str(&format!("{}{header}{endc}\n", paint(hc)));
        match &sec.keys {
            KeyList::Ids(ids) => {
                for id in ids {
                    out.push_str(&format!("{}{id}{endc}\n", paint(ec)));
                }
            }
            KeyList::Fingers(entries) => {
                for (id, fp) in entries {
                    out.push_str(&format!("{}{id}:  {fp}{endc}\n", paint(ec)));
                }
            }
        }
    }
    out
}

fn repr(s: &str) -> String {
    py_repr(&Value::String(s.to_string()))
}

/// Python's `repr` of a section's list or dict, in the keys' order.
fn list_repr(keys: &KeyList) -> String {
    match keys {
        KeyList::Ids(ids) => {
            let items: Vec<String> = ids.iter().map(|id| repr(id)).collect();
            format!("[{}]", items.join(", "))
        }
        KeyList::Fingers(entries) => {
            let items: Vec<String> = entries
                .iter()
                .map(|(id, fp)| format!("{}: {}", repr(id), repr(fp)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// Salt's `txt` outputter on the document: `status: <repr>` per section.
fn render_txt(doc: &KeySections) -> String {
    doc.0
        .iter()
        .map(|sec| format!("{}: {}\n", sec.status, list_repr(&sec.keys)))
        .collect()
}

/// Salt's `nested` outputter on the document, sections and keys in their
/// order: ids as `- id` items, fingerprints as a `----------` dict.
fn render_nested(doc: &KeySections, color: bool) -> String {
    let mut lines = Vec::new();
    for sec in &doc.0 {
        lines.push(format!("{}:", sec.status));
        match &sec.keys {
            KeyList::Ids(ids) => {
                let items = Value::Array(ids.iter().cloned().map(Value::String).collect());
                let text = nested(&items, 4, color);
                if !text.is_empty() {
                    lines.push(text);
                }
            }
            KeyList::Fingers(entries) => {
                lines.push("    ----------".to_string());
                for (id, fp) in entries {
                    lines.push(format!("    {id}:"));
                    lines.push(nested(&Value::String(fp.clone()), 8, color));
                }
            }
        }
    }
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}
