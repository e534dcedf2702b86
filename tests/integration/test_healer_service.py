"""The healer service (aiohttp app from create_app) supervising real Blender renders over HTTP."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from healer.config import ConfigError, load_config
from healer.service.app import create_app
from tests.support.healer import fault, healer_env

pytestmark = [pytest.mark.blender, pytest.mark.slow]


@pytest.fixture
def service_env(tmp_path, monkeypatch):
    env = healer_env(tmp_path / "home", FAULT_SLEEP="0.25")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


async def _wait(client: TestClient, job: str, states: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = await (await client.get(f"/api/v1/jobs/{job}")).json()
        if view["state"] in states:
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job} never reached {states}: {view}")


async def test_submit_two_renders_list_and_cancel_one(scene_copy, tmp_path, service_env, blender34):
    scene = scene_copy(frames=4)
    cfg = load_config(env={**service_env, "RENDERWATCH_HEALER_CONCURRENCY": "2", "RENDERWATCH_BLENDER": blender34})
    async with TestClient(TestServer(create_app(cfg))) as client:
        jobs = []
        for name in ("a", "b"):
            body = {"scene": str(scene), "frames": "1-4", "output": str(tmp_path / name / "f_####"),
                    "args": ["--python", fault("slow")]}
            resp = await client.post("/api/v1/jobs", json=body)
            assert resp.status == 201, await resp.text()
            jobs.append((await resp.json())["id"])
        assert len(set(jobs)) == 2
        listing = await (await client.get("/api/v1/jobs")).json()
        assert {j["id"] for j in listing["jobs"]} == set(jobs)

        await _wait(client, jobs[1], {"running"})
        resp = await client.post(f"/api/v1/jobs/{jobs[1]}/cancel")
        assert resp.status == 202
        cancelled = await _wait(client, jobs[1], {"cancelled"})
        assert cancelled["exit_code"] == 130

        done = await _wait(client, jobs[0], {"complete", "failed"})
        assert done["state"] == "complete" and done["exit_code"] == 0
        assert done["report"]["frames_completed"] == [1, 2, 3, 4]
        assert sorted(os.listdir(tmp_path / "a")) == [f"f_{f:04d}.png" for f in (1, 2, 3, 4)]

        metrics = await (await client.get("/metrics")).text()
        assert f'renderwatch_healer_probe_healthy{{job="{jobs[0]}",probe="stall"}}' in metrics
        assert 'renderwatch_healer_jobs{status="cancelled"} 1.0' in metrics

        # a cancelled job restarts and resumes from its ledger
        resp = await client.post(f"/api/v1/jobs/{jobs[1]}/restart")
        assert resp.status == 202
        again = await _wait(client, jobs[1], {"complete", "failed"})
        assert again["state"] == "complete"
        assert again["report"]["frames_completed"] == [1, 2, 3, 4]
        assert all(n <= 2 for n in again["report"]["frame_render_counts"].values())


async def test_alertmanager_render_stalled_restarts_the_job(scene_copy, tmp_path, service_env, blender34):
    scene = scene_copy(frames=4)
    env = {**service_env, "RENDERWATCH_BLENDER": blender34, "RENDERWATCH_ALERTMANAGER_TOKEN": "am-token"}
    async with TestClient(TestServer(create_app(load_config(env=env)))) as client:
        resp = await client.post("/api/v1/jobs", json={"scene": str(scene), "frames": "1-3",
                                                       "args": ["--python", fault("slow")]})
        job = (await resp.json())["id"]
        deadline = time.monotonic() + 60
        while (await (await client.get(f"/api/v1/jobs/{job}")).json()).get("frames_completed", 0) < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        alert = {"version": "4", "status": "firing", "receiver": "healer", "groupLabels": {}, "commonLabels": {},
                 "commonAnnotations": {}, "externalURL": "http://am", "groupKey": "g", "truncatedAlerts": 0,
                 "alerts": [{"status": "firing", "labels": {"alertname": "RenderStalled", "job": job},
                             "annotations": {}, "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                             "generatorURL": "", "fingerprint": "f1"}]}
        resp = await client.post("/api/v1/alertmanager", json=alert, headers={"Authorization": "Bearer am-token"})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["results"][0]["outcome"] == "done"
        done = await _wait(client, job, {"complete", "failed"})
        assert done["state"] == "complete"
        attempts = done["report"]["attempts"]
        assert attempts[0]["error_type"] == "stall" and "RenderStalled" in attempts[0]["error_summary"]
        assert done["report"]["frames_completed"] == [1, 2, 3]


async def test_bad_submissions_are_400_and_name_the_field(service_env):
    async with TestClient(TestServer(create_app(load_config(env=service_env)))) as client:
        for body, words in [({"frames": "1-3"}, "scene"), ({"scene": "rel.blend"}, "absolute"),
                            ({"scene": "/x.blend", "frames": "3-1"}, "frames"),
                            ({"scene": "/x.blend", "blender": "/bin/sh"}, "not allowed"),
                            ({"scene": "/x.blend", "args": "--python x"}, "args"),
                            ({"scene": "/x.blend", "evil": 1}, "unknown field")]:
            resp = await client.post("/api/v1/jobs", json=body)
            assert resp.status == 400
            assert words in (await resp.json())["error"]
        assert (await client.get("/api/v1/jobs/nope")).status == 404
        assert (await client.get("/healthz")).status == 200


async def test_token_is_required_when_set_and_off_loopback(service_env):
    with pytest.raises(ConfigError, match="RENDERWATCH_HEALER_TOKEN"):
        create_app(load_config(env={**service_env, "RENDERWATCH_HEALER_LISTEN": "0.0.0.0:9465"}))
    cfg = load_config(env={**service_env, "RENDERWATCH_HEALER_LISTEN": "0.0.0.0:9465", "RENDERWATCH_HEALER_TOKEN": "s3cret"})
    async with TestClient(TestServer(create_app(cfg))) as client:
        assert (await client.get("/api/v1/jobs")).status == 401
        assert (await client.get("/api/v1/jobs", headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await client.get("/api/v1/jobs", headers={"Authorization": "Bearer s3cret"})).status == 200
        assert (await client.get("/healthz")).status == 200


def test_service_cli_refuses_non_loopback_without_token(service_env):
    import subprocess
    env = {k: v for k, v in service_env.items() if k != "RENDERWATCH_HEALER_TOKEN"}
    proc = subprocess.run([sys.executable, "-m", "renderwatch", "healer", "--listen", "0.0.0.0:0"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "RENDERWATCH_HEALER_TOKEN" in proc.stderr


def _blender_env(job_view: dict) -> dict[str, str]:
    """The environment the job's running Blender was started with (Linux /proc)."""
    import psutil

    return psutil.Process(job_view["pid"]).environ()


async def _alert(client: TestClient, status: str, uuid: str) -> None:
    alert = {"version": "4", "status": status, "receiver": "healer", "groupLabels": {}, "commonLabels": {},
             "commonAnnotations": {}, "externalURL": "http://am", "groupKey": "g", "truncatedAlerts": 0,
             "alerts": [{"status": status, "labels": {"alertname": "GPUOverheating", "uuid": uuid, "gpu": "1"},
                         "annotations": {}, "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                         "generatorURL": "", "fingerprint": f"hot-{uuid}"}]}
    resp = await client.post("/api/v1/alertmanager", json=alert, headers={"Authorization": "Bearer am-token"})
    assert resp.status == 200, await resp.text()


async def test_gpu_placement_through_the_api(scene_copy, tmp_path, service_env, blender34):
    """Two GPUs behind the NVML seam (no GPU here), real Blender: each render its own GPU, none on a GPU
    that GPUOverheating paused until it resolves, a render waiting for a GPU can be cancelled."""
    from tests.support.fakes import TwoGpus

    scene = scene_copy(frames=4)
    env = {**service_env, "RENDERWATCH_BLENDER": blender34, "RENDERWATCH_ALERTMANAGER_TOKEN": "am-token",
           "RENDERWATCH_HEALER_CONCURRENCY": "3", "FAULT_SLEEP": "1.5"}
    async with TestClient(TestServer(create_app(load_config(env=env), nvml=TwoGpus()))) as client:
        await _alert(client, "firing", "GPU-1000")                       # GPU 1 is hot: paused

        async def submit(name: str) -> str:
            resp = await client.post("/api/v1/jobs", json={
                "scene": str(scene), "frames": "1-3", "output": str(tmp_path / name / "f_####"),
                "args": ["--python", fault("slow")]})
            assert resp.status == 201, await resp.text()
            return (await resp.json())["id"]

        a = await submit("a")
        view_a = await _wait(client, a, {"running"})
        assert view_a["gpu"] == "GPU-0000"
        b, c = await submit("b"), await submit("c")
        await asyncio.sleep(1.0)
        waiting = [await (await client.get(f"/api/v1/jobs/{j}")).json() for j in (b, c)]
        assert [v["state"] for v in waiting] == ["queued", "queued"]     # GPU 0 busy, GPU 1 paused
        assert (await client.post(f"/api/v1/jobs/{c}/cancel")).status == 202
        assert (await _wait(client, c, {"cancelled"}, timeout=5))["exit_code"] == 130

        deadline = time.monotonic() + 30
        while (view_a := await (await client.get(f"/api/v1/jobs/{a}")).json()).get("pid") is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert _blender_env(view_a)["CUDA_VISIBLE_DEVICES"] == "0"

        await _alert(client, "resolved", "GPU-1000")                     # cooled down: GPU 1 places again
        view_b = await _wait(client, b, {"running"}, timeout=10)
        assert view_b["gpu"] == "GPU-1000"
        assert (await (await client.get(f"/api/v1/jobs/{a}")).json())["state"] == "running"   # b did not wait for a
        while (view_b := await (await client.get(f"/api/v1/jobs/{b}")).json()).get("pid") is None:
            await asyncio.sleep(0.1)
        assert _blender_env(view_b)["CUDA_VISIBLE_DEVICES"] == "1"

        for j in (a, b):
            assert (await _wait(client, j, {"complete", "failed"}, timeout=120))["state"] == "complete"
