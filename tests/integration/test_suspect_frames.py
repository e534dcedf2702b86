"""Frames that look done but are wrong, on real Blender 3.4: a black frame (every object hidden and the
world black for one frame: Blender renders, saves and exits 0) is rendered again once, and reported
if it stays black; a scene that asks for the GPU on a host whose preferences enable none renders on
the CPU without a word from Blender, and renderwatch says so (report, --strict, the agent's events)."""

from __future__ import annotations

import json

import pytest
from healer_support import fault, render

from blender_hooks import events
from healer.diagnosis.framecheck import inspect_frame

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
