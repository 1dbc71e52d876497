//! The Jinja engine set up the way Salt sets up Jinja2: minijinja with
//! Salt's filters ([`super::filters`]), Python-style methods
//! (`minijinja_contrib::pycompat`: `.items()`, `.get()`, `.split()`...),
//! `break`/`continue`, trailing newline kept, the context's variables as
//! globals, strict undefined unless `opts.allow_undefined`.
//!
//! minijinja has no custom tags, so Salt's `{% import_yaml 'f' as x %}`
//! (also `import_json`, `import_text`) is rewritten to
//! `{% set x = import_yaml('f') %}` and `{% load_yaml as x %}…{% endload %}`
//! to a `set` block and the `load_yaml` filter, before parsing, keeping
//! every line where it was. Names written `./x` or `../x` are resolved
//! against the including template (Salt's `tpldir` rule); a name that
//! would leave the roots is refused before the source is asked.

use super::{filters, load_yaml, Functions, Reach, RenderError};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Serde, Value as JValue};
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior};
use regex::{Captures, Regex};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

/// Instructions one render may run (each nested `import_*` render has its
/// own): far above any real template, a wall for one that runs away.
const FUEL: u64 = 20_000_000;
/// Nesting of `import_*` renders (each is a render of its own).
const MAX_IMPORT_DEPTH: usize = 16;
/// Nesting of includes, imports and macro calls within one render.
const RECURSION_LIMIT: usize = 100;

/// Render `source` as template `name` (see [`super::render_jinja`]).
pub(super) fn render(
    source: &str,
    name: &str,
    ctx: &Value,
    reach: &Reach,
) -> Result<String, RenderError> {
    let mut env = environment(ctx, reach);
    env.add_template_owned(name.to_string(), preprocess(source))
        .map_err(|e| error(&e, name))?;
    let tmpl = env.get_template(name).map_err(|e| error(&e, name))?;
    let ctx = match ctx {
        Value::Object(_) => JValue::from(Serde(ctx)),
        _ => JValue::from(Serde(serde_json::Map::new())),
    };
    tmpl.render(ctx).map_err(|e| error(&e, name))
}

#[derive(Clone, Copy)]
enum Import {
    Yaml,
    Json,
    Text,
}

fn environment(ctx: &Value, reach: &Reach) -> Environment<'static> {
    let mut env = Environment::new();
    // The default syntax with `keep_trailing_newline`; building it cannot
    // fail (no custom delimiters), and the default stays if it did.
    if let Ok(syntax) = SyntaxConfig::builder().keep_trailing_newline(true).build() {
        env.set_syntax(syntax);
    }
    let lenient = ctx.pointer("/opts/allow_undefined") == Some(&Value::Bool(true));
    env.set_undefined_behavior(if lenient {
        UndefinedBehavior::Lenient
    } else {
        UndefinedBehavior::Strict
    });
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_path_join_callback(join);
    filters::register(&mut env);
    if let Value::Object(vars) = ctx {
        for (k, v) in vars {
            env.add_global(k.clone(), JValue::from(Serde(v)));
        }
    }
    if let Some(functions) = &reach.functions {
        env.add_global(
            "salt",
            JValue::from_object(SaltDict {
                functions: functions.clone(),
                module: None,
            }),
        );
    }
    if let Some(source) = reach.loader.clone() {
        env.set_loader(move |name: &str| {
            if leaves_root(name) {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("template '{name}' leaves the roots"),
                ));
            }
            match source.load(name) {
                Ok(text) => Ok(text.map(|t| preprocess(&t))),
                Err(why) => Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("template '{name}' cannot be read: {why}"),
                )),
            }
        });
    }
    let depth = Arc::new(AtomicUsize::new(0));
    for (fname, kind) in [
        ("import_yaml", Import::Yaml),
        ("import_json", Import::Json),
        ("import_text", Import::Text),
    ] {
        let depth = depth.clone();
        env.add_function(fname, move |state: &State, name: &str| {
            import(state, name, kind, &depth)
        });
    }
    env
}

/// Salt's `salt` dict: `salt['mod.fun']` is a callable, `salt.mod` a
/// namespace whose attributes and methods are the module's functions.
struct SaltDict {
    functions: Arc<dyn Functions>,
    /// Set for the `salt.mod` namespace.
    module: Option<String>,
}

impl std::fmt::Debug for SaltDict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.module {
            Some(m) => write!(f, "<salt.{m}>"),
            None => f.write_str("<salt>"),
        }
    }
}

/// One execution function as a template callable.
#[derive(Debug)]
struct SaltFun {
    functions: Arc<SaltDict>,
    name: String,
}

impl SaltDict {
    fn full(&self, key: &str) -> String {
        match &self.module {
            Some(m) => format!("{m}.{key}"),
            None => key.to_string(),
        }
    }

    fn invoke(&self, fun: &str, args: &[JValue]) -> Result<JValue, Error> {
        let (positional, kwargs): (&[JValue], minijinja::value::Kwargs) =
            minijinja::value::from_args(args)?;
        let to_json = |v: &JValue| {
            serde_json::to_value(v).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("salt['{fun}']: an argument is not data: {e}"),
                )
            })
        };
        let mut pos = Vec::with_capacity(positional.len());
        for a in positional {
            pos.push(to_json(a)?);
        }
        let mut kw = serde_json::Map::new();
        for k in kwargs.args() {
            let v: JValue = kwargs.get(k)?;
            kw.insert(k.to_string(), to_json(&v)?);
        }
        match self.functions.call(fun, pos, kw) {
            Ok(v) => Ok(JValue::from(Serde(v))),
            Err(why) => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("salt['{fun}']: {why}"),
            )),
        }
    }
}

impl minijinja::value::Object for SaltDict {
    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        let key = key.as_str()?;
        let full = self.full(key);
        if self.functions.has(&full) {
            return Some(JValue::from_object(SaltFun {
                functions: self.clone(),
                name: full,
            }));
        }
        if self.module.is_none() && !key.contains('.') {
            return Some(JValue::from_object(SaltDict {
                functions: self.functions.clone(),
                module: Some(key.to_string()),
            }));
        }
        None
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[JValue],
    ) -> Result<JValue, Error> {
        let full = self.full(method);
        if !self.functions.has(&full) {
            return Err(Error::new(
                ErrorKind::UnknownMethod,
                format!("'{full}' is not available."),
            ));
        }
        self.invoke(&full, args)
    }
}

impl minijinja::value::Object for SaltFun {
    fn call(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        args: &[JValue],
    ) -> Result<JValue, Error> {
        self.functions.invoke(&self.name, args)
    }
}

/// Salt's `import_*`: render the template `name` (resolved against the
/// current one) without the caller's local variables, then load it.
fn import(state: &State, name: &str, kind: Import, depth: &AtomicUsize) -> Result<JValue, Error> {
    struct Nested<'a>(&'a AtomicUsize);
    impl Drop for Nested<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let level = depth.fetch_add(1, Ordering::Relaxed);
    let _nested = Nested(depth);
    if level >= MAX_IMPORT_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("imports nested deeper than {MAX_IMPORT_DEPTH} (an import loop?) at '{name}'"),
        ));
    }
    let full = join(name, state.name()).into_owned();
    let tmpl = state.env().get_template(&full)?;
    let text = tmpl.render(JValue::from(Serde(serde_json::Map::new())))?;
    match kind {
        Import::Text => Ok(JValue::from(text)),
        Import::Yaml => load_yaml(&text, &full)
            .map(|v| JValue::from(Serde(v)))
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string())),
        Import::Json => serde_json::from_str::<Value>(&text)
            .map(|v| JValue::from(Serde(v)))
            .map_err(|e| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("{full}, line {}: JSON: {e}", e.line()),
                )
            }),
    }
}

/// A template name as written (`x/y.jinja`, `./y.jinja`, `../z.jinja`,
/// `salt://x/y.jinja`) → its name from the roots. Relative names are
/// taken from the directory of `parent`; the result keeps a leading `..`
/// when it climbs above the roots (the loader refuses it).
pub(super) fn join<'s>(name: &'s str, parent: &'s str) -> Cow<'s, str> {
    let name = name.strip_prefix("salt://").unwrap_or(name);
    if !(name.starts_with("./") || name.starts_with("../")) {
        return Cow::Borrowed(name);
    }
    let mut parts: Vec<&str> = parent.split('/').collect();
    parts.pop();
    let mut above = 0usize;
    for seg in name.split('/') {
        match seg {
            "." | "" => {}
            ".." => {
                if parts.pop().is_none() {
                    above += 1;
                }
            }
            s => parts.push(s),
        }
    }
    let mut out = vec![".."; above];
    out.extend(parts);
    Cow::Owned(out.join("/"))
}

/// Whether a name (as the loader gets it) is absolute or climbs out.
fn leaves_root(name: &str) -> bool {
    name.starts_with('/') || name.split(['/', '\\']).any(|s| s == "..")
}

static IMPORT_TAG: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"\{%([-+]?)\s*import_(yaml|json|text)\s+((?:[^%]|%[^}])+?)\s+as\s+([A-Za-z_][A-Za-z0-9_]*)\s*([-+]?)%\}",
    )
    .ok()
});

static LOAD_TAG: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"\{%([-+]?)\s*(?:load_(yaml|json|text)\s+as\s+([A-Za-z_][A-Za-z0-9_]*)|endload)\s*([-+]?)%\}",
    )
    .ok()
});

/// Salt's tags minijinja lacks, rewritten into ones it has (see the
/// module header); every newline of a rewritten tag is kept.
pub(super) fn preprocess(src: &str) -> String {
    let mut text = Cow::Borrowed(src);
    if let Some(re) = IMPORT_TAG.as_ref() {
        text = Cow::Owned(
            re.replace_all(&text, |c: &Captures| {
                let lines = c[0].matches('\n').count() - c[3].matches('\n').count();
                format!(
                    "{{%{} set {} = import_{}({}){} {}%}}",
                    &c[1],
                    &c[4],
                    &c[2],
                    &c[3],
                    "\n".repeat(lines),
                    &c[5]
                )
            })
            .into_owned(),
        );
    }
    let Some(re) = LOAD_TAG.as_ref() else {
        return text.into_owned();
    };
    // Pair each `endload` with the innermost open `load_*`; one without a
    // partner is left for the parser to report.
    let mut open: Vec<(String, String)> = Vec::new();
    let out = re.replace_all(&text, |c: &Captures| {
        let (l, r) = (&c[1], &c[4]);
        let nl = "\n".repeat(c[0].matches('\n').count());
        match (c.get(2), c.get(3)) {
            (Some(kind), Some(var)) => {
                open.push((kind.as_str().to_string(), var.as_str().to_string()));
                format!("{{%{l} set {}{nl} {r}%}}", var.as_str())
            }
            _ => match open.pop() {
                Some((kind, var)) => {
                    format!("{{%{l} endset{nl} %}}{{% set {var} = {var}|load_{kind} {r}%}}")
                }
                None => c[0].to_string(),
            },
        }
    });
    out.into_owned()
}

/// A minijinja error as the operator reads it: the template it is in (an
/// included one when there), its line, Salt's wording where it has one.
fn error(e: &Error, name: &str) -> RenderError {
    // An error in an included or imported template comes back as the
    // source of the one at the include; the innermost knows where it is.
    let mut inner = e;
    let mut hops = 0;
    while let Some(next) = std::error::Error::source(inner).and_then(|s| s.downcast_ref::<Error>())
    {
        if hops >= 32 || next.name().is_none() {
            break;
        }
        inner = next;
        hops += 1;
    }
    let detail = inner.detail().unwrap_or_default();
    let message = match inner.kind() {
        ErrorKind::SyntaxError => format!("Jinja syntax error: {detail}"),
        ErrorKind::UndefinedError if detail.is_empty() => "Jinja variable is undefined".to_string(),
        ErrorKind::UndefinedError => format!("Jinja variable {detail}"),
        ErrorKind::InvalidOperation if !detail.is_empty() => format!("Jinja error: {detail}"),
        kind if detail.is_empty() => format!("Jinja error: {kind}"),
        kind => format!("Jinja error: {kind}: {detail}"),
    };
    RenderError {
        file: inner.name().unwrap_or(name).to_string(),
        line: inner.line(),
        message,
    }
}
