"""Healer benchmarks on real Blender 3.4: supervision overhead, stall detection, re-rendered frames.

Rows:
- overhead of a supervised render (`renderwatch render`, hooks injected, ledger fsynced per frame)
  over a bare `blender -b scene -s 1 -e 4 -a` of the same 4-frame scene, medians of N runs each,
  interleaved (goal <= 5 %);
- restart latency: from the crashed Blender's exit to the next Blender's start (backoff set to 0);
- stall detected: from the moment a handler hangs to Blender stopped, with --stall-timeout 2
  (goal <= timeout + 1 s);
- frames rendered twice per crash: a segfault at frame 3 of 6 (goal: 1, the frame in flight).

Usage::

    python -m bench healer
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from renderwatch.scenes import create_demo_scene, find_blender

REPO = Path(__file__).resolve().parent.parent
FAULTS = REPO / "tests" / "faults"
RUNS = int(os.environ.get("RENDERWATCH_BENCH_RUNS", "5"))
STALL_TIMEOUT = 2.0


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RENDERWATCH_", "SENTRY_", "FAULT_"))}
    env.update({"RENDERWATCH_HOME": str(home), "RENDERWATCH_AGENT": "off", "RENDERWATCH_SPOOL_DIR": str(home / "spool"),
                "RENDERWATCH_HEALER_BACKOFF_S": "0", "RENDERWATCH_HEALER_KILL_GRACE_S": "2"})
    env.update(extra)
    return env


def _render(scene: Path, work: Path, args: list[str], **env: str) -> tuple[float, dict]:
    report = work / "report.json"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "renderwatch", "render", str(scene), "--quiet", "--report",
                           str(report), *args], env=_env(work / "home", **env), capture_output=True, text=True,
                          timeout=300)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"renderwatch render failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, json.loads(report.read_text())


def _overhead(blender: str, scene: Path, work: Path) -> tuple[float, float, float]:
    bare, supervised = [], []
    for i in range(RUNS):
        out = work / f"bare{i}"
        t0 = time.perf_counter()
        subprocess.run([blender, "-b", str(scene), "-o", str(out / "f_####"), "-s", "1", "-e", "4", "-a"],
                       check=True, capture_output=True, timeout=300)
        bare.append(time.perf_counter() - t0)
        wall, _ = _render(scene, work / f"sup{i}", ["--frames", "1-4", "--output", str(work / f"sup{i}" / "f_####")])
        supervised.append(wall)
    b, s = statistics.median(bare), statistics.median(supervised)
    return b, s, (s - b) / b * 100


def run() -> list[dict]:
    blender = find_blender()
    if blender is None:
        return [{"name": "healer benchmarks need Debian's blender", "pass": False}]
    with tempfile.TemporaryDirectory(prefix="rw-bench-healer-") as tmp:
        work = Path(tmp)
        # About a second a frame on a CPU: small enough for CI, big enough that a render is not all start-up.
        scene = create_demo_scene(work / "bench.blend", frames=6, samples=64, width=320, height=180, blender=blender)
        bare, sup, pct = _overhead(blender, scene, work)

        _, crash = _render(scene, work / "crash", ["--frames", "1-6", "--output", str(work / "crash" / "f_####"),
                                                   "--", "--python", str(FAULTS / "segfault.py")],
                           FAULT_FRAME="3", FAULT_MARKER=str(work / "crash-fired"))
        twice = sorted(int(f) for f, n in crash["frame_render_counts"].items() if n > 1)
        first, second = crash["attempts"][:2]
        restart_ms = (second["started_at"] - first["ended_at"]) * 1000

        stamp = work / "hang-began"
        _, stall = _render(scene, work / "stall", ["--frames", "1-3", "--stall-timeout", str(STALL_TIMEOUT),
                                                   "--output", str(work / "stall" / "f_####"), "--",
                                                   "--python", str(FAULTS / "hang.py")],
                           FAULT_FRAME="2", FAULT_MARKER=str(work / "hang-fired"), FAULT_STAMP=str(stamp))
        stalled = next(a for a in stall["attempts"] if a["error_type"] == "stall")
        stall_s = stalled["ended_at"] - float(stamp.read_text())

    return [
        {"name": "supervised 4-frame render over bare `blender -b -a` (median overhead)", "measured": round(pct, 1),
         "unit": "%", "goal": "<= 5 %", "peer": f"bare blender -b -a: {bare:.2f} s, supervised: {sup:.2f} s (+{sup - bare:.2f} s)",
         "peer_measured": None, "pass": pct <= 5.0, "detail": {"bare_s": round(bare, 3), "supervised_s": round(sup, 3), "runs": RUNS}},
        {"name": "restart latency: crashed Blender's exit to the next start (backoff 0)",
         "measured": round(restart_ms, 1), "unit": "ms", "goal": "-", "peer": None, "peer_measured": None,
         "pass": None},
        {"name": f"stall detected (--stall-timeout {STALL_TIMEOUT:g}): hang to Blender stopped",
         "measured": round(stall_s, 2), "unit": "s", "goal": f"<= {STALL_TIMEOUT + 1:g} s", "peer": None,
         "peer_measured": None, "pass": stall_s <= STALL_TIMEOUT + 1,
         "detail": {"attempts": [(a["error_type"], a["started_at"], a["ended_at"]) for a in stall["attempts"]]}},
        {"name": "frames rendered twice per crash (segfault at frame 3 of 6)", "measured": len(twice),
         "unit": "frames", "goal": "1 (the frame in flight)", "peer": None, "peer_measured": None,
         "pass": twice == [3]},
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
