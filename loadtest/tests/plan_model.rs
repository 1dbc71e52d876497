//! `loadtest plan --from FILE` through the built binary: fits the model to
//! a written grid (no daemons start), answers "minions per syndic" and
//! "syndics for N", reports the held-out error, writes the JSON; and
//! refuses a file that is not a plan. Bounded: the binary does arithmetic
//! only and is killed after 30 s.

#![allow(clippy::unwrap_used)]

use brine_loadtest::model::{self, Point};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// p99 of a grid that follows 3 + 0.02·M/S + 0.004·M ms exactly.
fn p99(m: u32, s: u32) -> f64 {
    3.0 + 0.02 * f64::from(m) / f64::from(s) + 0.004 * f64::from(m)
}

fn cell(m: u32, s: u32) -> serde_json::Value {
    let per_job_top = 0.001 + 0.00002 * f64::from(m);
    let returns = u64::from(m) * 10;
    serde_json::json!({
        "minions": m, "syndics": s,
        "completion_ms": {"p50": p99(m, s) / 2.0, "p90": p99(m, s) * 0.9, "p99": p99(m, s), "max": p99(m, s)},
        "lost_returns": 0, "error": null, "meets_target": true,
        "cpu": {
            "secs": 1.0, "jobs": 10,
            "top": {"cpu_secs": per_job_top * 10.0, "returns": returns,
                    "per_1000_returns": per_job_top * 10.0 * 1000.0 / returns as f64},
            "syndics": {}
        }
    })
}

fn run(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("loadtest plan --from did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn plan_from_file_predicts_unsampled_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cells = Vec::new();
    for m in [200, 500, 1000] {
        for s in [1, 2] {
            cells.push(cell(m, s));
        }
    }
    let grid = serde_json::json!({
        "p99_target_ms": 500.0, "cells": cells, "recommended": [], "minions_per_syndic": null
    });
    let path = dir.path().join("grid.json");
    std::fs::write(&path, grid.to_string()).unwrap();
    let out_json = dir.path().join("plan.json");
    let out = run(&[
        "plan",
        "--from",
        path.to_str().unwrap(),
        "--p99-ms",
        "20",
        "--for-minions",
        "1500",
        "--json",
        out_json.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("model p99 = "), "{text}");
    assert!(
        text.contains("held-out error (leave-one-out): mean 0.0%"),
        "{text}"
    );
    assert!(text.contains("top cpu per job = "), "{text}");
    // 3 + (0.02/S + 0.004)·M <= 20 at S=2: M <= 17/0.014 = 1214.
    assert!(
        text.contains("2 syndic(s) carry at most 1214 minions (607 per syndic)"),
        "{text}"
    );
    // 1500 minions: (0.02/S + 0.004)·1500 <= 17 => S >= 2.7 -> 3.
    assert!(text.contains("1500 minions need 3 syndic(s)"), "{text}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();
    let pred = &r["prediction"];
    assert_eq!(pred["syndics_for"], serde_json::json!([1500, 3]));
    assert_eq!(
        pred["planner"]["latency"]["loo"].as_array().unwrap().len(),
        6
    );
    assert_eq!(r["cells"].as_array().unwrap().len(), 6);

    // Not a plan: a data error, nothing printed as if it were.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"cells\": 3}").unwrap();
    let out = run(&["plan", "--from", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a plan report"));
}

#[test]
fn model_is_usable_from_outside() {
    // The public model on its own: fit, predict an unsampled size.
    let pts: Vec<Point> = [
        (200u32, 1u32),
        (500, 1),
        (1000, 1),
        (200, 2),
        (500, 2),
        (1000, 2),
    ]
    .iter()
    .map(|&(m, s)| Point {
        minions: f64::from(m),
        syndics: f64::from(s),
        y: p99(m, s),
    })
    .collect();
    let c = model::choose(&pts).unwrap();
    assert!((c.fit.predict(2000.0, 4.0) - p99(2000, 4)).abs() < 1e-6);
}
