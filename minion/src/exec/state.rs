//! Salt's `state` execution module: `state.apply`, `highstate`, `sls`,
//! `sls_id`, `single`, `test`, the `show_*` views and `state.running`.
//!
//! A run gathers its high data from the master's file server
//! ([`crate::sls`]), compiles it ([`crate::state::compile`]) and runs the
//! chunks in order through the state modules ([`crate::states`]), all on
//! one blocking thread. Invariants:
//! - one state run at a time per minion: a second one is refused with
//!   Salt's "The function ... is running as PID ..." message (retcode 1)
//!   unless it says `queue=True`, then it waits its turn;
//! - `test=True` reaches every state module, which changes nothing;
//! - a run whose data failed to compile runs nothing and returns Salt's
//!   list of errors with retcode 1; a run with a failed state has retcode
//!   2 (Salt's `EX_STATE_FAILURE`), else 0.

use super::{opt, req, Call, CallFuture, Ctx, ExecError, Function, Outcome, Registry};
use crate::sls::{Gather, Minion, SlsFiles};
use crate::state::{compile, run, Lowstate, RunOptions, StateResult};
use crate::states::{self, StateEnv};
use brine_common::proto::ListKind;
use brine_common::render::Functions;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Retcode of a run whose data did not compile (Salt's
/// `EX_STATE_COMPILER_ERROR`).
pub const RETCODE_COMPILE: i32 = 1;
/// Retcode of a run with a failed state (Salt's `EX_STATE_FAILURE`).
pub const RETCODE_FAILED: i32 = 2;
/// Retcode of a run refused because the pillar has render errors
/// (Salt's `EX_PILLAR_FAILURE`).
pub const RETCODE_PILLAR: i32 = 5;

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "state.apply",
        params: &[opt("mods")],
        varargs: false,
        kwargs: true,
        doc: "Apply states: with no SLS names, the highstate (what the top file assigns\n\
              this minion); with names (``web,db`` or a list), those SLS files.\n\n\
              Options: ``test=True`` (report, change nothing), ``saltenv=``, ``pillar='{...}'``,\n\
              ``queue=True``, ``exclude=``, ``failhard=True``.\n\n\
              CLI Example:\n\n    salt '*' state.apply\n    salt '*' state.apply web,db test=True\n",
        handler: apply,
    },
    Function {
        name: "state.highstate",
        params: &[],
        varargs: false,
        kwargs: true,
        doc: "Apply the highstate: every SLS the top files assign this minion.\n\n\
              CLI Example:\n\n    salt '*' state.highstate\n    salt '*' state.highstate test=True\n",
        handler: highstate,
    },
    Function {
        name: "state.sls",
        params: &[req("mods")],
        varargs: false,
        kwargs: true,
        doc: "Apply the named SLS files (``web,db`` or a list).\n\n\
              CLI Example:\n\n    salt '*' state.sls web\n    salt '*' state.sls web,db saltenv=dev test=True\n",
        handler: sls,
    },
    Function {
        name: "state.sls_id",
        params: &[req("id_"), req("mods")],
        varargs: false,
        kwargs: true,
        doc: "Apply one id of the named SLS files (its requisites are not run).\n\n\
              CLI Example:\n\n    salt '*' state.sls_id nginx web\n",
        handler: sls_id,
    },
    Function {
        name: "state.single",
        params: &[req("fun"), opt("name")],
        varargs: false,
        kwargs: true,
        doc: "Run one state function with its arguments as keyword arguments.\n\n\
              CLI Example:\n\n    salt '*' state.single pkg.installed name=vim\n    \
              salt '*' state.single file.managed /etc/motd contents='hi'\n",
        handler: single,
    },
    Function {
        name: "state.test",
        params: &[opt("mods")],
        varargs: false,
        kwargs: true,
        doc: "``state.apply`` with ``test=True``: report what would change.\n\n\
              CLI Example:\n\n    salt '*' state.test\n    salt '*' state.test web\n",
        handler: test,
    },
    Function {
        name: "state.show_sls",
        params: &[req("mods")],
        varargs: false,
        kwargs: true,
        doc: "The high data of the named SLS files, rendered, not run.\n\n\
              CLI Example:\n\n    salt '*' state.show_sls web\n",
        handler: show_sls,
    },
    Function {
        name: "state.show_top",
        params: &[],
        varargs: false,
        kwargs: true,
        doc: "The SLS names the top files assign this minion, per saltenv.\n\n\
              CLI Example:\n\n    salt '*' state.show_top\n",
        handler: show_top,
    },
    Function {
        name: "state.show_highstate",
        params: &[],
        varargs: false,
        kwargs: true,
        doc: "The high data of the highstate, rendered, not run.\n\n\
              CLI Example:\n\n    salt '*' state.show_highstate\n",
        handler: show_highstate,
    },
    Function {
        name: "state.show_lowstate",
        params: &[],
        varargs: false,
        kwargs: true,
        doc: "The highstate compiled to low chunks, in run order, not run.\n\n\
              CLI Example:\n\n    salt '*' state.show_lowstate\n",
        handler: show_lowstate,
    },
    Function {
        name: "state.show_low_sls",
        params: &[req("mods")],
        varargs: false,
        kwargs: true,
        doc: "The named SLS files compiled to low chunks, not run.\n\n\
              CLI Example:\n\n    salt '*' state.show_low_sls web\n",
        handler: show_low_sls,
    },
    Function {
        name: "state.running",
        params: &[opt("concurrent")],
        varargs: false,
        kwargs: false,
        doc: "The state runs in progress on this minion, as Salt's messages (empty when none).\n\n\
              CLI Example:\n\n    salt '*' state.running\n",
        handler: running,
    },
];

/// The state run in progress: its function, jid and start (for the
/// "already running" message), and the lock runs take in turn.
struct Runs {
    lock: tokio::sync::Mutex<()>,
    current: Mutex<Option<(String, String)>>,
}

static RUNS: std::sync::LazyLock<Runs> = std::sync::LazyLock::new(|| Runs {
    lock: tokio::sync::Mutex::new(()),
    current: Mutex::new(None),
});

/// Salt's message for a run that is in progress.
fn busy_message(fun: &str, jid: &str) -> String {
    let started = jid_time(jid);
    format!(
        "The function \"{fun}\" is running as PID {} and was started at {started} with jid {jid}",
        std::process::id()
    )
}

/// `YYYY, Mon DD HH:MM:SS.ffffff` from a jid, as Salt prints start times.
fn jid_time(jid: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    if jid.len() < 20 || !jid.bytes().all(|b| b.is_ascii_digit()) {
        return jid.to_string();
    }
    let month = jid[4..6].parse::<usize>().unwrap_or(1).clamp(1, 12);
    format!(
        "{}, {} {} {}:{}:{}.{}",
        &jid[0..4],
        MONTHS[month - 1],
        &jid[6..8],
        &jid[8..10],
        &jid[10..12],
        &jid[12..14],
        &jid[14..20]
    )
}

/// What a run does.
#[derive(Debug, Clone)]
enum Job {
    /// The highstate.
    High,
    /// These SLS names.
    Sls(Vec<String>),
    /// One id of these SLS names.
    SlsId(String, Vec<String>),
    /// One state function.
    Single(String, Map<String, Value>),
}

/// What the caller wants back.
#[derive(Debug, Clone, Copy, PartialEq)]
enum View {
    Run,
    High,
    Low,
    Top,
}

/// The run options from the call's arguments.
struct Opts {
    test: bool,
    saltenv: Option<String>,
    pillar: Option<Value>,
    queue: bool,
    exclude: Vec<Value>,
    failhard: bool,
}

fn opts(c: &Call<'_>, force_test: bool) -> Result<Opts, ExecError> {
    let kw = &c.args.kwargs;
    let truthy = |k: &str| c.kwarg_bool(k, false);
    let pillar = match kw.get("pillar") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Some(v),
            _ => return Err(ExecError::Execution(
                "Pillar data must be formatted as a dictionary, unless pillar_enc is specified."
                    .into(),
            )),
        },
        Some(_) => {
            return Err(ExecError::Execution(
                "Pillar data must be formatted as a dictionary, unless pillar_enc is specified."
                    .into(),
            ))
        }
    };
    let exclude = match kw.get("exclude") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| json!(s))
            .collect(),
        Some(Value::Array(a)) => a.clone(),
        Some(other) => vec![other.clone()],
    };
    let saltenv = match kw.get("saltenv").or_else(|| kw.get("env")) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    Ok(Opts {
        test: force_test || truthy("test")?,
        saltenv,
        pillar,
        queue: truthy("queue")?,
        exclude,
        failhard: truthy("failhard")?,
    })
}

/// `web,db` or `[web, db]` → names.
fn mods_of(v: Option<&Value>) -> Vec<String> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Some(other) => vec![other.to_string()],
    }
}

fn apply<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(apply_mods(c, false))
}

/// `state.apply`/`state.test`: the highstate, or the named SLS.
async fn apply_mods(c: &Call<'_>, test: bool) -> Result<Outcome, ExecError> {
    let mods = mods_of(c.arg("mods"));
    let job = if mods.is_empty() {
        Job::High
    } else {
        Job::Sls(mods)
    };
    state_run(c, job, View::Run, test).await
}

fn highstate<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(state_run(c, Job::High, View::Run, false))
}

fn sls<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let mods = mods_of(c.arg("mods"));
        state_run(c, Job::Sls(mods), View::Run, false).await
    })
}

fn sls_id<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let id = c.str_arg("id_")?.unwrap_or_default();
        let mods = mods_of(c.arg("mods"));
        state_run(c, Job::SlsId(id, mods), View::Run, false).await
    })
}

fn single<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let fun = c.str_arg("fun")?.unwrap_or_default();
        if fun.split('.').count() != 2 {
            return Err(ExecError::InvalidArgs(format!(
                "Invalid function passed: '{fun}' (module.function)"
            )));
        }
        let mut args: Map<String, Value> = c
            .args
            .kwargs
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "test" | "queue" | "pillar" | "saltenv"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(n) = c.arg("name") {
            args.insert("name".into(), n.clone());
        }
        if !args.contains_key("name") {
            return Err(ExecError::InvalidArgs("single() needs a name".into()));
        }
        state_run(c, Job::Single(fun, args), View::Run, false).await
    })
}

fn test<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(apply_mods(c, true))
}

fn show_sls<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let mods = mods_of(c.arg("mods"));
        state_run(c, Job::Sls(mods), View::High, false).await
    })
}

fn show_low_sls<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let mods = mods_of(c.arg("mods"));
        state_run(c, Job::Sls(mods), View::Low, false).await
    })
}

fn show_top<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(state_run(c, Job::High, View::Top, false))
}

fn show_highstate<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(state_run(c, Job::High, View::High, false))
}

fn show_lowstate<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(state_run(c, Job::High, View::Low, false))
}

fn running<'a>(_c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let cur = brine_common::sync::lock(&RUNS.current).clone();
        Ok(Outcome::ok(match cur {
            Some((fun, jid)) => json!([busy_message(&fun, &jid)]),
            None => json!([]),
        }))
    })
}

/// Salt's recursive dict merge (a `pillar=` override over the pillar).
fn merge(dest: &mut Value, upd: &Value) {
    match (dest, upd) {
        (Value::Object(d), Value::Object(u)) => {
            for (k, v) in u {
                match d.get_mut(k) {
                    Some(old @ Value::Object(_)) if v.is_object() => merge(old, v),
                    _ => {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (d, u) => *d = u.clone(),
    }
}

/// Run (or show) `job`: take the run lock (unless only showing), gather,
/// compile and run on a blocking thread.
async fn state_run(
    c: &Call<'_>,
    job: Job,
    view: View,
    force_test: bool,
) -> Result<Outcome, ExecError> {
    let o = opts(c, force_test)?;
    let _turn = if view == View::Run {
        let guard = if o.queue {
            RUNS.lock.lock().await
        } else {
            match RUNS.lock.try_lock() {
                Ok(g) => g,
                Err(_) => {
                    let cur = brine_common::sync::lock(&RUNS.current).clone();
                    let msg = match cur {
                        Some((fun, jid)) => busy_message(&fun, &jid),
                        None => "Another state run is in progress".into(),
                    };
                    return Ok(Outcome::with_retcode(json!([msg]), RETCODE_COMPILE));
                }
            }
        };
        *brine_common::sync::lock(&RUNS.current) = Some((c.ctx.fun.clone(), c.ctx.jid.to_string()));
        Some(CurrentGuard(guard))
    } else {
        None
    };
    if !c.ctx.pillar.loaded() && c.ctx.files.has_master() {
        // The daemon fetches pillar at start; a failure there is retried
        // here so templates see it (and its absence is logged, not fatal).
        if let Err(e) = c.ctx.pillar.refresh().await {
            tracing::warn!(error = %e, "state run without pillar: fetching it failed");
        }
    }
    let mut pillar = c.ctx.pillar.snapshot();
    if !pillar.is_object() {
        pillar = json!({});
    }
    if let Some(over) = &o.pillar {
        merge(&mut pillar, over);
    }
    if let (View::Run, Some(Value::Array(errors))) = (view, pillar.get("_errors")) {
        // Salt refuses to apply states with a pillar that did not render:
        // the states would see data that is not there.
        let mut list = vec![json!(
            "Pillar failed to render with the following messages:"
        )];
        list.extend(errors.iter().cloned());
        return Ok(Outcome::with_retcode(Value::Array(list), RETCODE_PILLAR));
    }
    let ctx = c.ctx.derive(&c.ctx.fun, Vec::new(), BTreeMap::new());
    let rt = tokio::runtime::Handle::current();
    let saltenv = o.saltenv.clone();
    let default_env = c.ctx.saltenv.clone().unwrap_or_else(|| "base".into());
    let (test, exclude, failhard) = (o.test, o.exclude.clone(), o.failhard);
    tokio::task::spawn_blocking(move || {
        blocking_run(BlockingRun {
            ctx,
            rt,
            pillar,
            job,
            view,
            saltenv,
            default_env,
            test,
            exclude,
            failhard,
        })
    })
    .await
    .map_err(|e| ExecError::Execution(format!("state run thread failed: {e}")))
}

/// Clears "the run in progress" when the run's lock is released.
struct CurrentGuard(#[allow(dead_code)] tokio::sync::MutexGuard<'static, ()>);

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        *brine_common::sync::lock(&RUNS.current) = None;
    }
}

struct BlockingRun {
    ctx: Ctx,
    rt: tokio::runtime::Handle,
    pillar: Value,
    job: Job,
    view: View,
    saltenv: Option<String>,
    default_env: String,
    test: bool,
    exclude: Vec<Value>,
    failhard: bool,
}

/// The file server through the minion's file client, waited on from the
/// run's thread.
struct MasterSls {
    files: Arc<crate::files::FileClient>,
    rt: tokio::runtime::Handle,
}

impl SlsFiles for MasterSls {
    fn read(&self, env: &str, path: &str) -> Result<Option<String>, String> {
        let got = self
            .rt
            .block_on(self.files.cache_file(env, path))
            .map_err(|e| e.to_string())?;
        match got {
            None => Ok(None),
            Some(p) => std::fs::read_to_string(&p)
                .map(Some)
                .map_err(|e| format!("{}: {e}", p.display())),
        }
    }
    fn list(&self, env: &str) -> Result<Vec<String>, String> {
        self.rt
            .block_on(self.files.list(env, "", ListKind::Files))
            .map_err(|e| e.to_string())
    }
    fn envs(&self) -> Result<Vec<String>, String> {
        self.rt
            .block_on(self.files.list("", "", ListKind::Envs))
            .map_err(|e| e.to_string())
    }
}

/// Execution functions for templates (`salt['cmd.run'](...)`).
struct TemplateFunctions {
    ctx: Ctx,
    rt: tokio::runtime::Handle,
}

impl Functions for TemplateFunctions {
    fn call(
        &self,
        fun: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Value, String> {
        let registry = Registry::new();
        let out = self.rt.block_on(registry.call(self.ctx.derive(
            fun,
            args,
            kwargs.into_iter().collect(),
        )));
        match &out.ret {
            _ if out.retcode == super::RETCODE_NOT_AVAILABLE => {
                Err(format!("'{fun}' is not available."))
            }
            Value::String(s)
                if !out.success
                    && (s.starts_with("ERROR: ") || s.starts_with("Passed invalid arguments")) =>
            {
                Err(s.clone())
            }
            _ => Ok(out.ret),
        }
    }
    fn has(&self, fun: &str) -> bool {
        Registry::new().doc(fun).is_some()
    }
}

fn blocking_run(r: BlockingRun) -> Outcome {
    let files: Arc<dyn SlsFiles> = Arc::new(MasterSls {
        files: r.ctx.files.clone(),
        rt: r.rt.clone(),
    });
    let functions: Arc<dyn Functions> = Arc::new(TemplateFunctions {
        ctx: r.ctx.derive("", Vec::new(), BTreeMap::new()),
        rt: r.rt.clone(),
    });
    let grains = brine_common::sync::read(&r.ctx.grains).clone();
    let opts = json!({
        "id": r.ctx.id,
        "saltenv": r.saltenv,
        "test": r.test,
        "file_client": "remote",
    });
    let minion = Minion {
        id: &r.ctx.id,
        grains: &grains,
        pillar: &r.pillar,
        opts: &opts,
    };
    let mut g = Gather::new(files, Some(functions), minion);
    let mut wanted_id = None;
    match &r.job {
        Job::High => {
            let matches = g.top(r.saltenv.as_deref());
            if r.view == View::Top {
                let high = g.finish(&[]);
                if !high.errors.is_empty() {
                    return compile_errors(high.errors);
                }
                return Outcome::ok(brine_common::render::top::Top::to_show(&matches));
            }
            for (env, names) in &matches {
                for n in names {
                    g.sls(env, n);
                }
            }
            if matches.is_empty() && r.view == View::Run {
                let high = g.finish(&[]);
                if !high.errors.is_empty() {
                    return compile_errors(high.errors);
                }
                return no_top_match();
            }
        }
        Job::Sls(mods) | Job::SlsId(_, mods) => {
            let env = r.saltenv.clone().unwrap_or_else(|| r.default_env.clone());
            for m in mods {
                g.sls(&env, m);
            }
            if let Job::SlsId(id, _) = &r.job {
                wanted_id = Some(id.clone());
            }
        }
        Job::Single(fun, args) => {
            let high = single_high(fun, args, r.saltenv.as_deref().unwrap_or(&r.default_env));
            drop(g);
            return finish_run(&r, high.0, &high.1, None);
        }
    }
    let high = g.finish(&r.exclude);
    if !high.errors.is_empty() {
        return compile_errors(high.errors);
    }
    if r.view == View::High {
        return Outcome::ok(Value::Object(crate::state::show_high(&high.data)));
    }
    finish_run(&r, high.data, &high.order, wanted_id)
}

/// Compile and run (or show the low chunks of) high data.
fn finish_run(
    r: &BlockingRun,
    data: Map<String, Value>,
    order: &[(String, Vec<String>)],
    wanted_id: Option<String>,
) -> Outcome {
    let low = match compile(&data, order) {
        Ok(l) => l,
        Err(errors) => return compile_errors(errors),
    };
    let low = match wanted_id {
        None => low,
        Some(id) => match low.only_id(&id) {
            Some(l) => l,
            None => {
                return compile_errors(vec![format!(
                    "No matches for ID '{id}' found in SLS '{}' within saltenv '{}'",
                    match &r.job {
                        Job::SlsId(_, m) => m.join(","),
                        _ => String::new(),
                    },
                    r.saltenv.as_deref().unwrap_or(&r.default_env)
                )])
            }
        },
    };
    if r.view == View::Low {
        return Outcome::ok(low.to_json());
    }
    let results = execute(r, &low);
    let failed = results.values().any(|s| s.result == Some(false));
    let ret = serde_json::to_value(&results).unwrap_or_else(|_| json!({}));
    Outcome::with_retcode(ret, if failed { RETCODE_FAILED } else { 0 })
}

fn execute(r: &BlockingRun, low: &Lowstate) -> BTreeMap<String, StateResult> {
    let registry = Registry::new();
    let env = StateEnv {
        ctx: &r.ctx,
        registry: &registry,
        rt: r.rt.clone(),
        pillar: r.pillar.clone(),
    };
    let table = states::table();
    let cancel = r.ctx.cancel.clone();
    run(
        low,
        RunOptions {
            test: r.test,
            failhard: r.failhard,
        },
        &mut |chunk, rc| {
            if cancel.is_cancelled() {
                return crate::state::StateOutcome::fail(
                    "The state run was cancelled (saltutil.kill_job)",
                );
            }
            states::execute(&table, &env, chunk, rc)
        },
    )
}

/// Ids in file order, each with its state keys.
type KeyOrder = Vec<(String, Vec<String>)>;

/// `state.single`'s high data: one id named by the state's name.
fn single_high(fun: &str, args: &Map<String, Value>, env: &str) -> (Map<String, Value>, KeyOrder) {
    let name = match args.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let (module, f) = fun.split_once('.').unwrap_or((fun, ""));
    let mut list = vec![json!(f)];
    for (k, v) in args {
        let mut m = Map::new();
        m.insert(k.clone(), v.clone());
        list.push(Value::Object(m));
    }
    let mut body = Map::new();
    body.insert(module.to_string(), Value::Array(list));
    body.insert("__sls__".into(), json!("single"));
    body.insert("__env__".into(), json!(env));
    let mut high = Map::new();
    high.insert(name.clone(), Value::Object(body));
    (high, vec![(name, vec![module.to_string()])])
}

fn compile_errors(errors: Vec<String>) -> Outcome {
    for e in &errors {
        tracing::warn!(error = %e, "state data failed to compile");
    }
    Outcome::with_retcode(json!(errors), RETCODE_COMPILE)
}

/// Salt's answer when no top file matches this minion.
fn no_top_match() -> Outcome {
    Outcome::with_retcode(
        json!({"no_|-states_|-states_|-None": {
            "result": false,
            "comment": "No Top file or master_tops data matches found. Please see master log for details.",
            "name": "No States",
            "changes": {},
            "__run_num__": 0,
        }}),
        RETCODE_FAILED,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(mods_of(Some(&json!("web, db"))), ["web", "db"]);
        assert_eq!(mods_of(Some(&json!(["a"]))), ["a"]);
        assert_eq!(
            jid_time("20261203134512123456"),
            "2026, Dec 03 13:45:12.123456"
        );
        let mut p = json!({"a": {"b": 1, "c": 2}});
        merge(&mut p, &json!({"a": {"b": 3}, "d": 4}));
        assert_eq!(p, json!({"a": {"b": 3, "c": 2}, "d": 4}));
        let (h, o) = single_high(
            "pkg.installed",
            &serde_json::from_value(json!({"name": "vim"})).expect("map"),
            "base",
        );
        assert_eq!(h["vim"]["pkg"], json!(["installed", {"name": "vim"}]));
        assert_eq!(o[0].0, "vim");
    }
}
