"""Agent benchmarks: ingest rate, /metrics scrape time vs node_exporter, steady-state CPU and RSS.

Usage::

    python -m bench agent

Rates are events per CPU-second of the ingesting process (one core; the machines are shared, so
wall-clock rates under-state what one core does). node_exporter is Debian's
prometheus-node-exporter with its default collectors, started on 127.0.0.1 in the same run.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from agent.config import AgentConfig
from agent.ingest import Ingestor
from agent.journal import ExportMark, Journal
from agent.metrics import IngestStats
from agent.state import State
from agent.traces import RenderTracer
from blender_hooks.events import encode, make_event
from tests.support.net import free_port

INGEST_GOAL = 100_000
PHASES = ("sync", "bvh", "sampling", "save")


def job_lines(job: str, session: str, frames: int, pid: int = 4242, t0: float | None = None,
              end: bool = True) -> list[bytes]:
    """The NDJSON lines of one Blender render: job_start, per frame start + phases + end, job_end."""
    t = time.time() - frames if t0 is None else t0
    seq = 0
    host = socket.gethostname()

    def ev(type_: str, **kw: object) -> bytes:
        nonlocal seq, t
        seq += 1
        t += 0.001
        return encode(make_event(type_, session=session, seq=seq, job=job, host=host, pid=pid, ts=t,
                                 scene="Scene", engine="CYCLES", device_type="CPU", **kw)).rstrip(b"\n")
    out = [ev("job_start", blend_file="/shots/a.blend", frame_start=1, frame_end=frames + (0 if end else 10),
              blender_version="3.4.1", samples=16, resolution_x=1920, resolution_y=1080)]
    for n in range(1, frames + 1):
        out.append(ev("frame_start", frame=n))
        out += [ev("phase", frame=n, name=p) for p in PHASES]
        out.append(ev("frame_end", frame=n, seconds=0.5, saved=True, peak_memory_blender_bytes=4.2e8,
                      max_rss_bytes=6.1e8, output_path=f"/shots/frames/f_{n:04d}.png", samples=16))
    if end:
        out.append(ev("job_end", status="complete"))
    return out


def _stream(jobs: int = 20, frames: int = 300) -> list[bytes]:
    lines: list[bytes] = []
    for j in range(jobs):
        lines += job_lines(f"bench-{j}", f"benchsess{j:04d}", frames)
    return lines


class _NullExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def bench_ingest_direct(tracing: str) -> dict:
    """tracing: "off", "spans" (built and batched, exporter discards), "file" (the embedded OTLP-JSON file)."""
    lines = _stream()
    tmp = Path(tempfile.mkdtemp(prefix="rw-bench-"))
    try:
        cfg = AgentConfig(data_dir=tmp, spool_dir=tmp / "spool")
        exporter = _NullExporter() if tracing == "spans" else None
        tracer = RenderTracer(cfg, ExportMark(tmp), exporter) if tracing != "off" else None
        ing = Ingestor(State(), Journal(tmp), IngestStats(), tracer=tracer)
        c0 = time.process_time()
        for i in range(0, len(lines), 1000):
            ing.ingest_lines(lines[i:i + 1000])
        if tracer is not None:
            tracer.shutdown()            # the spans' encoding and file writes count too
        rate = len(lines) / (time.process_time() - c0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    what = {"off": "no tracing", "spans": "incl. building the spans, export discarded",
            "file": "incl. spans exported to the OTLP-JSON file"}[tracing]
    return {"name": f"ingest, direct call ({what})", "measured": round(rate), "unit": "events/s",
            "goal": f">= {INGEST_GOAL}", "pass": rate >= INGEST_GOAL}


class _Agent:
    """A real `renderwatch agent` subprocess in a temporary home."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="rw-bench-agent-"))
        self.port = free_port()
        env = {**os.environ, "RENDERWATCH_HOME": str(self.home)}
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "renderwatch", "--log-level", "WARNING", "agent",
                                      "--listen", f"127.0.0.1:{self.port}"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the agent did not start")

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def get(self, path: str) -> tuple[int, bytes]:
        c = self.conn()
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.home, ignore_errors=True)


def bench_ingest_http(agent: _Agent) -> dict:
    lines = _stream(jobs=10, frames=300)
    bodies = [b"\n".join(lines[i:i + 1000]) + b"\n" for i in range(0, len(lines), 1000)]
    c = agent.conn()
    c0 = agent.cpu()
    for body in bodies:
        c.request("POST", "/api/v1/events", body=body, headers={"Content-Type": "application/x-ndjson"})
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
    time.sleep(1.5)                      # let the span batches reach the file (their CPU counts)
    rate = len(lines) / (agent.cpu() - c0)
    c.close()
    return {"name": "ingest over HTTP (NDJSON x1000, spans on), per agent CPU-second", "measured": round(rate),
            "unit": "events/s", "goal": f">= {INGEST_GOAL}", "pass": rate >= INGEST_GOAL}


def _scrape_ms(host: str, port: int, path: str = "/metrics", n: int = 40) -> float:
    c = http.client.HTTPConnection(host, port, timeout=30)
    times = []
    try:
        for i in range(n + 3):
            t0 = time.perf_counter()
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            if i >= 3:                    # warm-up scrapes excluded
                times.append(time.perf_counter() - t0)
    finally:
        c.close()
    return statistics.median(times) * 1000


def bench_scrape(agent: _Agent) -> dict:
    c = agent.conn()
    for j in range(50):                  # 50 live jobs, mid-render
        body = b"\n".join(job_lines(f"live-{j}", f"livesess{j:04d}", 20, end=False)) + b"\n"
        c.request("POST", "/api/v1/events", body=body)
        r = c.getresponse()
        r.read()
    c.close()
    ours = _scrape_ms("127.0.0.1", agent.port)
    peer = None
    exe = shutil.which("prometheus-node-exporter")
    if exe:
        port = free_port()
        ne = subprocess.Popen([exe, f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            peer = _scrape_ms("127.0.0.1", port)
        finally:
            ne.terminate()
            ne.wait(10)
    return {"name": "/metrics scrape, 50 live jobs (median)", "measured": round(ours, 2), "unit": "ms",
            "goal": "<= node_exporter", "peer": "prometheus-node-exporter (defaults)",
            "peer_measured": round(peer, 2) if peer is not None else None,
            "pass": peer is not None and ours <= peer}


def bench_steady_state(seconds: float = 20.0) -> list[dict]:
    """An idle agent sampling at 1 Hz with one live job whose 'Blender' (a sleeping process) it watches."""
    agent = _Agent()
    blender = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lines = job_lines("steady", "steadysess1", 3, pid=blender.pid, t0=time.time() - 3, end=False)
        c = agent.conn()
        c.request("POST", "/api/v1/events", body=b"\n".join(lines) + b"\n")
        c.getresponse().read()
        c.close()
        time.sleep(3)
        c0, t0 = agent.cpu(), time.monotonic()
        time.sleep(seconds)
        cpu = (agent.cpu() - c0) / (time.monotonic() - t0) * 100
        rss = agent.ps.memory_info().rss / 1e6
    finally:
        blender.kill()
        blender.wait()
        agent.stop()
    return [
        {"name": f"steady state, 1 Hz sampling, 1 live job ({seconds:.0f} s): CPU", "measured": round(cpu, 3),
         "unit": "% of a core", "goal": "<= 0.5", "pass": cpu <= 0.5},
        {"name": "steady state: agent RSS", "measured": round(rss, 1), "unit": "MB", "goal": "<= 80",
         "pass": rss <= 80},
    ]


class _OtlpSizeExporter(SpanExporter):
    """Encodes each batch as the OTLP exporter would (ExportTraceServiceRequest) and keeps its size."""

    def __init__(self) -> None:
        self.bytes = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        self.bytes += len(encode_spans(spans).SerializeToString())
        return SpanExportResult.SUCCESS


def _long_job_worker(frames: int, jobs: int) -> dict:
    """In a fresh process: ingest `jobs` jobs of `frames` frames (interleaved, 1,000-event batches as
    the hooks' sender posts them), spans encoded as OTLP protobuf; CPU per event, RSS, span bytes."""
    import resource
    per_job = [job_lines(f"len-{j}", f"lensess{j:04d}", frames, t0=1_700_000_000.0) for j in range(jobs)]
    lines = [ln for group in zip(*per_job, strict=False) for ln in group] if jobs > 1 else per_job[0]
    tmp = Path(tempfile.mkdtemp(prefix="rw-bench-len-"))
    try:
        cfg = AgentConfig(data_dir=tmp, spool_dir=tmp / "spool")
        sizes = _OtlpSizeExporter()
        tracer = RenderTracer(cfg, ExportMark(tmp), sizes)
        state = State()
        ing = Ingestor(state, Journal(tmp), IngestStats(), tracer=tracer)
        rss0 = psutil.Process().memory_info().rss
        c0 = time.process_time()
        for i in range(0, len(lines), 1000):
            ing.ingest_lines(lines[i:i + 1000])
        tracer.shutdown()
        cpu = time.process_time() - c0
        rss = psutil.Process().memory_info().rss
        done = sum(j.frames_done for j in state.jobs.values())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"us_per_event": cpu / len(lines) * 1e6, "rss_mb": rss / 1e6, "rss_growth_mb": (rss - rss0) / 1e6,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, "span_bytes": sizes.bytes,
            "frames_done": done, "frames": frames * jobs}


def _run_worker(frames: int, jobs: int = 1) -> dict:
    import json
    out = subprocess.run([sys.executable, "-m", "bench.bench_agent", "--long-job", str(frames), str(jobs)],
                         capture_output=True, text=True, timeout=900, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


TEMPO_MAX_BYTES_PER_TRACE = 5_000_000


def bench_long_jobs() -> list[dict]:
    """Ingest cost per event and memory across job lengths and with 50 jobs at once; bytes of spans
    per frame and per job against Tempo's per-trace limit. The 100-frame job is the peer (flat goal)."""
    rows: list[dict] = []
    base = _run_worker(100)
    for frames, jobs in ((100, 1), (1_000, 1), (10_000, 1), (1_000, 50)):
        r = base if (frames, jobs) == (100, 1) else _run_worker(frames, jobs)
        assert r["frames_done"] == r["frames"], r
        what = f"{frames:,}-frame job" if jobs == 1 else f"{jobs} jobs x {frames:,} frames at once"
        peer = "100-frame job, same run"
        rows.append({"name": f"agent ingest per event (spans encoded as OTLP), {what}",
                     "measured": round(r["us_per_event"], 1), "unit": "us", "goal": "flat: <= 1.5x peer",
                     "peer": peer, "peer_measured": round(base["us_per_event"], 1),
                     "pass": r["us_per_event"] <= 1.5 * base["us_per_event"]})
        rows.append({"name": f"agent RSS growth ingesting the {what}", "measured": round(r["rss_growth_mb"], 1),
                     "unit": "MB", "goal": "<= 40", "peer": peer, "peer_measured": round(base["rss_growth_mb"], 1),
                     "pass": r["rss_growth_mb"] <= 40})
        per_job = r["span_bytes"] / jobs
        rows.append({"name": f"bytes of spans per job (OTLP protobuf), {what}", "measured": round(per_job),
                     "unit": "B", "goal": f"< {TEMPO_MAX_BYTES_PER_TRACE:,} (Tempo max_bytes_per_trace)",
                     "peer": peer, "peer_measured": round(base["span_bytes"]),
                     "pass": per_job < TEMPO_MAX_BYTES_PER_TRACE})
        rows.append({"name": f"bytes of spans per frame, {what}", "measured": round(per_job / frames),
                     "unit": "B", "goal": "-", "peer": peer, "peer_measured": round(base["span_bytes"] / 100),
                     "pass": None})
    r = _run_worker(100_000)
    rows.append({"name": "bytes of spans per job, 100,000-frame job (frames past the budget summarised)",
                 "measured": r["span_bytes"], "unit": "B", "goal": f"< {TEMPO_MAX_BYTES_PER_TRACE:,}",
                 "peer": "100-frame job, same run", "peer_measured": base["span_bytes"],
                 "pass": r["span_bytes"] < TEMPO_MAX_BYTES_PER_TRACE})
    return rows


def run() -> list[dict]:
    rows = [bench_ingest_direct("off"), bench_ingest_direct("spans"), bench_ingest_direct("file")]
    rows += bench_long_jobs()
    agent = _Agent()
    try:
        rows.append(bench_ingest_http(agent))
    finally:
        agent.stop()
    agent = _Agent()
    try:
        rows.append(bench_scrape(agent))
    finally:
        agent.stop()
    rows += bench_steady_state()
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--long-job"]:
        import json
        print(json.dumps(_long_job_worker(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        for row in run():
            print(row)
