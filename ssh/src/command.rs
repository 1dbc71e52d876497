//! Building `ssh` command lines for one host: connection sharing, host key
//! policy, timeouts, key or password login. Invariant: a password never
//! appears in an argument; it reaches `ssh` only through the environment
//! of that one child, read back by `salt-ssh` itself in askpass mode.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Environment variable holding the password for the askpass child.
pub const ASKPASS_ENV: &str = "BRINE_SSH_ASKPASS_SECRET";

/// How host keys are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeys {
    /// Against `known_hosts` (StrictHostKeyChecking=yes).
    Strict,
    /// `-i` / `--no-host-keys`: not checked, nothing recorded.
    Ignore,
}

/// What is the same for every host of one run.
#[derive(Debug, Clone)]
pub struct Common {
    pub host_keys: HostKeys,
    /// `known_hosts_file` (None: ssh's own default, ~/.ssh/known_hosts).
    pub known_hosts: Option<PathBuf>,
    /// Private 0700 directory of the control sockets.
    pub control_dir: PathBuf,
    pub control_persist: u64,
    /// This executable (the askpass helper).
    pub askpass: PathBuf,
    /// `ssh_identities_only` / `--identities-only`: offer only the key
    /// given, none of the agent's or ssh's defaults (IdentitiesOnly=yes).
    pub identities_only: bool,
}

/// One host's connection settings, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub privkey: Option<PathBuf>,
    pub passwd: Option<String>,
    pub connect_timeout: u64,
    pub ssh_options: Vec<String>,
}

/// The control socket directory for these settings: one per host key
/// policy and known_hosts file, so a connection opened with `-i` is never
/// reused by a run that checks host keys.
pub fn control_dir(base: &Path, host_keys: HostKeys, known_hosts: Option<&Path>) -> PathBuf {
    let mut h = Sha256::new();
    h.update(format!("{host_keys:?}\0{known_hosts:?}"));
    base.join(&hex::encode(h.finalize())[..12])
}

/// Longest control directory whose sockets still fit a Unix socket path
/// (108 bytes on Linux, 104 elsewhere): ssh adds "/" and `%C` (40 hex)
/// plus a 17-byte temporary suffix while it creates the socket.
pub const CONTROL_DIR_MAX: usize = 104 - 1 - 40 - 17 - 1;

/// `dir` when its sockets fit a socket path, else a short stand-in under
/// `/tmp/brine-ssh-<uid>/` named by a hash of `dir` (so distinct long dirs
/// stay distinct).
pub fn fit_control_dir(dir: &Path, uid: u32) -> PathBuf {
    if dir.as_os_str().len() <= CONTROL_DIR_MAX {
        return dir.to_path_buf();
    }
    let mut h = Sha256::new();
    h.update(dir.as_os_str().as_encoded_bytes());
    PathBuf::from(format!("/tmp/brine-ssh-{uid}")).join(&hex::encode(h.finalize())[..16])
}

/// Create `dir` (and parents) private to this user.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The `ssh` arguments before the remote command: options, then the host.
pub fn args(c: &Common, t: &Target, use_password: bool) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut o = |s: String| {
        a.push("-o".to_string());
        a.push(s);
    };
    o("ControlMaster=auto".into());
    o(format!("ControlPath={}/%C", c.control_dir.display()));
    o(format!("ControlPersist={}", c.control_persist));
    o(format!("ConnectTimeout={}", t.connect_timeout.max(1)));
    o("ServerAliveInterval=10".into());
    o("ServerAliveCountMax=3".into());
    o("LogLevel=ERROR".into());
    if use_password {
        o("BatchMode=no".into());
        o("NumberOfPasswordPrompts=1".into());
        o("PreferredAuthentications=password,keyboard-interactive".into());
        o("PubkeyAuthentication=no".into());
    } else {
        o("BatchMode=yes".into());
        o("PasswordAuthentication=no".into());
        o("KbdInteractiveAuthentication=no".into());
    }
    match c.host_keys {
        HostKeys::Strict => {
            o("StrictHostKeyChecking=yes".into());
            if let Some(k) = &c.known_hosts {
                o(format!("UserKnownHostsFile={}", k.display()));
            }
        }
        HostKeys::Ignore => {
            o("StrictHostKeyChecking=no".into());
            o("UserKnownHostsFile=/dev/null".into());
        }
    }
    for opt in &t.ssh_options {
        o(opt.clone());
    }
    if let Some(k) = &t.privkey {
        a.push("-i".into());
        a.push(k.display().to_string());
    }
    if c.identities_only {
        a.push("-o".into());
        a.push("IdentitiesOnly=yes".into());
    }
    a.push("-p".into());
    a.push(t.port.to_string());
    a.push("-l".into());
    a.push(t.user.clone());
    a.push("--".into());
    a.push(t.host.clone());
    a
}

/// A `tokio` command running `remote` on the host (stdin/stdout/stderr
/// piped, killed when dropped). With a password, `ssh` asks this
/// executable for it (askpass mode) and only this child's environment
/// holds it.
pub fn command(
    c: &Common,
    t: &Target,
    remote: &str,
    use_password: bool,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(args(c, t, use_password))
        .arg(remote)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.env_remove(ASKPASS_ENV);
    if use_password {
        if let Some(p) = &t.passwd {
            cmd.env("SSH_ASKPASS", &c.askpass)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env(ASKPASS_ENV, p);
        }
    }
    cmd
}

/// Quote `s` for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(keys: HostKeys) -> Common {
        Common {
            host_keys: keys,
            known_hosts: Some(PathBuf::from("/k/known")),
            control_dir: PathBuf::from("/c"),
            control_persist: 60,
            askpass: PathBuf::from("/bin/salt-ssh"),
            identities_only: keys == HostKeys::Strict,
        }
    }

    fn target() -> Target {
        Target {
            host: "10.0.0.1".into(),
            port: 2222,
            user: "fred".into(),
            privkey: Some(PathBuf::from("/k/id")),
            passwd: Some("hunter2-secret".into()),
            connect_timeout: 7,
            ssh_options: vec!["Compression=yes".into()],
        }
    }

    #[test]
    fn password_never_in_argv() {
        for pw in [false, true] {
            for keys in [HostKeys::Strict, HostKeys::Ignore] {
                let c = common(keys);
                let cmd = command(&c, &target(), "true", pw);
                let std = cmd.as_std();
                for a in std.get_args() {
                    assert!(!a.to_string_lossy().contains("hunter2"), "{a:?}");
                }
                let env: Vec<_> = std
                    .get_envs()
                    .filter(|(k, v)| *k == ASKPASS_ENV && v.is_some())
                    .collect();
                assert_eq!(
                    env.len(),
                    usize::from(pw),
                    "askpass env only with a password"
                );
            }
        }
    }

    #[test]
    fn options_follow_the_settings() {
        let a = args(&common(HostKeys::Strict), &target(), false).join(" ");
        assert!(a.contains("-o BatchMode=yes"), "{a}");
        assert!(a.contains("-o StrictHostKeyChecking=yes"), "{a}");
        assert!(a.contains("-o UserKnownHostsFile=/k/known"), "{a}");
        assert!(a.contains("-o ConnectTimeout=7"), "{a}");
        assert!(a.contains("-o ControlPath=/c/%C"), "{a}");
        assert!(a.contains("-o Compression=yes"), "{a}");
        assert!(a.contains("-i /k/id -o IdentitiesOnly=yes"), "{a}");
        assert!(a.ends_with("-p 2222 -l fred -- 10.0.0.1"), "{a}");
        let a = args(&common(HostKeys::Ignore), &target(), true).join(" ");
        assert!(a.contains("-o StrictHostKeyChecking=no"), "{a}");
        assert!(a.contains("-o UserKnownHostsFile=/dev/null"), "{a}");
        assert!(a.contains("-o BatchMode=no"), "{a}");
        assert!(!a.contains("IdentitiesOnly"), "{a}");
    }

    #[test]
    fn control_dirs_differ_by_host_key_policy() {
        let b = Path::new("/b");
        assert_ne!(
            control_dir(b, HostKeys::Strict, None),
            control_dir(b, HostKeys::Ignore, None)
        );
        assert_ne!(
            control_dir(b, HostKeys::Strict, Some(Path::new("/x"))),
            control_dir(b, HostKeys::Strict, None)
        );
    }

    #[test]
    fn long_control_dirs_are_replaced_by_short_ones() {
        let short = Path::new("/tmp/b/0123456789ab");
        assert_eq!(fit_control_dir(short, 0), short);
        let long = PathBuf::from(format!("/tmp/{}/0123456789ab", "x".repeat(60)));
        let other = PathBuf::from(format!("/tmp/{}/0123456789ab", "y".repeat(60)));
        let a = fit_control_dir(&long, 7);
        assert!(a.starts_with("/tmp/brine-ssh-7/"), "{a:?}");
        assert!(a.as_os_str().len() <= CONTROL_DIR_MAX, "{a:?}");
        assert_ne!(a, fit_control_dir(&other, 7));
        assert_eq!(a, fit_control_dir(&long, 7));
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
