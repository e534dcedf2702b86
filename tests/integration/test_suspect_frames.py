"""Frames that look done but are wrong, on real Blender 3.4: a black frame (every object hidden and the
world black for one frame: Blender renders, saves and exits 0) is rendered again once, and reported
if it stays black; a scene that asks for the GPU on a host whose preferences enable none renders on
the CPU without a word from Blender, and renderwatch says so (report, --strict, the agent's events)."""

from __future__ import annotations

import json

import pytest

from blender_hooks import events
from healer.images.read import inspect_frame
from tests.support.healer import fault, render

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def spooled(home) -> list[dict]:
    out = []
    for seg in sorted((home / "spool").glob("*.ndjson")):
        out += [events.decode(line) for line in seg.read_bytes().splitlines() if line]
    return out


def test_a_black_frame_once_is_rendered_again_and_comes_out_right(scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    rc, doc, out = render([str(scene), "--frames", "1-4", "--", "--python", fault("black")], tmp_path / "home",
                          tmp_path / "r.json", FAULT_FRAME="3", FAULT_MARKER=str(tmp_path / "fired"))
    assert rc == 0, out
    assert doc["frame_render_counts"] == {"1": 1, "2": 1, "3": 2, "4": 1}, out
    sus = doc["suspect_frames"]["3"]
    assert sus["reasons"] == ["blank"] and sus["cleared"] is True, sus
    assert not [w for w in doc["warnings"] if w["type"] == "suspect_frame"]
    assert inspect_frame(str(scene.parent / "frames" / "f_0003.png")).uniform is None
    checks = [e for e in spooled(tmp_path / "home") if e["type"] == "frame_check"]
    assert [(e["frame"], e["reason"]) for e in checks] == [(3, "blank")]


def test_a_frame_that_stays_black_is_reported_and_strict_fails(scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    rc, doc, out = render([str(scene), "--frames", "1-4", "--strict", "--", "--python", fault("black")],
                          tmp_path / "home", tmp_path / "r.json", FAULT_FRAME="3")
    assert rc == 4, out
    assert doc["frame_render_counts"]["3"] == 2 and len(doc["attempts"]) == 2
    (w,) = [w for w in doc["warnings"] if w["type"] == "suspect_frame"]
    assert "frame 3" in w["message"] and "one value" in w["message"]
    assert "suspect_frame" in out


def test_gpu_asked_but_rendered_on_the_cpu_is_said(scene_copy, tmp_path):
    scene = scene_copy(frames=2)
    rc, doc, out = render([str(scene), "--frames", "1-2", "--", "--python", fault("gpu_asked")], tmp_path / "home",
                          tmp_path / "r.json")
    assert rc == 0, out
    (w,) = [w for w in doc["warnings"] if w["type"] == "cpu_fallback"]
    assert "asks for GPU" in w["message"] and "None" in w["message"], w
    ends = [e for e in spooled(tmp_path / "home") if e["type"] == "frame_end"]
    assert ends and all(e["device_asked"] == "GPU" and e["device_type"] == "CPU" for e in ends), ends
    assert "cpu_fallback" in out
    settings = [ln for ln in out.splitlines() if ln.startswith(events.SETTINGS_MARK)]
    assert not settings or json.loads(settings[0][len(events.SETTINGS_MARK):])["device_used"] == "CPU"


def test_a_half_rendered_frame_is_found_rendered_again_and_reported_if_it_stays(scene_copy, tmp_path):
    """Real Blender saves a full-size frame of which only the bottom half was rendered (a render border:
    the rest is 0 in every channel, as the tiles a failed GPU render never reached) and exits 0."""
    scene = scene_copy(frames=4, width=160, height=90)
    rc, doc, out = render([str(scene), "--frames", "1-4", "--", "--python", fault("unrendered")],
                          tmp_path / "once", tmp_path / "r1.json", FAULT_FRAME="3", FAULT_MARKER=str(tmp_path / "fired"))
    assert rc == 0, out
    assert doc["frame_render_counts"] == {"1": 1, "2": 1, "3": 2, "4": 1}, out
    sus = doc["suspect_frames"]["3"]
    assert sus["reasons"] == ["partial"] and sus["cleared"] is True, sus
    assert "y 0-" in sus["detail"] and "frame 2" in sus["detail"], sus
    checks = [e for e in spooled(tmp_path / "once") if e["type"] == "frame_check"]
    assert [(e["frame"], e["reason"]) for e in checks] == [(3, "partial")]

    for f in (scene.parent / "frames").glob("*.png"):
        f.unlink()
    rc, doc, out = render([str(scene), "--frames", "1-4", "--strict", "--", "--python", fault("unrendered")],
                          tmp_path / "always", tmp_path / "r2.json", FAULT_FRAME="3")
    assert rc == 4, out
    assert doc["frame_render_counts"]["3"] == 2
    (w,) = [w for w in doc["warnings"] if w["type"] == "suspect_frame"]
    assert "frame 3" in w["message"] and "empty" in w["message"], w


def test_a_multilayer_exr_whose_beauty_is_black_beside_real_passes_is_rendered_again(scene_copy, tmp_path):
    """Multilayer EXR with depth and normal passes: the lights are off for frame 3, so its beauty is black
    while its passes still show the objects (their chunks are far from flat). Judged on the Combined
    channels alone, read chunk by chunk."""
    scene = scene_copy(frames=4)
    ml = tmp_path / "multilayer.py"
    ml.write_text("import bpy\ns = bpy.context.scene\ns.render.image_settings.file_format = 'OPEN_EXR_MULTILAYER'\n"
                  "s.view_layers[0].use_pass_z = True\ns.view_layers[0].use_pass_normal = True\n")
    rc, doc, out = render([str(scene), "--frames", "1-4", "--", "--python", str(ml), "--python", fault("black")],
                          tmp_path / "home", tmp_path / "r.json", FAULT_FRAME="3", FAULT_KEEP_OBJECTS="1",
                          FAULT_MARKER=str(tmp_path / "fired"))
    assert rc == 0, out
    assert doc["frame_render_counts"] == {"1": 1, "2": 1, "3": 2, "4": 1}, out
    assert doc["suspect_frames"]["3"]["reasons"] == ["blank"] and doc["suspect_frames"]["3"]["cleared"] is True
    assert inspect_frame(str(scene.parent / "frames" / "f_0003.exr")).uniform is None


def _host_has_a_gpu() -> bool:
    import glob

    return bool(glob.glob("/dev/dri/renderD*") or glob.glob("/dev/nvidia[0-9]*"))


@pytest.mark.skipif(_host_has_a_gpu(), reason="this host has a GPU device: EEVEE may render on it for real")
def test_eevee_on_a_host_without_a_gpu_is_said_to_render_on_the_cpu(scene_copy, tmp_path):
    """Real EEVEE on Debian's Blender 3.4 on this GPU-less host: Mesa's software driver draws the frames,
    Blender prints only EGL notices and exits 0. renderwatch says so (the warning, the agent's events)."""
    scene = scene_copy(frames=2)
    rc, doc, out = render([str(scene), "--frames", "1-2", "--", "--python", fault("eevee")], tmp_path / "home",
                          tmp_path / "r.json", timeout=300)
    assert rc == 0, out
    (w,) = [w for w in doc["warnings"] if w["type"] == "cpu_fallback"]
    assert "software OpenGL/Vulkan driver" in w["message"] and "BLENDER_EEVEE" in w["message"], w
    checks = [e for e in spooled(tmp_path / "home") if e["type"] == "frame_check"]
    assert [(e["frame"], e["reason"]) for e in checks] == [(1, "cpu_fallback"), (2, "cpu_fallback")], checks
