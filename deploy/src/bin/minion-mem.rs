//! `minion-mem`: the memory of real `salt-minion` processes, idle and after
//! a run of jobs, as `/proc/<pid>/smaps_rollup` gives it (PSS: the pages a
//! process has to itself plus its share of the pages it shares, such as
//! the binary's text with the other minions).
//!
//! `minion-mem [MINIONS] [JOBS] [BASELINE_DIR]` (defaults 5 and 100):
//! starts a master and MINIONS minions on loopback, and, with
//! BASELINE_DIR, as many more minions of `BASELINE_DIR/salt-minion` behind
//! the same master (the "before" binary, measured in the same run). It
//! measures every minion idle, runs JOBS jobs on all of them (`test.ping`,
//! `cmd.run`, `grains.items`, `test.echo`, in turn), checks every minion
//! returned each one, measures again and prints medians and maxima. Every
//! process is stopped by PID when the topology is dropped.

brine_common::global_allocator!();

use anyhow::{bail, Context, Result};
use brine_deploy::topology::Topology;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One process's memory figures, in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    pss: u64,
    rss: u64,
    pss_anon: u64,
    pss_file: u64,
    threads: u64,
}

fn field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn measure(pid: u32) -> Result<Mem> {
    let roll = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("smaps_rollup of {pid}"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("status of {pid}"))?;
    let get = |n: &str| field(&roll, n).with_context(|| format!("no {n} for {pid}"));
    Ok(Mem {
        pss: get("Pss")?,
        rss: get("Rss")?,
        pss_anon: get("Pss_Anon")?,
        pss_file: get("Pss_File")?,
        threads: field(&status, "Threads").unwrap_or(0),
    })
}

fn median_max(mut v: Vec<u64>) -> (f64, f64) {
    v.sort_unstable();
    let med = v.get(v.len() / 2).copied().unwrap_or(0);
    let max = v.last().copied().unwrap_or(0);
    (med as f64 / 1024.0, max as f64 / 1024.0)
}

fn report(label: &str, when: &str, mems: &[Mem]) {
    let col = |f: fn(&Mem) -> u64| median_max(mems.iter().map(f).collect());
    let (pss, pss_max) = col(|m| m.pss);
    let (rss, rss_max) = col(|m| m.rss);
    let (anon, _) = col(|m| m.pss_anon);
    let (file, _) = col(|m| m.pss_file);
    let threads = mems.iter().map(|m| m.threads).max().unwrap_or(0);
    println!(
        "{label:<9} {when:<11} PSS {pss:>6.2} (max {pss_max:>6.2})  RSS {rss:>6.2} (max {rss_max:>6.2})  \
         PSS anon {anon:>5.2} file {file:>5.2}  threads {threads}"
    );
}

fn measure_all(topo: &Topology, ids: &[String]) -> Result<Vec<Mem>> {
    ids.iter()
        .map(|id| measure(topo.pid(id).with_context(|| format!("{id} not running"))?))
        .collect()
}

const JOBS: [&[&str]; 4] = [
    &["test.ping"],
    &["cmd.run", "echo brine"],
    &["grains.items"],
    &["test.echo", "hello"],
];

fn main() -> Result<()> {
    let mut a = std::env::args().skip(1);
    let n: usize = a.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let jobs: usize = a.next().map(|s| s.parse()).transpose()?.unwrap_or(100);
    let baseline: Option<PathBuf> = a.next().map(PathBuf::from);
    let t = Instant::now();
    let mut topo = Topology::builder()
        .direct_minions(n)
        .minion_config("log_level: warning")
        .master_config("log_level: warning")
        .start(Duration::from_secs(60 + n as u64))?;
    let mut groups: Vec<(&str, Vec<String>)> =
        vec![("this", topo.minions.iter().map(|m| m.id.clone()).collect())];
    if let Some(dir) = &baseline {
        if !dir.join("salt-minion").is_file() {
            bail!("no salt-minion in {}", dir.display());
        }
        let ours = std::mem::replace(&mut topo.bin, dir.clone());
        let ids: Vec<String> = (1..=n).map(|i| format!("base{i}")).collect();
        for id in &ids {
            topo.add_minion(id, "top")?;
        }
        topo.bin = ours;
        topo.wait_up(&ids, Duration::from_secs(60 + n as u64))?;
        groups.push(("baseline", ids));
    }
    let all: usize = groups.iter().map(|(_, ids)| ids.len()).sum();
    println!(
        "minions: {all} ({n} per binary), up in {} ms, jobs: {jobs}",
        t.elapsed().as_millis()
    );
    // Let sign-in, the pillar fetch and the first heartbeats settle.
    std::thread::sleep(Duration::from_secs(3));
    let mut idle = vec![];
    for (_, ids) in &groups {
        idle.push(measure_all(&topo, ids)?);
    }
    let t = Instant::now();
    for i in 0..jobs {
        let mut args = vec!["*"];
        args.extend_from_slice(JOBS[i % JOBS.len()]);
        args.extend_from_slice(&["--out", "json", "--static", "-t", "20"]);
        let out = topo.salt(&args)?;
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let answered = got.as_object().map_or(0, |o| o.len());
        if answered != all {
            bail!(
                "job {i} ({args:?}): {answered} of {all} minions returned: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    println!("{jobs} jobs in {} ms", t.elapsed().as_millis());
    std::thread::sleep(Duration::from_secs(2));
    println!("(MiB; PSS/RSS median and max over the minions of one binary, threads max)");
    for ((label, ids), idle) in groups.iter().zip(&idle) {
        report(label, "idle", idle);
        report(label, "after jobs", &measure_all(&topo, ids)?);
    }
    // MINION_MEM_HOLD=SECONDS keeps the processes for a look at their smaps.
    if let Some(secs) = std::env::var("MINION_MEM_HOLD")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        for (_, ids) in &groups {
            for id in ids {
                println!("{id}: pid {}", topo.pid(id).unwrap_or(0));
            }
        }
        std::thread::sleep(Duration::from_secs(secs));
    }
    Ok(())
}
