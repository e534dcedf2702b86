"""Helpers for the agent tests: event streams, spool files in the hooks' format, a real OTLP receiver.

Events are built with blender_hooks.events (the real schema); spool segments are written here in
the on-disk format of the contract, independently of the hooks' own writer.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from agent.config import AgentConfig
from blender_hooks.events import encode, make_event
from tests.support.net import free_port


def agent_config(tmp_path: Path, **kw) -> AgentConfig:
    base: dict[str, Any] = dict(host="127.0.0.1", port=0, data_dir=tmp_path / "agent", spool_dir=tmp_path / "spool",
                bsp_schedule_delay_ms=50.0)
    base.update(kw)
    return AgentConfig(**base)


@dataclass
class JobStream:
    """Builds the events of one Blender session rendering one job, with increasing seq."""

    job: str
    session: str = "feedc0de01"
    host: str = field(default_factory=socket.gethostname)
    pid: int = 4242
    scene: str = "Scene"
    engine: str = "CYCLES"
    device: str = "CPU"
    seq: int = 0
    t: float = field(default_factory=time.time)

    def ev(self, type_: str, **fields) -> dict:
        self.seq += 1
        self.t += 0.01
        return make_event(type_, session=self.session, seq=self.seq, job=self.job, host=self.host, pid=self.pid,
                          ts=self.t, **fields)

    def start(self, first: int = 1, last: int = 4, **kw) -> dict:
        return self.ev("job_start", blend_file="/shots/a.blend", scene=self.scene, frame_start=first,
                       frame_end=last, engine=self.engine, device_type=self.device, blender_version="3.4.1",
                       samples=8, resolution_x=64, resolution_y=36, **kw)

    def frame(self, n: int, seconds: float = 0.5, phases: tuple[str, ...] = ("sync", "sampling"),
              saved: bool = True, **kw) -> list[dict]:
        out = [self.ev("frame_start", frame=n)]
        for p in phases:
            out.append(self.ev("phase", frame=n, name=p))
        self.t += seconds
        end = dict(frame=n, seconds=seconds, saved=saved, peak_memory_blender_bytes=150e6,
                   max_rss_bytes=300e6, output_path=f"/shots/frames/f_{n:04d}.png")
        end.update(kw)
        out.append(self.ev("frame_end", **end))
        return out

    def end(self, status: str = "complete") -> dict:
        return self.ev("job_end", status=status)

    def whole(self, frames: int = 4, **kw) -> list[dict]:
        evs = [self.start(1, frames)]
        for n in range(1, frames + 1):
            evs += self.frame(n, **kw)
        evs.append(self.end())
        return evs


def ndjson(events: list[dict]) -> bytes:
    return b"".join(encode(e) for e in events)


def post(url: str, body: bytes, token: str | None = None, content_type: str = "application/x-ndjson",
         timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url.rstrip("/") + "/api/v1/events", data=body, method="POST",
                                 headers={"Content-Type": content_type})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get(url: str, path: str, timeout: float = 10.0, headers: dict | None = None) -> tuple[int, bytes, str]:
    req = urllib.request.Request(url.rstrip("/") + path, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def sample_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of one sample in Prometheus text (labels must match exactly, in any order)."""
    from prometheus_client.parser import text_string_to_metric_families
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and (labels is None or dict(s.labels) == labels):
                return s.value
    return None


# -- spool files in the contract's format ---------------------------------------------------------

def write_segment(spool: Path, session: str, index: int, events: list[dict], append: bool = False) -> Path:
    spool.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = spool / f"{session}.{index:06d}.ndjson"
    with open(path, "ab" if append else "wb") as f:
        f.write(ndjson(events))
    os.chmod(path, 0o600)
    return path


def read_ack(spool: Path, session: str) -> tuple[int, int] | None:
    try:
        a, b = (spool / f"{session}.ack").read_text().split()
        return int(a), int(b)
    except OSError:
        return None


class SessionLock:
    """Holds `<session>.lock` like a live Blender writer does (flock in this process)."""

    def __init__(self, spool: Path, session: str):
        spool.mkdir(parents=True, exist_ok=True)
        self.fd: int | None = os.open(spool / f"{session}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# -- a real OTLP/HTTP receiver --------------------------------------------------------------------

class ServerThread:
    """An aiohttp app on 127.0.0.1 (a free port) in its own thread and event loop, as a context
    manager: subclasses add their routes in `routes(app)`; `.url` is set once it serves."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(10), f"{type(self).__name__} did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        self._loop = asyncio.new_event_loop()

        async def run() -> None:
            self._stop = asyncio.Event()
            app = web.Application()
            self.routes(app)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        self._loop.run_until_complete(run())
        self._loop.close()


class OtlpReceiver(ServerThread):
    """An OTLP/HTTP traces endpoint (aiohttp + opentelemetry-proto) in a thread; collects spans."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[ExportTraceServiceRequest] = []
        self.status = 200

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/traces", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()       # aiohttp already un-gzipped it
        if self.status != 200:
            return web.Response(status=self.status)
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        with self.lock:
            self.requests.append(req)
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def spans(self) -> list:
        with self.lock:
            return [s for r in self.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def wait_for(self, predicate, timeout: float = 15.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans()
            if predicate(spans):
                return spans
            time.sleep(0.05)
        return self.spans()


def attrs(span) -> dict:
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
    return out


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class AgentProcess:
    """`renderwatch agent` as a real subprocess on a fixed port; restartable on the same port and
    home (`env` overrides the environment, e.g. OTEL_* settings)."""

    def __init__(self, home: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "RENDERWATCH_HOME": str(home), "RENDERWATCH_AGENT_LISTEN": f"127.0.0.1:{self.port}",
                    **(env or {})}
        self.log = Path(home) / "agent.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> AgentProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "renderwatch", "agent"], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)
        assert wait_until(self._healthy, timeout=30), self.log.read_text()[-3000:]
        return self

    def _healthy(self) -> bool:
        try:
            return get(self.url, "/healthz", timeout=1)[0] == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye (a no-op when it is not running)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of /metrics (labels must match exactly), None if absent or unreachable."""
        try:
            status, body, _ = get(self.url, "/metrics", timeout=2)
        except OSError:
            return None
        return sample_value(body.decode(), name, labels or None) if status == 200 else None
