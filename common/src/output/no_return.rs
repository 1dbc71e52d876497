//! Salt's `no_return` outputter, which prints the notice for minions that
//! did not return: the id (cyan) then, 4 spaces deeper, each line of the
//! notice (red). Dicts nest by 4 spaces with sorted keys; other values
//! print nothing, exactly as in Salt.
//!
//! Invariant: colour codes wrap the whole line including its indentation
//! (Salt's order, unlike nested) and appear only when colour is on.

use serde_json::Value;

use super::nested::colors;

pub(crate) fn render(data: &Value, color: bool) -> String {
    let mut out = String::new();
    display(data, 0, color, &mut out);
    out
}

fn display(v: &Value, indent: usize, color: bool, out: &mut String) {
    let pad = " ".repeat(indent);
    let (red, cyan, endc) = if color {
        (colors::RED, colors::CYAN, colors::ENDC)
    } else {
        ("", "", "")
    };
    match v {
        Value::String(s) => {
            for line in s.split('\n') {
                let line = line.replace('\x1b', "?");
                out.push_str(&format!("{red}{pad}{line}{endc}\n"));
            }
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                let key_text = key.replace('\x1b', "?");
                out.push_str(&format!("{cyan}{pad}{key_text}{endc}:\n"));
                if let Some(val) = map.get(key) {
                    display(val, indent + 4, color, out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_notice() {
        let v = json!({"web3": "Minion did not return. [No response]"});
        assert_eq!(
            render(&v, false),
            "web3:\n    Minion did not return. [No response]\n"
        );
    }

    #[test]
    fn coloured_notice() {
        let v = json!({"web3": "Minion did not return. [Not connected]"});
        assert_eq!(
            render(&v, true),
            "\x1b[0;36mweb3\x1b[0m:\n\x1b[0;31m    Minion did not return. [Not connected]\x1b[0m\n"
        );
    }

    #[test]
    fn non_string_values_print_nothing() {
        assert_eq!(render(&json!({"a": {"b": true}}), false), "a:\n    b:\n");
    }
}
