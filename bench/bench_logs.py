"""Log capture and the agent's log tier: what keeping every Blender line costs.

    python -m bench logs

- Capture cost: a supervised render that prints 1,000 lines a second, with logs on and off in the
  same run: the supervisor process's CPU added (goal <= 1 % of a core) and the render's wall time
  (goal <= 1.01x). The Blender is tests/support/fake_blender.py's replay (a recorded Blender 3.4 run's
  frames, with filler lines 1 ms apart: no real Blender prints 1,000 lines a second on demand),
  so the process's CPU includes the replay; the added CPU is the capture's. Two mixes: every line
  written (info lines, under the 1,000-a-frame budget: the worst case) and Blender's own mix (the
  recording's: 88 % progress lines, folded). The per-line cost of the classifier + capture alone is
  measured too (steadier than a whole process on a shared host).
- Agent throughput per CPU-second: log records ingested and stored (the spool scanner, the ingestor
  and the per-job store, real files); records exported through OTLP/HTTP by the LogShipper (the
  SDK's LoggerProvider, BatchLogRecordProcessor and OTLPLogExporter) to a local receiver in another
  process; the peer is the SDK's bare OTLPLogExporter.export on the same records.
- A real `renderwatch agent` process: its RSS after a flood of a million lines (goal <= 80 MB) and
  the lag from a line handed to the capture to the line at GET /api/v1/jobs/{job}/log (p99 <= 1 s).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
RATE = 1000                    # lines a second
SECONDS = float(os.environ.get("RENDERWATCH_BENCH_LOG_SECONDS", "4"))
REPEATS = int(os.environ.get("RENDERWATCH_BENCH_LOG_REPEATS", "3"))
FLOOD = int(os.environ.get("RENDERWATCH_BENCH_LOG_FLOOD", "1000000"))


class _Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _filler(mix: str, frame: int, i: int) -> str:
    if mix == "written":
        return f"Object {i} synced: Mesh.{i:05d} (12345 verts, 4 modifiers)"
    return (f"Fra:{frame} Mem:10.06M (Peak 11.13M) | Time:00:00.06 | Mem:0.34M, Peak:0.46M | Scene, ViewLayer | "
            f"Sample {i % 128}/128")


# -- capture: the classifier and the capture alone, per line ---------------------------------------

def _pipeline_cpu(lines: list[str], on: bool, spool: Path) -> float:
    from healer.diagnosis.classify import LogScanner
    from healer.supervising.logcapture import LogCapture

    scanner, clock = LogScanner(), _Clock()
    cap = LogCapture("bench", {"RENDERWATCH_LOGS": "on" if on else "off"}, directory=spool, clock=clock)
    c0 = time.process_time()
    for line in lines:
        clock.t += 1.0 / RATE
        scanner.feed(line)
        cap.feed(line, scanner.line_level, scanner.frame, 1, scanner.frame_in_flight is not None)
    cap.close()
    return time.process_time() - c0            # every thread of the process: the flusher's writes too


def bench_pipeline(work: Path) -> list[dict]:
    rows = []
    for mix in ("written", "blender"):
        lines = []
        for f in range(1, 21):
            lines.append(f"[renderwatch] frame_start {f} /tmp/f_{f:04d}.png")
            lines += [_filler(mix, f, i) for i in range(1000)] if mix == "written" else \
                [_filler(mix, f, i) if i % 8 else f"Updating geometry {i}" for i in range(1000)]
        added = []
        for r in range(REPEATS):
            off = _pipeline_cpu(lines, False, work / f"p-{mix}-{r}-off")
            on = _pipeline_cpu(lines, True, work / f"p-{mix}-{r}-on")
            added.append((on - off) / len(lines))
        us = statistics.median(added) * 1e6
        rows.append({"name": f"capture alone: CPU added per line ({mix} mix), classifier + capture, logs on vs off",
                     "measured": round(us, 2), "unit": "us", "goal": "<= 10 (1 % of a core at 1,000 lines/s)",
                     "peer": "logs off: the classifier alone, same run",
                     "peer_measured": None, "pass": us <= 10.0})
    return rows


# -- capture: a whole supervised render at 1,000 lines a second ------------------------------------

def _run(mix: str, frames: int) -> dict:
    from tests.support.fake_blender import long_run

    base = long_run(range(1, frames + 1))
    per_frame = int(SECONDS * RATE / frames)
    lines: list[list[Any]] = []
    frame = 0
    for _t, line in base["lines"]:
        if line.startswith("[renderwatch] frame_start "):
            frame = int(line.split()[2])
        if line.startswith("Saved: "):
            lines += [[0.0, _filler(mix, frame, i)] for i in range(per_frame)]
        lines.append([0.0, line])
    for i, ln in enumerate(lines):
        ln[0] = i / RATE                        # 1 ms apart
    return {**base, "lines": lines}


def _supervised(scene: Path, home: Path, run: dict, frames: int, logs: str) -> tuple[float, float, int]:
    from healer.supervising.supervisor import RenderRequest, Supervisor
    from tests.support.fake_blender import ReplayLauncher, ReplayProbes

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RENDERWATCH_", "SENTRY_", "FAULT_"))}
    env.update({"RENDERWATCH_HOME": str(home), "RENDERWATCH_AGENT": "off", "RENDERWATCH_LOGS": logs})
    launcher = ReplayLauncher([run], speed=1.0)
    sup = Supervisor(RenderRequest(scene=str(scene), frames=tuple(range(1, frames + 1)), output=str(home / "out" / "f_####"),
                                   blender=shutil.which("true") or "true", job=f"logs-{logs}"),
                     env=env, launcher=launcher, probes=ReplayProbes(launcher))
    w0, c0 = time.perf_counter(), time.process_time()
    result = asyncio.run(sup.run())
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if result.exit_code != 0:
        raise RuntimeError(f"supervised replay: {result.status} {result.error}")
    spooled = sum(p.read_bytes().count(b"\n") for p in (home / "spool" / "logs").glob("*.ndjson")) \
        if (home / "spool" / "logs").is_dir() else 0
    return wall, cpu, spooled


def bench_render(work: Path) -> list[dict]:
    sys.path.insert(0, str(REPO))
    from tests.support.fake_blender import SCENE

    rows = []
    frames = 8
    for mix in ("written", "blender"):
        run = _run(mix, frames)
        n = len(run["lines"])
        walls: dict[str, list[float]] = {"on": [], "off": []}
        cpus: dict[str, list[float]] = {"on": [], "off": []}
        records = 0
        for r in range(REPEATS):
            for logs in ("off", "on"):                 # alternating: the host's drift hits both
                home = work / f"r-{mix}-{r}-{logs}"
                (home / "shot").mkdir(parents=True)
                scene = home / "shot" / "tiny.blend"
                shutil.copy(SCENE, scene)
                wall, cpu, spooled = _supervised(scene, home, run, frames, logs)
                walls[logs].append(wall)
                cpus[logs].append(cpu)
                if logs == "on":
                    records = spooled
        w_on, w_off = statistics.median(walls["on"]), statistics.median(walls["off"])
        c_on, c_off = statistics.median(cpus["on"]), statistics.median(cpus["off"])
        added = (c_on - c_off) / w_off * 100
        how = (f"{n} lines in {w_off:.1f} s, {records} records spooled; replayed Blender 3.4 frames "
               f"(tests/support/fake_blender.py), its replay's CPU in both")
        rows.append({"name": f"capture: supervisor CPU added at {RATE:,} lines/s, {mix} mix ({how})",
                     "measured": round(added, 2), "unit": "% of a core", "goal": "<= 1",
                     "peer": "logs off, same run: the supervisor's CPU", "peer_measured": round(c_off / w_off * 100, 1),
                     "pass": added <= 1.0})
        ratio = w_on / w_off
        rows.append({"name": f"capture: render wall time, logs on / off, {mix} mix ({RATE:,} lines/s; the replay "
                             "waits for the line handler, so the capture's CPU lands in its wall: a real Blender "
                             "does not wait)",
                     "measured": round(ratio, 4), "unit": "x", "goal": "<= 1.01",
                     "peer": "logs off, same run (s)", "peer_measured": round(w_off, 2), "pass": ratio <= 1.01})
    return rows


# -- agent: ingest + store, OTLP export ------------------------------------------------------------

def _spool_records(spool: Path, n: int, job: str = "bench") -> None:
    from healer.supervising.logcapture import LogCapture

    clock = _Clock()
    cap = LogCapture(job, {}, directory=spool, clock=clock)
    for i in range(n):
        clock.t += 0.001
        frame = 1 + i // 1000
        cap.feed(_filler("written", frame, i), "info" if i % 50 else "warning", frame, 1, True)
    cap.close()


def bench_ingest(work: Path, n: int = 50_000) -> dict:
    from agent.logs import FrameSpans, LogIngestor
    from agent.logstore import LogStore
    from agent.spool import SpoolScanner

    spool = work / "ingest" / "logs"
    _spool_records(spool, n)
    store = LogStore(work / "ingest" / "store", job_max_bytes=1 << 40)
    ing = LogIngestor(store, FrameSpans())
    scanner = SpoolScanner(spool, ing)
    c0 = time.process_time()
    while scanner.scan_once():
        pass
    cpu = time.process_time() - c0
    stored = sum(store.stats.stored.values())
    rate = stored / cpu
    return {"name": f"agent: log records ingested and stored per CPU-second ({stored:,} records, spool -> per-job store)",
            "measured": round(rate), "unit": "records/s", "goal": ">= 10,000 (10 nodes' worth of 1,000 lines/s)",
            "peer": None, "peer_measured": None, "pass": stored == n and rate >= 10_000}


_RECEIVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200); self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def bench_export(work: Path, n: int = 20_000) -> dict:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    from agent.config import AgentConfig
    from agent.logexport import LogShipper
    from agent.logs import FrameSpans
    from agent.logstore import LogStore

    store = LogStore(work / "ingest" / "store")
    recs, _ = store.read("bench", limit=n)
    frames: dict[int, tuple[float, float]] = {}
    for r in recs:
        lo, hi = frames.get(r["frame"], (r["ts"], r["ts"]))
        frames[r["frame"]] = (min(lo, r["ts"]), max(hi, r["ts"]))
    recv = subprocess.Popen([sys.executable, "-c", _RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(recv.stdout.readline())  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/v1/logs"
        batches: list[list[Any]] = []

        class Keep(OTLPLogExporter):
            def export(self, batch):  # type: ignore[no-untyped-def]
                batches.append(list(batch))
                return super().export(batch)

        cfg = AgentConfig(data_dir=work / "export", spool_dir=work / "export-spool", bsp_schedule_delay_ms=50.0)
        shipper = LogShipper(cfg, FrameSpans(), exporter=Keep(endpoint=url))
        by_frame: dict[int, list[dict[str, Any]]] = {}
        for r in recs:
            by_frame.setdefault(r["frame"], []).append(r)
        c0 = time.process_time()
        for i, (frame, (lo, hi)) in enumerate(sorted(frames.items())):
            while shipper.in_flight() > 2048:           # frames end seconds apart: the exporter keeps up
                time.sleep(0.002)
            for r in by_frame[frame]:                   # a frame's lines, then its span
                shipper.add(r)
            shipper.frame_span("bench", frame, lo, hi, 0x1000 + i)
        shipper.force_flush(60_000)
        ours = len(recs) / (time.process_time() - c0)
        exported = shipper.counts()["exported"]
        dropped = shipper.counts()["dropped_queue_full"]
        shipper.shutdown()
        bare = OTLPLogExporter(endpoint=url)
        c0 = time.process_time()
        for b in batches:
            bare.export(b)
        peer = sum(len(b) for b in batches) / (time.process_time() - c0)
        bare.shutdown()
    finally:
        recv.terminate()
        recv.wait(10)
    return {"name": f"agent: log records exported through OTLP/HTTP per CPU-second ({exported:,} records, "
                    "LoggerProvider + BatchLogRecordProcessor + OTLPLogExporter, frame span ids joined)",
            "measured": round(ours), "unit": "records/s",
            "goal": "within 3x of the bare exporter, none dropped (a node averages ~1.3 records/s: docs/scaling.md)",
            "peer": "SDK's bare OTLPLogExporter.export, same records", "peer_measured": round(peer),
            "pass": exported == len(recs) and not dropped and ours * 3 >= peer}


# -- a real agent: RSS after a flood, lag to the API -----------------------------------------------

class _Agent:
    def __init__(self, home: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RENDERWATCH_", "OTEL_"))}
        self.env["RENDERWATCH_HOME"] = str(home)
        self.proc = subprocess.Popen([sys.executable, "-m", "renderwatch", "--log-level", "WARNING", "agent",
                                      "--listen", f"127.0.0.1:{self.port}"], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the agent did not start")

    def get(self, path: str) -> tuple[int, bytes]:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def bench_agent_process(work: Path) -> list[dict]:
    from healer.supervising.logcapture import LogCapture

    home = work / "agent-home"
    agent = _Agent(home)
    rows = []
    try:
        # Lag: one line every 20 ms, each followed to the API (the agent scans the spool every 0.25 s).
        cap = LogCapture("lag", agent.env)
        lags = []
        after = 0
        for i in range(150):
            t0 = time.monotonic()
            cap.feed(f"Object {i} synced", "info", 1, 1, True)
            while True:
                status, body = agent.get(f"/api/v1/jobs/lag/log?after={after}&limit=100")
                recs = json.loads(body)["records"] if status == 200 else []
                if any(r["text"] == f"Object {i} synced" for r in recs):
                    lags.append(time.monotonic() - t0)
                    after = recs[-1]["seq"]
                    break
                if time.monotonic() - t0 > 10:
                    lags.append(10.0)
                    break
                time.sleep(0.005)
            time.sleep(0.02)
        cap.close()
        lags.sort()
        p99 = lags[int(0.99 * (len(lags) - 1))]
        rows.append({"name": f"lag: a line handed to the capture -> at GET /api/v1/jobs/{{job}}/log, p99 of {len(lags)} "
                             f"(median {statistics.median(lags) * 1e3:.0f} ms; real agent, spool scanned every 0.25 s)",
                     "measured": round(p99, 3), "unit": "s", "goal": "<= 1", "peer": None, "peer_measured": None,
                     "pass": p99 <= 1.0})
        # Flood: a million lines (1,000 info lines a frame: every one a record), as fast as the capture goes.
        rss0 = agent.ps.memory_info().rss
        cap = LogCapture("flood", agent.env)
        peak = rss0
        t0 = time.monotonic()
        for i in range(FLOOD):
            frame = 1 + i // 1000
            cap.feed(_filler("written", frame, i), "info" if i % 100 else "warning", frame, 1, True)
            if i % 50_000 == 0:
                peak = max(peak, agent.ps.memory_info().rss)
        cap.close()
        written = time.monotonic() - t0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:                # until the agent has read the whole spool
            peak = max(peak, agent.ps.memory_info().rss)
            pending = sum(p.stat().st_size for p in (home / "spool" / "logs").glob("*.ndjson"))
            if pending == 0:
                break
            time.sleep(0.5)
        time.sleep(1.0)
        rss = agent.ps.memory_info().rss
        peak = max(peak, rss)
        status, body = agent.get("/api/v1/jobs/flood/log?level=warning&limit=1")
        rows.append({"name": f"agent RSS after a flood of {FLOOD:,} lines ({cap.counts['records']:,} records spooled in "
                             f"{written:.0f} s; peak during {peak / 1e6:.0f} MB; real agent)",
                     "measured": round(rss / 1e6, 1), "unit": "MB", "goal": "<= 80",
                     "peer": "the same agent before the flood", "peer_measured": round(rss0 / 1e6, 1),
                     "pass": rss / 1e6 <= 80 and status == 200})
    finally:
        agent.stop()
    return rows


def run() -> list[dict]:
    rows: list[dict] = []
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="rw-bench-logs-") as tmp:
        work = Path(tmp)
        rows += bench_pipeline(work)
        rows += bench_render(work)
        rows.append(bench_ingest(work))
        rows.append(bench_export(work))
        rows += bench_agent_process(work)
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
