//! End-to-end event benchmark through the built `loadtest` binary: a real
//! top `salt-master`, 100 simulated minions straight on it (`--syndics
//! 0`; events through syndics are checked end to end in
//! deploy/tests/e2e_syndic_events.rs), 1 event per second each for 3 s.
//! Every sent event reaches the top's subscriber exactly once, none is
//! refused, and the report carries the latency and the top's CPU time.
//! Bounded by the benchmark's own grace period and `timeout` on the child.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn every_event_reaches_the_top_once() {
    brine_deploy::topology::ensure_built().expect("building the workspace binaries");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new("timeout")
        .args(["-s", "INT", "-k", "10", "240"])
        .arg(env!("CARGO_BIN_EXE_loadtest"))
        .args(["--minions", "100", "--syndics", "0"])
        .args(["--events-per-sec", "1", "--events-secs", "3"])
        .args(["--publish-port", "0", "--ret-port", "0"])
        .args(["--ready-timeout", "120", "--key-pool", "4"])
        .arg("--key-dir")
        .arg(dir.path().join("keys"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{table}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("events at the top: delivered 300"),
        "{table}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ev = &v["events"];
    assert_eq!(ev["planned"], 300, "{ev}");
    assert_eq!(ev["sent"], 300, "{ev}");
    assert_eq!(ev["acked"], 300, "{ev}");
    assert_eq!(ev["refused"], 0, "{ev}");
    assert_eq!(ev["delivered"], ev["sent"], "{ev}");
    assert_eq!(ev["lost"], 0, "{ev}");
    assert_eq!(ev["duplicate"], 0, "{ev}");
    assert_eq!(ev["top_events_dropped"], 0, "{ev}");
    assert!(ev["latency_us"]["p99"].as_u64().unwrap() > 0, "{ev}");
    assert!(ev["top_cpu_secs"].as_f64().unwrap() > 0.0, "{ev}");
    assert_eq!(v["jobs"], 0, "the event benchmark runs instead of jobs");
}
