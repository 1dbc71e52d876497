//! Faults on the return path after admission, against real processes on
//! loopback (issue 16, items 3 and 4; docs/ARCHITECTURE.md "Faults"):
//!
//! - a full disk under the top master's job cache (a small tmpfs mounted
//!   on its cachedir, filled with a file, later emptied): `salt` warns and
//!   exits 74, and once the disk has room every return ends in the job
//!   cache (skipped, with a line saying so, where `mount` is not allowed);
//! - a `salt` process that stops reading (SIGSTOP, a paused terminal)
//!   while its job's minions return 1 MiB each: the master's resident
//!   memory grows by far less than the returns (the bound is
//!   `WATCH_BYTES`, 4 MiB, per client), and once the client reads again
//!   it still gets every return.

use brine_common::proto::{ReplyBody, RequestBody, ReturnLoad, Role};
use brine_deploy::memory::rss_kib;
use brine_deploy::peer::HandPeer;
use brine_deploy::topology::Topology;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A tmpfs mounted for one test; unmounted on drop (declare it before the
/// topology, so the master using it has stopped by then).
struct Tmpfs {
    at: Option<PathBuf>,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` on `at`; Err(why) where mounting is not
    /// allowed (not root, no CAP_SYS_ADMIN, a container).
    fn mount(&mut self, at: &Path, size: &str) -> Result<(), String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        self.at = Some(at.to_path_buf());
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Some(at) = self.at.take() {
            let ok = Command::new("umount")
                .arg(&at)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                // Still busy (a test failed before its topology stopped).
                let _ = Command::new("umount").arg("-l").arg(&at).status();
            }
        }
    }
}

/// Fill the file system holding `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    let chunk = vec![0u8; 64 * 1024];
    // Bounded by the size of the tmpfs (at most 16 MiB here).
    for _ in 0..1024 {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = f.flush();
    path
}

#[test]
fn a_full_job_cache_disk_loses_no_return() {
    // Declared first: dropped (unmounted) after the topology has stopped.
    let mut tmpfs = Tmpfs { at: None };
    let mut topo = Topology::builder()
        .direct_minions(3)
        .master_config("gather_job_timeout: 2")
        .start(Duration::from_secs(60))
        .expect("topology");
    let cfg = brine_common::config::load_master(&topo.top.config_dir, &[]).expect("config");
    // The master's cachedir becomes a small tmpfs (it starts afresh there:
    // keys live in pki_dir, the minions sign in again).
    topo.stop("top", false).expect("stop top");
    if let Err(why) = tmpfs.mount(&cfg.cachedir, "8m") {
        eprintln!(
            "SKIPPED a_full_job_cache_disk_loses_no_return: cannot mount a tmpfs on {} ({why}); run as root to test a full job cache disk",
            cfg.cachedir.display()
        );
        return;
    }
    topo.spawn_master("top", "salt-master")
        .expect("restart top");
    let ids: Vec<String> = topo.minions.iter().map(|m| m.id.clone()).collect();
    topo.wait_up(&ids, Duration::from_secs(60))
        .expect("minions back");

    let filler = fill(&cfg.cachedir);
    let out = topo
        .salt(&["*", "test.ping", "--out", "json", "--static", "-t", "3"])
        .expect("salt");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(brine_common::exit::JOB_CACHE_FAILING),
        "salt must exit 74 when the job cache fails: {out:?}\n{}",
        topo.log("top")
    );
    assert!(
        stderr.contains("job cache is failing"),
        "salt must warn: {stderr}"
    );
    let jid = stderr
        .split("jobs.lookup_jid ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .expect("salt names the jid to look up")
        .to_string();
    assert!(
        topo.stats()["returns_not_stored"].as_u64() >= Some(1),
        "{}",
        topo.stats()
    );

    // Room again: the minions' resends (first after 10 s) are stored, and
    // the job record kept in memory is written.
    std::fs::remove_file(&filler).expect("free the disk");
    let mut last = Value::Null;
    let stored = topo.eventually(Duration::from_secs(120), "every return stored", || {
        last = topo.lookup_jid("top", &jid);
        ids.iter()
            .all(|id| last.get(id) == Some(&Value::Bool(true)))
    });
    assert!(
        stored.is_ok(),
        "job {jid} in the job cache: {last}\n{}",
        topo.log("top")
    );
    let listed = topo
        .cli("top", "salt-run", &["jobs.list_jobs", "--out", "json"])
        .expect("list_jobs");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&jid),
        "the job record itself is stored: {listed:?}"
    );
    drop(topo);
}

/// Minions (hand-driven peers) returning `RETURN_BYTES` each to one job.
const PEERS: usize = 48;
const RETURN_BYTES: usize = 1 << 20;

/// Growth of the master's RSS allowed while its only client is stalled:
/// the queue bound (4 MiB) plus room for allocator slack; without the
/// bound the master holds every return (48 MiB).
const MAX_GROWTH_KIB: u64 = 24 * 1024;

#[test]
fn a_stalled_salt_client_costs_the_master_a_bounded_queue() {
    let topo = Topology::builder()
        .start(Duration::from_secs(30))
        .expect("topology");
    let pid = topo.pid("top").expect("master pid");
    let ctx = zmq::Context::new();
    let mut peers = Vec::new();
    for i in 0..PEERS {
        let id = format!("big{i:02}");
        let mut p = HandPeer::new(&ctx, &topo.top.addr, &id, Role::Minion).expect("peer");
        p.sign_in().expect("sign in");
        let r = p
            .request(RequestBody::Hello {
                grains: serde_json::json!({}),
                version: "test".into(),
            })
            .expect("hello");
        assert!(matches!(r, ReplyBody::Ok), "{r:?}");
        peers.push((id, p));
    }
    let salt = Command::new(topo.bin.join("salt"))
        .arg("-c")
        .arg(&topo.top.config_dir)
        .args(["big*", "test.ping", "--out", "json", "--static", "-t", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("salt");
    let mut jid = String::new();
    topo.eventually(Duration::from_secs(20), "the job is published", || {
        let out = topo.cli("top", "salt-run", &["jobs.list_jobs", "--out", "json"]);
        let v: Value = out
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or(Value::Null);
        if let Some(j) = v.as_object().and_then(|m| m.keys().next()) {
            jid = j.clone();
        } else if let Some(j) = v
            .as_array()
            .and_then(|a| a.first())
            .and_then(|j| j.get("jid"))
            .and_then(Value::as_str)
        {
            jid = j.to_string();
        }
        !jid.is_empty()
    })
    .expect("job published");
    // A paused terminal: the client stops reading.
    let salt_pid = Pid::from_raw(salt.id() as i32);
    kill(salt_pid, Signal::SIGSTOP).expect("SIGSTOP salt");
    let before = rss_kib(pid);
    let payload = "x".repeat(RETURN_BYTES);
    for (id, p) in peers.iter_mut() {
        let r = p
            .request(RequestBody::Return(ReturnLoad {
                jid: jid.parse().expect("jid"),
                id: id.clone(),
                fun: "test.ping".into(),
                fun_args: vec![],
                ret: Value::String(payload.clone()),
                retcode: 0,
                success: true,
                out: None,
                trace: None,
            }))
            .expect("return acknowledged");
        assert!(matches!(r, ReplyBody::Ok), "{id}: {r:?}");
    }
    let after = rss_kib(pid);
    let growth = after.saturating_sub(before);
    eprintln!(
        "stalled client: master RSS {before} KiB before, {after} KiB after {PEERS} returns of {} KiB (+{growth} KiB)",
        RETURN_BYTES / 1024
    );
    let st = topo.stats();
    kill(salt_pid, Signal::SIGCONT).expect("SIGCONT salt");
    assert!(
        growth < MAX_GROWTH_KIB,
        "master grew {growth} KiB while its client was stalled (bound {MAX_GROWTH_KIB})"
    );
    assert!(
        st["watch_returns_deferred"].as_u64() >= Some(1),
        "deferred returns are counted: {st}"
    );
    // Reading again, the client gets every return (the live ones, then
    // those left in the job cache).
    let out = salt.wait_with_output().expect("salt output");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        topo.log("top")
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("salt json");
    for (id, _) in &peers {
        assert_eq!(
            v.get(id).and_then(Value::as_str).map(str::len),
            Some(RETURN_BYTES),
            "return of {id}"
        );
    }
}
