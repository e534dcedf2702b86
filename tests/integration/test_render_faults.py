"""`renderwatch render` on real Blender 3.4 with real faults injected by `--python` scripts.

Each crash happens once (FAULT_MARKER), at frame 3 of 1-4: the report must show frames 1-2 rendered
once, frame 3 (in flight) rendered again, frame 4 once, and the right error type per attempt.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from healer.images.verify import verify_image
from tests.support.healer import assert_every_frame_once, fault, render

pytestmark = [pytest.mark.blender, pytest.mark.slow]
FRAMES = [1, 2, 3, 4]


@pytest.mark.parametrize("script, etype, signal", [
    ("segfault", "segfault", 11),
    ("sigkill", "killed", 9),
    ("abort", "abort", 6),
])
def test_crash_once_at_frame_3_renders_only_the_frame_in_flight_again(scene_copy, tmp_path, script, etype, signal):
    scene = scene_copy(frames=4)
    rc, doc, out = render([str(scene), "--frames", "1-4", "--", "--python", fault(script)], tmp_path / "home",
                          tmp_path / "r.json", FAULT_FRAME="3", FAULT_MARKER=str(tmp_path / "fired"))
    assert rc == 0, out
    assert doc["status"] == "complete"
    assert_every_frame_once(doc, FRAMES)
    assert doc["frame_render_counts"] == {"1": 1, "2": 1, "3": 2, "4": 1}
    assert doc["restarts"] == 1
    first, second = doc["attempts"]
    assert (first["error_type"], first["exit_signal"], first["frames_rendered"]) == (etype, signal, [1, 2])
    assert "frame 3" in first["error_summary"]
    assert (second["error_type"], second["frames_planned"], second["frames_rendered"]) == ("ok", [3, 4], [3, 4])
    for f in FRAMES:
        assert verify_image(scene.parent / "frames" / f"f_{f:04d}.png").ok


def test_a_hanging_handler_is_a_stall_and_is_restarted(scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    t0 = time.monotonic()
    rc, doc, out = render([str(scene), "--frames", "1-3", "--stall-timeout", "3", "--", "--python", fault("hang")],
                          tmp_path / "home", tmp_path / "r.json", FAULT_FRAME="2", FAULT_MARKER=str(tmp_path / "fired"))
    assert rc == 0, out
    assert_every_frame_once(doc, [1, 2, 3])
    first = doc["attempts"][0]
    assert first["error_type"] == "stall" and first["frames_rendered"] == [1]
    assert doc["frame_render_counts"] == {"1": 1, "2": 2, "3": 1}
    # stall detection within timeout + 1 s of the last progress (the marker of frame 2)
    assert first["ended_at"] - first["started_at"] < 3 + 1 + 3
    assert time.monotonic() - t0 < 30


def test_python_error_in_a_handler_is_reported_and_the_render_completes(scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    args = [str(scene), "--frames", "1-3", "--", "--python", fault("pyerr")]
    rc, doc, out = render(args, tmp_path / "home", tmp_path / "r.json", FAULT_FRAME="2")
    assert rc == 0, out
    assert_every_frame_once(doc, [1, 2, 3])
    assert len(doc["attempts"]) == 1 and doc["attempts"][0]["error_type"] == "python_error"
    assert any(w["type"] == "python_error" for w in doc["warnings"])
    assert "python_error" in out

    rc, doc, out = render([str(scene), "--frames", "1-3", "--strict", "--output", str(tmp_path / "strict" / "f_"),
                           "--", "--python", fault("pyerr")], tmp_path / "home", tmp_path / "r2.json", FAULT_FRAME="2")
    assert rc == 4, out
    assert doc["status"] == "failed" and doc["error"]["type"] == "python_error"
    assert doc["frames_completed"] == [1, 2, 3]


def test_missing_blend_fails_fast_without_launching(tmp_path):
    t0 = time.monotonic()
    rc, doc, out = render([str(tmp_path / "lighting_v012.blend"), "--frames", "1-3"], tmp_path / "home",
                          tmp_path / "r.json")
    assert rc == 3, out
    assert doc["status"] == "failed" and doc["error"]["type"] == "missing_file"
    assert "lighting_v012.blend" in doc["error"]["message"]
    assert doc["attempts"] == [] and doc["restarts"] == 0
    assert time.monotonic() - t0 < 10


def test_unwritable_output_is_a_fast_typed_failure(scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the output folder should be")
    rc, doc, out = render([str(scene), "--frames", "1-3", "--output", str(blocker / "f_####")], tmp_path / "home",
                          tmp_path / "r.json")
    assert rc == 3, out
    assert doc["error"]["type"] == "output_error" and f"{blocker} is not a folder" in doc["error"]["message"]
    assert doc["attempts"] == [] and doc["restarts"] == 0      # found before Blender renders anything
    assert doc["frames_completed"] == []


def _read_only_mount_works(folder) -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {folder} {folder} && "
                            f"mount -o remount,bind,ro {folder} {folder}"], capture_output=True)
    return probe.returncode == 0


def test_a_read_only_output_folder_is_found_before_blender_renders(scene_copy, tmp_path, blender34):
    """The output folder on a read-only file system: found only after the first frame had rendered in
    full (Blender's `cannot save`); now the job fails at once, before a Blender renders, naming the folder."""
    import os
    import sys

    from tests.support.healer import healer_env

    scene = scene_copy(frames=4)
    renders = tmp_path / "renders"
    (renders / "existing").mkdir(parents=True)
    if not _read_only_mount_works(renders):
        pytest.skip("cannot make a read-only bind mount here (needs unshare -m and mount)")
    report = tmp_path / "r.json"
    mount_ro = f'mount --bind "{renders}" "{renders}" && mount -o remount,bind,ro "{renders}" "{renders}" && exec "$@"'
    for out_dir in (renders / "existing", renders / "new" / "sub"):       # an existing folder, one to create
        t0 = time.monotonic()
        p = subprocess.run(["unshare", "-m", "sh", "-c", mount_ro, "sh", sys.executable, "-m", "renderwatch", "exec",
                            "--report", str(report), "--", blender34, "-b", str(scene), "-o", str(out_dir / "f_####"),
                            "-s", "1", "-e", "3", "-a"],
                           env=healer_env(tmp_path / "home"), capture_output=True, text=True, timeout=180)
        import json

        doc = json.loads(report.read_text())
        assert p.returncode == 3, p.stderr[-3000:]
        assert doc["error"]["type"] == "output_error" and "read-only" in doc["error"]["message"], doc["error"]
        assert str(renders) in doc["error"]["message"] and doc["attempts"] == []
        assert "Fra:" not in p.stdout and time.monotonic() - t0 < 30
    assert os.listdir(renders) == ["existing"]                 # nothing created on the way


@pytest.fixture
def texture_scene(scene_factory, blender34, tmp_path):
    from tests.support.healer import FAULTS
    out = tmp_path / "tex_shot" / "textured.blend"
    out.parent.mkdir()
    subprocess.run([blender34, "-b", str(scene_factory(frames=4)), "--python", str(FAULTS / "make_texture_scene.py"),
                    "--", str(out)], check=True, capture_output=True, timeout=120)
    (out.parent / "textures" / "albedo.png").unlink()
    return out


def test_missing_texture_is_reported_and_strict_fails_before_any_render(texture_scene, tmp_path):
    rc, doc, out = render([str(texture_scene), "--frames", "1-2"], tmp_path / "home", tmp_path / "r.json")
    assert rc == 0, out
    assert_every_frame_once(doc, [1, 2])
    missing = [w for w in doc["warnings"] if w["type"] == "missing_file"]
    assert missing and "albedo.png" in missing[0]["message"]

    t0 = time.monotonic()
    rc, doc, out = render([str(texture_scene), "--frames", "1-2", "--strict", "--output", str(tmp_path / "s" / "f_")],
                          tmp_path / "home", tmp_path / "r2.json")
    assert rc == 4, out
    assert doc["error"]["type"] == "missing_file" and "albedo.png" in doc["error"]["message"]
    assert doc["attempts"] == []                   # no Blender (no GPU time) spent
    assert time.monotonic() - t0 < 10


def test_partial_png_left_by_a_crash_while_saving_is_rendered_again(scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    rc, doc, out = render([str(scene), "--frames", "1-3", "--", "--python", fault("partial")], tmp_path / "home",
                          tmp_path / "r.json", FAULT_FRAME="2", FAULT_MARKER=str(tmp_path / "fired"))
    assert rc == 0, out
    assert_every_frame_once(doc, [1, 2, 3])
    first = doc["attempts"][0]
    assert first["error_type"] == "killed" and first["frames_rendered"] == [1]
    assert doc["frame_render_counts"] == {"1": 1, "2": 2, "3": 1}
    assert verify_image(scene.parent / "frames" / "f_0002.png").ok


def test_another_jobs_frames_are_rendered_again_where_the_scene_overwrites(scene_copy, tmp_path):
    """Frames another job left (one of them cut short by a crash) are not this job's: the scene renders over
    existing files (Output > Overwrite on, Blender's default), so Blender would render them again, and so
    does renderwatch (it used to keep frame 1 and deliver whatever an earlier run had made)."""
    scene = scene_copy(frames=4)
    rc, doc, _ = render([str(scene), "--frames", "1-2", "--job", "first"], tmp_path / "home", tmp_path / "r0.json")
    assert rc == 0
    frames_dir = scene.parent / "frames"
    data = (frames_dir / "f_0002.png").read_bytes()
    (frames_dir / "f_0002.png").write_bytes(data[: len(data) // 2])     # a partial file from some earlier crash
    rc, doc, out = render([str(scene), "--frames", "1-4"], tmp_path / "home", tmp_path / "r.json")
    assert rc == 0, out
    assert_every_frame_once(doc, FRAMES)
    assert doc["frame_render_counts"] == {"1": 1, "2": 1, "3": 1, "4": 1}
    assert doc["attempts"][0]["frames_planned"] == [1, 2, 3, 4]
    assert "already on disk from another run: rendering them again" in out
