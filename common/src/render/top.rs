//! Salt's top files and SLS names, shared by the pillar compiler (on the
//! master) and the state compiler (on the minion): top files merged across
//! environments, their targets matched against one minion, SLS names
//! turned into files (`a.b` → `a/b.sls` or `a/b/init.sls`), glob names
//! expanded and relative includes (`.x`) resolved. Pure: the callers read
//! and render the files.
//!
//! A top file is `{env: {target: [sls..., {match: type}, {order: n},
//! {ignore_missing: true}]}}`; a later top file's (env, target) replaces
//! an earlier one's in place; targets apply in file order, then by
//! `order`. Errors are collected as text, never thrown: a broken entry is
//! skipped and reported, the rest still applies.

use crate::glob::Glob;
use crate::target::{self, TargetType};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// One target of a merged top file.
#[derive(Debug, Clone, PartialEq)]
pub struct TopTarget {
    pub tgt: String,
    pub match_type: Option<String>,
    pub sls: Vec<String>,
    pub order: i64,
}

/// A merged top: per environment section, its targets in order.
#[derive(Debug, Clone, Default)]
pub struct Top {
    pub sections: Vec<(String, Vec<TopTarget>)>,
    /// SLS names listed with `ignore_missing: True`, per env.
    pub ignored: HashMap<String, Vec<String>>,
}

impl Top {
    /// Merge one rendered top file of environment `env` (`order`: its key
    /// order, see `RenderedSls::key_order`). `what` names the kind of top
    /// file in messages ("Pillar top file", "Top file").
    pub fn merge(
        &mut self,
        what: &str,
        env: &str,
        value: Value,
        order: &[(String, Vec<String>)],
        errors: &mut Vec<String>,
    ) {
        let Value::Object(mut sections) = value else {
            errors.push(format!(
                "{what} of environment '{env}' does not render to a dictionary"
            ));
            return;
        };
        if sections.remove("include").is_some() {
            errors.push(format!(
                "{what} of environment '{env}': 'include' in a top file is not supported"
            ));
        }
        for (section, body) in in_file_order(sections, order.iter().map(|(k, _)| k.as_str())) {
            let Value::Object(targets) = body else {
                errors.push(format!(
                    "{what} of environment '{env}': section '{section}' is not a dictionary of targets"
                ));
                continue;
            };
            let target_order = order
                .iter()
                .find(|(k, _)| *k == section)
                .map(|(_, inner)| inner.as_slice())
                .unwrap_or_default();
            for (tgt, items) in in_file_order(targets, target_order.iter().map(String::as_str)) {
                let Some((t, ignore_missing)) = top_target(what, env, &section, tgt, items, errors)
                else {
                    continue;
                };
                if ignore_missing {
                    self.ignored
                        .entry(section.clone())
                        .or_default()
                        .extend(t.sls.iter().cloned());
                }
                let slot = match self.sections.iter().position(|(s, _)| *s == section) {
                    Some(i) => &mut self.sections[i].1,
                    None => {
                        self.sections.push((section.clone(), Vec::new()));
                        let last = self.sections.len() - 1;
                        &mut self.sections[last].1
                    }
                };
                match slot.iter_mut().find(|old| old.tgt == t.tgt) {
                    Some(old) => *old = t,
                    None => slot.push(t),
                }
            }
        }
    }

    /// Sort each section's targets by `order` (stable: file order stays
    /// among equal orders). Call once after the last merge.
    pub fn finish(&mut self) {
        for (_, targets) in &mut self.sections {
            targets.sort_by_key(|t| t.order);
        }
    }

    /// Whether `sls` of `env` was listed with `ignore_missing: True`.
    pub fn ignores_missing(&self, env: &str, sls: &str) -> bool {
        self.ignored
            .get(env)
            .is_some_and(|i| i.iter().any(|s| s == sls))
    }

    /// The SLS names of each environment whose targets `matches` accepts,
    /// in order, without repeats; only `only_env` when given.
    pub fn matching(
        &self,
        only_env: Option<&str>,
        mut matches: impl FnMut(&TopTarget) -> bool,
    ) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for (env, targets) in &self.sections {
            if only_env.is_some_and(|p| p != env) {
                continue;
            }
            for t in targets {
                if !matches(t) {
                    continue;
                }
                let slot = match out.iter().position(|(e, _)| e == env) {
                    Some(i) => &mut out[i].1,
                    None => {
                        out.push((env.clone(), Vec::new()));
                        let last = out.len() - 1;
                        &mut out[last].1
                    }
                };
                for sls in &t.sls {
                    if !slot.contains(sls) {
                        slot.push(sls.clone());
                    }
                }
            }
        }
        out
    }

    /// `state.show_top`'s shape: `{env: [sls...]}` for the given matches.
    pub fn to_show(matches: &[(String, Vec<String>)]) -> Value {
        Value::Object(
            matches
                .iter()
                .map(|(e, s)| (e.clone(), Value::from(s.clone())))
                .collect(),
        )
    }
}

/// One `target: [items]` of a top file section, and whether it said
/// `ignore_missing: True`.
fn top_target(
    what: &str,
    env: &str,
    section: &str,
    tgt: String,
    items: Value,
    errors: &mut Vec<String>,
) -> Option<(TopTarget, bool)> {
    let items = match items {
        Value::Array(items) => items,
        // `'*': web` is accepted by Salt as a one-item list.
        Value::String(s) => vec![Value::String(s)],
        _ => {
            errors.push(format!(
                "{what} of environment '{env}': target '{tgt}' in section '{section}' is not a list"
            ));
            return None;
        }
    };
    let mut t = TopTarget {
        tgt,
        match_type: None,
        sls: Vec::new(),
        order: 0,
    };
    let mut ignore_missing = false;
    for item in items {
        match item {
            Value::String(s) if !t.sls.contains(&s) => t.sls.push(s),
            Value::Object(m) => {
                if let Some(kind) = m.get("match") {
                    t.match_type = Some(
                        kind.as_str()
                            .map_or_else(|| kind.to_string(), str::to_string),
                    );
                }
                if let Some(o) = m.get("order") {
                    t.order = o
                        .as_i64()
                        .or_else(|| o.as_str().and_then(|s| s.trim().parse().ok()))
                        .unwrap_or(0);
                }
                if m.get("ignore_missing").and_then(Value::as_bool) == Some(true) {
                    ignore_missing = true;
                }
            }
            _ => {}
        }
    }
    Some((t, ignore_missing))
}

/// Whether minion `id` (with `grains`, and `pillar` when the caller has
/// one) is a target of `t`. `Err` says why the target cannot be matched
/// (a bad expression, an unknown match type, pillar matching where there
/// is no pillar).
pub fn target_matches(
    what: &str,
    t: &TopTarget,
    id: &str,
    grains: &Value,
    pillar: Option<&Value>,
    nodegroups: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let kind = t.match_type.as_deref().unwrap_or("glob");
    let tgt_type = match kind {
        "glob" => TargetType::Glob,
        "pcre" => TargetType::Pcre,
        "list" => TargetType::List,
        "grain" => TargetType::Grain,
        "grain_pcre" => TargetType::GrainPcre,
        "compound" => TargetType::Compound,
        "ipcidr" => TargetType::Ipcidr,
        "nodegroup" => TargetType::Nodegroup,
        "pillar" if pillar.is_some() => TargetType::Pillar,
        "pillar_pcre" if pillar.is_some() => TargetType::PillarPcre,
        "pillar" | "pillar_pcre" | "pillar_exact" => {
            return Err(format!(
                "{what} target '{}': '{kind}' matching is not allowed in a {}",
                t.tgt,
                what.to_lowercase()
            ));
        }
        other => {
            return Err(format!(
                "{what} target '{}': unknown match type '{other}'",
                t.tgt
            ))
        }
    };
    let parsed = target::parse_with_delimiter(&t.tgt, tgt_type, nodegroups, ":")
        .map_err(|e| format!("{what} target '{}' (match: {kind}): {e}", t.tgt))?;
    Ok(parsed.matches_with(id, grains, pillar, ":"))
}

/// The two files SLS `sls` may be, in the order Salt tries them.
pub fn sls_files(sls: &str) -> [String; 2] {
    let rel = sls.replace('.', "/");
    [format!("{rel}.sls"), format!("{rel}/init.sls")]
}

/// Every SLS name among `files` (a file server listing):
/// `a/b.sls` and `a/b/init.sls` are `a.b`; sorted, without repeats.
pub fn sls_names(files: &[String]) -> Vec<String> {
    let mut names: Vec<String> = files
        .iter()
        .filter_map(|f| f.strip_suffix(".sls"))
        .map(|f| {
            let f = f.strip_suffix("/init").unwrap_or(f);
            f.replace('/', ".")
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `name` when it has no glob characters; else the `available` SLS it
/// matches (`name` itself when none does, to be reported missing).
pub fn expand(name: &str, available: impl FnOnce() -> Vec<String>) -> Vec<String> {
    if !name.contains(['*', '?', '[']) {
        return vec![name.to_string()];
    }
    let glob = Glob::new(name);
    let found: Vec<String> = available()
        .into_iter()
        .filter(|s| glob.matches(s))
        .collect();
    if found.is_empty() {
        vec![name.to_string()]
    } else {
        found
    }
}

/// `.x` included from SLS `sls` (file `path`): relative to the SLS's
/// directory (its own name when it is an `init.sls`), as in Salt; `..x`
/// goes one level further up.
pub fn relative(name: &str, sls: &str, path: &str) -> String {
    if !name.starts_with('.') {
        return name.to_string();
    }
    let dots = name.chars().take_while(|c| *c == '.').count();
    let rest = &name[dots..];
    let mut parts: Vec<&str> = sls.split('.').collect();
    if !(path.ends_with("/init.sls") || path == "init.sls") {
        parts.pop();
    }
    for _ in 1..dots {
        parts.pop();
    }
    parts.push(rest);
    parts.retain(|p| !p.is_empty());
    parts.join(".")
}

/// The entries of `map` in the order of `order` (the file's), then any
/// `order` missed, sorted.
pub fn in_file_order<'o>(
    mut map: Map<String, Value>,
    order: impl Iterator<Item = &'o str>,
) -> Vec<(String, Value)> {
    let mut out = Vec::with_capacity(map.len());
    for k in order {
        if let Some(v) = map.remove(k) {
            out.push((k.to_string(), v));
        }
    }
    out.extend(map);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_match_and_names() {
        let mut top = Top::default();
        let mut errors = Vec::new();
        top.merge(
            "Top file",
            "base",
            json!({"base": {"*": ["common"], "web*": ["web", {"order": -1}], "os:Debian": [{"match": "grain"}, "deb"], "bad": 3}}),
            &[("base".into(), vec!["*".into(), "web*".into(), "os:Debian".into()])],
            &mut errors,
        );
        top.finish();
        assert_eq!(errors.len(), 1, "{errors:?}");
        let grains = json!({"os": "Debian"});
        let got = top.matching(None, |t| {
            target_matches("Top file", t, "web1", &grains, None, &BTreeMap::new()).unwrap_or(false)
        });
        assert_eq!(
            got,
            vec![(
                "base".to_string(),
                vec!["web".into(), "common".into(), "deb".into()]
            )]
        );
        assert_eq!(
            sls_names(&[
                "a/b.sls".into(),
                "a/b/init.sls".into(),
                "c.txt".into(),
                "top.sls".into()
            ]),
            ["a.b", "top"]
        );
        assert_eq!(relative(".x", "a.b", "a/b.sls"), "a.x");
        assert_eq!(relative(".x", "a.b", "a/b/init.sls"), "a.b.x");
        assert_eq!(relative("..x", "a.b.c", "a/b/c.sls"), "a.x");
        assert_eq!(expand("a.*", || vec!["a.b".into(), "c".into()]), ["a.b"]);
        let t = TopTarget {
            tgt: "role:db".into(),
            match_type: Some("pillar".into()),
            sls: vec![],
            order: 0,
        };
        assert!(target_matches(
            "Pillar top file",
            &t,
            "m",
            &json!({}),
            None,
            &BTreeMap::new()
        )
        .is_err());
        assert_eq!(
            target_matches(
                "Top file",
                &t,
                "m",
                &json!({}),
                Some(&json!({"role": "db"})),
                &BTreeMap::new()
            ),
            Ok(true)
        );
    }
}
