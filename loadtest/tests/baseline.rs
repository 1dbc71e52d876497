//! End-to-end raw baseline through the built `loadtest` binary: 200
//! minions behind 2 relays, 5 jobs; checks the JSON report and that no
//! process it started is left running.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// PIDs of all processes whose parent is `ppid` (from /proc).
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
        // Fields after the command name in parentheses: state, ppid, ...
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

#[test]
fn baseline_end_to_end_counts_every_return() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let html = dir.path().join("report.html");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "baseline",
            "--minions",
            "200",
            "--syndics",
            "2",
            "--jobs",
            "5",
        ])
        .args([
            "--warmup",
            "1",
            "--payload",
            "100",
            "--minions-per-worker",
            "120",
        ])
        .args([
            "--minions-per-context",
            "50",
            "--publish-port",
            "0",
            "--ret-port",
            "0",
        ])
        .args(["--job-timeout", "20", "--ready-timeout", "60"])
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Bounded wait; on timeout kill the coordinator (its children die with
    // it through PR_SET_PDEATHSIG) and fail.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen_children = Vec::new();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        for c in children_of(pid) {
            if !seen_children.contains(&c) {
                seen_children.push(c);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("loadtest baseline did not finish in time");
    };
    let out = child.wait_with_output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(status.success(), "exit {status:?}\n{table}");
    assert!(table.contains("completion"), "{table}");

    // Top + 2 relays + 2 workers were started as children ...
    assert!(seen_children.len() >= 5, "children seen: {seen_children:?}");
    // ... and none of them is left.
    let settle = Instant::now() + Duration::from_secs(5);
    let mut alive: Vec<u32> = seen_children.clone();
    while !alive.is_empty() && Instant::now() < settle {
        alive.retain(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .map(|s| !s.contains("State:\tZ"))
                .unwrap_or(false)
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(alive.is_empty(), "left running: {alive:?}");

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["mode"], "baseline");
    assert_eq!(v["minions"], 200);
    assert_eq!(v["syndics"], 2);
    assert_eq!(v["tiers"], 1);
    assert_eq!(v["jobs"], 5);
    assert_eq!(v["expected_returns"], 1000);
    assert_eq!(v["received_returns"], 1000, "every return counted");
    assert_eq!(v["lost_returns"], 0);
    assert_eq!(v["duplicate_returns"], 0);
    assert_eq!(v["unexpected_returns"], 0);
    assert_eq!(v["completed_jobs"], 5);
    assert_eq!(v["worker_processes"], 2);
    let bal = v["balance"].as_object().unwrap();
    assert_eq!(bal.len(), 2);
    assert_eq!(bal.values().map(|n| n.as_u64().unwrap()).sum::<u64>(), 200);
    let moved = v["moved_fraction_on_add"].as_f64().unwrap();
    assert!(moved > 0.1 && moved < 0.6, "moved {moved}");
    let fds = v["fds_per_minion"].as_f64().unwrap();
    assert!((2.0..12.0).contains(&fds), "fds per minion {fds}");
    assert!(v["minion_rss_kib"].as_f64().unwrap() > 0.0);

    let h = &v["histograms"];
    for tier in [
        "top_to_syndic",
        "syndic_to_minion",
        "minion_exec",
        "minion_to_syndic",
        "syndic_to_top",
    ] {
        assert_eq!(h[tier]["count"], 1000, "{tier}");
    }
    assert_eq!(h["first_return"]["count"], 5);
    assert_eq!(h["completion"]["count"], 5);
    let c = &v["completion_ms"];
    let (p50, p90, p99, max) = (
        c["p50"].as_f64().unwrap(),
        c["p90"].as_f64().unwrap(),
        c["p99"].as_f64().unwrap(),
        c["max"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p90 && p90 <= p99 && p99 <= max, "{c}");
    // The first return of a job never comes after its last.
    assert!(h["first_return"]["ms"]["p50"].as_f64().unwrap() <= p50);
    assert!(h["first_return"]["ms"]["max"].as_f64().unwrap() <= max);
    assert_eq!(v["ratio_p50"], 1.0);

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && !page.contains("<script"));
}
