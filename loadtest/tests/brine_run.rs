//! End-to-end Brine run through the built `loadtest` binary: a real top
//! `salt-master` and 2 `salt-syndic`s, 200 simulated minions, 5 jobs;
//! checks the JSON report, that the tier legs fit within job completion,
//! and that no process it started is left running (also after Ctrl-C).
//! Needs `cargo build --workspace` first (salt-master and salt-syndic next
//! to the loadtest binary).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// PIDs of all live processes whose parent is `ppid` (from /proc).
fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        if f.next().and_then(|p| p.parse::<u32>().ok()) == Some(ppid) && state != "Z" {
            out.push(pid);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| !s.contains("State:\tZ"))
        .unwrap_or(false)
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The daemons must be built next to the loadtest binary (cargo test builds
/// only this package's binaries, so build the workspace's once).
fn require_daemons() {
    brine_deploy::topology::ensure_built().expect("building the workspace binaries");
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_loadtest"))
        .parent()
        .unwrap()
        .to_path_buf();
    for bin in ["salt-master", "salt-syndic"] {
        assert!(
            dir.join(bin).is_file(),
            "{bin} is missing in {}: run `cargo build --workspace` before this test",
            dir.display()
        );
    }
}

/// Waits for `child` until `deadline`, recording its children; on timeout
/// kills it and every recorded child by PID and fails.
fn wait_recording(child: &mut Child, seen: &mut Vec<u32>, deadline: Instant, what: &str) {
    loop {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        for c in children_of(child.id()) {
            if !seen.contains(&c) {
                seen.push(c);
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            for &p in seen.iter() {
                let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
            }
            panic!("{what} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_all_gone(seen: &[u32]) {
    let settle = Instant::now() + Duration::from_secs(10);
    let mut left: Vec<u32> = seen.to_vec();
    while !left.is_empty() && Instant::now() < settle {
        left.retain(|p| alive(*p));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(left.is_empty(), "left running: {left:?}");
}

fn run_args(cmd: &mut Command, minions: &str, key_dir: &std::path::Path) {
    cmd.args(["--minions", minions, "--syndics", "2", "--jobs", "5"])
        .args(["--warmup", "1", "--payload", "100"])
        .args(["--minions-per-worker", "120", "--minions-per-context", "50"])
        .args(["--publish-port", "0", "--ret-port", "0"])
        .args(["--job-timeout", "30", "--ready-timeout", "120"])
        .args(["--key-pool", "4"])
        .arg("--key-dir")
        .arg(key_dir);
}

#[test]
fn brine_run_counts_every_return_through_real_syndics() {
    require_daemons();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let html = dir.path().join("report.html");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    run_args(&mut cmd, "200", &dir.path().join("keys"));
    let mut child = cmd
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    wait_recording(&mut child, &mut seen, deadline, "loadtest");
    let out = child.wait_with_output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{table}", out.status);
    assert!(table.contains("rss syndic1"), "{table}");

    // salt-master, 2 salt-syndic, 2 brine workers, then the baseline's
    // top, 2 relays and 2 workers ...
    let names: Vec<String> = seen.iter().map(|p| comm(*p)).collect();
    assert!(seen.len() >= 10, "children seen: {names:?}");
    // ... and none of them is left.
    assert_all_gone(&seen);

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["mode"], "brine");
    assert_eq!(v["minions"], 200);
    assert_eq!(v["expected_returns"], 1000);
    assert_eq!(v["received_returns"], 1000, "every return counted");
    assert_eq!(v["lost_returns"], 0);
    assert_eq!(v["duplicate_returns"], 0);
    assert_eq!(v["unexpected_returns"], 0);
    assert_eq!(v["failed_returns"], 0);
    assert_eq!(v["completed_jobs"], 5);
    assert_eq!(v["timed_out_jobs"], 0);
    assert_eq!(v["worker_processes"], 2);
    assert!(v["sign_ins"].as_u64().unwrap() >= 200);
    assert_eq!(
        v["trace_over_completion"], 0,
        "legs fit in each return's time"
    );
    let bal = v["balance"].as_object().unwrap();
    assert_eq!(bal.values().map(|n| n.as_u64().unwrap()).sum::<u64>(), 200);
    let fds = v["fds_per_minion"].as_f64().unwrap();
    assert!((2.0..12.0).contains(&fds), "fds per minion {fds}");
    assert!(v["minion_rss_kib"].as_f64().unwrap() > 0.0);
    assert!(!v["top_rss_kib"].as_array().unwrap().is_empty());
    let syn = v["syndic_rss_kib"].as_object().unwrap();
    assert_eq!(syn.len(), 2);
    for (k, s) in syn {
        assert!(!s.as_array().unwrap().is_empty(), "{k}");
    }

    let h = &v["histograms"];
    let legs = [
        "top_to_syndic",
        "syndic_to_minion",
        "minion_exec",
        "minion_to_syndic",
        "syndic_to_top",
    ];
    for tier in legs {
        assert_eq!(h[tier]["count"], 1000, "{tier} histogram");
    }
    assert_eq!(h["first_return"]["count"], 5);
    assert_eq!(h["completion"]["count"], 5);
    let c = &v["completion_ms"];
    let max = c["max"].as_f64().unwrap();
    assert!(c["p50"].as_f64().unwrap() > 0.0);
    let sum_p50: f64 = legs
        .iter()
        .map(|t| h[*t]["ms"]["p50"].as_f64().unwrap())
        .sum();
    assert!(
        sum_p50 <= max,
        "legs p50 sum {sum_p50} > completion max {max}"
    );
    assert!(h["first_return"]["ms"]["max"].as_f64().unwrap() <= max);
    // The raw baseline ran too, so the ratio is known.
    assert_eq!(v["baseline_histograms"]["completion"]["count"], 5);
    assert!(v["ratio_p50"].as_f64().unwrap() > 0.0);

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && !page.contains("<script"));
}

#[test]
fn ctrl_c_stops_every_daemon() {
    require_daemons();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    run_args(&mut cmd, "20", &dir.path().join("keys"));
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until both syndics run, then interrupt.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.iter().filter(|p| comm(**p) == "salt-syndic").count() < 2 {
        assert!(child.try_wait().unwrap().is_none(), "loadtest ended early");
        assert!(Instant::now() < deadline, "syndics never started");
        for c in children_of(child.id()) {
            if !seen.contains(&c) {
                seen.push(c);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    wait_recording(
        &mut child,
        &mut seen,
        Instant::now() + Duration::from_secs(30),
        "interrupted loadtest",
    );
    let status = child.wait().unwrap();
    assert!(!status.success(), "an interrupted run is not a success");
    assert_all_gone(&seen);
}
