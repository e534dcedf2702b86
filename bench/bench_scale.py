"""The healer's cost per frame against the job's length: jobs of 100, 1,000 and 10,000 tiny frames.

Real Blender 3.4 renders a 16x16 Workbench scene for 100 and 1,000 frames, bare (`blender -b -a`) and
supervised (the healer's Supervisor, in this process, with its hooks, ledger journal and frame checks);
10,000 frames are replayed by the recorded-run Blender (tests/support/fake_blender.py: the same lines and a
real PNG per frame), because a real run that long takes many minutes on this machine. Each row:

- measured: the healer's own CPU per frame (this process's CPU time, its threads included; Blender's
  is a child's and not counted) past the job's start (a one-frame job's CPU, taken off): what
  supervision takes from Blender on a busy node per frame, the figure that grew with the job's length
  (issue 24: 20 ms at 1,000 frames, 126 ms at 3,000). The replayed rows include the replay itself
  (the fake Blender runs in this process: its lines, its PNG files), so they overstate the healer;
- in the name, the wall time added per frame (supervised - bare) / frames, which is noisy here;
- goal: <= 2 ms per frame at every length (flat); peer: bare Blender's wall time per frame.

Usage::

    python -m bench scale
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from renderwatch.scenes import create_demo_scene, find_blender

REPO = Path(__file__).resolve().parent.parent
GOAL_MS = 2.0
REAL = tuple(int(x) for x in os.environ.get("RENDERWATCH_BENCH_SCALE_REAL", "100,1000").split(",") if x)
REPLAYED = tuple(int(x) for x in os.environ.get("RENDERWATCH_BENCH_SCALE_REPLAYED", "10000").split(",") if x)


def _scene(blender: str, work: Path, frames: int) -> Path:
    scene = create_demo_scene(work / "tiny.blend", frames=frames, samples=1, width=16, height=16, blender=blender)
    expr = ("import bpy; s = bpy.context.scene; s.render.engine = 'BLENDER_WORKBENCH'; "
            f"s.render.resolution_percentage = 100; s.frame_start = 1; s.frame_end = {frames}; "
            "bpy.ops.wm.save_mainfile()")
    subprocess.run([blender, "-b", str(scene), "--python-expr", expr], check=True, capture_output=True, timeout=300)
    return scene


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RENDERWATCH_", "SENTRY_", "FAULT_"))}
    env.update({"RENDERWATCH_HOME": str(home), "RENDERWATCH_AGENT": "off", "RENDERWATCH_SPOOL_DIR": str(home / "spool")})
    return env


def _supervised(scene: Path, home: Path, frames: int, blender: str, launcher=None, probes=None) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one supervised job."""
    from healer.supervising.supervisor import RenderRequest, Supervisor

    out = home / "out" / "f_####"
    sup = Supervisor(RenderRequest(scene=str(scene), frames=tuple(range(1, frames + 1)), output=str(out),
                                   blender=blender, job=f"scale-{frames}"),
                     env=_env(home), launcher=launcher, probes=probes)
    w0, c0 = time.perf_counter(), time.process_time()
    result = asyncio.run(sup.run())
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if result.exit_code != 0 or result.ledger.completed_count() != frames:
        raise RuntimeError(f"supervised {frames} frames: {result.status} {result.error}")
    return wall, cpu


def _bare(blender: str, scene: Path, out: Path, frames: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([blender, "-b", str(scene), "-o", str(out / "f_####"), "-s", "1", "-e", str(frames), "-a"],
                   check=True, capture_output=True, timeout=3600)
    return time.perf_counter() - t0


def _row(frames: int, how: str, bare: float | None, wall: float, cpu: float, start_cpu: float) -> dict:
    """`start_cpu`: the CPU of a one-frame job (the job's start: scene read, lock, ledger, launch), taken
    off so the row is what each further frame costs; the whole job's CPU per frame is in the name."""
    per = (cpu - start_cpu) / max(1, frames - 1) * 1e3
    added = f"{(wall - bare) / frames * 1e3:.1f} ms/frame wall added" if bare is not None else "no bare run (replayed)"
    return {"name": f"healer CPU per frame, {frames} tiny frames ({how}; {cpu / frames * 1e3:.2f} ms/frame with the "
                    f"job's start ({start_cpu * 1e3:.0f} ms); {added}; supervised {wall:.1f} s)",
            "measured": round(per, 3), "unit": "ms", "goal": f"<= {GOAL_MS:g}, flat",
            "peer": "bare Blender, wall per frame" if bare is not None else None,
            "peer_measured": round(bare / frames * 1e3, 2) if bare is not None else None, "pass": per <= GOAL_MS}


def run() -> list[dict]:
    rows: list[dict] = []
    blender = find_blender()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if blender and REAL:
            scene = _scene(blender, work, max(REAL))
            _bare(blender, scene, work / "warm", 1)                  # shaders compiled once for both
            _supervised(scene, work / "warm-sup", 1, blender)        # the healer's modules loaded
            _, start = _supervised(scene, work / "one", 1, blender)
            for n in REAL:
                bare = _bare(blender, scene, work / f"bare{n}", n)
                wall, cpu = _supervised(scene, work / f"sup{n}", n, blender)
                rows.append(_row(n, "real Blender 3.4, Workbench 16x16", bare, wall, cpu, start))
        elif REAL:
            rows.append({"name": "healer CPU per frame, real Blender: no Blender found", "pass": None})
        sys.path.insert(0, str(REPO))
        from tests.support.fake_blender import SCENE, ReplayLauncher, ReplayProbes, long_run

        for n in REPLAYED:
            home = work / f"replay{n}"
            (home / "shot").mkdir(parents=True)
            scene = home / "shot" / "tiny.blend"
            shutil.copy(SCENE, scene)
            true = shutil.which("true") or "true"
            one = ReplayLauncher([long_run([1])], speed=0.0)
            _, start = _supervised(scene, home / "one", 1, true, one, ReplayProbes(one))
            launcher = ReplayLauncher([long_run(range(1, n + 1))], speed=0.0)
            wall, cpu = _supervised(scene, home, n, true, launcher, ReplayProbes(launcher))
            rows.append(_row(n, "replayed by tests/support/fake_blender.py, its replay's CPU included", None, wall, cpu, start))
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
