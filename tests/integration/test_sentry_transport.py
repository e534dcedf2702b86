"""sentry-sdk's own HTTP transport → an envelope receiver on 127.0.0.1: the event, its stack, attachments,
check-ins, and that no secret leaves the host."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from sentry_sdk.envelope import Envelope

from healer.diagnosis.errors import PythonError, SegfaultError
from healer.incidents.dispatch import Incidents
from healer.incidents.model import RENDER_COMPLETED, RENDER_CRASHED

REPO = Path(__file__).resolve().parents[2]
# Our own real captures (a user's clone has no ../shared): Debian's 3.4 segfault with its crash file,
# and a handler error (4.5 prints it the same way).
FIXTURES = REPO / "tests" / "fixtures" / "blender-logs-3.4"
HANDLER_ERROR_LOG = REPO / "tests" / "fixtures" / "blender-logs-4.5" / "pyerr_handler_4.5.log"
PUBLIC_KEY = "5f1c0ffee0ddba11cafe000000000042"


class EnvelopeReceiver:
    """Sentry's ingest endpoint, as much as a test needs: decode envelopes, keep their items."""

    def __init__(self) -> None:
        self.items: list[tuple[dict, bytes]] = []   # (item headers, payload bytes)
        self.raw: list[bytes] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _envelope(self, request: web.Request) -> web.Response:
        body = await request.read()
        if body[:2] == b"\x1f\x8b":   # aiohttp normally un-gzips already; don't rely on it
            body = gzip.decompress(body)
        self.raw.append(body)
        env = Envelope.deserialize(body)
        for item in env.items:
            self.items.append((dict(item.headers), item.payload.get_bytes()))
        return web.json_response({"id": env.headers.get("event_id")})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/1/envelope/", self._envelope)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    @property
    def dsn(self) -> str:
        return f"http://{PUBLIC_KEY}@127.0.0.1:{self.port}/1"

    def of_type(self, ty: str) -> list[tuple[dict, bytes]]:
        return [(h, p) for h, p in self.items if h.get("type") == ty]

    async def wait_for(self, ty: str, n: int = 1, timeout: float = 5.0) -> list[tuple[dict, bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.of_type(ty)) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        got = self.of_type(ty)
        assert len(got) >= n, f"expected {n} {ty} items, got {len(got)}: {[h for h, _ in self.items]}"
        return got


@pytest.fixture
async def receiver():
    r = EnvelopeReceiver()
    await r.start()
    yield r
    assert r.runner is not None
    await r.runner.cleanup()


def _incidents(receiver: EnvelopeReceiver, tmp_path: Path, env_extra: dict[str, str] | None = None) -> Incidents:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
    env.update({"SENTRY_DSN": receiver.dsn, "SENTRY_RELEASE": "renderwatch@test", "SENTRY_ENVIRONMENT": "ci",
                "RENDERWATCH_HOME": str(tmp_path / "state")})
    env.update(env_extra or {})
    cfg = {"path_rewrites": {"/mnt/projects/": "projects/"}}
    return Incidents.from_config(cfg, registry=CollectorRegistry(), env=env)


async def _close(incidents: Incidents) -> None:
    await asyncio.get_running_loop().run_in_executor(None, incidents.close, 5.0)


def _secret_log(dsn: str, secret_env_value: str) -> list[str]:
    lines = (FIXTURES / "segfault_3.4.log").read_text().splitlines()
    leaks = [
        # what a pipeline wrapper printing its environment before launching Blender leaves in the log
        f"SENTRY_DSN={dsn}",
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "HOME=/home/alice",
        "export RENDER_API_TOKEN=tok_live_abcdef123456",
        "USER=alice",
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl",
        "fetching assets with ghp_0123456789abcdefghijABCDEFGHIJ012345",
        f"reporting to {dsn}",
        f"token from the farm: {secret_env_value}",
        "environ({'HOME': '/home/alice', 'DB_PASSWORD': 'hunter2hunter2'})",
        "Read blend: /home/alice/projects/shot010/monkey.blend",
        "Traceback (most recent call last):",
        '  File "/home/alice/pipeline/hooks/seg.py", line 3, in pre',
        "    ctypes.string_at(0)",
        "OSError: exception: access violation reading 0x0000000000000000",
    ]
    return leaks + lines


async def test_crash_becomes_one_scrubbed_event_with_blender_stack(receiver, tmp_path, monkeypatch):
    secret_env_value = "zz-farm-secret-0987654321"
    monkeypatch.setenv("RW_TEST_FARM_TOKEN", secret_env_value)
    crash = tmp_path / "monkey.crash.txt"
    shutil.copy(FIXTURES / "segfault_3.4.crash.txt", crash)
    incidents = _incidents(receiver, tmp_path, {"RW_TEST_FARM_TOKEN": secret_env_value})
    info = {
        "job": "job-7", "scene": "/home/alice/projects/shot010/monkey.blend", "host": "node-7",
        "frames": [1, 4], "frames_completed": [1, 2], "frame": 3, "attempt": 1, "restarts": 0,
        "blender_version": "3.4.1", "engine": "CYCLES", "device": "CPU", "gpu_name": "NVIDIA H100",
        "memory": {"rss_peak_bytes": 14_230_000, "gpu_peak_bytes": 0},
        "log_tail": _secret_log(receiver.dsn, secret_env_value),
        "render_settings": {"engine": "CYCLES", "samples": 16, "output": "/home/alice/renders/f_####.png",
                            "api_token": "tok_live_abcdef123456"},
    }
    err = SegfaultError(summary="Blender crashed with SIGSEGV at frame 3", frame=3, exit_code=139, exit_signal=11,
                   crash_file=str(crash))
    incidents.emit(RENDER_CRASHED, info, err)
    incidents.emit("render.restarted", {**info, "attempt": 2, "restarts": 1}, err)  # same error: not sent again
    events = await receiver.wait_for("event")
    await _close(incidents)

    assert len(receiver.of_type("event")) == 1
    event = json.loads(events[0][1])
    exc = event["exception"]["values"][-1]
    assert exc["type"] == "SegfaultError"
    assert exc["value"] == "Blender crashed with SIGSEGV at frame 3"
    assert event["level"] == "error"
    assert event["fingerprint"] == ["SegfaultError", "monkey.blend", "seg.py:pre"]
    assert event["release"] == "renderwatch@test" and event["environment"] == "ci"
    tags = event["tags"]
    for key, value in {"error_type": "segfault", "host": "node-7", "blender_version": "3.4.1", "engine": "CYCLES",
                       "device": "CPU", "gpu_name": "NVIDIA H100", "frame": "3", "attempt": "1",
                       "job": "job-7"}.items():
        assert tags[key] == value, key
    frames = exc["stacktrace"]["frames"]
    assert [(f["function"], f["in_app"]) for f in frames] == [("pre", True), ("string_at", False)]
    assert frames[0]["filename"] == "/mnt/pipeline/hooks/seg.py" and frames[0]["lineno"] == 3
    assert frames[1]["lineno"] == 519
    assert event["contexts"]["job"]["frame_start"] == 1 and event["contexts"]["job"]["frame_end"] == 4
    assert event["contexts"]["job"]["frames_completed"] == 2
    assert event["contexts"]["memory"]["rss_peak_bytes"] == 14_230_000
    assert event["contexts"]["gpu"]["name"] == "NVIDIA H100"
    assert any("render.crashed" in b["message"] for b in event["breadcrumbs"]["values"])
    assert "threads" not in event            # the healer's own stack is not the story
    assert "sys.argv" not in event.get("extra", {}) and "modules" not in event

    attachments = {h["filename"]: p for h, p in receiver.of_type("attachment")}
    assert set(attachments) == {"monkey.crash.txt", "blender-output.log", "render-settings.json"}
    assert b"# Python backtrace" in attachments["monkey.crash.txt"]
    log_text = attachments["blender-output.log"].decode()
    assert "Writing: /tmp/monkey.crash.txt" in log_text and "~/projects/shot010/monkey.blend" in log_text
    assert "HOME=[Filtered]" in log_text
    settings = json.loads(attachments["render-settings.json"])
    assert settings["output"] == "~/renders/f_####.png" and settings["api_token"] == "[Filtered]"

    # Nothing secret in any item payload (the event and every attachment).
    secrets = [receiver.dsn, PUBLIC_KEY, "wJalrXUtnFEMI", "tok_live_abcdef123456", "ghp_0123456789",
               "eyJhbGciOiJIUzI1NiJ9", "hunter2", "alice", secret_env_value, os.environ.get("PATH", "PATH"),
               " ".join(sys.argv)]
    for headers, payload in receiver.items:
        text = payload.decode("utf-8", "replace")
        for s in secrets:
            assert s not in text, f"{s!r} leaked in {headers.get('type')} {headers.get('filename', '')}"


async def test_python_error_from_log_traceback_is_a_warning(receiver, tmp_path):
    incidents = _incidents(receiver, tmp_path)
    log_lines = HANDLER_ERROR_LOG.read_text().splitlines()
    err = PythonError(summary="RuntimeError: pipeline hook failed: asset server unreachable", fatal=False, frame=2)
    incidents.emit("render.warning", {"job": "job-8", "scene": "/mnt/projects/shot010/monkey.blend",
                                      "log_tail": log_lines}, err)
    events = await receiver.wait_for("event")
    await _close(incidents)
    event = json.loads(events[0][1])
    assert event["level"] == "warning"
    assert event["exception"]["values"][-1]["type"] == "PythonError"
    frames = event["exception"]["values"][-1]["stacktrace"]["frames"]
    assert [(f["filename"], f["lineno"], f["function"], f["in_app"]) for f in frames] == \
        [("/mnt/pipeline/hooks/pyerr.py", 3, "pre", True)]
    assert event["fingerprint"] == ["PythonError", "monkey.blend", "pyerr.py:pre"]


async def test_job_health_check_ins(receiver, tmp_path):
    incidents = _incidents(receiver, tmp_path)
    info = {"job": "job-9", "scene": "/mnt/projects/shot010/Monkey Shot.blend"}
    incidents.job_started(info)
    incidents.emit(RENDER_COMPLETED, {**info, "duration_s": 12.5})
    checkins = await receiver.wait_for("check_in", 2)
    await _close(incidents)
    docs = [json.loads(p) for _, p in checkins]
    assert [d["status"] for d in docs] == ["in_progress", "ok"]
    assert {d["monitor_slug"] for d in docs} == {"render-monkey-shot"}
    assert docs[0]["check_in_id"] == docs[1]["check_in_id"]
    assert docs[1]["duration"] == 12.5
    assert docs[0]["monitor_config"]["schedule"]["type"] == "interval"
    assert not receiver.of_type("event")   # a completed job is not an error


async def test_nothing_is_sent_without_a_dsn(receiver, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
    incidents = Incidents.from_config({}, env=env)
    incidents.emit(RENDER_CRASHED, {"job": "j"}, SegfaultError(summary="boom"))
    await _close(incidents)
    await asyncio.sleep(0.1)
    assert receiver.items == []
