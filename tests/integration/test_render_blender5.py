"""The healer drives Blender 5.0 (the bpy==5.0.1 wheel through `renderwatch-blender5`) through a crash.

As a Python module Blender 5.0 writes no crash file: the signal and the new log format
(`00:00.327  render | Saved: '...'`) are all the healer gets.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from healer_support import assert_every_frame_once, fault, render

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def test_segfault_once_on_blender_5(scene_copy, tmp_path, bpy_py):
    exe = shutil.which("renderwatch-blender5", path=str(Path(sys.executable).parent))
    assert exe, "renderwatch-blender5 is installed with the package"
    scene = scene_copy(frames=4)
    rc, doc, out = render([str(scene), "--frames", "1-3", "--blender", exe, "--", "--python", fault("segfault")],
                          tmp_path / "home", tmp_path / "r.json", FAULT_FRAME="2", FAULT_MARKER=str(tmp_path / "m"))
    assert rc == 0, out
    assert_every_frame_once(doc, [1, 2, 3])
    first, second = doc["attempts"]
    assert first["error_type"] == "segfault" and first["exit_signal"] == 11 and first["frames_rendered"] == [1]
    assert second["frames_planned"] == [2, 3] and second["error_type"] == "ok"
    assert doc["frame_render_counts"] == {"1": 1, "2": 2, "3": 1}
