"""Workflow: a wrangler cancels a job on the healer service, then Alertmanager's RenderStalled for it
arrives (the agent's metrics lag the cancel); and a job the healer gives up on. What the service and
the node's agent show afterwards.

Real parts: the healer service app (aiohttp test server), real Blender 3.4 with the hooks, a real
agent in-process on the host's spool, the alert posted to /api/v1/alertmanager as Alertmanager
sends it (webhook payload version 4), and `renderwatch status --once` as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent.app import run_in_thread
from healer.config import load_config
from healer.service.app import create_app
from tests.support.agent import agent_config, get
from tests.support.fakes import NoNvml
from tests.support.healer import fault, healer_env

pytestmark = [pytest.mark.blender, pytest.mark.slow]

AM_TOKEN = "am-token"


@pytest.fixture
def node(tmp_path, monkeypatch, blender34):
    """The host's agent on the host's spool, and the healer's environment pointing at it."""
    home = tmp_path / "home"
    agent = run_in_thread(agent_config(tmp_path, data_dir=home / "agent", spool_dir=home / "spool"), nvml=NoNvml())
    env = healer_env(home, FAULT_SLEEP="0.5", RENDERWATCH_AGENT=agent.url, RENDERWATCH_BLENDER=blender34,
                     RENDERWATCH_ALERTMANAGER_TOKEN=AM_TOKEN, RENDERWATCH_HEALER_MAX_RESTARTS="1")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        yield agent, env
    finally:
        agent.stop()


def render_stalled(job: str) -> dict:
    """Alertmanager's webhook body for one firing RenderStalled (collector/prometheus rules' labels)."""
    return {"version": "4", "status": "firing", "receiver": "healer", "groupKey": "{}:{alertname=\"RenderStalled\"}",
            "truncatedAlerts": 0, "groupLabels": {"alertname": "RenderStalled"},
            "commonLabels": {"alertname": "RenderStalled", "job": job, "severity": "warning"},
            "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
            "alerts": [{"status": "firing",
                        "labels": {"alertname": "RenderStalled", "job": job, "instance": "node1", "severity": "warning"},
                        "annotations": {"summary": f"render job {job} made no progress for 10m"},
                        "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "http://prometheus:9090/graph", "fingerprint": "0f1e2d3c4b5a6978"}]}


async def wait_view(client: TestClient, job: str, cond, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    view: dict = {}
    while time.monotonic() < deadline:
        view = await (await client.get(f"/api/v1/jobs/{job}")).json()
        if cond(view):
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job}: {view}")


async def agent_job(url: str, job: str, cond, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    seen: dict = {}
    while time.monotonic() < deadline:
        status, body, _ = await asyncio.to_thread(get, url, "/api/v1/jobs", 2)
        seen = next((j for j in json.loads(body)["jobs"] if j["job"] == job), {}) if status == 200 else {}
        if cond(seen):
            return seen
        await asyncio.sleep(0.2)
    raise AssertionError(f"the agent shows job {job} as {seen}")


async def test_a_cancelled_job_stays_cancelled_when_render_stalled_fires(node, scene_copy, tmp_path):
    agent, env = node
    scene = scene_copy(frames=4)
    async with TestClient(TestServer(create_app(load_config(env=env)))) as client:
        resp = await client.post("/api/v1/jobs", json={"scene": str(scene), "frames": "1-4",
                                                       "output": str(tmp_path / "out" / "f_####"),
                                                       "args": ["--python", fault("slow")]})
        assert resp.status == 201, await resp.text()
        job = (await resp.json())["id"]
        await wait_view(client, job, lambda v: (v.get("frames_completed") or 0) >= 1)
        assert (await client.post(f"/api/v1/jobs/{job}/cancel")).status == 202
        cancelled = await wait_view(client, job, lambda v: v["state"] != "running")
        assert (cancelled["state"], cancelled["exit_code"]) == ("cancelled", 130)

        resp = await client.post("/api/v1/alertmanager", json=render_stalled(job),
                                 headers={"Authorization": f"Bearer {AM_TOKEN}"})
        assert resp.status == 200, await resp.text()
        for _ in range(15):                    # 3 s: a restart would be queued or running by then
            view = await (await client.get(f"/api/v1/jobs/{job}")).json()
            assert (view["state"], view["exit_code"]) == ("cancelled", 130), view
            await asyncio.sleep(0.2)
        assert view["report"]["job_status"] == "cancelled"

        # The node's agent shows the cancel as such (not running, later stale).
        seen = await agent_job(agent.url, job, lambda j: j.get("status") == "cancelled")
        assert seen["error_type"] is None and seen["frames_done"] < 4

        # A person's restart still runs it again, and the agent sees it running again.
        assert (await client.post(f"/api/v1/jobs/{job}/restart")).status == 202
        done = await wait_view(client, job, lambda v: v["state"] in ("complete", "failed"))
        assert done["state"] == "complete", done
        seen = await agent_job(agent.url, job, lambda j: j.get("status") == "complete")
        assert (seen["frames_done"], seen["frames_total"]) == (4, 4)


async def test_a_job_the_healer_gives_up_on_shows_failed_with_its_type(node, scene_copy, tmp_path, monkeypatch):
    agent, env = node
    env = {**env, "FAULT_FRAME": "2"}           # a segfault at frame 2 on every attempt
    monkeypatch.setenv("FAULT_FRAME", "2")
    scene = scene_copy(frames=3)
    async with TestClient(TestServer(create_app(load_config(env=env)))) as client:
        resp = await client.post("/api/v1/jobs", json={"scene": str(scene), "frames": "1-3",
                                                       "output": str(tmp_path / "out" / "f_####"),
                                                       "args": ["--python", fault("segfault")]})
        assert resp.status == 201, await resp.text()
        job = (await resp.json())["id"]
        view = await wait_view(client, job, lambda v: v["state"] in ("complete", "failed", "cancelled"))
        assert view["state"] == "failed" and view["report"]["error"]["type"] == "segfault", view

        seen = await agent_job(agent.url, job, lambda j: j.get("status") == "failed")
        assert seen["error_type"] == "segfault" and (seen["frames_done"], seen["frames_total"]) == (1, 3)
        assert seen["attempts"] == len(view["report"]["attempts"])

    status = subprocess.run([sys.executable, "-m", "renderwatch", "status", "--once", "--agent", agent.url],
                            capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith(job[:20]))
    assert " failed " in line and line.endswith("segfault"), status.stdout
