//! Salt's `yaml` outputter: block-style YAML (`web1: true`), one document
//! per call, written by serde_norway (libyaml's emitter, as PyYAML's
//! `safe_dump(default_flow_style=False)` is modelled on).
//!
//! Invariant: the text always parses back to the same value. Known
//! differences from PyYAML: multi-line strings use a literal block (`|-`)
//! where PyYAML writes a quoted scalar, and a top-level scalar gets no
//! `...` end marker.

use std::io;

pub(crate) fn render<T: serde::Serialize + ?Sized>(data: &T) -> io::Result<String> {
    serde_norway::to_string(data).map_err(io::Error::other)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn block_style_document() {
        let v = json!({"web1": {"b": [1, "two", null], "a": true, "e": {}, "l": []}});
        let expected = "\
web1:
  a: true
  b:
  - 1
  - two
  - null
  e: {}
  l: []
";
        assert_eq!(render(&v).unwrap(), expected);
    }

    #[test]
    fn ambiguous_and_multi_line_strings_round_trip() {
        let v = json!({"web1": {"n": "123", "t": "true", "m": "a\nb", "u": "日本", "z": ""}});
        let text = render(&v).unwrap();
        let back: Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(back, v);
        // Same as PyYAML with Salt's allow_unicode, except the `|-` block.
        let expected = "\
web1:
  m: |-
    a
    b
  n: '123'
  t: 'true'
  u: 日本
  z: ''
";
        assert_eq!(text, expected);
    }
}
