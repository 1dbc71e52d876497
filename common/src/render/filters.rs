//! Salt's Jinja filters, tests and globals that minijinja does not have
//! (the list is in docs/DEPENDENCIES.md, "Jinja").

use super::yaml::{double_quoted, load_yaml, single_quoted, to_flow_yaml};
use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind, State};
use regex::{Regex, RegexBuilder};

/// Compiled-size cap of a regex written in a template (bytes).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub(super) fn register(env: &mut Environment<'_>) {
    env.add_filter("yaml_encode", yaml_encode);
    env.add_filter("yaml_dquote", yaml_dquote);
    env.add_filter("yaml_squote", yaml_squote);
    env.add_filter("yaml", yaml);
    env.add_filter("json", json);
    env.add_filter("load_yaml", load_yaml_filter);
    env.add_filter("load_json", load_json);
    env.add_filter("load_text", load_text);
    env.add_filter("regex_match", regex_match);
    env.add_filter("regex_search", regex_search);
    env.add_filter("regex_replace", regex_replace);
    env.add_filter("to_bool", to_bool);
    env.add_filter("union", union);
    env.add_filter("intersect", intersect);
    env.add_filter("difference", difference);
    env.add_filter("flatten", flatten);
    env.add_test("match", test_match);
    env.add_test("list", |v: &Value| {
        v.kind() == minijinja::value::ValueKind::Seq
    });
    env.add_function("raise", raise);
}

fn to_json(v: &Value) -> Result<serde_json::Value, Error> {
    serde_json::to_value(v).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot serialize value: {e}"),
        )
    })
}

fn from_json(v: &serde_json::Value) -> Value {
    Value::from(minijinja::value::Serde(v))
}

/// One value as a YAML scalar (flow style for lists and mappings), quoted
/// only where needed: `{{ x|yaml_encode }}` after `key: `.
fn yaml_encode(v: &Value) -> Result<Value, Error> {
    Ok(Value::from_safe_string(to_flow_yaml(&to_json(v)?)))
}

/// Salt's `yaml` filter: the value as YAML in flow style, one line.
fn yaml(v: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let flow: Option<bool> = kwargs.get("flow_style")?;
    kwargs.assert_all_used()?;
    if flow == Some(false) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "yaml(flow_style=False) is not supported; use flow style or tojson",
        ));
    }
    yaml_encode(v)
}

fn text_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn yaml_dquote(v: &Value) -> Value {
    Value::from_safe_string(double_quoted(&text_of(v)))
}

fn yaml_squote(v: &Value) -> Value {
    Value::from_safe_string(single_quoted(&text_of(v)))
}

/// Salt's `json` filter: compact JSON, keys sorted (`indent=N` pretty).
fn json(v: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _sort: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let value = to_json(v)?;
    let text = match indent {
        None => serde_json::to_string(&value),
        Some(n) => {
            let pad = vec![b' '; n];
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&pad);
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            serde::Serialize::serialize(&value, &mut ser)
                .map(|()| String::from_utf8_lossy(&buf).into_owned())
        }
    }
    .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("json: {e}")))?;
    Ok(Value::from_safe_string(text))
}

fn load_yaml_filter(text: &str) -> Result<Value, Error> {
    load_yaml(text, "load_yaml")
        .map(|v| from_json(&v))
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.message))
}

fn load_json(text: &str) -> Result<Value, Error> {
    serde_json::from_str::<serde_json::Value>(text)
        .map(|v| from_json(&v))
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("load_json: {e}")))
}

fn load_text(text: &str) -> Value {
    Value::from(text)
}

fn regex(pattern: &str, kwargs: &Kwargs) -> Result<Regex, Error> {
    let ignorecase: Option<bool> = kwargs.get("ignorecase")?;
    let multiline: Option<bool> = kwargs.get("multiline")?;
    kwargs.assert_all_used()?;
    RegexBuilder::new(pattern)
        .case_insensitive(ignorecase.unwrap_or(false))
        .multi_line(multiline.unwrap_or(false))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("regex {pattern:?}: {e}"),
            )
        })
}

/// The groups of a match as Python's `match.groups()` gives them (a
/// group that took part in no match is none); none when nothing matched.
fn groups(re: &Regex, text: &str, anchored: bool) -> Value {
    let Some(caps) = re.captures(text) else {
        return Value::from(());
    };
    if anchored && caps.get(0).is_some_and(|m| m.start() != 0) {
        return Value::from(());
    }
    Value::from(
        caps.iter()
            .skip(1)
            .map(|g| g.map_or_else(|| Value::from(()), |m| Value::from(m.as_str())))
            .collect::<Vec<_>>(),
    )
}

/// `re.match`: the pattern must match at the start of the text.
fn regex_match(text: &str, pattern: &str, kwargs: Kwargs) -> Result<Value, Error> {
    let re = regex(&format!(r"\A(?:{pattern})"), &kwargs)?;
    Ok(groups(&re, text, true))
}

/// `re.search`: anywhere in the text.
fn regex_search(text: &str, pattern: &str, kwargs: Kwargs) -> Result<Value, Error> {
    let re = regex(pattern, &kwargs)?;
    Ok(groups(&re, text, false))
}

/// `re.sub`: every match replaced; `\1` in the replacement is group 1.
fn regex_replace(
    text: &str,
    pattern: &str,
    replacement: &str,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let re = regex(pattern, &kwargs)?;
    Ok(Value::from(
        re.replace_all(text, python_replacement(replacement).as_str())
            .into_owned(),
    ))
}

/// Python's `\1`/`\g<1>`/`\g<name>` → regex's `${1}`/`${name}`; a `$`
/// stays literal.
pub fn python_replacement(r: &str) -> String {
    let mut out = String::new();
    let mut chars = r.chars().peekable();
    // Bounded by the replacement's length.
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        n.push(d);
                        chars.next();
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('g') => {
                    chars.next();
                    if chars.peek() == Some(&'<') {
                        chars.next();
                        let name: String = chars.by_ref().take_while(|c| *c != '>').collect();
                        out.push_str(&format!("${{{name}}}"));
                    } else {
                        out.push_str("\\g");
                    }
                }
                Some('n') => {
                    chars.next();
                    out.push('\n');
                }
                Some('t') => {
                    chars.next();
                    out.push('\t');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// Salt's `to_bool`: true for `true`/`yes`/`on`/`1`-like text and for
/// numbers above 0, lists and mappings with items.
fn to_bool(v: &Value) -> bool {
    if let Some(s) = v.as_str() {
        return matches!(s.to_lowercase().as_str(), "true" | "yes" | "on" | "1");
    }
    if let Ok(n) = i64::try_from(v.clone()) {
        return n > 0;
    }
    v.is_true()
}

fn items(v: &Value) -> Result<Vec<Value>, Error> {
    Ok(v.try_iter()?.collect())
}

/// Items of `a` then those of `b` not in `a`, without duplicates.
fn union(a: &Value, b: &Value) -> Result<Value, Error> {
    let mut out: Vec<Value> = Vec::new();
    for v in items(a)?.into_iter().chain(items(b)?) {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(Value::from(out))
}

fn intersect(a: &Value, b: &Value) -> Result<Value, Error> {
    let b = items(b)?;
    let mut out: Vec<Value> = Vec::new();
    for v in items(a)? {
        if b.contains(&v) && !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(Value::from(out))
}

fn difference(a: &Value, b: &Value) -> Result<Value, Error> {
    let b = items(b)?;
    let mut out: Vec<Value> = Vec::new();
    for v in items(a)? {
        if !b.contains(&v) && !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(Value::from(out))
}

/// Nested lists as one list (`levels=N` flattens only N levels).
fn flatten(v: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let levels: Option<usize> = kwargs.get("levels")?;
    kwargs.assert_all_used()?;
    fn walk(
        v: Value,
        left: Option<usize>,
        depth: usize,
        out: &mut Vec<Value>,
    ) -> Result<(), Error> {
        if depth > 64 {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "flatten: nested too deep",
            ));
        }
        for item in v.try_iter()? {
            let is_seq = item.kind() == minijinja::value::ValueKind::Seq;
            if is_seq && left != Some(0) {
                walk(item, left.map(|l| l - 1), depth + 1, out)?;
            } else {
                out.push(item);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(v.clone(), levels, 0, &mut out)?;
    Ok(Value::from(out))
}

/// Salt's `match` test: `re.match` of the text.
fn test_match(text: &str, pattern: &str, kwargs: Kwargs) -> Result<bool, Error> {
    let re = regex(&format!(r"\A(?:{pattern})"), &kwargs)?;
    Ok(re.is_match(text))
}

/// Salt's `raise('message')`: stop rendering with that message.
fn raise(_state: &State, message: &str) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.to_string()))
}
