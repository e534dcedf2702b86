"""Incidents: crash → Sentry event delivered, crash → webhook delivered, emit() latency while a target hangs.

Everything is real and local: sentry-sdk's own HTTP transport and urllib deliveries to receivers on
127.0.0.1 (stdlib HTTP servers in threads). Latency is measured from the `emit()` call to the moment
the receiver has parsed the request.

Usage::

    python -m bench incidents
"""

from __future__ import annotations

import gzip
import json
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import sentry_sdk
from prometheus_client import CollectorRegistry
from sentry_sdk.envelope import Envelope

from healer.diagnosis.errors import RenderError, SegfaultError
from healer.incidents.dispatch import Incidents

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "blender-logs"
GOAL_DELIVERY_MS = 1000.0


class _Receiver:
    """Records (arrival time, key) for each request; `key_of(path, body)` names what arrived."""

    def __init__(self, key_of: Callable[[str, bytes], list[str]]) -> None:
        self.arrived: dict[str, float] = {}
        self.cv = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True   # else the 2-byte reply waits ~40 ms on the client's delayed ACK

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                now = time.perf_counter()
                with owner.cv:
                    for k in key_of(self.path, body):
                        owner.arrived.setdefault(k, now)
                    owner.cv.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, key: str, timeout: float = 5.0) -> float | None:
        deadline = time.monotonic() + timeout
        with self.cv:
            while key not in self.arrived:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)
            return self.arrived[key]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _sentry_keys(path: str, body: bytes) -> list[str]:
    keys = []
    for item in Envelope.deserialize(body).items:
        if item.headers.get("type") == "event" and item.payload.json:
            ev = item.payload.json
            vals = (ev.get("exception") or {}).get("values") or []
            keys.append(vals[-1]["value"] if vals else str(ev.get("message", "")))
    return keys


def _webhook_keys(path: str, body: bytes) -> list[str]:
    try:
        doc = json.loads(body)
        return [str((doc.get("job") or {}).get("id") or doc.get("id"))]
    except ValueError:
        return [body[:64].decode("latin-1")]


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def _crash_info(i: int, crash: Path) -> tuple[dict, RenderError]:
    log = SHARED / "segfault_3.4.log"
    lines = log.read_text().splitlines() if log.exists() else [f"Fra:{i} Mem:1.00M | Sample 1/16"] * 120
    info = {"job": f"bench-{i}", "scene": "/mnt/projects/shot010/monkey.blend", "host": "bench", "frames": [1, 4],
            "frames_completed": [1, 2], "frame": 3, "attempt": 1, "log_tail": (lines * 5)[-500:],
            "render_settings": {"engine": "CYCLES", "samples": 16}}
    return info, SegfaultError(summary=f"SIGSEGV #{i}", frame=3, exit_signal=11, crash_file=str(crash))


def bench_sentry(n: int, crash: Path) -> tuple[list[float], list[float]]:
    """emit() → event delivered, through Incidents; and a bare sentry-sdk capture_event as the peer."""
    rx = _Receiver(_sentry_keys)
    dsn = f"http://0123456789abcdef0123456789abcdef@127.0.0.1:{rx.port}/1"
    inc = Incidents.from_config({}, registry=CollectorRegistry(), env={"SENTRY_DSN": dsn})
    ours, bare = [], []
    try:
        for i in range(n):
            info, err = _crash_info(i, crash)
            t0 = time.perf_counter()
            inc.emit("render.crashed", info, err)
            t1 = rx.wait(err.summary)
            if t1 is not None:
                ours.append((t1 - t0) * 1000)
        client = sentry_sdk.Client(dsn=dsn, default_integrations=False, auto_enabling_integrations=False)
        for i in range(n):
            t0 = time.perf_counter()
            client.capture_event({"exception": {"values": [{"type": "Segfault", "value": f"bare #{i}"}]}})
            t1 = rx.wait(f"bare #{i}")
            if t1 is not None:
                bare.append((t1 - t0) * 1000)
        client.close(timeout=1)
    finally:
        inc.close(2)
        rx.close()
    return ours, bare


def bench_webhook(n: int, tmp: Path) -> tuple[list[float], list[float]]:
    """emit() → webhook delivered (outbox file, HMAC, POST); a bare urllib POST as the peer."""
    rx = _Receiver(_webhook_keys)
    url = f"http://127.0.0.1:{rx.port}/hook"
    inc = Incidents.from_config({"webhooks": [{"name": "bench", "url": url, "secret": "s3cret-bench"}],
                                 "outbox": str(tmp / "outbox")}, registry=CollectorRegistry(), env={})
    ours, bare = [], []
    try:
        for i in range(n):
            info, err = _crash_info(i, tmp / "none.crash.txt")
            t0 = time.perf_counter()
            inc.emit("render.crashed", info, err)
            t1 = rx.wait(f"bench-{i}")
            if t1 is not None:
                ours.append((t1 - t0) * 1000)
        for i in range(n):
            body = json.dumps({"version": "1", "job": {"id": f"bare-{i}"}}).encode()
            t0 = time.perf_counter()
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                r.read()
            t1 = rx.wait(f"bare-{i}")
            if t1 is not None:
                bare.append((t1 - t0) * 1000)
    finally:
        inc.close(2)
        rx.close()
    return ours, bare


def bench_emit_while_hanging(n: int, tmp: Path) -> tuple[list[float], list[float]]:
    """A supervision loop ticking every 5 ms and emitting each tick: emit() time with a healthy target
    vs. a target that accepts connections and never answers."""
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(1024)
    rx = _Receiver(_webhook_keys)
    results: dict[str, list[float]] = {}
    try:
        for label, url in (("healthy", f"http://127.0.0.1:{rx.port}/hook"),
                           ("hanging", f"http://127.0.0.1:{hang.getsockname()[1]}/hook")):
            inc = Incidents.from_config({"webhooks": [{"name": label, "url": url, "timeout_s": 30}],
                                         "outbox": str(tmp / f"outbox-{label}")}, registry=CollectorRegistry(),
                                        env={})
            times = []
            for i in range(n):
                t0 = time.perf_counter()
                inc.emit("render.restarted", {"job": f"{label}-{i}", "attempt": i})
                times.append((time.perf_counter() - t0) * 1e6)
                time.sleep(0.005)
            inc.close(0.2)
            results[label] = times
    finally:
        hang.close()
        rx.close()
    return results["hanging"], results["healthy"]


def run(n: int = 30, ticks: int = 300) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="rw-bench-incidents-") as d:
        tmp = Path(d)
        crash = SHARED / "segfault_3.4.crash.txt"
        if not crash.exists():
            crash = tmp / "monkey.crash.txt"
            crash.write_text('# Blender 3.4.1, Unknown revision\n\n# backtrace\n\n# Python backtrace\n'
                             '  File "/mnt/pipeline/hooks/seg.py", line 3 in pre\n')
        ours, bare = bench_sentry(n, crash)
        p99 = _pct(ours, 99) if ours else None
        rows.append({"name": f"crash → Sentry event delivered (p99 of {n}; p50 {statistics.median(ours):.1f} ms)"
                     if ours else "crash → Sentry event delivered", "measured": p99, "unit": "ms",
                     "goal": f"≤ {GOAL_DELIVERY_MS:.0f} ms", "peer": "bare sentry-sdk capture_event",
                     "peer_measured": _pct(bare, 99) if bare else None,
                     "pass": p99 is not None and len(ours) == n and p99 <= GOAL_DELIVERY_MS})
        ours, bare = bench_webhook(n, tmp)
        p99 = _pct(ours, 99) if ours else None
        rows.append({"name": f"crash → signed webhook delivered (p99 of {n}; p50 {statistics.median(ours):.1f} ms)"
                     if ours else "crash → webhook delivered", "measured": p99, "unit": "ms",
                     "goal": f"≤ {GOAL_DELIVERY_MS:.0f} ms", "peer": "bare urllib POST",
                     "peer_measured": _pct(bare, 99) if bare else None,
                     "pass": p99 is not None and len(ours) == n and p99 <= GOAL_DELIVERY_MS})
        hanging, healthy = bench_emit_while_hanging(ticks, tmp)
        h99, ok99 = _pct(hanging, 99), _pct(healthy, 99)
        rows.append({"name": f"supervision loop: emit() p99 while a webhook target hangs ({ticks} ticks)",
                     "measured": h99, "unit": "µs", "goal": "unchanged (≤ 2× healthy + 50 µs)",
                     "peer": "same loop, healthy target", "peer_measured": ok99,
                     "pass": h99 <= 2 * ok99 + 50})
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
