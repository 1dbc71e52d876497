//! A real OpenSSH server for end-to-end tests: one `sshd` started on
//! loopback, listening on several addresses of one port (several "hosts"
//! on one machine), root's key login (or the authentication the caller's
//! config lines set), with its host key and authorized keys in the test's
//! directory. Invariant: dropping the [`Sshd`] first closes
//! every shared `ssh` connection whose control socket lies under its
//! control directory, then stops sshd by PID; nothing outlives the test.

use crate::launch;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running sshd.
pub struct Sshd {
    child: Child,
    /// The `BRINE_SSH_CONTROL_DIR` of the test's ssh clients.
    control: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Close the shared connections first (their ssh masters would
        // otherwise linger for ControlPersist), then sshd itself.
        close_shared(&self.control);
        launch::stop(&mut self.child, launch::Stop::Term(Duration::from_secs(5)));
    }
}

/// Ask every shared `ssh` connection whose control socket lies under
/// `dir` (three directory levels at most) to exit.
pub fn close_shared(dir: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let mut todo = vec![(dir.to_path_buf(), 0u32)];
    while let Some((d, depth)) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_socket() {
                let _ = Command::new("ssh")
                    .arg("-o")
                    .arg(format!("ControlPath={}", e.path().display()))
                    .args(["-O", "exit", "x"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            } else if ft.is_dir() && depth < 3 {
                todo.push((e.path(), depth + 1));
            }
        }
    }
}

/// Makes an ed25519 key pair at `path` (+ `.pub`); returns the public line.
pub fn keygen(path: &Path) -> Result<String, String> {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("ssh-keygen: {e}"))?;
    if !st.success() {
        return Err(format!("ssh-keygen failed: {st}"));
    }
    std::fs::read_to_string(path.with_extension("pub"))
        .map_err(|e| format!("{}.pub: {e}", path.display()))
}

/// `type base64` of a public key line (the comment dropped), as written in
/// `known_hosts`.
pub fn key_of(pub_line: &str) -> String {
    pub_line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A port nobody listens on at `host` now.
pub fn free_port(host: &str) -> Result<u16, String> {
    let l = std::net::TcpListener::bind((host, 0)).map_err(|e| format!("bind {host}: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

/// Addresses one sshd listens on at most (OpenSSH's `MAX_LISTEN_SOCKS`).
pub const LISTEN_MAX: usize = 16;

impl Sshd {
    /// Starts `/usr/sbin/sshd -D` with `dir/host_key` as host key and
    /// `dir/authorized_keys` (both made by the caller) for root's key
    /// login, listening on `port` of every address of `listen`; waits (at
    /// most 20 s) until the last address takes connections. Its config,
    /// pid file and log (`sshd.log`) go into `dir`.
    pub fn start(
        dir: &Path,
        port: u16,
        listen: &[String],
        control: PathBuf,
    ) -> Result<Sshd, String> {
        let auth = format!(
            "HostKey {}\nPermitRootLogin yes\nAuthorizedKeysFile {}\nPasswordAuthentication no\n",
            dir.join("host_key").display(),
            dir.join("authorized_keys").display(),
        );
        Sshd::start_named(dir, "sshd", port, listen, control, &auth)
    }

    /// As [`Sshd::start`], with the config's host key and authentication
    /// lines given (`auth`: `HostKey`, `AuthorizedKeysFile`,
    /// `PermitRootLogin`, `PasswordAuthentication`, `AllowUsers` ...) and
    /// its files named `dir/<name>_config`, `<name>.pid`, `<name>.log`, so
    /// several can run from one directory. At most [`LISTEN_MAX`]
    /// addresses.
    pub fn start_named(
        dir: &Path,
        name: &str,
        port: u16,
        listen: &[String],
        control: PathBuf,
        auth: &str,
    ) -> Result<Sshd, String> {
        if !Path::new("/usr/sbin/sshd").exists() {
            return Err("/usr/sbin/sshd missing: run .ci/deps (installs openssh-server)".into());
        }
        if listen.is_empty() || listen.len() > LISTEN_MAX {
            return Err(format!(
                "one sshd listens on 1 to {LISTEN_MAX} addresses, not {}",
                listen.len()
            ));
        }
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut cfg = format!(
            "Port {port}\n{auth}UsePAM no\nStrictModes no\nKbdInteractiveAuthentication no\n\
             PidFile {}\nMaxSessions 100\nMaxStartups 200\n",
            dir.join(format!("{name}.pid")).display()
        );
        for a in listen {
            cfg.push_str(&format!("ListenAddress {a}\n"));
        }
        let conf = dir.join(format!("{name}_config"));
        std::fs::write(&conf, cfg).map_err(|e| format!("{}: {e}", conf.display()))?;
        let log_path = dir.join(format!("{name}.log"));
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("sshd: {e}"))?;
        let sshd = Sshd { child, control };
        let last = listen.last().cloned().unwrap_or_else(|| "127.0.0.1".into());
        if !launch::poll_until(Duration::from_secs(20), Duration::from_millis(50), || {
            std::net::TcpStream::connect((last.as_str(), port)).is_ok()
        }) {
            return Err(format!(
                "sshd did not listen: {}",
                launch::log_tail(&log_path)
            ));
        }
        Ok(sshd)
    }
}
