//! Running shell scripts and uploading files on one host over the shared
//! `ssh` connection, for tools other than `salt-ssh` itself (the bulk
//! minion deployer of `brine-fleet`). Scripts run under `sh -c` (with
//! `sudo -n` when the roster says `sudo`); their input goes through the
//! script's stdin, never through its command line. Invariant: a failure
//! (no `ssh`, a refused or unreachable host, a script exiting non-zero) is
//! always an [`Output`] with a non-zero code and ssh's own message, never a
//! panic, and nothing here waits without the connect timeout of the target.

use crate::command::{self, sh_quote, Common, Target};
use crate::roster::Host;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most stderr kept from one run.
const STDERR_MAX: usize = 64 * 1024;

/// A child's stderr, read to its end, at most 64 KiB of it kept.
pub async fn read_stderr(mut se: tokio::process::ChildStderr) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Bounded by the stream: ends at its end or on an error.
    while let Ok(n) = se.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = STDERR_MAX.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..n.min(room)]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Runs `remote` (a command line for the host's shell) over `ssh` with
/// `input` on its stdin, and collects its exit code, stdout and (at most
/// 64 KiB of) stderr; `pw`: log in with the target's password (askpass).
/// Writing and both reads go on at once, borrowing `input` (a binary of
/// many MB is not copied per host). Never fails: an ssh that cannot start
/// is code 255 with the reason as stderr.
pub async fn exec(
    common: &Common,
    target: &Target,
    remote: &str,
    input: &[u8],
    pw: bool,
) -> Output {
    let mut child = match command::command(common, target, remote, pw).spawn() {
        Ok(c) => c,
        Err(e) => return Output::failed(format!("cannot run ssh: {e}")),
    };
    let (Some(mut si), Some(mut so), Some(se)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Output::failed("ssh: no pipes".into());
    };
    let write = async move {
        let _ = si.write_all(input).await;
        drop(si);
    };
    let read_out = async move {
        let mut stdout = Vec::new();
        let _ = so.read_to_end(&mut stdout).await;
        stdout
    };
    let ((), stdout, stderr) = tokio::join!(write, read_out, read_stderr(se));
    let code = exit_code(&mut child).await;
    Output {
        code,
        stdout,
        stderr,
    }
}

/// The exit code of an `ssh` run once it ended: 255 (ssh's own failure
/// code) when it was killed by a signal or could not be waited for.
pub(crate) async fn exit_code(child: &mut tokio::process::Child) -> i32 {
    child
        .wait()
        .await
        .ok()
        .and_then(|s| s.code())
        .unwrap_or(255)
}

/// What one remote run gave back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The script's exit code (255: ssh failed, e.g. the host is unreachable).
    pub code: i32,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error (at most 64 KiB).
    pub stderr: String,
}

impl Output {
    fn failed(why: String) -> Output {
        Output {
            code: 255,
            stdout: Vec::new(),
            stderr: why,
        }
    }

    /// Stdout as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Ok when the code is 0, else the last line of stderr (or the code).
    pub fn ok(&self) -> Result<(), String> {
        if self.code == 0 {
            return Ok(());
        }
        let why = self
            .stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("exit code {}", self.code));
        Err(why)
    }
}

/// One host reached over ssh with the settings of a run.
#[derive(Debug, Clone)]
pub struct Remote {
    /// Settings shared by every host of the run.
    pub common: Common,
    /// This host's connection.
    pub target: Target,
    /// Run scripts through `sudo -n`.
    pub sudo: bool,
}

/// The control socket directory for a run with these host key settings,
/// created private (0700): `$BRINE_SSH_CONTROL_DIR` or
/// `/tmp/brine-ssh-<uid>`, one subdirectory per host key policy.
pub fn control_dir(
    host_keys: command::HostKeys,
    known_hosts: Option<&Path>,
) -> std::io::Result<PathBuf> {
    let base = std::env::var_os("BRINE_SSH_CONTROL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/brine-ssh-{}", nix::unistd::getuid())));
    let dir = command::control_dir(&base, host_keys, known_hosts);
    command::private_dir(&base)?;
    command::private_dir(&dir)?;
    Ok(dir)
}

impl Remote {
    /// A roster host with the run's defaults for what it leaves out.
    pub fn of_host(
        common: Common,
        h: &Host,
        user: &str,
        privkey: Option<PathBuf>,
        timeout: u64,
    ) -> Remote {
        Remote {
            common,
            target: Target {
                host: h.host.clone(),
                port: h.port.unwrap_or(22),
                user: h.user.clone().unwrap_or_else(|| user.to_string()),
                privkey: h.privkey.clone().or(privkey),
                passwd: h.passwd.clone(),
                connect_timeout: timeout,
                ssh_options: h.ssh_options.clone(),
            },
            sudo: h.sudo.unwrap_or(false),
        }
    }

    /// Runs `script` with `sh -c` on the host, `input` on its stdin.
    pub async fn run(&self, script: &str, input: &[u8]) -> Output {
        let mut remote = format!("sh -c {}", sh_quote(script));
        if self.sudo {
            remote = format!("sudo -n {remote}");
        }
        let pw = self.target.passwd.is_some() && self.target.privkey.is_none();
        exec(&self.common, &self.target, &remote, input, pw).await
    }

    /// Writes `bytes` to `path` on the host with `mode` (octal, e.g.
    /// 0o644): into a temporary file beside it, then renamed over it, so a
    /// reader never sees half a file and a running binary is replaced
    /// safely. The parent directory is created (with `dir_mode`).
    pub async fn upload(
        &self,
        path: &str,
        bytes: &[u8],
        mode: u32,
        dir_mode: u32,
    ) -> Result<(), String> {
        self.upload_via(path, bytes, mode, dir_mode, None).await
    }

    /// [`Remote::upload`] with the temporary file in `staging` (created
    /// 0700; on the same file system), for directories whose every file
    /// is read, such as a master's key directories.
    pub async fn upload_via(
        &self,
        path: &str,
        bytes: &[u8],
        mode: u32,
        dir_mode: u32,
        staging: Option<&str>,
    ) -> Result<(), String> {
        let script = upload_script(path, mode, dir_mode, staging);
        self.run(&script, bytes).await.ok()
    }

    /// Closes the shared connection to this host (`ssh -O exit`), if one
    /// is open. Best effort.
    pub async fn close(&self) {
        let mut args = command::args(&self.common, &self.target, false);
        // `-O exit` goes before the `--` that ends the options.
        let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
        args.insert(at, "exit".into());
        args.insert(at, "-O".into());
        let _ = tokio::process::Command::new("ssh")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status()
            .await;
    }
}

/// The script [`Remote::upload_via`] runs: stdin into `path` atomically.
pub fn upload_script(path: &str, mode: u32, dir_mode: u32, staging: Option<&str>) -> String {
    let p = sh_quote(path);
    let tmp = match staging {
        Some(dir) => format!(
            "s={}; [ -d \"$s\" ] || mkdir -p -m 700 \"$s\"; t=\"$s/$(basename \"$f\").brine-tmp.$$\"",
            sh_quote(dir)
        ),
        None => "t=\"$f.brine-tmp.$$\"".to_string(),
    };
    format!(
        "set -e; f={p}; d=$(dirname \"$f\"); \
         [ -d \"$d\" ] || mkdir -p -m {dir_mode:o} \"$d\"; \
         {tmp}; trap 'rm -f \"$t\"' EXIT; \
         umask 077; cat > \"$t\"; chmod {mode:o} \"$t\"; mv -f \"$t\" \"$f\"; trap - EXIT"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_script_quotes_and_renames() {
        let s = upload_script("/r/it's/etc/salt/minion", 0o644, 0o755, None);
        assert!(s.contains(r"f='/r/it'\''s/etc/salt/minion'"), "{s}");
        assert!(s.contains("chmod 644"), "{s}");
        assert!(s.contains("mkdir -p -m 755"), "{s}");
        assert!(s.contains("mv -f"), "{s}");
        let s = upload_script("/p/minions/m1", 0o644, 0o700, Some("/p/.staging"));
        assert!(s.contains("s='/p/.staging'"), "{s}");
        assert!(s.contains(r#"t="$s/$(basename "$f").brine-tmp.$$""#), "{s}");
    }

    #[test]
    fn failure_reason_is_the_last_stderr_line() {
        let o = Output {
            code: 255,
            stdout: vec![],
            stderr: "warning\nssh: connect to host 127.0.0.9 port 22: Connection refused\n\n"
                .into(),
        };
        assert_eq!(
            o.ok(),
            Err("ssh: connect to host 127.0.0.9 port 22: Connection refused".into())
        );
        let o = Output {
            code: 3,
            stdout: vec![],
            stderr: String::new(),
        };
        assert_eq!(o.ok(), Err("exit code 3".into()));
    }

    #[tokio::test]
    async fn unreachable_is_an_output_not_a_panic() {
        let dir = tempfile::tempdir().expect("tmp");
        let r = Remote {
            common: Common {
                host_keys: command::HostKeys::Ignore,
                known_hosts: None,
                control_dir: dir.path().to_path_buf(),
                control_persist: 1,
                askpass: PathBuf::from("/bin/false"),
                identities_only: false,
            },
            target: Target {
                host: "127.0.0.1".into(),
                port: 1,
                user: "root".into(),
                privkey: None,
                passwd: None,
                connect_timeout: 2,
                ssh_options: vec![],
            },
            sudo: false,
        };
        let o = r.run("true", b"").await;
        assert_ne!(o.code, 0);
        assert!(o.ok().is_err());
    }
}
