//! Starting and stopping the workspace's daemons on this machine: the one
//! launcher under the end-to-end tests' [`Topology`](crate::topology), the
//! demo, `fleet-bench` and the load test's topology.
//!
//! - where the binaries are ([`bin_dir`]) and building them when run under
//!   cargo ([`ensure_built`]);
//! - a loopback block `127.A.B.0/24` of one's own ([`Net::fresh`]): held by
//!   an abstract unix socket named after it, so no two processes on this
//!   machine hold the same block at once (tests of other crates and other
//!   checkouts run in parallel), and never `127.0.x.x`, where the raw
//!   baseline and the plain `127.0.0.1` tests live;
//! - config files ([`ConfigFile`]), spawning a daemon with its allocator
//!   environment and a log file ([`spawn_daemon`], [`DAEMON_ENV`]);
//! - waiting with a deadline, never sleeping and hoping ([`poll_until`],
//!   [`wait_ready`]);
//! - stopping by PID: SIGTERM, a grace period, then SIGKILL, always reaped
//!   ([`stop`]).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fmt::Display;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Errors launching, waiting for or finding daemons.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{bin} not found in {dir}: run `cargo build --workspace` (or set BRINE_BIN_DIR)")]
    MissingBinary { bin: String, dir: String },
    #[error("cannot build the workspace binaries: {0}")]
    Build(String),
    #[error("i/o in {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} exited early ({status}); log: {log}")]
    Exited {
        what: String,
        status: String,
        log: String,
    },
    #[error("{what} not ready within {secs} s; log: {log}")]
    NotReady {
        what: String,
        secs: u64,
        log: String,
    },
    #[error("no free loopback block 127.A.B.0/24 after {0} tries")]
    NoFreeNet(u32),
    #[error("too many hosts for one /24 ({0})")]
    TooMany(u32),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Io { what, source }
}

/// Where the workspace binaries are: `BRINE_BIN_DIR`, else the directory
/// of the running executable (`target/*/deps` counts as its parent).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BRINE_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Make sure the workspace's binaries in [`bin_dir`] exist and are up to
/// date. Under `cargo test` (which builds only the binaries of the package
/// under test) or `cargo run`, runs `cargo build --workspace --bins` once
/// per process, with the same profile; cargo does not hold its build lock
/// while tests run, and the build is a no-op when nothing changed. Outside
/// cargo (a release binary run by hand) the binaries are taken as they are.
pub fn ensure_built() -> Result<(), LaunchError> {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let r = BUILT.get_or_init(|| {
        let Some(cargo) = std::env::var_os("CARGO") else {
            return Ok(());
        };
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--workspace",
            "--bins",
            "--quiet",
            "--manifest-path",
        ])
        .arg(&manifest);
        if bin_dir().ends_with("release") {
            cmd.arg("--release");
        }
        match cmd.stdin(Stdio::null()).status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("cargo build --workspace --bins failed ({s})")),
            Err(e) => Err(format!("cannot run cargo: {e}")),
        }
    });
    r.clone().map_err(LaunchError::Build)
}

/// Fails with the first of `bins` missing from `dir`.
pub fn require_binaries(dir: &Path, bins: &[&str]) -> Result<(), LaunchError> {
    match bins.iter().find(|b| !dir.join(b).is_file()) {
        Some(bin) => Err(LaunchError::MissingBinary {
            bin: bin.to_string(),
            dir: dir.display().to_string(),
        }),
        None => Ok(()),
    }
}

/// Allocator settings for master and syndic daemons, as the systemd units
/// in `deploy/systemd/` set them: mimalloc hands freed memory back to the
/// OS at once instead of after a delay (~10% less RSS on a loaded syndic,
/// no measured throughput cost), and glibc (used by libzmq and SQLite)
/// keeps two arenas. Applied where the caller's environment does not set
/// them already.
pub const DAEMON_ENV: [(&str, &str); 2] =
    [("MIMALLOC_PURGE_DELAY", "0"), ("MALLOC_ARENA_MAX", "2")];

/// Sets `env` on `cmd`, except what the environment sets itself.
pub fn with_env<'c>(cmd: &'c mut Command, env: &[(&str, &str)]) -> &'c mut Command {
    for (k, v) in env {
        if std::env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    cmd
}

/// Lowest first octet handed out: `127.0.x.x` belongs to the raw baseline
/// (`127.0.tier.chain`) and the tests on `127.0.0.1`; 1..20 stay free for
/// anything else that picks its own.
const FIRST_A: u32 = 20;
/// Blocks to choose from: A in 20..=254, B in 0..=255.
const BLOCKS: u32 = (255 - FIRST_A) * 256;
/// Blocks tried before giving up (each try is one `bind`).
const TRIES: u32 = 4096;

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// A loopback block `127.A.B.0/24` held by this process until dropped:
/// every master of one topology gets its own host in it, with the
/// standard ports.
#[derive(Debug)]
pub struct Net {
    a: u8,
    b: u8,
    /// Bound to the abstract name `brine-net-127.A.B`: the kernel lets one
    /// socket hold a name, and frees it when the process dies.
    _hold: UnixListener,
}

impl Net {
    /// A block no other process on this machine holds, whose `.1` has
    /// nothing on 4505/4506 (a launcher without the hold, or a stray
    /// daemon). Starts at a place that depends on the PID and on how many
    /// blocks this process took, so parallel processes rarely even meet.
    pub fn fresh() -> Result<Net, LaunchError> {
        let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        let start = std::process::id()
            .wrapping_mul(7919)
            .wrapping_add(n.wrapping_mul(104_729));
        for i in 0..TRIES {
            let k = start.wrapping_add(i.wrapping_mul(263)) % BLOCKS;
            let a = (FIRST_A + k / 256) as u8;
            let b = (k % 256) as u8;
            let Ok(name) = SocketAddr::from_abstract_name(format!("brine-net-127.{a}.{b}")) else {
                continue;
            };
            let Ok(hold) = UnixListener::bind_addr(&name) else {
                continue; // held by another process
            };
            let host = format!("127.{a}.{b}.1");
            let free = [4505u16, 4506]
                .iter()
                .all(|p| std::net::TcpListener::bind((host.as_str(), *p)).is_ok());
            if free {
                return Ok(Net { a, b, _hold: hold });
            }
        }
        Err(LaunchError::NoFreeNet(TRIES))
    }

    /// The address of host `n` (1..=254) of the block.
    pub fn host(&self, n: u32) -> Result<String, LaunchError> {
        if !(1..=254).contains(&n) {
            return Err(LaunchError::TooMany(n));
        }
        Ok(format!("127.{}.{}.{n}", self.a, self.b))
    }

    /// The block's second and third octets.
    pub fn octets(&self) -> (u8, u8) {
        (self.a, self.b)
    }
}

/// A daemon config file (`key: value` YAML lines), written in one go.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    text: String,
}

impl ConfigFile {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key: value`.
    pub fn set(mut self, key: &str, value: impl Display) -> Self {
        self.text.push_str(&format!("{key}: {value}\n"));
        self
    }

    /// Adds raw YAML lines (a caller's extra settings).
    pub fn raw(mut self, lines: &str) -> Self {
        if !lines.is_empty() {
            self.text.push_str(lines);
            if !lines.ends_with('\n') {
                self.text.push('\n');
            }
        }
        self
    }

    /// The text as it will be written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Writes `dir/name`, creating `dir`; returns `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> Result<PathBuf, LaunchError> {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let path = dir.join(name);
        std::fs::write(&path, &self.text).map_err(io(format!("writing {}", path.display())))?;
        Ok(dir.to_path_buf())
    }
}

/// Starts `exe -c config_dir` with stdin closed and stdout and stderr
/// appended to `log`, and `env` set unless the environment sets it
/// ([`DAEMON_ENV`] for masters and syndics).
pub fn spawn_daemon(
    exe: &Path,
    config_dir: &Path,
    log: &Path,
    env: &[(&str, &str)],
) -> Result<Child, LaunchError> {
    let what = || format!("{} -c {}", exe.display(), config_dir.display());
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io(format!("opening {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(io(format!("opening {}", log.display())))?;
    with_env(&mut Command::new(exe), env)
        .arg("-c")
        .arg(config_dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| LaunchError::Spawn {
            what: what(),
            source,
        })
}

/// Calls `check` every `every` until it is true (true) or `wait` has
/// passed (false). `check` runs at least once.
pub fn poll_until(wait: Duration, every: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if check() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(every.min(deadline - now));
    }
}

/// Waits up to `wait` until `ready` holds for the daemon `what` (running
/// as `child`, or started by someone else when None); fails at once if the
/// child exits, naming its log's tail.
pub fn wait_ready(
    what: &str,
    mut child: Option<&mut Child>,
    log: &Path,
    wait: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), LaunchError> {
    let mut exited = None;
    let ok = poll_until(wait, Duration::from_millis(50), || {
        if let Some(Ok(Some(status))) = child.as_mut().map(|c| c.try_wait()) {
            exited = Some(status);
            return true;
        }
        ready()
    });
    match exited {
        Some(status) => Err(LaunchError::Exited {
            what: what.to_string(),
            status: status.to_string(),
            log: log_tail(log),
        }),
        None if ok => Ok(()),
        None => Err(LaunchError::NotReady {
            what: what.to_string(),
            secs: wait.as_secs(),
            log: log_tail(log),
        }),
    }
}

/// The path and last 2000 bytes of a log, for error messages.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let start = text.len().saturating_sub(2000);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    format!("{} ...{}", log.display(), &text[start..])
}

/// How to stop a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM, then SIGKILL if it has not exited after the grace period.
    Term(Duration),
    /// SIGKILL at once.
    Kill,
}

/// Stops `child` and reaps it; harmless if it already exited. A frozen
/// (SIGSTOPped) child is resumed first so it can act on the SIGTERM.
pub fn stop(child: &mut Child, how: Stop) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let (Stop::Term(grace), Ok(raw)) = (how, i32::try_from(child.id())) {
        let pid = Pid::from_raw(raw);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, Signal::SIGTERM);
        if wait_exit(child, grace) {
            return;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits up to `grace` for `child` to exit by itself (reaping it); true if
/// it did.
pub fn wait_exit(child: &mut Child, grace: Duration) -> bool {
    poll_until(grace, Duration::from_millis(20), || {
        matches!(child.try_wait(), Ok(Some(_)))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_loopback_outside_127_0_and_held_once() {
        let one = Net::fresh().unwrap();
        let two = Net::fresh().unwrap();
        for n in [&one, &two] {
            let (a, _) = n.octets();
            assert!(a >= 20, "{n:?}");
            let ip: std::net::Ipv4Addr = n.host(1).unwrap().parse().unwrap();
            assert!(ip.is_loopback());
        }
        assert_ne!(one.octets(), two.octets());
        // The hold is exclusive: naming the same block again fails.
        let (a, b) = one.octets();
        let name = SocketAddr::from_abstract_name(format!("brine-net-127.{a}.{b}")).unwrap();
        assert!(UnixListener::bind_addr(&name).is_err());
        drop(one);
        assert!(UnixListener::bind_addr(&name).is_ok(), "freed on drop");
    }

    #[test]
    fn hosts_stay_in_the_block() {
        let n = Net::fresh().unwrap();
        let (a, b) = n.octets();
        assert_eq!(n.host(254).unwrap(), format!("127.{a}.{b}.254"));
        assert!(matches!(n.host(0), Err(LaunchError::TooMany(0))));
        assert!(matches!(n.host(255), Err(LaunchError::TooMany(255))));
    }

    #[test]
    fn config_files_are_key_value_lines_plus_raw_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ConfigFile::new()
            .set("id", "top")
            .set("timeout", 5)
            .raw("log_level: warning")
            .raw("");
        assert_eq!(cfg.text(), "id: top\ntimeout: 5\nlog_level: warning\n");
        let d = cfg.write(&dir.path().join("top"), "master").unwrap();
        let text = std::fs::read_to_string(d.join("master")).unwrap();
        assert_eq!(text, cfg.text());
    }

    #[test]
    fn missing_binaries_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("salt-key"), "").unwrap();
        let e = require_binaries(dir.path(), &["salt-key", "salt-master"]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("salt-master not found") && text.contains("cargo build"));
        assert!(require_binaries(dir.path(), &["salt-key"]).is_ok());
    }

    #[test]
    fn poll_until_runs_at_least_once_and_is_bounded() {
        let mut n = 0;
        assert!(!poll_until(
            Duration::ZERO,
            Duration::from_millis(1),
            || {
                n += 1;
                false
            }
        ));
        assert_eq!(n, 1);
        let mut n = 0;
        assert!(poll_until(Duration::from_secs(60), Duration::ZERO, || {
            n += 1;
            n == 3
        }));
    }

    fn gone(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|s| s.contains("State:\tZ"))
            .unwrap_or(true)
    }

    #[test]
    fn stop_terms_then_kills_and_reaps() {
        // Ignores SIGTERM: only the SIGKILL after the grace stops it.
        let mut c = Command::new("sh")
            .args(["-c", "trap '' TERM; echo ready; exec sleep 30"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(c.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let pid = c.id();
        stop(&mut c, Stop::Term(Duration::from_millis(100)));
        assert!(gone(pid));
        assert!(c.try_wait().unwrap().is_some());
        // Already reaped: stopping again is harmless.
        stop(&mut c, Stop::Kill);
    }

    #[test]
    fn stop_kill_and_wait_ready_see_an_exit() {
        let mut c = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = c.id();
        stop(&mut c, Stop::Kill);
        assert!(gone(pid));

        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "boom: bad config\n").unwrap();
        let mut c = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let e = wait_ready("x", Some(&mut c), &log, Duration::from_secs(60), || false).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("x exited early") && text.contains("boom"),
            "{text}"
        );

        let mut c = Command::new("sleep").arg("30").spawn().unwrap();
        let e = wait_ready("y", Some(&mut c), &log, Duration::ZERO, || false).unwrap_err();
        assert!(matches!(e, LaunchError::NotReady { .. }), "{e}");
        assert!(wait_ready("y", None, &log, Duration::ZERO, || true).is_ok());
        stop(&mut c, Stop::Term(Duration::from_secs(5)));
    }
}
