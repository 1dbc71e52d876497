//! `fleet-bench`: start a master with N real `salt-minion` processes on
//! loopback, time `salt '*' test.ping` against a baseline measured in the
//! same run (`salt-run manage.up`: the same client round trip to the master
//! without any fan-out), and report each process's memory.
//!
//! `fleet-bench [MINIONS] [ROUNDS]` (defaults 10 and 20).

brine_common::global_allocator!();

use anyhow::{bail, Result};
use brine_deploy::memory::{rss_kib, try_rss_kib};
use brine_deploy::topology::Topology;
use std::time::{Duration, Instant};

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn time_cmd(topo: &Topology, bin: &str, args: &[&str]) -> Result<f64> {
    let t = Instant::now();
    let out = topo.cli("top", bin, args)?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!(
            "{bin} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(ms)
}

fn main() -> Result<()> {
    let mut a = std::env::args().skip(1);
    let n: usize = a.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let rounds: usize = a.next().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let t = Instant::now();
    let topo = Topology::builder()
        .direct_minions(n)
        .minion_config("log_level: warning")
        .master_config("log_level: warning")
        .start(Duration::from_secs(60 + n as u64))?;
    let up_ms = t.elapsed().as_millis();
    // Warm-up.
    time_cmd(&topo, "salt", &["*", "test.ping", "--out", "quiet"])?;
    time_cmd(&topo, "salt-run", &["manage.up", "--out", "quiet"])?;
    let mut ping = Vec::new();
    let mut base = Vec::new();
    let mut ratio = Vec::new();
    for _ in 0..rounds {
        let p = time_cmd(&topo, "salt", &["*", "test.ping", "--out", "quiet"])?;
        let b = time_cmd(&topo, "salt-run", &["manage.up", "--out", "quiet"])?;
        ratio.push(p / b);
        ping.push(p);
        base.push(b);
    }
    for v in [&mut ping, &mut base, &mut ratio] {
        v.sort_by(|x, y| x.total_cmp(y));
    }
    let mut rss: Vec<f64> = topo
        .minions
        .iter()
        .filter_map(|m| topo.pid(&m.id).and_then(|p| try_rss_kib(p).ok()))
        .map(|k| k as f64)
        .collect();
    rss.sort_by(|x, y| x.total_cmp(y));
    let master_rss = topo.pid("top").map_or(0, rss_kib);
    println!("minions: {n} (up in {up_ms} ms), rounds: {rounds}");
    println!("                         p50        p90        max");
    println!(
        "salt '*' test.ping  {:>8.1} ms {:>8.1} ms {:>8.1} ms",
        pct(&ping, 0.5),
        pct(&ping, 0.9),
        pct(&ping, 1.0)
    );
    println!(
        "baseline (manage.up){:>8.1} ms {:>8.1} ms {:>8.1} ms",
        pct(&base, 0.5),
        pct(&base, 0.9),
        pct(&base, 1.0)
    );
    println!(
        "ratio ping/baseline {:>8.2}    {:>8.2}    {:>8.2}",
        pct(&ratio, 0.5),
        pct(&ratio, 0.9),
        pct(&ratio, 1.0)
    );
    println!(
        "minion RSS: median {:.1} MiB, max {:.1} MiB; master RSS {:.1} MiB",
        pct(&rss, 0.5) / 1024.0,
        pct(&rss, 1.0) / 1024.0,
        master_rss as f64 / 1024.0
    );
    Ok(())
}
