"""The healer drives each Blender of the version matrix through a crash: Debian's 3.4 binary and every
bpy wheel (through `renderwatch-blender`).

As Python modules the wheels write no crash file: the signal and the log (4.x's bare lines, 5.x's
`00:00.327  render | Saved: '...'`) are all the healer gets.
"""

from __future__ import annotations

import pytest

from tests.support.healer import assert_every_frame_once, fault, render

pytestmark = [pytest.mark.blender, pytest.mark.slow]


@pytest.mark.matrix("heal")
def test_segfault_healed_on_each_blender(matrix_blender, scene_copy, tmp_path):
    assert len(matrix_blender) == 1, "the healer takes one executable"
    scene = scene_copy(frames=4)
    rc, doc, out = render([str(scene), "--frames", "1-3", "--blender", matrix_blender[0], "--",
                           "--python", fault("segfault")],
                          tmp_path / "home", tmp_path / "r.json", FAULT_FRAME="2", FAULT_MARKER=str(tmp_path / "m"))
    assert rc == 0, out
    assert_every_frame_once(doc, [1, 2, 3])
    first, second = doc["attempts"]
    assert first["error_type"] == "segfault" and first["exit_signal"] == 11 and first["frames_rendered"] == [1]
    assert second["frames_planned"] == [2, 3] and second["error_type"] == "ok"
    assert doc["frame_render_counts"] == {"1": 1, "2": 2, "3": 1}
