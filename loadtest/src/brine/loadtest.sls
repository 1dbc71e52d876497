{#- The load test's built-in state tree: what a simulated minion renders,
    compiles and runs for state.apply / state.sls / state.highstate /
    state.test. Ten states of Salt's `test` module with Jinja (grains and a
    loop) and require, watch and onchanges, so the requisite machinery and
    the return size are those of a small real highstate. #}
{%- set id = grains['id'] %}
motd_{{ id }}:
  test.succeed_with_changes:
    - comment: motd written for {{ id }}

base_packages:
  test.succeed_without_changes:
    - require:
      - test: motd_{{ id }}
{% for svc in ['web', 'db', 'cache'] %}
config_{{ svc }}:
  test.succeed_with_changes:
    - name: /etc/{{ svc }}/{{ id }}.conf
    - require:
      - test: base_packages

service_{{ svc }}:
  test.nop:
    - watch:
      - test: config_{{ svc }}
{% endfor %}
reload_firewall:
  test.succeed_with_changes:
    - onchanges:
      - test: config_web

report:
  test.show_notification:
    - text: {{ id }} is configured
    - require:
      - test: service_web
      - test: service_db
      - test: service_cache
