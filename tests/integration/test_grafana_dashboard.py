"""The Grafana dashboard (etc/grafana/bootserverd.json, installed as
/usr/share/bootserverd/grafana/bootserverd.json): it is in Grafana's import format, every
metric it queries is in the real daemon's /metrics, and every query is PromQL that Prometheus's
own parser (promtool, Debian's `prometheus`) accepts. Each check is also run on mutated copies
of the dashboard, so none of them can pass on anything."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support.config import write_config
from tests.support.daemon import REPO, Daemon

DASHBOARD = REPO / "etc" / "grafana" / "bootserverd.json"
INPUT = "DS_PROMETHEUS"
PANEL_TYPES = {"timeseries", "stat", "gauge"}
GRID_WIDTH = 24
# Grafana's own variables and a value of the right kind for each (for promtool only).
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
METRIC = re.compile(r"\bbootserverd_[A-Za-z0-9_:]*")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
SELECTOR = re.compile(r"\b(bootserverd_[A-Za-z0-9_:]*)\s*(\{[^}]*\})?")
LABEL_VALUES = re.compile(r"^\s*label_values\((.+),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$")
# Exposition suffixes of a family whose # TYPE line names it without them.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows too."""
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []) if panel.get("type") == "row" else [])
    return out


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    out = [(f"panel {p.get('id')} {p.get('title')!r} target {t.get('refId')}", t.get("expr", ""))
           for p in panels(dashboard) if p.get("type") != "row" for t in p.get("targets", [])]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            query = query.get("query", "") if isinstance(query, dict) else query or ""
            match = LABEL_VALUES.match(query)
            out.append((f"variable {var.get('name')}", match.group(1) if match else query))
    return out


def refers_to_input(datasource) -> bool:
    ref = "${" + INPUT + "}"
    return datasource == ref or isinstance(datasource, dict) and datasource.get("uid") == ref and \
        datasource.get("type") == "prometheus"


def structure_problems(dashboard: dict) -> list[str]:
    """What stands between this JSON and a clean import into Grafana 9/10."""
    problems = []
    for key in ("__inputs", "__requires", "title", "uid", "schemaVersion", "templating", "panels"):
        if key not in dashboard:
            problems.append(f"no top-level {key}")
    inputs = dashboard.get("__inputs", [])
    if [(i.get("name"), i.get("type"), i.get("pluginId")) for i in inputs] != [(INPUT, "datasource", "prometheus")]:
        problems.append(f"__inputs must declare one Prometheus datasource {INPUT}: {inputs}")
    uid = dashboard.get("uid")
    if not (isinstance(uid, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid)):
        problems.append(f"uid {uid!r} is not a Grafana uid")
    if not isinstance(dashboard.get("schemaVersion"), int) or not 36 <= dashboard["schemaVersion"] <= 39:
        problems.append(f"schemaVersion {dashboard.get('schemaVersion')!r}: not what Grafana 9/10 export")
    if dashboard.get("id") is not None:
        problems.append("id must be null in an export (Grafana assigns it)")
    required = {(r.get("type"), r.get("id")) for r in dashboard.get("__requires", [])}
    for needed in (("grafana", "grafana"), ("datasource", "prometheus")):
        if needed not in required:
            problems.append(f"__requires lacks {needed}")

    all_panels = panels(dashboard)
    ids = [p.get("id") for p in all_panels]
    if len(set(ids)) != len(ids) or not all(isinstance(i, int) for i in ids):
        problems.append(f"panel ids not unique integers: {ids}")
    boxes = []
    for panel in all_panels:
        name = f"panel {panel.get('id')} {panel.get('title')!r}"
        kind = panel.get("type")
        if not panel.get("title"):
            problems.append(f"{name}: no title")
        if kind != "row" and kind not in PANEL_TYPES:
            problems.append(f"{name}: type {kind!r}")
        if kind in PANEL_TYPES and ("panel", kind) not in required:
            problems.append(f"{name}: __requires lacks panel {kind}")
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in "hwxy") or grid["w"] < 1 or grid["h"] < 1 \
                or grid["x"] < 0 or grid["y"] < 0 or grid["x"] + grid["w"] > GRID_WIDTH:
            problems.append(f"{name}: gridPos {grid}")
        else:
            boxes.append((name, grid))
        if kind == "row":
            continue
        if not refers_to_input(panel.get("datasource")):
            problems.append(f"{name}: datasource {panel.get('datasource')!r} is not ${{{INPUT}}}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{name}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(refs):
            problems.append(f"{name}: refIds {refs}")
        for t in targets:
            if not isinstance(t.get("expr"), str) or not t["expr"].strip():
                problems.append(f"{name} target {t.get('refId')}: no expr")
            if "datasource" in t and not refers_to_input(t["datasource"]):
                problems.append(f"{name} target {t.get('refId')}: datasource {t['datasource']!r}")
    for i, (name_a, a) in enumerate(boxes):
        for name_b, b in boxes[i + 1:]:
            if a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and \
                    a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]:
                problems.append(f"{name_a} {a} overlaps {name_b} {b}")

    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    instance = variables.get("instance")
    if not instance or instance.get("type") != "query" or not refers_to_input(instance.get("datasource")):
        problems.append(f"no query variable 'instance' on ${{{INPUT}}}: {instance}")
    if "${" + INPUT + "}" not in json.dumps(dashboard.get("panels", [])):
        problems.append(f"the input {INPUT} is used by no panel")
    for where, expr in queries(dashboard):
        if not METRIC.search(STRING.sub('""', expr)):
            problems.append(f"{where}: queries no bootserverd_ metric: {expr!r}")
        if "__name__" in expr:
            problems.append(f"{where}: __name__ hides the metric name from this test: {expr!r}")
        strings = [m.span() for m in STRING.finditer(expr)]
        for selector in SELECTOR.finditer(expr):
            if any(start <= selector.start() < end for start, end in strings):
                continue                            # a label value, not a metric
            if not where.startswith("variable") and 'instance=~"$instance"' not in (selector.group(2) or ""):
                problems.append(f"{where}: {selector.group(0)!r} ignores the instance picker")
    return problems


def metric_names(expr: str) -> set[str]:
    """The bootserverd_ metric names a PromQL expression reads (not those in label values)."""
    return set(METRIC.findall(STRING.sub('""', expr)))


def exposition_names(text: str) -> tuple[dict[str, str], set[str]]:
    """{family: type} from the # TYPE lines and the sample names of a text exposition."""
    families, samples = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            families[name] = kind.strip()
        elif line and not line.startswith("#"):
            samples.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
    return families, samples


def exposed(name: str, families: dict[str, str], samples: set[str]) -> bool:
    if name in families or name in samples:
        return True
    return any(name.endswith(suffix) and families.get(name[:-len(suffix)]) == kind
               for kind, suffixes in SUFFIXES.items() for suffix in suffixes)


def unknown_metrics(dashboard: dict, exposition: str) -> list[str]:
    families, samples = exposition_names(exposition)
    return sorted({f"{name} ({where})" for where, expr in queries(dashboard) for name in metric_names(expr)
                   if not exposed(name, families, samples)})


def promql(expr: str, variables: dict[str, str]) -> str:
    """The expression as Prometheus receives it from Grafana: Grafana's variables replaced."""
    for name in sorted(GRAFANA_VARIABLES | variables, key=len, reverse=True):
        expr = expr.replace(name, (GRAFANA_VARIABLES | variables)[name])
    return expr


def promtool_problems(dashboard: dict, tmp_path: Path) -> str:
    """promtool's complaint about the dashboard's PromQL, '' when it accepts every expression
    (each one a recording rule in one generated rules file)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: install deps/apt/http.txt (Debian package prometheus)"
    variables = {"$" + v["name"]: "127.0.0.1:8080" for v in dashboard.get("templating", {}).get("list", [])}
    rules, leftovers = [], []
    for where, expr in queries(dashboard):
        query = promql(expr, variables)
        if "$" in query:                            # a variable Grafana would not fill in
            leftovers.append(f"{where}: unknown variable in {expr!r}")
        rules.append({"record": "dashboard:" + re.sub(r"[^A-Za-z0-9_]+", "_", where).strip("_"), "expr": query})
    if leftovers:
        return "\n".join(leftovers)
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "bootserverd-dashboard", "rules": rules}]}, sort_keys=False))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    if proc.returncode != 0:
        return proc.stdout + proc.stderr + "\n" + path.read_text()
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout, proc.stdout + proc.stderr
    return ""


@pytest.fixture(scope="module")
def exposition(tmp_path_factory) -> str:
    """/metrics of the real daemon (HTTP on, DHCP off) on loopback."""
    tmp = tmp_path_factory.mktemp("daemon")
    config = write_config(tmp, http={"enabled": True})
    listen = yaml.safe_load(config.read_text())["http"]["listen"]
    with Daemon(config) as daemon:
        daemon.wait_for("bootserverd started", timeout=30)
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as answer:
            assert answer.status == 200
            return answer.read().decode()


# --- the shipped dashboard -----------------------------------------------------------------

def test_dashboard_is_in_grafana_import_format():
    dashboard = load()
    assert structure_problems(dashboard) == []
    kinds = {p["type"] for p in panels(dashboard)}
    assert {"row", "timeseries", "stat", "gauge"} <= kinds, kinds


def test_every_metric_the_dashboard_queries_is_in_the_daemons_metrics(exposition):
    dashboard = load()
    names = set().union(*(metric_names(expr) for _, expr in queries(dashboard)))
    assert len(names) >= 15, names                 # the parser found the metrics at all
    missing = unknown_metrics(dashboard, exposition)
    declared = [line for line in exposition.splitlines() if line.startswith("# TYPE bootserverd_")]
    assert not missing, "not in /metrics:\n  " + "\n  ".join(missing) + "\n/metrics declares:\n" + "\n".join(declared)


def test_every_query_is_promql_that_promtool_accepts(tmp_path):
    assert promtool_problems(load(), tmp_path) == ""


def test_the_debian_package_installs_the_dashboard():
    lines = (REPO / "debian" / "bootserverd.install").read_text().splitlines()
    assert "etc/grafana/bootserverd.json usr/share/bootserverd/grafana" in lines


# --- the checks fail where they should ------------------------------------------------------

def first_target(dashboard: dict) -> dict:
    return next(p for p in panels(dashboard) if p.get("type") != "row")["targets"][0]


def mutated(change) -> dict:
    dashboard = copy.deepcopy(load())
    change(dashboard)
    return dashboard


def _set_expr(expr):
    return lambda d: first_target(d).update(expr=expr)


def _overlap(d):
    a, b = [p for p in panels(d) if p["type"] != "row"][:2]
    b["gridPos"] = dict(a["gridPos"])


def _duplicate_id(d):
    a, b = panels(d)[:2]
    b["id"] = a["id"]


def _other_datasource(d):
    next(p for p in panels(d) if p["type"] != "row")["datasource"] = {"type": "prometheus", "uid": "PBFA97CFB590B2093"}


def _no_targets(d):
    next(p for p in panels(d) if p["type"] != "row")["targets"] = []


def _unknown_panel_type(d):
    next(p for p in panels(d) if p["type"] != "row")["type"] = "graph"


def _no_inputs(d):
    del d["__inputs"]


def _too_wide(d):
    next(p for p in panels(d) if p["type"] != "row")["gridPos"]["w"] = GRID_WIDTH + 1


@pytest.mark.parametrize("change", [
    *(pytest.param(c, id=c.__name__[1:]) for c in (_overlap, _duplicate_id, _other_datasource, _no_targets,
                                                    _unknown_panel_type, _no_inputs, _too_wide)),
    pytest.param(_set_expr("sum(bootserverd_devices)"), id="ignores_instance"),
    pytest.param(_set_expr('sum({__name__="bootserverd_devices",instance=~"$instance"})'), id="name_in_label"),
])
def test_structure_check_fails_on_a_broken_copy(change):
    assert structure_problems(mutated(change))


@pytest.mark.parametrize("expr, bogus", [
    ('sum(bootserverd_no_such_metric{instance=~"$instance"})', "bootserverd_no_such_metric"),
    ('sum(rate(bootserverd_transfers{instance=~"$instance"}[5m]))', "bootserverd_transfers"),   # no _total
    ('sum(bootserverd_devices_total{instance=~"$instance"})', "bootserverd_devices_total"),     # a gauge
    ('sum(rate(bootserverd_errors_bucket{instance=~"$instance"}[5m]))', "bootserverd_errors_bucket"),
])
def test_metric_check_fails_on_a_copy_with_a_metric_not_in_metrics(exposition, expr, bogus):
    problems = unknown_metrics(mutated(_set_expr(expr)), exposition)
    assert [p for p in problems if p.startswith(bogus + " ")], problems


def test_a_metric_name_inside_a_label_value_is_not_taken_for_a_query():
    expr = 'sum(bootserverd_devices{job="bootserverd_nope",instance=~"$instance"})'
    assert metric_names(expr) == {"bootserverd_devices"}
    assert structure_problems(mutated(_set_expr(expr))) == []
    families, samples = exposition_names("# TYPE x_seconds histogram\nx_seconds_bucket{le=\"1\"} 0\n")
    assert exposed("x_seconds_sum", families, samples) and not exposed("x_seconds_total", families, samples)


@pytest.mark.parametrize("expr", [
    'sum by (outcome) (rate(bootserverd_boots_total{instance=~"$instance"}[$__rate_interval])',   # a ( open
    'sum(rate(bootserverd_boots_total{instance=~"$instance"}[5 minutes]))',
    'bootserverd_boots_total{instance=~"$instance"} +',
    'sum(rate(bootserverd_boots_total{instance=~"$instance"}[$window]))',       # not a dashboard variable
])
def test_promql_check_fails_on_a_copy_with_a_broken_query(tmp_path, expr):
    assert promtool_problems(mutated(_set_expr(expr)), tmp_path)
