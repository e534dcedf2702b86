"""Blender never outlives its supervisor: a farm cancels a task by SIGKILL to the task's process group
(OpenJD's TERMINATE, RQD's killpg(pid, 9)) or kills the healer alone; Blender (real 3.4) must be gone
at once, not re-parented to init and rendering on. And it stays in the caller's session, where RQD
sums a frame's memory."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest

from tests.support.healer import RENDERWATCH, fault, healer_env

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def _start(scene, home):
    args = [str(scene), "--frames", "1-6", "--quiet", "--", "--python", fault("slow")]
    return subprocess.Popen([*RENDERWATCH, "render", *args], env=healer_env(home, FAULT_SLEEP="0.6"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _blender_child(healer: subprocess.Popen, timeout: float = 60) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = [p for p in psutil.Process(healer.pid).children() if "blender" in " ".join(p.cmdline())]
        if kids:
            return kids[0]
        time.sleep(0.05)
    raise AssertionError("no Blender started")


def _gone(p: psutil.Process, timeout: float = 3.0) -> bool:
    try:
        p.wait(timeout)
        return True
    except psutil.TimeoutExpired:
        return False


@pytest.mark.parametrize("kill", ["process-group", "healer-alone"])
def test_blender_dies_with_its_supervisor(scene_copy, tmp_path, kill):
    scene = scene_copy(frames=4)
    healer = _start(scene, tmp_path / "home")
    try:
        blender = _blender_child(healer)
        assert os.getsid(blender.pid) == os.getsid(healer.pid)      # RQD's accounting sees it
        assert os.getpgid(blender.pid) != os.getpgid(healer.pid)    # the healer stops it by its own group
        if kill == "process-group":
            os.killpg(healer.pid, signal.SIGKILL)                    # what OpenJD and RQD do
        else:
            os.kill(healer.pid, signal.SIGKILL)
        healer.wait(10)
        assert _gone(blender), f"Blender {blender.pid} outlived its supervisor"
        frames = sorted((scene.parent / "frames").glob("*.png")) if (scene.parent / "frames").exists() else []
        time.sleep(1.0)
        after = sorted((scene.parent / "frames").glob("*.png")) if (scene.parent / "frames").exists() else []
        assert after == frames, "frames were still written after the supervisor died"
    finally:
        if healer.poll() is None:
            healer.kill()
