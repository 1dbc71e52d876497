//! Salt's default `nested` outputter: dict keys end in `:` and their values
//! sit 4 spaces deeper, a dict below the top level opens with `----------`,
//! list items are `- item` and nested containers in lists open with `|_`
//! (2 spaces deeper), `None`/`True`/`False` and numbers print as Python
//! does, strings print one line per line.
//!
//! Invariants: dict keys are always printed sorted (Salt sorts every plain
//! dict), and no byte of a string or key from a minion reaches the terminal
//! as ESC (`\x1b` becomes `?`), so a return cannot drive the terminal.
//! Colour codes are Salt's exact SGR sequences and appear only when asked.

use serde_json::Value;

use super::py_splitlines;
use super::raw::py_float_repr;

/// Salt's `TextFormat` sequences: every colour starts with a reset (`0;`).
pub(crate) mod colors {
    pub const GREEN: &str = "\x1b[0;32m";
    pub const CYAN: &str = "\x1b[0;36m";
    pub const RED: &str = "\x1b[0;31m";
    pub const LIGHT_YELLOW: &str = "\x1b[0;1;33m";
    pub const ENDC: &str = "\x1b[0m";
}

/// Render one value as Salt's nested outputter would, at an indent (for
/// reuse). Lines are joined with `\n`, with no trailing newline; a dict at a
/// non-zero indent opens with `----------` as in Salt.
pub fn nested(v: &Value, indent: usize, color: bool) -> String {
    nested_with_retcode(v, indent, color, 0)
}

/// [`nested`] for a return whose retcode is `retcode`: when it is non-zero
/// and colour is on, keys, `----------` and `|_` are red instead of
/// cyan/green, as Salt marks failed returns.
pub fn nested_with_retcode(v: &Value, indent: usize, color: bool, retcode: i32) -> String {
    // A caller's indent is capped so no input can overflow or exhaust memory.
    let indent = indent.min(MAX_BASE_INDENT);
    let display = Display { color, retcode };
    let mut lines = Vec::new();
    display.value(v, indent, "", &mut lines);
    lines.join("\n")
}

/// The largest starting indent honoured; deeper requests are clamped.
pub const MAX_BASE_INDENT: usize = 1024;

struct Display {
    color: bool,
    retcode: i32,
}

impl Display {
    /// One line: indent, colour, prefix, text, reset, suffix (Salt's order:
    /// the suffix `:` of a key sits after the reset).
    fn line(&self, indent: usize, color: &str, prefix: &str, msg: &str, suffix: &str) -> String {
        let pad = " ".repeat(indent);
        if self.color {
            format!("{pad}{color}{prefix}{msg}{}{suffix}", colors::ENDC)
        } else {
            format!("{pad}{prefix}{msg}{suffix}")
        }
    }

    fn structure_color(&self, ok: &'static str) -> &'static str {
        if self.retcode != 0 {
            colors::RED
        } else {
            ok
        }
    }

    fn value(&self, v: &Value, indent: usize, prefix: &str, out: &mut Vec<String>) {
        match v {
            Value::Null => out.push(self.line(indent, colors::LIGHT_YELLOW, prefix, "None", "")),
            Value::Bool(b) => {
                let text = if *b { "True" } else { "False" };
                out.push(self.line(indent, colors::LIGHT_YELLOW, prefix, text, ""));
            }
            Value::Number(n) => {
                let text = match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => i.to_string(),
                    (None, Some(u), _) => u.to_string(),
                    (None, None, Some(f)) => py_float_repr(f),
                    (None, None, None) => n.to_string(),
                };
                out.push(self.line(indent, colors::LIGHT_YELLOW, prefix, &text, ""));
            }
            Value::String(s) => {
                let blank = " ".repeat(prefix.chars().count());
                for (i, line) in py_splitlines(s).into_iter().enumerate() {
                    let line_prefix = if i == 0 { prefix } else { blank.as_str() };
                    let safe = strip_esc(line);
                    out.push(self.line(indent, colors::GREEN, line_prefix, &safe, ""));
                }
            }
            Value::Array(items) => {
                let marker = self.structure_color(colors::GREEN);
                for item in items {
                    match item {
                        Value::Array(_) => {
                            out.push(self.line(indent, marker, "", "|_", ""));
                            self.value(item, indent + 2, "- ", out);
                        }
                        Value::Object(_) => {
                            out.push(self.line(indent, marker, "", "|_", ""));
                            self.value(item, indent + 2, "", out);
                        }
                        _ => self.value(item, indent, "- ", out),
                    }
                }
            }
            Value::Object(map) => {
                let key_color = self.structure_color(colors::CYAN);
                if indent > 0 {
                    out.push(self.line(indent, key_color, "", "----------", ""));
                }
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                for key in keys {
                    out.push(self.line(indent, key_color, prefix, &strip_esc(key), ":"));
                    if let Some(val) = map.get(key) {
                        self.value(val, indent + 4, "", out);
                    }
                }
            }
        }
    }
}

/// Salt's `strip_esc_sequence`: ESC becomes `?`.
fn strip_esc(s: &str) -> String {
    s.replace('\x1b', "?")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_print_as_python_does() {
        assert_eq!(nested(&json!(null), 0, false), "None");
        assert_eq!(nested(&json!(true), 0, false), "True");
        assert_eq!(nested(&json!(false), 4, false), "    False");
        assert_eq!(nested(&json!(-42), 0, false), "-42");
        assert_eq!(
            nested(&json!(18446744073709551615u64), 0, false),
            "18446744073709551615"
        );
        assert_eq!(nested(&json!(1.0), 0, false), "1.0");
        assert_eq!(nested(&json!(2.5e-7), 0, false), "2.5e-07");
        assert_eq!(nested(&json!("héllo ✓"), 0, false), "héllo ✓");
        let huge = nested(&json!({"a": 1}), usize::MAX, false);
        assert_eq!(huge.lines().count(), 3);
        assert!(huge.starts_with(&" ".repeat(MAX_BASE_INDENT)));
    }

    #[test]
    fn dict_at_top_level_has_no_separator_but_nested_dicts_do() {
        let v = json!({
            "myminion": {
                "foo": {
                    "list": ["Hello", "World"],
                    "bar": "baz",
                    "dictionary": {"def": 456, "abc": 123}
                }
            }
        });
        let expected = "\
myminion:
    ----------
    foo:
        ----------
        bar:
            baz
        dictionary:
            ----------
            abc:
                123
            def:
                456
        list:
            - Hello
            - World";
        assert_eq!(nested(&v, 0, false), expected);
    }

    #[test]
    fn empty_containers_and_empty_strings() {
        let v = json!({"web1": {"d": {}, "l": [], "s": "", "n": null}});
        let expected = "\
web1:
    ----------
    d:
        ----------
    l:
    n:
        None
    s:";
        assert_eq!(nested(&v, 0, false), expected);
        assert_eq!(nested(&json!({}), 0, false), "");
        assert_eq!(nested(&json!([]), 0, false), "");
    }

    #[test]
    fn lists_of_dicts_and_lists() {
        let v = json!({"web1": [{"b": 2, "a": 1}, [1, "x", [true]], "tail"]});
        let expected = "\
web1:
    |_
      ----------
      a:
          1
      b:
          2
    |_
      - 1
      - x
      |_
        - True
    - tail";
        assert_eq!(nested(&v, 0, false), expected);
    }

    #[test]
    fn multi_line_strings_keep_prefix_width() {
        let v = json!({"web1": "line one\nline two\r\nline three\n", "web2": ["a\nb"]});
        let expected = "\
web1:
    line one
    line two
    line three
web2:
    - a
      b";
        assert_eq!(nested(&v, 0, false), expected);
    }

    #[test]
    fn escape_bytes_are_neutralised() {
        let v = json!({"k\x1b[2J": "evil\x1b[31m"});
        assert_eq!(nested(&v, 0, false), "k?[2J:\n    evil?[31m");
    }

    #[test]
    fn colours_follow_salt() {
        let v = json!({"web1": {"ok": true, "out": "hi", "l": [1, {"x": null}]}});
        let expected = concat!(
            "\x1b[0;36mweb1\x1b[0m:\n",
            "    \x1b[0;36m----------\x1b[0m\n",
            "    \x1b[0;36ml\x1b[0m:\n",
            "        \x1b[0;1;33m- 1\x1b[0m\n",
            "        \x1b[0;32m|_\x1b[0m\n",
            "          \x1b[0;36m----------\x1b[0m\n",
            "          \x1b[0;36mx\x1b[0m:\n",
            "              \x1b[0;1;33mNone\x1b[0m\n",
            "    \x1b[0;36mok\x1b[0m:\n",
            "        \x1b[0;1;33mTrue\x1b[0m\n",
            "    \x1b[0;36mout\x1b[0m:\n",
            "        \x1b[0;32mhi\x1b[0m",
        );
        assert_eq!(nested(&v, 0, true), expected);
    }

    #[test]
    fn failed_return_turns_structure_red() {
        let v = json!({"web1": {"a": ["x", [2]]}});
        let expected = concat!(
            "\x1b[0;31mweb1\x1b[0m:\n",
            "    \x1b[0;31m----------\x1b[0m\n",
            "    \x1b[0;31ma\x1b[0m:\n",
            "        \x1b[0;32m- x\x1b[0m\n",
            "        \x1b[0;31m|_\x1b[0m\n",
            "          \x1b[0;1;33m- 2\x1b[0m",
        );
        assert_eq!(nested_with_retcode(&v, 0, true, 1), expected);
        // Without colour the retcode changes nothing.
        assert_eq!(
            nested_with_retcode(&v, 0, false, 1),
            nested_with_retcode(&v, 0, false, 0)
        );
    }
}
