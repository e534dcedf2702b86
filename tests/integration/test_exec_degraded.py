"""A farm task is never worse under `renderwatch exec` than under bare Blender: with a state folder it
cannot write (a file in the way, a read-only or pseudo filesystem, a full disk) it says so loudly and
runs Blender as bare Blender would, and the task succeeds or fails on Blender's own result (real
Blender 3.4). `renderwatch render`, which is no farm wrapper, refuses with the reason (exit 2)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_disk_full import fill, small_fs

from tests.support.healer import RENDERWATCH, healer_env

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def _homes(tmp_path: Path) -> dict[str, str]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return {"a file in the way": str(blocker / "state"), "a pseudo filesystem": "/proc/renderwatch-state",
            "no such user's home": "~no-such-user-renderwatch/state"}


@pytest.mark.parametrize("case", ["a file in the way", "a pseudo filesystem", "no such user's home"])
def test_exec_without_a_writable_state_folder_renders_as_bare_blender(case, blender34, scene_copy, tmp_path):
    scene = scene_copy(frames=2)
    env = healer_env(tmp_path / "unused", RENDERWATCH_HOME=_homes(tmp_path)[case])
    p = subprocess.run([*RENDERWATCH, "exec", "--", blender34, "-b", str(scene), "-s", "1", "-e", "2", "-a"],
                       env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "WARNING: cannot keep state" in p.stderr and "RENDERWATCH_HOME" in p.stderr
    assert "Traceback" not in p.stderr
    assert sorted(x.name for x in (scene.parent / "frames").iterdir()) == ["f_0001.png", "f_0002.png"]
    assert p.stdout.count("Saved:") == 2


def test_exec_on_a_full_state_disk_renders_and_fails_on_blenders_own_result(blender34, scene_copy, tmp_path):
    scene = scene_copy(frames=1)
    with small_fs(tmp_path / "full") as how:
        fill(tmp_path / "full")
        env = healer_env(tmp_path / "full" / "home")
        ok = subprocess.run([*RENDERWATCH, "exec", "--", blender34, "-b", str(scene), "-f", "1"],
                            env=env, capture_output=True, text=True, timeout=180)
        assert ok.returncode == 0, (how, ok.stderr[-2000:])
        assert "cannot keep state" in ok.stderr and (scene.parent / "frames" / "f_0001.png").exists()
        bad = subprocess.run([*RENDERWATCH, "exec", "--", blender34, "-b", str(tmp_path / "missing.blend"),
                              "-f", "1"], env=env, capture_output=True, text=True, timeout=180)
        bare = subprocess.run([blender34, "-b", str(tmp_path / "missing.blend"), "-f", "1"],
                              capture_output=True, text=True, timeout=180)
        assert bad.returncode == bare.returncode        # Blender's own status, whatever it is


def test_render_without_a_writable_state_folder_is_a_clear_error(scene_copy, tmp_path):
    scene = scene_copy(frames=1)
    env = healer_env(tmp_path / "unused", RENDERWATCH_HOME="/proc/renderwatch-state")
    p = subprocess.run([*RENDERWATCH, "render", str(scene), "--frames", "1"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "cannot keep state (/proc/renderwatch-state" in p.stderr
    assert "Traceback" not in p.stderr
