//! Pillar compiled for one minion from `pillar_roots`, as Salt's
//! `Pillar.compile_pillar` does it (blocking: file reads and rendering).
//!
//! 1. Top files: `top.sls` of each environment (`base` first, then the
//!    others sorted; only `pillarenv` when given; only `base` under
//!    `pillar_source_merging_strategy: none`), rendered like any SLS.
//!    Their sections `env: {target: [sls..., {match: type}, {order: n},
//!    {ignore_missing: true}]}` are merged: a later top file's (env,
//!    target) replaces an earlier one's in place; targets apply in file
//!    order, then by `order`.
//! 2. Matching: each target with its `match` type (glob by default; pcre,
//!    list, grain, grain_pcre, compound, ipcidr, nodegroup) against the
//!    minion's id and grains (`brine_common::target`); `pillar` matching is
//!    an error in a pillar top file.
//! 3. Rendering: the matched SLS of each environment in order (a name with
//!    glob characters names every available SLS it matches; `a.b` is
//!    `a/b.sls` or `a/b/init.sls`), with the context `grains`, `opts` (the
//!    master options, see [`opts_for`], with the minion's `id`), `saltenv`,
//!    `pillarenv`, `pillar` (compiled so far) and Salt's `sls`/`tpldir`/
//!    `slspath`... variables. An SLS's `include:` list (names, relative
//!    `.x`, globs, or `{name: {defaults: {...}, key: 'a:b'}}`) is rendered
//!    first and merged in order, the including SLS last, so its own values
//!    win (Salt's default, `pillar_includes_override_sls: False`). An SLS
//!    already rendered in this environment is not rendered again when
//!    included (an include loop ends there); depth and count are bounded.
//! 4. Merging: `pillar_source_merging_strategy` `smart`/`recurse`/`none`
//!    merge mappings recursively, lists replaced unless
//!    `pillar_merge_lists` (then appended without duplicates);
//!    `overwrite` replaces top-level keys. `pillar_opts: True` puts the
//!    options under `master`.
//!
//! Errors never leave an empty pillar silently: what compiled is kept and
//! every error is listed under `_errors`, in Salt's wording where it has
//! one ("Rendering SLS 'x' failed, render error: FILE, line N: ...",
//! "Specified SLS 'x' in environment 'e' is not available on the salt
//! master"). Salt hides render details behind `pillar_safe_render_error`;
//! here the file and line reach the operator (the pillar goes only to the
//! minion it is for).

use crate::fileserver::roots::{EnvSource, Roots};
use brine_common::config::MasterConfig;
use brine_common::proto::ListKind;
use brine_common::render::top::{self, Top};
use brine_common::render::{self, TemplateSource};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::warn;

/// How messages name a pillar top file.
const TOP: &str = "Pillar top file";
/// Deepest include chain followed.
const MAX_INCLUDE_DEPTH: usize = 32;
/// Most SLS renders one compile does (top files not counted).
const MAX_RENDERS: usize = 10_000;
/// Option names that would hold a credential never reach a template or
/// a pillar (none exists today: keys and the client token are files).
const SECRET_WORDS: [&str; 5] = ["pass", "secret", "token", "credential", "key"];

/// The pillar of minion `id` with these `grains`, from `roots` (the
/// master's `pillar_roots`), for `pillarenv` (all environments when
/// `None`). Never fails: errors are listed under `_errors`.
pub fn compile(
    cfg: &MasterConfig,
    roots: &Roots,
    id: &str,
    grains: &Value,
    pillarenv: Option<&str>,
) -> Value {
    let mut c = Compiler {
        cfg,
        roots,
        id,
        grains,
        pillarenv,
        opts: opts_for(cfg, id),
        errors: Vec::new(),
        renders: 0,
        top: Top::default(),
        avail: HashMap::new(),
    };
    c.tops();
    let matches = c.top_matches();
    let mut pillar = c.render_pillar(&matches);
    if cfg.pillar_opts {
        pillar.insert("master".to_string(), Value::Object(c.opts.clone()));
    }
    if !c.errors.is_empty() {
        for e in &c.errors {
            warn!(minion = %id, error = %e, "pillar render error");
        }
        pillar.insert(
            "_errors".to_string(),
            Value::Array(c.errors.into_iter().map(Value::String).collect()),
        );
    }
    Value::Object(pillar)
}

/// The master options as templates see them (`opts`) and `pillar_opts`
/// shows them: every option but those whose name says it holds a
/// credential, with `id` set to the minion's id (as Salt does).
pub fn opts_for(cfg: &MasterConfig, id: &str) -> Map<String, Value> {
    let mut opts = match serde_json::to_value(cfg) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    opts.retain(|k, _| !SECRET_WORDS.iter().any(|w| k.contains(w)));
    opts.insert("master_id".to_string(), Value::String(cfg.id.clone()));
    opts.insert("id".to_string(), Value::String(id.to_string()));
    opts
}

struct Compiler<'a> {
    cfg: &'a MasterConfig,
    roots: &'a Roots,
    id: &'a str,
    grains: &'a Value,
    pillarenv: Option<&'a str>,
    opts: Map<String, Value>,
    errors: Vec<String>,
    renders: usize,
    /// The merged top files (also what they list with `ignore_missing`).
    top: Top,
    /// Available SLS names per env (listed when a glob needs them).
    avail: HashMap<String, Vec<String>>,
}

impl Compiler<'_> {
    fn source(&self, env: &str) -> Arc<dyn TemplateSource> {
        Arc::new(EnvSource {
            roots: self.roots.clone(),
            env: env.to_string(),
        })
    }

    /// The render context for `env` with the pillar compiled so far.
    fn context(&self, env: &str, pillar: &Map<String, Value>) -> Map<String, Value> {
        let mut opts = self.opts.clone();
        opts.insert("saltenv".into(), Value::String(env.to_string()));
        opts.insert(
            "pillarenv".into(),
            self.pillarenv.map_or(Value::Null, Value::from),
        );
        let mut ctx = Map::new();
        ctx.insert("grains".into(), self.grains.clone());
        ctx.insert("opts".into(), Value::Object(opts));
        ctx.insert("saltenv".into(), Value::String(env.to_string()));
        ctx.insert(
            "pillarenv".into(),
            self.pillarenv.map_or(Value::Null, Value::from),
        );
        ctx.insert("pillar".into(), Value::Object(pillar.clone()));
        ctx
    }

    /// The environments whose top files count (see the module header).
    fn envs(&self) -> Vec<String> {
        if let Some(env) = self.pillarenv {
            return if self.cfg.pillar_roots.contains_key(env) {
                vec![env.to_string()]
            } else {
                Vec::new()
            };
        }
        let mut envs = vec!["base".to_string()];
        if self.cfg.pillar_source_merging_strategy != "none" {
            envs.extend(self.roots.envs().into_iter().filter(|e| e != "base"));
        }
        envs
    }

    /// Read, render and merge the top files into `self.top`.
    fn tops(&mut self) {
        for env in self.envs() {
            let text = match self.roots.read_to_string(&env, "top.sls") {
                Ok(Some((text, _))) => text,
                Ok(None) => continue,
                Err(e) => {
                    self.errors.push(format!(
                        "Rendering Primary Top file failed, render error: {e} (pillar environment '{env}')"
                    ));
                    continue;
                }
            };
            let ctx = Value::Object(self.context(&env, &Map::new()));
            let rendered = render::render_sls_text(&text, "top.sls", &ctx, Some(self.source(&env)))
                .and_then(|r| r.load().map(|v| (v, r.key_order())));
            let (value, order) = match rendered {
                Ok(ok) => ok,
                Err(e) => {
                    self.errors.push(format!(
                        "Rendering Primary Top file failed, render error: {e} (pillar environment '{env}')"
                    ));
                    continue;
                }
            };
            self.top.merge(TOP, &env, value, &order, &mut self.errors);
        }
        self.top.finish();
    }

    /// The SLS names of each environment this minion matches, in order;
    /// a target that cannot be matched is an error.
    fn top_matches(&mut self) -> Vec<(String, Vec<String>)> {
        let mut errors = Vec::new();
        let (id, grains, nodegroups) = (self.id, self.grains, &self.cfg.nodegroups);
        let out = self.top.matching(self.pillarenv, |t| {
            top::target_matches(TOP, t, id, grains, None, nodegroups).unwrap_or_else(|e| {
                errors.push(e);
                false
            })
        });
        self.errors.extend(errors);
        out
    }

    fn render_pillar(&mut self, matches: &[(String, Vec<String>)]) -> Map<String, Value> {
        let mut pillar = Map::new();
        for (env, names) in matches {
            let mut mods: HashMap<String, Option<Value>> = HashMap::new();
            let mut files = Vec::new();
            for name in names {
                files.extend(self.expand(env, name));
            }
            for sls in files {
                if let Some(state) =
                    self.render_pstate(&sls, env, &mut mods, &Map::new(), 0, &pillar)
                {
                    pillar = match self.merge(Value::Object(pillar), state) {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    };
                }
            }
        }
        pillar
    }

    /// `name`, or the available SLS its glob matches ([`top::expand`]).
    fn expand(&mut self, env: &str, name: &str) -> Vec<String> {
        top::expand(name, || self.available(env).to_vec())
    }

    /// Every SLS name of `env` (`a/b.sls` and `a/b/init.sls` are `a.b`).
    fn available(&mut self, env: &str) -> &[String] {
        if !self.avail.contains_key(env) {
            let files = match self.roots.list(env, "", ListKind::Files) {
                Ok(files) => files,
                Err(e) => {
                    self.errors
                        .push(format!("Listing pillar environment '{env}' failed: {e}"));
                    Vec::new()
                }
            };
            self.avail.insert(env.to_string(), top::sls_names(&files));
        }
        self.avail.get(env).map(Vec::as_slice).unwrap_or_default()
    }

    /// The file of SLS `sls` in `env`: its path and text.
    fn read_sls(&self, env: &str, sls: &str) -> Result<Option<(String, String)>, String> {
        for path in top::sls_files(sls) {
            match self.roots.read_to_string(env, &path) {
                Ok(Some((text, _))) => return Ok(Some((path, text))),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(None)
    }

    /// Render SLS `sls` of `env` and its includes (Salt's
    /// `render_pstate`); `None` when it is missing or failed (reported).
    fn render_pstate(
        &mut self,
        sls: &str,
        env: &str,
        mods: &mut HashMap<String, Option<Value>>,
        defaults: &Map<String, Value>,
        depth: usize,
        pillar: &Map<String, Value>,
    ) -> Option<Value> {
        if depth > MAX_INCLUDE_DEPTH {
            self.errors.push(format!(
                "Include of SLS '{sls}' in environment '{env}' is nested deeper than {MAX_INCLUDE_DEPTH}"
            ));
            return None;
        }
        self.renders += 1;
        if self.renders > MAX_RENDERS {
            if self.renders == MAX_RENDERS + 1 {
                self.errors.push(format!(
                    "Pillar compile stopped after {MAX_RENDERS} SLS renders (SLS '{sls}' and later not rendered)"
                ));
            }
            return None;
        }
        let (path, text) = match self.read_sls(env, sls) {
            Ok(Some(found)) => found,
            Ok(None) => {
                mods.insert(sls.to_string(), None);
                if self.top.ignores_missing(env, sls) {
                    return None;
                }
                if self
                    .cfg
                    .pillar_roots
                    .get(env)
                    .is_some_and(|r| !r.is_empty())
                {
                    self.errors.push(format!(
                        "Specified SLS '{sls}' in environment '{env}' is not available on the salt master"
                    ));
                } else {
                    self.errors.push(format!(
                        "Specified SLS '{sls}' in environment '{env}' was not found: environment '{env}' is not defined in 'pillar_roots'"
                    ));
                }
                return None;
            }
            Err(e) => {
                mods.insert(sls.to_string(), None);
                self.errors
                    .push(format!("Rendering SLS '{sls}' failed, render error: {e}"));
                return None;
            }
        };
        let mut ctx = self.context(env, pillar);
        ctx.extend(render::sls_vars(sls, &path));
        ctx.extend(defaults.iter().map(|(k, v)| (k.clone(), v.clone())));
        let state =
            match render::render_sls(&text, &path, &Value::Object(ctx), Some(self.source(env))) {
                Ok(v) => v,
                Err(e) => {
                    mods.insert(sls.to_string(), None);
                    self.errors
                        .push(format!("Rendering SLS '{sls}' failed, render error: {e}"));
                    return None;
                }
            };
        let Value::Object(mut state) = state else {
            mods.insert(sls.to_string(), None);
            self.errors
                .push(format!("SLS '{sls}' does not render to a dictionary"));
            return None;
        };
        let Some(include) = state.remove("include") else {
            let state = Value::Object(state);
            mods.insert(sls.to_string(), Some(state.clone()));
            return Some(state);
        };
        // Its own data first, so an include loop back to it ends here.
        mods.insert(sls.to_string(), Some(Value::Object(state.clone())));
        let Value::Array(items) = include else {
            self.errors.push(format!(
                "Include Declaration in SLS '{sls}' is not formed as a list"
            ));
            return Some(Value::Object(state));
        };
        let mut parts = Vec::new();
        for item in items {
            let (name, sub_defaults, key) = match item {
                Value::String(name) => (name, Map::new(), None),
                Value::Object(m) if m.len() == 1 => {
                    let Some((name, opts)) = m.into_iter().next() else {
                        continue;
                    };
                    let sub_defaults = match opts.get("defaults") {
                        Some(Value::Object(d)) => d.clone(),
                        _ => Map::new(),
                    };
                    let key = opts.get("key").and_then(Value::as_str).map(str::to_string);
                    (name, sub_defaults, key)
                }
                other => {
                    self.errors.push(format!(
                        "Include Declaration in SLS '{sls}' has an entry that is not an SLS name or {{name: {{defaults, key}}}}: {other}"
                    ));
                    continue;
                }
            };
            let name = top::relative(&name, sls, &path);
            for sub in self.expand(env, &name) {
                let nstate = match mods.get(&sub) {
                    Some(done) => done.clone(),
                    None => self.render_pstate(&sub, env, mods, &sub_defaults, depth + 1, pillar),
                };
                let Some(mut nstate) = nstate else {
                    continue;
                };
                if let Some(key) = &key {
                    for fragment in key.split(':').rev() {
                        let mut wrap = Map::new();
                        wrap.insert(fragment.to_string(), nstate);
                        nstate = Value::Object(wrap);
                    }
                }
                parts.push(nstate);
            }
        }
        parts.push(Value::Object(state));
        let mut merged = Value::Object(Map::new());
        for p in parts {
            merged = self.merge(merged, p);
        }
        mods.insert(sls.to_string(), Some(merged.clone()));
        Some(merged)
    }

    /// Salt's `salt.utils.dictupdate.merge` with this master's strategy.
    fn merge(&self, a: Value, b: Value) -> Value {
        if self.cfg.pillar_source_merging_strategy == "overwrite" {
            return match (a, b) {
                (Value::Object(mut a), Value::Object(b)) => {
                    a.extend(b);
                    Value::Object(a)
                }
                (_, b) => b,
            };
        }
        merge_recurse(a, b, self.cfg.pillar_merge_lists)
    }
}

/// Mappings merged key by key (recursively); anything else replaced,
/// except lists appended without duplicates when `merge_lists`.
fn merge_recurse(dest: Value, upd: Value, merge_lists: bool) -> Value {
    match (dest, upd) {
        (Value::Object(mut d), Value::Object(u)) => {
            for (k, v) in u {
                let merged = match (d.remove(&k), v) {
                    (Some(old @ Value::Object(_)), new @ Value::Object(_)) => {
                        merge_recurse(old, new, merge_lists)
                    }
                    (Some(Value::Array(mut old)), Value::Array(new)) if merge_lists => {
                        for item in new {
                            if !old.contains(&item) {
                                old.push(item);
                            }
                        }
                        Value::Array(old)
                    }
                    (_, new) => new,
                };
                d.insert(k, merged);
            }
            Value::Object(d)
        }
        (_, upd) => upd,
    }
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
