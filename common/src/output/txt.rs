//! Salt's `txt` outputter, made to make shell output look as it does on the
//! minion: for a dict, every line of a string value prints as `id: line`,
//! any other value as `id: <Python str(value)>` on one line; a bare string
//! prints as is, other data as `pprint.pformat`.
//!
//! Invariant: the key is printed before every line of a string value, so
//! `grep '^web1: '` finds all of a minion's output.

use serde_json::Value;

use super::py_splitlines;
use super::raw::{py_pformat, py_str};

pub(crate) fn render(data: &Value) -> String {
    match data {
        Value::Object(map) => {
            let mut out = String::new();
            for (key, value) in map {
                match value {
                    Value::String(s) => {
                        for line in py_splitlines(s) {
                            out.push_str(key);
                            out.push_str(": ");
                            out.push_str(line);
                            out.push('\n');
                        }
                    }
                    other => {
                        out.push_str(key);
                        out.push_str(": ");
                        out.push_str(&py_str(other));
                        out.push('\n');
                    }
                }
            }
            out
        }
        Value::String(s) => format!("{s}\n"),
        other => format!("{}\n", py_pformat(other)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_values_print_one_prefixed_line_each() {
        let v = json!({"web1": "total 0\ndrwxr-xr-x 2 root root\n"});
        assert_eq!(render(&v), "web1: total 0\nweb1: drwxr-xr-x 2 root root\n");
        assert_eq!(render(&json!({"web1": ""})), "");
    }

    #[test]
    fn other_values_print_as_python_str() {
        let v = json!({"a": true, "b": null, "c": 1.5, "d": {"k": [1, "x"]}, "e": []});
        assert_eq!(
            render(&v),
            "a: True\nb: None\nc: 1.5\nd: {'k': [1, 'x']}\ne: []\n"
        );
    }

    #[test]
    fn non_dict_documents() {
        assert_eq!(render(&json!("hello")), "hello\n");
        assert_eq!(render(&json!([1, "two"])), "[1, 'two']\n");
        assert_eq!(render(&json!(false)), "False\n");
    }
}
