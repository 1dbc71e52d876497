#![allow(clippy::unwrap_used)]

use super::jinja::{join, preprocess};
use super::*;
use serde_json::json;
use std::collections::HashMap;

/// Templates by name, as a file server environment would hold them.
struct Files(HashMap<String, String>);

impl TemplateSource for Files {
    fn load(&self, name: &str) -> Result<Option<String>, String> {
        if name == "unreadable.jinja" {
            return Err("permission denied".into());
        }
        Ok(self.0.get(name).cloned())
    }
}

fn files(list: &[(&str, &str)]) -> Option<Arc<dyn TemplateSource>> {
    Some(Arc::new(Files(
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )))
}

fn ctx() -> Value {
    json!({
        "grains": {"os": "Debian", "id": "m1", "roles": ["web", "db"], "ip4": ["10.0.0.1"]},
        "pillar": {"a": {"b": "deep"}, "users": {"bob": 1000, "ann": 1001}},
        "opts": {"id": "m1"},
        "saltenv": "base",
    })
}

fn jinja(src: &str) -> Result<String, RenderError> {
    render_jinja(src, "t.sls", &ctx(), None)
}

#[test]
fn variables_lookups_and_python_methods() {
    assert_eq!(jinja("{{ grains['os'] }}").unwrap(), "Debian");
    assert_eq!(jinja("{{ grains.os }}").unwrap(), "Debian");
    assert_eq!(jinja("{{ grains.get('os', 'x') }}").unwrap(), "Debian");
    assert_eq!(jinja("{{ grains.get('kernel', 'x') }}").unwrap(), "x");
    assert_eq!(jinja("{{ pillar['a']['b'] }}").unwrap(), "deep");
    assert_eq!(jinja("{{ 'os' in grains }}").unwrap(), "True");
    assert_eq!(jinja("{{ 'nope' in grains }}").unwrap(), "False");
    assert_eq!(
        jinja("{% for k, v in pillar.users.items() %}{{ k }}={{ v }};{% endfor %}").unwrap(),
        "ann=1001;bob=1000;"
    );
    assert_eq!(
        jinja("{{ pillar.users.keys()|list|join(',') }}").unwrap(),
        "ann,bob"
    );
    assert_eq!(
        jinja("{{ 'A-b'.lower().split('-') }}").unwrap(),
        "['a', 'b']"
    );
    // Loop controls (Salt enables jinja2.ext.loopcontrols).
    assert_eq!(
        jinja("{% for r in grains.roles %}{% if r == 'db' %}{% break %}{% endif %}{{ r }}{% endfor %}")
            .unwrap(),
        "web"
    );
    // Context variables are globals too: imports see them.
    let src = files(&[("map.jinja", "{% set osname = grains.os %}")]);
    assert_eq!(
        render_jinja(
            "{% from 'map.jinja' import osname %}{{ osname }}",
            "t.sls",
            &ctx(),
            src
        )
        .unwrap(),
        "Debian"
    );
}

#[test]
fn the_trailing_newline_is_kept() {
    assert_eq!(jinja("a: {{ grains.os }}\n").unwrap(), "a: Debian\n");
}

#[test]
fn undefined_is_an_error_unless_opts_allow_undefined() {
    let e = jinja("a: 1\nb: {{ nope }}\n").unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("t.sls", Some(2)));
    assert_eq!(e.message, "Jinja variable `nope` is undefined");
    // Missing keys too, but default() and `is defined` work.
    assert!(jinja("{{ grains.kernel }}").is_err());
    assert_eq!(jinja("{{ grains.kernel|default('k') }}").unwrap(), "k");
    assert_eq!(
        jinja("{% if grains.kernel is defined %}y{% else %}n{% endif %}").unwrap(),
        "n"
    );
    let mut lenient = ctx();
    lenient["opts"]["allow_undefined"] = json!(true);
    assert_eq!(
        render_jinja("[{{ nope }}]", "t.sls", &lenient, None).unwrap(),
        "[]"
    );
}

#[test]
fn serializing_filters() {
    assert_eq!(jinja("{{ 'plain'|yaml_encode }}").unwrap(), "plain");
    assert_eq!(jinja("{{ 'a: b'|yaml_encode }}").unwrap(), "'a: b'");
    assert_eq!(jinja("{{ 'yes'|yaml_encode }}").unwrap(), "'yes'");
    assert_eq!(jinja("{{ '0755'|yaml_encode }}").unwrap(), "'0755'");
    assert_eq!(jinja("{{ \"it's\"|yaml_encode }}").unwrap(), "it's");
    assert_eq!(jinja("{{ \"'q\"|yaml_encode }}").unwrap(), "'''q'");
    assert_eq!(jinja("{{ 'a\nb'|yaml_encode }}").unwrap(), r#""a\nb""#);
    assert_eq!(jinja("{{ 3|yaml_encode }}").unwrap(), "3");
    assert_eq!(jinja("{{ none|yaml_encode }}").unwrap(), "null");
    assert_eq!(jinja("{{ true|yaml_encode }}").unwrap(), "true");
    assert_eq!(jinja("{{ 'x'|yaml_dquote }}").unwrap(), r#""x""#);
    assert_eq!(jinja("{{ \"it's\"|yaml_squote }}").unwrap(), "'it''s'");
    assert_eq!(
        jinja("{{ pillar.a|yaml }}|{{ grains.roles|yaml }}").unwrap(),
        "{b: deep}|[web, db]"
    );
    assert_eq!(
        jinja("{{ pillar.users|json }}").unwrap(),
        r#"{"ann":1001,"bob":1000}"#
    );
    assert_eq!(
        jinja("{{ {'k': '<x>'}|tojson }}").unwrap(),
        r#"{"k": "\u003cx\u003e"}"#
    );
    // What yaml_encode writes reads back as the same value.
    let rendered =
        jinja("v: {{ {'k': ['a: b', 'yes', '#c', 'x, y', '', ' s ', 'π']}|yaml_encode }}\n")
            .unwrap();
    assert_eq!(
        load_yaml(&rendered, "t").unwrap(),
        json!({"v": {"k": ["a: b", "yes", "#c", "x, y", "", " s ", "π"]}})
    );
}

#[test]
fn loading_filters_and_tags() {
    assert_eq!(jinja("{{ ('a: [1, 2]'|load_yaml).a[1] }}").unwrap(), "2");
    assert_eq!(jinja("{{ ('{\"a\": 5}'|load_json).a }}").unwrap(), "5");
    assert_eq!(jinja("{{ 'x'|load_text }}").unwrap(), "x");
    let src = "{% load_yaml as cfg %}\nport: 80\nos: {{ grains.os }}\n{% endload %}{{ cfg.port }} {{ cfg.os }}";
    assert_eq!(jinja(src).unwrap(), "80 Debian");
    let src = "{%- load_json as j -%}\n{\"n\": [1]}\n{%- endload -%}\n{{ j.n[0] }}";
    assert_eq!(jinja(src).unwrap(), "1");
}

#[test]
fn list_regex_and_other_salt_filters() {
    assert_eq!(jinja("{{ [1, 2, 2, 1]|unique|list }}").unwrap(), "[1, 2]");
    assert_eq!(
        jinja("{{ 'abcd'|regex_match('^(.*)BC(.*)$', ignorecase=True) }}").unwrap(),
        "['a', 'd']"
    );
    assert_eq!(jinja("{{ 'abcd'|regex_match('bc') }}").unwrap(), "None");
    assert_eq!(jinja("{{ 'abcd'|regex_search('b(c)') }}").unwrap(), "['c']");
    assert_eq!(
        jinja(r"{{ 'a1b22'|regex_replace('(\\d+)', '<\\1>') }}").unwrap(),
        "a<1>b<22>"
    );
    assert_eq!(jinja(r"{{ 'web01' is match('web\d+') }}").unwrap(), "True");
    assert_eq!(
        jinja("{{ 'yes'|to_bool }} {{ 0|to_bool }}").unwrap(),
        "True False"
    );
    assert_eq!(
        jinja("{{ [1, 2]|union([2, 3]) }} {{ [1, 2]|intersect([2, 3]) }} {{ [1, 2]|difference([2]) }}")
            .unwrap(),
        "[1, 2, 3] [2] [1]"
    );
    assert_eq!(jinja("{{ [1, [2, [3]]]|flatten }}").unwrap(), "[1, 2, 3]");
    assert_eq!(
        jinja("{{ [] is list }} {{ 'x' is list }}").unwrap(),
        "True False"
    );
    let e = jinja("a\n{{ raise('custom stop') }}").unwrap_err();
    assert_eq!(e.line, Some(2));
    assert_eq!(e.message, "Jinja error: custom stop");
    let e = jinja("{{ 'x'|regex_match('(') }}").unwrap_err();
    assert!(e.message.contains("regex"), "{e}");
}

#[test]
fn import_tags_are_rewritten_keeping_lines() {
    let out = preprocess(
        "{% import_yaml 'a.yaml' as a %}\n{%- import_json tpldir ~ '/b.json'\n  as b -%}\nx",
    );
    assert_eq!(
        out,
        "{% set a = import_yaml('a.yaml') %}\n{%- set b = import_json(tpldir ~ '/b.json')\n -%}\nx"
    );
    assert_eq!(out.lines().count(), 4);
    // Other tags and text are left alone.
    let plain = "{% import 'm.jinja' as m %}{{ 'import_yaml x as y' }}";
    assert_eq!(preprocess(plain), plain);
}

#[test]
fn import_yaml_json_text_through_the_source() {
    let src = files(&[
        ("web/defaults.yaml", "port: 80\nos: {{ grains.os }}\n"),
        ("web/extra.json", "{\"workers\": 4}"),
        ("web/motd.txt", "hello {{ grains.id }}"),
        ("common.yaml", "shared: true\n"),
    ]);
    let tmpl = "{% import_yaml './defaults.yaml' as d %}\
                {% import_json 'web/extra.json' as j %}\
                {% import_text './motd.txt' as t %}\
                {% import_yaml '../common.yaml' as c %}\
                {{ d.port }} {{ d.os }} {{ j.workers }} {{ t }} {{ c.shared }}";
    assert_eq!(
        render_jinja(tmpl, "web/init.sls", &ctx(), src).unwrap(),
        "80 Debian 4 hello m1 True"
    );
}

#[test]
fn from_import_with_context_and_relative_include() {
    let src = files(&[
        (
            "web/map.jinja",
            "{% set web = {'pkg': 'nginx-' ~ grains.os|lower} %}",
        ),
        ("web/part.sls", "included: {{ who }}"),
    ]);
    let tmpl = "{% from './map.jinja' import web with context %}\
                {% set who = 'me' %}pkg: {{ web.pkg }}\n{% include './part.sls' %}";
    assert_eq!(
        render_jinja(tmpl, "web/init.sls", &ctx(), src).unwrap(),
        "pkg: nginx-debian\nincluded: me"
    );
}

#[test]
fn names_resolve_against_the_including_template() {
    assert_eq!(join("./x.jinja", "a/b/init.sls"), "a/b/x.jinja");
    assert_eq!(join("../x.jinja", "a/b/init.sls"), "a/x.jinja");
    assert_eq!(join("x/y.jinja", "a/b/init.sls"), "x/y.jinja");
    assert_eq!(join("salt://x/y.jinja", "a.sls"), "x/y.jinja");
    assert_eq!(join("../../x", "a/b.sls"), "../x");
}

#[test]
fn names_out_of_the_roots_and_missing_templates_are_errors() {
    let src = files(&[("x", "secret")]);
    let e = render_jinja("{% include '../../x' %}", "a/b.sls", &ctx(), src.clone()).unwrap_err();
    assert!(e.message.contains("leaves the roots"), "{e}");
    let e = render_jinja("{% include '/etc/passwd' %}", "a.sls", &ctx(), src.clone()).unwrap_err();
    assert!(e.message.contains("leaves the roots"), "{e}");
    let e = render_jinja("\n{% include 'nope.jinja' %}", "a.sls", &ctx(), src.clone()).unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("a.sls", Some(2)));
    assert!(e.message.contains("template not found"), "{e}");
    let e = render_jinja("{% include 'unreadable.jinja' %}", "a.sls", &ctx(), src).unwrap_err();
    assert!(e.message.contains("permission denied"), "{e}");
    // No source: includes fail cleanly.
    assert!(render_jinja("{% include 'x' %}", "a.sls", &ctx(), None).is_err());
}

#[test]
fn errors_name_the_template_and_line_they_are_in() {
    let e = jinja("a: 1\nb: {% if %}\n").unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("t.sls", Some(2)));
    assert!(e.message.starts_with("Jinja syntax error"), "{e}");
    assert_eq!(e.to_string(), format!("t.sls, line 2: {}", e.message));
    // An error inside an included template points into that template.
    let src = files(&[("inc.jinja", "ok\n\n{{ missing.attr }}\n")]);
    let e = render_jinja("line1\n{% include 'inc.jinja' %}", "top.sls", &ctx(), src).unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("inc.jinja", Some(3)), "{e}");
    // Inside an import_yaml'ed file, the message names it and its line.
    let src = files(&[("d.yaml", "a: 1\nb: [\n")]);
    let e = render_jinja("{% import_yaml 'd.yaml' as d %}", "top.sls", &ctx(), src).unwrap_err();
    assert!(e.message.contains("d.yaml, line"), "{e}");
}

#[test]
fn runaway_templates_stop() {
    // An import loop.
    let src = files(&[("loop.yaml", "{% import_yaml 'loop.yaml' as l %}x: 1")]);
    let e = render_jinja("{% import_yaml 'loop.yaml' as l %}", "t.sls", &ctx(), src).unwrap_err();
    assert!(e.message.contains("nested deeper"), "{e}");
    // An include loop.
    let src = files(&[("self.jinja", "{% include 'self.jinja' %}")]);
    assert!(render_jinja("{% include 'self.jinja' %}", "t.sls", &ctx(), src).is_err());
    // A loop that would run for a very long time runs out of fuel.
    let e = jinja("{% for a in range(5000) %}{% for b in range(5000) %}{% endfor %}{% endfor %}")
        .unwrap_err();
    assert!(e.message.contains("fuel"), "{e}");
}

#[test]
fn sls_pipes() {
    let c = ctx();
    assert_eq!(
        render_sls("os: {{ grains.os }}\n", "a.sls", &c, None).unwrap(),
        json!({"os": "Debian"})
    );
    assert_eq!(
        render_sls("#!yaml\nos: '{{ grains.os }}'\n", "a.sls", &c, None).unwrap(),
        json!({"os": "{{ grains.os }}"})
    );
    assert_eq!(
        render_sls(
            "#!jinja|json\n{\"os\": \"{{ grains.os }}\"}",
            "a.sls",
            &c,
            None
        )
        .unwrap(),
        json!({"os": "Debian"})
    );
    assert_eq!(
        render_sls("#!json\n{\"n\": 1}", "a.sls", &c, None).unwrap(),
        json!({"n": 1})
    );
    assert_eq!(render_sls("", "a.sls", &c, None).unwrap(), json!({}));
    assert_eq!(
        render_sls("# nothing\n", "a.sls", &c, None).unwrap(),
        json!({})
    );
    let e = render_sls("#!jinja|gpg|yaml\na: 1", "a.sls", &c, None).unwrap_err();
    assert_eq!(e.line, Some(1));
    assert!(e.message.contains("'gpg'"), "{e}");
    assert!(render_sls("#!jinja\na: 1", "a.sls", &c, None).is_err());
    assert!(render_sls("#!yaml|jinja\na: 1", "a.sls", &c, None).is_err());
}

#[test]
fn sls_errors_keep_the_file_lines() {
    let c = ctx();
    // YAML error on line 3 (the `#!` line counts).
    let e = render_sls("#!yaml\na: 1\nb: [\n", "p/x.sls", &c, None).unwrap_err();
    assert_eq!(e.file, "p/x.sls");
    assert!(e.line.is_some_and(|l| l >= 3), "{e}");
    assert!(e.message.starts_with("YAML"), "{e}");
    let e = render_sls("a: 1\na: 2\n", "p/x.sls", &c, None).unwrap_err();
    assert!(e.message.contains("duplicate key 'a'"), "{e}");
    let e = render_sls("#!json\n{\n\"a\": }", "p/x.sls", &c, None).unwrap_err();
    assert_eq!(e.line, Some(3));
    let e = render_sls("#!jinja|yaml\nok: 1\n{{ nope }}\n", "p/x.sls", &c, None).unwrap_err();
    assert_eq!(e.line, Some(3));
}

#[test]
fn yaml_scalars_are_typed_as_salt_types_them() {
    let v = load_yaml(
        "a: yes\nb: 'yes'\nc: off\nd: \"on\"\ne: 0755\nf: 1:30\ng: 1.5\nh: ~\ni: True\nj: text\nk: 1e3x\nl: None\n",
        "t",
    )
    .unwrap();
    assert_eq!(
        v,
        json!({"a": true, "b": "yes", "c": false, "d": "on", "e": 755, "f": 90, "g": 1.5,
               "h": null, "i": true, "j": "text", "k": "1e3x", "l": "None"})
    );
    // Keys as Python prints them; merge keys applied.
    let v = load_yaml(
        "80: http\ntrue: t\nbase: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n",
        "t",
    )
    .unwrap();
    assert_eq!(
        v,
        json!({"80": "http", "True": "t", "base": {"x": 1, "y": 2}, "derived": {"x": 1, "y": 3}})
    );
    assert!(load_yaml("a: !custom x\n", "t").is_err());
}

#[test]
fn sls_variables_follow_salt() {
    let v = sls_vars("web.nginx", "web/nginx.sls");
    assert_eq!(v["tpldir"], "web");
    assert_eq!(v["slspath"], "web");
    assert_eq!(v["tplfile"], "web/nginx.sls");
    let v = sls_vars("web.nginx", "web/nginx/init.sls");
    assert_eq!(v["tpldir"], "web/nginx");
    assert_eq!(v["slspath"], "web/nginx");
    assert_eq!(v["sls_path"], "web_nginx");
    assert_eq!(v["slsdotpath"], "web.nginx");
    assert_eq!(v["slscolonpath"], "web:nginx");
    let v = sls_vars("top", "top.sls");
    assert_eq!(v["tpldir"], ".");
    assert_eq!(v["slspath"], "");
}

#[test]
fn key_order_is_the_files() {
    let r = render_sls_text(
        "base:\n  'web*': [a]\n  '*': [b]\n  m1: [c]\ndev:\n  x: [d]\nz: 1\n",
        "top.sls",
        &ctx(),
        None,
    )
    .unwrap();
    assert_eq!(
        r.key_order(),
        vec![
            (
                "base".to_string(),
                vec!["web*".to_string(), "*".to_string(), "m1".to_string()]
            ),
            ("dev".to_string(), vec!["x".to_string()]),
            ("z".to_string(), vec![]),
        ]
    );
    assert_eq!(r.load().unwrap()["base"]["m1"], json!(["c"]));
    let r = render_sls_text(
        "#!json\n{\"b\": {\"y\": 1, \"x\": 2}, \"a\": 1}",
        "t",
        &ctx(),
        None,
    )
    .unwrap();
    assert_eq!(
        r.key_order()[0],
        ("b".to_string(), vec!["y".to_string(), "x".to_string()])
    );
    assert!(render_sls_text("a: [", "t", &ctx(), None)
        .unwrap()
        .key_order()
        .is_empty());
}

/// Execution functions for templates: `test.echo` returns its first
/// argument, `pillar.get` its `default`, `cmd.fail` fails.
struct Funs;

impl Functions for Funs {
    fn call(
        &self,
        fun: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Value, String> {
        match fun {
            "test.echo" => Ok(args.first().cloned().unwrap_or(Value::Null)),
            "pillar.get" => Ok(kwargs.get("default").cloned().unwrap_or(Value::Null)),
            "cmd.fail" => Err("ERROR: it failed".into()),
            other => Err(format!("'{other}' is not available.")),
        }
    }
    fn has(&self, fun: &str) -> bool {
        matches!(fun, "test.echo" | "pillar.get" | "cmd.fail")
    }
}

#[test]
fn salt_functions_by_key_attribute_and_kwargs() {
    let reach = Reach {
        loader: None,
        functions: Some(Arc::new(Funs)),
    };
    let out = render_jinja_with(
        "{{ salt['test.echo']('a') }} {{ salt.test.echo('b') }} {{ salt['pillar.get']('x', default={'k': 1}).k }}",
        "t.sls",
        &ctx(),
        &reach,
    )
    .unwrap();
    assert_eq!(out, "a b 1");
    let e = render_jinja_with("{{ salt['cmd.fail']() }}", "t.sls", &ctx(), &reach).unwrap_err();
    assert!(
        e.message.contains("salt['cmd.fail']: ERROR: it failed"),
        "{e}"
    );
    assert_eq!(e.line, Some(1));
    let e = render_jinja_with("{{ salt['no.such']() }}", "t.sls", &ctx(), &reach).unwrap_err();
    assert!(
        e.message.contains("no.such") || e.message.contains("undefined"),
        "{e}"
    );
    let e = render_jinja("{{ salt['test.echo']('a') }}", "t.sls", &ctx(), None).unwrap_err();
    assert!(
        e.message.contains("undefined"),
        "no salt without functions: {e}"
    );
}
