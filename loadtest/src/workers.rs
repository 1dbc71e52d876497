//! Child processes of a load test: spawning, talking to and stopping them.
//!
//! Children (top, relays, minion workers) are this same binary run with a
//! hidden subcommand; they report `ChildEvent`s as JSON lines on stdout,
//! which a reader thread per child turns into a channel. Minions are split
//! across worker processes so each stays well under the fd limit.
//! Stopping goes through [`brine_deploy::launch::stop`].
//! Invariant: every child is killed by PID when its `ChildProc` drops
//! (normal end, error, or Ctrl-C), and children ask the kernel to kill them
//! if the parent dies first (`PR_SET_PDEATHSIG`), so none outlives a run.

use crate::stats::StatsSnapshot;
use brine_deploy::launch::{self, Stop};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors managing child processes.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("i/o with {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0} exited before reporting")]
    Exited(String),
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("interrupted")]
    Interrupted,
    #[error("fd limit {limit} is too low for {minions} minions in {workers} workers")]
    FdLimit {
        limit: u64,
        minions: usize,
        workers: usize,
    },
}

/// Final report of the top process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopResult {
    pub expected_per_job: u32,
    pub jobs: u32,
    pub completed_jobs: u32,
    pub timed_out_jobs: u32,
    /// Returns counted for measured (non-warmup) jobs.
    pub received: u64,
    pub lost_returns: u64,
    pub duplicate_returns: u64,
    pub unexpected_returns: u64,
    pub malformed: u64,
    pub stats: StatsSnapshot,
}

/// Final report of one minion worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerResult {
    pub worker: u32,
    pub minions: u32,
    pub contexts: u32,
    pub fds_per_minion: f64,
    pub rss_kib: u64,
    pub jobs_seen: u64,
    pub replies_sent: u64,
    pub send_errors: u64,
    pub recv_errors: u64,
    pub failed_minions: u32,
    pub timed_out: bool,
}

/// One line a child prints on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ChildEvent {
    /// A top or relay bound its sockets at these endpoints.
    Ready {
        pub_endpoint: String,
        ret_endpoint: String,
    },
    Progress {
        phase: String,
        done: u32,
        total: u32,
    },
    WorkerReady {
        worker: u32,
        minions: u32,
        fds_per_minion: f64,
    },
    TopResult(TopResult),
    RelayResult {
        forwarded_down: u64,
        forwarded_up: u64,
    },
    WorkerResult(WorkerResult),
    /// Every simulated Brine minion of a worker signed in.
    SimReady {
        worker: u32,
        minions: u32,
        fds_per_minion: f64,
    },
    SimResult(Box<crate::brine::sim::SimResult>),
}

/// Prints one event as a JSON line on stdout and flushes it.
pub fn emit(ev: &ChildEvent) -> Result<(), std::io::Error> {
    let line = serde_json::to_string(ev).map_err(std::io::Error::other)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Number of open fds of this process (entries of `/proc/self/fd`).
pub fn count_fds() -> std::io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count())
}

/// The soft fd limit (`RLIMIT_NOFILE`).
pub fn fd_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft)
}

/// Fds one simulated minion costs (SUB + DEALER: a socketpair mailbox and
/// a TCP connection each with the vendored libzmq), with a margin; the
/// measured figure is reported after every run.
pub const FDS_PER_MINION_ESTIMATE: u64 = 7;
/// Fds a worker needs besides its minions (runtime, contexts, stdio).
pub const FDS_WORKER_OVERHEAD: u64 = 200;

/// Splits `minions` over as few workers as keep each under half the fd
/// limit and under `max_per_worker`; returns the minion count per worker.
pub fn plan_workers(
    minions: usize,
    limit: u64,
    max_per_worker: usize,
) -> Result<Vec<usize>, WorkerError> {
    if minions == 0 {
        return Ok(Vec::new());
    }
    let by_fds = (limit / 2).saturating_sub(FDS_WORKER_OVERHEAD) / FDS_PER_MINION_ESTIMATE;
    let per = (by_fds as usize).min(max_per_worker.max(1));
    if per == 0 {
        return Err(WorkerError::FdLimit {
            limit,
            minions,
            workers: 0,
        });
    }
    let workers = minions.div_ceil(per);
    let (base, extra) = (minions / workers, minions % workers);
    Ok((0..workers)
        .map(|i| base + usize::from(i < extra))
        .collect())
}

/// Makes the kernel kill this process when its parent dies; children call
/// it first thing so a killed coordinator leaves nothing behind.
pub fn die_with_parent() {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
}

/// A flag set on Ctrl-C (SIGINT), watched by a small tokio runtime on its
/// own thread. Coordinator loops check it and unwind, dropping children.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let spawned = std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    f.store(true, Ordering::SeqCst);
                }
            });
        });
    if spawned.is_err() {
        tracing::warn!("cannot watch for ctrl-c");
    }
    flag
}

/// A running child: its PID, its stdout events, killed on drop.
pub struct ChildProc {
    /// Human name for errors ("relay 127.0.1.2").
    pub name: String,
    child: Child,
    events: Receiver<ChildEvent>,
}

impl ChildProc {
    /// Starts `cmd` with piped stdin/stdout; `stdin_data` is written and
    /// stdin closed. A reader thread parses stdout lines as events.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        stdin_data: Option<&[u8]>,
    ) -> Result<Self, WorkerError> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| WorkerError::Spawn {
            what: name.to_string(),
            source,
        })?;
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take();
        let mut proc = ChildProc {
            name: name.to_string(),
            child,
            events: rx,
        };
        if let Some(out) = stdout {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(ev) = serde_json::from_str::<ChildEvent>(&line) {
                        if tx.send(ev).is_err() {
                            break;
                        }
                    }
                }
            });
        }
        if let Some(mut stdin) = proc.child.stdin.take() {
            if let Some(data) = stdin_data {
                stdin.write_all(data).map_err(|source| WorkerError::Io {
                    what: name.to_string(),
                    source,
                })?;
            }
        }
        // On a failed write above, `proc` drops here and the child is killed.
        Ok(proc)
    }

    /// The child's PID.
    #[cfg(test)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the next event matching `want`, skipping others (passed
    /// to `on_other`), until `deadline` or an interrupt.
    pub fn wait_for<T>(
        &mut self,
        deadline: Instant,
        interrupted: &AtomicBool,
        mut want: impl FnMut(ChildEvent) -> Result<T, ChildEvent>,
        mut on_other: impl FnMut(&ChildEvent),
    ) -> Result<T, WorkerError> {
        loop {
            if interrupted.load(Ordering::SeqCst) {
                return Err(WorkerError::Interrupted);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WorkerError::Timeout(self.name.clone()));
            }
            match self
                .events
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(ev) => match want(ev) {
                    Ok(v) => return Ok(v),
                    Err(other) => on_other(&other),
                },
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(WorkerError::Exited(self.name.clone()))
                }
            }
        }
    }

    /// Waits up to `grace` for the child to exit by itself, then kills it.
    pub fn finish(&mut self, grace: Duration) {
        if !launch::wait_exit(&mut self.child, grace) {
            self.kill();
        }
    }

    /// Kills (SIGKILL) and reaps the child; harmless if it already exited.
    pub fn kill(&mut self) {
        launch::stop(&mut self.child, Stop::Kill);
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_limits() {
        let plan = plan_workers(5000, 20000, 1250).unwrap();
        assert_eq!(plan, vec![1250; 4]);
        let plan = plan_workers(5001, 20000, 5000).unwrap();
        assert_eq!(plan.iter().sum::<usize>(), 5001);
        for n in &plan {
            assert!(*n as u64 * FDS_PER_MINION_ESTIMATE + FDS_WORKER_OVERHEAD <= 10000);
        }
        assert!(plan_workers(10, 100, 1000).is_err());
        assert!(plan_workers(0, 100, 1000).unwrap().is_empty());
        assert_eq!(plan_workers(7, 20000, 3).unwrap(), vec![3, 2, 2]);
    }

    #[test]
    fn reads_vm_rss() {
        use brine_deploy::memory::{status_kib, try_rss_kib};
        assert_eq!(
            status_kib("Name:\tx\nVmRSS:\t  1234 kB\n", "VmRSS"),
            Some(1234)
        );
        assert_eq!(status_kib("Name:\tx\n", "VmRSS"), None);
        assert!(try_rss_kib(std::process::id()).unwrap() > 0);
        assert!(count_fds().unwrap() >= 3);
    }

    #[test]
    fn child_events_and_kill_on_drop() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(
            "read x; echo '{\"event\":\"progress\",\"phase\":\"'$x'\",\"done\":1,\"total\":2}'; exec sleep 30",
        );
        let mut c = ChildProc::spawn("sh", cmd, Some(b"hello\n")).unwrap();
        let pid = c.pid();
        let stop = AtomicBool::new(false);
        let phase = c
            .wait_for(
                Instant::now() + Duration::from_secs(10),
                &stop,
                |ev| match ev {
                    ChildEvent::Progress { phase, .. } => Ok(phase),
                    other => Err(other),
                },
                |_| {},
            )
            .unwrap();
        assert_eq!(phase, "hello");
        drop(c);
        let gone = !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map(|s| s.contains("State:\tZ"))
                .unwrap_or(true);
        assert!(gone, "child {pid} still running");
    }

    #[test]
    fn event_json_shape() {
        let ev = ChildEvent::Ready {
            pub_endpoint: "tcp://127.0.0.1:1".into(),
            ret_endpoint: "tcp://127.0.0.1:2".into(),
        };
        let s = serde_json::to_string(&ev).unwrap();
        assert!(s.contains("\"event\":\"ready\""));
        assert_eq!(serde_json::from_str::<ChildEvent>(&s).unwrap(), ev);
    }
}
