//! The metrics endpoint end to end: a top master with `metrics_bind`, a
//! syndic and a minion given one too (then restarted), `salt '*'
//! test.ping` run N times through the real CLI, and `/metrics` scraped
//! with a plain HTTP GET: the top's `brine_master_returns_total` equals
//! the returns the CLI received, its latency histogram counted each of
//! them, presence per syndic is right, the minion counted its jobs, and
//! `/healthz` and `/readyz` answer 200 on every process.

use brine_common::metrics::{http_get, sample};
use brine_deploy::topology::Topology;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Generous: other test binaries share the two cores.
const WAIT: Duration = Duration::from_secs(60);
const RUNS: usize = 5;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get(addr, path, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

/// Poll until `f` holds (the endpoint of a restarted process comes up
/// with it; a link signs in a moment later).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn ready(addr: SocketAddr) -> bool {
    matches!(
        http_get(addr, "/readyz", Duration::from_secs(5)),
        Ok((200, _))
    )
}

#[test]
fn metrics_count_what_the_cli_received() {
    let (top_port, syndic_port, minion_port) = (free_port(), free_port(), free_port());
    let mut topo = Topology::builder()
        .syndics(1)
        .direct_minions(1)
        .minions_per_syndic(1)
        .top_config(&format!("metrics_bind: 127.0.0.1:{top_port}"))
        .start(WAIT)
        .expect("topology");
    let top: SocketAddr = ([127, 0, 0, 1], top_port).into();
    let syndic: SocketAddr = ([127, 0, 0, 1], syndic_port).into();
    let minion: SocketAddr = ([127, 0, 0, 1], minion_port).into();

    // The syndic and one minion get an endpoint too: a config include,
    // then a restart.
    let s = topo.syndics[0].clone();
    let inc = s.config_dir.join("master.d");
    std::fs::create_dir_all(&inc).expect("mkdir");
    std::fs::write(
        inc.join("metrics.conf"),
        format!("metrics_bind: 127.0.0.1:{syndic_port}\n"),
    )
    .expect("write");
    topo.stop(&s.id, false).expect("stop syndic");
    topo.start_syndic(&s.id).expect("start syndic");
    let m = topo
        .minions
        .iter()
        .find(|m| m.master == "top")
        .expect("direct minion")
        .clone();
    let inc = m.config_dir.join("minion.d");
    std::fs::create_dir_all(&inc).expect("mkdir");
    std::fs::write(
        inc.join("metrics.conf"),
        format!("metrics_bind: 127.0.0.1:{minion_port}\n"),
    )
    .expect("write");
    topo.stop(&m.id, false).expect("stop minion");
    topo.spawn_minion(&m.id).expect("start minion");
    let all: Vec<String> = topo.minions.iter().map(|m| m.id.clone()).collect();
    topo.wait_up(&all, WAIT).expect("minions up again");
    eventually("syndic ready", || ready(syndic));
    eventually("minion ready", || ready(minion));

    // Before any job: no returns, every minion up.
    let (code, text) = get(top, "/metrics");
    assert_eq!(code, 200, "{text}");
    let before = sample(&text, "brine_master_returns_total").expect("returns");

    let mut received = 0usize;
    for _ in 0..RUNS {
        let out = topo
            .salt(&["*", "test.ping", "--out", "json", "--static", "-t", "60"])
            .expect("salt");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let got = v.as_object().map_or(0, |o| o.len());
        assert_eq!(got, all.len(), "every minion answers: {v}");
        received += got;
    }

    let (code, text) = get(top, "/metrics");
    assert_eq!(code, 200);
    let returns = sample(&text, "brine_master_returns_total").expect("returns");
    assert_eq!(returns - before, received as f64, "{text}");
    assert_eq!(
        sample(&text, "brine_master_return_latency_seconds_count"),
        Some(returns),
        "every accepted return observed: {text}"
    );
    assert_eq!(
        sample(&text, "brine_master_jobs_published_total"),
        Some(RUNS as f64),
        "{text}"
    );
    // Every return the CLI printed was committed first: at least one batch.
    let commits = sample(&text, "brine_master_job_cache_commit_seconds_count").unwrap_or(0.0);
    assert!(commits >= 1.0, "{text}");
    assert_eq!(
        sample(&text, "brine_master_minions_up"),
        Some(all.len() as f64)
    );
    assert!(
        text.contains(&format!(
            "brine_master_syndic_minions_up{{syndic=\"{}\"}} 1",
            s.id
        )),
        "{text}"
    );
    assert!(text.contains(&format!("brine_master_syndic_up{{syndic=\"{}\"}} 1", s.id)));
    // The same numbers as manage.stats.
    let stats = topo.stats();
    assert_eq!(stats["returns"].as_f64(), Some(returns), "{stats}");
    assert_eq!(
        stats["auth_requests"].as_f64(),
        sample(&text, "brine_master_auth_requests_total")
    );
    assert!(sample(&text, "process_resident_memory_bytes").unwrap_or(0.0) > 0.0);
    assert!(sample(&text, "process_cpu_seconds_total").unwrap_or(0.0) > 0.0);
    assert_eq!(get(top, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(top, "/readyz").0, 200);

    // The syndic: its own master's counters and its link above.
    let (code, text) = get(syndic, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        sample(&text, "brine_syndic_upstream_up"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "brine_master_returns_total"),
        Some(RUNS as f64),
        "one minion below, {RUNS} jobs: {text}"
    );
    assert_eq!(get(syndic, "/healthz").0, 200);

    // The minion: signed in, one job per run.
    let (code, text) = get(minion, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(sample(&text, "brine_minion_signed_in"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "brine_minion_jobs_total"), Some(RUNS as f64));
    assert_eq!(sample(&text, "brine_minion_jobs_failed_total"), Some(0.0));
    assert_eq!(get(minion, "/healthz").0, 200);

    // Every brine metric the sample dashboard queries is exported.
    let exported = [get(top, "/metrics").1, get(syndic, "/metrics").1, text].concat();
    for name in dashboard_metrics() {
        assert!(
            exported.contains(&format!("\n{name}"))
                || exported.contains(&format!("# TYPE {name} ")),
            "deploy/grafana/brine.json queries {name}, which no process exports"
        );
    }

    // A minion whose master is gone is alive but not ready.
    topo.stop("top", false).expect("stop top");
    eventually("minion not ready without its master", || {
        matches!(
            http_get(minion, "/readyz", Duration::from_secs(5)),
            Ok((503, _))
        )
    });
    assert_eq!(get(minion, "/healthz").0, 200);
}

/// The `brine_*` names (and the alternatives of `__name__=~"brine_x_(a|b)_total"`)
/// the sample dashboard's queries use, histogram suffixes removed.
fn dashboard_metrics() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/brine.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard"))
        .expect("dashboard is JSON");
    let mut names = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            let word = |s: &str| -> String {
                s.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            };
            for (i, _) in expr.match_indices("brine_") {
                let rest = &expr[i..];
                let w = word(rest);
                if rest[w.len()..].starts_with('(') {
                    // brine_master_(a|b)_total
                    let inner = &rest[w.len() + 1..];
                    let (alts, tail) = inner.split_once(')').expect("group");
                    let tail = word(tail);
                    names.extend(alts.split('|').map(|a| format!("{w}{a}{tail}")));
                } else {
                    names.push(w.trim_end_matches("_bucket").to_string());
                }
            }
        }
    }
    assert!(names.len() > 20, "{names:?}");
    names
}
