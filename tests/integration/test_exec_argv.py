"""`renderwatch exec` keeps Blender's argument order and semantics (real Blender 3.4), and takes the
command lines farm managers write: Flamenco's (`-b -y FILE --render-output ... --render-format PNG
--render-frame 1..3`)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.healer import RENDERWATCH, healer_env

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def _exec(tmp_path, *blender_cmd, report=None):
    cmd = [*RENDERWATCH, "exec", *(["--report", str(report)] if report else []), "--quiet", "--", *blender_cmd]
    return subprocess.run(cmd, env=healer_env(tmp_path / "home"), capture_output=True, text=True, timeout=180)


def test_arguments_after_the_render_run_after_it_and_s_alone_renders_to_the_end(blender34, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    p = _exec(tmp_path, blender34, "-b", str(scene), "-s", "3", "-a",
              "--python-expr", "print('AFTER-THE-RENDER', flush=True)", report=tmp_path / "r.json")
    assert p.returncode == 0, p.stderr
    out = p.stdout                                                 # Blender's own output, passed through
    assert out.index("AFTER-THE-RENDER") > out.rindex("Saved:")    # as Blender runs it: after -a
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["frames_requested"] == [3, 4]                       # -s 3 -a: frame 3 to the scene's end


def test_flamencos_command_line(blender34, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    out = tmp_path / "flamenco" / "frame_######"
    p = _exec(tmp_path, blender34, "-b", "-y", str(scene), "--render-output", str(out), "--render-format", "PNG",
              "--render-frame", "1..3", report=tmp_path / "r.json")
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in out.parent.iterdir()) == ["frame_000001.png", "frame_000002.png",
                                                            "frame_000003.png"]
    assert p.stdout.count("Saved:") == 3
    assert json.loads((tmp_path / "r.json").read_text())["frames_completed"] == [1, 2, 3]


def _own_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "[renderwatch]" in line]


@pytest.mark.parametrize("how", ["exec", "render", "supervise-only"])
def test_blenders_stdout_carries_none_of_renderwatchs_markers(blender34, scene_copy, tmp_path, how):
    """`[renderwatch] frame_start ...` and `[renderwatch] render settings {...}` (printed inside Blender by
    what the healer injects) were passed through to stdout with Blender's lines; farms parse that stdout."""
    scene = scene_copy(frames=4)
    env = healer_env(tmp_path / "home")
    if how == "exec":
        cmd = [*RENDERWATCH, "exec", "--quiet", "--", blender34, "-b", str(scene), "-s", "1", "-e", "2", "-a"]
    elif how == "render":
        cmd = [*RENDERWATCH, "render", str(scene), "--frames", "1-2", "--blender", blender34, "--quiet",
               "--blender-output"]
    else:   # no -a/-f: a script renders, renderwatch only watches
        cmd = [*RENDERWATCH, "exec", "--", blender34, "-b", str(scene), "--python-expr",
               "import bpy; bpy.ops.render.render(write_still=True)"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Saved:" in p.stdout and "Fra:" in p.stdout               # Blender's own lines, unchanged
    assert _own_lines(p.stdout) == [], _own_lines(p.stdout)


def test_a_closed_stdout_does_not_stop_the_render(blender34, scene_copy, tmp_path):
    """The task log's reader goes away mid-render: the frames are still rendered and verified (exit 0),
    with no traceback; the output is no longer passed through."""
    import os

    scene = scene_copy(frames=4)
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([*RENDERWATCH, "exec", "--", blender34, "-b", str(scene), "-s", "1", "-e", "3", "-a"],
                           env=healer_env(tmp_path / "home"), stdout=w, stderr=subprocess.PIPE, text=True, timeout=180)
    finally:
        os.close(w)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr[-3000:]
    assert "complete: 3/3 frames" in p.stderr
    assert len(list((scene.parent / "frames").iterdir())) == 3


def test_relative_frames_mean_what_blender_means(blender34, scene_copy, tmp_path):
    """`-s +1 -e -1 -a` on a 1-4 scene is Blender's 2..3 (start + 1, end - 1): run as given, each frame
    once, no restart (before: `-f -1`-style frames made the healer restart Blender 48 times in 45 s)."""
    scene = scene_copy(frames=4)
    p = _exec(tmp_path, blender34, "-b", str(scene), "-s", "+1", "-e", "-1", "-a")
    assert p.returncode == 0, p.stderr
    assert "relative to the scene's range" in p.stderr
    assert sorted(x.name for x in (scene.parent / "frames").iterdir()) == ["f_0002.png", "f_0003.png"]
    assert p.stdout.count("Saved:") == 2 and "restart" not in p.stderr


def test_a_huge_range_is_refused_before_anything_starts(blender34, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    p = _exec(tmp_path, blender34, "-b", str(scene), "-s", "1", "-e", "100000000", "-a")
    assert p.returncode == 2 and "beyond Blender's last frame" in p.stderr and "Traceback" not in p.stderr
    p = _exec(tmp_path, blender34, "-b", str(scene), "-s", "1", "-e", "900000", "-a")
    assert p.returncode == 2 and "more than 100000 frames" in p.stderr
    p = subprocess.run([*RENDERWATCH, "exec", "--frames", "1-x", "--", blender34, "-b", str(scene), "-a"],
                       env=healer_env(tmp_path / "home"), capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "'1-x'" in p.stderr and "Traceback" not in p.stderr
