"""The shipped Open Job Description templates (deploy/farms/openjd/) under the real `openjd run`
(openjd-cli, Deadline Cloud's job format run locally), with Debian's Blender 3.4: per-frame and chunked
tasks, a healed crash, a farm's cancel (TERMINATE: SIGKILL to the task's process group) and a requeue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.support.healer import FAULTS, healer_env

pytestmark = [pytest.mark.blender, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "deploy" / "farms" / "openjd"
BIN = Path(sys.executable).parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = healer_env(tmp_path / "home", **extra)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    return env


def _run(template: Path, tmp_path: Path, *params: str, env=None, **popen):
    argv = [str(BIN / "openjd"), "run", str(template), *[x for p in params for x in ("-p", p)]]
    if popen:
        return subprocess.Popen(argv, env=env or _env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, **popen)
    return subprocess.run(argv, env=env or _env(tmp_path), capture_output=True, text=True, timeout=300)


def _with_fault(tmp_path: Path, template: Path, fault: str, mode: str | None = None) -> Path:
    doc = yaml.safe_load(template.read_text())
    action = doc["steps"][0]["script"]["actions"]["onRun"]
    i = action["args"].index("-b")
    action["args"][i + 2:i + 2] = ["--python", str(FAULTS / f"{fault}.py")]
    if mode:
        action["cancelation"] = {"mode": mode}
    out = tmp_path / template.name
    out.write_text(yaml.safe_dump(doc))
    return out


def test_per_frame_tasks(scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    p = _run(TEMPLATES / "blender-per-frame.yaml", tmp_path, f"SceneFile={scene}", "Frames=1-3")
    assert p.returncode == 0, p.stdout[-3000:]
    assert sorted(x.name for x in (scene.parent / "frames").iterdir()) == ["f_0001.png", "f_0002.png", "f_0003.png"]
    assert p.stdout.count("openjd_progress: 100.0") == 3 and p.stdout.count("Saved:") == 3   # Blender's own lines


def test_chunked_tasks(scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    p = _run(TEMPLATES / "blender-chunked.yaml", tmp_path, f"SceneFile={scene}", "Frames=1-4", "ChunkSize=2")
    assert p.returncode == 0, p.stdout[-3000:]
    assert p.stdout.count("renderwatch: complete: 2/2 frames") == 2
    assert len(list((scene.parent / "frames").iterdir())) == 4


def test_a_crash_is_healed_inside_the_task(scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    template = _with_fault(tmp_path, TEMPLATES / "blender-chunked.yaml", "segfault")
    env = _env(tmp_path, FAULT_FRAME="2", FAULT_MARKER=str(tmp_path / "fired"))
    p = _run(template, tmp_path, f"SceneFile={scene}", "Frames=1-3", "ChunkSize=3", env=env)
    assert p.returncode == 0, p.stdout[-3000:]
    assert "attempt 1 ended: segfault" in p.stdout and "openjd_status: renderwatch restart" in p.stdout
    assert "renderwatch: complete: 3/3 frames, 1 restarts" in p.stdout


def test_a_cancel_ends_blender_with_the_task(scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    template = _with_fault(tmp_path, TEMPLATES / "blender-per-frame.yaml", "slow", mode="TERMINATE")
    proc = _run(template, tmp_path, f"SceneFile={scene}", "Frames=1-3", env=_env(tmp_path, FAULT_SLEEP="30"),
                start_new_session=True)
    try:
        deadline, blender = time.monotonic() + 60, None
        while blender is None and time.monotonic() < deadline:
            blender = next((c for c in psutil.Process(proc.pid).children(recursive=True)
                            if any("frame_start" in a for a in c.cmdline()) and "renderwatch" not in c.name()), None)
            time.sleep(0.1)
        assert blender is not None, "no Blender started"
        time.sleep(1.0)                                   # inside the slow frame
        os.kill(proc.pid, signal.SIGINT)                  # openjd run cancels: SIGKILL to the action's group
        proc.communicate(timeout=60)
        blender.wait(5)                                   # psutil.TimeoutExpired if it outlived the task
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_requeue_renders_the_task_again(scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    args = (f"SceneFile={scene}", "Frames=1")
    assert _run(TEMPLATES / "blender-per-frame.yaml", tmp_path, *args).returncode == 0
    frame = scene.parent / "frames" / "f_0001.png"
    first = frame.stat().st_mtime_ns
    p = _run(TEMPLATES / "blender-per-frame.yaml", tmp_path, *args)
    assert p.returncode == 0 and "a requeue" in p.stdout and frame.stat().st_mtime_ns > first
