"""Grafana dashboards: the committed JSON is what dashboards/build.py generates, the models are
sound, and every Prometheus query of every panel returns data from a real Prometheus.

The live test serves a synthetic farm (tests/support/synthetic_farm.py: two render nodes, each an agent and
a healer `/metrics` in aiohttp with the real metric families and labels, one crash and restart)
to Debian's prometheus with the repository's rules, a day of backfilled history for the baseline
rules, and file-based discovery; then evaluates each panel's expression over the HTTP API with the
template variables set to All (`.*`). Tempo and Loki queries are checked for shape only (parse-only):
no Tempo or Loki runs here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.net import free_port
from tests.support.promtools import (
    PanelQuery,
    Prometheus,
    panel_queries,
    start_prometheus,
    substitute,
    wait_for,
)
from tests.support.synthetic_farm import SyntheticFarm, serve_farm

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
ALL = {"host": ".*", "scene": ".*", "job": ".*"}


def models() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in DASHBOARDS]


def prometheus_queries() -> list[PanelQuery]:
    return [pq for m in models() for pq in panel_queries(m) if pq.datasource == "prometheus"]


def test_committed_json_is_what_the_generator_writes(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dashboards.build", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    generated = sorted(p.name for p in tmp_path.glob("*.json"))
    assert generated == [p.name for p in DASHBOARDS]
    for name in generated:
        assert (tmp_path / name).read_text() == (REPO / "dashboards" / name).read_text(), (
            f"dashboards/{name} differs from what dashboards/build.py writes: run `python -m dashboards.build`")
    check = subprocess.run([sys.executable, "-m", "dashboards.build", "--check"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr


def test_four_dashboards_with_their_variables() -> None:
    by_uid = {m["uid"]: m for m in models()}
    assert set(by_uid) == {"renderwatch-farm", "renderwatch-job", "renderwatch-gpus", "renderwatch-healer"}
    want = {"renderwatch-farm": ["host", "scene"], "renderwatch-job": ["host", "scene", "job"],
            "renderwatch-gpus": ["host"], "renderwatch-healer": ["host", "job"]}
    for uid, names in want.items():
        variables = by_uid[uid]["templating"]["list"]
        assert [v["name"] for v in variables] == names
        for v in variables:
            assert v["includeAll"] and v["multi"] and v["allValue"] == ".*"
            assert v["datasource"]["uid"] == "prometheus"
    host = by_uid["renderwatch-farm"]["templating"]["list"][0]
    assert re.search(r"label_values\(.*, instance\)", host["query"])


def test_panels_are_well_formed() -> None:
    for model in models():
        ids = [p["id"] for p in model["panels"]]
        assert len(ids) == len(set(ids)), model["title"]
        for panel in model["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["title"], panel
            assert panel["datasource"]["uid"] in ("prometheus", "tempo", "loki")
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and all(refs) and len(refs) == len(set(refs)), (model["title"], panel["title"])
            for t in panel["targets"]:
                assert t["datasource"]["uid"] == panel["datasource"]["uid"]
                assert (t.get("expr") or t.get("query")), (model["title"], panel["title"])


def test_frames_link_to_their_traces_in_tempo() -> None:
    job = next(m for m in models() if m["uid"] == "renderwatch-job")
    frame_time = next(p for p in job["panels"] if p["title"] == "Frame time per frame")
    links = frame_time["fieldConfig"]["defaults"]["links"]
    assert links and "/explore?" in links[0]["url"]
    pane = json.loads(unquote(links[0]["url"].split("panes=", 1)[1]))
    query = pane["tempo"]["queries"][0]
    assert pane["tempo"]["datasource"] == "tempo" and query["queryType"] == "traceql"
    assert 'span.render.job.id = "${__field.labels.job}"' in query["query"]
    assert 'name = "render.frame"' in query["query"]
    tempo_tables = [p for p in job["panels"] if p.get("datasource", {}).get("uid") == "tempo"]
    assert tempo_tables and "render.frame" in tempo_tables[0]["targets"][0]["query"]


def test_job_drilldown_shows_the_jobs_warnings_and_errors_from_loki() -> None:
    """Shape only: the LogQL is not run (no Loki here). The job and level are structured metadata
    (collector/loki/loki.yaml indexes only service_name and host_name), filtered after the selector."""
    job = next(m for m in models() if m["uid"] == "renderwatch-job")
    (panel,) = [p for p in job["panels"] if p.get("datasource", {}).get("uid") == "loki"]
    assert panel["type"] == "logs" and panel["options"]["enableLogDetails"] is True
    (target,) = panel["targets"]
    expr = target["expr"]
    selector, *filters = [part.strip() for part in expr.split(" | ")]
    value = re.fullmatch(r'\{service_name=~"([^"]+)"\}', selector)    # a stream selector on an index label
    assert value and not re.fullmatch(value.group(1), "")                # LogQL refuses one that matches ""
    assert re.fullmatch(value.group(1), "renderwatch-agent")             # the agent's default service.name
    assert 'render_job_id=~"${job:regex}"' in filters
    level = next(f for f in filters if f.startswith("render_log_level"))
    allowed = re.fullmatch(r'render_log_level=~"(.*)"', level).group(1)   # type: ignore[union-attr]
    # The levels the agent's records carry (agent/logexport.py's SEVERITY keys).
    for name in ("progress", "info", "warning", "error"):
        assert bool(re.fullmatch(allowed, name)) == (name in ("warning", "error")), name


def test_every_metric_a_panel_reads_is_exported_or_recorded() -> None:
    """Guards against typos: a name must be a family the synthetic farm exposes (the agent's and
    healer's, see its docstring) or a recording rule of collector/prometheus/rules."""
    farm = SyntheticFarm(["127.0.0.1"])
    node = farm.nodes["127.0.0.1"]
    exported = {"up", "ALERTS"}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for registry in (node.agent, node.healer):
        for metric in registry.collect():       # families, even those with no sample yet
            exported.update(metric.name + suffix for suffix in suffixes[metric.type])
    rules = "\n".join(p.read_text() for p in (REPO / "collector" / "prometheus" / "rules").glob("*.yml"))
    recorded = set(re.findall(r"record: (\S+)", rules))
    for pq in prometheus_queries():
        expr = re.sub(r'"[^"]*"', '""', pq.expr)                        # drop label values
        names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{|\[|\)|$| offset| unless| or| \*)", expr))
        names = {n for n in names if n.startswith(("renderwatch", "up", "ALERTS")) or ":" in n}
        missing = names - exported - recorded
        assert not missing, f"{pq.dashboard} / {pq.panel}: unknown series {sorted(missing)}"


@pytest.fixture(scope="module")
def prometheus() -> Iterator[Prometheus]:
    farm = SyntheticFarm(["127.0.0.1", "127.0.0.2"])
    with serve_farm(farm) as targets:
        prom = start_prometheus(targets, history=farm.history_openmetrics(hours=26, step=300))
        try:
            prom.wait_for_scrapes("renderwatch-agent", 2, timeout=60)
            prom.wait_for_scrapes("renderwatch-healer", 2, timeout=60)
            yield prom
        finally:
            prom.stop()


@pytest.mark.slow
def test_every_panel_query_returns_data_from_a_real_prometheus(prometheus: Prometheus) -> None:
    queries = prometheus_queries()
    assert len(queries) >= 40
    empty = []
    for pq in queries:
        expr = substitute(pq.expr, ALL)
        try:
            result = wait_for(prometheus.url, expr, timeout=20)
        except TimeoutError:
            empty.append(f"{pq.dashboard} / {pq.panel} [{pq.ref_id}]: {expr}")
            continue
        values = [float(r["value"][1]) for r in result if "value" in r and r["value"][1] != "NaN"]
        assert values, f"{pq.dashboard} / {pq.panel}: only NaN"
    assert not empty, "panels without data:\n" + "\n".join(empty)


@pytest.mark.slow
def test_template_variables_find_values(prometheus: Prometheus) -> None:
    for model in models():
        for var in model["templating"]["list"]:
            m = re.fullmatch(r"label_values\((.*), (\w+)\)", var["query"])
            assert m, var["query"]
            selector, label = substitute(m.group(1), ALL), m.group(2)
            result = wait_for(prometheus.url, f"count by ({label}) ({selector})", timeout=20)
            assert {r["metric"].get(label) for r in result} - {None, ""}, var["name"]


@pytest.mark.slow
def test_a_chosen_host_scene_and_job_narrow_the_panels(prometheus: Prometheus) -> None:
    """With one host, scene and job picked (as a user does), per-job panels show only that job."""
    jobs = wait_for(prometheus.url, 'renderwatch_job_info{instance="127.0.0.2"}')
    pick = jobs[0]["metric"]
    chosen = {"host": "127.0.0.2", "scene": pick["scene"], "job": pick["job"]}
    job_dash = next(m for m in models() if m["uid"] == "renderwatch-job")
    progress = next(pq for pq in panel_queries(job_dash) if pq.panel == "Progress")
    result = wait_for(prometheus.url, substitute(progress.expr, chosen))
    assert [(r["metric"]["instance"], r["metric"]["job"], r["metric"]["scene"]) for r in result] == [
        ("127.0.0.2", pick["job"], pick["scene"])]


def _scrape(url: str, timeout: float = 30.0) -> dict[str, str]:
    """{family name: type} of a running service's /metrics, once it answers /healthz."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def test_synthetic_farm_exposes_only_what_the_real_agent_and_healer_expose(tmp_path: Path) -> None:
    """The real `renderwatch agent` and `renderwatch healer` processes (idle: no Blender needed)
    expose every family the synthetic farm imitates, with the same type, so the live dashboard
    test above cannot pass on names the product does not have."""
    env = {**os.environ, "RENDERWATCH_HOME": str(tmp_path), "RENDERWATCH_ALERTMANAGER_TOKEN": "t0ken"}
    ports = {"agent": free_port(), "healer": free_port()}
    procs = [subprocess.Popen([str(Path(sys.executable).parent / "renderwatch"), role, "--listen",
                               f"127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for role, port in ports.items()]
    try:
        real = {role: _scrape(f"http://127.0.0.1:{port}") for role, port in ports.items()}
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
    node = SyntheticFarm(["127.0.0.1"]).nodes["127.0.0.1"]
    for role, registry in (("agent", node.agent), ("healer", node.healer)):
        imitated = {m.name: m.type for m in registry.collect()}
        wrong = {name: (kind, real[role].get(name)) for name, kind in imitated.items() if real[role].get(name) != kind}
        assert not wrong, f"{role}: synthetic family (type, real type): {wrong}"
