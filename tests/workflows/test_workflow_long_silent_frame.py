"""Workflow: a long frame that prints nothing while it samples, on every Blender of the matrix, under
a short `--stall-timeout`: it renders, once, with no restart. And what is a stall still is one: a
handler asleep, a Blender stopped by SIGSTOP, a read that never returns.

Blender as a Python module (the bpy wheels) wrote its output through block-buffered C stdio, and a
Cycles frame can sample for minutes between two progress lines on any version (here: Cycles samples
for a time limit while Blender's stdout goes nowhere for most of it, tests/faults/silent.py). The
healer took the silence for a stall and killed a healthy render three times over. It now watches every sign of life (output, the hooks' heartbeat
file, CPU time of Blender's process tree, GPU activity where NVML is) and the wheels' output is
line-buffered.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.healer import RENDERWATCH, fault, healer_env

pytestmark = [pytest.mark.blender, pytest.mark.slow]

STALL_S = 4.0          # the --stall-timeout under test
SILENT_S = 8.0         # Cycles' time limit: each frame samples this long, saying nothing


def render_watched(args: list[str], home: Path, report: Path, *, timeout: float = 120,
                   **env: str) -> tuple[int, dict, list[tuple[float, str]], str]:
    """`renderwatch render ARGS --blender-output`: (exit status, report, Blender's lines as the healer
    passed them on, each with the time it arrived here, renderwatch's own output). Without
    PYTHONUNBUFFERED, as on a farm's worker: Blender's output is as buffered as renderwatch leaves it."""
    environ = healer_env(home, **env)
    environ.pop("PYTHONUNBUFFERED", None)
    proc = subprocess.Popen([*RENDERWATCH, "render", *args[:1], "--report", str(report), "--quiet",
                             "--blender-output", *args[1:]], env=environ, text=True,
                            errors="replace", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[tuple[float, str]] = []
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic(), line.rstrip("\n")))
            assert time.monotonic() < deadline, "renderwatch render took too long"
        proc.wait(max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read() if proc.stderr else ""
    doc = json.loads(report.read_text()) if report.exists() else {}
    return proc.returncode, doc, lines, err


def longest_silence(lines: list[tuple[float, str]]) -> float:
    times = [t for t, _ in lines]
    return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def test_a_long_silent_frame_renders_under_a_short_stall_timeout(matrix_blender, scene_copy, tmp_path):
    scene = scene_copy(frames=2)
    rc, doc, lines, err = render_watched(
        [str(scene), "--frames", "1", "--stall-timeout", str(STALL_S), "--blender", matrix_blender[0],
         "--", "--python", fault("silent")], tmp_path / "home", tmp_path / "r.json", SILENT_SECONDS=str(SILENT_S))
    assert rc == 0, err
    assert doc["status"] == "complete" and doc["frames_completed"] == [1]
    assert doc["restarts"] == 0 and [a["error_type"] for a in doc["attempts"]] == ["ok"], doc["attempts"]
    assert "stall" not in err
    # the healer really heard nothing for longer than the stall timeout: what killed it before
    assert longest_silence(lines) > STALL_S + 1, lines
    # and what Blender printed reached it as printed (line-buffered), not with the next block or at exit
    said = next((t for t, line in lines if line.startswith("silent.py: frame 1")), None)
    saved = next(t for t, line in lines if "Saved:" in line)
    assert said is not None and saved - said > SILENT_S / 2, lines


def test_a_wheels_output_is_line_buffered(matrix_wheel, tmp_path):
    """`renderwatch-blender` line-buffers C stdio and Python's stdout, as a Blender binary's main()
    unbuffers C's, whoever starts it: a line printed before a pause arrives before the pause ends."""
    expr = "import time; print('printed by Python'); time.sleep(3)"
    t0 = time.monotonic()
    proc = subprocess.Popen([*matrix_wheel, "-b", "--factory-startup", "--python-expr", expr],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})
    arrived: dict[str, float] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        for key in ("Blender ", "printed by Python"):
            if line.startswith(key) and key not in arrived:
                arrived[key] = time.monotonic()
    proc.wait(60)
    end = time.monotonic()
    assert set(arrived) == {"Blender ", "printed by Python"}, arrived
    for key, t in arrived.items():
        assert end - t > 2.0, f"{key!r} arrived {t - t0:.1f} s after the start, only when Blender exited"


# -- what is a stall is still caught ---------------------------------------------------------------

def _stalled_then_healed(doc: dict, err: str) -> dict:
    assert doc["status"] == "complete" and doc["frames_completed"] == [1], err
    first, second = doc["attempts"]
    assert first["error_type"] == "stall" and "no sign of life" in first["error_summary"], first
    assert second["error_type"] == "ok"
    return first


@pytest.mark.parametrize("fault_name", ["hang", "sigstop", "blocked_read"])
def test_a_stall_is_still_caught(fault_name, blender34, scene_copy, tmp_path):
    """A render_pre handler asleep, Blender stopped by SIGSTOP mid-sampling, a read blocked for ever:
    no output, no heartbeat, no CPU time. Caught once the timeout has passed, and healed by a restart."""
    scene = scene_copy(frames=2)
    t0 = time.monotonic()
    # SIGSTOP comes a second into the frame: that frame samples for 2 s (the others stall in render_pre)
    scripts = ["--python", fault("silent")] if fault_name == "sigstop" else []     # (not quiet: QUIET_SECONDS=0)
    rc, doc, _lines, err = render_watched(
        [str(scene), "--frames", "1", "--stall-timeout", str(STALL_S), "--blender", blender34, "--",
         *scripts, "--python", fault(fault_name)], tmp_path / "home", tmp_path / "r.json", SILENT_SECONDS="2",
        QUIET_SECONDS="0", FAULT_FRAME="1", FAULT_MARKER=str(tmp_path / "fired"), FAULT_FIFO=str(tmp_path / "fifo"))
    assert rc == 0, err
    first = _stalled_then_healed(doc, err)
    # caught within the timeout and the probes' one-second sampling of the last sign of life
    assert first["ended_at"] - first["started_at"] < STALL_S + 2 + 2 + 3, first   # + kill grace + start, render
    assert time.monotonic() - t0 < 60


def test_the_hooks_touch_the_heartbeat_file_while_rendering(matrix_blender, scene_copy, tmp_path):
    """The hooks' sign of life, which goes through no pipe: the file named in RENDERWATCH_HEARTBEAT is
    touched from the render handlers (the gate sets it, after the hooks have registered)."""
    from blender_hooks.settings import ENV_HEARTBEAT
    from healer.supervising.spawn import GATE_EXPR, hooks_startup

    beat = tmp_path / "heartbeat.1"
    beat.touch()
    os.utime(beat, (0, 0))
    env = healer_env(tmp_path / "home")
    proc = subprocess.run([*matrix_blender, "-b", str(scene_copy(frames=1)), "--python-expr", GATE_EXPR,
                           "--python", str(hooks_startup()), "-f", "1"],
                          input=json.dumps({ENV_HEARTBEAT: str(beat)}) + "\n", env=env, text=True,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert beat.stat().st_mtime > time.time() - 120
