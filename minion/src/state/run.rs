//! Salt's state scheduler over a compiled [`Lowstate`]: runs chunks in
//! order, each after the chunks its requisites name (depth first, as
//! Salt's `call_chunk` does), applies the requisite semantics (failed
//! `require`, `onchanges`/`onfail` skipping, `watch` → `mod_watch`,
//! `prereq` test runs, `failhard`) and builds Salt's state return, keyed
//! `<module>_|-<id>_|-<name>_|-<fun>`. Each chunk runs through the
//! caller's executor, so nothing here does I/O.

use super::compile::{before, LowChunk, Lowstate};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How the scheduler asks the executor to run one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunCtx {
    /// Salt's `test=True`: report what would change, change nothing.
    pub test: bool,
    /// A watched state had changes: call the module's `mod_watch`
    /// (a service restart) rather than, or after, the function.
    pub mod_watch: bool,
    /// This is the test run a `prereq` asks for before its watcher runs
    /// (Salt's `__prerequired__`).
    pub prerequired: bool,
}

/// What a state function returns.
#[derive(Debug, Clone, PartialEq)]
pub struct StateOutcome {
    /// True, False, or None (test mode: would change).
    pub result: Option<bool>,
    pub comment: String,
    /// A JSON object; `{}` when nothing changed.
    pub changes: Value,
    /// Salt's `skip_watch`: a check (`unless`, `onlyif`, `creates`) said
    /// not to run, so a fired `watch` must not run `mod_watch` either.
    pub skip_watch: bool,
}

impl StateOutcome {
    /// Whether `changes` says something changed.
    pub fn has_changes(&self) -> bool {
        match &self.changes {
            Value::Object(m) => !m.is_empty(),
            Value::Null => false,
            _ => true,
        }
    }
}

/// Run-wide options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunOptions {
    pub test: bool,
    /// Salt's global `failhard`: stop after the first failed state.
    pub failhard: bool,
}

/// One state's entry in Salt's state return (`--out json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateResult {
    pub name: String,
    pub changes: Value,
    pub result: Option<bool>,
    pub comment: String,
    #[serde(rename = "__sls__")]
    pub sls: String,
    #[serde(rename = "__run_num__")]
    pub run_num: usize,
    /// `HH:MM:SS.ffffff` (UTC).
    pub start_time: String,
    /// Milliseconds.
    pub duration: f64,
    #[serde(rename = "__id__")]
    pub id: String,
    /// `false` when the state was not run (a failed requisite, an
    /// `onchanges`/`onfail` that did not trigger, a `prereq` that found
    /// nothing to do); absent when it ran, as in Salt.
    #[serde(rename = "__state_ran__", skip_serializing_if = "Option::is_none")]
    pub state_ran: Option<bool>,
    /// Salt's `skip_watch: true`, present only when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_watch: Option<bool>,
}

/// Salt's key for one chunk's return: `<module>_|-<id>_|-<name>_|-<fun>`.
pub fn result_key(chunk: &LowChunk) -> String {
    format!(
        "{}_|-{}_|-{}_|-{}",
        chunk.state(),
        chunk.id(),
        chunk.name(),
        chunk.fun()
    )
}

fn start_time(now: SystemTime) -> String {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        d.subsec_micros()
    )
}

struct Sched<'a> {
    low: &'a Lowstate,
    opts: RunOptions,
    exec: &'a mut dyn FnMut(&LowChunk, RunCtx) -> StateOutcome,
    done: Vec<Option<StateOutcome>>,
    out: BTreeMap<String, StateResult>,
    run_num: usize,
    stop: bool,
}

/// Run every chunk of `low` through `exec`, in Salt's order and with its
/// requisite semantics, and return Salt's state return.
pub fn run(
    low: &Lowstate,
    opts: RunOptions,
    exec: &mut dyn FnMut(&LowChunk, RunCtx) -> StateOutcome,
) -> BTreeMap<String, StateResult> {
    let n = low.chunks().len();
    let mut s = Sched {
        low,
        opts,
        exec,
        done: vec![None; n],
        out: BTreeMap::new(),
        run_num: 0,
        stop: false,
    };
    for i in 0..n {
        if s.stop {
            break;
        }
        s.call(i);
    }
    s.out
}

impl Sched<'_> {
    /// Run chunk `i` after what must precede it. The compiler rejected
    /// cycles, so the depth-first walk is an explicit stack bounded by
    /// the number of chunks.
    fn call(&mut self, root: usize) {
        let mut stack = vec![root];
        let mut guard = 0usize;
        let limit = self
            .low
            .chunks()
            .len()
            .saturating_mul(self.low.chunks().len() + 1)
            + 1;
        while let Some(&i) = stack.last() {
            guard += 1;
            if guard > limit || self.stop {
                return;
            }
            if self.done[i].is_some() {
                stack.pop();
                continue;
            }
            let pending: Vec<usize> = before(self.low, i)
                .into_iter()
                .filter(|&j| self.done[j].is_none() && !stack.contains(&j))
                .collect();
            if let Some(&j) = pending.first() {
                stack.push(j);
                continue;
            }
            stack.pop();
            self.execute(i);
        }
    }

    fn failed_ref(&self, j: usize) -> String {
        let c = &self.low.chunks()[j];
        format!("{}.{}", c.sls(), c.id())
    }

    fn execute(&mut self, i: usize) {
        let chunk = &self.low.chunks()[i];
        let deps = &self.low.deps[i];
        let wall = SystemTime::now();
        let t0 = Instant::now();
        let result_of = |kind: &str| -> Vec<(usize, &StateOutcome)> {
            deps.iter()
                .filter(|(k, _)| k == kind)
                .filter_map(|(_, t)| self.done[*t].as_ref().map(|o| (*t, o)))
                .collect()
        };
        // A failed target fails every requisite kind but `onfail`
        // (Salt's `check_requisite`), and a prereq target fails when the
        // state that prereqs it failed.
        let mut failed: Vec<usize> = Vec::new();
        for kind in ["require", "watch", "onchanges"] {
            for (t, o) in result_of(kind) {
                if o.result == Some(false) {
                    failed.push(t);
                }
            }
        }
        for (j, d) in self.low.deps.iter().enumerate() {
            if d.iter().any(|(k, t)| k == "prereq" && *t == i)
                && self.done[j]
                    .as_ref()
                    .is_some_and(|o| o.result == Some(false))
            {
                failed.push(j);
            }
        }
        let any_failed = |kind: &str| {
            let r = result_of(kind);
            !r.is_empty() && r.iter().all(|(_, o)| o.result == Some(false))
        };
        if any_failed("require_any") || any_failed("watch_any") {
            failed.extend(result_of("require_any").iter().map(|(t, _)| *t));
            failed.extend(result_of("watch_any").iter().map(|(t, _)| *t));
        }
        let mut ran = true;
        let outcome = if !failed.is_empty() {
            ran = false;
            let refs: Vec<String> = failed.iter().map(|&t| self.failed_ref(t)).collect();
            StateOutcome {
                skip_watch: false,
                result: Some(false),
                comment: format!("One or more requisite failed: {}", refs.join(", ")),
                changes: Value::Object(Map::new()),
            }
        } else if let Some(skip) = self.skip_reason(i) {
            ran = false;
            skip
        } else {
            let watched = ["watch", "watch_any"]
                .iter()
                .any(|k| result_of(k).iter().any(|(_, o)| o.has_changes()));
            let ctx = RunCtx {
                test: self.opts.test,
                mod_watch: watched,
                prerequired: false,
            };
            match self.prereq_gate(i) {
                Some(o) => {
                    ran = false;
                    o
                }
                None => (self.exec)(chunk, ctx),
            }
        };
        let duration = t0.elapsed().as_secs_f64() * 1000.0;
        let hard = chunk
            .get("failhard")
            .and_then(Value::as_bool)
            .unwrap_or(self.opts.failhard);
        if hard && outcome.result == Some(false) {
            self.stop = true;
        }
        self.out.insert(
            result_key(chunk),
            StateResult {
                name: chunk.name().to_string(),
                changes: outcome.changes.clone(),
                result: outcome.result,
                comment: outcome.comment.clone(),
                sls: chunk.sls().to_string(),
                run_num: self.run_num,
                start_time: start_time(wall),
                duration: (duration * 1000.0).round() / 1000.0,
                id: chunk.id().to_string(),
                state_ran: (!ran).then_some(false),
                skip_watch: outcome.skip_watch.then_some(true),
            },
        );
        self.run_num += 1;
        self.done[i] = Some(outcome);
    }

    /// `onchanges`/`onfail` (and their `_any` forms) that say not to run.
    fn skip_reason(&self, i: usize) -> Option<StateOutcome> {
        let deps = &self.low.deps[i];
        let outs = |kind: &str| -> Vec<&StateOutcome> {
            deps.iter()
                .filter(|(k, _)| k == kind)
                .filter_map(|(_, t)| self.done[*t].as_ref())
                .collect()
        };
        let skip = |comment: &str| StateOutcome {
            skip_watch: false,
            result: Some(true),
            comment: comment.to_string(),
            changes: Value::Object(Map::new()),
        };
        let oc = outs("onchanges");
        let oca = outs("onchanges_any");
        let changed = (oc.is_empty() || oc.iter().any(|o| o.has_changes()))
            && (oca.is_empty() || oca.iter().any(|o| o.has_changes()));
        if (!oc.is_empty() || !oca.is_empty()) && !changed {
            return Some(skip(
                "State was not run because none of the onchanges reqs changed",
            ));
        }
        let of = outs("onfail");
        let ofa = outs("onfail_any");
        let fail = |o: &&StateOutcome| o.result == Some(false);
        let triggered =
            (of.is_empty() || of.iter().any(fail)) && (ofa.is_empty() || ofa.iter().any(fail));
        if (!of.is_empty() || !ofa.is_empty()) && !triggered {
            return Some(skip("State was not run because onfail req did not change"));
        }
        None
    }

    /// For a chunk with `prereq`, run each target in test mode first; the
    /// chunk runs only if one of them would change. Returns the outcome
    /// when the chunk must not run.
    fn prereq_gate(&mut self, i: usize) -> Option<StateOutcome> {
        let targets: Vec<usize> = self.low.deps[i]
            .iter()
            .filter(|(k, _)| k == "prereq")
            .map(|(_, t)| *t)
            .collect();
        if targets.is_empty() {
            return None;
        }
        let mut would_change = false;
        for t in targets {
            let ctx = RunCtx {
                test: true,
                mod_watch: false,
                prerequired: true,
            };
            let o = (self.exec)(&self.low.chunks()[t], ctx);
            if o.result == Some(false) {
                return Some(StateOutcome {
                    skip_watch: false,
                    result: Some(false),
                    comment: format!("One or more requisite failed: {}", self.failed_ref(t)),
                    changes: Value::Object(Map::new()),
                });
            }
            would_change |= o.has_changes();
        }
        if would_change {
            None
        } else {
            Some(StateOutcome {
                skip_watch: false,
                result: Some(true),
                comment: "No changes detected".into(),
                changes: Value::Object(Map::new()),
            })
        }
    }
}
