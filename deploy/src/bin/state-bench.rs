//! `state-bench`: `state.apply` of a 10-state tree on N real `salt-minion`
//! processes, first direct to the top master, then behind one syndic;
//! wall time of the first run (every state changes something) and the
//! second (nothing to do), the minions' CPU per run from their own
//! accounting (`/proc/<pid>/stat`), and `salt '*' test.ping` on the same
//! topology as the baseline measured in the same run.
//!
//! `state-bench [MINIONS] [ROUNDS]` (defaults 100 and 3).

brine_common::global_allocator!();

use anyhow::{bail, Context, Result};
use brine_deploy::topology::Topology;
use std::path::Path;
use std::time::{Duration, Instant};

/// The state tree: ten states per minion under `<out>/<id>`.
fn tree(salt: &Path, out: &Path) -> Result<()> {
    let o = out.display();
    let files = [
        ("top.sls", "base:\n  '*':\n    - bench\n".to_string()),
        (
            "bench/init.sls",
            format!(
                "{{% set dir = '{o}/' ~ grains['id'] %}}\n\
include:\n  - .conf\n\
bench_dir:\n  file.directory:\n    - name: {{{{ dir }}}}\n    - makedirs: True\n\
motd:\n  file.managed:\n    - name: {{{{ dir }}}}/motd\n    - contents: 'managed by brine for {{{{ grains.id }}}}'\n    - require:\n      - file: bench_dir\n\
static:\n  file.managed:\n    - name: {{{{ dir }}}}/static.txt\n    - source: salt://bench/static.txt\n    - mode: '0640'\n    - require:\n      - file: bench_dir\n\
marker:\n  cmd.run:\n    - name: touch {{{{ dir }}}}/marker\n    - creates: {{{{ dir }}}}/marker\n    - require:\n      - file: bench_dir\n\
reload:\n  cmd.wait:\n    - name: echo reload >> {{{{ dir }}}}/reloads\n    - watch:\n      - file: static\n\
link:\n  file.symlink:\n    - name: {{{{ dir }}}}/motd.link\n    - target: {{{{ dir }}}}/motd\n    - require:\n      - file: motd\n\
line:\n  file.append:\n    - name: {{{{ dir }}}}/notes\n    - text: 'appended once'\n    - require:\n      - file: bench_dir\n\
stale:\n  file.absent:\n    - name: {{{{ dir }}}}/stale.tmp\n\
check:\n  test.succeed_without_changes:\n    - name: all good\n"
            ),
        ),
        (
            "bench/conf.sls",
            format!(
                "app_conf:\n  file.managed:\n    - name: {o}/{{{{ grains['id'] }}}}/app.conf\n    - source: salt://bench/app.conf.j2\n    - template: jinja\n    - makedirs: True\n    - context:\n        port: 8080\n"
            ),
        ),
        ("bench/static.txt", "static content\n".repeat(64)),
        (
            "bench/app.conf.j2",
            "# {{ grains['id'] }}\nport = {{ port }}\nhost = {{ grains['id'] }}\n".to_string(),
        ),
    ];
    for (path, text) in files {
        let p = salt.join(path);
        std::fs::create_dir_all(p.parent().context("parent")?)?;
        std::fs::write(p, text)?;
    }
    Ok(())
}

/// CPU seconds (user + system) a process has used, from its own
/// accounting.
fn cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are
    // the 14th and 15th fields of the whole line.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux (`getconf CLK_TCK`), whatever the kernel's HZ.
    (ticks(11) + ticks(12)) / 100.0
}

fn minion_cpu(topo: &Topology) -> f64 {
    topo.minions
        .iter()
        .filter_map(|m| topo.pid(&m.id))
        .map(cpu_s)
        .sum()
}

/// One timed `salt` run; checks every minion answered without failure.
fn timed(topo: &Topology, args: &[&str], n: usize) -> Result<(f64, f64)> {
    let cpu0 = minion_cpu(topo);
    let t = Instant::now();
    let out = topo.cli("top", "salt", args)?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let cpu = (minion_cpu(topo) - cpu0) * 1000.0 / n as f64;
    if !out.status.success() {
        bail!(
            "salt {args:?} exited {:?}: {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout)
                .chars()
                .take(2000)
                .collect::<String>(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((ms, cpu))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

struct Figures {
    first: Vec<f64>,
    first_cpu: Vec<f64>,
    second: Vec<f64>,
    second_cpu: Vec<f64>,
    ping: Vec<f64>,
}

fn bench(n: usize, rounds: usize, behind_syndic: bool) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let (salt, out) = (dir.path().join("salt"), dir.path().join("out"));
    tree(&salt, &out)?;
    let mut b = Topology::builder()
        .minion_config("log_level: warning")
        .master_config("log_level: warning")
        .top_config(&format!(
            "file_roots: {}",
            serde_json::json!({"base": [salt]})
        ));
    b = if behind_syndic {
        b.syndics(1).minions_per_syndic(n).direct_minions(0)
    } else {
        b.direct_minions(n)
    };
    let topo = b.start(Duration::from_secs(60 + n as u64))?;
    let t = "60";
    timed(&topo, &["*", "test.ping", "--out", "quiet", "-t", t], n)?;
    let mut f = Figures {
        first: vec![],
        first_cpu: vec![],
        second: vec![],
        second_cpu: vec![],
        ping: vec![],
    };
    for _ in 0..rounds {
        if out.exists() {
            std::fs::remove_dir_all(&out)?;
        }
        let (ms, cpu) = timed(&topo, &["*", "state.apply", "--out", "quiet", "-t", t], n)?;
        f.first.push(ms);
        f.first_cpu.push(cpu);
        let (ms, cpu) = timed(&topo, &["*", "state.apply", "--out", "quiet", "-t", t], n)?;
        f.second.push(ms);
        f.second_cpu.push(cpu);
        let (ms, _) = timed(&topo, &["*", "test.ping", "--out", "quiet", "-t", t], n)?;
        f.ping.push(ms);
    }
    // The second run changed nothing: check one minion's return.
    let id = &topo.minions[0].id;
    let o = topo.cli(
        "top",
        "salt",
        &[id, "state.apply", "--out", "json", "--static", "-t", t],
    )?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    let states = v[id.as_str()].as_object().context("state return")?;
    let changed = states
        .values()
        .filter(|s| s["changes"].as_object().is_some_and(|c| !c.is_empty()))
        .count();
    if states.len() != 10 || changed != 0 {
        bail!(
            "{id}: {} states, {changed} changed on a converged run",
            states.len()
        );
    }
    Ok(f)
}

fn main() -> Result<()> {
    let mut a = std::env::args().skip(1);
    let n: usize = a.next().map(|s| s.parse()).transpose()?.unwrap_or(100);
    let rounds: usize = a.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    println!("state.apply of a 10-state tree on {n} real minions, {rounds} rounds, medians");
    println!(
        "{:<14} {:>12} {:>14} {:>12} {:>14} {:>12} {:>10}",
        "topology",
        "first ms",
        "first cpu/min",
        "second ms",
        "second cpu/min",
        "ping ms",
        "first/ping"
    );
    for (name, syndic) in [("direct", false), ("via syndic", true)] {
        let f = bench(n, rounds, syndic)?;
        let ping = median(f.ping);
        let first = median(f.first);
        println!(
            "{:<14} {:>12.0} {:>11.1} ms {:>12.0} {:>11.1} ms {:>12.1} {:>10.1}",
            name,
            first,
            median(f.first_cpu),
            median(f.second),
            median(f.second_cpu),
            ping,
            first / ping
        );
    }
    Ok(())
}
