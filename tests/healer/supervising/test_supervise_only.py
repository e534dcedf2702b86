"""Supervise-only mode (a caller that drives Blender itself, as the Deadline Cloud adaptor does) still
looks at every saved frame: nothing can be rendered again there, so a frame that looks wrong is a
`suspect_frame` warning (the farm log, the incident, the report) and a silent CPU fallback a
`cpu_fallback` one. Blender is a scripted stand-in behind the `seams.Launcher` seam that says the
lines real Blender and the hooks say; the frame files are real PNGs the healer reads."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from blender_hooks import events
from healer.supervising.spawn import MARKER
from healer.supervising.supervise_only import supervise_only
from tests.support.fakes import IncidentRecorder
from tests.support.healer import spooled_events

np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")


class Said:
    """A Blender that says `lines` (writing each frame's file before its `Saved:` line) and exits 0."""

    def __init__(self, lines: list[str | tuple[Path, np.ndarray]]):
        self.lines, self.pid, self.tail, self.last_output_at = lines, 4242, [], 0.0

    def spawn(self, argv, *, env):
        return self

    async def attach(self, spawned, on_line):
        self.said = asyncio.get_running_loop().create_task(self._say(on_line))    # after attach returns
        return self

    async def _say(self, on_line):
        for item in self.lines:
            if isinstance(item, tuple):
                path, img = item
                Image.fromarray(img).save(path)
                item = f"Saved: '{path}'"
            self.tail.append(item)
            on_line(item, 0.0)
            await asyncio.sleep(0)

    def returncode(self):
        return 0 if self.said.done() else None

    async def wait(self):
        await self.said
        return 0

    async def stop(self, grace_s):
        pass


def picture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(30, 220, (36, 64, 4), dtype=np.uint8)
    img[..., 3] = 255
    return img


def frames(tmp_path, images: dict[int, np.ndarray], settings: dict | None = None) -> list:
    out: list = []
    if settings is not None:
        out.append(events.SETTINGS_MARK + json.dumps(settings))
    for f, img in images.items():
        path = tmp_path / f"ViewLayer_f_{f:04d}.png"
        out += [f"{MARKER}{f} {path}", f"Fra:{f} Mem:12.00M | Sample 8/8", (path, img)]
    out.append("BlenderClient: Finished Rendering Frame 3")
    return out


def run(tmp_path, lines, **kw):
    sink, said = IncidentRecorder(), []
    env = {"RENDERWATCH_HOME": str(tmp_path / "home"), "RENDERWATCH_AGENT": "off"}
    code = asyncio.run(supervise_only(["blender", "--background"], env=env, incidents=sink, launcher=Said(lines),
                                      say=said.append, echo=lambda _l: None, report=str(tmp_path / "r.json"), **kw))
    return code, sink, said, json.loads((tmp_path / "r.json").read_text())


SETTINGS = {"engine": "CYCLES", "file_format": "PNG", "color_mode": "RGBA", "width": 64, "height": 36,
            "device_asked": "CPU", "device_used": "CPU", "fallback": None}


def test_a_black_frame_and_a_half_empty_one_are_warned_not_rendered_again(tmp_path):
    black = np.zeros((36, 64, 4), np.uint8)
    black[..., 3] = 255
    half = picture(4)
    half[:18] = 0
    lines = frames(tmp_path, {1: picture(1), 2: black, 3: picture(3), 4: half}, SETTINGS)
    code, sink, said, doc = run(tmp_path, lines)
    assert code == 0                                  # Blender's status: the adaptor decides the task
    assert sorted(doc["suspect_frames"]) == ["2", "4"]
    assert doc["suspect_frames"]["2"]["reasons"] == ["blank"]
    assert doc["suspect_frames"]["4"]["reasons"] == ["partial"] and "frame 3" in doc["suspect_frames"]["4"]["detail"]
    warned = [(i["frame"], e.type) for k, i, e in sink.got if k == "render.warning"]
    assert warned == [(2, "suspect_frame"), (4, "suspect_frame")]
    assert any(s.startswith("warning: suspect_frame: frame 2: every pixel is one value") for s in said), said
    checks = [(e["job"], e["frame"], e["reason"]) for e in spooled_events(tmp_path / "home" / "spool")
              if e["type"] == "frame_check"]
    assert checks == [(doc["job"], 2, "blank"), (doc["job"], 4, "partial")]      # the agent's metric and trace


def test_the_wrong_size_and_a_silent_cpu_fallback(tmp_path):
    settings = {**SETTINGS, "device_asked": "GPU:CUDA", "device_used": "CPU",
                "fallback": "compute device type None in the preferences"}
    small = picture(2)[:18, :32]
    code, sink, said, doc = run(tmp_path, frames(tmp_path, {1: picture(1), 2: small}, settings))
    assert doc["suspect_frames"]["2"]["reasons"] == ["resolution"]
    types = [e.type for k, _i, e in sink.got if k == "render.warning"]
    assert types == ["cpu_fallback", "suspect_frame"]
    assert any("asks for GPU:CUDA rendering but Cycles renders on the CPU" in s for s in said)


def test_right_frames_say_nothing_and_checks_can_be_off(tmp_path):
    lines = frames(tmp_path, {1: picture(1), 2: picture(2), 3: picture(3)}, SETTINGS)
    code, sink, said, doc = run(tmp_path, lines)
    assert doc["suspect_frames"] == {} and not [s for s in said if "warning" in s]
    assert [k for k, _i, _e in sink.got] == ["render.started", "render.completed"]
    black = np.zeros((36, 64, 4), np.uint8)
    code, sink, said, doc = run(tmp_path, frames(tmp_path, {1: picture(1), 2: black}, SETTINGS), check_frames=False)
    assert doc["suspect_frames"] == {}


def test_a_black_first_frame_is_told_when_a_frame_that_is_not_comes(tmp_path):
    black = np.zeros((36, 64, 4), np.uint8)
    black[..., 3] = 255
    code, sink, said, doc = run(tmp_path, frames(tmp_path, {1: black, 2: black, 3: picture(3)}, SETTINGS))
    assert sorted(doc["suspect_frames"]) == ["1", "2"]
    warned = [i["frame"] for k, i, e in sink.got if k == "render.warning"]
    assert warned == [1, 2]
    code, sink, said, doc = run(tmp_path, frames(tmp_path, {1: black, 2: black}, SETTINGS))
    assert doc["suspect_frames"] == {}          # every frame black: a fade, or the scene; not judged


def test_eevee_on_a_software_driver_is_a_cpu_fallback_with_every_frame_told(tmp_path):
    """The driver is read from the running Blender's /proc (healer.supervising.probes.gl_driver, tested on
    real Blender in tests/integration/test_suspect_frames.py); here through its seam."""
    settings = {**SETTINGS, "engine": "BLENDER_EEVEE_NEXT"}
    asked: list[int] = []

    def driver(pid):
        asked.append(pid)
        return "software", "swrast_dri.so loaded, no GPU device open"

    code, sink, said, doc = run(tmp_path, frames(tmp_path, {1: picture(1), 2: picture(2)}, settings),
                                gl_driver=driver)
    assert asked == [4242]                      # asked once, of Blender's pid
    assert [e.type for k, _i, e in sink.got if k == "render.warning"] == ["cpu_fallback"]
    assert any("BLENDER_EEVEE_NEXT renders on a software OpenGL/Vulkan driver" in s for s in said), said
    assert [(e["frame"], e["reason"]) for e in spooled_events(tmp_path / "home" / "spool")
            if e["type"] == "frame_check"] == \
        [(1, "cpu_fallback"), (2, "cpu_fallback")]
    code, sink, said, doc = run(tmp_path, frames(tmp_path, {1: picture(1)}, SETTINGS), gl_driver=driver)
    assert asked == [4242]                      # Cycles: not asked
