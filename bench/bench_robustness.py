"""Robustness: >= 100,000 generated inputs per target, crashes counted (goal 0), every rejection a clear reason.

Targets (the real code, in process): the event decoder (blender_hooks.events.decode), the agent's
ingest path (agent.ingest.Ingestor over a real journal, plus a real agent over HTTP), the
classifier (healer.classify), the crash-file parser (healer.crashfile), the ledger's output
verification (healer.outputs.verify_image on real files) and the Alertmanager payload parser
(healer.alerts). Inputs come from a seeded generator (random bytes, random JSON, valid inputs
with one field mutated, real Blender logs / crash files / PNGs with bytes flipped, inserted and
cut), so a failing input is reproducible from the seed printed in the row.

What a crash and an unclear rejection are is fuzz.oracle's to say (the judge shared with the fuzz
targets and tests/fuzz/test_robustness.py): a crash is any exception other than the target's
documented rejection (EventError, PayloadError), a broken promise about the result, or an HTTP 5xx. Inputs known to hang the agent (an unbounded job_start frame range, see
tests/fuzz/test_robustness.py::test_job_start_frame_range_bounded) are not generated.

Also: /healthz latency of a real agent while four clients post 1 MiB of invalid NDJSON each
(`healthz_under_junk`; the event loop must stay free while bodies are decoded).

Usage::

    python -m bench robustness
    RENDERWATCH_BENCH_ROBUSTNESS_INPUTS=10000 python -m bench robustness     # a quicker run
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import struct
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from blender_hooks.events import encode, make_event
from fuzz import oracle
from fuzz.mutations import mutate_bytes

ENV_INPUTS = "RENDERWATCH_BENCH_ROBUSTNESS_INPUTS"
SEED = 20260101
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "blender-logs"
HTTP_INPUTS = 3000


# -- generators ---------------------------------------------------------------------------------------------------
def rand_bytes(r: random.Random, n: int = 256) -> bytes:
    return r.randbytes(r.randrange(n))


def rand_json(r: random.Random, depth: int = 0) -> object:
    k = r.randrange(9 if depth < 3 else 6)
    if k == 0:
        return None
    if k == 1:
        return r.random() < 0.5
    if k == 2:
        return r.choice([0, 1, -1, 2**31, -(2**63), 2**64, 10**30, 10**400, r.randrange(-10**6, 10**6)])
    if k == 3:
        return r.choice([0.0, -0.5, 1e308, 1.5, r.uniform(-1e9, 1e9)])
    if k in (4, 5):
        return r.choice(["", "x", "sampling", "complete", "CPU", "\u0000", "\ud7ff", "é" * 5, "a" * r.randrange(5000)])
    if k in (6, 7):
        return [rand_json(r, depth + 1) for _ in range(r.randrange(4))]
    return {r.choice(["v", "type", "seq", "a", ""]): rand_json(r, depth + 1) for _ in range(r.randrange(4))}


_TYPES = {
    "job_start": dict(blend_file="/s.blend", scene="s", frame_start=1, frame_end=3, engine="CYCLES",
                      device_type="CPU", blender_version="3.4.1"),
    "frame_start": dict(frame=1), "phase": dict(frame=1, name="sampling"),
    "frame_end": dict(frame=1, seconds=1.5, saved=True), "job_end": dict(status="complete"),
}
_FRAME_KEYS = ("frame_start", "frame_end", "frame_step")


def mutated_event(r: random.Random, seq: int, session: str = "abcdef12") -> dict:
    type_ = r.choice(list(_TYPES))
    ev = make_event(type_, session=session, seq=seq, job=f"j{r.randrange(50)}", host="h", pid=1,
                    ts=time.time(), **_TYPES[type_])
    for _ in range(r.randrange(3)):
        key = r.choice([*ev, "extra", "peak_vram_bytes", "output_path"])
        if r.random() < 0.2:
            ev.pop(key, None)
        elif key in ("ts", "seconds", "seq", "pid", "frame") and r.random() < 0.3:
            ev[key] = r.choice([2**63, -(2**63) - 1, 10**30, 10**400, 1e308, -1e308, 0])   # numbers at the edges
        elif key in _FRAME_KEYS:
            ev[key] = r.randrange(-1000, 1000)     # an unbounded range hangs the agent: reported, not fuzzed
        else:
            ev[key] = rand_json(r)
    return ev


def event_input(r: random.Random, i: int) -> bytes:
    k = r.randrange(10)
    if k < 2:
        return rand_bytes(r)
    if k < 4:
        return json.dumps(rand_json(r)).encode()
    if k < 9:
        return json.dumps(mutated_event(r, i + 1)).encode()
    return encode(make_event("frame_start", session="abcdef12", seq=i + 1, job="j", host="h", pid=1, frame=1))




def _real_lines() -> list[bytes]:
    lines: list[bytes] = []
    for p in sorted(SHARED.glob("*.log")) if SHARED.is_dir() else []:
        lines += p.read_bytes().splitlines(keepends=True)
    return lines or [b"Fra:1 Mem:10.00M (Peak 10.00M) | Time:00:00.10 | Sample 1/8\n", b"Saved: '/x/f_0001.png'\n"]


# -- the runner ---------------------------------------------------------------------------------------------------
class Tally:
    def __init__(self, name: str) -> None:
        self.name, self.inputs, self.crashes, self.unclear, self.rejected = name, 0, 0, 0, 0
        self.first_crash: str | None = None
        self.crash_kinds: dict[str, int] = {}
        self.seconds = 0.0

    def crash(self, i: int, e: BaseException) -> None:
        self.crashes += 1
        kind = f"{type(e).__name__} at {traceback.extract_tb(e.__traceback__)[-1].filename.rsplit('/', 2)[-2:]}"
        self.crash_kinds[kind] = self.crash_kinds.get(kind, 0) + 1
        if self.first_crash is None:
            self.first_crash = f"input #{i} (seed {SEED}): {type(e).__name__}: {str(e)[:120]}"

    def rows(self) -> list[dict]:
        rate = self.inputs / self.seconds if self.seconds else 0.0
        detail = "; ".join(f"{k} x{n}" for k, n in sorted(self.crash_kinds.items(), key=lambda kv: -kv[1])[:3])
        return [
            {"name": f"{self.name}: crashes in {self.inputs} generated inputs ({self.rejected} rejected)",
             "measured": self.crashes, "unit": "crashes", "goal": 0, "peer": None, "peer_measured": None,
             "pass": self.crashes == 0 and self.inputs >= min(100_000, n_inputs()),
             "detail": (self.first_crash + (f" | {detail}" if detail else "")) if self.first_crash else ""},
            {"name": f"{self.name}: rejections without a clear reason", "measured": self.unclear, "unit": "inputs",
             "goal": 0, "peer": None, "peer_measured": None, "pass": self.unclear == 0},
            {"name": f"{self.name}: throughput", "measured": round(rate, 1), "unit": "inputs/s", "goal": None,
             "peer": None, "peer_measured": None, "pass": None},
        ]


def n_inputs() -> int:
    return int(os.environ.get(ENV_INPUTS) or 100_000)


def drive(name: str, n: int, make: Callable[[random.Random, int], object], check: Callable[[object, Tally], None]) -> Tally:
    r = random.Random(f"{SEED}-{name}")
    t = Tally(name)
    inputs = [make(r, i) for i in range(min(n, 5000))]       # generation is not what we time
    t0 = time.perf_counter()
    for i in range(n):
        if i and i % len(inputs) == 0:
            t.seconds += time.perf_counter() - t0
            inputs = [make(r, i + k) for k in range(min(n - i, 5000))]
            t0 = time.perf_counter()
        t.inputs += 1
        try:
            check(inputs[i % len(inputs)], t)
        except Exception as e:  # noqa: BLE001 - counting crashes is the point
            t.crash(i, e)
    t.seconds += time.perf_counter() - t0
    return t


# -- targets ------------------------------------------------------------------------------------------------------
def judged(t: Tally, judge: Callable[[], bool]) -> None:
    """Count the oracle's verdict: a clear rejection, an unclear one; a broken promise is a crash (raised)."""
    try:
        t.rejected += judge()
    except oracle.Unclear:
        t.rejected += 1
        t.unclear += 1


def check_decode(data: object, t: Tally) -> None:
    judged(t, lambda: oracle.event(data))  # type: ignore[arg-type]


def bench_ingest(n: int, tmp: Path) -> Tally:
    from agent.ingest import Ingestor
    from agent.journal import Journal
    from agent.metrics import IngestStats
    from agent.state import State

    ing = Ingestor(State(), Journal(tmp / "journal"), IngestStats())

    def make(r: random.Random, i: int) -> object:
        return [event_input(r, i * 4 + k) for k in range(r.randrange(1, 4))]

    def check(lines: object, t: Tally) -> None:
        res = ing.ingest_lines(lines)  # type: ignore[arg-type]
        t.rejected += res.rejected
        t.unclear += oracle.unclear_errors(res.errors)

    return drive("agent ingest (Ingestor + journal)", n, make, check)


def bench_http(n: int, tmp: Path) -> Tally:
    from agent.app import run_in_thread
    from agent.config import AgentConfig

    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    h = run_in_thread(AgentConfig(host="127.0.0.1", port=0, data_dir=tmp / "http", spool_dir=tmp / "http-spool",
                                  traces_enabled=False, max_body_bytes=64 * 1024))
    port = int(h.url.rsplit(":", 1)[1])
    conn = [http.client.HTTPConnection("127.0.0.1", port, timeout=10)]

    def make(r: random.Random, i: int) -> object:
        k = r.randrange(4)
        if k == 0:
            return rand_bytes(r, 2048), "application/octet-stream"
        if k == 1:
            return json.dumps([rand_json(r) for _ in range(r.randrange(4))]).encode(), "application/json"
        return b"\n".join(event_input(r, i * 4 + j) for j in range(r.randrange(1, 4))), "application/x-ndjson"

    def check(item: object, t: Tally) -> None:
        body, ctype = item  # type: ignore[misc]
        try:
            conn[0].request("POST", "/api/v1/events", body=body, headers={"Content-Type": ctype})
            resp = conn[0].getresponse()
            raw = resp.read()
        except (http.client.HTTPException, OSError):
            conn[0].close()
            conn[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            raise
        if resp.status >= 500 or resp.status not in (200, 400, 413):
            raise RuntimeError(f"HTTP {resp.status}: {raw[:80]!r}")
        judged(t, lambda: oracle.ingest_reply(resp.status, json.loads(raw)))

    try:
        return drive("agent HTTP POST /api/v1/events", n, make, check)
    finally:
        conn[0].close()
        h.stop()


def bench_classify(n: int) -> Tally:
    from healer.diagnosis.classify import LogScanner

    real = _real_lines()

    def make(r: random.Random, i: int) -> object:
        lines = []
        for _ in range(r.randrange(1, 12)):
            src = r.choice(real) if r.random() < 0.7 else rand_bytes(r, 120)
            if r.random() < 0.5:
                src = mutate_bytes(src, r, r.randrange(1, 4))
            lines.append(src.decode("utf-8", errors="replace"))
        return lines, r.choice([None, 0, 1, 3, 134, 137, 139, -6, -9, -11, r.randrange(-300, 300)]), \
            (rand_bytes(r, 300) if r.random() < 0.1 else None)

    def check(item: object, t: Tally) -> None:
        lines, code, crash = item  # type: ignore[misc]
        s = LogScanner()
        for line in lines:
            s.feed(line)
        err = s.finish(code, crash_text=crash)
        try:
            oracle.classification(err)
        except oracle.Broken:
            t.unclear += 1

    return drive("classifier (LogScanner.feed/finish)", n, make, check)


def bench_crashfile(n: int) -> Tally:
    from healer.diagnosis.crashfile import parse_crash_file

    real_path = SHARED / "segfault_3.4.crash.txt"
    real = real_path.read_bytes() if real_path.exists() else b"# Blender 3.4.1\n# backtrace\n./blender(+0x1) [0x1]\n"

    def make(r: random.Random, i: int) -> object:
        k = r.randrange(3)
        if k == 0:
            return rand_bytes(r, 1024)
        return mutate_bytes(real, r, r.randrange(1, 20))

    def check(data: object, t: Tally) -> None:
        rep = parse_crash_file(data)  # type: ignore[arg-type]
        try:
            t.rejected += oracle.crash_report(rep)
        except oracle.Broken:
            t.unclear += 1

    return drive("crash-file parser", n, make, check)


def _real_png(tmp: Path) -> bytes:
    """A frame rendered by the real Blender 3.4 when there is one, else a minimal valid PNG."""
    import subprocess
    import zlib

    from renderwatch.scenes import create_demo_scene, find_blender

    exe = find_blender()
    if exe:
        try:
            scene = create_demo_scene(tmp / "s.blend", frames=1, samples=2, width=64, height=36)
            subprocess.run([exe, "-b", str(scene), "-o", str(tmp / "f_####"), "-F", "PNG", "-f", "1"],
                           capture_output=True, timeout=120, check=True)
            return (tmp / "f_0001.png").read_bytes()
        except Exception:  # noqa: BLE001
            pass

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\0" + b"\x80\x80\x80" * 8 for _ in range(8))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def bench_verify(n: int, tmp: Path) -> Tally:
    from healer.images.verify import verify_image

    png = _real_png(tmp)
    paths = {s: tmp / f"f{s}" for s in (".png", ".jpg", ".exr", ".tif")}

    def exr(r: random.Random) -> bytes:
        b = b"\x76\x2f\x31\x01" + struct.pack("<I", r.choice([2, 0x200, 0x1002]))
        for name, typ, value in r.sample([
            (b"compression", b"compression", bytes([r.randrange(10)])),
            (b"dataWindow", b"box2i", struct.pack("<4i", 0, 0, r.randrange(64), r.randrange(64))),
            (b"chunkCount", b"int", struct.pack("<i", r.randrange(1, 64))),
            (b"tiles", b"tiledesc", r.randbytes(9)),
        ], r.randrange(0, 4)):
            b += name + b"\0" + typ + b"\0" + struct.pack("<i", len(value)) + value
        return b + b"\0" + r.randbytes(r.randrange(600))

    def make(r: random.Random, i: int) -> object:
        k = r.randrange(5)
        if k == 0:
            return ".png", png[:r.randrange(len(png))], "truncated"
        if k == 1:
            return ".png", mutate_bytes(png, r, r.randrange(1, 6)), None
        if k == 2:
            return ".exr", exr(r), None
        if k == 3:
            return ".jpg", b"\xff\xd8" + r.randbytes(r.randrange(200)), None
        return r.choice(list(paths)), rand_bytes(r, 400), None

    def check(item: object, t: Tally) -> None:
        suffix, data, expect = item  # type: ignore[misc]
        p = paths[suffix]
        p.write_bytes(data)
        v = verify_image(p)
        judged(t, lambda: oracle.verification(v))
        if v.ok and expect == "truncated":
            t.unclear += 1          # a truncated real PNG judged complete: worse than unclear
            raise AssertionError(f"truncated PNG ({len(data)} of {len(png)} bytes) judged complete")

    return drive("output verification (verify_image)", n, make, check)


def bench_alerts(n: int) -> Tally:
    def make(r: random.Random, i: int) -> object:
        if r.random() < 0.3:
            return rand_json(r)
        alerts = []
        for _ in range(r.randrange(4)):
            a = {"status": r.choice(["firing", "resolved", "x"]),
                 "labels": {r.choice(["alertname", "job", "uuid", "gpu"]): r.choice(["RenderStalled", "GPUOverheating", "j"])
                            for _ in range(r.randrange(4))},
                 "startsAt": r.choice(["", "2026-01-01T00:00:00Z", None]), "fingerprint": r.choice(["", "ab"])}
            if r.random() < 0.3:
                a[r.choice(list(a))] = rand_json(r)
            alerts.append(a)
        doc = {"version": r.choice(["4", "4", "3", 4]), "status": r.choice(["firing", "resolved"]),
               "receiver": "healer", "alerts": alerts}
        if r.random() < 0.2:
            doc[r.choice(list(doc))] = rand_json(r)
        return doc

    def check(obj: object, t: Tally) -> None:
        judged(t, lambda: oracle.alert_payload(obj))

    return drive("Alertmanager payload (parse_notification + decide)", n, make, check)


JUNK_CLIENTS = 4
JUNK_BYTES = 1 << 20
GOAL_HEALTHZ_UNDER_JUNK_MS = 250.0


def healthz_under_junk(tmp: Path, seconds: float = 8.0) -> list[dict]:
    """/healthz latency of a real `renderwatch agent` subprocess while JUNK_CLIENTS clients post 1 MiB of
    invalid NDJSON each, again and again (issue 28: 2.5-4.5 s when decoding ran on the event loop)."""
    import socket
    import subprocess
    import sys
    import threading

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RENDERWATCH_", "OTEL_"))}
    env["RENDERWATCH_HOME"] = str(tmp / "junk-home")
    agent = subprocess.Popen([sys.executable, "-m", "renderwatch", "--log-level", "ERROR", "agent", "--listen",
                              f"127.0.0.1:{port}", "--data-dir", str(tmp / "junk-agent"),
                              "--spool-dir", str(tmp / "junk-spool")],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def get_healthz(timeout: float) -> float:
        t0 = time.perf_counter()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", "/healthz")
        c.getresponse().read()
        c.close()
        return time.perf_counter() - t0

    junk = b"x\n" * (JUNK_BYTES // 2)
    stop = threading.Event()
    posts: list[float] = []

    def flood() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            c.request("POST", "/api/v1/events", body=junk, headers={"Content-Type": "application/x-ndjson"})
            c.getresponse().read()
            c.close()
            posts.append(time.perf_counter() - t0)

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                get_healthz(2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the agent did not start") from None
                time.sleep(0.1)
        clients = [threading.Thread(target=flood, daemon=True) for _ in range(JUNK_CLIENTS)]
        for t in clients:
            t.start()
        lat: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            lat.append(get_healthz(60))
            time.sleep(0.05)
        stop.set()
        for t in clients:
            t.join(120)
    finally:
        agent.terminate()
        agent.wait(20)
    lat.sort()
    p50, p99 = lat[len(lat) // 2] * 1000, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    what = f"{JUNK_CLIENTS} clients posting {JUNK_BYTES >> 20} MiB of invalid NDJSON each"
    return [
        {"name": f"agent /healthz p50 while {what}", "measured": round(p50, 1), "unit": "ms", "goal": None,
         "peer": None, "peer_measured": None, "pass": None},
        {"name": f"agent /healthz p99 while {what} ({len(lat)} probes)", "measured": round(p99, 1), "unit": "ms",
         "goal": GOAL_HEALTHZ_UNDER_JUNK_MS, "peer": None, "peer_measured": None,
         "pass": p99 <= GOAL_HEALTHZ_UNDER_JUNK_MS},
        {"name": f"agent: one junk POST answered in (median, {len(posts)} posts)",
         "measured": round(sorted(posts)[len(posts) // 2] * 1000, 1) if posts else None, "unit": "ms",
         "goal": None, "peer": None, "peer_measured": None, "pass": None},
    ]


def run() -> list[dict]:
    n = n_inputs()
    logging.disable(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory(prefix="rw-bench-robust-") as d:
            tmp = Path(d)
            tallies = [
                drive("event decoder (events.decode)", n, event_input, check_decode),
                bench_ingest(n, tmp),
                bench_http(min(n, HTTP_INPUTS), tmp),
                bench_classify(n),
                bench_crashfile(n),
                bench_verify(n, tmp),
                bench_alerts(n),
            ]
    finally:
        logging.disable(logging.NOTSET)
    rows: list[dict] = []
    for t in tallies:
        got = t.rows()
        if t.name.startswith("agent HTTP"):     # fewer inputs by design (a real socket round trip each)
            got[0]["pass"] = t.crashes == 0
        rows += got
    with tempfile.TemporaryDirectory(prefix="rw-bench-junk-") as d:
        rows += healthz_under_junk(Path(d))
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
