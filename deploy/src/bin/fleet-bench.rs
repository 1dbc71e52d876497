//! `fleet-bench`: start a master with N real `salt-minion` processes on
//! loopback, time `salt '*' test.ping` against a baseline measured in the
//! same run (`salt-run manage.up`: the same client round trip to the master
//! without any fan-out), and report each process's memory.
//!
//! `fleet-bench [MINIONS] [ROUNDS] [direct|syndic|both]` (defaults 10,
//! 20 and direct). `syndic` puts the minions behind one syndic under the
//! top master; `both` runs the direct fleet, then the same fleet behind a
//! syndic, and prints the ratio of their `test.ping` medians (how much the
//! syndic tier adds to the whole round trip).

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

/// One fleet's figures (ms, sorted).
struct Bench {
    ping: Vec<f64>,
    base: Vec<f64>,
    ratio: Vec<f64>,
}

/// Start `n` minions (directly under the top, or behind one syndic) and
/// time `rounds` pings against the same-run baseline.
fn bench(n: usize, rounds: usize, via_syndic: bool) -> Result<Bench> {
    let t = Instant::now();
    let builder = Topology::builder()
        .minion_config("log_level: warning")
        .master_config("log_level: warning");
    let builder = if via_syndic {
        builder.syndics(1).minions_per_syndic(n)
    } else {
        builder.direct_minions(n)
    };
    let topo = builder.start(Duration::from_secs(60 + n as u64))?;
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
    let how = if via_syndic {
        "behind one syndic"
    } else {
        "direct"
    };
    println!("minions: {n} {how} (up in {up_ms} ms), rounds: {rounds}");
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
    Ok(Bench { ping, base, ratio })
}

fn main() -> Result<()> {
    let mut a = std::env::args().skip(1);
    let n: usize = a.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let rounds: usize = a.next().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let mode = a.next().unwrap_or_else(|| "direct".into());
    match mode.as_str() {
        "direct" => bench(n, rounds, false).map(drop),
        "syndic" => bench(n, rounds, true).map(drop),
        "both" => {
            let direct = bench(n, rounds, false)?;
            let via = bench(n, rounds, true)?;
            println!(
                "via syndic / direct: test.ping p50 {:.2}, ping/baseline p50 {:.2} (baselines {:.1} / {:.1} ms)",
                pct(&via.ping, 0.5) / pct(&direct.ping, 0.5).max(f64::MIN_POSITIVE),
                pct(&via.ratio, 0.5) / pct(&direct.ratio, 0.5).max(f64::MIN_POSITIVE),
                pct(&via.base, 0.5),
                pct(&direct.base, 0.5)
            );
            Ok(())
        }
        other => bail!("unknown mode {other:?}: direct, syndic or both"),
    }
}
