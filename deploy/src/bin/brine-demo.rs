//! `brine-demo`: start a real local topology (a top master, two syndics,
//! minions under each and beside the top) on loopback, run the operator
//! commands through it (remote execution and targeting, then the README's
//! files-and-pillar example: pillar per minion, a rendered config file, a
//! script, salt-cp, cp.push), print what they print, and stop everything.

brine_common::global_allocator!();

use anyhow::Result;
use brine_deploy::topology::Topology;
use std::path::{Path, PathBuf};
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

/// The README's example trees: `file_roots` and `pillar_roots` of the top.
fn example_trees(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let salt = dir.join("salt");
    let pillar = dir.join("pillar");
    let files: [(PathBuf, &str); 6] = [
        (
            pillar.join("top.sls"),
            "base:\n  '*': [app]\n  'minion*': [web_secrets]\n",
        ),
        (pillar.join("app.sls"), "app:\n  port: 8080\n"),
        (
            pillar.join("web_secrets.sls"),
            "api_token: s3cr3t-{{ grains['id'] }}\n",
        ),
        (
            salt.join("app/app.conf.j2"),
            "port = {{ pillar['app']['port'] }}\nhost = {{ grains['id'] }}\n",
        ),
        (
            salt.join("app/deploy.sh"),
            "#!/bin/sh\necho \"deploying to $1 with token $TOKEN\"\n",
        ),
        (dir.join("hotfix.patch"), "--- a\n+++ b\n"),
    ];
    for (path, text) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)?;
    }
    Ok((salt, pillar))
}

fn main() -> Result<()> {
    let t = Instant::now();
    let trees = tempfile::Builder::new().prefix("brine-demo-").tempdir()?;
    let (salt_root, pillar_root) = example_trees(trees.path())?;
    let topo = Topology::builder()
        .top_config(&format!(
            "file_roots: {}",
            serde_json::json!({"base": [salt_root]})
        ))
        .top_config(&format!(
            "pillar_roots: {}",
            serde_json::json!({"base": [pillar_root]})
        ))
        .top_config("file_recv: True")
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
    // Files and pillar, as in the README's example.
    let out = trees.path().join("out");
    let conf = format!("{}/{{id}}/app.conf", out.display());
    show(&topo, "top", "salt", &["minion1", "pillar.items"])?;
    show(&topo, "top", "salt", &["s2m1", "pillar.items"])?;
    show(&topo, "top", "salt", &["*", "pillar.get", "app:port"])?;
    show(
        &topo,
        "top",
        "salt",
        &["-I", "api_token:s3cr3t-*", "test.ping"],
    )?;
    for id in ["minion1", "s1m1"] {
        let dest = conf.replace("{id}", id);
        show(
            &topo,
            "top",
            "salt",
            &[
                id,
                "cp.get_file",
                "salt://app/app.conf.j2",
                &dest,
                "template=jinja",
                "makedirs=True",
            ],
        )?;
        println!(
            "{dest}:\n{}",
            std::fs::read_to_string(&dest).unwrap_or_default()
        );
    }
    show(
        &topo,
        "top",
        "salt",
        &[
            "minion*",
            "cmd.script",
            "salt://app/deploy.sh",
            "args=prod",
            "env={\"TOKEN\": \"x\"}",
        ],
    )?;
    let patch = trees.path().join("hotfix.patch").display().to_string();
    let cp_dest = format!("{}/", out.display());
    show(&topo, "top", "salt-cp", &["s2*", &patch, &cp_dest])?;
    show(&topo, "top", "salt", &["minion1", "cp.push", &patch])?;
    show(&topo, "top", "salt-run", &["fileserver.file_list"])?;
    println!("\nstopping the topology");
    Ok(())
}
