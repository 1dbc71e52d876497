//! Unit tests of the whole library: parse, check, plan and render.

#![allow(clippy::unwrap_used)]

use super::*;
use std::collections::BTreeMap;

fn plan(text: &str) -> Result<Vec<Daemon>, Problems> {
    Fleet::parse(text, Path::new("/nonexistent"))
        .unwrap()
        .plan()
}

fn problems(text: &str) -> String {
    plan(text).unwrap_err().to_string()
}

fn by_id(ds: &[Daemon]) -> BTreeMap<&str, &Daemon> {
    ds.iter().map(|d| (d.id.as_str(), d)).collect()
}

#[test]
fn smallest_fleet_is_a_master_and_its_minions() {
    let ds = plan("master: {id: top, host: 10.0.0.1}\nhosts: [web1, {id: db1, host: 10.0.0.9, user: admin, ssh_port: 2222}]\n").unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds[0].kind, Kind::Master);
    assert!(!ds[0].order_masters, "no syndics below: no order_masters");
    let m = by_id(&ds);
    let up = m["web1"].upstream.clone().unwrap();
    assert_eq!(
        (up.id.as_str(), up.host.as_str(), up.port),
        ("top", "10.0.0.1", 4506)
    );
    assert_eq!(m["db1"].ssh.port, 2222);
    assert_eq!(m["db1"].ssh.user, "admin");
    assert_eq!(m["web1"].ssh.user, "root");
    assert_eq!(
        m["web1"].files[0].install_path,
        Path::new("/etc/salt/minion")
    );
    let text = &m["web1"].files[0].text;
    assert!(
        text.contains("\nid: web1\nmaster: 10.0.0.1\nmaster_port: 4506\n"),
        "{text}"
    );
    assert!(
        !text.contains("root_dir"),
        "Salt's default paths without root_dir"
    );
}

#[test]
fn duplicate_ids_are_named_with_their_datacenters() {
    let e = problems(
        "master: {id: top, host: 10.0.0.1}\ndatacenters:\n  dc1:\n    syndics: [{id: s1, host: 10.1.0.1}]\n    hosts: [web1]\n  dc2:\n    hosts: [web1, top]\n",
    );
    assert!(
        e.contains("datacenter dc2, web1: duplicate id: also the minion in datacenter dc1"),
        "{e}"
    );
    assert!(
        e.contains("datacenter dc2, top: duplicate id: also the master in the top level"),
        "{e}"
    );
}

#[test]
fn ports_clash_per_address_unless_set_apart() {
    let clash = "master: {id: top, host: 10.0.0.1}\ndatacenters:\n  dc1:\n    syndics: [{id: s1, host: 10.0.0.1}]\n    hosts: [web1]\n";
    let e = problems(clash);
    assert!(
        e.contains("datacenter dc1, s1: port 4505 on 10.0.0.1 is also used by top"),
        "{e}"
    );
    assert!(
        e.contains("port 4506 on 10.0.0.1 is also used by top"),
        "{e}"
    );
    // Its own ports (and its own root_dir): fine, and minions use them.
    let ok = "master: {id: top, host: 10.0.0.1}\ndefaults: {root_dir: '/srv/b/{id}'}\ndatacenters:\n  dc1:\n    syndics: [{id: s1, host: 10.0.0.1, publish_port: 14505, ret_port: 14506}]\n    hosts: [web1]\n";
    let ds = plan(ok).unwrap();
    let m = by_id(&ds);
    assert_eq!(m["web1"].upstream.as_ref().unwrap().port, 14506);
    assert!(m["s1"].files[0]
        .text
        .contains("publish_port: 14505\nret_port: 14506\n"));
    // One pair on one daemon: refused too.
    let e = problems("master: {id: top, host: 10.0.0.1, publish_port: 4506}\n");
    assert!(
        e.contains("top: publish_port and ret_port are both 4506"),
        "{e}"
    );
}

#[test]
fn two_masters_on_one_host_need_their_own_root_dir() {
    let e = problems(
        "master: {id: top, host: 10.0.0.1}\ndatacenters:\n  dc1:\n    syndics: [{id: s1, host: 10.0.0.1, publish_port: 14505, ret_port: 14506}]\n    hosts: [web1]\n",
    );
    assert!(
        e.contains("s1: shares host 10.0.0.1 and root_dir / with top"),
        "{e}"
    );
}

#[test]
fn datacenter_loops_and_unknown_parents_are_refused() {
    let e = problems(
        "master: {id: top, host: 10.0.0.1}\ndatacenters:\n  a: {parent: b, syndics: [{id: sa, host: 10.1.0.1}]}\n  b: {parent: a, syndics: [{id: sb, host: 10.2.0.1}]}\n",
    );
    assert!(
        e.contains("datacenter a: datacenters form a loop: a -> b -> a"),
        "{e}"
    );
    assert!(
        e.contains("datacenter b: datacenters form a loop: b -> a -> b"),
        "{e}"
    );
    let e = problems(
        "master: {id: top, host: 10.0.0.1}\ndatacenters:\n  a: {parent: nowhere, hosts: [x]}\n",
    );
    assert!(
        e.contains("datacenter a: parent nowhere is not a datacenter of this fleet"),
        "{e}"
    );
    // `parent:` is the flat spelling of nesting.
    let flat = plan("master: {id: top, host: 10.0.0.1}\ndatacenters:\n  a: {syndics: [{id: sa, host: 10.1.0.1}]}\n  b: {parent: a, syndics: [{id: sb, host: 10.2.0.1}], hosts: [x]}\n").unwrap();
    let m = by_id(&flat);
    assert_eq!(m["sb"].parent(), Some("sa"));
    assert!(m["sa"].order_masters);
    assert_eq!(m["x"].parent(), Some("sb"));
}

#[test]
fn rules_place_roster_ids_and_unknown_datacenters_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("roster"),
        "web1: {host: 10.5.0.1, user: admin, priv: /root/.ssh/k}\ndb1: 10.5.0.2\nmail1: 10.5.0.3\n",
    )
    .unwrap();
    let text = "master: {id: top, host: 10.0.0.1}\nroster: roster\nrules: [{match: 'web*', datacenter: dc1}, {match: 'db*', datacenter: dcX}]\ndatacenters:\n  dc1: {syndics: [{id: s1, host: 10.1.0.1}]}\n";
    let e = Fleet::parse(text, dir.path())
        .unwrap()
        .plan()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rule 'db*' names datacenter dcX, which is not in this fleet"),
        "{e}"
    );
    assert!(e.contains("mail1: matches no rule"), "{e}");
    let text = "master: {id: top, host: 10.0.0.1}\nroster: roster\nrules: [{match: 'web*', datacenter: dc1}, {match: '*', datacenter: dc2}]\ndatacenters:\n  dc1: {syndics: [{id: s1, host: 10.1.0.1}]}\n  dc2: {}\n";
    let ds = Fleet::parse(text, dir.path()).unwrap().plan().unwrap();
    let m = by_id(&ds);
    assert_eq!(m["web1"].datacenter.as_deref(), Some("dc1"));
    assert_eq!(m["web1"].parent(), Some("s1"));
    assert_eq!(m["web1"].ssh.user, "admin");
    assert_eq!(
        m["web1"].ssh.options["priv"],
        serde_json::json!("/root/.ssh/k")
    );
    // dc2 has no syndics: its hosts talk to the top directly.
    assert_eq!(m["db1"].datacenter.as_deref(), Some("dc2"));
    assert_eq!(m["db1"].parent(), Some("top"));
    let roster = render::roster_text(&ds);
    assert!(
        roster
            .contains("web1:\n  host: 10.5.0.1\n  port: 22\n  priv: /root/.ssh/k\n  user: admin\n"),
        "{roster}"
    );
}

#[test]
fn bad_yaml_names_the_line_and_a_missing_roster_its_path() {
    let e = Fleet::parse(
        "master: {id: top}\ndatacenters:\n  dc1:\n    hosts: [a, b\n",
        Path::new("."),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("line"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.yaml");
    std::fs::write(
        &path,
        "master: {id: top, host: 10.0.0.1}\ndatacenters:\n  dc1: {roster: nope.roster}\n",
    )
    .unwrap();
    let e = Fleet::load(&path).unwrap().plan().unwrap_err().to_string();
    assert!(
        e.contains("datacenter dc1: cannot read") && e.contains("nope.roster"),
        "{e}"
    );
    let e = Fleet::load(&dir.path().join("missing.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot read") && e.contains("missing.yaml"),
        "{e}"
    );
}

#[test]
fn hosts_ids_opts_and_empty_datacenters_are_checked() {
    let e = problems(
        "master: {id: top, host: 10.0.0.1}\nhosts: ['bad_host!', {id: x, host: '-nope'}, {id: y, host: 10.0.0.5, ret_port: 1}, {id: z, minion_opts: {master: evil}}, {id: 'a/b'}]\ndatacenters:\n  dc9: {}\n",
    );
    for want in [
        "bad_host!: host \"bad_host!\" is neither an IP address nor a valid host name",
        "x: host \"-nope\" is neither",
        "y: ret_port is for masters and syndics, not hosts",
        "z: master is set by the fleet file, not by master_opts/minion_opts",
        "a/b: not a valid id",
        "datacenter dc9: is empty",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    assert!(layout::valid_host("web-1.dc1.example.com"));
    assert!(layout::valid_host("::1") && layout::valid_host("127.0.0.1"));
    assert!(!layout::valid_host("10.0.0.300") && !layout::valid_host("a..b"));
}

#[test]
fn rendered_configs_the_loader_refuses_are_reported() {
    let e = problems("master: {id: top, host: 10.0.0.1, master_opts: {log_level: chatty}}\n");
    assert!(
        e.contains("top: the rendered config does not load") && e.contains("log_level"),
        "{e}"
    );
}

/// A three-tier fleet: top, dc1 (2 syndics), rack7 under dc1 (1 syndic),
/// dc2 without syndics.
const THREE_TIERS: &str = "\
master: {id: top, host: 127.0.0.1}
defaults: {root_dir: '/tmp/brine-fleet-unused/{id}', minion_opts: {log_level: info}}
datacenters:
  dc1:
    syndics: [{id: syn-dc1-a, host: 127.1.0.1}, {id: syn-dc1-b, host: 127.1.0.2}]
    hosts: [web1.dc1, web2.dc1, {id: db1.dc1, host: 127.1.0.9}]
    datacenters:
      rack7:
        syndics: [{id: syn-rack7, host: 127.1.7.1, master_opts: {syndic_forward_batch: 100}}]
        hosts: [r7-a, r7-b, r7-c]
  dc2:
    hosts: [{id: mail1.dc2, host: 127.2.0.5}]
";

#[test]
fn three_tiers_render_into_configs_brines_loader_takes() {
    use brine_common::config::{load_master_with_env, load_minion_with_env, SyndicConfig};
    let ds = Fleet::parse(THREE_TIERS, Path::new("."))
        .unwrap()
        .plan()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outputs = render::outputs(&ds, dir.path());
    assert_eq!(outputs.len(), ds.len() + 1);
    render::write(&outputs).unwrap();
    assert!(render::validate(&ds, dir.path()).is_empty());
    let m = by_id(&ds);

    let top = load_master_with_env(&dir.path().join("top"), &[], &[]).unwrap();
    assert!(top.order_masters && !top.is_syndic());
    assert_eq!(top.interface.to_string(), "127.0.0.1");
    assert_eq!(
        top.pki_dir,
        Path::new("/tmp/brine-fleet-unused/top/etc/salt/pki/master")
    );
    assert_eq!(
        top.log_file,
        Path::new("/tmp/brine-fleet-unused/top/var/log/salt/master")
    );

    // rack7's syndic reports to one of dc1's, which then orders masters.
    let rack = load_master_with_env(&dir.path().join("syn-rack7"), &[], &[]).unwrap();
    let s = SyndicConfig::of(&rack).unwrap();
    let parent = m["syn-rack7"].parent().unwrap();
    assert!(parent.starts_with("syn-dc1-"));
    assert_eq!(s.masters, vec![m[parent].host.clone()]);
    assert_eq!(rack.syndic_forward_batch, 100);
    assert!(!rack.order_masters);
    let p = load_master_with_env(&dir.path().join(parent), &[], &[]).unwrap();
    assert!(p.order_masters);
    assert_eq!(
        SyndicConfig::of(&p).unwrap().masters,
        vec!["127.0.0.1".to_string()]
    );

    // Minions: their datacenter's syndic, or the top for dc2.
    for id in [
        "web1.dc1",
        "web2.dc1",
        "db1.dc1",
        "r7-a",
        "r7-b",
        "r7-c",
        "mail1.dc2",
    ] {
        let c = load_minion_with_env(&dir.path().join(id), &[], &[]).unwrap();
        let up = m[id].upstream.as_ref().unwrap();
        assert_eq!(c.id, id);
        assert_eq!(
            (c.master.as_str(), c.master_port),
            (up.host.as_str(), up.port)
        );
        assert_eq!(c.log_level, "info");
        assert_eq!(
            c.pki_dir,
            Path::new("/tmp/brine-fleet-unused")
                .join(id)
                .join("etc/salt/pki/minion")
        );
    }
    assert_eq!(m["r7-a"].parent(), Some("syn-rack7"));
    assert_eq!(m["mail1.dc2"].parent(), Some("top"));
    assert!(m["web1.dc1"].parent().unwrap().starts_with("syn-dc1-"));
}

#[test]
fn rendering_twice_gives_the_same_bytes_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = Fleet::parse(THREE_TIERS, Path::new("."))
        .unwrap()
        .plan()
        .unwrap();
    let done = render::write(&render::outputs(&first, dir.path())).unwrap();
    assert!(done.iter().all(|(_, w)| *w == render::Written::Changed));
    let before: Vec<Vec<u8>> = done
        .iter()
        .map(|(p, _)| std::fs::read(p).unwrap())
        .collect();
    let again = Fleet::parse(THREE_TIERS, Path::new("."))
        .unwrap()
        .plan()
        .unwrap();
    assert_eq!(first, again);
    let done = render::write(&render::outputs(&again, dir.path())).unwrap();
    assert!(done.iter().all(|(_, w)| *w == render::Written::Unchanged));
    let after: Vec<Vec<u8>> = done
        .iter()
        .map(|(p, _)| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn adding_a_syndic_moves_about_one_in_s_plus_one_hosts() {
    let hosts: Vec<String> = (0..800).map(|i| format!("h{i}.dc1")).collect();
    let fleet = |syndics: usize| {
        let s: Vec<String> = (1..=syndics)
            .map(|i| format!("{{id: s{i}, host: 10.1.0.{i}}}"))
            .collect();
        format!(
            "master: {{id: top, host: 10.0.0.1}}\ndatacenters:\n  dc1:\n    syndics: [{}]\n    hosts: [{}]\n",
            s.join(", "),
            hosts.join(", ")
        )
    };
    // The layout alone: loading 800 rendered configs proves nothing here.
    let owners = |text: &str| -> BTreeMap<String, String> {
        layout::resolve(&spec::parse_fleet(text).unwrap(), Path::new("."))
            .unwrap()
            .into_iter()
            .filter(|d| d.kind == Kind::Minion)
            .map(|d| (d.id.clone(), d.parent().unwrap().to_string()))
            .collect()
    };
    let (three, four) = (owners(&fleet(3)), owners(&fleet(4)));
    let moved: Vec<&String> = hosts.iter().filter(|h| three[*h] != four[*h]).collect();
    assert!(
        moved.iter().all(|h| four[*h] == "s4"),
        "hosts only move to the new syndic"
    );
    let f = moved.len() as f64 / hosts.len() as f64;
    assert!((0.15..=0.35).contains(&f), "moved {f}, expected about 1/4");
}
