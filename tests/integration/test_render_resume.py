"""A healer killed mid-render and started again resumes its job from the ledger; `exec` wraps blender."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from healer.supervising.ledger import Ledger, jobs_dir
from tests.support.healer import RENDERWATCH, assert_every_frame_once, fault, healer_env, render

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def _ledger(home: Path) -> dict | None:
    found = list(jobs_dir({"RENDERWATCH_HOME": str(home)}).glob("*/ledger.json"))
    if not found:
        return None
    try:        # as a resuming healer reads it: the snapshot and its journal
        return Ledger.load(found[0]).to_dict()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _wait_for_frames(home: Path, n: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        led = _ledger(home)
        if led and len(led["frames"]) >= n:
            return led
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} frames verified in {timeout} s: {_ledger(home)}")


def test_killed_healer_resumes_without_rendering_verified_frames_again(scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    home, report = tmp_path / "home", tmp_path / "r.json"
    args = [str(scene), "--frames", "1-6", "--quiet", "--", "--python", fault("slow")]
    env = healer_env(home, FAULT_SLEEP="0.6")
    healer = subprocess.Popen([*RENDERWATCH, "render", *args], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        led = _wait_for_frames(home, 2)
        blender_pid = led["attempts"][-1]["pid"]
        os.kill(healer.pid, signal.SIGKILL)              # the process-group leader only
        healer.wait(10)
        deadline = time.monotonic() + 5                  # Blender dies with it (no orphan renders on)
        while psutil.pid_exists(blender_pid) and psutil.Process(blender_pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "Blender outlived the killed healer"
            time.sleep(0.05)
        verified_before = sorted(int(f) for f in _ledger(home)["frames"])

        rc, doc, out = render(args[:3] + args[4:], home, report, FAULT_SLEEP="0.1")
    finally:
        if healer.poll() is None:
            healer.kill()
    assert rc == 0, out
    assert not psutil.pid_exists(blender_pid) or psutil.Process(blender_pid).status() == psutil.STATUS_ZOMBIE
    assert_every_frame_once(doc, [1, 2, 3, 4, 5, 6])
    for f in verified_before:
        assert doc["frame_render_counts"][str(f)] == 1, (f, doc["frame_render_counts"])
    first, *later = doc["attempts"]
    assert first["error_type"] == "interrupted" and "healer restarted" in first["error_summary"]
    assert all(f not in a["frames_planned"] for a in later for f in verified_before)
    assert later[-1]["error_type"] == "ok"


def test_a_second_healer_for_the_same_job_is_refused(scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    home = tmp_path / "home"
    args = [str(scene), "--frames", "1-4", "--quiet", "--", "--python", fault("slow")]
    env = healer_env(home, FAULT_SLEEP="0.5")
    first = subprocess.Popen([*RENDERWATCH, "render", *args], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        _wait_for_frames(home, 1)
        second = subprocess.run([*RENDERWATCH, "render", *args], env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "supervised by live process" in second.stderr
        assert first.wait(60) == 0
    finally:
        if first.poll() is None:
            first.kill()


def test_exec_wraps_a_blender_command_line(scene_copy, tmp_path, blender34):
    scene = scene_copy(frames=4)
    report = tmp_path / "r.json"
    cmd = [*RENDERWATCH, "exec", "--report", str(report), "--quiet", "--",
           blender34, "-b", str(scene), "--python", fault("segfault"), "-s", "1", "-e", "3", "-a"]
    proc = subprocess.run(cmd, env=healer_env(tmp_path / "home", FAULT_FRAME="2", FAULT_MARKER=str(tmp_path / "m")),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(report.read_text())
    assert_every_frame_once(doc, [1, 2, 3])
    assert [a["error_type"] for a in doc["attempts"]] == ["segfault", "ok"]
    assert doc["frame_render_counts"] == {"1": 1, "2": 2, "3": 1}
