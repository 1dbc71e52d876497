//! Salt's `raw` outputter and the small Python printer it needs: `str()` of
//! the return dict, e.g. `{'web1': True}`. Salt's older outputters (raw,
//! txt) print Python's `repr`/`str`/`pprint` of the data, so scripts parse
//! those shapes; this module reproduces them for JSON values.
//!
//! Invariant: for every JSON value the text is what CPython 3 prints for
//! the same data decoded into dict/list/str/int/float/bool/None (dict order
//! as stored; pprint sorts keys), with one documented approximation: which
//! non-ASCII characters Python deems unprintable (escaped in `repr`) is a
//! fixed list of the control, separator and format characters that occur
//! in practice, not the full Unicode database.

use std::fmt::Write as _;

use serde_json::{Number, Value};

/// The raw outputter: `str(data)`, which for a string is the string itself.
pub(crate) fn render(data: &Value) -> String {
    py_str(data)
}

/// Python's `str(value)`: strings as they are, everything else as `repr`.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

/// Python's `repr(value)`: `{'a': [1, 2.0, None, True]}`.
pub fn py_repr(v: &Value) -> String {
    let mut out = String::new();
    write_repr(v, false, &mut out);
    out
}

/// `repr`, with dict keys sorted when `sorted` (what pprint's `_safe_repr`
/// does) or in stored order otherwise.
fn write_repr(v: &Value, sorted: bool, out: &mut String) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&number_repr(n)),
        Value::String(s) => write_str_repr(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(item, sorted, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if sorted {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str_repr(k, out);
                out.push_str(": ");
                write_repr(val, sorted, out);
            }
            out.push('}');
        }
    }
}

fn number_repr(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else if let Some(f) = n.as_f64() {
        py_float_repr(f)
    } else {
        n.to_string()
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, in fixed
/// notation when the decimal exponent is in -4..16 (always with a `.0` or
/// fraction) and as `d.ddde+XX` otherwise (`1e+16`, `2.5e-07`).
pub fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits Python uses.
    let sci = format!("{f:e}");
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let (first, rest) = digits.split_at(1.min(digits.len()));
    if (-4..16).contains(&exp) {
        if exp < 0 {
            let zeros = "0".repeat(usize::try_from(-exp - 1).unwrap_or(0));
            format!("{sign}0.{zeros}{digits}")
        } else {
            let int_len = usize::try_from(exp + 1).unwrap_or(1);
            if digits.len() <= int_len {
                let pad = "0".repeat(int_len - digits.len());
                format!("{sign}{digits}{pad}.0")
            } else {
                let (int_part, frac) = digits.split_at(int_len);
                format!("{sign}{int_part}.{frac}")
            }
        }
    } else {
        let exp_sign = if exp < 0 { '-' } else { '+' };
        let dot = if rest.is_empty() { "" } else { "." };
        format!(
            "{sign}{first}{dot}{rest}e{exp_sign}{:02}",
            exp.unsigned_abs()
        )
    }
}

/// Python's `repr(str)`: single quotes unless the text holds `'` and no `"`.
fn write_str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x7f => out.push(c),
            c if py_printable(c) => out.push(c),
            c => {
                let code = c as u32;
                let _ = if code <= 0xff {
                    write!(out, "\\x{code:02x}")
                } else if code <= 0xffff {
                    write!(out, "\\u{code:04x}")
                } else {
                    write!(out, "\\U{code:08x}")
                };
            }
        }
    }
    out.push(quote);
}

/// Python's `str.isprintable()` for a non-ASCII character: false for
/// control (Cc), separator (Zs except space, Zl, Zp), the common format
/// (Cf) characters, private use (Co) and the noncharacters U+FFFE/U+FFFF.
fn py_printable(c: char) -> bool {
    !matches!(
        c as u32,
        0x80..=0xa0
            | 0xad
            | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x1680
            | 0x180e
            | 0x2000..=0x200f
            | 0x2028..=0x202f
            | 0x205f..=0x2064
            | 0x2066..=0x206f
            | 0x3000
            | 0xe000..=0xf8ff
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0xfffe..=0xffff
            | 0xe0001
            | 0xe0020..=0xe007f
            | 0xf0000..=0x10ffff
    )
}

/// The line width `pprint.pformat` wraps at.
const PPRINT_WIDTH: usize = 80;

/// Python's `pprint.pformat(value)`: the sorted-key `repr` when it fits in
/// 80 columns, otherwise dicts and lists broken one item per line with
/// pprint's indentation. Long strings are not split into implicitly
/// concatenated pieces as pprint would (rare in returns).
pub(crate) fn py_pformat(v: &Value) -> String {
    let mut out = String::new();
    pformat(v, 0, 0, &mut out);
    out
}

fn pformat(v: &Value, indent: usize, allowance: usize, out: &mut String) {
    let mut rep = String::new();
    write_repr(v, true, &mut rep);
    let fits = rep.chars().count() <= PPRINT_WIDTH.saturating_sub(indent + allowance);
    match v {
        Value::Object(map) if !fits && !map.is_empty() => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let inner = indent + 1;
            let last = entries.len() - 1;
            out.push('{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                let mut key = String::new();
                write_str_repr(k, &mut key);
                let key_width = key.chars().count();
                out.push_str(&key);
                out.push_str(": ");
                let item_allowance = if i == last { allowance + 1 } else { 1 };
                pformat(val, inner + key_width + 2, item_allowance, out);
                if i != last {
                    out.push_str(",\n");
                    out.push_str(&" ".repeat(inner));
                }
            }
            out.push('}');
        }
        Value::Array(items) if !fits && !items.is_empty() => {
            let inner = indent + 1;
            let last = items.len() - 1;
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                let item_allowance = if i == last { allowance + 1 } else { 1 };
                pformat(item, inner, item_allowance, out);
                if i != last {
                    out.push_str(",\n");
                    out.push_str(&" ".repeat(inner));
                }
            }
            out.push(']');
        }
        _ => out.push_str(&rep),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_match_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (123.456, "123.456"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (2.5e-7, "2.5e-07"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (f, want) in cases {
            assert_eq!(py_float_repr(f), want, "{f:e}");
        }
    }

    #[test]
    fn repr_of_containers_and_scalars() {
        let v = json!({"web1": {"a": [1, 2.0, null, true, false], "b": {}, "c": []}});
        assert_eq!(
            py_repr(&v),
            "{'web1': {'a': [1, 2.0, None, True, False], 'b': {}, 'c': []}}"
        );
    }

    #[test]
    fn repr_of_strings_picks_quotes_and_escapes() {
        assert_eq!(py_repr(&json!("plain")), "'plain'");
        assert_eq!(py_repr(&json!("it's")), "\"it's\"");
        assert_eq!(py_repr(&json!("both ' and \"")), "'both \\' and \"'");
        assert_eq!(py_repr(&json!("a\\b\tc\nd\re")), "'a\\\\b\\tc\\nd\\re'");
        assert_eq!(py_repr(&json!("\u{0}\u{1b}\u{7f}")), "'\\x00\\x1b\\x7f'");
        assert_eq!(py_repr(&json!("é ✓ 日本 🎉")), "'é ✓ 日本 🎉'");
        assert_eq!(py_repr(&json!("\u{a0}\u{85}")), "'\\xa0\\x85'");
        assert_eq!(py_repr(&json!("\u{200b}\u{2028}")), "'\\u200b\\u2028'");
        assert_eq!(py_repr(&json!("\u{f0000}")), "'\\U000f0000'");
    }

    #[test]
    fn str_of_string_is_the_string() {
        assert_eq!(py_str(&json!("it's\nraw")), "it's\nraw");
        assert_eq!(render(&json!({"web1": "x"})), "{'web1': 'x'}");
    }

    #[test]
    fn pformat_fits_on_one_line_sorted() {
        assert_eq!(
            py_pformat(&json!({"b": 1, "a": [1, 2]})),
            "{'a': [1, 2], 'b': 1}"
        );
        assert_eq!(py_pformat(&json!("s")), "'s'");
    }

    #[test]
    fn pformat_wraps_long_containers_like_pprint() {
        let long = "x".repeat(40);
        let v = json!({"beta": [long, long], "alpha": 1});
        let expected = format!("{{'alpha': 1,\n 'beta': ['{long}',\n          '{long}']}}");
        assert_eq!(py_pformat(&v), expected);
        let list = json!([long, long, 3]);
        assert_eq!(py_pformat(&list), format!("['{long}',\n '{long}',\n 3]"));
    }
}
