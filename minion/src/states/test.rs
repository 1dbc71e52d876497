//! Salt's `test` state module: states that succeed or fail on demand,
//! for trying requisites, outputters and pipelines without touching the
//! system.

use super::{StateCall, StateFunction};
use crate::state::StateOutcome;
use serde_json::{json, Value};

pub const FUNCTIONS: &[StateFunction] = &[
    StateFunction {
        name: "test.nop",
        run: succeed_without_changes,
        mod_watch: Some(watched),
    },
    StateFunction {
        name: "test.succeed_without_changes",
        run: succeed_without_changes,
        mod_watch: Some(watched),
    },
    StateFunction {
        name: "test.succeed_with_changes",
        run: succeed_with_changes,
        mod_watch: Some(watched),
    },
    StateFunction {
        name: "test.fail_without_changes",
        run: fail_without_changes,
        mod_watch: Some(watched),
    },
    StateFunction {
        name: "test.fail_with_changes",
        run: fail_with_changes,
        mod_watch: Some(watched),
    },
    StateFunction {
        name: "test.show_notification",
        run: show_notification,
        mod_watch: Some(watched),
    },
    StateFunction {
        name: "test.configurable_test_state",
        run: configurable_test_state,
        mod_watch: Some(watched),
    },
];

fn comment(c: &StateCall<'_>, default: &str) -> String {
    c.str_arg("comment").unwrap_or_else(|| default.to_string())
}

fn pretend() -> Value {
    json!({"testing": {"old": "Unchanged", "new": "Something pretended to change"}})
}

fn succeed_without_changes(c: &StateCall<'_>) -> StateOutcome {
    StateOutcome::ok(comment(c, "Success!"))
}

fn succeed_with_changes(c: &StateCall<'_>) -> StateOutcome {
    if c.test() {
        return StateOutcome::would(
            "If we weren't testing, this would be successful with changes",
            pretend(),
        );
    }
    StateOutcome::changed(comment(c, "Success!"), pretend())
}

fn fail_without_changes(c: &StateCall<'_>) -> StateOutcome {
    if c.test() {
        return StateOutcome::fail("If we weren't testing, this would be a failure!");
    }
    StateOutcome::fail(comment(c, "Failure!"))
}

fn fail_with_changes(c: &StateCall<'_>) -> StateOutcome {
    if c.test() {
        return StateOutcome::would(
            "If we weren't testing, this would be failed with changes",
            pretend(),
        );
    }
    StateOutcome::fail_with(comment(c, "Failure!"), pretend())
}

fn show_notification(c: &StateCall<'_>) -> StateOutcome {
    StateOutcome::ok(c.str_arg("text").unwrap_or_default())
}

fn watched(c: &StateCall<'_>) -> StateOutcome {
    if c.test() {
        return StateOutcome::would("Watch statement would fire.", json!({"watch": true}));
    }
    StateOutcome::changed("Watch statement fired.", json!({"watch": true}))
}

/// `changes: True|False|Random`, `result: True|False|Random`, `comment`,
/// `warnings`: Salt's knob for any outcome. "Random" is taken as True:
/// tests here must be deterministic.
fn configurable_test_state(c: &StateCall<'_>) -> StateOutcome {
    let truthy = |k: &str, d: bool| match c.str_arg(k).map(|s| s.to_ascii_lowercase()) {
        None => d,
        Some(s) => matches!(s.as_str(), "true" | "yes" | "1" | "on" | "random"),
    };
    let changes = truthy("changes", true);
    let result = truthy("result", true);
    let text = comment(c, "");
    let ch = if changes { pretend() } else { json!({}) };
    if c.test() {
        return StateOutcome {
            result: if changes { None } else { Some(result) },
            comment: if text.is_empty() {
                "This is a test".into()
            } else {
                text
            },
            changes: ch,
        };
    }
    StateOutcome {
        result: Some(result),
        comment: text,
        changes: ch,
    }
}
