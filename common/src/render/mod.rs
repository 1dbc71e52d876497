//! Salt's renderers: Jinja templates and SLS files, for the master's pillar
//! and the state system.
//!
//! [`render_jinja`] renders Jinja as Salt's operators write it (minijinja
//! with Salt's filters, `import_yaml`/`import_json`/`import_text` and
//! `load_*` tags, Python-style methods, strict undefined variables unless
//! `opts.allow_undefined`); [`render_sls`] reads an SLS file's `#!`
//! renderer pipe (`jinja|yaml` by default), renders it and loads the YAML
//! or JSON into a value. Nothing here touches the disk: `{% include %}`,
//! `{% import %}` and the `import_*` tags load through a
//! [`TemplateSource`], which the caller backs with its roots (and which
//! refuses what leaves them). Every error names the template and, where
//! known, the line ([`RenderError`]); every render is bounded (fuel,
//! recursion and nesting limits), so a template that loops does not hang a
//! thread. The features and Salt's features that are not here are listed
//! in docs/DEPENDENCIES.md ("Jinja").

mod filters;
mod jinja;
pub mod top;
mod yaml;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};
use std::sync::Arc;

pub use filters::python_replacement;
pub use yaml::{load_yaml, to_flow_yaml};

/// Where `{% include %}`, `{% import %}`, `{% from %}` and the
/// `import_yaml`/`import_json`/`import_text` tags find other templates.
///
/// `name` is relative to the roots of the caller (an environment of
/// `file_roots` or `pillar_roots`), with `/` separators, already resolved
/// against the including template when it was written `./x` or `../x`.
pub trait TemplateSource: Send + Sync {
    /// The text of `name`; `Ok(None)` when there is no such file, `Err`
    /// when it may not or cannot be read (the message says why).
    fn load(&self, name: &str) -> Result<Option<String>, String>;
}

/// Salt's `salt` dict in templates: `salt['cmd.run']('uptime')`,
/// `salt['pillar.get']('x', default=1)` and `salt.cmd.run(...)` call
/// execution functions of the renderer's host (the minion) through this.
pub trait Functions: Send + Sync {
    /// Call `fun` (`module.function`); `Err` carries the message a render
    /// error shows (an unknown function, bad arguments, a failed call).
    fn call(
        &self,
        fun: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Value, String>;
    /// Whether `fun` exists (`'x.y' in salt`).
    fn has(&self, fun: &str) -> bool;
}

/// What a render may reach besides its variables: other templates and
/// execution functions.
#[derive(Clone, Default)]
pub struct Reach {
    pub loader: Option<Arc<dyn TemplateSource>>,
    pub functions: Option<Arc<dyn Functions>>,
}

/// Why a template or SLS file did not render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}, line {}: {message}", line.map_or_else(|| "?".to_string(), |l| l.to_string()))]
pub struct RenderError {
    /// The template the error is in (an included one when it is there).
    pub file: String,
    /// 1-based line in `file`, when the engine or parser knows it.
    pub line: Option<usize>,
    pub message: String,
}

impl RenderError {
    fn new(file: &str, line: Option<usize>, message: impl Into<String>) -> Self {
        RenderError {
            file: file.to_string(),
            line,
            message: message.into(),
        }
    }
}

/// Render `source`, the Jinja template `name`, with the variables of
/// `ctx` (an object; its keys are also globals, as in Salt, so imported
/// templates see `grains`, `pillar`, `opts`... without `with context`).
/// Undefined variables are an error (Salt's default) unless
/// `ctx.opts.allow_undefined` is true, when they render empty.
pub fn render_jinja(
    source: &str,
    name: &str,
    ctx: &Value,
    loader: Option<Arc<dyn TemplateSource>>,
) -> Result<String, RenderError> {
    jinja::render(
        source,
        name,
        ctx,
        &Reach {
            loader,
            functions: None,
        },
    )
}

/// [`render_jinja`] with execution functions as `salt` ([`Reach`]).
pub fn render_jinja_with(
    source: &str,
    name: &str,
    ctx: &Value,
    reach: &Reach,
) -> Result<String, RenderError> {
    jinja::render(source, name, ctx, reach)
}

/// A stage of an SLS renderer pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Jinja,
    Yaml,
    Json,
}

/// The renderer pipe of an SLS file: its first line when that starts with
/// `#!` (`#!jinja|yaml`, `#!yaml`, `#!json`...), else `jinja|yaml`. The
/// pipe is one optional `jinja` followed by one data renderer.
fn pipe(source: &str, name: &str) -> Result<Vec<Stage>, RenderError> {
    let Some(rest) = source.strip_prefix("#!") else {
        return Ok(vec![Stage::Jinja, Stage::Yaml]);
    };
    let line = rest.lines().next().unwrap_or_default();
    let mut stages = Vec::new();
    for word in line.split('|').map(str::trim) {
        // Salt allows arguments after a renderer (`#!yaml strict`): the
        // renderer is the first word; arguments are not supported here.
        let mut parts = word.split_whitespace();
        let renderer = parts.next().unwrap_or_default();
        if let Some(arg) = parts.next() {
            return Err(RenderError::new(
                name,
                Some(1),
                format!("renderer arguments are not supported ('{renderer} {arg}')"),
            ));
        }
        stages.push(match renderer {
            "jinja" => Stage::Jinja,
            "yaml" => Stage::Yaml,
            "json" => Stage::Json,
            other => {
                return Err(RenderError::new(
                    name,
                    Some(1),
                    format!("renderer '{other}' is not available (jinja, yaml and json are)"),
                ))
            }
        });
    }
    let data = |s: &Stage| matches!(s, Stage::Yaml | Stage::Json);
    match stages.as_slice() {
        [d] | [Stage::Jinja, d] if data(d) => Ok(stages),
        _ => Err(RenderError::new(
            name,
            Some(1),
            format!(
                "renderer pipe '{}' is not one optional 'jinja' then 'yaml' or 'json'",
                line.trim()
            ),
        )),
    }
}

/// Render the SLS file `source` (named `name`, e.g. `web/init.sls`) with
/// its renderer pipe and load it: an empty document is `{}`, as in Salt.
/// The `#!` line is blanked, not removed, so line numbers stay those of
/// the file.
pub fn render_sls(
    source: &str,
    name: &str,
    ctx: &Value,
    loader: Option<Arc<dyn TemplateSource>>,
) -> Result<Value, RenderError> {
    render_sls_text(source, name, ctx, loader)?.load()
}

/// An SLS file rendered to its data text, not loaded yet
/// ([`render_sls_text`]).
#[derive(Debug, Clone)]
pub struct RenderedSls {
    name: String,
    text: String,
    /// The pipe's last stage.
    json: bool,
}

/// [`render_sls`] in two steps: render now, load with
/// [`RenderedSls::load`], and read the order the file wrote its keys in
/// with [`RenderedSls::key_order`].
pub fn render_sls_text(
    source: &str,
    name: &str,
    ctx: &Value,
    loader: Option<Arc<dyn TemplateSource>>,
) -> Result<RenderedSls, RenderError> {
    render_sls_text_with(
        source,
        name,
        ctx,
        &Reach {
            loader,
            functions: None,
        },
    )
}

/// [`render_sls_text`] with execution functions as `salt` ([`Reach`]).
pub fn render_sls_text_with(
    source: &str,
    name: &str,
    ctx: &Value,
    reach: &Reach,
) -> Result<RenderedSls, RenderError> {
    let stages = pipe(source, name)?;
    let mut text = match source.find('\n') {
        Some(end) if source.starts_with("#!") => source[end..].to_string(),
        None if source.starts_with("#!") => String::new(),
        _ => source.to_string(),
    };
    if stages.first() == Some(&Stage::Jinja) {
        text = jinja::render(&text, name, ctx, reach)?;
    }
    Ok(RenderedSls {
        name: name.to_string(),
        text,
        json: stages.last() == Some(&Stage::Json),
    })
}

impl RenderedSls {
    /// The rendered text (YAML or JSON).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Load the text: YAML as Salt reads it, or JSON; empty is `{}`.
    pub fn load(&self) -> Result<Value, RenderError> {
        if self.text.trim().is_empty() {
            return Ok(Value::Object(Map::new()));
        }
        if self.json {
            return serde_json::from_str(&self.text)
                .map(empty_is_object)
                .map_err(|e| RenderError::new(&self.name, Some(e.line()), format!("JSON: {e}")));
        }
        load_yaml(&self.text, &self.name).map(empty_is_object)
    }

    /// The keys of the top-level mapping in the order the file wrote them,
    /// each with the keys of its value when that is a mapping: JSON maps
    /// here sort their keys, and a top file's targets (like a state
    /// file's ids) apply in file order. Empty when the text does not
    /// parse ([`RenderedSls::load`] says why). Keys are spelled as
    /// [`RenderedSls::load`] spells them, except plain scalars that YAML
    /// 1.1 retypes (a key `yes` is `True` there): callers take the keys
    /// this misses in sorted order after the others.
    pub fn key_order(&self) -> Vec<(String, Vec<String>)> {
        let Ok(serde_norway::Value::Mapping(top)) =
            serde_norway::from_str::<serde_norway::Value>(&self.text)
        else {
            return Vec::new();
        };
        top.iter()
            .filter_map(|(k, v)| {
                let inner = match v {
                    serde_norway::Value::Mapping(m) => m.keys().filter_map(yaml::key_of).collect(),
                    _ => Vec::new(),
                };
                Some((yaml::key_of(k)?, inner))
            })
            .collect()
    }
}

fn empty_is_object(v: Value) -> Value {
    match v {
        Value::Null => Value::Object(Map::new()),
        other => other,
    }
}

/// The variables Salt gives a template rendered as SLS `sls` (dotted,
/// `a.b`) from the file `path` (relative to its roots, `a/b.sls` or
/// `a/b/init.sls`): `sls`, `slspath`, `sls_path`, `slsdotpath`,
/// `slscolonpath`, `tplpath`, `tplfile`, `tpldir`, `tpldot`, `tplroot`.
pub fn sls_vars(sls: &str, path: &str) -> Map<String, Value> {
    let mut slspath = sls.replace('.', "/");
    if !path.ends_with("/init.sls") && path != "init.sls" {
        slspath = match slspath.rfind('/') {
            Some(i) => slspath[..i].to_string(),
            None => String::new(),
        };
    }
    let tpldir = match path.rfind('/') {
        Some(i) => &path[..i],
        None => "",
    };
    let s = |v: &str| Value::String(v.to_string());
    let mut m = Map::new();
    m.insert("sls".into(), s(sls));
    m.insert("tplpath".into(), s(path));
    m.insert("tplfile".into(), s(path));
    m.insert(
        "tpldir".into(),
        s(if tpldir.is_empty() { "." } else { tpldir }),
    );
    m.insert("tpldot".into(), s(&tpldir.replace('/', ".")));
    m.insert(
        "tplroot".into(),
        s(tpldir.split('/').next().unwrap_or_default()),
    );
    m.insert("slsdotpath".into(), s(&slspath.replace('/', ".")));
    m.insert("slscolonpath".into(), s(&slspath.replace('/', ":")));
    m.insert("sls_path".into(), s(&slspath.replace('/', "_")));
    m.insert("slspath".into(), s(&slspath));
    m
}
