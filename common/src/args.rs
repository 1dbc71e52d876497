//! Salt's command-line argument convention: the words after the function
//! name (`salt '*' cmd.run 'ls -l' cwd=/tmp timeout=5`) become positional
//! args and `key=value` kwargs, each value typed the way Salt types it
//! (`salt.utils.args.parse_input` / `yamlify_arg`).
//!
//! Invariant: typing never fails and never loses text. A word is only
//! turned into a non-string when the whole of it reads as one YAML value
//! under Salt's rules; anything doubtful (YAML errors, tags, anchors,
//! block-style mappings or sequences, values JSON cannot hold) stays the
//! exact string that was typed.
//!
//! Plain scalars are typed with PyYAML's YAML 1.1 rules as Salt's loader
//! applies them (`yes`/`on` are booleans, `1:30` is 90, leading zeros are
//! ignored, `1e3` is a string); flow collections (`[1, 2]`, `{a: 1}`) are
//! read with `serde_norway`, whose YAML 1.2 rules type the scalars inside
//! them (`[yes]` holds the string "yes", unlike Salt).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Number, Value};

/// Split CLI words into positional args and kwargs, typing each value the
/// way Salt does (see [`yamlify`]). A word is a kwarg when it reads
/// `name=value` with Salt's rule for names (see [`split_kwarg`]), so
/// `cmd.run 'echo a=b'` stays positional because of the space before `=`.
/// A later kwarg of the same name wins, as in Salt.
pub fn parse_cli_args(words: &[String]) -> (Vec<Value>, BTreeMap<String, Value>) {
    let mut args = Vec::new();
    let mut kwargs = BTreeMap::new();
    for word in words {
        match split_kwarg(word) {
            Some((name, value)) => {
                kwargs.insert(name.to_string(), yamlify(value));
            }
            None => args.push(yamlify(word)),
        }
    }
    (args, kwargs)
}

/// `name=value` → `(name, value)` when `name` is a Salt kwarg name: a letter
/// or `_` first, then letters, digits, `_`, `.` or `-` (Salt's
/// `^([^\d\W][\w.-]*)=(?!=)(.*)$`). `a==b` and values spanning lines are
/// not kwargs.
pub fn split_kwarg(word: &str) -> Option<(&str, &str)> {
    let eq = word.find('=')?;
    let (name, rest) = word.split_at(eq);
    let value = &rest[1..];
    let mut chars = name.chars();
    let first = chars.next()?;
    if !(first.is_alphabetic() || first == '_') {
        return None;
    }
    if !chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return None;
    }
    if value.starts_with('=') || value.contains('\n') {
        return None;
    }
    Some((name, value))
}

/// One word typed as a YAML scalar or flow value, following Salt's
/// `yamlify_arg`: ints, floats, `true`/`false` (and YAML 1.1's `yes`/`no`/
/// `on`/`off`), `null`/`~`/`None`, flow lists `[1,2]` and dicts `{a: 1}`;
/// anything else is the word itself. Kept as strings, as in Salt: empty or
/// blank words, `---`, `...`, digits with underscores (`1_000`), words with
/// tabs or line breaks, lists/dicts not written in brackets/braces (`a: b`,
/// `- a`), dates, `|`, `>` and `!`; and a word containing `#` unless it reads
/// as a non-string without its comment (`5 # five` is 5, `a#b` is "a#b").
pub fn yamlify(word: &str) -> Value {
    let original = || Value::String(word.to_string());
    let stripped = word.trim();
    if matches!(stripped, "" | "---" | "...") {
        return original();
    }
    if word.contains('_') && stripped.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return original();
    }
    if word.contains(['\t', '\r', '\n']) {
        return original();
    }
    if word == "None" {
        return Value::Null;
    }
    let Some(parsed) = load(word) else {
        return original();
    };
    if word.contains('#') {
        return match parsed {
            Value::String(_) | Value::Null => original(),
            other => other,
        };
    }
    match parsed {
        Value::Object(_) if !word.starts_with('{') => original(),
        Value::Array(_) if !word.starts_with('[') => original(),
        // YAML reads a lone block indicator or tag as an empty string.
        Value::String(s) if s.is_empty() && matches!(word, "|" | ">" | "!") => original(),
        Value::Null if word == "!" => original(),
        other => other,
    }
}

/// Read one word as a YAML document; `None` when it is not valid YAML or
/// holds something JSON cannot represent.
fn load(word: &str) -> Option<Value> {
    let doc: serde_norway::Value = serde_norway::from_str(word).ok()?;
    let text = plain_text(word);
    let is_scalar = !matches!(
        doc,
        serde_norway::Value::Sequence(_)
            | serde_norway::Value::Mapping(_)
            | serde_norway::Value::Tagged(_)
    );
    match text {
        Some(text) if is_scalar => resolve_plain(text),
        _ => to_json(doc),
    }
}

/// The text of `word` when it is a YAML plain scalar (no quotes, tags,
/// anchors, block indicators or document markers), without a trailing
/// comment and surrounding blanks.
fn plain_text(word: &str) -> Option<&str> {
    let trimmed = word.trim();
    if trimmed.starts_with("---") || trimmed.starts_with("...") {
        return None;
    }
    // A comment starts at a `#` that opens the text or follows a blank.
    let mut cut = trimmed.len();
    let mut prev_blank = true;
    for (i, c) in trimmed.char_indices() {
        if c == '#' && prev_blank {
            cut = i;
            break;
        }
        prev_blank = c == ' ';
    }
    let text = trimmed[..cut].trim_end();
    match text.chars().next() {
        Some('\'' | '"' | '!' | '&' | '*' | '|' | '>' | '[' | '{' | '%' | '@' | '`') => None,
        _ => Some(text),
    }
}

static INT_RE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
    )
    .ok()
});

static FLOAT_RE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
    )
    .ok()
});

fn full_match(re: &LazyLock<Option<Regex>>, text: &str) -> bool {
    re.as_ref().is_some_and(|re| re.is_match(text))
}

/// Type a plain scalar with PyYAML's implicit resolvers as Salt's loader
/// constructs them; `None` when the value cannot be held (an integer
/// beyond 64 bits, infinities, NaN), so the caller keeps the word.
fn resolve_plain(text: &str) -> Option<Value> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Some(Value::Bool(true))
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Some(Value::Bool(false))
        }
        _ => {}
    }
    if full_match(&INT_RE, text) {
        return construct_int(text);
    }
    if full_match(&FLOAT_RE, text) {
        return construct_float(text);
    }
    Some(Value::String(text.to_string()))
}

fn construct_int(text: &str) -> Option<Value> {
    // Salt's loader drops leading zeros of an unsigned int that is not
    // binary or hex, so `010` is 10 (PyYAML alone would read octal 8).
    let mut text = text.to_string();
    if text != "0" && text.starts_with('0') && !text.starts_with("0b") && !text.starts_with("0x") {
        text = text.trim_start_matches('0').to_string();
        if text.is_empty() {
            text = "0".to_string();
        }
    }
    let digits: String = text.chars().filter(|c| *c != '_').collect();
    let (negative, digits) = match digits.strip_prefix('-') {
        Some(rest) => (true, rest.to_string()),
        None => (false, digits.trim_start_matches('+').to_string()),
    };
    let magnitude: i128 = if digits == "0" {
        0
    } else if let Some(bin) = digits.strip_prefix("0b") {
        i128::from_str_radix(bin, 2).ok()?
    } else if let Some(hex) = digits.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()?
    } else if digits.contains(':') {
        sexagesimal(&digits)?
    } else if let Some(oct) = digits.strip_prefix('0') {
        i128::from_str_radix(oct, 8).ok()?
    } else {
        digits.parse::<i128>().ok()?
    };
    let value = if negative { -magnitude } else { magnitude };
    if let Ok(v) = i64::try_from(value) {
        Some(Value::Number(Number::from(v)))
    } else {
        u64::try_from(value)
            .ok()
            .map(|v| Value::Number(Number::from(v)))
    }
}

/// `1:30:05` → 5405 (base 60, most significant first).
fn sexagesimal(digits: &str) -> Option<i128> {
    digits.split(':').try_fold(0i128, |acc, part| {
        let v = part.parse::<i128>().ok()?;
        acc.checked_mul(60)?.checked_add(v)
    })
}

fn construct_float(text: &str) -> Option<Value> {
    let lowered: String = text
        .chars()
        .filter(|c| *c != '_')
        .collect::<String>()
        .to_lowercase();
    let (negative, body) = match lowered.strip_prefix('-') {
        Some(rest) => (true, rest.to_string()),
        None => (false, lowered.trim_start_matches('+').to_string()),
    };
    let magnitude = if let Some((whole, frac)) = body.split_once('.').filter(|_| body.contains(':'))
    {
        let whole = sexagesimal(whole)? as f64;
        let frac = if frac.is_empty() {
            0.0
        } else {
            format!("0.{frac}").parse::<f64>().ok()?
        };
        whole + frac
    } else {
        body.parse::<f64>().ok()?
    };
    let value = if negative { -magnitude } else { magnitude };
    Number::from_f64(value).map(Value::Number)
}

/// serde_norway's value → JSON; `None` for tagged values (Salt would
/// construct them specially) and for non-finite floats.
fn to_json(value: serde_norway::Value) -> Option<Value> {
    Some(match value {
        serde_norway::Value::Null => Value::Null,
        serde_norway::Value::Bool(b) => Value::Bool(b),
        serde_norway::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Number(Number::from(i))
            } else if let Some(u) = n.as_u64() {
                Value::Number(Number::from(u))
            } else {
                Value::Number(Number::from_f64(n.as_f64()?)?)
            }
        }
        serde_norway::Value::String(s) => Value::String(s),
        serde_norway::Value::Sequence(items) => {
            Value::Array(items.into_iter().map(to_json).collect::<Option<Vec<_>>>()?)
        }
        serde_norway::Value::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                out.insert(key_text(k)?, to_json(v)?);
            }
            Value::Object(out)
        }
        serde_norway::Value::Tagged(_) => return None,
    })
}

/// A mapping key as JSON needs it: a string, scalars in Python's spelling.
fn key_text(key: serde_norway::Value) -> Option<String> {
    match key {
        serde_norway::Value::String(s) => Some(s),
        serde_norway::Value::Number(n) => Some(n.to_string()),
        serde_norway::Value::Bool(true) => Some("True".to_string()),
        serde_norway::Value::Bool(false) => Some("False".to_string()),
        serde_norway::Value::Null => Some("None".to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn words(ws: &[&str]) -> Vec<String> {
        ws.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn splits_args_and_kwargs() {
        let (args, kwargs) =
            parse_cli_args(&words(&["ls -l", "cwd=/tmp", "timeout=5", "echo a=b"]));
        assert_eq!(args, vec![json!("ls -l"), json!("echo a=b")]);
        assert_eq!(kwargs.get("cwd"), Some(&json!("/tmp")));
        assert_eq!(kwargs.get("timeout"), Some(&json!(5)));
        assert_eq!(kwargs.len(), 2);
    }

    #[test]
    fn kwarg_names_follow_salt() {
        assert_eq!(split_kwarg("a=b"), Some(("a", "b")));
        assert_eq!(split_kwarg("_x1=2"), Some(("_x1", "2")));
        assert_eq!(split_kwarg("pkg.ver-x=1"), Some(("pkg.ver-x", "1")));
        assert_eq!(split_kwarg("a="), Some(("a", "")));
        assert_eq!(split_kwarg("a=b=c"), Some(("a", "b=c")));
        assert_eq!(split_kwarg("1a=b"), None);
        assert_eq!(split_kwarg("=b"), None);
        assert_eq!(split_kwarg("a==b"), None);
        assert_eq!(split_kwarg("echo a=b"), None);
        assert_eq!(split_kwarg("a=b\nc"), None);
        assert_eq!(split_kwarg("plain"), None);
        let (args, kwargs) = parse_cli_args(&words(&["x=1", "x=2"]));
        assert!(args.is_empty());
        assert_eq!(kwargs.get("x"), Some(&json!(2)), "later wins");
    }

    #[test]
    fn scalars() {
        assert_eq!(yamlify("5"), json!(5));
        assert_eq!(yamlify("-17"), json!(-17));
        assert_eq!(yamlify("+3"), json!(3));
        assert_eq!(yamlify("0"), json!(0));
        assert_eq!(yamlify("010"), json!(10), "Salt drops leading zeros");
        assert_eq!(yamlify("0x1F"), json!(31));
        assert_eq!(yamlify("0b101"), json!(5));
        assert_eq!(yamlify("1:30"), json!(90), "YAML 1.1 sexagesimal");
        assert_eq!(yamlify("-1_000"), json!(-1000));
        assert_eq!(
            yamlify("18446744073709551615"),
            json!(18446744073709551615u64)
        );
        assert_eq!(
            yamlify("20240101123456789012"),
            json!("20240101123456789012")
        );
        assert_eq!(yamlify("1.5"), json!(1.5));
        assert_eq!(yamlify("1."), json!(1.0));
        assert_eq!(yamlify(".5"), json!(0.5));
        assert_eq!(yamlify("1.0e+3"), json!(1000.0));
        assert_eq!(yamlify("1e3"), json!("1e3"), "PyYAML floats need a dot");
        assert_eq!(yamlify(".inf"), json!(".inf"), "JSON has no infinity");
        assert_eq!(yamlify("true"), json!(true));
        assert_eq!(yamlify("False"), json!(false));
        assert_eq!(yamlify("yes"), json!(true));
        assert_eq!(yamlify("off"), json!(false));
        assert_eq!(yamlify("null"), Value::Null);
        assert_eq!(yamlify("~"), Value::Null);
        assert_eq!(yamlify("None"), Value::Null);
        assert_eq!(yamlify(" 5 "), json!(5));
        assert_eq!(yamlify("09"), json!("09"));
        assert_eq!(yamlify("0o17"), json!("0o17"));
        assert_eq!(
            yamlify("2024-01-02"),
            json!("2024-01-02"),
            "dates stay strings"
        );
        assert_eq!(yamlify("web1"), json!("web1"));
        assert_eq!(yamlify("ls -l"), json!("ls -l"));
        assert_eq!(yamlify("/tmp"), json!("/tmp"));
        assert_eq!(yamlify("'quoted'"), json!("quoted"));
        assert_eq!(yamlify("\"5\""), json!("5"));
    }

    #[test]
    fn collections() {
        assert_eq!(yamlify("[1,2]"), json!([1, 2]));
        assert_eq!(yamlify("[a, 'b c', 3.5]"), json!(["a", "b c", 3.5]));
        assert_eq!(yamlify("{a: 1}"), json!({"a": 1}));
        assert_eq!(
            yamlify("{a: [1, {b: null}]}"),
            json!({"a": [1, {"b": null}]})
        );
        assert_eq!(yamlify("{1: x}"), json!({"1": "x"}));
        assert_eq!(yamlify("[]"), json!([]));
        assert_eq!(yamlify("a: b"), json!("a: b"), "dicts need braces");
        assert_eq!(yamlify("- a"), json!("- a"), "lists need brackets");
        assert_eq!(yamlify("[1, 2"), json!("[1, 2"), "bad YAML stays text");
        assert_eq!(yamlify("{a: 1, a: 2}"), json!("{a: 1, a: 2}"));
    }

    #[test]
    fn salt_special_cases() {
        for kept in [
            "",
            "   ",
            "---",
            "...",
            "1_000",
            "12_",
            "a\tb",
            "a\nb",
            "|",
            ">",
            "!",
            "#",
            "# x",
            "a#b",
            "foo # bar",
            "!!int x",
            "*a",
            "@x",
            "`x",
            "%x",
            ":",
            "a:b:c: d",
        ] {
            assert_eq!(yamlify(kept), json!(kept), "{kept:?} must stay a string");
        }
        assert_eq!(yamlify("!!str 5"), json!("5"), "explicit tag, as PyYAML");
        assert_eq!(yamlify("&a 5"), json!(5), "anchors are transparent");
        assert_eq!(yamlify("5 # five"), json!(5));
        assert_eq!(yamlify("[1, 2] # two"), json!([1, 2]));
        assert_eq!(
            yamlify("a: 1 #c"),
            json!({"a": 1}),
            "Salt returns it as parsed"
        );
        assert_eq!(yamlify("a:b"), json!("a:b"));
        assert_eq!(yamlify("http://x/y?a=b"), json!("http://x/y?a=b"));
    }

    proptest! {
        #[test]
        fn never_panics_and_strings_round_trip(word in ".{0,40}") {
            let value = yamlify(&word);
            if let Value::String(s) = &value {
                // A string result is the word itself, or the text of a
                // quoted/plain scalar (never something else invented).
                if !word.contains(['\'', '"']) {
                    prop_assert!(word.contains(s.as_str()), "{:?} -> {:?}", word, s);
                }
            }
            let _ = parse_cli_args(&[word.clone(), format!("k={word}")]);
        }
    }
}
