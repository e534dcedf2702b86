"""Deadline Cloud's Blender adaptor (deadline-cloud-for-blender, run locally with `blender-openjd run`: no
cloud needed) with renderwatch in its Blender's place (BLENDER_EXECUTABLE=renderwatch-exec-blender,
RENDERWATCH_BLENDER=Debian's 3.4). The adaptor starts Blender with no .blend and no frames and drives it
over a socket, so renderwatch supervises only: the adaptor still sees every line it waits for, the hooks
report each frame, a crash is classified and the task fails with Blender's status."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.healer import healer_env, spooled_events

pytestmark = [pytest.mark.blender, pytest.mark.slow]
BIN = Path(sys.executable).parent


def _adaptor(tmp_path: Path, scene: Path, frame: int, blender_executable: str, **env: str):
    out = tmp_path / "out"
    init = {"scene_file": str(scene), "render_engine": "cycles", "gpu_device": "", "render_scene": "Scene",
            "view_layer": "ViewLayer", "output_dir": str(out), "output_file_name": "f_####", "output_format": "PNG"}
    (tmp_path / "init.json").write_text(json.dumps(init))
    e = healer_env(tmp_path / "home", BLENDER_EXECUTABLE=blender_executable, **env)
    e["PATH"] = f"{BIN}:{e['PATH']}"
    exe = shutil.which("blender-openjd", path=str(BIN))
    assert exe, "deadline-cloud-for-blender is installed with the test extras"
    return subprocess.run([exe, "run", "--init-data", f"file://{tmp_path / 'init.json'}",
                           "--run-data", json.dumps({"frame": frame})], env=e, capture_output=True, text=True,
                          timeout=240), out


def test_the_adaptor_renders_through_renderwatch(scene_copy, tmp_path, blender34):
    scene = scene_copy(frames=4)
    p, out = _adaptor(tmp_path, scene, 2, str(BIN / "renderwatch-exec-blender"), RENDERWATCH_BLENDER=blender34)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "BlenderClient: Finished Rendering Frame 2" in p.stdout + p.stderr   # passed through unchanged
    assert [x.name for x in out.iterdir()] == ["ViewLayer_f_0002.png"]
    ends = [e for e in spooled_events(tmp_path / "home" / "spool") if e["type"] == "frame_end"]
    assert [e["frame"] for e in ends] == [2] and ends[0]["saved"] is True       # the hooks counted it


def test_a_crash_under_the_adaptor_is_classified_and_fails_the_task(scene_copy, tmp_path, blender34):
    scene = scene_copy(frames=4)
    # The adaptor's client opens the scene itself, after every command-line script: the fault's
    # handler must be persistent to survive that load (tests/faults/ ones are not).
    fault = tmp_path / "persistent_segfault.py"
    fault.write_text("import ctypes, bpy\nfrom bpy.app.handlers import persistent\n@persistent\n"
                     "def boom(scene, *_):\n    if scene.frame_current == 2: ctypes.string_at(0)\n"
                     "bpy.app.handlers.render_pre.append(boom)\n")
    wrapper = tmp_path / "blender-with-a-fault"     # the farm's Blender path, with the fault script added
    wrapper.write_text(f"#!/bin/sh\nexec {BIN / 'renderwatch-exec-blender'} --python {fault} \"$@\"\n")
    wrapper.chmod(0o755)
    p, _out = _adaptor(tmp_path, scene, 2, str(wrapper), RENDERWATCH_BLENDER=blender34)
    assert p.returncode != 0
    assert "renderwatch: Blender ended: segfault" in p.stdout + p.stderr


def test_a_black_frame_in_an_adaptor_session_is_warned_in_that_tasks_log(scene_copy, tmp_path, blender34):
    """Deadline Cloud's worker runs the adaptor as a daemon: one Blender per session, a `daemon run` per
    task. renderwatch judges each saved frame against the session's frames so far, so the warning is in
    the log of the task that rendered the black frame (not the session's end), and the agent hears of it."""
    scene = scene_copy(frames=4)
    fault = tmp_path / "persistent_black.py"        # frame 2 black (objects hidden, world black), persistent
    fault.write_text(
        "import bpy\nfrom bpy.app.handlers import persistent\n_h = []\n@persistent\ndef pre(scene, *_):\n"
        "    if scene.frame_current == 2:\n"
        "        for ob in scene.objects:\n"
        "            if not ob.hide_render: ob.hide_render = True; _h.append(ob.name)\n"
        "        scene.world.use_nodes = False; scene.world.color = (0, 0, 0)\n"
        "@persistent\ndef post(scene, *_):\n"
        "    for n in _h: bpy.data.objects[n].hide_render = False\n    _h.clear()\n"
        "bpy.app.handlers.render_pre.append(pre)\nbpy.app.handlers.render_post.append(post)\n")
    wrapper = tmp_path / "blender-with-a-fault"
    wrapper.write_text(f"#!/bin/sh\nexec {BIN / 'renderwatch-exec-blender'} --python {fault} \"$@\"\n")
    wrapper.chmod(0o755)
    init = {"scene_file": str(scene), "render_engine": "cycles", "gpu_device": "", "render_scene": "Scene",
            "view_layer": "ViewLayer", "output_dir": str(tmp_path / "out"), "output_file_name": "f_####",
            "output_format": "PNG"}
    (tmp_path / "init.json").write_text(json.dumps(init))
    e = healer_env(tmp_path / "home", BLENDER_EXECUTABLE=str(wrapper), RENDERWATCH_BLENDER=blender34)
    e["PATH"] = f"{BIN}:{e['PATH']}"
    exe = shutil.which("blender-openjd", path=str(BIN))
    conn = ["--connection-file", str(tmp_path / "conn.json")]

    def daemon(*args: str) -> str:
        p = subprocess.run([exe, "daemon", *args, *conn], env=e, capture_output=True, text=True, timeout=240)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        return p.stdout + p.stderr

    daemon("start", "--init-data", f"file://{tmp_path / 'init.json'}")
    logs = {f: daemon("run", "--run-data", json.dumps({"frame": f})) for f in (1, 2, 3)}
    logs["stop"] = daemon("stop")
    told = [k for k, log in logs.items() if "warning: suspect_frame: frame 2: every pixel is one value" in log]
    assert told and told[0] in (2, 3), {k: v[-1500:] for k, v in logs.items()}
    checks = [ev for ev in spooled_events(tmp_path / "home" / "spool") if ev["type"] == "frame_check"]
    assert [(ev["frame"], ev["reason"]) for ev in checks] == [(2, "blank")]
