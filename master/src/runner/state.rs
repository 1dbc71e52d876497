//! `state.event`: watch the master's event bus (see [`crate::events`]).
//! It streams, so the client channel serves it itself
//! (`client_server::stream_events`); this table gives it its docstring and
//! its arguments' reading, and refuses a plain (one-answer) call.

use super::{Call, Function, Kw, RunFuture, RunnerError};
use serde_json::Value;

/// The streaming runner function's name.
pub(crate) const STATE_EVENT: &str = "state.event";

pub(crate) const FUNCTIONS: &[Function] = &[Function {
    name: STATE_EVENT,
    doc: "Watch Salt's event bus and block until the given tag is matched\n\n\
          tagmatch: the tag (or fnmatch pattern) to watch for, '*' by default.\n\
          count: stop after this many matching events; -1 (the default) never stops.\n\
          quiet: print nothing (for scripts that only wait, with count).\n\
          pretty: print the data indented, with sorted keys.\n\n\
          With --out json each event is one line {\"tag\": ..., \"data\": ...}.\n\n\
          CLI Example:\n\n    salt-run state.event pretty=True\n    \
          salt-run state.event 'salt/job/*/ret/*' count=1 --out json\n",
    run: refuse_plain,
}];

fn refuse_plain<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(async move {
        Err(RunnerError::Streams {
            fun: c.fun.to_string(),
        })
    })
}

/// The arguments of `state.event` (Salt's order: tagmatch, count, quiet,
/// sock_dir, pretty).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EventArgs {
    pub(crate) tagmatch: String,
    /// Events to print before stopping; 0 or less: never stop.
    pub(crate) count: u64,
    pub(crate) quiet: bool,
    pub(crate) pretty: bool,
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "true" | "yes" | "1"),
        Value::Number(n) => n.as_i64().unwrap_or(0) != 0,
        _ => false,
    }
}

impl EventArgs {
    pub(crate) fn of(args: &[Value], kwargs: &Kw) -> Self {
        let get = |pos: usize, name: &str| kwargs.get(name).or_else(|| args.get(pos));
        let tagmatch = match get(0, "tagmatch") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => "*".to_string(),
            Some(other) => other.to_string(),
        };
        let count = match get(1, "count") {
            Some(Value::Number(n)) => n.as_i64().unwrap_or(-1),
            Some(Value::String(s)) => s.trim().parse().unwrap_or(-1),
            _ => -1,
        };
        EventArgs {
            tagmatch,
            count: u64::try_from(count).unwrap_or(0),
            quiet: get(2, "quiet").is_some_and(truthy),
            pretty: get(4, "pretty").is_some_and(truthy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_are_read_as_salts() {
        let a = EventArgs::of(&[], &Kw::new());
        assert_eq!(
            a,
            EventArgs {
                tagmatch: "*".into(),
                count: 0,
                quiet: false,
                pretty: false
            }
        );
        let kw = Kw::from([
            ("count".to_string(), json!(3)),
            ("pretty".to_string(), json!(true)),
            ("quiet".to_string(), json!("True")),
        ]);
        let a = EventArgs::of(&[json!("salt/job/*")], &kw);
        assert_eq!(a.tagmatch, "salt/job/*");
        assert_eq!(a.count, 3);
        assert!(a.quiet && a.pretty);
        let a = EventArgs::of(&[json!("t"), json!("-1")], &Kw::new());
        assert_eq!(a.count, 0, "-1 is forever");
    }
}
