//! Outputters for `--out`: turn minion returns and whole documents into the
//! exact text Salt's CLIs print, so scripts written against `salt` keep
//! working against Brine.
//!
//! A [`Printer`] owns the output stream. Without `--static` every minion's
//! return is printed the moment it arrives as its own one-minion document
//! `{id: ret}`; with `--static` returns are buffered and [`Printer::finish`]
//! prints one document holding every minion, keyed and sorted by id.
//! Invariant: every chunk written is the outputter's text with trailing
//! whitespace removed and exactly one newline added (Salt's `rstrip()` then
//! `print`), and a chunk that is empty after that is not written at all.
//! Nothing here panics on any JSON value.

mod highstate;
mod json;
mod key;
mod no_return;
mod raw;
mod txt;
mod yaml;

pub mod nested;

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde_json::{Map, Value};

pub use highstate::{is_state_return, HighstateOpts, StateOutput};
pub use key::{KeyList, KeySection, KeySections, SYNDICS};
pub use nested::{nested, nested_with_retcode};
pub use raw::{py_float_repr, py_repr, py_str};

/// The outputter chosen with `--out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutFormat {
    /// Salt's default: indented keys, `----------` between dicts, `- ` items.
    Nested,
    /// `json.dumps` shapes: `{"web1": true}`, indent from `--out-indent`.
    Json,
    /// Block-style YAML documents.
    Yaml,
    /// `id: line` per line of the return; Salt also accepts `text`.
    #[value(alias = "text")]
    Txt,
    /// The Python `repr` of the return dict: `{'web1': True}`.
    Raw,
    /// Prints nothing.
    Quiet,
    /// Salt's state-run layout: a block per state, then a summary.
    Highstate,
    /// Salt's `key` outputter (`salt-key`'s default): a header per key
    /// status, one key per line. Not a `--out` choice of the other CLIs.
    #[value(skip)]
    Key,
}

impl OutFormat {
    /// The outputter Salt knows under `name` (`--out` values and the `out`
    /// field a function may put in its return). `None` for names Brine has
    /// no outputter for (Salt then falls back to nested).
    pub fn from_salt_name(name: &str) -> Option<OutFormat> {
        match name {
            "nested" => Some(OutFormat::Nested),
            "json" => Some(OutFormat::Json),
            "yaml" => Some(OutFormat::Yaml),
            "txt" | "text" => Some(OutFormat::Txt),
            "raw" => Some(OutFormat::Raw),
            "quiet" => Some(OutFormat::Quiet),
            "highstate" => Some(OutFormat::Highstate),
            _ => None,
        }
    }
}

/// How to print: the CLI fills this from `--out`, `--out-indent`,
/// `--no-color`/tty detection and `--static`.
#[derive(Debug, Clone)]
pub struct OutOpts {
    pub format: OutFormat,
    /// Colours for nested (and the no-return notice); the caller decides from
    /// the tty, `--no-color`, `--force-color` and `NO_COLOR`.
    pub color: bool,
    /// JSON indentation, as Python's `json.dumps(indent=...)`: `Some(n)` puts
    /// every item on its own line indented by `n` spaces per level (`Some(0)`
    /// still breaks lines), `None` prints one line per document. Salt's
    /// default is `Some(4)`; a negative `--out-indent` means `None` (see
    /// [`OutOpts::indent_from_cli`]); values above 64 are capped. YAML
    /// ignores it.
    pub indent: Option<usize>,
    /// `--static`: buffer every return and print one document at `finish()`.
    pub static_mode: bool,
    /// `--state-output` and `--state-verbose`, for the highstate outputter.
    pub highstate: HighstateOpts,
}

impl OutOpts {
    /// Salt's defaults for `format`: no colour, JSON indent 4, streaming.
    pub fn new(format: OutFormat) -> Self {
        OutOpts {
            format,
            color: false,
            indent: Some(4),
            static_mode: false,
            highstate: HighstateOpts::default(),
        }
    }

    /// Map an `--out-indent N` value to [`OutOpts::indent`] as Salt's json
    /// outputter does: negative means one line per document.
    pub fn indent_from_cli(n: i64) -> Option<usize> {
        usize::try_from(n).ok()
    }
}

/// The output flags every CLI shares (`--out`, `--out-indent`,
/// `--no-color`, `--force-color`).
#[derive(clap::Args, Debug, Clone)]
pub struct OutputArgs {
    /// Outputter.
    #[arg(
        long = "out",
        visible_alias = "output",
        value_enum,
        default_value = "nested"
    )]
    pub out: OutFormat,
    /// Indentation of the json outputter (negative: one line).
    #[arg(
        long = "out-indent",
        visible_alias = "output-indent",
        allow_negative_numbers = true
    )]
    pub out_indent: Option<i64>,
    #[arg(long = "no-color", visible_alias = "no-colour")]
    pub no_color: bool,
    #[arg(long = "force-color", visible_alias = "force-colour")]
    pub force_color: bool,
    /// How much of each state the highstate outputter prints.
    #[arg(
        long = "state-output",
        visible_alias = "state_output",
        value_enum,
        default_value = "full"
    )]
    pub state_output: StateOutput,
    /// `False`: hide states that succeeded without changes.
    #[arg(
        long = "state-verbose",
        visible_alias = "state_verbose",
        action = clap::ArgAction::Set,
        value_parser = parse_py_bool,
        default_value = "True"
    )]
    pub state_verbose: bool,
}

/// A boolean option value as Salt's CLI accepts it (`True`, `false`, `1`, ...).
fn parse_py_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("expected True or False, got {s:?}")),
    }
}

impl OutputArgs {
    /// Options for a printer writing to a terminal or not; colour also
    /// honours `NO_COLOR`.
    pub fn opts(&self, static_mode: bool, to_terminal: bool) -> OutOpts {
        OutOpts {
            format: self.out,
            color: !self.no_color
                && std::env::var_os("NO_COLOR").is_none()
                && (self.force_color || to_terminal),
            indent: match self.out_indent {
                Some(n) => OutOpts::indent_from_cli(n),
                None => Some(4),
            },
            static_mode,
            highstate: HighstateOpts {
                state_output: self.state_output,
                state_verbose: self.state_verbose,
            },
        }
    }
}

impl Default for OutOpts {
    fn default() -> Self {
        OutOpts::new(OutFormat::Nested)
    }
}

/// Why a minion has no return (Salt prints "Minion did not return. [No response]").
#[derive(Debug, Clone, PartialEq)]
pub enum NoReturn {
    /// Connected, but no return before the job's timeout.
    NoResponse,
    /// Not connected to its master when the job was published.
    NotConnected,
    /// Lives behind `syndic`; `connected` says whether that syndic itself
    /// was connected, so the operator knows which tier to look at.
    BehindSyndic { syndic: String, connected: bool },
}

impl NoReturn {
    /// The text printed in place of the return. The first two are Salt's
    /// exact strings; the syndic ones keep Salt's prefix so scripts that test
    /// `startswith("Minion did not return")` still work.
    pub fn message(&self) -> String {
        match self {
            NoReturn::NoResponse => "Minion did not return. [No response]".to_string(),
            NoReturn::NotConnected => "Minion did not return. [Not connected]".to_string(),
            NoReturn::BehindSyndic {
                syndic,
                connected: true,
            } => format!("Minion did not return. [No response via syndic {syndic}]"),
            NoReturn::BehindSyndic {
                syndic,
                connected: false,
            } => format!("Minion did not return. [Syndic {syndic} not connected]"),
        }
    }
}

/// Which renderer a chunk goes through: one of the `--out` formats, or
/// Salt's `no_return` outputter (used when nested is in effect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renderer {
    Format(OutFormat),
    NoReturn,
}

/// Prints returns and documents to `W` in the chosen format.
pub struct Printer<W: Write> {
    out: W,
    opts: OutOpts,
    /// Static mode: every return so far, by minion id (sorted, as Salt's
    /// nested outputter sorts; json/yaml/raw of the buffer use this order).
    buffered: BTreeMap<String, Value>,
    /// Static mode: the `out` hint of the last return that carried one;
    /// Salt's `_format_ret` likewise keeps the last `out` it sees.
    static_hint: Option<String>,
    /// Static mode: the retcode of the last return, which colours nested
    /// keys red when non-zero (Salt's `_retcode`).
    static_retcode: i32,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, opts: OutOpts) -> Self {
        Printer {
            out,
            opts,
            buffered: BTreeMap::new(),
            static_hint: None,
            static_retcode: 0,
        }
    }

    /// The options this printer was built with.
    pub fn opts(&self) -> &OutOpts {
        &self.opts
    }

    /// One minion's return, printed at once (streaming) or buffered (static).
    /// `out_hint` is the `out` field of the return (the function's preferred
    /// outputter). As in Salt, an explicit `--out` wins; Brine cannot tell
    /// an explicit `--out nested` from the default, so the hint is followed
    /// only when the format is [`OutFormat::Nested`] and names an outputter
    /// Brine has (`txt`/`text`, `raw`, `json`, `yaml`, `quiet`, `nested`,
    /// `highstate`, `no_return`); any other hint falls back to nested.
    pub fn minion(&mut self, id: &str, ret: &Value, out_hint: Option<&str>) -> io::Result<()> {
        self.minion_with_retcode(id, ret, out_hint, 0)
    }

    /// [`Printer::minion`] with the minion's retcode: a non-zero retcode
    /// turns nested's keys, separators and list markers red, as in Salt.
    pub fn minion_with_retcode(
        &mut self,
        id: &str,
        ret: &Value,
        out_hint: Option<&str>,
        retcode: i32,
    ) -> io::Result<()> {
        if self.opts.static_mode {
            self.buffered.insert(id.to_string(), ret.clone());
            if let Some(hint) = out_hint {
                self.static_hint = Some(hint.to_string());
            }
            self.static_retcode = retcode;
            return Ok(());
        }
        let renderer = self.renderer(out_hint);
        let doc = single(id, ret.clone());
        let text = self.render(renderer, &doc, retcode)?;
        self.emit(&text)
    }

    /// A minion that did not return. With nested in effect it is printed by
    /// Salt's `no_return` outputter (`web3:` then the indented notice, id in
    /// cyan and notice in red when colour is on); every other format prints
    /// the notice as the string value under the minion id, as Salt does.
    pub fn no_return(&mut self, id: &str, why: &NoReturn) -> io::Result<()> {
        let value = Value::String(why.message());
        if self.opts.static_mode {
            self.buffered.insert(id.to_string(), value);
            return Ok(());
        }
        let renderer = match self.opts.format {
            OutFormat::Nested => Renderer::NoReturn,
            other => Renderer::Format(other),
        };
        let text = self.render(renderer, &single(id, value), 0)?;
        self.emit(&text)
    }

    /// `salt-key`'s sections, at once, in this printer's format (sections
    /// keep their order where Salt's outputter keeps its dict's order).
    pub fn keys(&mut self, doc: &KeySections) -> io::Result<()> {
        let text = key::render(doc, self.opts.format, self.opts.color, self.opts.indent)?;
        self.emit(&text)
    }

    /// Print a whole document at once (salt-run results, ...), in static
    /// mode too.
    pub fn document(&mut self, v: &Value) -> io::Result<()> {
        let text = self.render(Renderer::Format(self.opts.format), v, 0)?;
        self.emit(&text)
    }

    /// End of run: in static mode print the one document `{id: ret, ...}`
    /// (sorted by id); always flush.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.opts.static_mode {
            let buffered = std::mem::take(&mut self.buffered);
            let doc = Value::Object(buffered.into_iter().collect::<Map<String, Value>>());
            let hint = self.static_hint.take();
            let renderer = self.renderer(hint.as_deref());
            let text = self.render(renderer, &doc, self.static_retcode)?;
            self.emit(&text)?;
        }
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn renderer(&self, out_hint: Option<&str>) -> Renderer {
        if self.opts.format != OutFormat::Nested {
            return Renderer::Format(self.opts.format);
        }
        match out_hint {
            Some("no_return") => Renderer::NoReturn,
            Some(name) => {
                Renderer::Format(OutFormat::from_salt_name(name).unwrap_or(OutFormat::Nested))
            }
            None => Renderer::Format(OutFormat::Nested),
        }
    }

    fn render(&self, renderer: Renderer, data: &Value, retcode: i32) -> io::Result<String> {
        let color = self.opts.color;
        Ok(match renderer {
            Renderer::NoReturn => no_return::render(data, color),
            Renderer::Format(OutFormat::Nested) => nested_with_retcode(data, 0, color, retcode),
            Renderer::Format(OutFormat::Json) => json::render(data, self.opts.indent)?,
            Renderer::Format(OutFormat::Yaml) => yaml::render(data)?,
            Renderer::Format(OutFormat::Txt) => txt::render(data),
            Renderer::Format(OutFormat::Raw) => raw::render(data),
            Renderer::Format(OutFormat::Quiet) => String::new(),
            Renderer::Format(OutFormat::Highstate) => {
                highstate::render(data, self.opts.highstate, color)
            }
            Renderer::Format(OutFormat::Key) => key::render(
                &KeySections::from_value(data),
                OutFormat::Key,
                color,
                self.opts.indent,
            )?,
        })
    }

    /// Salt's `display_output`: `rstrip()` the outputter's text, print it
    /// with one newline, print nothing if nothing is left.
    fn emit(&mut self, text: &str) -> io::Result<()> {
        let text = py_rstrip(text);
        if text.is_empty() {
            return Ok(());
        }
        self.out.write_all(text.as_bytes())?;
        self.out.write_all(b"\n")
    }
}

/// `{id: ret}`, the per-minion document every outputter is given.
fn single(id: &str, ret: Value) -> Value {
    let mut map = Map::new();
    map.insert(id.to_string(), ret);
    Value::Object(map)
}

/// Python's `str.rstrip()`: strips what `str.isspace()` calls whitespace,
/// which also covers the information separators U+001C..U+001F.
fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// Python's `str.splitlines()`: splits on every line boundary Python knows,
/// drops the boundaries, and yields nothing for an empty string.
pub(crate) fn py_splitlines(s: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let boundary = matches!(
            c,
            '\n' | '\r'
                | '\u{0b}'
                | '\u{0c}'
                | '\u{1c}'
                | '\u{1d}'
                | '\u{1e}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if !boundary {
            continue;
        }
        lines.push(&s[start..i]);
        start = i + c.len_utf8();
        if c == '\r' {
            if let Some(&(j, '\n')) = chars.peek() {
                start = j + 1;
                chars.next();
            }
        }
    }
    if start < s.len() {
        lines.push(&s[start..]);
    }
    lines
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod highstate_tests;
