//! Execution modules: the `module.function` table a job's `fun` names
//! (`test`, `cmd`, `cp`, `grains`, `pillar`, `sys`, `saltutil`, `key`, `file`).
//!
//! [`Registry::call`] looks the function up, binds the job's positional and
//! keyword arguments to the function's declared parameters (as Python would
//! bind them for Salt), runs it and shapes the result like a Salt return.
//! The invariant: a call always ends in an [`Outcome`], never a panic; an
//! unknown function is `'x.y' is not available.` and bad arguments are
//! `Passed invalid arguments to x.y: ...` with the function's docstring.

use brine_common::jid::Jid;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;

pub mod beacons;
pub mod cmd;
pub mod cp;
pub mod disk;
pub mod event;
pub mod file;
pub mod grains;
pub mod group;
pub mod key;
pub mod network;
pub mod pillar;
pub mod pkg;
pub mod saltutil;
pub mod service;
pub mod state;
pub mod status;
pub mod sys;
pub mod system;
pub mod test;
pub mod user;

/// Retcode of a call to a function this minion does not have.
pub const RETCODE_NOT_AVAILABLE: i32 = 254;
/// Retcode of a function that failed or was called wrongly (Salt's
/// `EX_GENERIC`).
pub const RETCODE_ERROR: i32 = 1;

/// Everything one function call may use.
pub struct Ctx {
    pub jid: Jid,
    pub fun: String,
    /// Positional arguments, already typed.
    pub args: Vec<Value>,
    pub kwargs: BTreeMap<String, Value>,
    /// Live grains, shared with the matcher; refresh functions replace them.
    pub grains: Arc<RwLock<Value>>,
    /// `grains:` from the minion config; they win over collected ones.
    pub static_grains: Value,
    /// The grains file (`<config dir>/grains`) `grains.setval` writes;
    /// `None` when the config directory is unknown.
    pub grains_file: Option<PathBuf>,
    /// Minion id.
    pub id: String,
    /// Holds `minion.pem` / `minion.pub` (`key.finger`).
    pub pki_dir: PathBuf,
    pub running: Arc<crate::running::RunningJobs>,
    /// Cancelled by `saltutil.kill_job` or shutdown: stop work, kill children.
    pub cancel: CancellationToken,
    /// Where to tell the master about changes; `None` under `salt-call --local`.
    pub events: Option<tokio::sync::mpsc::UnboundedSender<MinionEvent>>,
    /// The `salt://` file client and the minion's cache, shared by all jobs.
    pub files: Arc<crate::files::FileClient>,
    /// The pillar in memory and how to fetch it again.
    pub pillar: Arc<crate::pillar::Pillar>,
    /// `saltenv` from the minion config (`cmd.script`'s default; `base`
    /// when unset).
    pub saltenv: Option<String>,
    /// The master, for `event.send`; `None` under `salt-call`.
    pub master: Option<Arc<dyn crate::files::Ask>>,
    /// The running beacon config (`beacons.*`), shared with the loop.
    pub beacons: Arc<crate::beacons::Beacons>,
}

impl Ctx {
    /// The context of another call made on behalf of this one (a state's
    /// `module.run`, `salt['cmd.run']` in a template): same jid, minion,
    /// files, pillar and cancellation.
    pub fn derive(&self, fun: &str, args: Vec<Value>, kwargs: BTreeMap<String, Value>) -> Ctx {
        Ctx {
            jid: self.jid.clone(),
            fun: fun.to_string(),
            args,
            kwargs,
            grains: self.grains.clone(),
            static_grains: self.static_grains.clone(),
            grains_file: self.grains_file.clone(),
            id: self.id.clone(),
            pki_dir: self.pki_dir.clone(),
            running: self.running.clone(),
            cancel: self.cancel.clone(),
            events: self.events.clone(),
            files: self.files.clone(),
            pillar: self.pillar.clone(),
            saltenv: self.saltenv.clone(),
            master: self.master.clone(),
            beacons: self.beacons.clone(),
        }
    }
}

/// The outputter a function's return asks for (Salt's `__outputter__`):
/// `highstate` for the state functions that run states.
pub fn outputter(fun: &str) -> Option<&'static str> {
    match fun {
        "state.apply" | "state.highstate" | "state.sls" | "state.sls_id" | "state.single"
        | "state.test" => Some("highstate"),
        _ => None,
    }
}

/// Something the link should tell the master.
#[derive(Debug, Clone, PartialEq)]
pub enum MinionEvent {
    /// Grains were re-collected; the master's roster should take these.
    GrainsChanged(Value),
}

/// The result of one call, as it goes into a return.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ret: Value,
    pub retcode: i32,
    pub success: bool,
}

impl Outcome {
    /// A successful return.
    pub fn ok(ret: Value) -> Self {
        Self {
            ret,
            retcode: 0,
            success: true,
        }
    }

    /// A return whose retcode decides success (Salt's `__context__["retcode"]`).
    pub fn with_retcode(ret: Value, retcode: i32) -> Self {
        Self {
            ret,
            retcode,
            success: retcode == 0,
        }
    }

    fn failed(ret: Value, retcode: i32) -> Self {
        Self {
            ret,
            retcode,
            success: false,
        }
    }
}

/// Why a function did not produce a normal return.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Arguments that do not fit the function (Salt's `TypeError` path).
    #[error("{0}")]
    InvalidArgs(String),
    /// The function ran and failed (Salt's `CommandExecutionError`).
    #[error("{0}")]
    Execution(String),
    /// The job was cancelled (`saltutil.kill_job` or shutdown).
    #[error("job was cancelled")]
    Cancelled,
}

/// One declared parameter of a function.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub required: bool,
}

/// A required parameter.
pub const fn req(name: &'static str) -> Param {
    Param {
        name,
        required: true,
    }
}

/// An optional parameter (the function supplies the default).
pub const fn opt(name: &'static str) -> Param {
    Param {
        name,
        required: false,
    }
}

/// What a function returns before the registry shapes it.
pub type CallResult = Result<Outcome, ExecError>;
/// A handler's future; it borrows the call it serves.
pub type CallFuture<'a> = Pin<Box<dyn Future<Output = CallResult> + Send + 'a>>;
/// A function body.
pub type Handler = for<'a> fn(&'a Call<'a>) -> CallFuture<'a>;

/// A function's signature, docstring and body.
pub struct Function {
    pub name: &'static str,
    /// Named parameters in positional order.
    pub params: &'static [Param],
    /// Takes `*args`: extra positional arguments are collected, not refused.
    pub varargs: bool,
    /// Takes `**kwargs`: unknown keyword arguments are collected.
    pub kwargs: bool,
    pub doc: &'static str,
    pub handler: Handler,
}

/// The arguments of a call bound to the function's parameters.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Bound {
    /// Named parameters that were given (defaults are the function's job).
    pub named: BTreeMap<&'static str, Value>,
    /// `*args` beyond the named parameters.
    pub varargs: Vec<Value>,
    /// `**kwargs` that match no named parameter.
    pub kwargs: BTreeMap<String, Value>,
}

/// One call in progress: the context, the bound arguments and the registry
/// (for `sys.*`).
pub struct Call<'a> {
    pub ctx: &'a Ctx,
    pub args: Bound,
    pub registry: &'a Registry,
}

impl Call<'_> {
    pub fn arg(&self, name: &str) -> Option<&Value> {
        self.args.named.get(name).filter(|v| !v.is_null())
    }

    /// A string parameter; numbers and booleans are taken as their text.
    pub fn str_arg(&self, name: &str) -> Result<Option<String>, ExecError> {
        match self.arg(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
            Some(other) => Err(ExecError::InvalidArgs(format!(
                "{name} must be a string, not {other}"
            ))),
        }
    }

    /// A number parameter; numeric strings are accepted (CLI arguments).
    pub fn f64_arg(&self, name: &str) -> Result<Option<f64>, ExecError> {
        let bad = |v: &Value| ExecError::InvalidArgs(format!("{name} must be a number, not {v}"));
        match self.arg(name) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => n.as_f64().map(Some).ok_or_else(|| bad(v)),
            Some(v @ Value::String(s)) => s.trim().parse::<f64>().map(Some).map_err(|_| bad(v)),
            Some(v) => Err(bad(v)),
        }
    }

    /// A boolean parameter; Salt's truthy strings are accepted.
    pub fn bool_arg(&self, name: &str, default: bool) -> Result<bool, ExecError> {
        truthy(name, self.arg(name), default)
    }

    /// A boolean among the `**kwargs` (`test=True`, `queue=True`).
    pub fn kwarg_bool(&self, key: &str, default: bool) -> Result<bool, ExecError> {
        truthy(
            key,
            self.args.kwargs.get(key).filter(|v| !v.is_null()),
            default,
        )
    }
}

/// A boolean argument as Salt reads one: booleans, numbers, and the
/// strings `true/yes/1/on` and `false/no/0/off/""`.
fn truthy(name: &str, v: Option<&Value>, default: bool) -> Result<bool, ExecError> {
    match v {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) => Ok(n.as_f64().is_some_and(|f| f != 0.0)),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Ok(true),
            "false" | "no" | "0" | "off" | "" => Ok(false),
            _ => Err(ExecError::InvalidArgs(format!(
                "{name} must be a boolean, not {s:?}"
            ))),
        },
        Some(v) => Err(ExecError::InvalidArgs(format!(
            "{name} must be a boolean, not {v}"
        ))),
    }
}

/// Every built-in function by `module.function`.
pub struct Registry {
    funs: BTreeMap<&'static str, &'static Function>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// Every built-in function.
    pub fn new() -> Self {
        let tables: [&'static [Function]; 20] = [
            beacons::FUNCTIONS,
            event::FUNCTIONS,
            state::FUNCTIONS,
            test::FUNCTIONS,
            cmd::FUNCTIONS,
            cp::FUNCTIONS,
            grains::FUNCTIONS,
            pillar::FUNCTIONS,
            sys::FUNCTIONS,
            saltutil::FUNCTIONS,
            key::FUNCTIONS,
            user::FUNCTIONS,
            group::FUNCTIONS,
            status::FUNCTIONS,
            disk::FUNCTIONS,
            network::FUNCTIONS,
            system::FUNCTIONS,
            file::FUNCTIONS,
            pkg::FUNCTIONS,
            service::FUNCTIONS,
        ];
        let funs = tables.into_iter().flatten().map(|f| (f.name, f)).collect();
        Self { funs }
    }

    /// Run `ctx.fun`; never panics. Unknown functions and bad arguments come
    /// back as failed outcomes shaped like Salt's.
    pub async fn call(&self, ctx: Ctx) -> Outcome {
        let Some(f) = self.funs.get(ctx.fun.as_str()).copied() else {
            tracing::warn!(jid = %ctx.jid, fun = %ctx.fun, "function not available");
            return self.not_available(&ctx.fun);
        };
        let bound = match bind(f, &ctx.args, &ctx.kwargs) {
            Ok(b) => b,
            Err(msg) => {
                tracing::warn!(jid = %ctx.jid, fun = %ctx.fun, error = %msg, "invalid arguments");
                return invalid_args(f, &msg);
            }
        };
        let call = Call {
            ctx: &ctx,
            args: bound,
            registry: self,
        };
        match (f.handler)(&call).await {
            Ok(outcome) => outcome,
            Err(ExecError::InvalidArgs(msg)) => invalid_args(f, &msg),
            Err(e @ ExecError::Cancelled) => {
                tracing::info!(jid = %ctx.jid, fun = %ctx.fun, "job cancelled");
                Outcome::failed(Value::String(format!("ERROR: {e}")), RETCODE_ERROR)
            }
            Err(ExecError::Execution(msg)) => {
                tracing::warn!(jid = %ctx.jid, fun = %ctx.fun, error = %msg, "function failed");
                Outcome::failed(Value::String(format!("ERROR: {msg}")), RETCODE_ERROR)
            }
        }
    }

    /// `'x.y' is not available.`; when `sys.doc` knows functions that start
    /// like it, Salt returns their docs with that message under `x.y`.
    fn not_available(&self, fun: &str) -> Outcome {
        let missing = format!("'{fun}' is not available.");
        let mut near: serde_json::Map<String, Value> = self
            .funs
            .values()
            .filter(|f| !fun.is_empty() && f.name.starts_with(fun))
            .map(|f| (f.name.to_string(), Value::String(f.doc.to_string())))
            .collect();
        let ret = if near.is_empty() {
            Value::String(missing)
        } else {
            near.insert(fun.to_string(), Value::String(missing));
            Value::Object(near)
        };
        Outcome::failed(ret, RETCODE_NOT_AVAILABLE)
    }

    /// Sorted `module.function` names.
    pub fn functions(&self) -> Vec<String> {
        self.funs.keys().map(|k| k.to_string()).collect()
    }

    pub fn doc(&self, fun: &str) -> Option<&'static str> {
        self.funs.get(fun).map(|f| f.doc)
    }

    /// Sorted, de-duplicated module names.
    pub fn modules(&self) -> Vec<String> {
        let mut mods: Vec<String> = self
            .funs
            .keys()
            .filter_map(|k| k.split_once('.').map(|(m, _)| m.to_string()))
            .collect();
        mods.dedup();
        mods
    }
}

fn invalid_args(f: &Function, msg: &str) -> Outcome {
    Outcome::failed(
        Value::String(format!(
            "Passed invalid arguments to {}: {msg}\n{}",
            f.name, f.doc
        )),
        RETCODE_ERROR,
    )
}

/// Bind positional and keyword arguments the way Python binds a call to
/// `def f(p1, p2=None, *args, **kwargs)`. Keyword arguments starting with
/// `__` (Salt's `__pub_*` publish data) are dropped; a `{"__kwarg__": true}`
/// dict among the positionals is read as keyword arguments, as Salt does.
pub fn bind(
    f: &Function,
    args: &[Value],
    kwargs: &BTreeMap<String, Value>,
) -> Result<Bound, String> {
    let mut positional = Vec::with_capacity(args.len());
    let mut all_kwargs: Vec<(String, Value)> = Vec::new();
    for a in args {
        match a {
            Value::Object(m) if m.get("__kwarg__") == Some(&Value::Bool(true)) => {
                all_kwargs.extend(
                    m.iter()
                        .filter(|(k, _)| k.as_str() != "__kwarg__")
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
            }
            other => positional.push(other.clone()),
        }
    }
    all_kwargs.extend(kwargs.iter().map(|(k, v)| (k.clone(), v.clone())));

    let mut bound = Bound::default();
    let mut extra = positional.into_iter();
    for (p, v) in f.params.iter().zip(extra.by_ref()) {
        bound.named.insert(p.name, v);
    }
    let rest: Vec<Value> = extra.collect();
    if !rest.is_empty() {
        if f.varargs {
            bound.varargs = rest;
        } else {
            return Err(format!(
                "{}() takes at most {} positional argument{} but {} {} given",
                short(f.name),
                f.params.len(),
                if f.params.len() == 1 { "" } else { "s" },
                f.params.len() + rest.len(),
                if f.params.len() + rest.len() == 1 {
                    "was"
                } else {
                    "were"
                }
            ));
        }
    }
    let mut unknown = Vec::new();
    for (k, v) in all_kwargs {
        if k.starts_with("__") {
            continue;
        }
        match f.params.iter().find(|p| p.name == k) {
            Some(p) => {
                if bound.named.contains_key(p.name) {
                    return Err(format!(
                        "{}() got multiple values for argument '{k}'",
                        short(f.name)
                    ));
                }
                bound.named.insert(p.name, v);
            }
            None if f.kwargs => {
                bound.kwargs.insert(k, v);
            }
            None => unknown.push(format!("{k}={}", display_value(&v))),
        }
    }
    if !unknown.is_empty() {
        return Err(format!(
            "The following keyword arguments are not valid: {}",
            unknown.join(", ")
        ));
    }
    let missing: Vec<String> = f
        .params
        .iter()
        .filter(|p| p.required && !bound.named.contains_key(p.name))
        .map(|p| format!("'{}'", p.name))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{}() missing {} required positional argument{}: {}",
            short(f.name),
            missing.len(),
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", ")
        ));
    }
    Ok(bound)
}

fn short(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A context for calling functions in tests.
    use super::*;

    pub fn ctx(fun: &str, args: Vec<Value>, kwargs: Value) -> Ctx {
        let kwargs = match kwargs {
            Value::Object(m) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        Ctx {
            jid: "20250101000000000001".parse().expect("jid"),
            fun: fun.into(),
            args,
            kwargs,
            grains: Arc::new(RwLock::new(serde_json::json!({"id": "m1"}))),
            static_grains: serde_json::json!({}),
            grains_file: None,
            id: "m1".into(),
            pki_dir: std::env::temp_dir(),
            running: Arc::new(crate::running::RunningJobs::new()),
            cancel: CancellationToken::new(),
            events: None,
            files: Arc::new(crate::files::FileClient::new(None, std::env::temp_dir())),
            pillar: Arc::new(crate::pillar::Pillar::new(None, None, "m1", None, 1 << 20)),
            saltenv: None,
            master: None,
            beacons: Arc::new(crate::beacons::Beacons::new(
                &serde_json::json!({}),
                None,
                None,
            )),
        }
    }

    pub async fn run(fun: &str, args: Vec<Value>, kwargs: Value) -> Outcome {
        Registry::new().call(ctx(fun, args, kwargs)).await
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::run;
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn unknown_function_is_not_available() {
        let o = run("foo.bar", vec![], json!({})).await;
        assert_eq!(o.ret, json!("'foo.bar' is not available."));
        assert_eq!(o.retcode, RETCODE_NOT_AVAILABLE);
        assert!(!o.success);
    }

    #[tokio::test]
    async fn near_miss_returns_docs_like_salt() {
        let o = run("test.pin", vec![], json!({})).await;
        assert_eq!(o.ret["test.pin"], "'test.pin' is not available.");
        assert!(o.ret["test.ping"].as_str().is_some_and(|d| !d.is_empty()));
        assert!(!o.success);
    }

    #[tokio::test]
    async fn argument_errors() {
        let o = run("test.ping", vec![json!(1)], json!({})).await;
        assert!(!o.success);
        assert_eq!(o.retcode, RETCODE_ERROR);
        let msg = o.ret.as_str().expect("string");
        assert!(msg.starts_with("Passed invalid arguments to test.ping: ping() takes at most 0 positional arguments but 1 was given"), "{msg}");

        let o = run("test.echo", vec![], json!({})).await;
        let msg = o.ret.as_str().expect("string");
        assert!(
            msg.contains("echo() missing 1 required positional argument: 'text'"),
            "{msg}"
        );
        assert!(msg.contains("CLI Example"), "docstring attached: {msg}");

        let o = run("test.echo", vec![json!("a")], json!({"bogus": 1})).await;
        let msg = o.ret.as_str().expect("string");
        assert!(
            msg.contains("The following keyword arguments are not valid: bogus=1"),
            "{msg}"
        );

        let o = run("test.echo", vec![json!("a")], json!({"text": "b"})).await;
        assert!(o
            .ret
            .as_str()
            .expect("s")
            .contains("multiple values for argument 'text'"));
    }

    #[tokio::test]
    async fn kwargs_by_name_publish_data_and_kwarg_dicts() {
        let o = run("test.echo", vec![], json!({"text": "hi", "__pub_jid": "1"})).await;
        assert_eq!(o, Outcome::ok(json!("hi")));
        let o = run(
            "test.echo",
            vec![json!({"__kwarg__": true, "text": "yo"})],
            json!({}),
        )
        .await;
        assert_eq!(o.ret, json!("yo"));
    }

    #[test]
    fn registry_lists_and_documents() {
        let r = Registry::new();
        let funs = r.functions();
        let mut sorted = funs.clone();
        sorted.sort();
        assert_eq!(funs, sorted);
        for f in [
            "test.ping",
            "test.echo",
            "test.sleep",
            "test.version",
            "test.arg",
            "cmd.run",
            "cmd.run_all",
            "cmd.retcode",
            "grains.items",
            "grains.get",
            "grains.item",
            "grains.ls",
            "sys.list_modules",
            "sys.list_functions",
            "sys.doc",
            "saltutil.running",
            "saltutil.find_job",
            "saltutil.kill_job",
            "saltutil.sync_grains",
            "saltutil.refresh_grains",
            "key.finger",
            "cmd.script",
            "cp.get_file",
            "cp.get_dir",
            "cp.get_url",
            "cp.get_file_str",
            "cp.cache_file",
            "cp.cache_files",
            "cp.cache_dir",
            "cp.list_master",
            "cp.list_master_dirs",
            "cp.list_states",
            "cp.list_minion",
            "cp.envs",
            "cp.is_cached",
            "cp.hash_file",
            "cp.push",
            "cp.recv_chunked",
            "pillar.items",
            "pillar.data",
            "pillar.ls",
            "pillar.obfuscate",
            "pillar.get",
            "pillar.fetch",
            "pillar.item",
            "pillar.raw",
            "pillar.keys",
            "saltutil.refresh_pillar",
            "state.apply",
            "state.highstate",
            "state.sls",
            "state.sls_id",
            "state.single",
            "state.test",
            "state.show_sls",
            "state.show_top",
            "state.show_highstate",
            "state.show_lowstate",
            "state.show_low_sls",
            "state.running",
            "user.add",
            "user.delete",
            "user.info",
            "user.list_users",
            "user.getent",
            "user.list_groups",
            "user.chshell",
            "user.chhome",
            "user.chuid",
            "user.chgid",
            "user.chgroups",
            "user.chfullname",
            "user.rename",
            "group.add",
            "group.delete",
            "group.info",
            "group.getent",
            "group.adduser",
            "group.deluser",
            "group.members",
            "group.chgid",
            "grains.setval",
            "grains.setvals",
            "grains.set",
            "grains.append",
            "grains.remove",
            "grains.delval",
            "grains.delkey",
            "status.uptime",
            "status.loadavg",
            "status.meminfo",
            "status.cpuinfo",
            "status.diskusage",
            "status.procs",
            "disk.usage",
            "disk.inodeusage",
            "network.interfaces",
            "network.ip_addrs",
            "network.ip_addrs6",
            "network.hw_addr",
            "network.get_hostname",
            "system.reboot",
            "system.shutdown",
            "system.poweroff",
            "system.halt",
            "file.file_exists",
            "file.directory_exists",
            "file.get_hash",
            "file.chown",
            "file.set_mode",
            "file.get_mode",
            "file.get_user",
            "file.get_group",
            "file.touch",
            "file.remove",
            "file.read",
            "file.write",
            "file.append",
            "file.replace",
            "file.blockreplace",
            "file.line",
            "file.search",
            "file.stats",
            "file.mkdir",
            "file.copy",
            "file.symlink",
            "file.readlink",
            "file.contains",
            "file.get_diff",
            "pkg.install",
            "pkg.remove",
            "pkg.purge",
            "pkg.version",
            "pkg.list_pkgs",
            "pkg.latest_version",
            "pkg.available_version",
            "pkg.upgrade_available",
            "pkg.refresh_db",
            "pkg.info_installed",
            "pkg.hold",
            "pkg.unhold",
            "service.start",
            "service.stop",
            "service.restart",
            "service.reload",
            "service.force_reload",
            "service.status",
            "service.enable",
            "service.disable",
            "service.enabled",
            "service.disabled",
            "service.available",
            "service.missing",
            "service.get_all",
            "service.get_enabled",
            "service.get_disabled",
            "event.send",
            "event.fire_master",
            "event.fire",
            "beacons.list",
            "beacons.list_available",
            "beacons.add",
            "beacons.modify",
            "beacons.delete",
            "beacons.enable",
            "beacons.disable",
            "beacons.enable_beacon",
            "beacons.disable_beacon",
            "beacons.save",
            "beacons.reset",
        ] {
            assert!(funs.iter().any(|x| x == f), "{f} registered");
            assert!(
                r.doc(f).is_some_and(|d| d.contains("CLI Example")),
                "{f} documented"
            );
        }
        assert!(r.doc("nope.nope").is_none());
        let mods = r.modules();
        for m in [
            "beacons", "cmd", "cp", "disk", "event", "file", "grains", "group", "key", "network",
            "pillar", "pkg", "saltutil", "service", "state", "status", "sys", "system", "test",
            "user",
        ] {
            assert!(mods.iter().any(|x| x == m), "module {m} listed");
        }
    }
}
