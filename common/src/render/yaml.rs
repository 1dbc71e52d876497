//! YAML as Salt's SLS loader reads it, and YAML flow output for the
//! `yaml`/`yaml_encode` filters.
//!
//! Parsing is `serde_norway`'s; plain (unquoted) scalars it leaves as
//! strings are typed again with YAML 1.1's rules as Salt's loader applies
//! them (`yes`/`no`/`on`/`off` are booleans, `0755` is 755, `1:30` is 90),
//! so `enabled: yes` means what it means in Salt. A plain scalar is told
//! from a quoted one by where its text lies in the source (a quoted one
//! starts right after its quote). Merge keys (`<<: *anchor`) are applied;
//! duplicate keys are an error, as Salt's loader makes them; keys that are
//! not strings are written the way Python prints them (`1`, `True`, `None`).

use super::RenderError;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Load one YAML document (`name` is for errors); an empty one is null.
pub fn load_yaml(text: &str, name: &str) -> Result<Value, RenderError> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    let de = serde_norway::Deserializer::from_str(text);
    Node {
        src: text,
        depth: 0,
    }
    .deserialize(de)
    .map_err(|e| {
        let line = e.location().map(|l| l.line());
        RenderError::new(name, line, format!("YAML: {e}"))
    })
}

/// Deepest nesting accepted (far below the stack's limit).
const MAX_DEPTH: usize = 256;

/// Deserializes one node of `src` into JSON, typing plain scalars again.
#[derive(Clone, Copy)]
struct Node<'s> {
    src: &'s str,
    depth: usize,
}

impl<'s> Node<'s> {
    fn deeper<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(Node {
            src: self.src,
            depth: self.depth + 1,
        })
    }

    /// Whether `v`, borrowed from the source, was written as a plain
    /// scalar: not right after a quote.
    fn is_plain(&self, v: &str) -> bool {
        let base = self.src.as_ptr() as usize;
        let at = v.as_ptr() as usize;
        if at < base || at > base + self.src.len() {
            return false;
        }
        let offset = at - base;
        offset == 0 || !matches!(self.src.as_bytes()[offset - 1], b'\'' | b'"')
    }
}

/// A plain scalar `serde_norway` typed as a string, typed with YAML 1.1
/// as Salt does (see the module header).
fn retype_plain(v: &str) -> Value {
    match v {
        "yes" | "Yes" | "YES" | "on" | "On" | "ON" => return Value::Bool(true),
        "no" | "No" | "NO" | "off" | "Off" | "OFF" => return Value::Bool(false),
        _ => {}
    }
    let numeric = v.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    if numeric && v != "None" {
        if let n @ Value::Number(_) = crate::args::yamlify(v) {
            return n;
        }
    }
    Value::String(v.to_string())
}

impl<'de, 's> DeserializeSeed<'de> for Node<'s> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 's> Visitor<'de> for Node<'s> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        i64::try_from(v)
            .map(Number::from)
            .or_else(|_| u64::try_from(v).map(Number::from))
            .map(Value::Number)
            .map_err(|_| E::custom(format!("integer {v} does not fit in 64 bits")))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v)
            .map(|n| Value::Number(n.into()))
            .map_err(|_| E::custom(format!("integer {v} does not fit in 64 bits")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // JSON has no infinities or NaN: kept as YAML spells them.
        Ok(Number::from_f64(v).map_or_else(
            || {
                Value::String(
                    if v.is_nan() {
                        ".nan"
                    } else if v > 0.0 {
                        ".inf"
                    } else {
                        "-.inf"
                    }
                    .to_string(),
                )
            },
            Value::Number,
        ))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Value, E> {
        if self.is_plain(v) {
            Ok(retype_plain(v))
        } else {
            Ok(Value::String(v.to_string()))
        }
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.deeper()?;
        let mut out = Vec::new();
        // Bounded by the document's length.
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.deeper()?;
        let mut out = Map::new();
        let mut merged: Vec<Value> = Vec::new();
        // Bounded by the document's length.
        while let Some(key) = map.next_key_seed(inner)? {
            let value = map.next_value_seed(inner)?;
            let key = key_text(key).map_err(de::Error::custom)?;
            if key == "<<" {
                merged.push(value);
                continue;
            }
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key '{key}'")));
            }
            out.insert(key, value);
        }
        // Merge keys: entries of the merged mappings the mapping itself
        // does not set; of several, the first one listed wins.
        for m in merged {
            let sources = match m {
                Value::Array(items) => items,
                other => vec![other],
            };
            for source in sources {
                let Value::Object(source) = source else {
                    return Err(de::Error::custom(
                        "a merge key ('<<') takes a mapping or a list of mappings",
                    ));
                };
                for (k, v) in source {
                    out.entry(k).or_insert(v);
                }
            }
        }
        Ok(Value::Object(out))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Value, A::Error> {
        Err(de::Error::custom("YAML tags (!tag) are not supported"))
    }
}

/// A mapping key as a JSON key: scalars the way Python prints them.
fn key_text(key: Value) -> Result<String, String> {
    match key {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(true) => Ok("True".to_string()),
        Value::Bool(false) => Ok("False".to_string()),
        Value::Null => Ok("None".to_string()),
        other => Err(format!("a mapping key must be a scalar, not {other}")),
    }
}

/// A `serde_norway` mapping key spelled as [`key_text`] spells it.
pub(super) fn key_of(key: &serde_norway::Value) -> Option<String> {
    match key {
        serde_norway::Value::String(s) => Some(s.clone()),
        serde_norway::Value::Number(n) => Some(n.to_string()),
        serde_norway::Value::Bool(true) => Some("True".to_string()),
        serde_norway::Value::Bool(false) => Some("False".to_string()),
        serde_norway::Value::Null => Some("None".to_string()),
        _ => None,
    }
}

/// `value` as YAML in flow style, on one line (`{a: 1, b: [x, 'y: z']}`),
/// strings plain where that reads back as the same string, else quoted.
pub fn to_flow_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_flow(value, &mut out);
    out
}

fn write_flow(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(&yaml_scalar(s)),
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_flow(v, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&yaml_scalar(k));
                out.push_str(": ");
                write_flow(v, out);
            }
            out.push('}');
        }
    }
}

/// A string as a YAML scalar usable anywhere (block or flow context):
/// plain when safe, single-quoted when printable, else double-quoted.
pub(super) fn yaml_scalar(s: &str) -> String {
    if plain_is_safe(s) {
        return s.to_string();
    }
    if s.chars().all(|c| !c.is_control()) {
        return single_quoted(s);
    }
    double_quoted(s)
}

pub(super) fn single_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// JSON's string escapes are YAML double-quoted escapes too.
pub(super) fn double_quoted(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn plain_is_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if s.trim() != s || s.ends_with(':') {
        return false;
    }
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.contains([',', '[', ']', '{', '}']) {
        return false;
    }
    if s.chars().any(|c| c.is_control()) {
        return false;
    }
    // Reads back as this string (not a number, boolean or null)?
    matches!(load_yaml(s, ""), Ok(Value::String(back)) if back == s)
}
