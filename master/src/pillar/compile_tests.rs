#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A pillar tree on disk: environment → files.
struct Tree {
    dir: tempfile::TempDir,
    cfg: MasterConfig,
}

impl Tree {
    fn new(envs: &[(&str, &[(&str, &str)])]) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let mut roots = BTreeMap::new();
        for (env, files) in envs {
            let root = dir.path().join(env);
            std::fs::create_dir_all(&root).unwrap();
            for (name, text) in *files {
                write(&root, name, text);
            }
            roots.insert(env.to_string(), vec![root]);
        }
        let cfg = MasterConfig {
            pillar_roots: roots,
            ..MasterConfig::default()
        };
        Tree { dir, cfg }
    }

    fn root(&self, env: &str) -> PathBuf {
        self.dir.path().join(env)
    }

    fn compile(&self, id: &str, grains: &Value, pillarenv: Option<&str>) -> Value {
        let roots = Roots::new(&self.cfg.pillar_roots, &[], &[]).unwrap();
        compile(&self.cfg, &roots, id, grains, pillarenv)
    }
}

fn write(root: &Path, name: &str, text: &str) {
    let path = root.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn errors(p: &Value) -> Vec<String> {
    p.get("_errors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn debian() -> Value {
    json!({"os": "Debian", "roles": ["web"], "ipv4": ["10.1.2.3"]})
}

#[test]
fn each_minion_gets_only_the_sls_its_targets_name() {
    let t = Tree::new(&[(
        "base",
        &[
            (
                "top.sls",
                "base:\n  '*':\n    - common\n  m1:\n    - secrets.m1\n  m2:\n    - secrets.m2\n",
            ),
            ("common.sls", "ntp: pool.ntp.org\n"),
            ("secrets/m1.sls", "secret: m1-only\n"),
            ("secrets/m2.sls", "secret: m2-only\n"),
        ],
    )]);
    assert_eq!(
        t.compile("m1", &debian(), None),
        json!({"ntp": "pool.ntp.org", "secret": "m1-only"})
    );
    assert_eq!(
        t.compile("m2", &debian(), None),
        json!({"ntp": "pool.ntp.org", "secret": "m2-only"})
    );
    assert_eq!(
        t.compile("m3", &Value::Null, None),
        json!({"ntp": "pool.ntp.org"})
    );
}

#[test]
fn match_types_grain_compound_list_pcre_ipcidr_nodegroup() {
    let mut t = Tree::new(&[(
        "base",
        &[
            (
                "top.sls",
                "base:\n\
                 \x20 'os:Debian':\n    - match: grain\n    - deb\n\
                 \x20 'G@roles:web and m*':\n    - match: compound\n    - web\n\
                 \x20 'm1,m3':\n    - match: list\n    - listed\n\
                 \x20 '^m[0-9]$':\n    - match: pcre\n    - pcre\n\
                 \x20 '10.1.0.0/16':\n    - match: ipcidr\n    - net\n\
                 \x20 group1:\n    - match: nodegroup\n    - grouped\n",
            ),
            ("deb.sls", "deb: true\n"),
            ("web.sls", "web: true\n"),
            ("listed.sls", "listed: true\n"),
            ("pcre.sls", "pcre: true\n"),
            ("net.sls", "net: true\n"),
            ("grouped.sls", "grouped: true\n"),
        ],
    )]);
    t.cfg.nodegroups.insert("group1".into(), "L@m1,m2".into());
    assert_eq!(
        t.compile("m1", &debian(), None),
        json!({"deb": true, "web": true, "listed": true, "pcre": true, "net": true, "grouped": true})
    );
    assert_eq!(
        t.compile(
            "x2",
            &json!({"os": "RedHat", "ipv4": ["192.168.0.1"]}),
            None
        ),
        json!({})
    );
    assert_eq!(
        t.compile("m2", &json!({"os": "RedHat", "roles": ["db"]}), None),
        json!({"pcre": true, "grouped": true})
    );
}

#[test]
fn pillar_matching_and_bad_targets_are_errors() {
    let t = Tree::new(&[(
        "base",
        &[
            (
                "top.sls",
                "base:\n  'role:x':\n    - match: pillar\n    - a\n  '(':\n    - match: pcre\n    - a\n  '*':\n    - ok\n",
            ),
            ("a.sls", "a: 1\n"),
            ("ok.sls", "ok: 1\n"),
        ],
    )]);
    let p = t.compile("m1", &debian(), None);
    assert_eq!(p["ok"], 1);
    assert!(p.get("a").is_none());
    let errs = errors(&p);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].contains("'pillar' matching is not allowed"),
        "{errs:?}"
    );
    assert!(errs[1].contains("Pillar top file target '('"), "{errs:?}");
}

#[test]
fn targets_apply_in_file_order_later_ones_win() {
    // 'z*' sorts after '*' but comes first in the file: '*' wins.
    let t = Tree::new(&[(
        "base",
        &[
            (
                "top.sls",
                "base:\n  'z*':\n    - specific\n  '*':\n    - general\n",
            ),
            ("specific.sls", "v: specific\nonly_z: 1\n"),
            ("general.sls", "v: general\n"),
        ],
    )]);
    assert_eq!(
        t.compile("z1", &Value::Null, None),
        json!({"v": "general", "only_z": 1})
    );
    // `order` reorders.
    let t = Tree::new(&[(
        "base",
        &[
            (
                "top.sls",
                "base:\n  'z*':\n    - specific\n    - order: 2\n  '*':\n    - general\n",
            ),
            ("specific.sls", "v: specific\n"),
            ("general.sls", "v: general\n"),
        ],
    )]);
    assert_eq!(
        t.compile("z1", &Value::Null, None),
        json!({"v": "specific"})
    );
}

#[test]
fn two_environments_and_pillarenv() {
    let t = Tree::new(&[
        (
            "base",
            &[
                ("top.sls", "base:\n  '*':\n    - common\n"),
                ("common.sls", "env: base\nbase_only: 1\nnested: {a: 1}\n"),
            ],
        ),
        (
            "dev",
            &[
                ("top.sls", "dev:\n  '*':\n    - devdata\n"),
                ("devdata.sls", "env: dev\nnested: {b: 2}\n"),
            ],
        ),
    ]);
    assert_eq!(
        t.compile("m1", &Value::Null, None),
        json!({"env": "dev", "base_only": 1, "nested": {"a": 1, "b": 2}})
    );
    assert_eq!(
        t.compile("m1", &Value::Null, Some("dev")),
        json!({"env": "dev", "nested": {"b": 2}})
    );
    assert_eq!(
        t.compile("m1", &Value::Null, Some("base")),
        json!({"env": "base", "base_only": 1, "nested": {"a": 1}})
    );
    // An unknown pillarenv compiles nothing (as in Salt).
    assert_eq!(t.compile("m1", &Value::Null, Some("prod")), json!({}));
}

#[test]
fn includes_relative_keyed_with_defaults_the_includer_wins() {
    let t = Tree::new(&[(
        "base",
        &[
            ("top.sls", "base:\n  '*':\n    - app\n"),
            (
                "app/init.sls",
                "include:\n  - .db\n  - common\n  - users:\n      key: 'people:all'\n      defaults:\n        shell: /bin/zsh\nwho: app\nport: 8080\n",
            ),
            ("app/db.sls", "port: 5432\ndb: {host: h1}\n"),
            ("common.sls", "who: common\ncommon: true\n"),
            ("users.sls", "bob: {shell: {{ shell }}}\n"),
        ],
    )]);
    assert_eq!(
        t.compile("m1", &Value::Null, None),
        json!({
            "who": "app", "port": 8080, "db": {"host": "h1"}, "common": true,
            "people": {"all": {"bob": {"shell": "/bin/zsh"}}}
        })
    );
}

#[test]
fn include_loops_end_and_missing_includes_are_reported() {
    let t = Tree::new(&[(
        "base",
        &[
            ("top.sls", "base:\n  '*':\n    - a\n"),
            ("a.sls", "include: [b]\na: 1\n"),
            ("b.sls", "include: [a, nope]\nb: 1\n"),
        ],
    )]);
    let p = t.compile("m1", &Value::Null, None);
    assert_eq!(p["a"], 1);
    assert_eq!(p["b"], 1);
    assert_eq!(
        errors(&p),
        vec!["Specified SLS 'nope' in environment 'base' is not available on the salt master"]
    );
}

#[test]
fn merge_strategies() {
    let files: &[(&str, &str)] = &[
        ("top.sls", "base:\n  '*':\n    - one\n    - two\n"),
        ("one.sls", "d: {a: 1, l: [1, 2]}\nkeep: 1\n"),
        ("two.sls", "d: {b: 2, l: [2, 3]}\n"),
    ];
    let mut t = Tree::new(&[("base", files)]);
    assert_eq!(
        t.compile("m1", &Value::Null, None),
        json!({"d": {"a": 1, "b": 2, "l": [2, 3]}, "keep": 1})
    );
    t.cfg.pillar_merge_lists = true;
    assert_eq!(
        t.compile("m1", &Value::Null, None),
        json!({"d": {"a": 1, "b": 2, "l": [1, 2, 3]}, "keep": 1})
    );
    t.cfg.pillar_merge_lists = false;
    t.cfg.pillar_source_merging_strategy = "overwrite".into();
    assert_eq!(
        t.compile("m1", &Value::Null, None),
        json!({"d": {"b": 2, "l": [2, 3]}, "keep": 1})
    );
    t.cfg.pillar_source_merging_strategy = "recurse".into();
    assert_eq!(t.compile("m1", &Value::Null, None)["d"]["a"], 1);
}

#[test]
fn strategy_none_reads_only_the_base_top() {
    let mut t = Tree::new(&[
        (
            "base",
            &[("top.sls", "base:\n  '*': [a]\n"), ("a.sls", "a: 1\n")],
        ),
        (
            "dev",
            &[("top.sls", "dev:\n  '*': [b]\n"), ("b.sls", "b: 1\n")],
        ),
    ]);
    t.cfg.pillar_source_merging_strategy = "none".into();
    assert_eq!(t.compile("m1", &Value::Null, None), json!({"a": 1}));
}

#[test]
fn a_jinja_error_is_reported_with_file_and_line_and_the_rest_kept() {
    let t = Tree::new(&[(
        "base",
        &[
            ("top.sls", "base:\n  '*':\n    - good\n    - web.broken\n"),
            ("good.sls", "good: {{ grains.os }}\n"),
            ("web/broken.sls", "a: 1\nb: {{ grains.nope.deeper }}\n"),
        ],
    )]);
    let p = t.compile("m1", &debian(), None);
    assert_eq!(p["good"], "Debian");
    let errs = errors(&p);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(
            "Rendering SLS 'web.broken' failed, render error: web/broken.sls, line 2: Jinja"
        ),
        "{errs:?}"
    );
}

#[test]
fn missing_sls_broken_top_and_non_mappings_are_errors() {
    let t = Tree::new(&[(
        "base",
        &[
            (
                "top.sls",
                "base:\n  '*':\n    - missing\n    - listy\n  m*:\n    - optional.thing\n    - ignore_missing: True\n",
            ),
            ("listy.sls", "- a\n- b\n"),
        ],
    )]);
    let p = t.compile("m1", &Value::Null, None);
    let errs = errors(&p);
    assert_eq!(
        errs,
        vec![
            "Specified SLS 'missing' in environment 'base' is not available on the salt master",
            "SLS 'listy' does not render to a dictionary",
        ]
    );
    let t = Tree::new(&[("base", &[("top.sls", "base:\n  '*': [\n")])]);
    let errs = errors(&t.compile("m1", &Value::Null, None));
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("Rendering Primary Top file failed, render error: top.sls, line"),
        "{errs:?}"
    );
}

#[test]
fn the_render_context_has_salts_variables() {
    let t = Tree::new(&[(
        "base",
        &[
            ("top.sls", "base:\n  '*':\n    - first\n    - sub.second\n"),
            ("first.sls", "first: 1\n"),
            (
                "sub/second/init.sls",
                "{% import_yaml './data.yaml' as m %}\nid: {{ opts.id }}\nenv: {{ saltenv }}\nseen: {{ pillar.first }}\nsls: {{ sls }}\ntpldir: {{ tpldir }}\nslspath: {{ slspath }}\nos: {{ grains.os }}\nmap: {{ m.x }}\n",
            ),
            ("sub/second/data.yaml", "x: from-yaml\n"),
        ],
    )]);
    let p = t.compile("m7", &debian(), None);
    assert_eq!(
        p,
        json!({"first": 1, "id": "m7", "env": "base", "seen": 1, "sls": "sub.second",
               "tpldir": "sub/second", "slspath": "sub/second", "os": "Debian", "map": "from-yaml"})
    );
}

#[test]
fn globs_in_top_names_expand_to_available_sls() {
    let t = Tree::new(&[(
        "base",
        &[
            ("top.sls", "base:\n  '*':\n    - users.*\n"),
            ("users/ann.sls", "ann: 1\n"),
            ("users/bob/init.sls", "bob: 1\n"),
            ("other.sls", "other: 1\n"),
        ],
    )]);
    assert_eq!(
        t.compile("m1", &Value::Null, None),
        json!({"ann": 1, "bob": 1})
    );
}

#[test]
fn pillar_opts_puts_the_options_under_master() {
    let mut t = Tree::new(&[("base", &[("top.sls", "base: {}\n")])]);
    t.cfg.pillar_opts = true;
    let p = t.compile("m1", &Value::Null, None);
    assert_eq!(p["master"]["id"], "m1");
    assert_eq!(p["master"]["master_id"], json!(t.cfg.id));
    assert_eq!(p["master"]["pillar_opts"], true);
    assert!(p.get("_errors").is_none());
    assert!(t.root("base").exists());
}

#[test]
fn hostile_names_stay_inside_the_roots() {
    let t = Tree::new(&[(
        "base",
        &[
            ("top.sls", "base:\n  '*':\n    - ok\n"),
            ("ok.sls", "{% include '../../outside.sls' %}\n"),
        ],
    )]);
    write(t.dir.path(), "outside.sls", "leak: 1\n");
    let p = t.compile("m1", &Value::Null, None);
    assert!(p.get("leak").is_none());
    let errs = errors(&p);
    assert!(errs[0].contains("leaves the roots"), "{errs:?}");
}

#[test]
fn merge_recurse_follows_salt() {
    assert_eq!(
        merge_recurse(
            json!({"a": {"x": 1}, "l": [1]}),
            json!({"a": {"y": 2}, "l": [2]}),
            false
        ),
        json!({"a": {"x": 1, "y": 2}, "l": [2]})
    );
    assert_eq!(
        merge_recurse(json!({"a": {"x": 1}}), json!({"a": 5}), false),
        json!({"a": 5})
    );
    assert_eq!(
        merge_recurse(json!({"l": [1, 2]}), json!({"l": [2, 3]}), true),
        json!({"l": [1, 2, 3]})
    );
    assert_eq!(top::relative(".db", "app", "app/init.sls"), "app.db");
    assert_eq!(top::relative(".db", "app.web", "app/web.sls"), "app.db");
    assert_eq!(top::relative(".db", "top", "top.sls"), "db");
    assert_eq!(top::relative("abs.x", "app", "app/init.sls"), "abs.x");
}
