"""A preview, then the final, into one folder: what an artist does every day, with the real CLI and real
Blender 3.4. The final frames are the final's: full size, each rendered again (renderwatch kept the
half-size or 1-sample previews as the final, "4 frame(s) already on disk ...: kept", exit 0). Blender's
own rule decides reuse: only a scene saved with Output > Overwrite off keeps frames already on disk,
and then only frames of the scene's size; a preview's frame there is rendered again."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from healer.images.read import inspect_frame
from tests.support.healer import render

pytestmark = [pytest.mark.blender, pytest.mark.slow]

FRAMES = [1, 2, 3, 4]
HALF = "import bpy\nbpy.context.scene.render.resolution_percentage = 50\n"
ONE_SAMPLE = "import bpy\nbpy.context.scene.cycles.samples = 1\n"


def sizes(scene: Path) -> dict[int, str]:
    return {f: inspect_frame(scene.parent / "frames" / f"f_{f:04d}.png").size for f in FRAMES}


def mtimes(scene: Path) -> dict[int, int]:
    return {f: (scene.parent / "frames" / f"f_{f:04d}.png").stat().st_mtime_ns for f in FRAMES}


def preview(scene: Path, tmp_path: Path, script: str, name: str = "preview") -> dict:
    py = tmp_path / f"{name}.py"
    py.write_text(script)
    rc, doc, out = render([str(scene), "--frames", "1-4", "--", "--python", str(py)], tmp_path / "home",
                          tmp_path / f"{name}.json")
    assert rc == 0, out
    return doc


def final(scene: Path, tmp_path: Path, name: str = "final", *extra: str) -> tuple[dict, str]:
    rc, doc, out = render([str(scene), "--frames", "1-4", *extra], tmp_path / "home", tmp_path / f"{name}.json")
    assert rc == 0, out
    return doc, out


def test_a_half_size_preview_then_the_final_renders_every_frame_at_full_size(blender34, scene_copy, tmp_path):
    scene = scene_copy(frames=4, width=64, height=36)
    preview(scene, tmp_path, HALF)
    assert set(sizes(scene).values()) == {"32x18"}
    doc, out = final(scene, tmp_path)
    assert sizes(scene) == {f: "64x36" for f in FRAMES}, out
    assert doc["frame_render_counts"] == {str(f): 1 for f in FRAMES}
    assert "4 frame(s) already on disk from another run: rendering them again" in out


def test_a_one_sample_preview_then_the_final_renders_every_frame_again(blender34, scene_copy, tmp_path):
    scene = scene_copy(frames=4, width=64, height=36)
    preview(scene, tmp_path, ONE_SAMPLE)
    before = mtimes(scene)
    doc, out = final(scene, tmp_path)
    assert doc["frame_render_counts"] == {str(f): 1 for f in FRAMES}, out
    assert all(t > before[f] for f, t in mtimes(scene).items())           # each file written again


def test_where_the_scene_keeps_existing_files_right_frames_are_kept_and_a_preview_is_not(
        blender34, scene_copy, tmp_path):
    scene = scene_copy(frames=4, width=64, height=36)
    # The artist turns Output > Overwrite off and saves, as Blender's docs suggest for resuming by hand.
    saved = subprocess.run([blender34, "-b", str(scene), "--python-expr",
                            "import bpy; bpy.context.scene.render.use_overwrite = False; bpy.ops.wm.save_mainfile()"],
                           capture_output=True, text=True, timeout=120)
    assert saved.returncode == 0, saved.stdout + saved.stderr
    preview(scene, tmp_path, HALF)                                         # no frames yet: rendered at 50 %
    assert set(sizes(scene).values()) == {"32x18"}
    # The final: Blender itself would skip the preview's files and deliver them; renderwatch renders them.
    doc, out = final(scene, tmp_path)
    assert sizes(scene) == {f: "64x36" for f in FRAMES}, out
    assert doc["frame_render_counts"] == {str(f): 1 for f in FRAMES}
    assert "the frame is 32x18, the scene renders 64x36" in out
    # Another job over the same frames (a new job id): the final's frames are right, so kept, as Blender would.
    before = mtimes(scene)
    doc, out = final(scene, tmp_path, "again", "--job", "final-again")
    assert doc["frame_render_counts"] == {str(f): 0 for f in FRAMES} and doc["attempts"] == [], out
    assert doc["frames_completed"] == FRAMES and mtimes(scene) == before
    assert "4 frame(s) already on disk kept: the scene skips existing files" in out


def test_under_a_farm_manager_too_exec_renders_the_final_over_a_preview(blender34, scene_copy, tmp_path):
    """`renderwatch exec -- blender ...` (a farm's task command) goes through the same supervisor."""
    from tests.support.healer import RENDERWATCH, healer_env

    scene = scene_copy(frames=4, width=64, height=36)
    py = tmp_path / "preview.py"
    py.write_text(HALF)

    def run(*blender_args: str) -> str:
        p = subprocess.run([*RENDERWATCH, "exec", "--quiet", "--", blender34, "-b", str(scene), *blender_args,
                            "-s", "1", "-e", "4", "-a"], env=healer_env(tmp_path / "home"),
                           capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr
        return p.stderr

    run("--python", str(py))
    assert set(sizes(scene).values()) == {"32x18"}
    err = run()
    assert sizes(scene) == {f: "64x36" for f in FRAMES}, err
