"""Parsing what Blender reports (stats strings, memory figures, frame lists): plain CPython."""

from __future__ import annotations

import pytest

from blender_hooks.stats import cli_frames, frame_range, parse_frame_list, parse_memory, phase_of

# Stats strings Blender 5.0 passed to the render_stats handler for one frame, in order (captured
# from the bpy==5.0.1 wheel rendering the demo scene).
STATS_5_0 = [
    "Mem: 0M | Synchronizing object | Cube", "Mem: 0M | Synchronizing object | Suzanne",
    "Mem: 0M | Initializing", "Mem: 0M | Waiting for render to start", "Mem: 0M | Updating Scene",
    "Mem: 0M | Loading render kernels (may take a few minutes the first time)",
    "Mem: 1M | Updating Meshes", "Mem: 1M | Updating Scene BVH | Building",
    "Mem: 1M | Updating Scene BVH | Building BVH 0%", "Mem: 1M | Updating Lights",
    "Mem: 2M | Updating Film", "Mem: 2M | Sample 0/8", "Remaining: 00:00.00 | Mem: 2M | Sample 1/8",
    "Mem: 2M | Sample 8/8", "Mem: 2M | Finished", "Time: 00:00.07 (Saving: 00:00.02)",
]


def phases(lines: list[str]) -> list[str]:
    """What the handler emits: the phase, on each change only."""
    out: list[str] = []
    for line in lines:
        p = phase_of(line)
        if p and (not out or out[-1] != p):
            out.append(p)
    return out


def test_phases_of_a_real_5_0_frame():
    assert phases(STATS_5_0) == ["sync", "kernels", "bvh", "sampling", "save"]


@pytest.mark.parametrize("line,phase", [
    ("Mem: 3M | Denoising", "denoise"), ("Mem: 3M | Sample 16/16 | Denoising", "denoise"),
    ("Rendered 3/12 Tiles", "sampling"), ("Path Tracing Tile 2/4", "sampling"),
    ("Mem: 9M | Compositing | Tile 1-1", "compositing"), ("Mem: 0M | Updating Lights", None), ("", None),
])
def test_phase_keys(line, phase):
    assert phase_of(line) == phase


def test_parse_memory():
    assert parse_memory("Mem: 12M | Sample 3/8") == 12 * 2**20
    assert parse_memory("Fra:1 Mem:13.07M (Peak 14.23M) | Time:00:00.12 | Mem:3.58M, Peak:3.58M") == pytest.approx(14.23 * 2**20)
    assert parse_memory("Collection | Suzanne | Verts:2,020 | Objects:1/4 | Memory: 9.3 MiB | 3.4.1") == pytest.approx(9.3 * 2**20)
    assert parse_memory("Mem: 1.5G") == 1.5 * 2**30
    assert parse_memory("Time: 00:00.07 (Saving: 00:00.02)") == 0.0


def test_frame_lists():
    assert parse_frame_list("1,3,5") == [1, 3, 5]
    assert parse_frame_list("2..4,9") == [2, 3, 4, 9]
    assert parse_frame_list("x") is None
    assert cli_frames(["blender", "-b", "a.blend", "-f", "3,1", "--render-frame", "5..6", "--", "-f", "9"]) == [1, 3, 5, 6]
    assert cli_frames(["blender", "-b", "a.blend", "-a"]) is None
    assert frame_range([1, 3, 5]) == (1, 5, 2)
    assert frame_range([1, 2, 7]) == (1, 7, 1)
    assert frame_range([4]) == (4, 4, 1)
