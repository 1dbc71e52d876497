//! Salt's `test` state module: states that succeed or fail on demand,
//! for trying requisites, outputters and pipelines without touching the
//! system.
//!
//! The behaviour lives in one pure function, [`outcome`], which the state
//! functions below wrap and which the load test's simulated minions call
//! directly (they have no execution context). Invariant: nothing here
//! reads or changes the system, so a state's outcome depends only on its
//! function, arguments, test mode and whether a watch fired.

use super::{StateCall, StateFunction};
use crate::state::StateOutcome;
use serde_json::{json, Map, Value};

pub const FUNCTIONS: &[StateFunction] = &[
    StateFunction {
        name: "test.nop",
        run,
        mod_watch: Some(watched),
    },
    StateFunction {
        name: "test.succeed_without_changes",
        run,
        mod_watch: Some(watched),
    },
    StateFunction {
        name: "test.succeed_with_changes",
        run,
        mod_watch: Some(watched),
    },
    StateFunction {
        name: "test.fail_without_changes",
        run,
        mod_watch: Some(watched),
    },
    StateFunction {
        name: "test.fail_with_changes",
        run,
        mod_watch: Some(watched),
    },
    StateFunction {
        name: "test.show_notification",
        run,
        mod_watch: Some(watched),
    },
    StateFunction {
        name: "test.configurable_test_state",
        run,
        mod_watch: Some(watched),
    },
];

/// What the `test` state function `fun` (`nop`, `succeed_with_changes`,
/// ... ; a leading `test.` is accepted) returns for `args` (the chunk's
/// arguments), in test mode or not. `watched`: a `watch`ed state changed,
/// so the state's `mod_watch` runs after the function when the function
/// itself neither changed anything nor failed (the rule
/// [`super::execute`] applies). `_name` is the state's name: part of
/// Salt's signature, but no test state's outcome depends on it. `None`
/// when `test` has no such function.
pub fn outcome(
    fun: &str,
    _name: &str,
    args: &Map<String, Value>,
    test: bool,
    watched: bool,
) -> Option<StateOutcome> {
    let fun = fun.strip_prefix("test.").unwrap_or(fun);
    let first = function(fun, args, test)?;
    Some(
        if watched && !first.has_changes() && first.result != Some(false) {
            watch(test)
        } else {
            first
        },
    )
}

/// A string argument (numbers and booleans as their text); `None` when
/// absent, null or not a scalar.
fn text(args: &Map<String, Value>, key: &str) -> Option<String> {
    match args.get(key)? {
        Value::String(s) => Some(s.clone()),
        v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string()),
        _ => None,
    }
}

fn pretend() -> Value {
    json!({"testing": {"old": "Unchanged", "new": "Something pretended to change"}})
}

/// The function's own outcome, before any `mod_watch`.
fn function(fun: &str, args: &Map<String, Value>, test: bool) -> Option<StateOutcome> {
    let comment = |default: &str| text(args, "comment").unwrap_or_else(|| default.to_string());
    Some(match fun {
        "nop" | "succeed_without_changes" => StateOutcome::ok(comment("Success!")),
        "succeed_with_changes" if test => StateOutcome::would(
            "If we weren't testing, this would be successful with changes",
            pretend(),
        ),
        "succeed_with_changes" => StateOutcome::changed(comment("Success!"), pretend()),
        "fail_without_changes" if test => {
            StateOutcome::fail("If we weren't testing, this would be a failure!")
        }
        "fail_without_changes" => StateOutcome::fail(comment("Failure!")),
        "fail_with_changes" if test => StateOutcome::would(
            "If we weren't testing, this would be failed with changes",
            pretend(),
        ),
        "fail_with_changes" => StateOutcome::fail_with(comment("Failure!"), pretend()),
        "show_notification" => StateOutcome::ok(text(args, "text").unwrap_or_default()),
        "configurable_test_state" => configurable(args, test),
        _ => return None,
    })
}

/// `mod_watch` of every `test` state.
fn watch(test: bool) -> StateOutcome {
    if test {
        return StateOutcome::would("Watch statement would fire.", json!({"watch": true}));
    }
    StateOutcome::changed("Watch statement fired.", json!({"watch": true}))
}

/// `changes: True|False|Random`, `result: True|False|Random`, `comment`,
/// `warnings`: Salt's knob for any outcome. "Random" is taken as True:
/// tests here must be deterministic.
fn configurable(args: &Map<String, Value>, test: bool) -> StateOutcome {
    let truthy = |k: &str, d: bool| match text(args, k).map(|s| s.to_ascii_lowercase()) {
        None => d,
        Some(s) => matches!(s.as_str(), "true" | "yes" | "1" | "on" | "random"),
    };
    let changes = truthy("changes", true);
    let result = truthy("result", true);
    let comment = text(args, "comment").unwrap_or_default();
    let ch = if changes { pretend() } else { json!({}) };
    if test {
        return StateOutcome {
            skip_watch: false,
            result: if changes { None } else { Some(result) },
            comment: if comment.is_empty() {
                "This is a test".into()
            } else {
                comment
            },
            changes: ch,
        };
    }
    StateOutcome {
        skip_watch: false,
        result: Some(result),
        comment,
        changes: ch,
    }
}

/// Every function of the table: [`outcome`] of the chunk's function.
fn run(c: &StateCall<'_>) -> StateOutcome {
    function(c.chunk.fun(), &c.args, c.test()).unwrap_or_else(|| {
        StateOutcome::fail(format!("'test.{}' is not available.", c.chunk.fun()))
    })
}

/// Every function's `mod_watch`.
fn watched(c: &StateCall<'_>) -> StateOutcome {
    watch(c.test())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn outcome_is_salts_test_states() {
        let none = Map::new();
        let ok = outcome("test.nop", "x", &none, false, false).unwrap();
        assert_eq!((ok.result, ok.comment.as_str()), (Some(true), "Success!"));
        let ch = outcome("succeed_with_changes", "x", &none, false, false).unwrap();
        assert_eq!(ch.result, Some(true));
        assert_eq!(
            ch.changes["testing"]["new"],
            "Something pretended to change"
        );
        let t = outcome("succeed_with_changes", "x", &none, true, false).unwrap();
        assert_eq!(t.result, None);
        let f = outcome(
            "fail_without_changes",
            "x",
            &args(json!({"comment": 3})),
            false,
            false,
        )
        .unwrap();
        assert_eq!((f.result, f.comment.as_str()), (Some(false), "3"));
        assert!(outcome("bogus", "x", &none, false, false).is_none());
    }

    #[test]
    fn watch_fires_only_after_a_quiet_success() {
        let none = Map::new();
        let w = outcome("nop", "x", &none, false, true).unwrap();
        assert_eq!(w.comment, "Watch statement fired.");
        assert_eq!(w.changes, json!({"watch": true}));
        let wt = outcome("nop", "x", &none, true, true).unwrap();
        assert_eq!(
            (wt.result, wt.comment.as_str()),
            (None, "Watch statement would fire.")
        );
        // Changes of its own: the watch does not fire again.
        let c = outcome("succeed_with_changes", "x", &none, false, true).unwrap();
        assert_eq!(c.changes, pretend());
        // A failure stays a failure.
        let f = outcome("fail_without_changes", "x", &none, false, true).unwrap();
        assert_eq!(f.result, Some(false));
    }
}
