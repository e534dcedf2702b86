"""`renderwatch exec` keeps Blender's argument order and semantics (real Blender 3.4), and takes the
command lines farm managers write: Flamenco's (`-b -y FILE --render-output ... --render-format PNG
--render-frame 1..3`)."""

from __future__ import annotations

import json
import subprocess

import pytest
from healer_support import RENDERWATCH, healer_env

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
