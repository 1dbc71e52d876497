//! Faults on the relay path, against real processes on loopback (issue
//! 16, items 1 and 2):
//! - the top master is killed (SIGKILL) with a return of a minion that
//!   joined its syndic moments before still on its way up: once the top is
//!   back, the return is stored there (the restarted top does not know the
//!   minion until the syndic has reported it again, so the syndic must not
//!   send it before);
//! - a syndic frozen (SIGSTOP) for 20 s while jobs are published to its
//!   minions: once it resumes, every minion runs every job and every
//!   return reaches the top, although the syndic relays its backlog before
//!   its minions' subscriptions are back.

use brine_deploy::topology::Topology;
use serde_json::Value;
use std::time::Duration;

/// `salt TGT FUN ARGS --async` on the top: the jid.
fn publish_async(topo: &Topology, args: &[&str]) -> String {
    topo.salt_async("top", args).expect("salt --async")
}

#[test]
fn a_return_on_its_way_up_survives_a_top_restart() {
    let mut topo = Topology::builder()
        .syndics(1)
        .minions_per_syndic(1)
        .start(Duration::from_secs(40))
        .expect("topology");
    // A minion joins the syndic; the top hears of it through a roster
    // report, but its roster snapshot (every 10 s) does not have it yet.
    topo.add_minion("late", "syndic1").expect("add minion");
    topo.wait_up(&["late".to_string()], Duration::from_secs(20))
        .expect("late is up on the top");
    let jid = publish_async(&topo, &["late", "cmd.run", "sleep 2; echo done"]);
    std::thread::sleep(Duration::from_millis(300));
    topo.stop("top", true).expect("kill the top");
    // The return reaches the syndic while the top is down...
    topo.eventually(
        Duration::from_secs(20),
        "late's return at the syndic",
        || topo.lookup_jid("syndic1", &jid)["late"] == Value::String("done".into()),
    )
    .expect("the syndic has the return");
    // ...and the top, restarted, must end up with it.
    topo.spawn_master("top", "salt-master")
        .expect("restart the top");
    if let Err(e) = topo.eventually(Duration::from_secs(40), "late's return at the top", || {
        topo.lookup_jid("top", &jid)["late"] == Value::String("done".into())
    }) {
        panic!(
            "{e}\n--- syndic1 log:\n{}\n--- top log:\n{}",
            topo.log("syndic1"),
            topo.log("top")
        );
    }
}

#[test]
fn jobs_published_while_a_syndic_is_frozen_reach_every_minion() {
    let topo = Topology::builder()
        .syndics(1)
        .minions_per_syndic(3)
        .start(Duration::from_secs(40))
        .expect("topology");
    let ids = ["s1m1", "s1m2", "s1m3"];
    topo.freeze("syndic1", true).expect("SIGSTOP");
    // Ten jobs over 20 s while the syndic does not answer.
    let mut jids = Vec::new();
    for _ in 0..10 {
        jids.push(publish_async(&topo, &["s1m*", "test.ping"]));
        std::thread::sleep(Duration::from_secs(2));
    }
    topo.freeze("syndic1", false).expect("SIGCONT");
    let missing = || -> Vec<String> {
        jids.iter()
            .flat_map(|j| {
                let got = topo.lookup_jid("top", j);
                ids.iter()
                    .filter(|m| got[**m] != Value::Bool(true))
                    .map(|m| format!("{j}/{m}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    if let Err(e) = topo.eventually(Duration::from_secs(60), "every return at the top", || {
        missing().is_empty()
    }) {
        panic!(
            "{e}: missing {:?}\n--- syndic1 log:\n{}\n--- s1m1 log:\n{}",
            missing(),
            topo.log("syndic1"),
            topo.log("s1m1")
        );
    }
}
