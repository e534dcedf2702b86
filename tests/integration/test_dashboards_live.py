"""Every Grafana panel's Prometheus query returns data from a real Prometheus (Debian's 2.42, the
repository's rules) that scraped a real agent and a real healer service during real renders
(Blender 3.4) with one crash and restart, and one job the healer gave up on.

Faked, because it cannot run here: the GPU. The agent runs with recorded NVML readings behind its
`nvml=` seam (tests/agent/test_gpu.py's FakeNvml), so the GPU panels have series to read. Exempt,
each with its reason: panels that need more history than a test can make (the regression baseline
looks back a day), the panel fed only by Alertmanager deliveries, and VRAM per job (the recorded
NVML processes cannot carry this test's Blender pids). Panels about running jobs ("Memory now",
"CPU", "ETA") are evaluated at moments recorded while the render ran, as a user watching it sees them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from agent.app import run_in_thread
from healer.service.client import call
from tests.support.agent import agent_config, wait_until
from tests.support.fakes import FakeNvml
from tests.support.net import free_port
from tests.support.promtools import panel_queries, query, start_prometheus, substitute

REPO = Path(__file__).resolve().parents[2]
FAULTS = REPO / "tests" / "faults"
ALL = {"host": ".*", "scene": ".*", "job": ".*"}
# (dashboard title fragment, panel title fragment) -> why it cannot have data in this test
EXEMPT = {
    "baseline": "the regression baseline is the p90 of the same scene a day earlier (offset 30m over 1d)",
    "alerts received": "counts Alertmanager deliveries to the healer (tested in test_alertmanager.py)",
    "renderwatch_job_vram_bytes": "per-process VRAM needs a real GPU process with Blender's pid",
}


def _post(url: str, body: dict, env: dict) -> dict:
    """As `renderwatch jobs` calls the healer: with the token the healer made for this account."""
    base, _, path = url.partition("/api/")
    return call(base, "POST", f"/api/{path}", body, env=env, timeout=10)


def _get(url: str, env: dict) -> dict:
    base, _, path = url.partition("/api/")
    return call(base, "GET", f"/api/{path}", env=env, timeout=10)


@pytest.mark.blender
@pytest.mark.slow
def test_every_panel_has_data_after_a_real_render_with_a_crash(tmp_path: Path, scene_copy, blender34: str) -> None:
    home = tmp_path / "home"
    agent = run_in_thread(agent_config(tmp_path, job_grace_seconds=3600), nvml=FakeNvml())
    hport = free_port()
    healer_url = f"http://127.0.0.1:{hport}"
    env = dict(os.environ, RENDERWATCH_HOME=str(home), RENDERWATCH_AGENT=agent.url, RENDERWATCH_BLENDER=blender34,
               RENDERWATCH_WEBHOOK_URL=f"http://127.0.0.1:{free_port()}/hook",   # nobody listens: counted as failed
               RENDERWATCH_HEALER_BACKOFF_S="0.1", FAULT_FRAME="3", FAULT_MARKER=str(tmp_path / "crashed-once"),
               FAULT_SLEEP="0.6")
    log = open(tmp_path / "healer.log", "wb")
    healer = subprocess.Popen([sys.executable, "-m", "renderwatch", "healer", "--listen", f"127.0.0.1:{hport}"],
                              env=env, stdout=log, stderr=log)
    prom = None
    try:
        def healthy() -> bool:
            try:
                return urllib.request.urlopen(healer_url + "/healthz", timeout=1).status == 200
            except OSError:
                return False
        assert wait_until(healthy, timeout=30), (tmp_path / "healer.log").read_text()[-2000:]
        prom = start_prometheus({"renderwatch-agent": [agent.url.split("//")[1]],
                                 "renderwatch-healer": [f"127.0.0.1:{hport}"]})

        scene = scene_copy(frames=6)
        prom.wait_for_scrapes("renderwatch-agent", 1, timeout=60)
        crash = _post(healer_url + "/api/v1/jobs", {"scene": str(scene), "frames": "1-6", "args": [
            "--python", str(FAULTS / "segfault.py"), "--python", str(FAULTS / "slow.py")]}, env)
        # Output under /proc cannot be written: a fail-fast output_error, i.e. a job the healer gives up on.
        gave_up = _post(healer_url + "/api/v1/jobs", {"scene": str(scene), "frames": "1-2",
                                                      "output": "/proc/renderwatch-test/f_####"}, env)

        def state(job_id: str) -> str:
            return str(_get(f"{healer_url}/api/v1/jobs/{job_id}", env)["state"])
        running_at: list[float] = []          # moments a user would look at a live job
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (state(crash["id"]) in ("complete", "failed")
                                                   and state(gave_up["id"]) in ("complete", "failed")):
            if state(crash["id"]) == "running":
                running_at.append(time.time())
            time.sleep(0.5)
        assert state(crash["id"]) == "complete", (tmp_path / "healer.log").read_text()[-3000:]
        assert len(running_at) >= 4, running_at
        job = _get(f"{healer_url}/api/v1/jobs/{crash['id']}", env)
        assert job["state"] == "complete" and job["restarts"] == 1, job
        assert _get(f"{healer_url}/api/v1/jobs/{gave_up['id']}", env)["state"] == "failed"

        prom.wait_for_scrapes("renderwatch-agent", 3, timeout=60)
        prom.wait_for_scrapes("renderwatch-healer", 3, timeout=60)
        time.sleep(3)                       # a few more scrapes after the last change, for rate()/increase()

        checked, empty = 0, []
        for path in sorted((REPO / "dashboards").glob("*.json")):
            model = json.loads(path.read_text())
            for pq in panel_queries(model):
                if pq.datasource != "prometheus":
                    continue
                if any(k in pq.panel.lower() or k in pq.expr for k in EXEMPT):
                    continue
                expr = substitute(pq.expr, ALL)
                result = query(prom.url, expr)
                for at in running_at[2:]:       # a live job's panels, as seen while it ran
                    if result:
                        break
                    result = query(prom.url, expr, at=at)
                checked += 1
                if not result:
                    empty.append(f"{pq.dashboard} / {pq.panel} [{pq.ref_id}]: {expr}")
        assert checked >= 40, checked
        assert not empty, "panels without data after a real render:\n" + "\n".join(empty)
        # The crash and the restart are visible as such, not just as some series.
        restarts = query(prom.url, "sum(renderwatch_healer_restarts_total)")
        assert restarts and float(restarts[0]["value"][1]) >= 1
        frames = query(prom.url, 'sum(renderwatch_frames_rendered_total{scene="Scene"})')
        assert frames and float(frames[0]["value"][1]) == 6
    finally:
        if prom is not None:
            prom.stop()
        healer.terminate()
        try:
            healer.wait(15)
        except subprocess.TimeoutExpired:
            healer.kill()
        log.close()
        agent.stop()
