"""When frames are reused, with real Blender 3.4 under `renderwatch exec`: a farm's requeue of a finished
task renders it again (it used to print "complete: 1/1 frames" and keep the old PNG), a retry after a
failure resumes, and two farm jobs of one scene never share a ledger."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.healer import RENDERWATCH, fault, healer_env

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def _exec(blender34, scene, tmp_path, report, *extra, env_extra=None, blender_args=()):
    cmd = [*RENDERWATCH, "exec", "--report", str(report), "--quiet", *extra, "--",
           blender34, "-b", str(scene), *blender_args, "-f", "1"]
    return subprocess.run(cmd, env=healer_env(tmp_path / "home", **(env_extra or {})),
                          capture_output=True, text=True, timeout=180)


def test_a_requeue_renders_again_and_a_changed_scene_too(blender34, scene_copy, tmp_path):
    scene = scene_copy(frames=2)
    frame = scene.parent / "frames" / "f_0001.png"
    assert _exec(blender34, scene, tmp_path, tmp_path / "r1.json").returncode == 0
    first = frame.stat().st_mtime_ns
    p = _exec(blender34, scene, tmp_path, tmp_path / "r2.json")          # the farm requeues the task
    assert p.returncode == 0, p.stderr
    assert "requeue" in p.stderr and frame.stat().st_mtime_ns > first
    assert json.loads((tmp_path / "r2.json").read_text())["frame_render_counts"] == {"1": 2}
    p = _exec(blender34, scene, tmp_path, tmp_path / "r3.json", "--fresh")
    assert p.returncode == 0 and "--fresh" in p.stderr


def test_a_retry_after_a_failure_resumes(blender34, scene_copy, tmp_path):
    scene = scene_copy(frames=2)
    # The first attempt crashes at frame 1 and the job gives up (no restarts allowed); the farm retries
    # the same task, which now renders (the fault fires once).
    crash = {"FAULT_FRAME": "1", "FAULT_MARKER": str(tmp_path / "fired")}
    p = _exec(blender34, scene, tmp_path, tmp_path / "r1.json", "--max-restarts", "0",
              env_extra=crash, blender_args=("--python", fault("segfault")))
    assert p.returncode == 1, p.stderr
    p = _exec(blender34, scene, tmp_path, tmp_path / "r2.json", "--max-restarts", "0",
              env_extra=crash, blender_args=("--python", fault("segfault")))
    assert p.returncode == 0, p.stderr
    doc = json.loads((tmp_path / "r2.json").read_text())
    assert [a["error_type"] for a in doc["attempts"]] == ["segfault", "ok"]   # the same ledger: resumed


def test_two_farm_jobs_of_one_scene_do_not_share_a_ledger(blender34, scene_copy, tmp_path):
    scene = scene_copy(frames=2)
    slow = ("--python", fault("slow"))
    cmd = lambda job: [*RENDERWATCH, "exec", "--quiet", "--", blender34, "-b", str(scene), *slow, "-f", "1"]  # noqa: E731
    procs = [subprocess.Popen(cmd(j), env=healer_env(tmp_path / "home", FAULT_SLEEP="1", DEADLINE_JOB_ID=j,
                                                       DEADLINE_STEP_ID="render", DEADLINE_TASK_ID="1"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for j in ("job-a", "job-b")]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert not any("supervised by live process" in err for _o, err in outs)
