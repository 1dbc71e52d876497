//! Salt's `highstate` outputter: the per-state blocks (`----------`, `ID:`,
//! `Function:`, `Name:`, `Result:`, `Comment:`, `Started:`, `Duration:`,
//! `Changes:` with the changes in nested layout at indent 14), ordered by
//! `__run_num__`, then the `Summary for <minion>` block; `--state-output`
//! picks full or one-line (terse) blocks per state and `--state-verbose=False`
//! hides states that succeeded without changes (they still count).
//!
//! A return that is a list (or a string) is Salt's "Data failed to compile"
//! shape; any other non-state return falls back to nested under the minion id.
//! Invariants: nothing here panics on any JSON value, and no ESC byte from a
//! return reaches the terminal (it becomes `?`, as in nested). Colours are
//! Salt's: green success, cyan changes, red failure, light yellow for
//! `result: None` (test=True), and only when asked.

use serde_json::{Map, Value};

use super::nested::{colors, nested};
use super::raw::{py_float_repr, py_repr};

/// `--state-output`: how much of each state is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StateOutput {
    /// Every state as a full block.
    #[default]
    Full,
    /// Every state as one line.
    Terse,
    /// One line unless the state failed.
    Mixed,
    /// One line unless the state failed or has changes.
    Changes,
    /// As `full`; the one-line form of the `_id` modes names the state by ID.
    #[value(name = "full_id")]
    FullId,
    /// As `terse`, with `ID: <id>` in place of `Name: <name>`.
    #[value(name = "terse_id")]
    TerseId,
    /// As `mixed`, with `ID: <id>` in one-line states.
    #[value(name = "mixed_id")]
    MixedId,
    /// As `changes`, with `ID: <id>` in one-line states.
    #[value(name = "changes_id")]
    ChangesId,
}

impl StateOutput {
    fn by_id(self) -> bool {
        matches!(
            self,
            StateOutput::FullId
                | StateOutput::TerseId
                | StateOutput::MixedId
                | StateOutput::ChangesId
        )
    }

    /// Whether a state with this result and changed-ness gets one line.
    fn terse_for(self, result: &Value, changed: bool) -> bool {
        let ok = result_is_true(result);
        match self {
            StateOutput::Full | StateOutput::FullId => false,
            StateOutput::Terse | StateOutput::TerseId => true,
            StateOutput::Mixed | StateOutput::MixedId => !matches!(result, Value::Bool(false)),
            StateOutput::Changes | StateOutput::ChangesId => ok && !changed,
        }
    }
}

/// The highstate outputter's options (`--state-output`, `--state-verbose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HighstateOpts {
    pub state_output: StateOutput,
    /// `false`: states that succeeded without changes are not printed.
    pub state_verbose: bool,
}

impl Default for HighstateOpts {
    fn default() -> Self {
        HighstateOpts {
            state_output: StateOutput::Full,
            state_verbose: true,
        }
    }
}

/// Render a document `{minion: return, ...}` as Salt's highstate outputter
/// does, minions in the document's key order, one block each.
pub fn render(doc: &Value, opts: HighstateOpts, color: bool) -> String {
    match doc {
        Value::Object(hosts) => hosts
            .iter()
            .map(|(host, data)| host_block(host, data, opts, color))
            .collect::<Vec<_>>()
            .join("\n"),
        other => nested(other, 0, color),
    }
}

/// Whether a return has the shape of a state run (every value a state dict
/// keyed `mod_|-id_|-name_|-fun`), so the highstate layout applies.
pub fn is_state_return(data: &Value) -> bool {
    match data {
        Value::Object(map) => map.iter().all(|(k, v)| k.contains("_|-") && v.is_object()),
        _ => false,
    }
}

fn paint(color: bool, code: &str, text: &str) -> String {
    if color {
        format!("{code}{text}{}", colors::ENDC)
    } else {
        text.to_string()
    }
}

/// Strings from a return never carry ESC to the terminal.
fn clean(s: &str) -> String {
    s.replace('\x1b', "?")
}

fn result_is_true(v: &Value) -> bool {
    matches!(v, Value::Bool(true))
}

/// Python's `str()` of a JSON scalar (`True`, `None`, `2585.25`, text).
fn py_str_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => clean(s),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::Null => "None".to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (None, None, Some(f)) => py_float_repr(f),
            _ => n.to_string(),
        },
        other => clean(&py_repr(other)),
    }
}

fn host_block(host: &str, data: &Value, opts: HighstateOpts, color: bool) -> String {
    let host = clean(host);
    let errors: Option<Vec<String>> = match data {
        Value::Array(items) => Some(items.iter().map(py_str_scalar).collect()),
        Value::String(s) => Some(vec![clean(s)]),
        _ => None,
    };
    if let Some(errors) = errors {
        let mut out = vec![
            paint(color, colors::RED, &format!("{host}:")),
            paint(color, colors::RED, "    Data failed to compile:"),
        ];
        for err in errors {
            out.push(paint(color, colors::RED, &format!("----------\n    {err}")));
        }
        return out.join("\n");
    }
    match data {
        Value::Object(states) if is_state_return(data) => states_block(&host, states, opts, color),
        other => {
            let body = nested(other, 4, color);
            let head = paint(color, colors::GREEN, &format!("{host}:"));
            if body.is_empty() {
                head
            } else {
                format!("{head}\n{body}")
            }
        }
    }
}

/// The parts of one state the layout needs.
struct StateView<'a> {
    id: String,
    fun: String,
    name: String,
    ret: &'a Map<String, Value>,
}

fn view<'a>(tag: &str, ret: &'a Map<String, Value>) -> StateView<'a> {
    let comps: Vec<&str> = tag.splitn(4, "_|-").collect();
    let field = |k: &str| ret.get(k).map(py_str_scalar).unwrap_or_default();
    match comps.as_slice() {
        [module, id, name, fun] => StateView {
            id: clean(id),
            fun: clean(&format!("{module}.{fun}")),
            name: clean(name),
            ret,
        },
        _ => StateView {
            id: field("__id__"),
            fun: clean(tag),
            name: field("name"),
            ret,
        },
    }
}

fn run_num(ret: &Map<String, Value>) -> f64 {
    ret.get("__run_num__")
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

fn changed(ret: &Map<String, Value>) -> bool {
    match ret.get("changes") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

fn state_color(result: &Value, changed: bool) -> &'static str {
    match result {
        Value::Bool(false) => colors::RED,
        Value::Null => colors::LIGHT_YELLOW,
        _ if changed => colors::CYAN,
        _ => colors::GREEN,
    }
}

fn states_block(
    host: &str,
    states: &Map<String, Value>,
    opts: HighstateOpts,
    color: bool,
) -> String {
    let mut order: Vec<(&String, &Map<String, Value>)> = states
        .iter()
        .filter_map(|(k, v)| v.as_object().map(|m| (k, m)))
        .collect();
    order.sort_by(|a, b| run_num(a.1).total_cmp(&run_num(b.1)));

    let mut succeeded = 0usize;
    let mut failed = 0usize;
    let mut not_run = 0usize;
    let mut nchanges = 0usize;
    let mut total_ms = 0.0f64;
    let mut any_failed = false;
    let mut any_none = false;
    let mut body = Vec::new();
    for (tag, ret) in order {
        let st = view(tag, ret);
        let result = ret.get("result").cloned().unwrap_or(Value::Null);
        let is_changed = changed(ret);
        match result {
            Value::Bool(true) => succeeded += 1,
            Value::Bool(false) => {
                failed += 1;
                any_failed = true;
            }
            _ => {
                not_run += 1;
                any_none = true;
            }
        }
        if is_changed {
            nchanges += 1;
        }
        total_ms += ret.get("duration").and_then(Value::as_f64).unwrap_or(0.0);
        if !opts.state_verbose && result_is_true(&result) && !is_changed {
            continue;
        }
        let tcolor = state_color(&result, is_changed);
        if opts.state_output.terse_for(&result, is_changed) {
            body.push(paint(
                color,
                tcolor,
                &terse_line(&st, &result, is_changed, opts),
            ));
        } else {
            body.push(full_block(&st, &result, tcolor, color));
        }
    }

    let hcolor = if any_failed {
        colors::RED
    } else if any_none {
        colors::LIGHT_YELLOW
    } else {
        colors::GREEN
    };
    let mut out = vec![paint(color, hcolor, &format!("{host}:"))];
    out.extend(body);
    out.extend(summary(
        host,
        Counts {
            succeeded,
            failed,
            not_run,
            nchanges,
            total_ms,
        },
        color,
    ));
    out.join("\n")
}

fn terse_line(st: &StateView<'_>, result: &Value, changed: bool, opts: HighstateOpts) -> String {
    let label = match result {
        Value::Bool(false) => "Failed",
        Value::Null => "Differs",
        _ if changed => "Changed",
        _ => "Clean",
    };
    let head = if opts.state_output.by_id() {
        format!("ID: {}", st.id)
    } else {
        format!("Name: {}", st.name)
    };
    let mut line = format!("  {head} - Function: {} - Result: {label}", st.fun);
    if let Some(start) = st.ret.get("start_time") {
        let dur = st
            .ret
            .get("duration")
            .map(py_str_scalar)
            .unwrap_or_default();
        line.push_str(&format!(
            " - Started: {} - Duration: {dur} ms",
            py_str_scalar(start)
        ));
    }
    line
}

fn comment_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => clean(s.trim()).replace('\n', &format!("\n{}", " ".repeat(14))),
        Some(other) => clean(py_repr(other).trim()).replace('\n', &format!("\n{}", " ".repeat(14))),
        None => String::new(),
    }
}

fn full_block(st: &StateView<'_>, result: &Value, tcolor: &str, color: bool) -> String {
    let ret = st.ret;
    let mut lines = vec![
        paint(color, tcolor, "----------"),
        paint(color, tcolor, &format!("          ID: {}", st.id)),
        paint(color, tcolor, &format!("    Function: {}", st.fun)),
    ];
    if st.id != st.name {
        lines.push(paint(color, tcolor, &format!("        Name: {}", st.name)));
    }
    lines.push(paint(
        color,
        tcolor,
        &format!("      Result: {}", py_str_scalar(result)),
    ));
    lines.push(paint(
        color,
        tcolor,
        &format!("     Comment: {}", comment_text(ret.get("comment"))),
    ));
    if let Some(start) = ret.get("start_time") {
        let dur = ret.get("duration").map(py_str_scalar).unwrap_or_default();
        lines.push(paint(
            color,
            tcolor,
            &format!("     Started: {}", py_str_scalar(start)),
        ));
        lines.push(paint(color, tcolor, &format!("    Duration: {dur} ms")));
    }
    let mut changes = paint(color, tcolor, "     Changes:   ");
    match ret.get("changes") {
        Some(Value::Object(m)) if !m.is_empty() => {
            let text = nested(&Value::Object(m.clone()), 14, color);
            changes.push('\n');
            changes.push_str(text.trim_end());
        }
        Some(c @ (Value::Array(_) | Value::String(_) | Value::Number(_) | Value::Bool(true))) => {
            changes.push_str(&format!("\nInvalid Changes data: {}", py_str_scalar(c)));
        }
        _ => {}
    }
    lines.push(changes);
    lines.join("\n")
}

struct Counts {
    succeeded: usize,
    failed: usize,
    not_run: usize,
    nchanges: usize,
    total_ms: f64,
}

/// The `Summary for <host>` block, as lines (the first starts with `\n`).
fn summary(host: &str, c: Counts, color: bool) -> Vec<String> {
    // Salt measures only the result counts that occurred (none: width 0).
    let count_len = [c.succeeded, c.failed, c.not_run]
        .iter()
        .filter(|n| **n > 0)
        .map(|n| n.to_string().len())
        .max()
        .unwrap_or(0);
    // "Succeeded" is the longest label; +2 for ": ".
    let width = "Succeeded".len() + count_len + 2;
    let dashes = "-".repeat(width);
    let counts = |label: &str, n: usize| {
        let pad = width.saturating_sub(label.len() + 2);
        format!("{label}: {n:>pad$}")
    };
    let mut stats = Vec::new();
    if c.not_run > 0 {
        stats.push(paint(
            color,
            colors::LIGHT_YELLOW,
            &format!("unchanged={}", c.not_run),
        ));
    }
    if c.nchanges > 0 {
        stats.push(paint(
            color,
            colors::GREEN,
            &format!("changed={}", c.nchanges),
        ));
    }
    let stats = if stats.is_empty() {
        String::new()
    } else {
        format!(" ({})", stats.join(", "))
    };
    let mut lines = vec![
        paint(
            color,
            colors::CYAN,
            &format!("\nSummary for {host}\n{dashes}"),
        ),
        paint(
            color,
            colors::GREEN,
            &counts("Succeeded", c.succeeded + c.not_run),
        ) + &stats,
        paint(
            color,
            if c.failed > 0 {
                colors::RED
            } else {
                colors::CYAN
            },
            &counts("Failed", c.failed),
        ),
    ];
    let total = c.succeeded + c.failed + c.not_run;
    let run_pad = width.saturating_sub(7);
    lines.push(paint(
        color,
        colors::CYAN,
        &format!("{dashes}\nTotal states run: {total:>run_pad$}"),
    ));
    let (amount, unit) = if c.total_ms > 999.0 {
        (c.total_ms / 1000.0, "s")
    } else {
        (c.total_ms, "ms")
    };
    let time_pad = width.saturating_sub(5);
    let amount = format!("{amount:.3}");
    lines.push(paint(
        color,
        colors::CYAN,
        &format!("Total run time: {amount:>time_pad$} {unit}"),
    ));
    lines
}
