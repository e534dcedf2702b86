"""healer.supervising.reuse: when a frame already on disk is kept. The rule (Blender's: a file is skipped
only where the scene's use_overwrite is off), the checks (complete, the scene's size, format and
channels, read by the frame checks' readers) and the fingerprint of the command line's scripts; then
the supervisor applying them, with Blender's recorded runs replayed (tests/support/fake_blender.py). The same
with real Blender 3.4 and the real CLI: tests/workflows/test_workflow_preview_then_final.py."""

from __future__ import annotations

import os
import shutil
import struct
import time
import zlib
from pathlib import Path

from healer.diagnosis.catalog import EXIT_OK
from healer.supervising.assets import R_NO_OVERWRITE, SceneInfo, read_scene_info
from healer.supervising.policy import Policy
from healer.supervising.preflight import Prepared, prepare
from healer.supervising.reuse import OutputSpec, reuse_refusal, scripts_of
from healer.supervising.supervisor import RenderRequest, Supervisor
from tests.support.fake_blender import ReplayLauncher, ReplayProbes, only_frames

PLANES = {"BW": 8, "RGB": 24, "RGBA": 32}


def png(w: int = 32, h: int = 18, color: int = 2) -> bytes:
    """A complete PNG: colour type 2 RGB, 6 RGBA, 0 grey."""
    channels = {0: 1, 2: 3, 6: 4}[color]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + bytes((x * 7 + y * 13 + c) % 256 for x in range(w) for c in range(channels))
                    for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def info(**kw) -> SceneInfo:
    base = dict(scene="Scene", frame_start=1, frame_end=3, frame_step=1, output="//f_", file_format="PNG",
                use_extension=True, resolution_x=64, resolution_y=36, resolution_percentage=100, color_mode="RGB",
                cropped=False, use_overwrite=False)
    return SceneInfo(**{**base, **kw})


# -- the pure parts ------------------------------------------------------------------------------------
def test_the_scene_gives_each_frames_size_channels_and_format():
    assert OutputSpec.from_scene(info(resolution_percentage=50), "PNG") == OutputSpec(32, 18, "RGB", "PNG")
    assert OutputSpec.from_scene(info(cropped=True), "PNG").width is None          # border crop: not known
    assert OutputSpec.from_scene(info(), "OPEN_EXR").mode is None                  # -F: channels not known
    assert OutputSpec.from_scene(None, "PNG") is None


def test_a_file_is_kept_only_if_it_is_what_the_scene_renders(tmp_path):
    f = tmp_path / "f_0001.png"
    f.write_bytes(png(64, 36, color=2))
    spec = OutputSpec(64, 36, "RGB", "PNG")
    assert reuse_refusal(str(f), spec) is None
    assert "32x18" in reuse_refusal(str(f), OutputSpec(32, 18, "RGB", "PNG"))           # a preview's size
    assert "RGBA" in reuse_refusal(str(f), OutputSpec(64, 36, "RGBA", "PNG"))            # channels
    assert "JPEG" in reuse_refusal(str(f), OutputSpec(64, 36, "RGB", "JPEG"))            # format
    # What cannot be known is not kept.
    assert reuse_refusal(str(f), OutputSpec(None, None, "RGB", "PNG")) is not None
    assert reuse_refusal(str(f), OutputSpec(64, 36, None, "PNG")) is not None
    assert reuse_refusal(str(f), None) is not None
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    assert reuse_refusal(str(tmp_path / "bad.png"), spec).startswith("unreadable")
    g = tmp_path / "g.png"
    g.write_bytes(png(64, 36, color=0))
    assert "BW" in reuse_refusal(str(g), spec) and reuse_refusal(str(g), OutputSpec(64, 36, "BW", "PNG")) is None


def test_the_scripts_of_a_command_line_are_named_by_their_content(tmp_path):
    s = tmp_path / "preview.py"
    s.write_text("import bpy\nbpy.context.scene.render.resolution_percentage = 50\n")
    args = ["-E", "CYCLES", "--python", str(s), "--python-expr", "x = 1", "--python-text", "setup", "-P", "rel.py",
            "--", "--python", "not-blenders.py"]
    got = scripts_of(args, cwd=str(tmp_path))
    assert [g[0] for g in got] == ["--python", "--python-expr", "--python-text", "-P"]
    assert got[0][1] == str(s) and len(got[0][2]) == 64
    assert got[3] == ["-P", str(tmp_path / "rel.py"), "unreadable: No such file or directory"]
    before = got[0][2]
    s.write_text("import bpy\nbpy.context.scene.cycles.samples = 1\n")
    assert scripts_of(args, cwd=str(tmp_path))[0][2] != before                     # edited: another render
    assert scripts_of(["--python-expr", "--python", "-a"]) == [["--python-expr", "--python"]]   # a value, not an option


def test_the_scene_read_says_whether_blender_skips_existing_files(tmp_path):
    plain = read_scene_info(Path(__file__).resolve().parents[2] / "fixtures" / "scenes" / "tiny.blend")
    assert (plain.resolution_x, plain.resolution_y, plain.resolution_percentage) == (32, 18, 100)
    assert plain.color_mode == "RGBA" and plain.use_overwrite is True and not plain.cropped
    skip = read_scene_info(no_overwrite_copy(tmp_path / "skip.blend", planes=24))
    assert skip.use_overwrite is False and skip.color_mode == "RGB"


# -- the supervisor (a recorded Blender replayed) -------------------------------------------------------
def no_overwrite_copy(dst: Path, planes: int = 24) -> Path:
    """tiny.blend saved with use_overwrite off (and RGB output, as the replayed frames are)."""
    from blender_asset_tracer import blendfile

    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).resolve().parents[2] / "fixtures" / "scenes" / "tiny.blend", dst)
    bf = blendfile.BlendFile(dst, mode="r+b")
    try:
        sc = bf.find_blocks_from_code(b"SC")[0]
        sc.set((b"r", b"mode"), int(sc.get((b"r", b"mode"))) | R_NO_OVERWRITE)
        sc.set((b"r", b"im_format", b"planes"), planes)
    finally:
        bf.close()
    return dst


def supervise(scene: Path, home: Path, runs, there: list[bool] | None = None, **req):
    """`there`: for each frame the replayed Blender saves, whether a file was in its way (the real one,
    with use_overwrite off, would have skipped it: nothing rendered)."""
    def image(_attempt: int, path: Path) -> bytes:
        if there is not None:
            there.append(path.exists())
        return png(32, 18)

    launcher = ReplayLauncher(runs, image=image)
    sup = Supervisor(RenderRequest(scene=str(scene), frames=(1, 2, 3), blender=shutil.which("true") or "true", **req),
                     policy=Policy.default().with_overrides(backoff_base_s=0.0),
                     env={"RENDERWATCH_HOME": str(home)}, launcher=launcher, probes=ReplayProbes(launcher),
                     probe_interval_s=0.01, kill_grace_s=0.1)
    return sup, launcher


def frames_on_disk(scene: Path, data: dict[int, bytes], age_s: float = 0.0) -> list[Path]:
    out = []
    for f, b in data.items():
        p = scene.parent / "frames" / f"f_{f:04d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b)
        t = time.time() + 2 - age_s
        os.utime(p, (t, t))
        out.append(p)
    return out


async def test_frames_on_disk_are_kept_where_blender_would_skip_them_and_they_are_right(tmp_path, caplog):
    caplog.set_level("INFO", logger="healer.supervising.supervisor")
    scene = no_overwrite_copy(tmp_path / "shot" / "tiny.blend")
    frames_on_disk(scene, {f: png(32, 18) for f in (1, 2, 3)})
    sup, launcher = supervise(scene, tmp_path / "home", [])
    result = await sup.run()
    assert result.exit_code == EXIT_OK and launcher.argvs == []
    assert result.ledger.frame_render_counts == {}
    assert "3 frame(s) already on disk kept: the scene skips existing files" in caplog.text


async def test_a_wrong_file_where_blender_would_skip_it_is_removed_and_rendered(tmp_path, caplog):
    caplog.set_level("INFO", logger="healer.supervising.supervisor")
    scene = no_overwrite_copy(tmp_path / "shot" / "tiny.blend")
    # frame 2 is a half-size preview; Blender itself would skip it (and renderwatch credit it) if left there.
    paths = frames_on_disk(scene, {1: png(32, 18), 2: png(16, 9), 3: png(32, 18)})
    there: list[bool] = []
    sup, launcher = supervise(scene, tmp_path / "home", [only_frames("ok_1-3", [2])], there)
    result = await sup.run()
    assert result.exit_code == EXIT_OK and len(launcher.argvs) == 1
    assert result.ledger.frame_render_counts == {2: 1} and there == [False]     # out of Blender's way first
    assert paths[1].read_bytes() == png(32, 18)                                 # rendered again
    assert "1 frame(s) already on disk rendered again, not what the scene renders (frame 2: the frame is " \
           "16x9, the scene renders 32x18)" in caplog.text
    assert "removed first" in caplog.text


async def test_frames_older_than_the_scene_are_rendered_again_even_where_blender_skips(tmp_path):
    scene = no_overwrite_copy(tmp_path / "shot" / "tiny.blend")
    frames_on_disk(scene, {f: png(32, 18) for f in (1, 2, 3)}, age_s=3600)
    sup, launcher = supervise(scene, tmp_path / "home", ["ok_1-3"])
    result = await sup.run()
    assert result.exit_code == EXIT_OK and result.ledger.frame_render_counts == {1: 1, 2: 1, 3: 1}


async def test_fresh_where_blender_skips_existing_files_removes_them_so_they_render(tmp_path):
    scene = no_overwrite_copy(tmp_path / "shot" / "tiny.blend")
    sup, _l = supervise(scene, tmp_path / "home", ["ok_1-3"])
    assert (await sup.run()).exit_code == EXIT_OK
    there: list[bool] = []
    sup, launcher = supervise(scene, tmp_path / "home", ["ok_1-3"], there, fresh=True)
    result = await sup.run()
    assert result.exit_code == EXIT_OK and len(launcher.argvs) == 1 and there == [False, False, False]


async def test_an_edited_script_forgets_the_verified_frames(tmp_path, caplog, scene):
    caplog.set_level("INFO", logger="healer.supervising.supervisor")
    script = tmp_path / "look.py"
    script.write_text("import bpy\n")
    args = ("--python", str(script))
    sup, _l = supervise(scene, tmp_path / "home", ["ok_1-3"], blender_args=args)
    assert (await sup.run()).exit_code == EXIT_OK
    sup, launcher = supervise(scene, tmp_path / "home", [], blender_args=args)      # same script: resumed
    assert (await sup.run()).exit_code == EXIT_OK and launcher.argvs == []
    script.write_text("import bpy\nbpy.context.scene.render.resolution_percentage = 50\n")
    sup, launcher = supervise(scene, tmp_path / "home", ["ok_1-3"], blender_args=args)
    result = await sup.run()
    assert result.exit_code == EXIT_OK and len(launcher.argvs) == 1
    assert "the scripts changed since the frames were verified: rendering them again" in caplog.text


def test_a_job_without_scripts_keeps_the_fingerprint_it_had(scene):
    """A ledger written before scripts were fingerprinted is not forgotten for it."""
    p = prepare(RenderRequest(scene=str(scene), frames=(1,), blender=shutil.which("true") or "true"))
    assert isinstance(p, Prepared) and set(p.fingerprint) == {"the scene file", "the render settings"}
    assert p.skips_existing is False and p.output_spec == OutputSpec(32, 18, "RGBA", "PNG")
