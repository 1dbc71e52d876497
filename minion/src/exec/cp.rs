//! The `cp` module: files from the master's file server (`salt://`) to this
//! minion, local files, the minion's file cache, `cp.push` to the master and
//! `cp.recv_chunked` for `salt-cp`.
//!
//! Signatures, defaults and return shapes are Salt's: `cp.get_file` returns
//! the destination, `''` when the source does not exist and `False` when the
//! destination's directory is missing without `makedirs`; `cp.cache_file`
//! returns the cached path or `False`; `cp.push` returns `True`/`False` and
//! logs why. Every `salt://` path, and every path a master's listing names,
//! goes through [`crate::files::clean_path`] before it touches the disk, so
//! a listing cannot make `cp.get_dir` or `cp.cache_dir` write outside their
//! destination. `gzip` is accepted and ignored (chunks travel under the
//! session key, uncompressed). `template=jinja` renders fetched files on the minion:
//! until then it is refused with a clear error.

use super::{opt, req, Call, CallFuture, ExecError, Function, Outcome};
use crate::files::{self, parse_salt_url, FileClient, FileError};
use base64::Engine;
use brine_common::proto::{ListKind, Refusal};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// The largest file `cp.get_file_str` (and `cp.get_url dest=None`) returns.
pub const MAX_STR_BYTES: u64 = 16 * 1024 * 1024;
/// The most one `cp.recv_chunked` chunk may inflate to.
pub const MAX_CHUNK_INFLATED: u64 = 64 * 1024 * 1024;
pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "cp.get_file",
        params: &[
            req("path"),
            req("dest"),
            opt("saltenv"),
            opt("makedirs"),
            opt("template"),
            opt("gzip"),
        ],
        varargs: false,
        kwargs: true,
        doc: "Used to get a single file from the salt master. ``dest`` may be a\n\
              directory (or end in ``/``): the file keeps its name in it.\n\n\
              Returns the destination path, ``''`` when the source does not exist on\n\
              the master and ``False`` when the destination's directory is missing\n\
              (pass ``makedirs=True`` to create it). A destination that already holds\n\
              the same content is not fetched again. The saltenv may also be given\n\
              in the URL: ``salt://foo/bar.conf?saltenv=config``.\n\n\
              CLI Example:\n\n    salt '*' cp.get_file salt://path/to/file /minion/dest\n    \
              salt '*' cp.get_file salt://foo/bar.conf /etc/foo/bar.conf saltenv=config\n",
        handler: get_file,
    },
    Function {
        name: "cp.get_dir",
        params: &[
            req("path"),
            req("dest"),
            opt("saltenv"),
            opt("template"),
            opt("gzip"),
        ],
        varargs: false,
        kwargs: true,
        doc: "Used to recursively copy a directory from the salt master. The\n\
              directory itself is created under ``dest``; empty directories are\n\
              copied too. Returns the sorted list of written paths.\n\n\
              CLI Example:\n\n    salt '*' cp.get_dir salt://path/to/dir/ /minion/dest\n",
        handler: get_dir,
    },
    Function {
        name: "cp.get_url",
        params: &[
            req("path"),
            opt("dest"),
            opt("saltenv"),
            opt("makedirs"),
            opt("source_hash"),
        ],
        varargs: false,
        kwargs: false,
        doc: "Used to get a single file from a URL: ``salt://`` or a local path\n\
              (``file:///abs/path`` or ``/abs/path``).\n\n\
              dest\n    Where to write a ``salt://`` file. Omitted or ``''``: the file goes\n    \
              to the minion cache and its path is returned. ``None``: the file's\n    \
              contents are returned. A local path is returned as it is.\n\n\
              Returns ``False`` when the file could not be fetched.\n\n\
              CLI Example:\n\n    salt '*' cp.get_url salt://my/file /tmp/this_file_is_mine\n",
        handler: get_url,
    },
    Function {
        name: "cp.get_file_str",
        params: &[req("path"), opt("saltenv")],
        varargs: false,
        kwargs: false,
        doc: "Download a file from a URL to the Minion cache directory and return the\n\
              contents of that file. Returns ``False`` if Salt was unable to cache a\n\
              file from a URL.\n\n\
              CLI Example:\n\n    salt '*' cp.get_file_str salt://my/file\n",
        handler: get_file_str,
    },
    Function {
        name: "cp.cache_file",
        params: &[req("path"), opt("saltenv"), opt("source_hash")],
        varargs: false,
        kwargs: false,
        doc: "Used to cache a single file on the Minion. Returns the location of the\n\
              cached file, or ``False`` if the file does not exist. A local path is\n\
              returned as it is when the file exists.\n\n\
              CLI Example:\n\n    salt '*' cp.cache_file salt://path/to/file\n    \
              salt '*' cp.cache_file salt://foo/bar.conf?saltenv=config\n",
        handler: cache_file,
    },
    Function {
        name: "cp.cache_files",
        params: &[req("paths"), opt("saltenv")],
        varargs: false,
        kwargs: false,
        doc: "Used to gather many files from the Master (a list, or paths separated\n\
              by commas); returns one result per path as ``cp.cache_file`` would.\n\n\
              CLI Example:\n\n    salt '*' cp.cache_files salt://pathto/file1,salt://pathto/file1\n",
        handler: cache_files,
    },
    Function {
        name: "cp.cache_dir",
        params: &[
            req("path"),
            opt("saltenv"),
            opt("include_empty"),
            opt("include_pat"),
            opt("exclude_pat"),
        ],
        varargs: false,
        kwargs: false,
        doc: "Download and cache everything under a directory from the master.\n\n\
              include_pat : None\n    Glob or regex (prefixed with ``E@``) the file paths must match.\n\n\
              exclude_pat : None\n    Glob or regex (prefixed with ``E@``) of file paths to leave out.\n\n\
              include_empty : False\n    Also create the empty directories.\n\n\
              CLI Examples:\n\n    salt '*' cp.cache_dir salt://path/to/dir\n    \
              salt '*' cp.cache_dir salt://path/to/dir include_pat='E@*.py$'\n",
        handler: cache_dir,
    },
    Function {
        name: "cp.list_master",
        params: &[opt("saltenv"), opt("prefix")],
        varargs: false,
        kwargs: false,
        doc: "List all of the files stored on the master\n\n\
              CLI Example:\n\n    salt '*' cp.list_master\n",
        handler: list_master,
    },
    Function {
        name: "cp.list_master_dirs",
        params: &[opt("saltenv"), opt("prefix")],
        varargs: false,
        kwargs: false,
        doc: "List all of the directories stored on the master\n\n\
              CLI Example:\n\n    salt '*' cp.list_master_dirs\n",
        handler: list_master_dirs,
    },
    Function {
        name: "cp.list_states",
        params: &[opt("saltenv")],
        varargs: false,
        kwargs: false,
        doc: "List all of the available state modules in an environment\n\n\
              CLI Example:\n\n    salt '*' cp.list_states\n",
        handler: list_states,
    },
    Function {
        name: "cp.list_minion",
        params: &[opt("saltenv")],
        varargs: false,
        kwargs: false,
        doc: "List all of the files cached on the minion\n\n\
              CLI Example:\n\n    salt '*' cp.list_minion\n",
        handler: list_minion,
    },
    Function {
        name: "cp.envs",
        params: &[],
        varargs: false,
        kwargs: false,
        doc: "List available environments for fileserver\n\n\
              CLI Example:\n\n    salt '*' cp.envs\n",
        handler: envs,
    },
    Function {
        name: "cp.is_cached",
        params: &[req("path"), opt("saltenv")],
        varargs: false,
        kwargs: false,
        doc: "Returns the full path to a file if it is cached locally on the minion\n\
              otherwise returns a blank string\n\n\
              CLI Example:\n\n    salt '*' cp.is_cached salt://path/to/file\n",
        handler: is_cached,
    },
    Function {
        name: "cp.hash_file",
        params: &[req("path"), opt("saltenv")],
        varargs: false,
        kwargs: false,
        doc: "Return the hash of a file, to get the hash of a file on the\n\
              salt master file server prepend the path with salt://<file on server>\n\
              otherwise, prepend the file with / for a local file.\n\n\
              Returns ``{'hash_type': 'sha256', 'hsum': ...}``, or ``{}`` when there is\n\
              no such file.\n\n\
              CLI Example:\n\n    salt '*' cp.hash_file salt://path/to/file\n",
        handler: hash_file,
    },
    Function {
        name: "cp.push",
        params: &[
            req("path"),
            opt("keep_symlinks"),
            opt("upload_path"),
            opt("remove_source"),
        ],
        varargs: false,
        kwargs: false,
        doc: "Push a file from the minion up to the master, the file will be saved to\n\
              the salt master in the master's minion files cachedir\n\
              (``cachedir/minions/<minion-id>/files``). The master must set\n\
              ``file_recv: True``; ``file_recv_max_size`` limits the size.\n\n\
              path\n    An absolute path on the minion.\n\n\
              keep_symlinks\n    Keep the path value without resolving its canonical form\n\n\
              upload_path\n    Provide a different path inside the master's minion files cachedir\n\n\
              remove_source\n    Remove the source file on the minion\n\n\
              Returns ``True``, or ``False`` (the reason is in the minion's log).\n\n\
              CLI Example:\n\n    salt '*' cp.push /etc/fstab\n    \
              salt '*' cp.push /etc/fstab upload_path='/new/path/fstab'\n    \
              salt '*' cp.push /tmp/filename remove_source=True\n",
        handler: push,
    },
    Function {
        name: "cp.recv_chunked",
        params: &[
            req("dest"),
            req("chunk"),
            opt("append"),
            opt("compressed"),
            opt("mode"),
        ],
        varargs: false,
        kwargs: false,
        doc: "This function receives files copied to the minion using ``salt-cp`` and is\n\
              not intended to be used directly on the CLI. ``chunk`` is base64 (of\n\
              gzip data when ``compressed``); ``None`` creates ``dest`` as a directory.\n\
              Returns ``True`` or an error string.\n\n\
              CLI Example:\n\n    salt-cp -C '*' local.txt /tmp/dest\n",
        handler: recv_chunked,
    },
];

/// Where a path given to a `cp` function points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// `salt://path` of a saltenv (the URL's query wins).
    Salt { path: String, saltenv: String },
    /// A local path (`/abs`, `file:///abs`, or relative: refused later).
    Local(String),
    /// Another URL scheme (`http`, `s3`...), which Brine does not fetch.
    Other(String),
}

fn source(path: &str, saltenv: &str) -> Source {
    if let Some(u) = parse_salt_url(path) {
        return Source::Salt {
            path: u.path,
            saltenv: u.saltenv.unwrap_or_else(|| saltenv.to_string()),
        };
    }
    if let Some(rest) = path.strip_prefix("file://") {
        return Source::Local(rest.to_string());
    }
    match path.split_once("://") {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')) =>
        {
            Source::Other(scheme.to_string())
        }
        _ => Source::Local(path.to_string()),
    }
}

/// The saltenv a call names, else the minion's `saltenv`, else `base`.
fn saltenv_arg(c: &Call<'_>) -> Result<String, ExecError> {
    Ok(c.str_arg("saltenv")?
        .filter(|s| !s.is_empty())
        .or_else(|| c.ctx.saltenv.clone())
        .unwrap_or_else(|| "base".to_string()))
}

fn path_arg(c: &Call<'_>, name: &str) -> Result<String, ExecError> {
    c.str_arg(name)?
        .ok_or_else(|| ExecError::InvalidArgs(format!("{name} must be given")))
}

/// Whether `template=` asks for rendering: `jinja` (the one engine Brine
/// has) or nothing; any other engine is an error naming it.
pub(crate) fn wants_template(c: &Call<'_>) -> Result<bool, ExecError> {
    match c.str_arg("template")?.as_deref() {
        None | Some("") => Ok(false),
        Some("jinja") => Ok(true),
        Some(other) => Err(ExecError::Execution(format!(
            "template engine '{other}' is not available (jinja is)"
        ))),
    }
}

/// `{% include %}`, `{% import %}` and `import_yaml` of a template fetched
/// from the master: other `salt://` files of the same environment, through
/// the file client (and its cache).
pub(crate) struct MasterFiles {
    pub(crate) files: std::sync::Arc<FileClient>,
    pub(crate) saltenv: String,
    pub(crate) runtime: tokio::runtime::Handle,
}

impl brine_common::render::TemplateSource for MasterFiles {
    fn load(&self, name: &str) -> Result<Option<String>, String> {
        let got = self
            .runtime
            .block_on(self.files.cache_file(&self.saltenv, name))
            .map_err(|e| e.to_string())?;
        match got {
            None => Ok(None),
            Some(p) => std::fs::read_to_string(&p)
                .map(Some)
                .map_err(|e| format!("{}: {e}", p.display())),
        }
    }
}

/// Render the file at `file` (fetched from `salt://name`) as a Jinja
/// template in place, with Salt's context on a minion: `grains`, `pillar`,
/// `opts` (`id`, `saltenv`) and `saltenv`. Runs on a blocking thread.
pub(crate) async fn render_in_place(
    c: &Call<'_>,
    file: &Path,
    name: &str,
    saltenv: &str,
) -> Result<(), ExecError> {
    let ctx = json!({
        "grains": brine_common::sync::read(&c.ctx.grains).clone(),
        "pillar": c.ctx.pillar.snapshot(),
        "opts": {"id": c.ctx.id, "saltenv": saltenv},
        "saltenv": saltenv,
    });
    let loader: std::sync::Arc<dyn brine_common::render::TemplateSource> =
        std::sync::Arc::new(MasterFiles {
            files: c.ctx.files.clone(),
            saltenv: saltenv.to_string(),
            runtime: tokio::runtime::Handle::current(),
        });
    let (file, name) = (file.to_path_buf(), name.to_string());
    tokio::task::spawn_blocking(move || {
        let src = std::fs::read_to_string(&file).map_err(|e| io_exec(&file, e))?;
        let out = brine_common::render::render_jinja(&src, &name, &ctx, Some(loader))
            .map_err(|e| ExecError::Execution(format!("Failed to render template: {e}")))?;
        std::fs::write(&file, out).map_err(|e| io_exec(&file, e))
    })
    .await
    .map_err(|e| ExecError::Execution(format!("template task failed: {e}")))?
}

fn exec_err(e: FileError) -> ExecError {
    ExecError::Execution(e.to_string())
}

fn salt_only(path: &str) -> ExecError {
    ExecError::Execution(format!(
        "Unsupported path: {path} (a salt:// URL is needed)"
    ))
}

fn io_exec(path: &Path, e: std::io::Error) -> ExecError {
    ExecError::Execution(format!("{}: {e}", path.display()))
}

fn basename(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

/// Fetch `salt://rel` into `dest` as `cp.get_file` does: a directory (or a
/// path ending in `/`) gets the file's name appended; a missing directory
/// is created with `makedirs`, else the answer is `False` (`''` when the
/// source does not exist either).
async fn get_file_to(
    fc: &FileClient,
    saltenv: &str,
    rel: &str,
    dest: &str,
    makedirs: bool,
) -> Result<Value, ExecError> {
    let clean = files::clean_path(rel).map_err(exec_err)?;
    let mut to = PathBuf::from(dest);
    if dest.ends_with('/') || to.is_dir() {
        to = to.join(basename(&clean));
    }
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            if !makedirs {
                let exists = fc.find(saltenv, &clean).await.map_err(exec_err)?;
                return Ok(if exists.is_some() {
                    json!(false)
                } else {
                    json!("")
                });
            }
            std::fs::create_dir_all(dir).map_err(|e| io_exec(dir, e))?;
        }
    }
    match fc.get_file(saltenv, &clean, &to).await.map_err(exec_err)? {
        Some(p) => Ok(json!(p.display().to_string())),
        None => {
            info!(path = %clean, saltenv, "cp.get_file: no such file on the master");
            Ok(json!(""))
        }
    }
}

fn get_file<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let template = wants_template(c)?;
        let path = path_arg(c, "path")?;
        let dest = path_arg(c, "dest")?;
        let makedirs = c.bool_arg("makedirs", false)?;
        match source(&path, &saltenv_arg(c)?) {
            Source::Salt { path, saltenv } => {
                let got = get_file_to(&c.ctx.files, &saltenv, &path, &dest, makedirs).await?;
                if let (true, Some(written)) = (template, got.as_str().filter(|s| !s.is_empty())) {
                    render_in_place(c, Path::new(written), &path, &saltenv).await?;
                }
                Ok(Outcome::ok(got))
            }
            Source::Local(p) if !Path::new(&p).is_file() => Ok(Outcome::ok(json!(""))),
            _ => Err(salt_only(&path)),
        }
    })
}

/// The parent of a `salt://` directory path (`a/b` → `a`, `a` → ``).
fn dir_prefix(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

/// `fn_` lies strictly inside directory `dir` (`dir/...`).
fn inside<'p>(fn_: &'p str, dir: &str) -> Option<&'p str> {
    fn_.strip_prefix(dir)?.strip_prefix('/')
}

fn get_dir<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let template = wants_template(c)?;
        let raw = path_arg(c, "path")?;
        let dest = path_arg(c, "dest")?;
        let Source::Salt { path, saltenv } = source(&raw, &saltenv_arg(c)?) else {
            return Err(salt_only(&raw));
        };
        let fc = &c.ctx.files;
        let dir = files::clean_path(&path).map_err(exec_err)?;
        let prefix = dir_prefix(&dir);
        let mut out: Vec<Value> = Vec::new();
        let listed = fc
            .list(&saltenv, &dir, ListKind::Files)
            .await
            .map_err(exec_err)?;
        for fn_ in listed {
            if inside(&fn_, &dir).is_none() {
                continue;
            }
            let fn_ = files::clean_path(&fn_).map_err(exec_err)?;
            let rel = fn_[prefix.len()..].trim_start_matches('/');
            let to = Path::new(&dest).join(rel);
            let to = to.display().to_string();
            let got = get_file_to(fc, &saltenv, &fn_, &to, true).await?;
            if let (true, Some(written)) = (template, got.as_str().filter(|s| !s.is_empty())) {
                render_in_place(c, Path::new(written), &fn_, &saltenv).await?;
            }
            out.push(got);
        }
        let empty = fc
            .list(&saltenv, &dir, ListKind::EmptyDirs)
            .await
            .map_err(exec_err)?;
        for d in empty {
            if inside(&d, &dir).is_none() {
                continue;
            }
            let d = files::clean_path(&d).map_err(exec_err)?;
            let to = Path::new(&dest).join(d[prefix.len()..].trim_start_matches('/'));
            std::fs::create_dir_all(&to).map_err(|e| io_exec(&to, e))?;
            out.push(json!(to.display().to_string()));
        }
        out.sort_by_key(|v| v.as_str().map(str::to_string));
        Ok(Outcome::ok(Value::Array(out)))
    })
}

/// A local file's contents as a string (lossy UTF-8), size-capped.
fn read_str(path: &Path) -> Result<Value, ExecError> {
    let meta = std::fs::metadata(path).map_err(|e| io_exec(path, e))?;
    if meta.len() > MAX_STR_BYTES {
        return Err(ExecError::Execution(format!(
            "{} is {} bytes, more than the {MAX_STR_BYTES} a return may carry as text",
            path.display(),
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| io_exec(path, e))?;
    Ok(json!(String::from_utf8_lossy(&bytes)))
}

/// `cp.cache_file` for one path: the cached (or local) path, or `None`.
async fn cache_one(c: &Call<'_>, path: &str, saltenv: &str) -> Result<Option<String>, ExecError> {
    match source(path, saltenv) {
        Source::Salt { path, saltenv } => {
            let got = c
                .ctx
                .files
                .cache_file(&saltenv, &path)
                .await
                .map_err(exec_err)?;
            if got.is_none() {
                warn!(path = %path, saltenv = %saltenv, "Unable to cache file: not found on the master");
            }
            Ok(got.map(|p| p.display().to_string()))
        }
        Source::Local(p) => {
            if !Path::new(&p).is_absolute() {
                return Err(ExecError::Execution(format!("Path '{p}' is not absolute")));
            }
            Ok(Path::new(&p).is_file().then_some(p))
        }
        Source::Other(scheme) => Err(unsupported_scheme(&scheme)),
    }
}

fn unsupported_scheme(scheme: &str) -> ExecError {
    ExecError::Execution(format!(
        "unsupported URL scheme '{scheme}': Brine fetches salt:// URLs and local paths"
    ))
}

fn get_url<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_arg(c, "path")?;
        let saltenv = saltenv_arg(c)?;
        let makedirs = c.bool_arg("makedirs", false)?;
        // Omitted or '': cache; None: return the contents; else a path.
        let dest = match c.args.named.get("dest") {
            None => Some(String::new()),
            Some(Value::Null) => None,
            Some(_) => Some(c.str_arg("dest")?.unwrap_or_default()),
        };
        let ret = match (source(&path, &saltenv), dest) {
            (Source::Other(scheme), _) => return Err(unsupported_scheme(&scheme)),
            (Source::Local(p), dest) => {
                if !Path::new(&p).is_absolute() {
                    return Err(ExecError::Execution(format!("Path '{p}' is not absolute")));
                }
                match dest {
                    None => read_str(Path::new(&p))?,
                    Some(_) => json!(p),
                }
            }
            (Source::Salt { path: rel, saltenv }, Some(d)) if !d.is_empty() => {
                get_file_to(&c.ctx.files, &saltenv, &rel, &d, makedirs).await?
            }
            (Source::Salt { .. }, dest) => match cache_one(c, &path, &saltenv).await? {
                Some(p) if dest.is_none() => read_str(Path::new(&p))?,
                Some(p) => json!(p),
                None => json!(false),
            },
        };
        if ret == json!(false) || ret == json!("") {
            warn!(path = %path, saltenv = %saltenv, "Unable to fetch file");
            return Ok(Outcome::ok(json!(false)));
        }
        Ok(Outcome::ok(ret))
    })
}

fn get_file_str<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_arg(c, "path")?;
        match cache_one(c, &path, &saltenv_arg(c)?).await? {
            Some(p) => Ok(Outcome::ok(read_str(Path::new(&p))?)),
            None => Ok(Outcome::ok(json!(false))),
        }
    })
}

fn cache_file<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_arg(c, "path")?;
        Ok(Outcome::ok(
            match cache_one(c, &path, &saltenv_arg(c)?).await? {
                Some(p) => json!(p),
                None => json!(false),
            },
        ))
    })
}

/// A list argument given as a list or as comma-separated text.
fn list_arg(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
        Some(other) => vec![other.to_string()],
        None => vec![],
    }
}

fn cache_files<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let saltenv = saltenv_arg(c)?;
        let mut out = Vec::new();
        for p in list_arg(c.arg("paths")) {
            out.push(match cache_one(c, &p, &saltenv).await? {
                Some(p) => json!(p),
                None => json!(false),
            });
        }
        Ok(Outcome::ok(Value::Array(out)))
    })
}

/// One include/exclude pattern: `E@regex` (searched) or a glob (whole path).
enum Pat {
    Glob(String),
    Regex(regex::Regex),
}

impl Pat {
    fn matches(&self, path: &str) -> bool {
        match self {
            Pat::Glob(g) => brine_common::glob::fnmatch(g, path),
            Pat::Regex(r) => r.is_match(path),
        }
    }
}

fn patterns(c: &Call<'_>, name: &str) -> Result<Vec<Pat>, ExecError> {
    list_arg(c.arg(name))
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| match p.strip_prefix("E@") {
            Some(re) => regex::RegexBuilder::new(re)
                .size_limit(1 << 20)
                .build()
                .map(Pat::Regex)
                .map_err(|e| ExecError::InvalidArgs(format!("{name}: bad regex {re:?}: {e}"))),
            None => Ok(Pat::Glob(p)),
        })
        .collect()
}

/// Salt's `check_include_exclude`: included by any include pattern (all
/// when there is none) and by no exclude pattern.
fn included(path: &str, include: &[Pat], exclude: &[Pat]) -> bool {
    (include.is_empty() || include.iter().any(|p| p.matches(path)))
        && !exclude.iter().any(|p| p.matches(path))
}

fn cache_dir<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let raw = path_arg(c, "path")?;
        let Source::Salt { path, saltenv } = source(&raw, &saltenv_arg(c)?) else {
            return Err(salt_only(&raw));
        };
        let include = patterns(c, "include_pat")?;
        let exclude = patterns(c, "exclude_pat")?;
        let fc = &c.ctx.files;
        let dir = files::clean_path(&path).map_err(exec_err)?;
        let mut out = Vec::new();
        for fn_ in fc
            .list(&saltenv, &dir, ListKind::Files)
            .await
            .map_err(exec_err)?
        {
            if inside(&fn_, &dir).is_none() || !included(&fn_, &include, &exclude) {
                continue;
            }
            if let Some(p) = fc.cache_file(&saltenv, &fn_).await.map_err(exec_err)? {
                out.push(json!(p.display().to_string()));
            }
        }
        if c.bool_arg("include_empty", false)? {
            for d in fc
                .list(&saltenv, &dir, ListKind::EmptyDirs)
                .await
                .map_err(exec_err)?
            {
                if inside(&d, &dir).is_none() {
                    continue;
                }
                let local = fc.cache_path(&saltenv, &d).map_err(exec_err)?;
                files::make_dirs(&local, 0o700).map_err(exec_err)?;
                out.push(json!(local.display().to_string()));
            }
        }
        Ok(Outcome::ok(Value::Array(out)))
    })
}

async fn listing(c: &Call<'_>, kind: ListKind) -> Result<Outcome, ExecError> {
    let saltenv = saltenv_arg(c)?;
    let prefix = c.str_arg("prefix")?.unwrap_or_default();
    let list = c
        .ctx
        .files
        .list(&saltenv, &prefix, kind)
        .await
        .map_err(exec_err)?;
    Ok(Outcome::ok(json!(list)))
}

fn list_master<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(listing(c, ListKind::Files))
}

fn list_master_dirs<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(listing(c, ListKind::Dirs))
}

fn envs<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let list = c
            .ctx
            .files
            .list("", "", ListKind::Envs)
            .await
            .map_err(exec_err)?;
        Ok(Outcome::ok(json!(list)))
    })
}

fn list_states<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let saltenv = saltenv_arg(c)?;
        let list = c
            .ctx
            .files
            .list(&saltenv, "", ListKind::Files)
            .await
            .map_err(exec_err)?;
        Ok(Outcome::ok(json!(brine_common::render::top::sls_names(
            &list
        ))))
    })
}

fn list_minion<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let saltenv = saltenv_arg(c)?;
        let list = c.ctx.files.list_local(&saltenv).map_err(exec_err)?;
        Ok(Outcome::ok(json!(list)))
    })
}

fn is_cached<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_arg(c, "path")?;
        let found = c.ctx.files.is_cached(&saltenv_arg(c)?, &path);
        Ok(Outcome::ok(json!(found
            .map(|p| p.display().to_string())
            .unwrap_or_default())))
    })
}

fn hash_of(hsum: String) -> Value {
    json!({"hash_type": "sha256", "hsum": hsum})
}

fn hash_file<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_arg(c, "path")?;
        let ret = match source(&path, &saltenv_arg(c)?) {
            Source::Salt { path, saltenv } => {
                match c.ctx.files.find(&saltenv, &path).await.map_err(exec_err)? {
                    Some(meta) => hash_of(meta.hash),
                    None => json!({}),
                }
            }
            Source::Local(p) => match files::hash_local(Path::new(&p)).await {
                Some(h) => hash_of(h),
                None => json!({}),
            },
            Source::Other(scheme) => return Err(unsupported_scheme(&scheme)),
        };
        Ok(Outcome::ok(ret))
    })
}

/// The path a push is stored under on the master: `upload_path` or the
/// file's own path, without leading `/`, normalised; `None` when it would
/// climb out (`..`) or names nothing.
pub fn push_target(local: &Path, upload_path: Option<&str>) -> Option<String> {
    let raw = match upload_path {
        Some(u) => u.to_string(),
        None => local.display().to_string(),
    };
    files::clean_path(raw.trim_start_matches('/')).ok()
}

fn push<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = path_arg(c, "path")?;
        let keep_symlinks = c.bool_arg("keep_symlinks", false)?;
        let remove_source = c.bool_arg("remove_source", false)?;
        let upload_path = c.str_arg("upload_path")?.filter(|u| !u.is_empty());
        let refuse = |why: &str| {
            warn!(path = %path, why, "cp.push refused");
            Ok(Outcome::ok(json!(false)))
        };
        if path.contains("../") || !Path::new(&path).is_absolute() {
            return refuse("the path must be absolute, without '../'");
        }
        let local = if keep_symlinks {
            PathBuf::from(&path)
        } else {
            match std::fs::canonicalize(&path) {
                Ok(p) => p,
                Err(_) => return refuse("no such file"),
            }
        };
        if !local.is_file() {
            return refuse("not a regular file");
        }
        if upload_path.as_deref().is_some_and(|u| u.contains("../")) {
            return refuse("upload_path must not contain '../'");
        }
        let Some(remote) = push_target(&local, upload_path.as_deref()) else {
            return refuse("the upload path leaves the minion's directory on the master");
        };
        match c
            .ctx
            .files
            .push(&local, &remote, files::CHUNK_SIZE as usize)
            .await
        {
            Ok(()) => {}
            Err(FileError::Refused { refusal, .. }) => {
                let hint = match refusal {
                    Refusal::FileRecvDisabled | Refusal::FileRecvTooLarge { .. } => {
                        " (ensure the master has file_recv: True and that the file is not larger than file_recv_max_size)"
                    }
                    _ => "",
                };
                warn!(path = %path, reason = %refusal, "cp.push failed: the master refused the transfer{hint}");
                return Ok(Outcome::ok(json!(false)));
            }
            Err(e) => {
                warn!(path = %path, error = %e, "cp.push failed");
                return Ok(Outcome::ok(json!(false)));
            }
        }
        info!(path = %local.display(), to = %remote, "cp.push done");
        if remove_source {
            if let Err(e) = std::fs::remove_file(&local) {
                warn!(path = %local.display(), error = %e, "cp.push failed to remove the source file");
                return Ok(Outcome::ok(json!(false)));
            }
        }
        Ok(Outcome::ok(json!(true)))
    })
}

/// `mode` of `cp.recv_chunked`: an int (Salt sends one), or text in octal
/// (`"0644"`, `"0o644"`) or decimal.
fn mode_arg(v: Option<&Value>) -> Result<Option<u32>, ExecError> {
    let bad = |v: &Value| ExecError::InvalidArgs(format!("mode must be a file mode, not {v}"));
    match v {
        None => Ok(None),
        Some(n @ Value::Number(_)) => n
            .as_u64()
            .and_then(|m| u32::try_from(m).ok())
            .filter(|m| *m <= 0o7777)
            .map(Some)
            .ok_or_else(|| bad(n)),
        Some(s @ Value::String(t)) => {
            let t = t.trim();
            let parsed = if let Some(o) = t.strip_prefix("0o") {
                u32::from_str_radix(o, 8)
            } else if t.len() > 1 && t.starts_with('0') {
                u32::from_str_radix(&t[1..], 8)
            } else {
                t.parse::<u32>()
            };
            parsed
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Some)
                .ok_or_else(|| bad(s))
        }
        Some(other) => Err(bad(other)),
    }
}

/// What `cp.recv_chunked` does, on a blocking thread: `Ok(true)`, or the
/// error text Salt returns (with retcode 1 unless `soft`).
fn recv_chunk(
    dest: &Path,
    chunk: Option<&str>,
    append: bool,
    compressed: bool,
    mode: Option<u32>,
) -> Result<(), (String, bool)> {
    let Some(chunk) = chunk else {
        return match std::fs::create_dir_all(dest) {
            Ok(()) => Ok(()),
            Err(_) if dest.is_file() => Err(("Path exists and is a file".to_string(), true)),
            Err(e) => Err((e.to_string(), false)),
        };
    };
    let data = base64::engine::general_purpose::STANDARD
        .decode(chunk.trim())
        .map_err(|e| (format!("chunk is not base64: {e}"), false))?;
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .append(append)
            .truncate(!append)
            .open(dest)
    };
    let mut f = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir).map_err(|e| (e.to_string(), false))?;
            }
            open().map_err(|e| (e.to_string(), false))?
        }
        Err(e) => return Err((e.to_string(), false)),
    };
    if compressed {
        let gz = flate2::read::GzDecoder::new(data.as_slice());
        let mut limited = std::io::Read::take(gz, MAX_CHUNK_INFLATED + 1);
        let n = std::io::copy(&mut limited, &mut f)
            .map_err(|e| (format!("chunk does not decompress: {e}"), false))?;
        if n > MAX_CHUNK_INFLATED {
            return Err((
                format!("chunk inflates to more than {MAX_CHUNK_INFLATED} bytes"),
                false,
            ));
        }
    } else {
        f.write_all(&data).map_err(|e| (e.to_string(), false))?;
    }
    if !append {
        if let Some(m) = mode {
            std::fs::set_permissions(dest, std::fs::Permissions::from_mode(m))
                .map_err(|e| (e.to_string(), false))?;
        }
    }
    Ok(())
}

fn recv_chunked<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let dest = PathBuf::from(path_arg(c, "dest")?);
        let chunk = match c.arg("chunk") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(ExecError::InvalidArgs(format!(
                    "chunk must be base64 text or None, not {other}"
                )))
            }
        };
        let append = c.bool_arg("append", false)?;
        let compressed = c.bool_arg("compressed", true)?;
        let mode = mode_arg(c.arg("mode"))?;
        let d2 = dest.clone();
        let done = tokio::task::spawn_blocking(move || {
            recv_chunk(&d2, chunk.as_deref(), append, compressed, mode)
        })
        .await
        .map_err(|e| ExecError::Execution(format!("recv_chunked failed: {e}")))?;
        Ok(match done {
            Ok(()) => Outcome::ok(json!(true)),
            Err((msg, true)) => Outcome::ok(json!(msg)),
            Err((msg, false)) => {
                warn!(dest = %dest.display(), error = %msg, "cp.recv_chunked failed");
                Outcome::with_retcode(json!(msg), 1)
            }
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::testutil::ctx;
    use super::super::{Ctx, Outcome, Registry};
    use super::*;
    use crate::files::fake::FakeMaster;
    use crate::files::Ask;
    use std::sync::Arc;

    struct World {
        dir: tempfile::TempDir,
        master: Arc<FakeMaster>,
    }

    impl World {
        fn new() -> World {
            let dir = tempfile::tempdir().unwrap();
            for d in [
                "srv/base/web/conf",
                "srv/base/web/empty",
                "srv/dev",
                "cache",
            ] {
                std::fs::create_dir_all(dir.path().join(d)).unwrap();
            }
            let w = |p: &str, s: &str| std::fs::write(dir.path().join(p), s).unwrap();
            w("srv/base/top.sls", "base: {}");
            w("srv/base/web/init.sls", "x");
            w("srv/base/web/conf/app.conf", "port: 80\n");
            w("srv/base/web/index.html", "<h1>hi</h1>");
            w("srv/base/webby.txt", "not in web/");
            w("srv/dev/only-dev.txt", "dev");
            let mut m = FakeMaster::serving("base", &dir.path().join("srv/base"));
            m.roots.insert("dev".into(), dir.path().join("srv/dev"));
            World {
                dir,
                master: Arc::new(m),
            }
        }

        fn path(&self, p: &str) -> PathBuf {
            self.dir.path().join(p)
        }

        fn ctx(&self, fun: &str, args: Vec<Value>, kwargs: Value) -> Ctx {
            let mut c = ctx(fun, args, kwargs);
            let asker: Arc<dyn Ask> = self.master.clone();
            c.files = Arc::new(FileClient::new(Some(asker), self.path("cache")));
            c
        }

        async fn run(&self, fun: &str, args: Vec<Value>, kwargs: Value) -> Outcome {
            Registry::new().call(self.ctx(fun, args, kwargs)).await
        }
    }

    #[tokio::test]
    async fn get_file_shapes() {
        let w = World::new();
        let dest = w.path("out/app.conf");
        // Missing directory, no makedirs: False; with makedirs: the path.
        let o = w
            .run(
                "cp.get_file",
                vec![json!("salt://web/conf/app.conf"), json!(dest)],
                json!({}),
            )
            .await;
        assert_eq!(o, Outcome::ok(json!(false)));
        let o = w
            .run(
                "cp.get_file",
                vec![json!("salt://web/conf/app.conf"), json!(dest)],
                json!({"makedirs": true}),
            )
            .await;
        assert_eq!(o, Outcome::ok(json!(dest.display().to_string())));
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "port: 80\n");
        // A directory destination keeps the name; the URL's saltenv wins.
        let o = w
            .run(
                "cp.get_file",
                vec![
                    json!("salt://only-dev.txt?saltenv=dev"),
                    json!(format!("{}/", w.path("out").display())),
                ],
                json!({"saltenv": "base"}),
            )
            .await;
        assert_eq!(
            o.ret,
            json!(w.path("out/only-dev.txt").display().to_string())
        );
        // A missing source is '' (even when the directory is missing too).
        let o = w
            .run(
                "cp.get_file",
                vec![json!("salt://nope"), json!(w.path("nodir/x"))],
                json!({}),
            )
            .await;
        assert_eq!(o, Outcome::ok(json!("")));
        // Hostile paths are errors; so is a template engine Brine lacks.
        let o = w
            .run(
                "cp.get_file",
                vec![json!("salt://../../etc/passwd"), json!(w.path("out/"))],
                json!({}),
            )
            .await;
        assert!(!o.success);
        assert!(
            o.ret.as_str().unwrap().contains("path not allowed"),
            "{o:?}"
        );
        let o = w
            .run(
                "cp.get_file",
                vec![json!("salt://top.sls"), json!(w.path("out/t"))],
                json!({"template": "mako"}),
            )
            .await;
        assert!(
            o.ret.as_str().unwrap().contains("'mako' is not available"),
            "{o:?}"
        );
        assert_eq!(w.master.chunks_asked(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn template_jinja_renders_with_grains_pillar_and_imports() {
        let w = World::new();
        std::fs::write(
            w.path("srv/base/web/app.j2"),
            "{% from 'web/map.jinja' import port %}id={{ grains['id'] }} port={{ port }} \
             role={{ pillar.get('role', 'none') }} env={{ saltenv }}\n",
        )
        .unwrap();
        std::fs::write(w.path("srv/base/web/map.jinja"), "{% set port = 8080 %}").unwrap();
        let c = w.ctx(
            "cp.get_file",
            vec![json!("salt://web/app.j2"), json!(w.path("out/app.conf"))],
            json!({"template": "jinja", "makedirs": true}),
        );
        *c.grains.write().unwrap() = json!({"id": "m1"});
        c.pillar.store(json!({"role": "web"}));
        let o = Registry::new().call(c).await;
        assert!(o.success, "{o:?}");
        assert_eq!(
            std::fs::read_to_string(w.path("out/app.conf")).unwrap(),
            "id=m1 port=8080 role=web env=base\n"
        );
        // A template error names the file and the line, nothing half-done
        // passes for success.
        std::fs::write(w.path("srv/base/web/bad.j2"), "ok\n{{ nope | nofilter }}\n").unwrap();
        let o = w
            .run(
                "cp.get_file",
                vec![json!("salt://web/bad.j2"), json!(w.path("out/bad"))],
                json!({"template": "jinja"}),
            )
            .await;
        assert!(!o.success, "{o:?}");
        let msg = o.ret.as_str().unwrap();
        assert!(
            msg.contains("web/bad.j2") && msg.contains("line 2"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn get_dir_copies_the_directory_with_empty_dirs() {
        let w = World::new();
        let dest = w.path("copy");
        let o = w
            .run(
                "cp.get_dir",
                vec![json!("salt://web/"), json!(dest)],
                json!({}),
            )
            .await;
        let want: Vec<String> = [
            "copy/web/conf/app.conf",
            "copy/web/empty",
            "copy/web/index.html",
            "copy/web/init.sls",
        ]
        .iter()
        .map(|p| w.path(p).display().to_string())
        .collect();
        assert_eq!(o, Outcome::ok(json!(want)));
        assert!(w.path("copy/web/empty").is_dir());
        assert!(!w.path("copy/webby.txt").exists(), "web/ is not webby");
    }

    #[tokio::test]
    async fn a_hostile_listing_writes_nothing_outside() {
        let mut w = World::new();
        Arc::get_mut(&mut w.master).unwrap().extra_files =
            vec!["web/../../../escaped.txt".into(), "web//../x".into()];
        for (fun, args) in [
            (
                "cp.get_dir",
                vec![json!("salt://web"), json!(w.path("copy"))],
            ),
            ("cp.cache_dir", vec![json!("salt://web")]),
        ] {
            let o = w.run(fun, args, json!({})).await;
            assert!(!o.success, "{fun}: {o:?}");
            assert!(
                o.ret.as_str().unwrap().contains("path not allowed"),
                "{o:?}"
            );
        }
        assert!(!w.path("escaped.txt").exists());
        assert!(!w.dir.path().parent().unwrap().join("escaped.txt").exists());
    }

    #[tokio::test]
    async fn cache_file_cache_dir_and_is_cached() {
        let w = World::new();
        let o = w
            .run("cp.cache_file", vec![json!("salt://top.sls")], json!({}))
            .await;
        let cached = w.path("cache/files/base/top.sls").display().to_string();
        assert_eq!(o.ret, json!(cached));
        let o = w
            .run("cp.cache_file", vec![json!("salt://nope")], json!({}))
            .await;
        assert_eq!(o, Outcome::ok(json!(false)));
        let o = w
            .run("cp.is_cached", vec![json!("salt://top.sls")], json!({}))
            .await;
        assert_eq!(o.ret, json!(cached));
        let o = w
            .run(
                "cp.is_cached",
                vec![json!("salt://web/init.sls")],
                json!({}),
            )
            .await;
        assert_eq!(o.ret, json!(""));

        let o = w
            .run(
                "cp.cache_dir",
                vec![json!("salt://web")],
                json!({"exclude_pat": "*.html", "include_empty": true}),
            )
            .await;
        let got: Vec<String> = serde_json::from_value(o.ret).unwrap();
        let rel: Vec<String> = got
            .iter()
            .map(|p| {
                p.strip_prefix(&w.path("cache/files/base/").display().to_string())
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(rel, vec!["web/conf/app.conf", "web/init.sls", "web/empty"]);
        let o = w
            .run(
                "cp.cache_dir",
                vec![json!("salt://web")],
                json!({"include_pat": "E@\\.conf$"}),
            )
            .await;
        assert_eq!(o.ret.as_array().map(Vec::len), Some(1));

        let o = w
            .run(
                "cp.cache_files",
                vec![json!("salt://top.sls,salt://nope")],
                json!({}),
            )
            .await;
        assert_eq!(o.ret, json!([cached, false]));
        let o = w
            .run(
                "cp.get_file_str",
                vec![json!("salt://web/index.html")],
                json!({}),
            )
            .await;
        assert_eq!(o.ret, json!("<h1>hi</h1>"));
        let o = w.run("cp.list_minion", vec![], json!({})).await;
        assert_eq!(o.ret.as_array().map(Vec::len), Some(4));
    }

    #[tokio::test]
    async fn get_url_salt_and_local() {
        let w = World::new();
        let o = w
            .run("cp.get_url", vec![json!("salt://top.sls")], json!({}))
            .await;
        assert_eq!(
            o.ret,
            json!(w.path("cache/files/base/top.sls").display().to_string())
        );
        let o = w
            .run(
                "cp.get_url",
                vec![json!("salt://top.sls"), Value::Null],
                json!({}),
            )
            .await;
        assert_eq!(o.ret, json!("base: {}"));
        let dest = w.path("u.txt");
        let o = w
            .run(
                "cp.get_url",
                vec![json!("salt://top.sls"), json!(dest)],
                json!({}),
            )
            .await;
        assert_eq!(o.ret, json!(dest.display().to_string()));
        let local = w.path("srv/dev/only-dev.txt").display().to_string();
        let o = w
            .run(
                "cp.get_url",
                vec![json!(format!("file://{local}")), json!("/ignored")],
                json!({}),
            )
            .await;
        assert_eq!(o.ret, json!(local));
        let o = w
            .run("cp.get_url", vec![json!(local), Value::Null], json!({}))
            .await;
        assert_eq!(o.ret, json!("dev"));
        let o = w
            .run("cp.get_url", vec![json!("salt://nope")], json!({}))
            .await;
        assert_eq!(o, Outcome::ok(json!(false)));
        let o = w
            .run("cp.get_url", vec![json!("http://example.com/x")], json!({}))
            .await;
        assert!(o
            .ret
            .as_str()
            .unwrap()
            .contains("unsupported URL scheme 'http'"));
        let o = w
            .run("cp.get_url", vec![json!("relative/x")], json!({}))
            .await;
        assert_eq!(o.ret, json!("ERROR: Path 'relative/x' is not absolute"));
    }

    #[tokio::test]
    async fn listings_states_and_hashes() {
        let w = World::new();
        let o = w.run("cp.list_master", vec![], json!({})).await;
        assert_eq!(
            o.ret,
            json!([
                "top.sls",
                "web/conf/app.conf",
                "web/index.html",
                "web/init.sls",
                "webby.txt"
            ])
        );
        let o = w
            .run("cp.list_master", vec![], json!({"saltenv": "dev"}))
            .await;
        assert_eq!(o.ret, json!(["only-dev.txt"]));
        let o = w
            .run("cp.list_master_dirs", vec![], json!({"prefix": "web/"}))
            .await;
        assert_eq!(o.ret, json!(["web/conf", "web/empty"]));
        let o = w.run("cp.list_states", vec![], json!({})).await;
        assert_eq!(o.ret, json!(["top", "web"]));
        let o = w.run("cp.envs", vec![], json!({})).await;
        assert_eq!(o.ret, json!(["base", "dev"]));

        let o = w
            .run("cp.hash_file", vec![json!("salt://webby.txt")], json!({}))
            .await;
        let want = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"not in web/"));
        assert_eq!(o.ret, json!({"hash_type": "sha256", "hsum": want}));
        let local = w.path("srv/base/webby.txt");
        let o = w.run("cp.hash_file", vec![json!(local)], json!({})).await;
        assert_eq!(o.ret["hsum"], json!(want));
        let o = w
            .run("cp.hash_file", vec![json!("salt://nope")], json!({}))
            .await;
        assert_eq!(o.ret, json!({}));
    }

    #[test]
    fn state_names_from_paths() {
        let files: Vec<String> = [
            "top.sls",
            "a/b.sls",
            "a/init.sls",
            "a/b/init.sls",
            "a/b/c.txt",
            "init.sls",
            "x.sls.bak",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            brine_common::render::top::sls_names(&files),
            vec!["a", "a.b", "init", "top"]
        );
    }

    #[tokio::test]
    async fn push_arguments_and_refusals() {
        let w = World::new();
        let local = w.path("push-me.txt");
        std::fs::write(&local, "data").unwrap();
        let o = w.run("cp.push", vec![json!(local)], json!({})).await;
        assert_eq!(o, Outcome::ok(json!(true)));
        let pushed = w.master.pushed.lock().unwrap().clone();
        assert_eq!(pushed.len(), 1);
        assert_eq!(
            pushed[0].path,
            local.canonicalize().unwrap().display().to_string()[1..]
        );
        assert!(pushed[0].last);

        let o = w
            .run(
                "cp.push",
                vec![json!(local)],
                json!({"upload_path": "/new/path/f", "remove_source": true}),
            )
            .await;
        assert_eq!(o.ret, json!(true));
        assert_eq!(w.master.pushed.lock().unwrap()[1].path, "new/path/f");
        assert!(!local.exists(), "source removed");

        for (args, kwargs) in [
            (vec![json!("relative.txt")], json!({})),
            (vec![json!("/tmp/../etc/passwd")], json!({})),
            (vec![json!("/no/such/file")], json!({})),
            (
                vec![json!(w.path("srv/base/top.sls"))],
                json!({"upload_path": "../../x"}),
            ),
        ] {
            let o = w.run("cp.push", args.clone(), kwargs).await;
            assert_eq!(o, Outcome::ok(json!(false)), "{args:?}");
        }
        assert_eq!(w.master.pushed.lock().unwrap().len(), 2);

        let dir = tempfile::tempdir().unwrap();
        let refusing = Arc::new(FakeMaster {
            refuse_push: Some(Refusal::FileRecvDisabled),
            ..FakeMaster::default()
        });
        let mut c = ctx(
            "cp.push",
            vec![json!(w.path("srv/base/top.sls"))],
            json!({}),
        );
        let asker: Arc<dyn Ask> = refusing;
        c.files = Arc::new(FileClient::new(Some(asker), dir.path().to_path_buf()));
        assert_eq!(Registry::new().call(c).await, Outcome::ok(json!(false)));
    }

    #[test]
    fn push_target_rules() {
        assert_eq!(
            push_target(Path::new("/etc/fstab"), None).as_deref(),
            Some("etc/fstab")
        );
        assert_eq!(
            push_target(Path::new("/etc/fstab"), Some("//a/./b")).as_deref(),
            Some("a/b")
        );
        assert_eq!(push_target(Path::new("/etc/fstab"), Some("a/..")), None);
        assert_eq!(push_target(Path::new("/etc/fstab"), Some("/")), None);
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn b64(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    #[tokio::test]
    async fn recv_chunked_append_compressed_mode_and_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("new/sub/file.txt");
        let run = |args: Vec<Value>| async move {
            Registry::new()
                .call(ctx("cp.recv_chunked", args, json!({})))
                .await
        };
        // First chunk, compressed, with a mode; parent dirs are created.
        let o = run(vec![
            json!(dest),
            json!(b64(&gz(b"hello "))),
            json!(false),
            json!(true),
            json!(0o600),
        ])
        .await;
        assert_eq!(o, Outcome::ok(json!(true)));
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Second chunk appended, uncompressed; the mode is not touched.
        let o = run(vec![
            json!(dest),
            json!(b64(b"world")),
            json!(true),
            json!(false),
            json!(0o644),
        ])
        .await;
        assert_eq!(o.ret, json!(true));
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "hello world");
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Not appending truncates.
        let o = run(vec![json!(dest), json!(b64(&gz(b"new")))]).await;
        assert_eq!(o.ret, json!(true));
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        // None makes a directory; over a file it is Salt's message.
        let d = dir.path().join("emptydir");
        assert_eq!(run(vec![json!(d), Value::Null]).await.ret, json!(true));
        assert!(d.is_dir());
        let o = run(vec![json!(dest), Value::Null]).await;
        assert_eq!(o.ret, json!("Path exists and is a file"));
        // Bad data: an error string and retcode 1.
        let o = run(vec![json!(dest), json!("!!not base64!!")]).await;
        assert_eq!(o.retcode, 1);
        assert!(o.ret.as_str().unwrap().contains("base64"));
        let o = run(vec![json!(dest), json!(b64(b"not gzip"))]).await;
        assert_eq!(o.retcode, 1);
        let o = run(vec![
            json!(dest),
            json!(b64(b"x")),
            json!(false),
            json!(false),
            json!("0755"),
        ])
        .await;
        assert_eq!(o.ret, json!(true));
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }

    #[test]
    fn sources_and_modes() {
        assert_eq!(
            source("salt://a?saltenv=dev", "base"),
            Source::Salt {
                path: "a".into(),
                saltenv: "dev".into()
            }
        );
        assert_eq!(
            source("file:///etc/x", "base"),
            Source::Local("/etc/x".into())
        );
        assert_eq!(source("/etc/x", "base"), Source::Local("/etc/x".into()));
        assert_eq!(source("https://h/x", "base"), Source::Other("https".into()));
        assert_eq!(mode_arg(Some(&json!(420))).unwrap(), Some(0o644));
        assert_eq!(mode_arg(Some(&json!("0644"))).unwrap(), Some(0o644));
        assert_eq!(mode_arg(Some(&json!("0o755"))).unwrap(), Some(0o755));
        assert!(mode_arg(Some(&json!(-1))).is_err());
        assert!(mode_arg(Some(&json!("rwx"))).is_err());
    }

    #[tokio::test]
    async fn without_a_master_salt_urls_fail_clearly() {
        let o =
            super::super::testutil::run("cp.cache_file", vec![json!("salt://x")], json!({})).await;
        assert!(!o.success);
        assert!(
            o.ret.as_str().unwrap().contains("no connection to it"),
            "{o:?}"
        );
    }
}
