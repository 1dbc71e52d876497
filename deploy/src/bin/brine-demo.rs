//! `brine-demo`: start a real local topology (a top master, two syndics,
//! minions under each and beside the top) on loopback, run the operator
//! commands through it, print what they print, and stop everything.

brine_common::global_allocator!();

use anyhow::Result;
use brine_deploy::topology::Topology;
use std::time::{Duration, Instant};

fn show(topo: &Topology, on: &str, bin: &str, args: &[&str]) -> Result<()> {
    println!("\n$ {bin} {}", args.join(" "));
    let t = Instant::now();
    let out = topo.cli(on, bin, args)?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    println!(
        "[exit {} in {} ms]",
        out.status.code().unwrap_or(-1),
        t.elapsed().as_millis()
    );
    Ok(())
}

fn main() -> Result<()> {
    let t = Instant::now();
    let topo = Topology::builder()
        .direct_minions(3)
        .syndics(2)
        .minions_per_syndic(3)
        .grains("minion1", serde_json::json!({"role": "web"}))
        .grains("s1m1", serde_json::json!({"role": "web"}))
        .start(Duration::from_secs(60))?;
    println!(
        "topology up in {} ms: top master on {}, syndics {}, {} minions (logs in {})",
        t.elapsed().as_millis(),
        topo.top.addr,
        topo.syndics
            .iter()
            .map(|s| format!("{}@{}", s.id, s.addr))
            .collect::<Vec<_>>()
            .join(", "),
        topo.minions.len(),
        topo.root.path().display()
    );
    show(&topo, "top", "salt-key", &["-L"])?;
    show(&topo, "top", "salt", &["*", "test.ping"])?;
    show(
        &topo,
        "top",
        "salt",
        &["-G", "role:web", "cmd.run", "uptime"],
    )?;
    show(
        &topo,
        "top",
        "salt",
        &[
            "-C",
            "s1* or minion2",
            "grains.get",
            "os",
            "--out",
            "json",
            "--static",
        ],
    )?;
    show(
        &topo,
        "top",
        "salt",
        &[
            "-L",
            "minion1,s2m3",
            "test.echo",
            "hello from the top",
            "-v",
        ],
    )?;
    show(&topo, "top", "salt-run", &["manage.list_syndics"])?;
    show(&topo, "top", "salt-run", &["manage.status"])?;
    show(
        &topo,
        "top",
        "salt-run",
        &["jobs.list_jobs", "--out", "json"],
    )?;
    println!("\nstopping the topology");
    Ok(())
}
