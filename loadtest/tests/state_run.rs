//! End-to-end state jobs through the built `loadtest` binary: a real top
//! `salt-master` and 2 `salt-syndic`s, 100 simulated minions, 3 jobs of
//! `state.apply`; every minion renders, compiles and runs the built-in
//! tree, every return arrives and counts as a success, and the report
//! carries the per-minion cost and the return size. Bounded by the
//! loadtest's own job and ready timeouts (and `timeout` on the child).

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn state_apply_on_simulated_minions_loses_nothing() {
    brine_deploy::topology::ensure_built().expect("building the workspace binaries");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new("timeout")
        .args(["-s", "INT", "-k", "10", "240"])
        .arg(env!("CARGO_BIN_EXE_loadtest"))
        .args(["--minions", "100", "--syndics", "2", "--jobs", "3"])
        .args(["--fun", "state.apply", "--no-baseline"])
        .args(["--publish-port", "0", "--ret-port", "0"])
        .args([
            "--job-timeout",
            "30",
            "--ready-timeout",
            "120",
            "--key-pool",
            "4",
        ])
        .arg("--key-dir")
        .arg(dir.path().join("keys"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{table}", out.status);
    assert!(table.contains("render+compile+run per minion"), "{table}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["fun"], "state.apply");
    assert_eq!(v["received_returns"], 300);
    assert_eq!(v["lost_returns"], 0);
    assert_eq!(v["failed_returns"], 0, "retcode 0: every state True");
    assert_eq!(v["completed_jobs"], 3);
    let sj = &v["state_job"];
    // 3 measured jobs and 1 warm-up, 100 minions each.
    assert_eq!(sj["jobs"], 400, "{sj}");
    assert!(sj["cost_us"]["p50"].as_u64().unwrap() > 0, "{sj}");
    let bytes = sj["return_bytes"]["p50"].as_u64().unwrap();
    assert!((2000..5000).contains(&bytes), "ten states' return: {sj}");
}
