//! Master-side runner functions for `salt-run`, as a table: each
//! [`Function`] has a name, a docstring and a handler, grouped by module
//! ([`jobs`]: reads the job cache; [`manage`]: reads the roster and the
//! key store; [`fileserver`]: lists and refreshes the file server;
//! [`state`]: `state.event`, which streams the event bus;
//! `doc.runner` lists every docstring). One place to add a
//! runner, like the minion's execution module registry.
//!
//! A handler gets a [`Call`] (the shared state and the arguments) and
//! returns a value or a typed [`RunnerError`]; the client channel shows
//! the error's text to the operator and carries its
//! [`ClientErrorKind`] (an unknown function or a missing argument is the
//! caller's mistake, anything else the master's).

mod fileserver;
mod jobs;
pub(crate) mod manage;
mod state;

pub(crate) use state::{EventArgs, STATE_EVENT};

use crate::state::{JobError, MasterState};
use brine_common::jid::Jid;
use brine_common::proto::client::ClientErrorKind;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Keyword arguments of a call.
pub(crate) type Kw = BTreeMap<String, Value>;

/// What a handler returns.
pub(crate) type RunFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Value, RunnerError>> + Send + 'a>>;

/// A runner function's body.
pub(crate) type Handler = for<'a> fn(&'a Call<'a>) -> RunFuture<'a>;

/// One runner function.
pub(crate) struct Function {
    /// `module.function`.
    pub(crate) name: &'static str,
    pub(crate) doc: &'static str,
    pub(crate) run: Handler,
}

/// One call in progress.
pub(crate) struct Call<'a> {
    pub(crate) state: &'a Arc<MasterState>,
    pub(crate) fun: &'a str,
    pub(crate) args: &'a [Value],
    pub(crate) kwargs: &'a Kw,
}

impl Call<'_> {
    /// Argument `name`, by keyword or at position `pos` (`usize::MAX`:
    /// keyword only); non-strings are taken as their JSON text.
    pub(crate) fn str_arg(&self, pos: usize, name: &str) -> Option<String> {
        self.kwargs
            .get(name)
            .or_else(|| self.args.get(pos))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
    }

    /// A required argument.
    pub(crate) fn need(&self, pos: usize, name: &'static str) -> Result<String, RunnerError> {
        self.str_arg(pos, name)
            .ok_or_else(|| RunnerError::MissingArg {
                fun: self.fun.to_string(),
                arg: name,
            })
    }

    /// A jid argument (refused as a bad request when it is not one).
    pub(crate) fn need_jid(&self, pos: usize) -> Result<Jid, RunnerError> {
        Jid::parse(&self.need(pos, "jid")?).map_err(|source| RunnerError::BadJid {
            fun: self.fun.to_string(),
            source,
        })
    }

    /// A boolean keyword (`True`, `yes`, `1`, a number other than 0).
    pub(crate) fn flag(&self, name: &str) -> bool {
        match self.kwargs.get(name) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => {
                matches!(s.to_ascii_lowercase().as_str(), "true" | "yes" | "1")
            }
            Some(Value::Number(n)) => n.as_i64().unwrap_or(0) != 0,
            _ => false,
        }
    }
}

/// Why a runner function failed; the text is shown to the operator.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunnerError {
    #[error("'{fun}' is not available. Runner functions: {}", names().join(", "))]
    NotAvailable { fun: String },
    #[error("{fun} needs a {arg}")]
    MissingArg { fun: String, arg: &'static str },
    #[error("{fun}: {source}")]
    BadJid {
        fun: String,
        #[source]
        source: brine_common::jid::JidError,
    },
    #[error("{0}")]
    JobCache(#[from] crate::job_cache::JobCacheError),
    #[error("cannot list keys: {0}")]
    ListKeys(crate::keys::KeyError),
    #[error("could not delete the key of {id}: {source}")]
    DeleteKey {
        id: String,
        #[source]
        source: crate::keys::KeyError,
    },
    #[error("{0}")]
    Job(#[from] JobError),
    #[error("{0}")]
    Encode(#[from] serde_json::Error),
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("file server: {0}")]
    FileServer(brine_common::proto::Refusal),
    #[error("{fun} streams events: run it with salt-run")]
    Streams { fun: String },
}

impl RunnerError {
    /// The kind of refusal the client channel carries.
    pub(crate) fn kind(&self) -> ClientErrorKind {
        match self {
            Self::NotAvailable { .. }
            | Self::MissingArg { .. }
            | Self::BadJid { .. }
            | Self::Streams { .. } => ClientErrorKind::BadRequest,
            Self::Job(JobError::Target(_)) => ClientErrorKind::BadTarget,
            Self::Job(JobError::Publish(_)) => ClientErrorKind::Unavailable,
            Self::FileServer(brine_common::proto::Refusal::BadPath { .. }) => {
                ClientErrorKind::BadRequest
            }
            Self::FileServer(_) => ClientErrorKind::Unavailable,
            _ => ClientErrorKind::Internal,
        }
    }
}

/// `doc.runner`: every runner function's docstring, as Salt's.
const DOC: &[Function] = &[Function {
    name: "doc.runner",
    doc: "Return the docstrings for all runners.\n\n\
          CLI Example:\n\n    salt-run doc.runner\n",
    run: doc_runner,
}];

fn doc_runner<'a>(_: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(async move {
        let docs: serde_json::Map<String, Value> = TABLES
            .iter()
            .flat_map(|t| t.iter())
            .map(|f| (f.name.to_string(), Value::String(f.doc.to_string())))
            .collect();
        Ok(Value::Object(docs))
    })
}

/// Every runner function, by module.
const TABLES: [&[Function]; 5] = [
    DOC,
    fileserver::FUNCTIONS,
    jobs::FUNCTIONS,
    manage::FUNCTIONS,
    state::FUNCTIONS,
];

/// The function called `name`.
pub(crate) fn lookup(name: &str) -> Option<&'static Function> {
    TABLES
        .iter()
        .flat_map(|t| t.iter())
        .find(|f| f.name == name)
}

/// Every runner function's name, sorted.
pub(crate) fn names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = TABLES
        .iter()
        .flat_map(|t| t.iter())
        .map(|f| f.name)
        .collect();
    v.sort_unstable();
    v
}

/// Run one runner function.
pub(crate) async fn run(
    state: &Arc<MasterState>,
    fun: &str,
    args: &[Value],
    kwargs: &Kw,
) -> Result<Value, RunnerError> {
    let f = lookup(fun).ok_or_else(|| RunnerError::NotAvailable {
        fun: fun.to_string(),
    })?;
    let call = Call {
        state,
        fun,
        args,
        kwargs,
    };
    // Salt's runner events: `salt/run/<jid>/new`, then `.../ret`.
    let jid = state.next_jid();
    let bus = state.events();
    let fun_args = crate::events::runner_args(args, kwargs);
    let user = "root";
    bus.fire(
        &format!("salt/run/{jid}/new"),
        serde_json::json!({
            "fun": format!("runner.{fun}"),
            "fun_args": fun_args,
            "jid": jid.as_str(),
            "user": user,
        }),
    );
    let out = (f.run)(&call).await;
    bus.fire_with(&format!("salt/run/{jid}/ret"), || {
        let (ret, success) = match &out {
            Ok(v) => (v.clone(), true),
            Err(e) => (Value::String(e.to_string()), false),
        };
        serde_json::json!({
            "fun": format!("runner.{fun}"),
            "fun_args": fun_args,
            "jid": jid.as_str(),
            "return": ret,
            "success": success,
            "user": user,
        })
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_is_listed_once_with_a_doc() {
        assert_eq!(
            names(),
            [
                "doc.runner",
                "fileserver.backends",
                "fileserver.dir_list",
                "fileserver.empty_dir_list",
                "fileserver.envs",
                "fileserver.file_list",
                "fileserver.update",
                "jobs.active",
                "jobs.exit_success",
                "jobs.list_job",
                "jobs.list_jobs",
                "jobs.lookup_jid",
                "manage.down",
                "manage.list_syndics",
                "manage.not_present",
                "manage.present",
                "manage.stats",
                "manage.status",
                "manage.up",
                "manage.versions",
                "state.event",
            ]
        );
        for t in TABLES {
            for f in t {
                assert!(!f.doc.is_empty(), "{} has a doc", f.name);
                assert!(
                    lookup(f.name).is_some_and(|g| g.doc == f.doc),
                    "{} found by name",
                    f.name
                );
            }
        }
    }

    #[test]
    fn unknown_functions_are_usage_errors_named_like_salt() {
        assert!(lookup("match.expected").is_none(), "no hidden functions");
        assert!(lookup("jobs").is_none());
        let e = RunnerError::NotAvailable {
            fun: "foo.bar".into(),
        };
        assert!(e.to_string().starts_with(
            "'foo.bar' is not available. Runner functions: doc.runner, fileserver.backends, "
        ));
        assert_eq!(e.kind(), ClientErrorKind::BadRequest);
        let e = RunnerError::MissingArg {
            fun: "jobs.lookup_jid".into(),
            arg: "jid",
        };
        assert_eq!(e.to_string(), "jobs.lookup_jid needs a jid");
        assert_eq!(e.kind(), ClientErrorKind::BadRequest);
    }

    #[test]
    fn a_jid_that_is_not_one_is_a_bad_request_that_says_so() {
        let e = RunnerError::BadJid {
            fun: "jobs.lookup_jid".into(),
            source: Jid::parse("2026-12-01").expect_err("not a jid"),
        };
        assert_eq!(
            e.to_string(),
            "jobs.lookup_jid: not a jid (20 digits, YYYYMMDDhhmmssffffff): \"2026-12-01\""
        );
        assert_eq!(e.kind(), ClientErrorKind::BadRequest);
    }
}
