"""Paths are bytes where the OS says they are: a scene and an output pattern with a Latin-1 byte (old
NAS and Samba shares) render and verify under `render` and `exec`, each frame once, and `exec` passes
Blender's `Saved:` line through with its bytes unchanged (real Blender 3.4)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.healer import RENDERWATCH, healer_env

pytestmark = [pytest.mark.blender, pytest.mark.slow]

NAME = b"caf\xe9"          # not UTF-8: Python's argv and os functions carry it as a surrogate escape


def _latin1_scene(scene_copy, tmp_path: Path) -> Path:
    src = scene_copy(frames=2)
    dst = Path(os.fsdecode(os.fsencode(tmp_path) + b"/" + NAME + b".blend"))
    shutil.copy(src, dst)
    return dst


def test_render_a_latin1_scene_into_a_latin1_output(scene_copy, tmp_path):
    scene = _latin1_scene(scene_copy, tmp_path)
    out = os.fsdecode(b"//out/" + NAME + b"_####")
    p = subprocess.run([*RENDERWATCH, "render", str(scene), "--frames", "1-2", "--output", out, "--quiet",
                        "--report", str(tmp_path / "r.json")], env=healer_env(tmp_path / "home"),
                       capture_output=True, timeout=180)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    assert sorted(os.listdir(os.fsencode(tmp_path / "out"))) == [NAME + b"_0001.png", NAME + b"_0002.png"]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["frame_render_counts"] == {"1": 1, "2": 1} and doc["restarts"] == 0


def test_exec_passes_the_saved_line_through_byte_for_byte(blender34, scene_copy, tmp_path):
    scene = _latin1_scene(scene_copy, tmp_path)
    out = os.fsdecode(os.fsencode(tmp_path) + b"/o/" + NAME + b"_####")
    p = subprocess.run([*RENDERWATCH, "exec", "--", blender34, "-b", str(scene), "-o", out, "-s", "1", "-e", "2",
                        "-a"], env=healer_env(tmp_path / "home"), capture_output=True, timeout=180)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    assert b"/o/" + NAME + b"_0001.png" in p.stdout and b"0 restarts" in p.stderr
    assert sorted(os.listdir(os.fsencode(tmp_path / "o"))) == [NAME + b"_0001.png", NAME + b"_0002.png"]
