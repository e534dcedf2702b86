"""Suspect frames through the supervisor: a blank frame is rendered again once, then reported (never
looped); --strict fails; a re-render that comes out right clears it; the hooks' render settings line
gives the resolution to check and the silent CPU fallback; the agent hears of each suspect frame.

Blender is the replay of recorded Debian 3.4 runs (tests/support/fake_blender.py); the frame files are what
the test writes for each `Saved:` line, and the healer reads them for real."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

from prometheus_client import CollectorRegistry

from blender_hooks import events
from healer.diagnosis.catalog import EXIT_OK, EXIT_STRICT
from healer.service.metrics import HealerMetrics
from healer.supervising.policy import Policy
from healer.supervising.supervisor import RenderRequest, Supervisor
from tests.support.fake_blender import ReplayLauncher, ReplayProbes, only_frames
from tests.support.fakes import IncidentRecorder


def png(w: int = 32, h: int = 18, flat: bytes | None = None) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + (flat * w if flat else bytes((x * 7 + y * 13 + c) % 256 for x in range(w) for c in range(4)))
                    for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


BLACK = bytes([0, 0, 0, 255])


def supervise(scene, tmp_path, runs, image, **req):
    launcher = ReplayLauncher(runs, image=image)
    sink = IncidentRecorder()
    env = {"RENDERWATCH_HOME": str(tmp_path / "home"), "RENDERWATCH_AGENT": "off"}
    sup = Supervisor(RenderRequest(scene=str(scene), frames=(1, 2, 3), blender=shutil.which("true") or "true", **req),
                     policy=Policy.default().with_overrides(backoff_base_s=0.0), incidents=sink,
                     metrics=HealerMetrics(CollectorRegistry()), env=env, launcher=launcher,
                     probes=ReplayProbes(launcher), probe_interval_s=0.01, kill_grace_s=0.1)
    return sup, launcher, sink


def blank_frame_2(attempts: set[int]):
    """Frame 2 is black on these attempts (1-based), every other frame a real picture."""
    def image(attempt: int, path: Path) -> bytes:
        return png(flat=BLACK) if path.name == "f_0002.png" and attempt in attempts else png()
    return image


def spooled(tmp_path) -> list[dict]:
    out = []
    for seg in sorted((tmp_path / "home" / "spool").glob("*.ndjson")):
        out += [events.decode(line) for line in seg.read_bytes().splitlines() if line]
    return out


async def test_a_blank_frame_is_rendered_again_once_then_reported_not_looped(scene, tmp_path):
    sup, launcher, sink = supervise(scene, tmp_path, ["ok_1-3", only_frames("ok_1-3", [2])], blank_frame_2({1, 2}))
    result = await sup.run()
    assert result.exit_code == EXIT_OK
    led = result.ledger
    assert len(launcher.argvs) == 2                       # once again, not a loop
    assert led.frame_render_counts == {1: 1, 2: 2, 3: 1}
    assert led.completed() == [1, 2, 3]
    warn = [w for w in led.warnings if w["type"] == "suspect_frame"]
    assert len(warn) == 1 and "frame 2" in warn[0]["message"] and "one value" in warn[0]["message"]
    assert led.suspects[2]["final"] and led.suspects[2]["reasons"] == ["blank"]
    i = sink.kinds.index("render.warning")
    assert type(sink.errors[i]).__name__ == "SuspectFrameError" and sink.infos[i]["frame"] == 2
    checks = [e for e in spooled(tmp_path) if e["type"] == "frame_check"]
    assert [(e["frame"], e["reason"], e["rendered"]) for e in checks] == [(2, "blank", 1), (2, "blank", 2)]
    assert all(e["job"] == led.job for e in checks)


async def test_a_re_render_that_comes_out_right_clears_it(scene, tmp_path):
    sup, launcher, _sink = supervise(scene, tmp_path, ["ok_1-3", only_frames("ok_1-3", [2])], blank_frame_2({1}))
    result = await sup.run()
    assert result.exit_code == EXIT_OK and len(launcher.argvs) == 2
    assert not [w for w in result.ledger.warnings if w["type"] == "suspect_frame"]
    assert result.ledger.suspects[2].get("cleared") is True


async def test_strict_fails_a_job_whose_frame_stays_wrong(scene, tmp_path):
    sup, _launcher, _sink = supervise(scene, tmp_path, ["ok_1-3", only_frames("ok_1-3", [2])], blank_frame_2({1, 2}),
                                      strict=True)
    result = await sup.run()
    assert result.exit_code == EXIT_STRICT
    assert "suspect_frame" in result.ledger.error["message"]


def settings_line(**over) -> str:
    d = {"engine": "CYCLES", "file_format": "PNG", "color_mode": "RGBA", "width": 32, "height": 18,
         "device_asked": "CPU", "device_used": "CPU", "fallback": None, **over}
    return events.SETTINGS_MARK + json.dumps(d)


async def test_one_wrong_size_frame_is_found_and_rendered_again(scene, tmp_path):
    extra = [settings_line()]
    image = lambda _a, p: png(16, 9) if p.name == "f_0003.png" and _a == 1 else png()   # noqa: E731
    sup, launcher, _sink = supervise(scene, tmp_path, [only_frames("ok_1-3", [1, 2, 3], extra=extra),
                                                       only_frames("ok_3", [3], extra=extra)], image)
    result = await sup.run()
    assert result.exit_code == EXIT_OK and len(launcher.argvs) == 2
    assert result.ledger.suspects[3]["reasons"] == ["resolution"] and result.ledger.suspects[3]["cleared"]
    assert "16x9" in result.ledger.suspects[3]["detail"]


async def test_the_silent_cpu_fallback_is_reported_once_and_strict_fails(scene, tmp_path):
    line = settings_line(device_asked="GPU:CUDA", device_used="CPU",
                         fallback="no CUDA device is enabled in the preferences (1 found)")
    sup, launcher, sink = supervise(scene, tmp_path, [only_frames("ok_1-3", [1, 2, 3], extra=[line, line])],
                                    lambda _a, p: png(), strict=True)
    result = await sup.run()
    assert len(launcher.argvs) == 1                       # rendering again would change nothing
    warn = [w for w in result.ledger.warnings if w["type"] == "cpu_fallback"]
    assert len(warn) == 1 and "GPU:CUDA" in warn[0]["message"] and "no CUDA device" in warn[0]["message"]
    assert result.exit_code == EXIT_STRICT
    assert any(type(e).__name__ == "CpuFallbackError" for e in sink.errors)
