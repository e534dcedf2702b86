"""A real Prometheus (Debian's 2.42 binary on 127.0.0.1) scrapes a real agent; `promtool check metrics`
accepts the exposition in both formats. One Prometheus for the module: its first scrape comes ~5.5 s
after it starts."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from agent.app import run_in_thread
from tests.support.agent import JobStream, agent_config, get, ndjson, post
from tests.support.fakes import NoNvml
from tests.support.promtools import query, start_prometheus, wait_for

pytestmark = pytest.mark.slow


def need(binary: str) -> str:
    path = shutil.which(binary)
    assert path, f"{binary} is not installed: ./bootstrap test installs Debian's prometheus"
    return path


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agent")
    handle = run_in_thread(agent_config(tmp), nvml=NoNvml())
    a, b = JobStream("shot-a", session="promsess01"), JobStream("shot-b", session="promsess02", scene="Shot B")
    assert post(handle.url, ndjson(a.whole(frames=3)))[0] == 200
    assert post(handle.url, ndjson([b.start(1, 10)] + b.frame(1) + b.frame(2)))[0] == 200
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def prometheus(agent):
    """Started through promtools, which returns only once /-/ready answers 200: Prometheus logs
    "Listening on" before its TSDB is open and answers 503 to queries until then (CI hit that)."""
    need("prometheus")
    with start_prometheus({"renderwatch-agent": [agent.url.removeprefix("http://")]}, rule_files=()) as prom:
        yield prom.url


def test_prometheus_scrapes_the_agent(prometheus):
    wait_for(prometheus, 'up{job="renderwatch-agent"} == 1')
    frames = query(prometheus, "sum by (scene) (renderwatch_frames_rendered_total)")
    got = {r["metric"]["scene"]: float(r["value"][1]) for r in frames}
    assert got == {"Scene": 3.0, "Shot B": 2.0}
    progress = query(prometheus, "renderwatch_job_progress_ratio")
    assert {r["metric"]["job"]: float(r["value"][1]) for r in progress} == {"shot-a": 1.0, "shot-b": 0.2}
    hist = query(prometheus, 'histogram_quantile(0.5, sum by (le) (renderwatch_frame_render_seconds_bucket))')
    assert 0 < float(hist[0]["value"][1]) <= 1.0
    assert float(query(prometheus, "renderwatch_gpu_available")[0]["value"][1]) == 0
    assert float(query(prometheus, "renderwatch_jobs_active")[0]["value"][1]) == 1


def test_promtool_check_metrics(agent):
    code, body, ctype = get(agent.url, "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    out = subprocess.run([need("promtool"), "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()


def test_openmetrics_parses_strictly(agent):
    """promtool 2.42 lints only the text format; OpenMetrics goes through prometheus_client's strict parser."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    code, body, ctype = get(agent.url, "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert code == 200 and ctype.startswith("application/openmetrics-text")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["renderwatch_frames_rendered"].type == "counter"
    assert families["renderwatch_frame_render_seconds"].type == "histogram"
    assert families["renderwatch_frame_peak_memory_bytes"].type == "histogram"
