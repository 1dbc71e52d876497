//! A state run's high data, gathered as Salt's `HighState` does: the top
//! files of the file server matched against this minion (`state.apply`
//! without arguments), or the named SLS (`state.apply web,db`), each SLS
//! rendered (Jinja with Salt's context, then YAML) with its `include:`
//! first, `extend:` collected, `exclude:` applied and every id marked
//! with its `__sls__` and `__env__`.
//!
//! Blocking: files come through [`SlsFiles`] (the minion's file client,
//! waited on from the state run's blocking thread). Invariants: an SLS is
//! rendered at most once per environment in a run (an include loop ends
//! there), includes nest at most [`MAX_INCLUDE_DEPTH`] deep and a run
//! renders at most [`MAX_RENDERS`] files; an id defined in two SLS files
//! is an error naming both, as in Salt. Errors are collected, never
//! thrown, and a run with any error does not execute (Salt's "Data failed
//! to compile").

use brine_common::render::top::{self, Top};
use brine_common::render::{self, Functions, Reach, TemplateSource};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Deepest include chain followed.
pub const MAX_INCLUDE_DEPTH: usize = 32;
/// Most SLS files one run renders.
pub const MAX_RENDERS: usize = 5_000;
/// How messages name a state top file.
const TOP: &str = "Top file";

/// Where SLS files come from: the master's file server, per environment.
pub trait SlsFiles: Send + Sync {
    /// The text of `path` in `env`; `None` when there is no such file.
    fn read(&self, env: &str, path: &str) -> Result<Option<String>, String>;
    /// Every file of `env` (for glob includes).
    fn list(&self, env: &str) -> Result<Vec<String>, String>;
    /// The environments the file server has.
    fn envs(&self) -> Result<Vec<String>, String>;
}

/// Templates of one environment, for `{% include %}`, `{% from %}` and
/// `import_yaml`.
struct EnvSource {
    files: Arc<dyn SlsFiles>,
    env: String,
}

impl TemplateSource for EnvSource {
    fn load(&self, name: &str) -> Result<Option<String>, String> {
        self.files.read(&self.env, name)
    }
}

/// Who the run is for: what top files match against and templates see.
pub struct Minion<'a> {
    pub id: &'a str,
    pub grains: &'a Value,
    pub pillar: &'a Value,
    /// `opts` as templates see them.
    pub opts: &'a Value,
}

/// The gathered high data of one run.
#[derive(Debug, Default)]
pub struct High {
    /// Ids → their state declarations, each with `__sls__`/`__env__`; a
    /// top-level `extend` when some SLS extends.
    pub data: Map<String, Value>,
    /// Ids in render order, each with its keys (for `state_auto_order`).
    pub order: Vec<(String, Vec<String>)>,
    /// Errors in Salt's words; non-empty means do not run.
    pub errors: Vec<String>,
}

/// Gathers the high data of one run.
pub struct Gather<'a> {
    files: Arc<dyn SlsFiles>,
    functions: Option<Arc<dyn Functions>>,
    minion: Minion<'a>,
    high: High,
    /// Where each id was defined: `env:sls`.
    origin: HashMap<String, String>,
    extend: Map<String, Value>,
    exclude: Vec<Value>,
    done: HashSet<(String, String)>,
    renders: usize,
    avail: HashMap<String, Vec<String>>,
    top: Top,
}

impl<'a> Gather<'a> {
    pub fn new(
        files: Arc<dyn SlsFiles>,
        functions: Option<Arc<dyn Functions>>,
        minion: Minion<'a>,
    ) -> Self {
        Gather {
            files,
            functions,
            minion,
            high: High::default(),
            origin: HashMap::new(),
            extend: Map::new(),
            exclude: Vec::new(),
            done: HashSet::new(),
            renders: 0,
            avail: HashMap::new(),
            top: Top::default(),
        }
    }

    fn context(&self, env: &str) -> Map<String, Value> {
        let mut ctx = Map::new();
        ctx.insert("grains".into(), self.minion.grains.clone());
        ctx.insert("pillar".into(), self.minion.pillar.clone());
        let mut opts = match self.minion.opts {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        opts.insert("saltenv".into(), Value::String(env.to_string()));
        ctx.insert("opts".into(), Value::Object(opts));
        ctx.insert("saltenv".into(), Value::String(env.to_string()));
        ctx.insert("env".into(), Value::String(env.to_string()));
        ctx
    }

    fn reach(&self, env: &str) -> Reach {
        Reach {
            loader: Some(Arc::new(EnvSource {
                files: self.files.clone(),
                env: env.to_string(),
            })),
            functions: self.functions.clone(),
        }
    }

    /// The top files' SLS names for this minion, per environment (only
    /// `saltenv` when given): `state.show_top`. Top-file errors go to the
    /// run's errors.
    pub fn top(&mut self, saltenv: Option<&str>) -> Vec<(String, Vec<String>)> {
        let envs = match saltenv {
            Some(env) => vec![env.to_string()],
            None => {
                let mut envs = match self.files.envs() {
                    Ok(e) => e,
                    Err(e) => {
                        self.high.errors.push(format!(
                            "Listing the file server's environments failed: {e}"
                        ));
                        vec!["base".to_string()]
                    }
                };
                envs.sort();
                envs.dedup();
                // `base` first, then the others sorted (Salt's `merge`).
                envs.retain(|e| e != "base");
                envs.insert(0, "base".to_string());
                envs
            }
        };
        for env in envs {
            let text = match self.files.read(&env, "top.sls") {
                Ok(Some(text)) => text,
                Ok(None) => continue,
                Err(e) => {
                    self.high.errors.push(format!(
                        "Rendering Primary Top file failed, render error: {e} (saltenv '{env}')"
                    ));
                    continue;
                }
            };
            let ctx = Value::Object(self.context(&env));
            let rendered = render::render_sls_text_with(&text, "top.sls", &ctx, &self.reach(&env))
                .and_then(|r| r.load().map(|v| (v, r.key_order())));
            match rendered {
                Ok((value, order)) => {
                    self.top
                        .merge(TOP, &env, value, &order, &mut self.high.errors)
                }
                Err(e) => self.high.errors.push(format!(
                    "Rendering Primary Top file failed, render error: {e} (saltenv '{env}')"
                )),
            }
        }
        self.top.finish();
        let (id, grains, pillar) = (self.minion.id, self.minion.grains, self.minion.pillar);
        let mut errors = Vec::new();
        let nodegroups = nodegroups(self.minion.opts);
        let out = self.top.matching(saltenv, |t| {
            top::target_matches(TOP, t, id, grains, Some(pillar), &nodegroups).unwrap_or_else(|e| {
                errors.push(e);
                false
            })
        });
        self.high.errors.extend(errors);
        out
    }

    /// Render SLS `name` (a glob names every SLS it matches) of `env`
    /// with its includes into the run's high data.
    pub fn sls(&mut self, env: &str, name: &str) {
        for sls in self.expand(env, name) {
            self.render(env, &sls, 0, None);
        }
    }

    fn expand(&mut self, env: &str, name: &str) -> Vec<String> {
        let files = self.files.clone();
        let avail = &mut self.avail;
        let errors = &mut self.high.errors;
        top::expand(name, || {
            avail
                .entry(env.to_string())
                .or_insert_with(|| match files.list(env) {
                    Ok(f) => top::sls_names(&f),
                    Err(e) => {
                        errors.push(format!("Listing saltenv '{env}' failed: {e}"));
                        Vec::new()
                    }
                })
                .clone()
        })
    }

    /// Render one SLS and, first, what it includes. `from` is the SLS
    /// that included it (for the missing-SLS message).
    fn render(&mut self, env: &str, sls: &str, depth: usize, from: Option<&str>) {
        if !self.done.insert((env.to_string(), sls.to_string())) {
            return;
        }
        if depth > MAX_INCLUDE_DEPTH {
            self.high.errors.push(format!(
                "Include of SLS '{sls}' in saltenv '{env}' is nested deeper than {MAX_INCLUDE_DEPTH}"
            ));
            return;
        }
        self.renders += 1;
        if self.renders > MAX_RENDERS {
            if self.renders == MAX_RENDERS + 1 {
                self.high.errors.push(format!(
                    "State compile stopped after {MAX_RENDERS} SLS renders (SLS '{sls}' and later not rendered)"
                ));
            }
            return;
        }
        let mut found = None;
        for path in top::sls_files(sls) {
            match self.files.read(env, &path) {
                Ok(Some(text)) => {
                    found = Some((path, text));
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    self.high
                        .errors
                        .push(format!("Rendering SLS '{env}:{sls}' failed: {e}"));
                    return;
                }
            }
        }
        let Some((path, text)) = found else {
            if self.top.ignores_missing(env, sls) {
                return;
            }
            self.high.errors.push(match from {
                None => format!("No matching sls found for '{sls}' in env '{env}'"),
                Some(parent) => format!(
                    "Specified SLS {sls} in saltenv {env} is not available on the salt master or through a configured fileserver (included from '{parent}')"
                ),
            });
            return;
        };
        let mut ctx = self.context(env);
        ctx.extend(render::sls_vars(sls, &path));
        let rendered =
            render::render_sls_text_with(&text, &path, &Value::Object(ctx), &self.reach(env))
                .and_then(|r| r.load().map(|v| (v, r.key_order())));
        let (value, order) = match rendered {
            Ok(ok) => ok,
            Err(e) => {
                self.high
                    .errors
                    .push(format!("Rendering SLS '{env}:{sls}' failed: {e}"));
                return;
            }
        };
        let Value::Object(mut state) = value else {
            self.high
                .errors
                .push(format!("SLS '{env}:{sls}' does not render to a dictionary"));
            return;
        };
        if let Some(include) = state.remove("include") {
            self.includes(env, sls, &path, include, depth);
        }
        if let Some(ext) = state.remove("extend") {
            self.add_extend(env, sls, ext);
        }
        if let Some(ex) = state.remove("exclude") {
            match ex {
                Value::Array(items) => self.exclude.extend(items),
                other => self.high.errors.push(format!(
                    "Exclude Declaration in SLS '{sls}' is not formed as a list: {other}"
                )),
            }
        }
        let here = format!("{env}:{sls}");
        for (id, body) in top::in_file_order(state, order.iter().map(|(k, _)| k.as_str())) {
            let Value::Object(mut body) = body else {
                self.high
                    .errors
                    .push(format!("ID '{id}' in SLS '{sls}' is not a dictionary"));
                continue;
            };
            if let Some(first) = self.origin.get(&id) {
                self.high.errors.push(format!(
                    "Detected conflicting IDs, SLS IDs need to be globally unique.\n    The conflicting ID is '{id}' and is found in SLS '{first}' and SLS '{here}'"
                ));
                continue;
            }
            body.insert("__sls__".into(), Value::String(sls.to_string()));
            body.insert("__env__".into(), Value::String(env.to_string()));
            self.origin.insert(id.clone(), here.clone());
            let keys = order
                .iter()
                .find(|(k, _)| *k == id)
                .map(|(_, inner)| inner.clone())
                .unwrap_or_default();
            self.high.order.push((id.clone(), keys));
            self.high.data.insert(id, Value::Object(body));
        }
    }

    fn includes(&mut self, env: &str, sls: &str, path: &str, include: Value, depth: usize) {
        let Value::Array(items) = include else {
            self.high.errors.push(format!(
                "Include Declaration in SLS '{sls}' is not formed as a list"
            ));
            return;
        };
        for item in items {
            // `- web` (this env), `- .sibling`, `- dev: web` (another env).
            let (inc_env, name) = match item {
                Value::String(name) => (env.to_string(), name),
                Value::Object(m) if m.len() == 1 => match m.into_iter().next() {
                    Some((e, Value::String(name))) => (e, name),
                    Some((e, Value::Array(names))) => {
                        for n in names.iter().filter_map(Value::as_str) {
                            let n = top::relative(n, sls, path);
                            for sub in self.expand(&e, &n) {
                                self.render(&e, &sub, depth + 1, Some(sls));
                            }
                        }
                        continue;
                    }
                    _ => {
                        self.high.errors.push(format!(
                            "Include Declaration in SLS '{sls}' has an entry that is not an SLS name or {{saltenv: sls}}"
                        ));
                        continue;
                    }
                },
                other => {
                    self.high.errors.push(format!(
                        "Include Declaration in SLS '{sls}' has an entry that is not an SLS name: {other}"
                    ));
                    continue;
                }
            };
            let name = top::relative(&name, sls, path);
            for sub in self.expand(&inc_env, &name) {
                self.render(&inc_env, &sub, depth + 1, Some(sls));
            }
        }
    }

    /// Collect one SLS's `extend:`; several SLS may extend one id.
    fn add_extend(&mut self, env: &str, sls: &str, ext: Value) {
        let Value::Object(ext) = ext else {
            self.high.errors.push(format!(
                "Extension value in SLS '{sls}' is not a dictionary"
            ));
            return;
        };
        for (id, body) in ext {
            let Value::Object(mut body) = body else {
                self.high.errors.push(format!(
                    "Extension value for ID '{id}' in SLS '{sls}' is not a dictionary"
                ));
                continue;
            };
            body.insert("__sls__".into(), Value::String(sls.to_string()));
            body.insert("__env__".into(), Value::String(env.to_string()));
            match self.extend.get_mut(&id) {
                Some(Value::Object(old)) => old.extend(body),
                _ => {
                    self.extend.insert(id, Value::Object(body));
                }
            }
        }
    }

    /// The run's high data: extends attached, excludes applied (also the
    /// caller's `exclude=`).
    pub fn finish(mut self, exclude: &[Value]) -> High {
        let mut ex = std::mem::take(&mut self.exclude);
        ex.extend_from_slice(exclude);
        let mut drop_ids: HashSet<String> = HashSet::new();
        for item in &ex {
            match item {
                Value::Object(m) => {
                    if let Some(s) = m.get("sls").and_then(Value::as_str) {
                        for (id, body) in &self.high.data {
                            if body.get("__sls__").and_then(Value::as_str) == Some(s) {
                                drop_ids.insert(id.clone());
                            }
                        }
                    }
                    if let Some(i) = m.get("id").and_then(Value::as_str) {
                        drop_ids.insert(i.to_string());
                    }
                }
                // `exclude=web` from the CLI names an SLS.
                Value::String(s) => {
                    for (id, body) in &self.high.data {
                        if body.get("__sls__").and_then(Value::as_str) == Some(s.as_str()) {
                            drop_ids.insert(id.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        self.high.data.retain(|id, _| !drop_ids.contains(id));
        self.high.order.retain(|(id, _)| !drop_ids.contains(id));
        if !self.extend.is_empty() {
            self.high
                .data
                .insert("extend".into(), Value::Object(self.extend));
        }
        self.high
    }
}

/// `nodegroups` from the opts templates see (the minion has none unless
/// its config sets them).
fn nodegroups(opts: &Value) -> BTreeMap<String, String> {
    opts.get("nodegroups")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Files per environment, in memory.
    pub(crate) struct MemFiles(pub BTreeMap<(String, String), String>);

    impl SlsFiles for MemFiles {
        fn read(&self, env: &str, path: &str) -> Result<Option<String>, String> {
            Ok(self.0.get(&(env.to_string(), path.to_string())).cloned())
        }
        fn list(&self, env: &str) -> Result<Vec<String>, String> {
            Ok(self
                .0
                .keys()
                .filter(|(e, _)| e == env)
                .map(|(_, p)| p.clone())
                .collect())
        }
        fn envs(&self) -> Result<Vec<String>, String> {
            let mut e: Vec<String> = self.0.keys().map(|(e, _)| e.clone()).collect();
            e.dedup();
            Ok(e)
        }
    }

    fn files(list: &[(&str, &str, &str)]) -> Arc<dyn SlsFiles> {
        Arc::new(MemFiles(
            list.iter()
                .map(|(e, p, t)| ((e.to_string(), p.to_string()), t.to_string()))
                .collect(),
        ))
    }

    fn gather(f: Arc<dyn SlsFiles>) -> Gather<'static> {
        static GRAINS: std::sync::LazyLock<Value> =
            std::sync::LazyLock::new(|| json!({"os": "Debian", "id": "web1"}));
        static PILLAR: std::sync::LazyLock<Value> =
            std::sync::LazyLock::new(|| json!({"role": "web", "port": 8080}));
        static OPTS: std::sync::LazyLock<Value> =
            std::sync::LazyLock::new(|| json!({"id": "web1"}));
        Gather::new(
            f,
            None,
            Minion {
                id: "web1",
                grains: &GRAINS,
                pillar: &PILLAR,
                opts: &OPTS,
            },
        )
    }

    #[test]
    fn top_includes_extend_exclude_and_context() {
        let f = files(&[
            ("base", "top.sls", "base:\n  '*':\n    - common\n  'os:Debian':\n    - match: grain\n    - web\n  'role:web':\n    - match: pillar\n    - extra\n  'db*':\n    - db\n"),
            ("base", "common.sls", "motd:\n  file.managed:\n    - name: /etc/motd\n"),
            ("base", "web/init.sls", "include:\n  - .conf\n  - common\nnginx:\n  pkg.installed:\n    - name: nginx-{{ grains.os }}-{{ pillar.port }}-{{ sls }}\nextend:\n  motd:\n    file:\n      - mode: '0644'\n"),
            ("base", "web/conf.sls", "conf:\n  file.managed:\n    - name: /etc/{{ tpldir }}\n"),
            ("base", "extra.sls", "exclude:\n  - id: conf\nx:\n  test.nop: []\n"),
            ("base", "db.sls", "db:\n  test.nop: []\n"),
        ]);
        let mut g = gather(f);
        let m = g.top(None);
        assert_eq!(
            m,
            vec![(
                "base".to_string(),
                vec!["common".into(), "web".into(), "extra".into()]
            )]
        );
        for (env, names) in &m {
            for n in names {
                g.sls(env, n);
            }
        }
        let h = g.finish(&[]);
        assert!(h.errors.is_empty(), "{:?}", h.errors);
        let ids: Vec<&str> = h.order.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ids, ["motd", "nginx", "x"], "includes first; conf excluded");
        assert_eq!(
            h.data["nginx"]["pkg.installed"][0]["name"],
            "nginx-Debian-8080-web"
        );
        assert_eq!(h.data["nginx"]["__sls__"], "web");
        assert!(h.data.contains_key("extend"));
    }

    #[test]
    fn errors_missing_conflict_render() {
        let f = files(&[
            (
                "base",
                "a.sls",
                "include:\n  - nope\ndup:\n  test.nop: []\n",
            ),
            ("base", "b.sls", "dup:\n  test.nop: []\n"),
            ("base", "bad.sls", "x: {{ nope }}\n"),
        ]);
        let mut g = gather(f);
        for n in ["a", "b", "bad", "missing"] {
            g.sls("base", n);
        }
        let h = g.finish(&[]);
        let all = h.errors.join("\n");
        assert!(
            all.contains("Specified SLS nope in saltenv base is not available"),
            "{all}"
        );
        assert!(
            all.contains(
                "The conflicting ID is 'dup' and is found in SLS 'base:a' and SLS 'base:b'"
            ),
            "{all}"
        );
        assert!(
            all.contains("Rendering SLS 'base:bad' failed: bad.sls, line 1"),
            "{all}"
        );
        assert!(
            all.contains("No matching sls found for 'missing' in env 'base'"),
            "{all}"
        );
    }

    #[test]
    fn include_loop_ends_and_other_env() {
        let f = files(&[
            (
                "base",
                "a.sls",
                "include:\n  - b\n  - dev: c\nida:\n  test.nop: []\n",
            ),
            ("base", "b.sls", "include:\n  - a\nidb:\n  test.nop: []\n"),
            ("dev", "c.sls", "idc:\n  test.nop: []\n"),
        ]);
        let mut g = gather(f);
        g.sls("base", "a");
        let h = g.finish(&[]);
        assert!(h.errors.is_empty(), "{:?}", h.errors);
        let ids: Vec<&str> = h.order.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ids, ["idb", "idc", "ida"]);
        assert_eq!(h.data["idc"]["__env__"], "dev");
    }
}
