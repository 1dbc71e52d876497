//! Salt's reactor on the master: the `reactor` option maps event tag globs
//! to reactor SLS files; each matching event renders those files (Jinja
//! with `tag`, `data` and `opts`, then YAML) into reactions
//! ([`parse::Action`]) that publish a job (`local.*`, as `salt` does, user
//! `Reactor`), call a runner (`runner.*`) or change key states
//! (`wheel.key.accept`/`reject`/`delete`, as `salt-key` does: sessions of a
//! rejected or deleted key end, `salt/key` is fired).
//!
//! Invariants: the reactor never slows the bus or the master. It
//! subscribes once per distinct glob; events go through one queue of
//! `reactor_worker_hwm` reactions (overflow dropped, counted
//! `reactor_dropped`) to at most `reactor_worker_threads` reactions at
//! once; rendering runs on blocking threads. A broken file (unreadable,
//! render error, bad YAML, a malformed action) is logged with its file and
//! line, counted (`reactor_errors`) and skipped whole; nothing a file says
//! can stop the master. Unless `reactor_react_to_own_jobs`, events whose
//! `user` is `Reactor` and the `salt/job/<jid>/...` events of jobs the
//! reactor published are not reacted to, so a reaction to a return cannot
//! loop. Runner calls fire `salt/run/...` as `root` (as `salt-run`): a
//! reactor on `salt/run/*` that calls a runner still loops; do not write one.

mod parse;

use crate::events::{Event, SUBSCRIBER_QUEUE};
use crate::fileserver::roots::{EnvSource, Roots};
use crate::keys::KeyState;
use crate::state::{bump, MasterState};
use brine_common::proto::client::PublishRequest;
use brine_common::render::{self, TemplateSource};
use parse::{Action, Kw};
use serde_json::Value;
use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// The user the reactor's jobs and calls run as (Salt's `event_user`).
pub const REACTOR_USER: &str = "Reactor";

/// Jids of the reactor's own jobs remembered, to not react to their events.
const OWN_JOBS: usize = 4096;

/// Largest reactor SLS file read from an absolute path.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// One rule: a tag glob and its files, as configured (same globs merged).
struct Rule {
    glob: String,
    files: Vec<String>,
}

/// The rules of `cfg.reactor`, one per distinct glob, in the order the
/// globs first appear.
fn rules(reactor: &[std::collections::BTreeMap<String, Vec<String>>]) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::new();
    for (glob, files) in reactor.iter().flatten() {
        match out.iter_mut().find(|r| &r.glob == glob) {
            Some(r) => r.files.extend(files.iter().cloned()),
            None => out.push(Rule {
                glob: glob.clone(),
                files: files.clone(),
            }),
        }
    }
    out
}

/// What the reactor's tasks share.
struct Reactor {
    state: Arc<MasterState>,
    rules: Vec<Rule>,
    roots: Option<Roots>,
    /// `opts` in templates: this master's config.
    opts: Value,
    own: Mutex<OwnJobs>,
}

/// The jids of the latest jobs the reactor published.
#[derive(Default)]
struct OwnJobs {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl OwnJobs {
    fn add(&mut self, jid: String) {
        if self.set.insert(jid.clone()) {
            self.order.push_back(jid);
        }
        while self.order.len() > OWN_JOBS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// Whether `ev` is the reactor's own doing: `user` is `Reactor`, or a
/// `salt/job/<jid>/...` event of a jid in `own`.
fn is_own(ev: &Event, own: &OwnJobs) -> bool {
    if ev.data.get("user").and_then(Value::as_str) == Some(REACTOR_USER) {
        return true;
    }
    ev.tag
        .strip_prefix("salt/job/")
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|jid| own.set.contains(jid))
}

/// Start the reactor when `reactor` is configured; `None` otherwise.
pub(crate) fn spawn(
    state: &Arc<MasterState>,
    shutdown: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let rules = rules(&state.cfg().reactor);
    if rules.is_empty() {
        return None;
    }
    let cfg = state.cfg();
    let roots = match Roots::new(
        &cfg.file_roots,
        &cfg.file_ignore_regex,
        &cfg.file_ignore_glob,
    ) {
        Ok(r) => Some(r),
        Err(e) => {
            error!(error = %e, "reactor: file_roots unusable; salt:// reactor files will fail");
            None
        }
    };
    let reactor = Arc::new(Reactor {
        opts: serde_json::to_value(cfg).unwrap_or(Value::Null),
        state: state.clone(),
        rules,
        roots,
        own: Mutex::new(OwnJobs::default()),
    });
    Some(tokio::spawn(run(reactor, shutdown.clone())))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Subscribe, queue, and run reactions until `shutdown`.
async fn run(r: Arc<Reactor>, shutdown: CancellationToken) {
    let cfg = r.state.cfg();
    let (tx, mut rx) = mpsc::channel::<(Arc<Event>, usize)>(cfg.reactor_worker_hwm.max(1));
    let mut forwarders = JoinSet::new();
    for (i, rule) in r.rules.iter().enumerate() {
        let mut sub = match r.state.events().subscribe(&rule.glob, SUBSCRIBER_QUEUE) {
            Ok(s) => s,
            Err(e) => {
                error!(glob = %rule.glob, error = %e, "reactor: cannot subscribe; this rule is off");
                bump(&r.state.counters().reactor_errors);
                continue;
            }
        };
        let (tx, r2, stop) = (tx.clone(), r.clone(), shutdown.clone());
        forwarders.spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => return,
                    ev = sub.rx.recv() => match ev { Some(ev) => ev, None => return },
                };
                if !r2.state.cfg().reactor_react_to_own_jobs && is_own(&ev, &lock(&r2.own)) {
                    debug!(tag = %ev.tag, "reactor: own job's event not reacted to");
                    continue;
                }
                if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send((ev, i)) {
                    let n = bump(&r2.state.counters().reactor_dropped);
                    if n.is_power_of_two() {
                        warn!(
                            count = n,
                            "reactor queue full (reactor_worker_hwm): reaction dropped"
                        );
                    }
                }
            }
        });
    }
    drop(tx);
    info!(rules = r.rules.len(), "reactor started");
    let workers = Arc::new(Semaphore::new(cfg.reactor_worker_threads.max(1)));
    let mut running = JoinSet::new();
    loop {
        let (ev, i) = tokio::select! {
            _ = shutdown.cancelled() => break,
            got = rx.recv() => match got { Some(x) => x, None => break },
        };
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = workers.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        while running.try_join_next().is_some() {}
        let r2 = r.clone();
        running.spawn(async move {
            react(&r2, i, &ev).await;
            drop(permit);
        });
    }
    forwarders.abort_all();
    running.abort_all();
}

/// Render every file of rule `i` for `ev` and run its reactions.
async fn react(r: &Arc<Reactor>, i: usize, ev: &Arc<Event>) {
    for pattern in &r.rules[i].files {
        let (r2, ev2, p2) = (r.clone(), ev.clone(), pattern.clone());
        let rendered = tokio::task::spawn_blocking(move || {
            expand(&p2)
                .into_iter()
                .map(|f| match f {
                    Ok(f) => {
                        let actions = r2.render(&f, &ev2);
                        (f, actions)
                    }
                    Err(e) => (p2.clone(), Err(vec![e])),
                })
                .collect::<Vec<_>>()
        })
        .await;
        let files = match rendered {
            Ok(files) => files,
            Err(e) => {
                bump(&r.state.counters().reactor_errors);
                error!(file = %pattern, tag = %ev.tag, error = %e, "reactor render task failed");
                continue;
            }
        };
        for (file, rendered) in files {
            react_file(r, &file, ev, rendered).await;
        }
    }
}

/// Run the reactions of one rendered file (or log why it is not run).
async fn react_file(
    r: &Arc<Reactor>,
    file: &str,
    ev: &Arc<Event>,
    rendered: Result<Vec<Action>, Vec<String>>,
) {
    let actions = match rendered {
        Ok(a) => a,
        Err(errors) => {
            for e in errors {
                bump(&r.state.counters().reactor_errors);
                error!(file = %file, tag = %ev.tag, "reactor file not run: {e}");
            }
            return;
        }
    };
    for a in actions {
        match execute(r, &a).await {
            Ok(what) => {
                bump(&r.state.counters().reactor_jobs);
                info!(file = %file, id = %a.id(), fun = %a.name(), tag = %ev.tag, "reaction: {what}");
            }
            Err(e) => {
                bump(&r.state.counters().reactor_errors);
                error!(file = %file, id = %a.id(), fun = %a.name(), tag = %ev.tag, "reaction failed: {e}");
            }
        }
    }
}

/// Most files one reactor path pattern expands to.
const MAX_GLOB_FILES: usize = 1000;

/// The files a reactor path names: an absolute path with glob characters
/// (`*`, `?`, `[`) expands as Salt's `glob.glob` does (sorted here; names
/// starting with `.` only when the pattern's part does; at most
/// [`MAX_GLOB_FILES`]), each file one entry; no match is one error (Salt:
/// "File missing or not found"). Anything else is itself.
fn expand(pattern: &str) -> Vec<Result<String, String>> {
    let magic = |s: &str| s.contains(['*', '?', '[']);
    if !pattern.starts_with('/') || !magic(pattern) {
        return vec![Ok(pattern.to_string())];
    }
    let mut found = vec![std::path::PathBuf::from("/")];
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        if !magic(part) {
            found = found
                .into_iter()
                .map(|d| d.join(part))
                .filter(|p| p.exists())
                .collect();
            continue;
        }
        let glob = brine_common::glob::Glob::new(part);
        let mut next = Vec::new();
        for dir in &found {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| (part.starts_with('.') || !n.starts_with('.')) && glob.matches(n))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
            if next.len() > MAX_GLOB_FILES {
                return vec![Err(format!(
                    "reactor path matches more than {MAX_GLOB_FILES} files"
                ))];
            }
        }
        found = next;
    }
    let files: Vec<Result<String, String>> = found
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| Ok(p.display().to_string()))
        .collect();
    if files.is_empty() {
        return vec![Err("no file matches this reactor path".into())];
    }
    files
}

/// `salt://path?saltenv=env` → (env, path); `base` by default.
fn salt_url(rest: &str) -> (String, String) {
    match rest.split_once('?') {
        Some((path, query)) => {
            let env = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("saltenv="))
                .unwrap_or("base");
            (env.to_string(), path.to_string())
        }
        None => ("base".to_string(), rest.to_string()),
    }
}

impl Reactor {
    fn render(&self, file: &str, ev: &Event) -> Result<Vec<Action>, Vec<String>> {
        render_file(self.roots.as_ref(), &self.opts, file, ev)
    }
}

/// The text of reactor file `file` and the environment its includes
/// resolve in.
fn read_file(roots: Option<&Roots>, file: &str) -> Result<(String, String), String> {
    if let Some(rest) = file.strip_prefix("salt://") {
        let (env, path) = salt_url(rest);
        let roots = roots.ok_or("file_roots are unusable")?;
        return match roots.read_to_string(&env, &path) {
            Ok(Some((text, _))) => Ok((text, env)),
            Ok(None) => Err(format!("no such file in file_roots ({env})")),
            Err(e) => Err(e.to_string()),
        };
    }
    if !file.starts_with('/') {
        return Err("a reactor file is an absolute path or a salt:// path".into());
    }
    let f = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    Ok((text, "base".into()))
}

/// Read, render and parse `file` for `ev` (blocking); the errors are
/// ready to log (`line N: message`).
fn render_file(
    roots: Option<&Roots>,
    opts: &Value,
    file: &str,
    ev: &Event,
) -> Result<Vec<Action>, Vec<String>> {
    let (text, env) = read_file(roots, file).map_err(|e| vec![e])?;
    let ctx = serde_json::json!({
        "tag": ev.tag,
        "data": ev.data,
        "opts": opts,
        "saltenv": env,
    });
    let loader = roots.cloned().map(|roots| {
        Arc::new(EnvSource {
            roots,
            env: env.clone(),
        }) as Arc<dyn TemplateSource>
    });
    let at = |e: render::RenderError| {
        let line = e.line.map_or_else(|| "?".into(), |l| l.to_string());
        if e.file == file {
            vec![format!("line {line}: {}", e.message)]
        } else {
            vec![format!("{}, line {line}: {}", e.file, e.message)]
        }
    };
    let rendered = render::render_sls_text(&text, file, &ctx, loader).map_err(at)?;
    let data = rendered.load().map_err(at)?;
    let order: Vec<String> = rendered.key_order().into_iter().map(|(k, _)| k).collect();
    parse::actions(&data, &order, rendered.text()).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| {
                let line = e.line.map_or_else(|| "?".into(), |l| l.to_string());
                format!("line {line}: {}", e.message)
            })
            .collect()
    })
}

/// Run one reaction; what it did, for the log.
async fn execute(r: &Arc<Reactor>, a: &Action) -> Result<String, String> {
    match a {
        Action::Local {
            fun,
            tgt,
            tgt_type,
            arg,
            kwarg,
            timeout,
            ..
        } => {
            let st = &r.state;
            let req = PublishRequest {
                tgt: tgt.clone(),
                tgt_type: *tgt_type,
                fun: fun.clone(),
                arg: arg.clone(),
                kwarg: kwarg.clone(),
                timeout: timeout.unwrap_or(st.cfg().timeout),
                user: REACTOR_USER.into(),
                delimiter: ":".into(),
                trace: false,
            };
            let target = st
                .parse_target(&req.tgt, req.tgt_type, &req.delimiter)
                .map_err(|e| e.to_string())?;
            if target.uses_pillar() {
                crate::pillar::fill_missing(st).await;
            }
            let (published, _) = st
                .publish_async(req, target, false)
                .await
                .map_err(|e| e.to_string())?;
            let jid = published.jid.as_str().to_string();
            lock(&r.own).add(jid.clone());
            Ok(format!(
                "job {jid} published to {} minion(s)",
                published.minions.len()
            ))
        }
        Action::Runner {
            fun, args, kwargs, ..
        } => {
            if fun == crate::runner::STATE_EVENT {
                return Err(format!("{fun} streams events; a reaction cannot call it"));
            }
            let v = crate::runner::run(&r.state, fun, args, kwargs)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("runner returned {}", short(&v)))
        }
        Action::Wheel { fun, kwargs, .. } => {
            let st = r.state.clone();
            let (fun2, kw) = (fun.clone(), kwargs.clone());
            let changed = tokio::task::spawn_blocking(move || wheel_key(&st, &fun2, &kw))
                .await
                .map_err(|e| e.to_string())??;
            Ok(format!("{fun}: {}", changed.join(", ")))
        }
    }
}

/// A value, cut for a log line.
fn short(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// A boolean keyword argument as Salt reads it.
fn flag(kw: &Kw, name: &str) -> bool {
    match kw.get(name) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.to_ascii_lowercase().as_str(), "true" | "yes" | "1"),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0) != 0,
        _ => false,
    }
}

/// `wheel.key.accept` / `reject` / `delete` with `match` (a glob; Salt's
/// `include_rejected`, `include_accepted`, `include_denied`), with what
/// salt-key's notice does: the sessions of keys to be rejected or deleted
/// end (a new publish key they do not get), and `salt/key` is fired. The
/// ids changed.
fn wheel_key(st: &MasterState, fun: &str, kw: &Kw) -> Result<Vec<String>, String> {
    let glob = match kw.get("match") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Array(ids)) => ids
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        _ => return Err(format!("wheel.{fun} needs a match (a minion id glob)")),
    };
    if glob.is_empty() {
        return Err(format!("wheel.{fun} needs a match (a minion id glob)"));
    }
    if !parse::WHEEL_FUNCTIONS.contains(&fun) {
        return Err(format!("wheel function '{fun}' is not available"));
    }
    let keys = st.keys();
    let denied = flag(kw, "include_denied");
    let mut states = vec![KeyState::Pending];
    match fun {
        "key.accept" if flag(kw, "include_rejected") => states.push(KeyState::Rejected),
        "key.reject" if flag(kw, "include_accepted") => states.push(KeyState::Accepted),
        "key.delete" => states = KeyState::ALL.to_vec(),
        _ => {}
    }
    if denied && fun != "key.delete" {
        states.push(KeyState::Denied);
    }
    let planned = keys.matching(&glob, &states).map_err(|e| e.to_string())?;
    // A key about to be rejected or deleted loses its session first, so
    // there is no moment when the key is gone and the session is not.
    if fun != "key.accept" {
        let mut revoked: Vec<String> = planned.iter().map(|(_, id)| id.clone()).collect();
        revoked.sort();
        revoked.dedup();
        if !revoked.is_empty() {
            st.rotate_publish_key(&revoked);
        }
    }
    let changed = match fun {
        "key.accept" => keys.accept_planned(&planned),
        "key.reject" => keys.reject_planned(&planned),
        "key.delete" => keys.delete_planned(&planned).map(|v| {
            let mut ids: Vec<String> = Vec::new();
            for (id, _) in v {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            ids
        }),
        other => return Err(format!("wheel function '{other}' is not available")),
    }
    .map_err(|e| e.to_string())?;
    crate::events::fire_key_changes(st.events(), st.keys());
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn rules_merge_same_globs_in_first_order() {
        let cfg = vec![
            BTreeMap::from([("a/*".to_string(), vec!["/r/1.sls".to_string()])]),
            BTreeMap::from([("b".to_string(), vec!["/r/2.sls".to_string()])]),
            BTreeMap::from([("a/*".to_string(), vec!["/r/3.sls".to_string()])]),
        ];
        let r = rules(&cfg);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].glob, "a/*");
        assert_eq!(r[0].files, ["/r/1.sls", "/r/3.sls"]);
        assert_eq!(r[1].files, ["/r/2.sls"]);
    }

    #[test]
    fn own_jobs_and_reactor_users_are_recognised_and_bounded() {
        let mut own = OwnJobs::default();
        own.add("20261203010101000001".into());
        let ev = |tag: &str, data: Value| Event {
            tag: tag.into(),
            data,
        };
        assert!(is_own(
            &ev("salt/job/20261203010101000001/ret/web1", json!({})),
            &own
        ));
        assert!(!is_own(
            &ev("salt/job/20261203010101000002/ret/web1", json!({})),
            &own
        ));
        assert!(is_own(
            &ev("salt/job/x/new", json!({"user": "Reactor"})),
            &own
        ));
        assert!(!is_own(&ev("myapp/deploy/x", json!({"id": "web1"})), &own));
        for i in 0..(OWN_JOBS + 10) {
            own.add(format!("{i}"));
        }
        assert_eq!(own.order.len(), OWN_JOBS);
        assert_eq!(own.set.len(), OWN_JOBS);
        assert!(
            !own.set.contains("20261203010101000001"),
            "oldest forgotten"
        );
    }

    #[test]
    fn reactor_paths_glob_like_salt() {
        let d = tempfile::tempdir().expect("tempdir");
        for f in ["a/x.sls", "a/y.sls", "a/.hidden.sls", "b/x.sls", "b/z.txt"] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
            std::fs::write(p, "").expect("write");
        }
        let root = d.path().display().to_string();
        let ok = |pat: &str| -> Vec<String> {
            expand(&format!("{root}/{pat}"))
                .into_iter()
                .map(|r| r.expect("a file").replacen(&root, "", 1))
                .collect()
        };
        assert_eq!(ok("a/*.sls"), ["/a/x.sls", "/a/y.sls"], "no dot files");
        assert_eq!(ok("*/x.sls"), ["/a/x.sls", "/b/x.sls"]);
        assert_eq!(ok("a/.h*"), ["/a/.hidden.sls"]);
        assert_eq!(ok("[ab]/[!y].*"), ["/a/x.sls", "/b/x.sls", "/b/z.txt"]);
        assert_eq!(ok("a/x.sls"), ["/a/x.sls"], "no glob: itself");
        let none = expand(&format!("{root}/c/*.sls"));
        assert!(
            matches!(&none[..], [Err(e)] if e.contains("no file")),
            "{none:?}"
        );
        assert_eq!(expand("salt://r/*.sls"), [Ok("salt://r/*.sls".to_string())]);
    }

    #[test]
    fn salt_urls_name_their_environment() {
        assert_eq!(salt_url("r/a.sls"), ("base".into(), "r/a.sls".into()));
        assert_eq!(
            salt_url("r/a.sls?saltenv=dev"),
            ("dev".into(), "r/a.sls".into())
        );
        assert!(short(&json!("x".repeat(500))).ends_with("..."));
    }

    fn event() -> Event {
        Event {
            tag: "myapp/deploy/x".into(),
            data: json!({"id": "web1", "data": {"v": 2}}),
        }
    }

    #[test]
    fn files_render_with_tag_data_and_opts_and_salt_paths_resolve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("deploy.sls");
        std::fs::write(
            &file,
            "{% set v = data['data']['v'] %}\nrun_{{ v }}:\n  local.cmd.run:\n    - tgt: {{ data['id'] }}\n    - args:\n      - cmd: echo {{ tag }} {{ opts['id'] }}\n",
        )
        .expect("write");
        let opts = json!({"id": "top"});
        let got = render_file(None, &opts, &file.display().to_string(), &event()).expect("ok");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id(), "run_2");
        assert!(matches!(&got[0], Action::Local { tgt, kwarg, .. }
            if tgt == "web1" && kwarg["cmd"] == "echo myapp/deploy/x top"));
        let roots_dir = dir.path().join("roots");
        std::fs::create_dir_all(roots_dir.join("r")).expect("mkdir");
        std::fs::write(roots_dir.join("r/up.sls"), "{% include 'r/inc.sls' %}\n").expect("write");
        std::fs::write(roots_dir.join("r/inc.sls"), "up:\n  runner.manage.up: []\n")
            .expect("write");
        let roots = Roots::new(
            &BTreeMap::from([("base".to_string(), vec![roots_dir])]),
            &[],
            &[],
        )
        .expect("roots");
        let got = render_file(Some(&roots), &opts, "salt://r/up.sls", &event()).expect("ok");
        assert_eq!(got[0].name(), "runner.manage.up");
        let e = render_file(Some(&roots), &opts, "salt://r/none.sls", &event()).expect_err("no");
        assert!(e[0].contains("no such file"), "{e:?}");
    }

    #[test]
    fn broken_files_say_where() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |n: &str| dir.path().join(n).display().to_string();
        let opts = json!({});
        let cases = [
            (
                "jinja.sls",
                "ok:\n  runner.manage.up: []\n{% if %}\n",
                "line 3",
            ),
            (
                "yaml.sls",
                "a:\n  local.cmd.run:\n    - tgt: [unclosed\n",
                "line",
            ),
            (
                "undefined.sls",
                "a:\n  local.cmd.run:\n    - tgt: {{ data['nope']['x'] }}\n",
                "line",
            ),
            (
                "form.sls",
                "fine:\n  runner.manage.up: []\nbad:\n  local.cmd.run:\n    - args: []\n",
                "line 3: local.cmd.run: needs a tgt",
            ),
        ];
        for (name, text, want) in cases {
            std::fs::write(dir.path().join(name), text).expect("write");
            let e = render_file(None, &opts, &path(name), &event()).expect_err(name);
            assert!(e[0].contains(want), "{name}: {e:?}");
        }
        let e = render_file(None, &opts, "relative.sls", &event()).expect_err("relative");
        assert!(e[0].contains("absolute"), "{e:?}");
        let e = render_file(None, &opts, &path("missing.sls"), &event()).expect_err("missing");
        assert!(!e[0].is_empty());
    }
}
