"""Blender hooks: what they cost a render, and what one event costs inside Blender's Python.

(a) Overhead: the same 8-frame Cycles render with and without the hooks (`--python startup.py`,
    delivering to a stand-in agent), alternating runs (ABBA), median wall-time ratio. Goal <= 1.01;
    the peer is the same render without hooks. Done on every Blender of the version matrix set up
    here (renderwatch.matrix; RENDERWATCH_BLENDER_VERSIONS=4.5 for one).
(c) Exit: seconds from the last frame's `Saved:` line to Blender's exit with the hooks delivering to
    an agent that accepts and never answers, beside the same Blender without hooks. Goal <= 1 s.
(b) Per-event cost: inside a real Blender, the real handler functions are called for many frames
    (render_init, then per frame render_pre, the 16 stats strings Blender 5.0 reports, render_post,
    render_write; render_complete) with the agent stopped, each call timed with perf_counter.
    Median over the calls that emitted an event (goal <= 20 us) and the worst call of all (goal
    <= 1 ms), including the first event (which opens the spool) and segment rotations.

Usage::

    python -m bench hooks          # or: python -m bench.bench_hooks
    RENDERWATCH_BENCH_RUNS=3 python -m bench hooks   # fewer overhead pairs (default 5)
"""

from __future__ import annotations

import http.server
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from renderwatch.hooks import STARTUP
from renderwatch.scenes import create_demo_scene

REPO = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("RENDERWATCH_BENCH_RUNS", "5"))
EVENT_FRAMES = 2000
GOAL_RATIO, GOAL_MEDIAN_US, GOAL_WORST_US = 1.01, 20.0, 1000.0
GOAL_EXIT_S = 1.0   # from Blender's last line to its exit, with the hooks and an agent that never answers

# What Blender 5.0 passes to render_stats during one frame (captured from the bpy==5.0.1 wheel).
STATS_5_0 = [
    "Mem: 0M | Synchronizing object | Cube", "Mem: 0M | Synchronizing object | Suzanne",
    "Mem: 0M | Initializing", "Mem: 0M | Waiting for render to start", "Mem: 0M | Updating Scene",
    "Mem: 0M | Loading render kernels (may take a few minutes the first time)",
    "Mem: 1M | Updating Meshes", "Mem: 1M | Updating Scene BVH | Building",
    "Mem: 1M | Updating Scene BVH | Building BVH 0%", "Mem: 1M | Updating Lights",
    "Mem: 2M | Updating Film", "Mem: 2M | Sample 0/8", "Remaining: 00:00.00 | Mem: 2M | Sample 1/8",
    "Mem: 2M | Sample 8/8", "Mem: 2M | Finished", "Time: 00:00.07 (Saving: 00:00.02)",
]

_PER_EVENT = r"""
import json, statistics, sys, time
sys.path.insert(0, {root!r})
import bpy
from blender_hooks import addon
STATS_5_0 = {stats!r}
addon.register()
scene = bpy.context.scene
hooks = addon.state()
pc, tc = time.perf_counter, time.thread_time
emit, calls = [], []
w = hooks.writer
cpu_worst = 0.0
worst = []
def call(fn, arg):
    global cpu_worst
    n0 = w.appended
    c0 = tc(); t0 = pc(); fn(arg); dt = pc() - t0; cpu = tc() - c0
    cpu_worst = max(cpu_worst, cpu)
    calls.append(dt)
    if dt > 200e-6 or cpu > 100e-6:
        worst.append((round(dt * 1e6), round(cpu * 1e6), fn.__name__))
    if w.appended > n0:
        emit.append(dt)
    return dt
first = call(addon.rw_render_init, scene)
for i in range({frames}):
    scene.frame_current = 1 + i % 250
    call(addon.rw_render_pre, scene)
    for s in STATS_5_0:
        call(addon.rw_render_stats, s)
    call(addon.rw_render_post, scene)
    call(addon.rw_render_write, scene)
call(addon.rw_render_complete, scene)
line = b'{{"v":1,"type":"frame_start","session":"0123456789abcdef","seq":1,"ts":1.0,"job":"j","host":"h","pid":1,"frame":1}}\n'
app = []
for _ in range(20000):
    t0 = pc(); w.append(line); app.append(pc() - t0)
print("RESULT " + json.dumps({{
    "events": len(emit), "calls": len(calls), "median_us": statistics.median(emit) * 1e6,
    "p99_us": sorted(emit)[int(len(emit) * 0.99)] * 1e6, "worst_us": max(calls) * 1e6, "worst_cpu_us": cpu_worst * 1e6,
    "p999_us": sorted(calls)[int(len(calls) * 0.999)] * 1e6, "slow_calls": sorted(worst, reverse=True)[:8],
    "first_event_us": first * 1e6, "segments": w.index, "errors": hooks.errors,
    "append_median_us": statistics.median(app) * 1e6, "append_worst_us": max(app) * 1e6,
    "blender": bpy.app.version_string}}), flush=True)
"""


class _Sink(http.server.BaseHTTPRequestHandler):
    """A stand-in agent: reads the NDJSON body and answers 200."""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_a):
        pass


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, agent: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENDERWATCH_") or k == "RENDERWATCH_BLENDER"}
    env.update({"RENDERWATCH_HOME": str(home), "RENDERWATCH_AGENT": agent})
    return env


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child, its stdout) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True, timeout=900)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {p.returncode}: {p.stderr[-1000:]!r}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, p.stdout.decode(errors="replace")


# Loads the hooks exactly as startup.py does, and accounts the CPU they use: import + register,
# every handler call (on whichever thread Blender calls it), the sender thread, the exit flush.
_ACCOUNT = r"""
import atexit, json, time
c0 = time.thread_time()
exec(open({startup!r}).read(), {{"__file__": {startup!r}, "__name__": "__main__"}})
import bpy
from blender_hooks import addon
acc = {{"register": time.thread_time() - c0, "handlers": 0.0, "calls": 0}}
def wrapped(fn):
    def call(*a):
        c = time.thread_time(); fn(*a); acc["handlers"] += time.thread_time() - c; acc["calls"] += 1
    call._bpy_persistent = True
    call._rw_bench = True
    return call
for name, fn in addon.HANDLERS:
    lst = getattr(bpy.app.handlers, name)
    lst[lst.index(fn)] = wrapped(fn)
def report():
    sender = addon.state().sender._thread
    acc["sender"] = time.clock_gettime(time.pthread_getcpuclockid(sender.ident)) if sender else 0.0
    c = time.thread_time(); w = time.perf_counter()
    for name, fn in addon.HANDLERS:
        lst = getattr(bpy.app.handlers, name)
        for h in [h for h in lst if getattr(h, "_rw_bench", False)]:
            lst.remove(h)
    addon.unregister()
    acc["exit"] = time.thread_time() - c
    acc["exit_wall"] = time.perf_counter() - w
    print("HOOKSCPU " + json.dumps(acc), flush=True)
atexit.register(report)
"""


def overhead(blender: list[str], scene: Path, work: Path, runs: int = RUNS) -> dict:
    """Median wall (and CPU) time of the render with and without hooks, ABBA-alternated; and the
    CPU the hooks themselves used in the hooked runs (robust to other load on the machine)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    agent = f"http://127.0.0.1:{server.server_address[1]}"
    out = ["-o", str(work / "frames" / "f_"), "-t", "2"]
    base = [*blender, "-b", str(scene), *out]
    with_hooks = [*blender, "-b", str(scene), "--python-expr", _ACCOUNT.format(startup=str(STARTUP)), *out]
    res: dict[str, list[tuple[float, float]]] = {"with": [], "without": []}
    shares: list[float] = []
    own: list[dict] = []
    try:
        _timed([*base, "-f", "1"], _env(work / "home", agent))  # warm the caches once
        for i in range(runs):
            order = ("with", "without") if i % 2 == 0 else ("without", "with")
            for kind in order:
                shutil.rmtree(work / "home", ignore_errors=True)
                wall, cpu, stdout = _timed([*(with_hooks if kind == "with" else base), "-a"], _env(work / "home", agent))
                res[kind].append((wall, cpu))
                if kind == "with":
                    acc = json.loads(stdout.split("HOOKSCPU ", 1)[1].splitlines()[0])
                    hooks_cpu = acc["register"] + acc["handlers"] + acc["sender"] + acc["exit"]
                    shares.append(hooks_cpu / max(1e-9, cpu - hooks_cpu))
                    own.append({k: round(v, 4) for k, v in acc.items()})
    finally:
        server.shutdown()
    w = statistics.median(x for x, _ in res["with"])
    wo = statistics.median(x for x, _ in res["without"])
    cw = statistics.median(c for _, c in res["with"])
    cwo = statistics.median(c for _, c in res["without"])
    return {"with_s": w, "without_s": wo, "ratio": w / wo, "cpu_ratio": cw / cwo, "runs": runs,
            "own_cpu_ratio": 1 + statistics.median(shares), "own": own,
            "with_runs": [round(x, 3) for x, _ in res["with"]], "without_runs": [round(x, 3) for x, _ in res["without"]]}


def per_event(blender: list[str], scene: Path, work: Path, frames: int = EVENT_FRAMES) -> dict:
    script = work / "per_event.py"
    script.write_text(_PER_EVENT.format(root=str(REPO), frames=frames, stats=STATS_5_0))
    env = _env(work / "home-events", f"http://127.0.0.1:{_closed_port()}")  # the agent is stopped
    p = subprocess.run([*blender, "-b", str(scene), "--python-exit-code", "3", "--python", str(script)], env=env,
                       capture_output=True, text=True, errors="replace", timeout=900)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"per-event run failed ({p.returncode}): {p.stdout[-1500:]}{p.stderr[-1500:]}")


def _blenders() -> list[tuple[str, list[str]]]:
    """Each Blender of the version matrix that is set up here ($RENDERWATCH_BLENDER_VERSIONS picks)."""
    from renderwatch.matrix import selected

    out = []
    for v in selected():
        cmd = v.command()
        if cmd:
            out.append((f"Blender {v.label}" + ("" if v.binary else " wheel"), cmd))
    return out


class _HungAgent:
    """Accepts connections, reads, never answers: the worst agent for Blender's exit."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.conns: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self) -> None:
        for c in [self.sock, *self.conns]:
            c.close()


def _exit_delay(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from the last frame's `Saved:` line to the process's exit (the hooks' own log lines at
    exit, and Blender 3.4's `Blender quit` after its atexit, make "the last line" the wrong mark)."""
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.stdout is not None
    saved = time.perf_counter()
    for line in p.stdout:
        if b"Saved:" in line:
            saved = time.perf_counter()
    p.wait(timeout=300)
    return time.perf_counter() - saved


def exit_delays(blender: list[str], scene: Path, work: Path, runs: int = 3) -> dict:
    """Median exit delay after the last frame: hooks delivering to a hung agent vs no hooks at all."""
    hung = _HungAgent()
    out = ["-o", str(work / "frames-exit" / "f_"), "-f", "1"]
    res: dict[str, list[float]] = {"with": [], "without": []}
    try:
        for _ in range(runs):
            shutil.rmtree(work / "home-exit", ignore_errors=True)
            env = _env(work / "home-exit", hung.url)
            res["with"].append(_exit_delay([*blender, "-b", str(scene), "--python", str(STARTUP), *out], env))
            res["without"].append(_exit_delay([*blender, "-b", str(scene), *out], env))
    finally:
        hung.close()
    return {"with_s": statistics.median(res["with"]), "without_s": statistics.median(res["without"]),
            "with_runs": [round(x, 3) for x in res["with"]], "without_runs": [round(x, 3) for x in res["without"]]}


def run() -> list[dict]:
    blenders = _blenders()
    if not blenders:
        return [{"name": "hooks benchmarks need a Blender of the matrix (./bootstrap bench sets them up)",
                 "pass": False}]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="rw-bench-hooks-") as d:
        work = Path(d)
        scene = create_demo_scene(work / "bench.blend", frames=8, samples=32, width=320, height=180)
        for label, argv in blenders:
            o = overhead(argv, scene, work)
            rows.append({
                "name": f"hook overhead, 8-frame render, {label} (median wall with/without, {o['runs']} pairs; "
                        f"{o['with_s']:.2f} s vs {o['without_s']:.2f} s; CPU ratio {o['cpu_ratio']:.3f})",
                "measured": round(o["ratio"], 4), "unit": "x", "goal": f"≤ {GOAL_RATIO}",
                "peer": "same render without hooks", "peer_measured": 1.0,
                "pass": o["ratio"] <= GOAL_RATIO, "detail": o})
            rows.append({
                "name": f"hooks' own CPU over the render's, {label} (import+register, handlers, sender thread, "
                        "exit flush; measured inside Blender, robust to other load)",
                "measured": round(o["own_cpu_ratio"], 4), "unit": "x", "goal": f"≤ {GOAL_RATIO}",
                "peer": "render CPU without the hooks' share", "peer_measured": 1.0,
                "pass": o["own_cpu_ratio"] <= GOAL_RATIO, "detail": o["own"]})
            x = exit_delays(argv, scene, work)
            rows.append({
                "name": f"exit after the last frame is saved, agent hung, {label} (median of {len(x['with_runs'])}; "
                        "the flush is bounded to 0.5 s + 0.2 s abort)",
                "measured": round(x["with_s"], 3), "unit": "s", "goal": f"≤ {GOAL_EXIT_S} s",
                "peer": "same Blender without hooks", "peer_measured": round(x["without_s"], 3),
                "pass": x["with_s"] <= GOAL_EXIT_S, "detail": x})
            e = per_event(argv, scene, work)
            rows.append({
                "name": f"per-event cost in Blender's Python, {label} (median of {e['events']} events; "
                        f"p99 {e['p99_us']:.1f} µs; spool append alone {e['append_median_us']:.1f} µs)",
                "measured": round(e["median_us"], 2), "unit": "µs", "goal": f"≤ {GOAL_MEDIAN_US:g} µs",
                "peer": "os.write of the line (spool append)", "peer_measured": round(e["append_median_us"], 2),
                "pass": e["median_us"] <= GOAL_MEDIAN_US and e["errors"] == 0, "detail": e})
            rows.append({
                "name": f"worst handler call, agent stopped, {label} ({e['calls']} calls incl. the first event "
                        f"{e['first_event_us']:.0f} µs and {e['segments'] - 1} rotations)",
                "measured": round(e["worst_us"], 1), "unit": "µs", "goal": f"≤ {GOAL_WORST_US:g} µs",
                "peer": "worst spool append", "peer_measured": round(e["append_worst_us"], 1),
                "pass": e["worst_us"] <= GOAL_WORST_US, "detail": e})
    return rows


if __name__ == "__main__":
    for row in run():
        row.pop("detail", None)
        print(row)
    sys.exit(0)
