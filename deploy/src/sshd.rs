//! A real OpenSSH server for end-to-end tests: one `sshd` started on
//! loopback, listening on several addresses of one port (several "hosts"
//! on one machine), key login only, with its host key and authorized keys
//! in the test's directory. Invariant: dropping the [`Sshd`] first closes
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
        for sub in std::fs::read_dir(&self.control)
            .into_iter()
            .flatten()
            .flatten()
        {
            for sock in std::fs::read_dir(sub.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = Command::new("ssh")
                    .arg("-o")
                    .arg(format!("ControlPath={}", sock.path().display()))
                    .args(["-O", "exit", "x"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        launch::stop(&mut self.child, launch::Stop::Term(Duration::from_secs(5)));
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

impl Sshd {
    /// Starts `/usr/sbin/sshd -D` with `dir/host_key` as host key and
    /// `dir/authorized_keys` (both made by the caller), listening on
    /// `port` of every address of `listen`; waits (at most 20 s) until the
    /// last address takes connections. Its config, pid file and log
    /// (`sshd.log`) go into `dir`.
    pub fn start(
        dir: &Path,
        port: u16,
        listen: &[String],
        control: PathBuf,
    ) -> Result<Sshd, String> {
        if !Path::new("/usr/sbin/sshd").exists() {
            return Err("/usr/sbin/sshd missing: run .ci/deps (installs openssh-server)".into());
        }
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut cfg = format!(
            "Port {port}\nHostKey {}\nPermitRootLogin yes\nUsePAM no\nStrictModes no\n\
             AuthorizedKeysFile {}\nPidFile {}\nPasswordAuthentication no\n\
             MaxSessions 100\nMaxStartups 200\n",
            dir.join("host_key").display(),
            dir.join("authorized_keys").display(),
            dir.join("sshd.pid").display()
        );
        for a in listen {
            cfg.push_str(&format!("ListenAddress {a}\n"));
        }
        let conf = dir.join("sshd_config");
        std::fs::write(&conf, cfg).map_err(|e| format!("{}: {e}", conf.display()))?;
        let log_path = dir.join("sshd.log");
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
