"""End to end, nothing faked: a real `renderwatch render` on real Blender 3.4 that segfaults at frame 3
once -> the log spool -> a real `renderwatch agent` process -> `renderwatch logs JOB --frame 3 --level
warning` shows the crash's lines with attempt 1, and the OTLP log records at a receiver in the test
(decoded ExportLogsServiceRequest) carry the trace id of the job and the span ids of the frame spans."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from agent.traces import job_ids
from tests.support.agent import AgentProcess, OtlpReceiver, wait_until
from tests.support.healer import fault, render

pytestmark = [pytest.mark.blender, pytest.mark.slow]


class Receiver(OtlpReceiver):
    """Traces and logs at one OTLP/HTTP endpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.logs: list[ExportLogsServiceRequest] = []

    def routes(self, app: web.Application) -> None:
        super().routes(app)
        app.router.add_post("/v1/logs", self._logs)

    async def _logs(self, request: web.Request) -> web.Response:
        req = ExportLogsServiceRequest()
        req.ParseFromString(await request.read())
        with self.lock:
            self.logs.append(req)
        return web.Response(body=ExportLogsServiceResponse().SerializeToString(), content_type="application/x-protobuf")

    def log_records(self) -> list:
        with self.lock:
            return [r for q in self.logs for rl in q.resource_logs for sl in rl.scope_logs for r in sl.log_records]


def _attrs(kvs) -> dict:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}


def test_crash_lines_reach_renderwatch_logs_and_otlp_with_the_frame_spans(scene_copy, tmp_path: Path):
    home = tmp_path / "home"
    with Receiver() as rx:
        agent = AgentProcess(home, {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                                    "OTEL_BSP_SCHEDULE_DELAY": "100"})
        agent.start()
        try:
            scene = scene_copy(frames=4)
            rc, doc, out = render([str(scene), "--frames", "1-4", "--job", "logs-e2e", "--", "--python", fault("segfault")],
                                  home, tmp_path / "r.json", FAULT_FRAME="3", FAULT_MARKER=str(tmp_path / "fired"),
                                  RENDERWATCH_AGENT=agent.url)
            assert rc == 0, out
            assert doc["attempts"][0]["error_type"] == "segfault"
            cmd = [sys.executable, "-m", "renderwatch", "logs", "logs-e2e", "--frame", "3", "--level", "warning",
                   "--agent", agent.url]
            assert wait_until(lambda: "crash.txt" in subprocess.run(cmd, capture_output=True, text=True,
                                                                      env=agent.env).stdout, 15)
            lines = subprocess.run(cmd, capture_output=True, text=True, env=agent.env).stdout.splitlines()
            crash = [ln for ln in lines if "crash.txt" in ln]
            assert crash and all(" f3 a1 " in ln and "ERROR" in ln for ln in crash), lines
            js = subprocess.run([*cmd[:-2], "-o", "json", "--agent", agent.url], capture_output=True, text=True,
                                env=agent.env).stdout
            recs = [json.loads(x) for x in js.splitlines()]
            assert {(r["frame"], r["attempt"], r["level"]) for r in recs} == {(3, 1, "error")}
            assert all(r["trace_id"] == f"{job_ids('logs-e2e')[0]:032x}" for r in recs)
            # OTLP: every frame's records carry the frame span's id (the saved frames) or the job's root
            assert wait_until(lambda: any(s.name == "render.job" for s in rx.spans()), 30)
            assert wait_until(lambda: any(_attrs(r.attributes).get("render.frame") == 4 for r in rx.log_records()), 30)
        finally:
            agent.stop()
    frame_spans = {(_attrs(s.attributes)["render.frame"], s.span_id) for s in rx.spans() if s.name == "render.frame"}
    tid, root = job_ids("logs-e2e")
    records = rx.log_records()
    assert all(int.from_bytes(r.trace_id, "big") == tid for r in records)
    spanned = {(_attrs(r.attributes).get("render.frame"), r.span_id) for r in records}
    assert {f for f, _ in frame_spans} >= {1, 2, 4}
    assert frame_spans & spanned                           # the frames' lines carry their frame's span
    for f, sid in spanned:
        assert (f, sid) in frame_spans or int.from_bytes(sid, "big") == root
    crash = [r for r in records if "crash.txt" in r.body.string_value]
    assert crash and _attrs(crash[0].attributes)["render.attempt"] == 1 and crash[0].severity_text == "ERROR"


def test_exec_captures_blenders_lines_for_the_agent_that_starts_later(blender34, scene_copy, tmp_path: Path):
    """`renderwatch exec` (what farms run), not only `render`: real Blender 3.4's lines are spooled with
    their frames while no agent runs, and a `renderwatch agent` started afterwards serves them to
    `renderwatch logs`, progress folded with its count."""
    from tests.support.healer import RENDERWATCH, healer_env

    home = tmp_path / "home"
    scene = scene_copy(frames=4)
    p = subprocess.run([*RENDERWATCH, "exec", "--job", "exec-logs", "--quiet", "--", blender34, "-b", str(scene),
                        "-s", "1", "-e", "2", "-a", "--python-expr", "print('exec capture probe', flush=True)"],
                       env=healer_env(home), capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    assert any((home / "spool" / "logs").glob("*.ndjson"))         # on disk, no agent yet
    agent = AgentProcess(home, {"RENDERWATCH_SPOOL_DIR": str(home / "spool")})
    agent.start()
    try:
        cmd = [sys.executable, "-m", "renderwatch", "logs", "exec-logs", "-o", "json", "--agent", agent.url]

        def records() -> list[dict]:
            out = subprocess.run(cmd, capture_output=True, text=True, env=agent.env).stdout
            return [json.loads(x) for x in out.splitlines()]

        assert wait_until(lambda: any(r["text"] == "exec capture probe" for r in records()), 15)
        recs = records()
    finally:
        agent.stop()
    saved = [r for r in recs if r["text"].startswith("Saved:")]
    assert [r["frame"] for r in saved] == [1, 2] and all(r["attempt"] == 1 for r in saved)
    progress = [r for r in recs if r["level"] == "progress"]
    assert progress and {r["frame"] for r in progress} == {1, 2}
    blender_lines = p.stdout.splitlines()
    folded = sum(1 + r.get("folded", 0) for r in progress)
    assert folded == sum(1 for ln in blender_lines if ln.startswith("Fra:"))   # every progress line counted
