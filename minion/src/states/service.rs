//! Salt's `service` state module: `service.running`, `service.dead`,
//! `service.enabled`, `service.disabled`, and `mod_watch` (restart, or
//! reload with `reload: True`, when a watched state changed), on the
//! functions of `crate::exec::service`.
//!
//! The invariant: the service's state is read first and only what differs
//! is changed; test mode reads but never starts, stops, enables or
//! disables; a start or stop is believed only when a fresh status check
//! agrees.

use super::{StateCall, StateFunction};
use crate::exec::service as svc;
use crate::state::StateOutcome;
use serde_json::{json, Map, Value};
use std::time::Duration;

pub const FUNCTIONS: &[StateFunction] = &[
    StateFunction {
        name: "service.running",
        run: running,
        mod_watch: Some(mod_watch),
    },
    StateFunction {
        name: "service.dead",
        run: dead,
        mod_watch: Some(mod_watch),
    },
    StateFunction {
        name: "service.enabled",
        run: enabled,
        mod_watch: Some(mod_watch),
    },
    StateFunction {
        name: "service.disabled",
        run: disabled,
        mod_watch: Some(mod_watch),
    },
];

/// `enable:` as a tri-state: absent means "leave boot alone".
fn enable_arg(c: &StateCall<'_>) -> Option<bool> {
    c.arg("enable").map(|_| c.bool_arg("enable", false))
}

fn init_delay(c: &StateCall<'_>) {
    let secs = match c.arg("init_delay") {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    };
    if secs > 0.0 && secs.is_finite() {
        std::thread::sleep(Duration::from_secs_f64(secs.min(3600.0)));
    }
}

/// How the running state ended, for the enable comments.
#[derive(Clone, Copy)]
enum Started {
    Running,
    Dead,
    /// `service.enabled` / `disabled`: the run state is not ours.
    Either,
}

fn tail(started: Started) -> &'static str {
    match started {
        Started::Running => "and is running",
        Started::Dead => "and is dead",
        Started::Either => "and is in the desired state",
    }
}

/// Salt's `_enable` / `_disable`: bring the boot setting to `want`;
/// `base` is the outcome of the run part, whose changes are kept.
fn set_boot(
    c: &StateCall<'_>,
    name: &str,
    want: bool,
    started: Started,
    base: StateOutcome,
) -> StateOutcome {
    let word = if want { "enabled" } else { "disabled" };
    let now = match svc::enabled(name) {
        Ok(b) => b,
        Err(e) => return StateOutcome::fail(e),
    };
    if now == want {
        return StateOutcome {
            skip_watch: false,
            comment: format!("Service {name} is already {word}, {}", tail(started)),
            ..base
        };
    }
    if c.test() {
        let mut changes = base.changes.as_object().cloned().unwrap_or_default();
        changes.insert(name.to_string(), Value::Bool(true));
        return StateOutcome::would(
            format!("Service {name} set to be {word}"),
            Value::Object(changes),
        );
    }
    let done = if want {
        svc::enable(name)
    } else {
        svc::disable(name)
    };
    let after = svc::enabled(name);
    match (done, after) {
        (Ok(true), Ok(after)) if after == want => {
            let mut changes = base.changes.as_object().cloned().unwrap_or_default();
            changes.insert(name.to_string(), Value::Bool(true));
            StateOutcome {
                skip_watch: false,
                result: base.result,
                comment: format!("Service {name} has been {word}, {}", tail(started)),
                changes: Value::Object(changes),
            }
        }
        (Err(e), _) | (_, Err(e)) => StateOutcome::fail_with(e, base.changes),
        _ => {
            let how = if want { "start" } else { "not start" };
            let comment = match started {
                Started::Running => {
                    format!("Failed when setting service {name} to {how} at boot, but the service is running")
                }
                Started::Dead => {
                    format!("Failed when setting service {name} to {how} at boot, and the service is dead")
                }
                Started::Either => {
                    format!("Failed when setting service {name} to {how} at boot")
                }
            };
            StateOutcome::fail_with(comment, base.changes)
        }
    }
}

/// The named service must exist; in test mode a missing one may be
/// created earlier in the run, as Salt says.
/// For `dead` and `disabled` (`absent_ok`) a missing service already is
/// what was asked: result True.
fn check_available(
    c: &StateCall<'_>,
    name: &str,
    verb: &str,
    absent_ok: bool,
) -> Option<StateOutcome> {
    if let Err(e) = svc::check_name(name) {
        return Some(StateOutcome::fail(e));
    }
    match svc::available(name) {
        Ok(true) => None,
        Ok(false) if absent_ok => Some(StateOutcome::ok(format!(
            "The named service {name} is not available"
        ))),
        Ok(false) if c.test() => Some(StateOutcome::would(
            format!("Service {name} not present; if created in this state run, it would have been {verb}"),
            json!({}),
        )),
        Ok(false) => Some(StateOutcome::fail(format!(
            "The named service {name} is not available"
        ))),
        Err(e) => Some(StateOutcome::fail(e)),
    }
}

/// What `running` and `dead` say and do; they differ only in direction.
struct Toggle {
    /// The service should be up.
    up: bool,
    /// `start` / `stop`.
    verb: &'static str,
    /// `running` / `dead`, for "The service x is already ...".
    state: &'static str,
    /// Test-mode comment after "Service x ".
    test: &'static str,
    /// Failure comment after "Service x ".
    failed: &'static str,
    /// For "not present; ... it would have been ...".
    participle: &'static str,
    started: Started,
}

const RUNNING: Toggle = Toggle {
    up: true,
    verb: "start",
    state: "running",
    test: "is set to start",
    failed: "failed to start",
    participle: "started",
    started: Started::Running,
};

const DEAD: Toggle = Toggle {
    up: false,
    verb: "stop",
    state: "dead",
    test: "is set to be killed",
    failed: "failed to die",
    participle: "stopped",
    started: Started::Dead,
};

fn running(c: &StateCall<'_>) -> StateOutcome {
    toggle(c, &RUNNING)
}

fn dead(c: &StateCall<'_>) -> StateOutcome {
    toggle(c, &DEAD)
}

/// Bring the service up or down (`t`), then its boot setting when
/// `enable` is given.
fn toggle(c: &StateCall<'_>, t: &Toggle) -> StateOutcome {
    let name = c.name().to_string();
    if let Some(o) = check_available(c, &name, t.participle, !t.up) {
        return o;
    }
    let sig = c.str_arg("sig");
    let enable = enable_arg(c);
    let up = match svc::status(&name, sig.as_deref()) {
        Ok(b) => b,
        Err(e) => return StateOutcome::fail(e),
    };
    if up == t.up {
        let base = StateOutcome::ok(format!("The service {name} is already {}", t.state));
        return match enable {
            Some(want) => {
                let out = set_boot(c, &name, want, Started::Either, base.clone());
                if out.has_changes() || out.result != Some(true) {
                    out
                } else {
                    base
                }
            }
            None => base,
        };
    }
    if c.test() {
        return StateOutcome::would(
            format!("Service {name} {}", t.test),
            json!({ name.clone(): true }),
        );
    }
    let done = match svc::action(&name, t.verb) {
        Ok(b) => b,
        Err(e) => return StateOutcome::fail(e),
    };
    init_delay(c);
    let now = svc::status(&name, sig.as_deref()).unwrap_or(!t.up);
    if !done || now != t.up {
        return StateOutcome::fail(format!("Service {name} {}", t.failed));
    }
    let comment = if t.up {
        format!("Started service {name}")
    } else {
        format!("Service {name} was killed")
    };
    let base = StateOutcome::changed(comment, json!({ name.clone(): true }));
    match enable {
        Some(want) => set_boot(c, &name, want, t.started, base),
        None => base,
    }
}

fn enabled(c: &StateCall<'_>) -> StateOutcome {
    boot_only(c, true)
}

fn disabled(c: &StateCall<'_>) -> StateOutcome {
    boot_only(c, false)
}

fn boot_only(c: &StateCall<'_>, want: bool) -> StateOutcome {
    let name = c.name().to_string();
    if let Some(o) = check_available(c, &name, if want { "enabled" } else { "disabled" }, !want) {
        return o;
    }
    set_boot(
        c,
        &name,
        want,
        Started::Either,
        StateOutcome::ok(String::new()),
    )
}

/// Salt's `mod_watch`: for `running`, restart (or reload with `reload:
/// True`, or start when down); for `dead`, stop when up; otherwise the
/// watch cannot be acted on.
fn mod_watch(c: &StateCall<'_>) -> StateOutcome {
    let name = c.name().to_string();
    let sig = c.str_arg("sig");
    let up = match svc::status(&name, sig.as_deref()) {
        Ok(b) => b,
        Err(e) => return StateOutcome::fail(e),
    };
    let (verb, past) = match c.chunk.fun() {
        "dead" if up => ("stop", "stopped"),
        "dead" => return StateOutcome::ok("Service is already stopped"),
        "running" if !up => ("start", "started"),
        "running" if c.bool_arg("reload", false) => ("reload", "reloaded"),
        "running" if c.bool_arg("full_restart", false) => ("full-restart", "fully restarted"),
        "running" => ("restart", "restarted"),
        other => return StateOutcome::fail(format!("Unable to trigger watch for service.{other}")),
    };
    if c.test() {
        return StateOutcome::would(
            format!("Service is set to be {past}"),
            json!({ name.clone(): true }),
        );
    }
    let ok = if verb == "full-restart" {
        svc::action(&name, "stop").and_then(|_| svc::action(&name, "start"))
    } else {
        svc::action(&name, verb)
    };
    let ok = match ok {
        Ok(b) => b,
        Err(e) => return StateOutcome::fail(e),
    };
    init_delay(c);
    let mut changes = Map::new();
    changes.insert(name, Value::Bool(ok));
    if ok {
        StateOutcome::changed(format!("Service {past}"), Value::Object(changes))
    } else {
        StateOutcome::fail_with(
            format!("Failed to {verb} the service"),
            Value::Object(changes),
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::exec::service::testsvc::{TestService, SVC_LOCK};
    use crate::exec::service::{init, Init};
    use crate::states::testutil::{apply, only};
    use serde_json::json;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn running_watch_enabled_disabled_dead_on_a_real_init_script() {
        if init() != Init::SysV {
            eprintln!("systemd host: the SysV test does not apply");
            return;
        }
        let _lock = SVC_LOCK.lock().await;
        let s = TestService::install("s");
        let n = s.name.clone();

        let run = format!("{n}:\n  service.running: []\n");
        let t = apply(&run, true).await;
        let r = only(&t);
        assert_eq!(r.result, None, "{r:?}");
        assert_eq!(r.comment, format!("Service {n} is set to start"));
        assert_eq!(s.pid(), None, "test mode started nothing");

        let t = apply(&run, false).await;
        let r = only(&t);
        assert_eq!(r.result, Some(true), "{r:?}");
        assert_eq!(r.comment, format!("Started service {n}"));
        assert_eq!(r.changes, json!({ n.clone(): true }));
        let pid1 = s.pid().expect("started");

        let t = apply(&run, false).await;
        let r = only(&t);
        assert_eq!(r.comment, format!("The service {n} is already running"));
        assert_eq!(r.changes, json!({}));
        assert_eq!(s.pid(), Some(pid1));

        let quiet = format!(
            "a:\n  test.succeed_without_changes: []\n{n}:\n  service.running:\n    - watch:\n      - test: a\n"
        );
        let t = apply(&quiet, false).await;
        let r = &t[&format!("service_|-{n}_|-{n}_|-running")];
        assert_eq!(r.changes, json!({}), "{r:?}");
        assert_eq!(s.pid(), Some(pid1), "nothing changed: no restart");

        let fired = format!(
            "a:\n  test.succeed_with_changes: []\n{n}:\n  service.running:\n    - watch:\n      - test: a\n"
        );
        let t = apply(&fired, true).await;
        let r = &t[&format!("service_|-{n}_|-{n}_|-running")];
        assert_eq!(r.result, None, "{r:?}");
        assert_eq!(s.pid(), Some(pid1), "test mode restarted nothing");
        let t = apply(&fired, false).await;
        let r = &t[&format!("service_|-{n}_|-{n}_|-running")];
        assert_eq!(
            (r.result, r.comment.as_str()),
            (Some(true), "Service restarted"),
            "{r:?}"
        );
        assert_eq!(r.changes, json!({ n.clone(): true }));
        let pid2 = s.pid().expect("restarted");
        assert_ne!(pid2, pid1);

        let reload = format!(
            "a:\n  test.succeed_with_changes: []\n{n}:\n  service.running:\n    - reload: True\n    - watch:\n      - test: a\n"
        );
        let t = apply(&reload, false).await;
        let r = &t[&format!("service_|-{n}_|-{n}_|-running")];
        assert_eq!(
            (r.result, r.comment.as_str()),
            (Some(true), "Service reloaded"),
            "{r:?}"
        );
        assert_eq!(s.pid(), Some(pid2), "a reload keeps the process");
        assert!(s.reloaded().exists());

        let en = format!("{n}:\n  service.enabled: []\n");
        let t = apply(&en, true).await;
        assert_eq!(only(&t).result, None);
        assert!(s.links().is_empty(), "test mode enabled nothing");
        let t = apply(&en, false).await;
        let r = only(&t);
        assert_eq!(
            r.comment,
            format!("Service {n} has been enabled, and is in the desired state")
        );
        assert_eq!(r.changes, json!({ n.clone(): true }));
        let t = apply(&en, false).await;
        assert_eq!(
            only(&t).comment,
            format!("Service {n} is already enabled, and is in the desired state")
        );
        assert_eq!(only(&t).changes, json!({}));

        let dis = format!("{n}:\n  service.disabled: []\n");
        let t = apply(&dis, false).await;
        assert_eq!(
            only(&t).comment,
            format!("Service {n} has been disabled, and is in the desired state")
        );
        let t = apply(&dis, false).await;
        assert_eq!(only(&t).changes, json!({}));

        let dead = format!("{n}:\n  service.dead:\n    - enable: False\n");
        let t = apply(&dead, true).await;
        assert_eq!(only(&t).result, None);
        assert_eq!(s.pid(), Some(pid2));
        let t = apply(&dead, false).await;
        let r = only(&t);
        assert_eq!(r.result, Some(true), "{r:?}");
        assert_eq!(r.changes, json!({ n.clone(): true }));
        assert_eq!(s.pid(), None);
        let t = apply(&dead, false).await;
        assert_eq!(only(&t).comment, format!("The service {n} is already dead"));
        assert_eq!(only(&t).changes, json!({}));

        let watched_dead = format!(
            "a:\n  test.succeed_with_changes: []\n{n}:\n  service.dead:\n    - watch:\n      - test: a\n"
        );
        let t = apply(&watched_dead, false).await;
        let r = &t[&format!("service_|-{n}_|-{n}_|-dead")];
        assert_eq!(r.result, Some(true), "{r:?}");
        assert_eq!(r.changes, json!({}));
        assert_eq!(s.pid(), None, "a watch on service.dead starts nothing");

        let both = format!("{n}:\n  service.running:\n    - enable: True\n");
        let t = apply(&both, false).await;
        let r = only(&t);
        assert_eq!(
            r.comment,
            format!("Service {n} has been enabled, and is running")
        );
        assert_eq!(r.changes, json!({ n.clone(): true }));
        let stop = format!("{n}:\n  service.dead: []\n");
        apply(&stop, false).await;
        let t = apply(&both, false).await;
        assert_eq!(
            only(&t).comment,
            format!("Service {n} is already enabled, and is running")
        );

        let missing = "brine-test-no-such-service:\n  service.running: []\n";
        let t = apply(missing, false).await;
        assert_eq!(only(&t).result, Some(false));
        assert_eq!(
            only(&t).comment,
            "The named service brine-test-no-such-service is not available"
        );
        let t = apply(missing, true).await;
        assert_eq!(only(&t).result, None);
        let gone = "brine-test-no-such-service:\n  service.dead: []\n";
        let t = apply(gone, false).await;
        assert_eq!(only(&t).result, Some(true));
    }
}
