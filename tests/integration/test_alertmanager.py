"""A real Alertmanager (Debian's prometheus-alertmanager) delivering alerts that make the healer act.

The healer side is the real route (`add_alertmanager_routes`) on an aiohttp app; the actions are a
recording implementation of the supervisor's `AlertActions`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from healer.service.alerts import DEFAULT_RULES, AlertRule, add_alertmanager_routes
from tests.support.healer import RecordingActions
from tests.support.net import free_port

TOKEN = "am-integration-token-42"


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def eventually(cond, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.fixture
async def healer_app():
    actions = RecordingActions()
    registry = CollectorRegistry()
    app = web.Application()
    rules = (*DEFAULT_RULES, AlertRule("GPUOverheating", "pause_gpu", ("uuid", "gpu")))   # the mechanism
    add_alertmanager_routes(app, token=TOKEN, rules=rules, actions=actions, registry=registry)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield runner.addresses[0][1], actions, registry
    await runner.cleanup()


@pytest.fixture
async def alertmanager(healer_app, tmp_path: Path):
    exe = shutil.which("prometheus-alertmanager")
    assert exe, "Debian's prometheus-alertmanager is required: ./bootstrap test installs it"
    port, _, _ = healer_app
    cfg = tmp_path / "alertmanager.yml"
    cfg.write_text(f"""
route:
  receiver: healer
  group_by: ['alertname', 'job', 'uuid']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: healer
    webhook_configs:
      - url: http://127.0.0.1:{port}/api/v1/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {TOKEN}
""")
    am_port = free_port()
    proc = subprocess.Popen([exe, f"--config.file={cfg}", f"--storage.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{am_port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 20
            while True:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "exited"
                try:
                    async with http.get(f"{base}/-/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "alertmanager did not become ready"
                await asyncio.sleep(0.05)
            yield base, http
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def post_alerts(http: aiohttp.ClientSession, base: str, *alerts: dict) -> None:
    async with http.post(f"{base}/api/v2/alerts", json=list(alerts)) as r:
        assert r.status == 200, await r.text()


async def am_metric(http: aiohttp.ClientSession, base: str, name: str, **labels: str) -> float:
    async with http.get(f"{base}/metrics") as r:
        text = await r.text()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and want in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_alertmanager_delivers_and_the_healer_acts(healer_app, alertmanager):
    _, actions, registry = healer_app
    base, http = alertmanager
    now = datetime.now(UTC) - timedelta(seconds=30)
    t0 = time.monotonic()
    await post_alerts(http, base, {"labels": {"alertname": "RenderStalled", "job": "job-42", "severity": "page"},
                                   "annotations": {"summary": "no progress for 10 minutes"},
                                   "startsAt": iso(now)})
    await eventually(lambda: ("restart_job", "job-42") in actions.calls)
    print(f"alert posted → restart_job called in {(time.monotonic() - t0) * 1000:.1f} ms")

    # An alert no rule knows: acknowledged (200, so Alertmanager does not retry) and logged.
    await post_alerts(http, base, {"labels": {"alertname": "DiskFull", "instance": "node-1"}, "startsAt": iso(now)})
    await eventually(lambda: (registry.get_sample_value(
        "renderwatch_healer_alerts_total", {"action": "none", "status": "firing", "outcome": "unknown"}) or 0) >= 1)

    # GPU overheating pauses the GPU; resolving the alert resumes it.
    hot = {"labels": {"alertname": "GPUOverheating", "uuid": "GPU-5c1e", "instance": "node-1"},
           "startsAt": iso(now)}
    await post_alerts(http, base, hot)
    await eventually(lambda: ("pause_gpu", "GPU-5c1e") in actions.calls)
    await post_alerts(http, base, {**hot, "endsAt": iso(datetime.now(UTC))})
    await eventually(lambda: ("resume_gpu", "GPU-5c1e") in actions.calls)

    assert actions.calls.count(("restart_job", "job-42")) == 1
    assert await am_metric(http, base, "alertmanager_notifications_total", integration="webhook") >= 4
    assert await am_metric(http, base, "alertmanager_notifications_failed_total", integration="webhook") == 0
    assert json.dumps(actions.calls)  # recorded calls are plain data
