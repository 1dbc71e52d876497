//! The `fileserver` runner: what this master's file server serves
//! (`fileserver.file_list`, `dir_list`, `empty_dir_list`, `envs`), its
//! backends, and `fileserver.update`, which forgets cached hashes and
//! answers from above so changed files are seen at once. On a syndic the
//! listings are the union of its own roots and the master above's, as a
//! minion sees them.

use super::{Call, Function, RunFuture, RunnerError};
use crate::fileserver::Ctx;
use brine_common::proto::ListKind;
use serde_json::{json, Value};

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "fileserver.backends",
        doc: "Return the file server backends this master uses.\n\n\
              CLI Example:\n\n    salt-run fileserver.backends\n",
        run: backends,
    },
    Function {
        name: "fileserver.dir_list",
        doc: "Return a list of directories in the given environment\n\
              (saltenv, default base; prefix narrows the list).\n\n\
              CLI Example:\n\n    salt-run fileserver.dir_list saltenv=prod\n",
        run: dir_list,
    },
    Function {
        name: "fileserver.empty_dir_list",
        doc: "Return a list of empty directories in the given environment\n\
              (saltenv, default base; prefix narrows the list).\n\n\
              CLI Example:\n\n    salt-run fileserver.empty_dir_list saltenv=prod\n",
        run: empty_dir_list,
    },
    Function {
        name: "fileserver.envs",
        doc: "Return the available fileserver environments.\n\n\
              CLI Example:\n\n    salt-run fileserver.envs\n",
        run: envs,
    },
    Function {
        name: "fileserver.file_list",
        doc: "Return a list of files from the salt fileserver in the given\n\
              environment (saltenv, default base; prefix narrows the list).\n\n\
              CLI Example:\n\n    salt-run fileserver.file_list saltenv=prod prefix=web\n",
        run: file_list,
    },
    Function {
        name: "fileserver.update",
        doc: "Update the file server: forget cached file hashes (and, on a\n\
              syndic, cached answers of the master above). Returns True.\n\n\
              CLI Example:\n\n    salt-run fileserver.update\n",
        run: update,
    },
];

/// A listing of `kind` for the call's `saltenv` (position 0, default
/// `base`) and `prefix` (keyword); empty for a `backend` other than
/// `roots`, as Salt returns for a backend it does not have.
async fn listing(c: &Call<'_>, kind: ListKind) -> Result<Value, RunnerError> {
    if c.str_arg(usize::MAX, "backend")
        .is_some_and(|b| b != "roots")
    {
        return Ok(json!([]));
    }
    let saltenv = c.str_arg(0, "saltenv").unwrap_or_else(|| "base".into());
    let prefix = c.str_arg(usize::MAX, "prefix").unwrap_or_default();
    let state = c.state;
    let cx = Ctx {
        counters: state.counters(),
        upstream: state.upstream().map(|u| &**u),
    };
    let v = state
        .files()
        .list(cx, &saltenv, &prefix, kind)
        .await
        .map_err(RunnerError::FileServer)?;
    Ok(json!(v))
}

fn file_list<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(listing(c, ListKind::Files))
}

fn dir_list<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(listing(c, ListKind::Dirs))
}

fn empty_dir_list<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(listing(c, ListKind::EmptyDirs))
}

fn envs<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(listing(c, ListKind::Envs))
}

fn backends<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(async move { Ok(json!(c.state.cfg().fileserver_backend)) })
}

fn update<'a>(c: &'a Call<'a>) -> RunFuture<'a> {
    Box::pin(async move {
        c.state.files().clear_caches();
        Ok(json!(true))
    })
}
