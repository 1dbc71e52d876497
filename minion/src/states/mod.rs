//! State modules: the functions a low chunk names (`file.managed`,
//! `pkg.installed`, `service.running`...), run by the scheduler of
//! [`crate::state`] through [`execute`].
//!
//! A state function is synchronous: a state run happens on one blocking
//! thread (`spawn_blocking`), in order, and a function that needs the
//! master (a `salt://` source) or a command waits on it with
//! [`StateCall::block_on`]. Every function is idempotent: it first looks at
//! the system, returns `result: True` with no changes when the system is
//! already as asked, and in test mode (`StateCall::test`) returns
//! `result: None` with the changes it would make and changes nothing.
//!
//! When a `watch`ed state changed, [`execute`] runs the function first and
//! then, if the function itself changed nothing, the module's `mod_watch`
//! (Salt's rule: a service that was just started is not restarted again).

use crate::exec::{Ctx, Outcome, Registry};
use crate::state::{LowChunk, RunCtx, StateOutcome};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::future::Future;

pub mod cmd;
pub mod file;
pub mod group;
pub mod module;
pub mod pkg;
pub mod service;
pub mod test;
pub mod user;

#[cfg(test)]
mod golden;

/// A state function's body.
pub type StateFn = fn(&StateCall<'_>) -> StateOutcome;

/// One state function: `module.function`, its body and, for modules that
/// react to `watch` (`service`, `cmd`), what a triggered watch does.
pub struct StateFunction {
    /// `file.managed`.
    pub name: &'static str,
    pub run: StateFn,
    /// Salt's `mod_watch`; `None` when a watch is just a `require`.
    pub mod_watch: Option<StateFn>,
}

/// Everything a state run's functions share: the `state.*` call's context
/// (files, grains, id, cancellation), the execution modules, the runtime
/// to wait on, and the pillar of this run (with a `pillar=` override
/// merged in).
pub struct StateEnv<'a> {
    pub ctx: &'a Ctx,
    pub registry: &'a Registry,
    pub rt: tokio::runtime::Handle,
    pub pillar: Value,
}

impl StateEnv<'_> {
    /// Call an execution function (`module.run`, `salt[...]` in Jinja) with
    /// this run's context; waits on the current thread, which must not be
    /// a runtime worker.
    pub fn call_exec(&self, fun: &str, args: Vec<Value>, kwargs: Map<String, Value>) -> Outcome {
        let ctx = self
            .ctx
            .derive(fun, args, kwargs.into_iter().collect::<BTreeMap<_, _>>());
        self.rt.block_on(self.registry.call(ctx))
    }
}

/// One state function call: the chunk, its arguments, how the scheduler
/// asks to run it, and the run's environment.
pub struct StateCall<'a> {
    pub chunk: &'a LowChunk,
    /// `chunk.args()`: every argument, `name` included.
    pub args: Map<String, Value>,
    pub run: RunCtx,
    pub env: &'a StateEnv<'a>,
}

impl StateCall<'_> {
    /// Salt's `__opts__['test']` for this call.
    pub fn test(&self) -> bool {
        self.run.test
    }

    /// The state's `name`.
    pub fn name(&self) -> &str {
        self.chunk.name()
    }

    /// An argument, `None` when absent or null.
    pub fn arg(&self, key: &str) -> Option<&Value> {
        self.args.get(key).filter(|v| !v.is_null())
    }

    /// A string argument; numbers and booleans are taken as their text.
    pub fn str_arg(&self, key: &str) -> Option<String> {
        match self.arg(key)? {
            Value::String(s) => Some(s.clone()),
            v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string()),
            _ => None,
        }
    }

    /// A boolean argument with Salt's truthy strings.
    pub fn bool_arg(&self, key: &str, default: bool) -> bool {
        match self.arg(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
            Some(Value::String(s)) => {
                matches!(s.to_ascii_lowercase().as_str(), "true" | "yes" | "1" | "on")
            }
            Some(_) => default,
        }
    }

    /// A list argument: a YAML list, or one scalar as a one-item list
    /// (Salt accepts `pkgs: foo` and a comma list where it takes names).
    pub fn list_arg(&self, key: &str) -> Vec<Value> {
        match self.arg(key) {
            None => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(v) => vec![v.clone()],
        }
    }

    /// The saltenv of this chunk (`__env__`, `base` when unset).
    pub fn saltenv(&self) -> String {
        match self.str_arg("saltenv") {
            Some(s) if !s.is_empty() => s,
            _ if !self.chunk.env().is_empty() => self.chunk.env().to_string(),
            _ => "base".to_string(),
        }
    }

    /// Wait for `fut` on this (blocking) thread.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.env.rt.block_on(fut)
    }

    /// Call an execution function ([`StateEnv::call_exec`]).
    pub fn call_exec(&self, fun: &str, args: Vec<Value>, kwargs: Map<String, Value>) -> Outcome {
        self.env.call_exec(fun, args, kwargs)
    }
}

impl StateOutcome {
    /// Nothing to do: the system is already as asked.
    pub fn ok(comment: impl Into<String>) -> Self {
        Self {
            skip_watch: false,
            result: Some(true),
            comment: comment.into(),
            changes: Value::Object(Map::new()),
        }
    }

    /// Changes were made.
    pub fn changed(comment: impl Into<String>, changes: Value) -> Self {
        Self {
            skip_watch: false,
            result: Some(true),
            comment: comment.into(),
            changes,
        }
    }

    /// Test mode: this would change (`result: None`, the changes it would
    /// make).
    pub fn would(comment: impl Into<String>, changes: Value) -> Self {
        Self {
            skip_watch: false,
            result: None,
            comment: comment.into(),
            changes,
        }
    }

    /// The state failed.
    pub fn fail(comment: impl Into<String>) -> Self {
        Self {
            skip_watch: false,
            result: Some(false),
            comment: comment.into(),
            changes: Value::Object(Map::new()),
        }
    }

    /// The state failed after making some changes.
    pub fn fail_with(comment: impl Into<String>, changes: Value) -> Self {
        Self {
            skip_watch: false,
            result: Some(false),
            comment: comment.into(),
            changes,
        }
    }
}

/// Every state function by `module.function`.
pub fn table() -> BTreeMap<&'static str, &'static StateFunction> {
    let tables: &[&'static [StateFunction]] = &[
        cmd::FUNCTIONS,
        file::FUNCTIONS,
        group::FUNCTIONS,
        module::FUNCTIONS,
        pkg::FUNCTIONS,
        service::FUNCTIONS,
        test::FUNCTIONS,
        user::FUNCTIONS,
    ];
    tables
        .iter()
        .flat_map(|t| t.iter())
        .map(|f| (f.name, f))
        .collect()
}

/// Run one chunk: look its function up, run it (and `mod_watch` when a
/// watch fired), and turn a missing function into Salt's error. Never
/// panics on a chunk: a function that panics fails its state with the
/// panic message.
pub fn execute(
    table: &BTreeMap<&'static str, &'static StateFunction>,
    env: &StateEnv<'_>,
    chunk: &LowChunk,
    run: RunCtx,
) -> StateOutcome {
    let key = format!("{}.{}", chunk.state(), chunk.fun());
    let Some(f) = table.get(key.as_str()).copied() else {
        let module_known = table
            .keys()
            .any(|k| k.split('.').next() == Some(chunk.state()));
        return StateOutcome::fail(if module_known {
            format!(
                "State '{key}' was not found in SLS '{}'\nReason: '{key}' is not available.",
                chunk.sls()
            )
        } else {
            format!(
                "State '{key}' was not found in SLS '{}'\nReason: '{}' __virtual__ returned False",
                chunk.sls(),
                chunk.state()
            )
        });
    };
    let call = StateCall {
        chunk,
        args: chunk.args(),
        run,
        env,
    };
    let guarded = |body: StateFn| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&call))).unwrap_or_else(|p| {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(state = %key, id = chunk.id(), "state function panicked: {why}");
            StateOutcome::fail(format!("An exception occurred in this state: {why}"))
        })
    };
    let first = guarded(f.run);
    match f.mod_watch {
        Some(watch)
            if run.mod_watch
                && !first.has_changes()
                && !first.skip_watch
                && first.result != Some(false) =>
        {
            guarded(watch)
        }
        _ => first,
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Run a state tree written as SLS text through the real compiler,
    //! scheduler and state modules, with a test context.
    use super::*;
    use crate::state::{compile, run, RunOptions, StateResult};

    /// Compile `sls` (YAML, Jinja-rendered with an empty context, as SLS
    /// `test` of `base`) and run it; `test` is Salt's `test=True`.
    /// Panics on a render or compile error.
    pub async fn apply(sls: &str, test: bool) -> BTreeMap<String, StateResult> {
        let files = crate::exec::testutil::ctx("state.apply", vec![], serde_json::json!({})).files;
        apply_with(sls, test, files, serde_json::json!({})).await
    }

    /// [`apply`] with this file client (a fake master's, in tests of
    /// `salt://` sources) and this pillar.
    pub async fn apply_with(
        sls: &str,
        test: bool,
        files: std::sync::Arc<crate::files::FileClient>,
        pillar: Value,
    ) -> BTreeMap<String, StateResult> {
        let sls = sls.to_string();
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let rendered = brine_common::render::render_sls_text(
                &sls,
                "test.sls",
                &serde_json::json!({}),
                None,
            )
            .expect("render");
            let Value::Object(mut high) = rendered.load().expect("load") else {
                panic!("not a mapping")
            };
            for (_, body) in high.iter_mut() {
                if let Value::Object(b) = body {
                    b.insert("__sls__".into(), "test".into());
                    b.insert("__env__".into(), "base".into());
                }
            }
            let low = compile(&high, &rendered.key_order()).expect("compile");
            let mut ctx = crate::exec::testutil::ctx("state.apply", vec![], serde_json::json!({}));
            ctx.files = files;
            let registry = Registry::new();
            let env = StateEnv {
                ctx: &ctx,
                registry: &registry,
                rt,
                pillar,
            };
            let table = table();
            run(
                &low,
                RunOptions {
                    test,
                    failhard: false,
                },
                &mut |chunk, rc| execute(&table, &env, chunk, rc),
            )
        })
        .await
        .expect("state run thread")
    }

    /// The one result of a run of one state.
    pub fn only(results: &BTreeMap<String, StateResult>) -> &StateResult {
        assert_eq!(results.len(), 1, "{results:?}");
        results.values().next().expect("one result")
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{apply, only};
    use serde_json::json;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_states_and_watch() {
        let r = apply(
            "a:\n  test.succeed_with_changes: []\nb:\n  test.nop:\n    - watch:\n      - test: a\nc:\n  test.fail_without_changes:\n    - comment: nope\n",
            false,
        )
        .await;
        let a = &r["test_|-a_|-a_|-succeed_with_changes"];
        assert_eq!(a.result, Some(true));
        assert_eq!(a.changes["testing"]["old"], "Unchanged");
        let b = &r["test_|-b_|-b_|-nop"];
        assert_eq!(b.comment, "Watch statement fired.");
        assert_eq!(b.changes, json!({"watch": true}));
        let c = &r["test_|-c_|-c_|-fail_without_changes"];
        assert_eq!((c.result, c.comment.as_str()), (Some(false), "nope"));

        let t = apply("a:\n  test.succeed_with_changes: []\n", true).await;
        assert_eq!(only(&t).result, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_state_function_fails_like_salt() {
        let r = apply("a:\n  test.bogus: []\nb:\n  nosuch.thing: []\n", false).await;
        let a = &r["test_|-a_|-a_|-bogus"];
        assert_eq!(a.result, Some(false));
        assert!(
            a.comment.contains("'test.bogus' is not available"),
            "{}",
            a.comment
        );
        let b = &r["nosuch_|-b_|-b_|-thing"];
        assert!(
            b.comment.contains("__virtual__ returned False"),
            "{}",
            b.comment
        );
    }
}
