//! Salt's `json` outputter: Python's `json.dumps(data, indent=N,
//! ensure_ascii=False)`. With an indent every item is on its own line with
//! `,` and `": "` separators; without one the document is a single line with
//! Python's `", "` and `": "` separators; floats print as Python's `repr`
//! (`1e+16`, `2.5e-07`), and non-ASCII text is left as UTF-8.
//!
//! Invariant: the output is always one valid JSON document (serde_json
//! does the escaping, which matches Python's for `ensure_ascii=False`).

use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;

use super::raw::py_float_repr;

pub(crate) fn render<T: Serialize + ?Sized>(data: &T, indent: Option<usize>) -> io::Result<String> {
    let mut buf = Vec::new();
    let formatter = PyFormatter {
        // Capped so an absurd --out-indent cannot exhaust memory.
        indent: indent.map(|n| n.min(MAX_INDENT)),
        depth: 0,
        has_value: false,
    };
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    data.serialize(&mut ser).map_err(io::Error::other)?;
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The largest JSON indent per level honoured; larger ones are clamped.
pub(crate) const MAX_INDENT: usize = 64;

/// A serde_json formatter that writes what Python's `json` module writes.
struct PyFormatter {
    /// Spaces per level, or `None` for a single line.
    indent: Option<usize>,
    /// Current nesting depth, for the indentation of the next line.
    depth: usize,
    /// Whether the container being closed had any element: an empty one
    /// closes on the same line (`{}`, `[]`), as in Python.
    has_value: bool,
}

impl PyFormatter {
    fn newline<W: ?Sized + io::Write>(&self, w: &mut W) -> io::Result<()> {
        if let Some(n) = self.indent {
            w.write_all(b"\n")?;
            w.write_all(" ".repeat(n.saturating_mul(self.depth)).as_bytes())?;
        }
        Ok(())
    }

    fn separator<W: ?Sized + io::Write>(&self, w: &mut W, first: bool) -> io::Result<()> {
        if !first {
            let sep: &[u8] = if self.indent.is_some() { b"," } else { b", " };
            w.write_all(sep)?;
        }
        self.newline(w)
    }

    fn open<W: ?Sized + io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(bracket)
    }

    fn close<W: ?Sized + io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.depth = self.depth.saturating_sub(1);
        if self.has_value {
            self.newline(w)?;
        }
        self.has_value = true;
        w.write_all(bracket)
    }
}

impl Formatter for PyFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(py_float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(w, f64::from(value))
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"[")
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.separator(w, first)
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"{")
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.separator(w, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_indent_four() {
        let v = json!({"web1": {"a": [1, 2.0], "e": {}, "l": [], "n": null, "t": true}});
        let expected = r#"{
    "web1": {
        "a": [
            1,
            2.0
        ],
        "e": {},
        "l": [],
        "n": null,
        "t": true
    }
}"#;
        assert_eq!(render(&v, Some(4)).unwrap(), expected);
    }

    #[test]
    fn single_line_uses_python_separators() {
        let v = json!({"web1": {"a": [1, 1e16], "s": "x"}});
        assert_eq!(
            render(&v, None).unwrap(),
            r#"{"web1": {"a": [1, 1e+16], "s": "x"}}"#
        );
        assert_eq!(render(&json!({}), None).unwrap(), "{}");
    }

    #[test]
    fn indent_zero_still_breaks_lines() {
        let v = json!({"web1": [true]});
        assert_eq!(render(&v, Some(0)).unwrap(), "{\n\"web1\": [\ntrue\n]\n}");
        let wide = render(&json!({"a": 1}), Some(usize::MAX)).unwrap();
        assert_eq!(wide, format!("{{\n{}\"a\": 1\n}}", " ".repeat(MAX_INDENT)));
    }

    #[test]
    fn strings_escape_like_python_without_ensure_ascii() {
        let v = json!({"u": "héllo ✓ \"q\" \\ \n\t\u{1}\u{7f}"});
        assert_eq!(
            render(&v, None).unwrap(),
            "{\"u\": \"héllo ✓ \\\"q\\\" \\\\ \\n\\t\\u0001\u{7f}\"}"
        );
    }
}
