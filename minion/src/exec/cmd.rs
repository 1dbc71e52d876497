//! The `cmd` module: run shell commands (`cmd.run`, `cmd.run_all`,
//! `cmd.retcode`) and scripts (`cmd.script`).
//!
//! A command runs as `SHELL -c CMD` in its own process group, so a timeout or
//! a cancelled job kills the whole group (the shell and everything it
//! started), and the group is also killed if the call itself is dropped. The
//! process's exit code becomes the job's retcode, as Salt does; a process
//! killed by signal N reports `-N` like Python's `returncode`.
//!
//! `cmd.script` fetches its source through the file client (`salt://`, or
//! a local path), copies it into a private directory of its own (mode
//! 0700, removed afterwards) as an executable only its user may run, and
//! runs it with the same runner, returning `cmd.run_all`'s shape.

use super::{opt, req, Call, CallFuture, ExecError, Function, Outcome};
use crate::files::parse_salt_url;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Pid, User};
use serde_json::{json, Value};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Shell used when the call names none.
pub const DEFAULT_SHELL: &str = "/bin/sh";
/// Output kept per stream; the rest is read and dropped so a chatty command
/// cannot exhaust the minion's memory.
pub const MAX_OUTPUT: usize = 16 * 1024 * 1024;

const PARAMS: &[super::Param] = &[
    req("cmd"),
    opt("cwd"),
    opt("stdin"),
    opt("runas"),
    opt("shell"),
    opt("python_shell"),
    opt("env"),
    opt("clean_env"),
    opt("rstrip"),
    opt("timeout"),
    opt("ignore_retcode"),
];

// The three docstrings share the parameter text; `concat!` needs literals,
// hence a macro.
macro_rules! with_args_doc {
    ($head:literal, $example:literal) => {
        concat!(
            $head,
            "\n\n",
            ":param str cmd: The command to run. ex: ``ls -lart /home``\n\n",
            ":param str cwd: The directory from which to execute the command. Defaults\n",
            "    to the home directory of the user specified by ``runas`` (or of the user\n",
            "    the minion runs as).\n\n",
            ":param str stdin: A string of standard input for the command.\n\n",
            ":param str runas: Run the command as this user (the minion must run as root).\n\n",
            ":param str shell: Shell to execute under. Defaults to ``/bin/sh``.\n\n",
            ":param bool python_shell: Accepted for compatibility; commands always run\n",
            "    through the shell.\n\n",
            ":param dict env: Environment variables to set for the command.\n\n",
            ":param bool clean_env: Start from an empty environment and set only ``env``.\n\n",
            ":param bool rstrip: Strip all whitespace off the end of output (default True).\n\n",
            ":param int timeout: Seconds the command may run; it is then killed and the\n",
            "    call fails.\n\n",
            ":param bool ignore_retcode: Do not let a non-zero exit code fail the job.\n",
            "\nCLI Example:\n\n",
            $example
        )
    };
}

const SCRIPT_PARAMS: &[super::Param] = &[
    req("source"),
    opt("args"),
    opt("cwd"),
    opt("stdin"),
    opt("runas"),
    opt("group"),
    opt("shell"),
    opt("python_shell"),
    opt("env"),
    opt("template"),
    opt("umask"),
    opt("output_encoding"),
    opt("output_loglevel"),
    opt("log_callback"),
    opt("hide_output"),
    opt("timeout"),
    opt("reset_system_locale"),
    opt("saltenv"),
    opt("use_vt"),
    opt("bg"),
    opt("password"),
    opt("success_retcodes"),
    opt("success_stdout"),
    opt("success_stderr"),
    // Salt passes these on to the runner through **kwargs.
    opt("clean_env"),
    opt("rstrip"),
    opt("ignore_retcode"),
];

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "cmd.run",
        params: PARAMS,
        varargs: false,
        kwargs: false,
        doc: with_args_doc!(
            "Execute the passed command and return the output as a string (stdout and\n\
             stderr merged, trailing whitespace stripped). The command's exit code\n\
             becomes the job's retcode.",
            "    salt '*' cmd.run \"ls -l | awk '/foo/{print \\$2}'\"\n"
        ),
        handler: run,
    },
    Function {
        name: "cmd.run_all",
        params: PARAMS,
        varargs: false,
        kwargs: false,
        doc: with_args_doc!(
            "Execute the passed command and return a dict of return data:\n\
             ``pid``, ``retcode``, ``stdout`` and ``stderr``.",
            "    salt '*' cmd.run_all \"ls -l | awk '/foo/{print \\$2}'\"\n"
        ),
        handler: run_all,
    },
    Function {
        name: "cmd.retcode",
        params: PARAMS,
        varargs: false,
        kwargs: false,
        doc: with_args_doc!(
            "Execute a shell command and return the command's return code.",
            "    salt '*' cmd.retcode \"file /bin/bash\"\n"
        ),
        handler: retcode,
    },
    Function {
        name: "cmd.script",
        params: SCRIPT_PARAMS,
        varargs: false,
        kwargs: true,
        doc: "Download a script from the master (``salt://``) or take a local one and\n\
              execute it locally, returning ``pid``, ``retcode``, ``stdout`` and\n\
              ``stderr`` (the script's exit code is also the job's retcode). The\n\
              script runs from a private copy, so it can be written in any language\n\
              its ``#!`` line names.\n\n\
              :param str source: The location of the script: ``salt://spam/eggs`` or\n\
              \x20   an absolute local path.\n\n\
              :param str args: Command line args for the script, as a shell would read\n\
              \x20   them (a list is passed word for word). With ``python_shell=False``\n\
              \x20   they are split like a shell's words but never expanded.\n\n\
              :param str cwd: The directory to run the script in (default: the home of\n\
              \x20   ``runas``, or of the minion's user).\n\n\
              :param str stdin: A string of standard input for the script.\n\n\
              :param str runas: Run the script as this user (the minion must run as root).\n\n\
              :param str shell: Shell that starts the script. Defaults to ``/bin/sh``.\n\n\
              :param dict env: Environment variables to set for the script.\n\n\
              :param int timeout: Seconds the script may run; it is then killed.\n\n\
              :param str saltenv: The fileserver environment (the minion's ``saltenv``,\n\
              \x20   else ``base``).\n\n\
              :param bool hide_output: Return empty ``stdout`` and ``stderr``.\n\n\
              :param list success_retcodes: Exit codes that count as success (0).\n\n\
              A source that cannot be fetched returns ``pid`` 0, ``retcode`` 1 and\n\
              ``cache_error: True``.\n\n\
              CLI Example:\n\n    salt '*' cmd.script salt://scripts/runme.sh\n    \
              salt '*' cmd.script salt://scripts/runme.sh 'arg1 arg2 \"arg 3\"'\n",
        handler: script,
    },
];

/// What a finished (or killed) command produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutput {
    pub pid: u32,
    /// Exit code, `-N` if killed by signal N, 1 on timeout.
    pub retcode: i32,
    /// Everything the command wrote, when stdout and stderr are merged.
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// A fully-resolved command invocation.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    pub cmd: String,
    pub shell: String,
    pub cwd: Option<PathBuf>,
    pub stdin: Option<String>,
    pub runas: Option<String>,
    pub env: Vec<(String, String)>,
    pub clean_env: bool,
    pub rstrip: bool,
    pub timeout: Option<Duration>,
    /// stderr goes into the same pipe as stdout (`cmd.run`).
    pub merge_stderr: bool,
}

fn spec_from_call(c: &Call<'_>, merge_stderr: bool) -> Result<(RunSpec, bool), ExecError> {
    let cmd = c
        .str_arg("cmd")?
        .ok_or_else(|| ExecError::InvalidArgs("cmd must be given".into()))?;
    let (spec, ignore) = spec_options(c, merge_stderr)?;
    Ok((RunSpec { cmd, ..spec }, ignore))
}

/// Everything of a run but the command: the options `cmd.run` and
/// `cmd.script` share, and whether to ignore the retcode.
fn spec_options(c: &Call<'_>, merge_stderr: bool) -> Result<(RunSpec, bool), ExecError> {
    let env = match c.arg("env") {
        None => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Some(Value::String(s)) => {
            // The CLI passes `env='{"FOO": "bar"}'` as text.
            match serde_json::from_str::<serde_json::Map<String, Value>>(s) {
                Ok(m) => m
                    .into_iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => (k, s),
                        other => (k, other.to_string()),
                    })
                    .collect(),
                Err(_) => {
                    return Err(ExecError::InvalidArgs(
                        "env must be a dict of variable names to values".into(),
                    ))
                }
            }
        }
        Some(_) => {
            return Err(ExecError::InvalidArgs(
                "env must be a dict of variable names to values".into(),
            ))
        }
    };
    let timeout = match c.f64_arg("timeout")? {
        None => None,
        Some(t) if t > 0.0 => Some(Duration::try_from_secs_f64(t).map_err(|_| {
            ExecError::InvalidArgs(format!("timeout must be a positive number, not {t}"))
        })?),
        Some(t) => {
            return Err(ExecError::InvalidArgs(format!(
                "timeout must be a positive number, not {t}"
            )))
        }
    };
    let spec = RunSpec {
        cmd: String::new(),
        shell: c
            .str_arg("shell")?
            .unwrap_or_else(|| DEFAULT_SHELL.to_string()),
        cwd: c.str_arg("cwd")?.map(PathBuf::from),
        stdin: c.str_arg("stdin")?,
        runas: c.str_arg("runas")?.filter(|u| !u.is_empty()),
        env,
        clean_env: c.bool_arg("clean_env", false)?,
        rstrip: c.bool_arg("rstrip", true)?,
        timeout,
        merge_stderr,
    };
    Ok((spec, c.bool_arg("ignore_retcode", false)?))
}

fn run<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let (spec, ignore) = spec_from_call(c, true)?;
        let out = execute(&spec, &c.ctx.cancel).await?;
        Ok(job_outcome(json!(out.stdout), &out, ignore))
    })
}

fn run_all<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let (spec, ignore) = spec_from_call(c, false)?;
        let out = execute(&spec, &c.ctx.cancel).await?;
        let ret = json!({
            "pid": out.pid,
            "retcode": out.retcode,
            "stdout": out.stdout,
            "stderr": out.stderr,
        });
        Ok(job_outcome(ret, &out, ignore))
    })
}

fn retcode<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let (spec, ignore) = spec_from_call(c, true)?;
        let out = execute(&spec, &c.ctx.cancel).await?;
        Ok(job_outcome(json!(out.retcode), &out, ignore))
    })
}

fn job_outcome(ret: Value, out: &RunOutput, ignore_retcode: bool) -> Outcome {
    if out.retcode != 0 && !ignore_retcode {
        tracing::warn!(
            retcode = out.retcode,
            timed_out = out.timed_out,
            "command failed"
        );
    }
    Outcome::with_retcode(ret, if ignore_retcode { 0 } else { out.retcode })
}

/// `s` as one word for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

/// Split `s` into words as Python's `shlex.split` does (POSIX rules:
/// quotes, backslash escapes, no expansion).
pub fn shell_split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    // Each round consumes at least one character.
    while let Some(ch) = chars.next() {
        match ch {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("No closing quotation".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("No closing quotation".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("No closing quotation".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err("No escaped character".into()),
            },
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The command line that runs `script` with `args`: Salt's remote default
/// (`python_shell`) hands the args text to the shell; otherwise each word
/// is quoted so nothing in it is expanded. A list is passed word for word.
fn script_command(
    script: &std::path::Path,
    args: Option<&Value>,
    python_shell: bool,
) -> Result<String, ExecError> {
    let mut cmd = sh_quote(&script.display().to_string());
    let words: Vec<String> = match args {
        None => return Ok(cmd),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => sh_quote(s),
                other => sh_quote(&other.to_string()),
            })
            .collect(),
        Some(v) => {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if python_shell {
                vec![text]
            } else {
                shell_split(&text)
                    .map_err(|e| ExecError::InvalidArgs(format!("args: {e}")))?
                    .iter()
                    .map(|w| sh_quote(w))
                    .collect()
            }
        }
    };
    for w in words.iter().filter(|w| !w.is_empty()) {
        cmd.push(' ');
        cmd.push_str(w);
    }
    Ok(cmd)
}

/// Salt's answer when the script cannot be fetched.
fn cache_error() -> Outcome {
    Outcome::with_retcode(
        json!({"pid": 0, "retcode": 1, "stdout": "", "stderr": "", "cache_error": true}),
        1,
    )
}

/// The script's source as a local file (fetched into the cache when it is
/// a `salt://` URL); `None` when there is no such file.
async fn script_source(
    c: &Call<'_>,
    source: &str,
    saltenv: &str,
) -> Result<Option<PathBuf>, ExecError> {
    if let Some(u) = parse_salt_url(source) {
        let env = u.saltenv.unwrap_or_else(|| saltenv.to_string());
        return c
            .ctx
            .files
            .cache_file(&env, &u.path)
            .await
            .map_err(|e| ExecError::Execution(e.to_string()));
    }
    let local = source.strip_prefix("file://").unwrap_or(source);
    if local.contains("://") {
        return Err(ExecError::Execution(format!(
            "unsupported script source '{source}': Brine fetches salt:// URLs and local paths"
        )));
    }
    if !std::path::Path::new(local).is_absolute() {
        return Err(ExecError::Execution(format!(
            "Path '{local}' is not absolute"
        )));
    }
    Ok(std::path::Path::new(local)
        .is_file()
        .then(|| PathBuf::from(local)))
}

/// A private copy of `src`, executable by the minion's user (or `runas`,
/// who then owns the directory and the copy) only.
fn private_copy(
    src: &std::path::Path,
    source: &str,
    runas: Option<&str>,
) -> Result<(tempfile::TempDir, PathBuf), ExecError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        ExecError::Execution(format!("cmd.script: {what}: {e}"))
    };
    let dir = tempfile::Builder::new()
        .prefix("brine-script-")
        .tempdir()
        .map_err(|e| fail("cannot create a private directory", &e))?;
    let name = parse_salt_url(source)
        .map(|u| u.path)
        .unwrap_or_else(|| source.to_string());
    let ext = std::path::Path::new(&name)
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let script = dir.path().join(format!("script{ext}"));
    std::fs::copy(src, &script).map_err(|e| fail(&format!("cannot copy {}", src.display()), &e))?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o500))
        .map_err(|e| fail("cannot make the copy executable", &e))?;
    if let Some(name) = runas {
        if nix::unistd::geteuid().is_root() {
            let user = User::from_name(name)
                .map_err(|e| fail(&format!("cannot look up user '{name}'"), &e))?
                .ok_or_else(|| ExecError::Execution(format!("user '{name}' is not available")))?;
            for p in [dir.path(), script.as_path()] {
                nix::unistd::chown(p, Some(user.uid), Some(user.gid))
                    .map_err(|e| fail(&format!("cannot give {} to {name}", p.display()), &e))?;
            }
        }
    }
    Ok((dir, script))
}

fn script<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let source = c
            .str_arg("source")?
            .ok_or_else(|| ExecError::InvalidArgs("source must be given".into()))?;
        let template = super::cp::wants_template(c)?;
        for unsupported in ["group", "umask"] {
            if c.str_arg(unsupported)?.is_some_and(|v| !v.is_empty()) {
                return Err(ExecError::Execution(format!(
                    "cmd.script: {unsupported} is not supported by Brine"
                )));
            }
        }
        if c.bool_arg("bg", false)? {
            return Err(ExecError::Execution(
                "cmd.script: bg=True is not supported by Brine".into(),
            ));
        }
        let saltenv = c
            .str_arg("saltenv")?
            .filter(|s| !s.is_empty())
            .or_else(|| c.ctx.saltenv.clone())
            .unwrap_or_else(|| "base".to_string());
        let Some(src) = script_source(c, &source, &saltenv).await? else {
            tracing::warn!(source = %source, saltenv = %saltenv, "cmd.script: source not found");
            return Ok(cache_error());
        };
        let (spec, ignore) = spec_options(c, false)?;
        let (dir, script) = private_copy(&src, &source, spec.runas.as_deref())?;
        if template {
            let name = parse_salt_url(&source).map_or(source.clone(), |u| u.path);
            super::cp::render_in_place(c, &script, &name, &saltenv).await?;
        }
        let cmd = script_command(&script, c.arg("args"), c.bool_arg("python_shell", true)?)?;
        let spec = RunSpec { cmd, ..spec };
        let out = execute(&spec, &c.ctx.cancel).await;
        drop(dir);
        let mut out = out?;
        let success: Vec<i64> = match c.arg("success_retcodes") {
            Some(Value::Array(v)) => v.iter().filter_map(Value::as_i64).collect(),
            Some(v) => v.as_i64().into_iter().collect(),
            None => Vec::new(),
        };
        if out.retcode != 0 && success.contains(&i64::from(out.retcode)) {
            out.retcode = 0;
        }
        let hide = c.bool_arg("hide_output", false)?;
        let ret = json!({
            "pid": out.pid,
            "retcode": out.retcode,
            "stdout": if hide { "" } else { out.stdout.as_str() },
            "stderr": if hide { "" } else { out.stderr.as_str() },
        });
        Ok(job_outcome(ret, &out, ignore))
    })
}

/// Kills the command's process group if the call is dropped before the
/// command was reaped.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn kill(&self) {
        if let Some(pgid) = self.0 {
            // ESRCH just means the group is already gone.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run a command to completion, timeout or cancellation.
pub async fn execute(
    spec: &RunSpec,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<RunOutput, ExecError> {
    let mut command = tokio::process::Command::new(&spec.shell);
    command.arg("-c").arg(&spec.cmd).process_group(0);
    if spec.clean_env {
        command.env_clear();
    }

    let mut home = None;
    if let Some(name) = &spec.runas {
        let user = User::from_name(name)
            .map_err(|e| ExecError::Execution(format!("cannot look up user '{name}': {e}")))?
            .ok_or_else(|| ExecError::Execution(format!("user '{name}' is not available")))?;
        let euid = nix::unistd::geteuid();
        if !euid.is_root() && euid != user.uid {
            return Err(ExecError::Execution(format!(
                "cannot run as '{name}': the minion is not running as root"
            )));
        }
        command
            .uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .env("HOME", &user.dir)
            .env("SHELL", &user.shell);
        home = Some(user.dir);
    } else if let Ok(Some(user)) = User::from_uid(nix::unistd::geteuid()) {
        home = Some(user.dir);
    }
    for (k, v) in &spec.env {
        command.env(k, v);
    }
    match &spec.cwd {
        Some(dir) if dir.is_absolute() && dir.is_dir() => {
            command.current_dir(dir);
        }
        Some(dir) => {
            return Err(ExecError::Execution(format!(
                "specified cwd '{}' either not absolute or does not exist",
                dir.display()
            )))
        }
        None => {
            if let Some(h) = home.filter(|h| h.is_dir()) {
                command.current_dir(h);
            }
        }
    }

    command.stdin(if spec.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut merged_reader = None;
    if spec.merge_stderr {
        let (reader, writer) = std::io::pipe().map_err(|e| spawn_error(spec, &e))?;
        let writer2 = writer.try_clone().map_err(|e| spawn_error(spec, &e))?;
        command
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer2));
        let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
            .map_err(|e| spawn_error(spec, &e))?;
        merged_reader = Some(receiver);
    } else {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
    }

    let mut child = command.spawn().map_err(|e| spawn_error(spec, &e))?;
    // The command object holds our copies of the pipe's write ends; drop it
    // now or the reader would never see end-of-file.
    drop(command);
    let pid = child.id().unwrap_or_default();
    let mut guard = GroupGuard(
        i32::try_from(pid)
            .ok()
            .filter(|p| *p > 0)
            .map(Pid::from_raw),
    );
    tracing::debug!(pid, cmd = %spec.cmd, "command started");

    if let (Some(input), Some(mut stdin)) = (spec.stdin.clone(), child.stdin.take()) {
        // Written concurrently so a command that does not read stdin cannot
        // block us; it ends when the pipe closes.
        tokio::spawn(async move {
            let _ = stdin.write_all(input.as_bytes()).await;
        });
    }
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    enum End {
        Exited(std::io::Result<std::process::ExitStatus>, Vec<u8>, Vec<u8>),
        TimedOut,
        Cancelled,
    }
    let end = {
        let work = async {
            let (out, err) = match merged_reader {
                Some(r) => (read_capped(Some(r)).await, Vec::new()),
                None => tokio::join!(read_capped(stdout), read_capped(stderr)),
            };
            let status = child.wait().await;
            End::Exited(status, out, err)
        };
        let deadline = async {
            match spec.timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            end = work => end,
            _ = deadline => End::TimedOut,
            _ = cancel.cancelled() => End::Cancelled,
        }
    };

    match end {
        End::Exited(status, out, err) => {
            guard.disarm();
            let status = status.map_err(|e| spawn_error(spec, &e))?;
            let retcode = match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(code), _) => code,
                (None, Some(sig)) => -sig,
                (None, None) => 1,
            };
            let text = |b: Vec<u8>| {
                let s = String::from_utf8_lossy(&b).into_owned();
                if spec.rstrip {
                    s.trim_end().to_string()
                } else {
                    s
                }
            };
            Ok(RunOutput {
                pid,
                retcode,
                stdout: text(out),
                stderr: text(err),
                timed_out: false,
            })
        }
        End::TimedOut => {
            guard.kill();
            let _ = child.wait().await;
            guard.disarm();
            let secs = spec.timeout.map(|t| t.as_secs_f64()).unwrap_or_default();
            tracing::warn!(pid, cmd = %spec.cmd, timeout = secs, "command timed out, killed");
            Ok(RunOutput {
                pid,
                retcode: 1,
                stdout: format!("{} : Timed out after {} seconds", spec.cmd, secs),
                stderr: String::new(),
                timed_out: true,
            })
        }
        End::Cancelled => {
            guard.kill();
            let _ = child.wait().await;
            guard.disarm();
            tracing::info!(pid, cmd = %spec.cmd, "command killed: job cancelled");
            Err(ExecError::Cancelled)
        }
    }
}

fn spawn_error(spec: &RunSpec, e: &std::io::Error) -> ExecError {
    ExecError::Execution(format!("unable to run command '{}': {e}", spec.cmd))
}

/// Read a stream to its end, keeping at most [`MAX_OUTPUT`] bytes.
async fn read_capped<R: AsyncRead + Unpin>(reader: Option<R>) -> Vec<u8> {
    let Some(mut reader) = reader else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Ends at end-of-file or on a read error; each pass consumes input.
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{ctx, run};
    use super::super::{Registry, RETCODE_ERROR};
    use serde_json::json;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn run_merges_output_and_strips() {
        let o = run(
            "cmd.run",
            vec![json!("echo out; echo err >&2; echo")],
            json!({}),
        )
        .await;
        assert_eq!(o.ret, json!("out\nerr"));
        assert_eq!(o.retcode, 0);
        assert!(o.success);
        let o = run(
            "cmd.run",
            vec![json!("printf 'a  \\n\\n'")],
            json!({"rstrip": false}),
        )
        .await;
        assert_eq!(o.ret, json!("a  \n\n"));
    }

    #[tokio::test]
    async fn run_passes_retcode_through() {
        let o = run("cmd.run", vec![json!("echo nope; exit 3")], json!({})).await;
        assert_eq!(o.ret, json!("nope"));
        assert_eq!(o.retcode, 3);
        assert!(!o.success);
        let o = run(
            "cmd.run",
            vec![json!("exit 3")],
            json!({"ignore_retcode": true}),
        )
        .await;
        assert_eq!(o.retcode, 0);
        assert!(o.success);
    }

    #[tokio::test]
    async fn run_all_separates_streams() {
        let o = run(
            "cmd.run_all",
            vec![json!("echo out; echo err >&2; exit 2")],
            json!({}),
        )
        .await;
        assert_eq!(o.ret["stdout"], "out");
        assert_eq!(o.ret["stderr"], "err");
        assert_eq!(o.ret["retcode"], 2);
        assert!(o.ret["pid"].as_u64().is_some_and(|p| p > 0));
        assert_eq!(o.retcode, 2);
    }

    #[tokio::test]
    async fn retcode_returns_code() {
        let o = run("cmd.retcode", vec![json!("exit 7")], json!({})).await;
        assert_eq!(o.ret, json!(7));
        assert_eq!(o.retcode, 7);
        let o = run("cmd.retcode", vec![json!("kill -9 $$")], json!({})).await;
        assert_eq!(o.ret, json!(-9));
    }

    #[tokio::test]
    async fn cwd_env_shell_stdin() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().canonicalize().expect("canon");
        let o = run("cmd.run", vec![json!("pwd")], json!({"cwd": path.to_str()})).await;
        assert_eq!(o.ret, json!(path.to_str()));
        let o = run(
            "cmd.run",
            vec![json!("echo $FOO-$N")],
            json!({"env": {"FOO": "bar", "N": 5}}),
        )
        .await;
        assert_eq!(o.ret, json!("bar-5"));
        let o = run(
            "cmd.run",
            vec![json!("echo $FOO")],
            json!({"env": "{\"FOO\": \"txt\"}"}),
        )
        .await;
        assert_eq!(o.ret, json!("txt"));
        let o = run(
            "cmd.run",
            vec![json!("echo \"[$HOME]\"")],
            json!({"clean_env": true}),
        )
        .await;
        assert_eq!(o.ret, json!("[]"));
        let o = run("cmd.run", vec![json!("cat")], json!({"stdin": "fed in"})).await;
        assert_eq!(o.ret, json!("fed in"));
        let o = run(
            "cmd.run",
            vec![json!("echo $0")],
            json!({"shell": "/bin/bash"}),
        )
        .await;
        assert_eq!(o.ret, json!("/bin/bash"));
    }

    #[tokio::test]
    async fn bad_arguments_and_failures() {
        let o = run("cmd.run", vec![], json!({})).await;
        assert!(o
            .ret
            .as_str()
            .expect("s")
            .contains("run() missing 1 required positional argument: 'cmd'"));
        let o = run("cmd.run", vec![json!("true")], json!({"env": [1]})).await;
        assert!(o
            .ret
            .as_str()
            .expect("s")
            .starts_with("Passed invalid arguments to cmd.run: env must be a dict"));
        let o = run("cmd.run", vec![json!("true")], json!({"timeout": "x"})).await;
        assert_eq!(o.retcode, RETCODE_ERROR);
        let o = run(
            "cmd.run",
            vec![json!("true")],
            json!({"cwd": "/no/such/dir"}),
        )
        .await;
        assert_eq!(
            o.ret,
            json!("ERROR: specified cwd '/no/such/dir' either not absolute or does not exist")
        );
        let o = run(
            "cmd.run",
            vec![json!("true")],
            json!({"shell": "/no/such/shell"}),
        )
        .await;
        assert!(o
            .ret
            .as_str()
            .expect("s")
            .starts_with("ERROR: unable to run command 'true'"));
        assert!(!o.success);
        let o = run(
            "cmd.run",
            vec![json!("true")],
            json!({"runas": "no-such-user-xyz"}),
        )
        .await;
        assert_eq!(
            o.ret,
            json!("ERROR: user 'no-such-user-xyz' is not available")
        );
    }

    #[tokio::test]
    async fn runas_switches_user() {
        let euid = nix::unistd::geteuid();
        let o = run("cmd.run", vec![json!("id -un")], json!({"runas": "nobody"})).await;
        if euid.is_root() {
            assert_eq!(o.ret, json!("nobody"));
            assert!(o.success);
        } else {
            assert_eq!(
                o.ret,
                json!("ERROR: cannot run as 'nobody': the minion is not running as root")
            );
        }
    }

    #[tokio::test]
    async fn timeout_kills_the_process_group() {
        let dir = tempfile::tempdir().expect("tmp");
        let marker = dir.path().join("child.pid");
        let cmd = format!("sleep 30 & echo $! > {}; wait", marker.display());
        let started = Instant::now();
        let o = run("cmd.run", vec![json!(cmd)], json!({"timeout": 0.5})).await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(o.retcode, 1);
        assert!(!o.success);
        assert!(o
            .ret
            .as_str()
            .expect("s")
            .ends_with(" : Timed out after 0.5 seconds"));
        let bg: i32 = std::fs::read_to_string(&marker)
            .expect("pid")
            .trim()
            .parse()
            .expect("int");
        assert!(
            !process_alive(bg),
            "background child of the shell was killed too"
        );
    }

    #[tokio::test]
    async fn cancel_kills_the_command() {
        let c = ctx("cmd.run_all", vec![json!("sleep 30")], json!({}));
        let token = c.cancel.clone();
        let reg = Registry::new();
        let started = Instant::now();
        let (o, ()) = tokio::join!(reg.call(c), async {
            tokio::task::yield_now().await;
            token.cancel()
        });
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(o.ret, json!("ERROR: job was cancelled"));
        assert!(!o.success);
    }

    #[test]
    fn shell_words_split_and_quote_like_python() {
        use super::{sh_quote, shell_split};
        assert_eq!(
            shell_split(r#"arg1 'arg two' "arg \"3\"" a\ b "\$x" ''"#).expect("split"),
            vec!["arg1", "arg two", "arg \"3\"", "a b", "\\$x", ""]
        );
        assert!(shell_split("'open").is_err());
        assert!(shell_split("end\\").is_err());
        assert_eq!(sh_quote("plain/path-1.sh"), "plain/path-1.sh");
        assert_eq!(sh_quote("it's"), "'it'\"'\"'s'");
        assert_eq!(sh_quote(""), "''");
    }

    fn script_file(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
        let p = dir.join("s.sh");
        std::fs::write(&p, body).expect("write");
        p
    }

    #[tokio::test]
    async fn script_runs_a_local_script_with_args_cwd_env_and_retcode() {
        let dir = tempfile::tempdir().expect("tmp");
        let cwd = dir.path().canonicalize().expect("canon");
        let p = script_file(
            dir.path(),
            "#!/bin/sh\necho \"args=$# [$1] [$2] pwd=$(pwd) foo=$FOO self=$0\"\necho oops >&2\nexit 3\n",
        );
        let o = run(
            "cmd.script",
            vec![json!(p), json!("one 'two words'")],
            json!({"cwd": cwd, "env": {"FOO": "bar"}}),
        )
        .await;
        let out = o.ret["stdout"].as_str().expect("stdout");
        assert!(
            out.starts_with(&format!(
                "args=2 [one] [two words] pwd={} foo=bar self=",
                cwd.display()
            )),
            "{out}"
        );
        let self_path = out.rsplit("self=").next().expect("self");
        assert!(
            self_path.contains("brine-script-"),
            "ran from a private copy: {self_path}"
        );
        assert!(
            !std::path::Path::new(self_path).exists(),
            "the private copy is removed"
        );
        assert_eq!(o.ret["stderr"], "oops");
        assert_eq!(o.ret["retcode"], 3);
        assert!(o.ret["pid"].as_u64().is_some_and(|p| p > 0));
        assert_eq!(o.retcode, 3, "the script's exit code is the job's");
        assert!(!o.success);

        let o = run(
            "cmd.script",
            vec![json!(format!("file://{}", p.display()))],
            json!({"success_retcodes": [3], "hide_output": true}),
        )
        .await;
        assert_eq!(
            o.ret,
            json!({"pid": o.ret["pid"], "retcode": 0, "stdout": "", "stderr": ""})
        );
        assert!(o.success);
    }

    #[tokio::test]
    async fn script_args_are_not_expanded_without_python_shell() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = script_file(
            dir.path(),
            "#!/bin/sh\nfor a in \"$@\"; do echo \"[$a]\"; done\n",
        );
        let o = run(
            "cmd.script",
            vec![json!(p), json!("$HOME 'a b'")],
            json!({"python_shell": false}),
        )
        .await;
        assert_eq!(o.ret["stdout"], "[$HOME]\n[a b]");
        let o = run(
            "cmd.script",
            vec![json!(p), json!(["x y", "$z"])],
            json!({}),
        )
        .await;
        assert_eq!(o.ret["stdout"], "[x y]\n[$z]");
    }

    #[tokio::test]
    async fn script_from_the_master_and_missing_sources() {
        use crate::files::{fake::FakeMaster, Ask, FileClient};
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("srv");
        std::fs::create_dir_all(root.join("scripts")).expect("mkdir");
        std::fs::write(root.join("scripts/hi.sh"), "#!/bin/sh\necho hi from $1\n").expect("w");
        let m: Arc<dyn Ask> = Arc::new(FakeMaster::serving("base", &root));
        let files = Arc::new(FileClient::new(Some(m), dir.path().join("cache")));
        let call = |args: Vec<serde_json::Value>, kwargs: serde_json::Value| {
            let mut c = ctx("cmd.script", args, kwargs);
            c.files = files.clone();
            async move { Registry::new().call(c).await }
        };
        let o = call(
            vec![json!("salt://scripts/hi.sh"), json!("master")],
            json!({}),
        )
        .await;
        assert_eq!(o.ret["stdout"], "hi from master");
        assert_eq!(o.retcode, 0);
        let missing =
            json!({"pid": 0, "retcode": 1, "stdout": "", "stderr": "", "cache_error": true});
        let o = call(vec![json!("salt://scripts/nope.sh")], json!({})).await;
        assert_eq!(o.ret, missing);
        assert_eq!(o.retcode, 1);
        let o = call(vec![json!("/no/such/script.sh")], json!({})).await;
        assert_eq!(o.ret, missing);
        let o = call(vec![json!("relative.sh")], json!({})).await;
        assert_eq!(o.ret, json!("ERROR: Path 'relative.sh' is not absolute"));
        let o = call(
            vec![json!("salt://scripts/hi.sh")],
            json!({"template": "cheetah"}),
        )
        .await;
        assert!(o
            .ret
            .as_str()
            .expect("s")
            .contains("template engine 'cheetah' is not available"));
        let o = call(vec![json!("salt://scripts/hi.sh")], json!({"umask": "077"})).await;
        assert!(!o.success);
    }

    /// True while `pid` exists and is not a zombie. A SIGKILLed grandchild is
    /// reaped by init, which may take a moment: wait for it with a deadline.
    fn process_alive(pid: i32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return false,
                Ok(stat) => {
                    let state = stat
                        .rsplit(')')
                        .next()
                        .and_then(|s| s.split_whitespace().next());
                    if state == Some("Z") || state == Some("X") {
                        return false;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}
