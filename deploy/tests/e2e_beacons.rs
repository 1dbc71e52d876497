//! A beacon three tiers down, end to end: a top master, `syndic1-t1`,
//! `syndic1-t2` under it and minion `s1m1` under that, whose `diskusage`
//! beacon (`onchangeonly: True`, `interval: 1`) watches a 1 MiB tmpfs the
//! test mounts. The test fills the tmpfs past the threshold, empties it and
//! fills it again: the top's bus shows exactly one
//! `salt/beacon/s1m1/diskusage/` event per crossing (none while it stays
//! above, none while below), marked with both syndics' path; a reactor on
//! the top runs `cmd.run` on the minion that fired it, once per event.
//! The mount is named `brine-test-beacon-*` and unmounted by its guard.

use brine_deploy::topology::Topology;
use brine_deploy::watch::EventWatch;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Generous: other test binaries share the two cores.
const WAIT: Duration = Duration::from_secs(60);
/// Several beacon intervals: long enough for a repeat to show.
const QUIET: Duration = Duration::from_secs(4);

/// A 1 MiB tmpfs; unmounted (lazily, so a busy file cannot keep it) and
/// removed on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "brine-test-beacon"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mount -t tmpfs failed: {st} (the test needs root)"
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn fill(mount: &Path) {
    std::fs::write(mount.join("fill"), vec![7u8; 700 * 1024]).expect("fill the tmpfs");
}

fn diskusage_events(events: &[(String, Value)], tag: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|(t, _)| t == tag)
        .map(|(_, d)| d.clone())
        .collect()
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[test]
fn a_threshold_crossed_three_tiers_down_fires_once_per_crossing_and_reacts_on_the_top() {
    let dir = tempfile::Builder::new()
        .prefix("brine-test-beacon")
        .tempdir()
        .expect("tempdir");
    let mount = dir.path().join("brine-test-beacon-disk");
    let disk = Tmpfs::mount(&mount);
    let out = dir.path().join("reacted");
    let react = dir.path().join("crossed.sls");
    std::fs::write(
        &react,
        format!(
            "crossed_{{{{ data['id'] }}}}:\n  local.cmd.run:\n    - tgt: {{{{ data['id'] }}}}\n    - args:\n      - cmd: echo {{{{ data['mount'] }}}} >> {}\n",
            out.display()
        ),
    )
    .expect("reactor file");
    let topo = Topology::builder()
        .syndics(1)
        .tiers(2)
        .minions_per_syndic(1)
        .minion_config(&format!(
            "beacons: {{diskusage: [{{'{}': 50%}}, {{onchangeonly: true}}, {{interval: 1}}]}}",
            mount.display()
        ))
        .top_config(&format!(
            "reactor:\n  - 'salt/beacon/*/diskusage/*':\n    - {}\n",
            react.display()
        ))
        .start(WAIT)
        .expect("topology");
    let bottom = topo.minions[0].id.clone();
    let (t1, t2) = (topo.syndics[0].id.clone(), topo.syndics[1].id.clone());
    assert_eq!(topo.minions[0].master, t2, "the minion is two syndics down");
    let tag = format!("salt/beacon/{bottom}/diskusage/");
    let w = EventWatch::start(&topo, "top", WAIT).expect("watch");

    // Below the threshold: nothing.
    let quiet = w.during(QUIET);
    assert!(diskusage_events(&quiet, &tag).is_empty(), "{quiet:?}");

    for crossing in 1..=2 {
        fill(&disk.0);
        let (_, d) = w
            .first("the crossing", |t, _| t == tag)
            .expect("beacon event on the top");
        assert_eq!(d["mount"], json!(mount.display().to_string()), "{d}");
        assert!(d["diskusage"].as_f64().unwrap_or(0.0) >= 50.0, "{d}");
        assert_eq!(d["id"], json!(bottom), "{d}");
        assert_eq!(d["__syndic_path"], json!([t2, t1]), "{d}");
        let more = w.during(QUIET);
        assert!(
            diskusage_events(&more, &tag).is_empty(),
            "crossing {crossing}: fired again while above: {more:?}"
        );
        topo.eventually(WAIT, "the reactor's cmd.run on the minion", || {
            lines(&out) == crossing
        })
        .expect("reacted once per crossing");

        std::fs::remove_file(disk.0.join("fill")).expect("empty the tmpfs");
        let below = w.during(QUIET);
        assert!(
            diskusage_events(&below, &tag).is_empty(),
            "fired below the threshold: {below:?}"
        );
    }
    assert_eq!(lines(&out), 2, "one reaction per crossing");
    let top = topo.stats();
    assert!(top["reactor_jobs"].as_u64().unwrap_or(0) >= 2, "{top}");
    assert_eq!(top["reactor_errors"], json!(0), "{top}");
    for s in [&t1, &t2] {
        let st = topo.stats_on(s);
        assert_eq!(st["events_forward_dropped"], json!(0), "{s}: {st}");
    }
}
