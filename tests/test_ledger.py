"""healer.ledger and healer.outputs: the on-disk frame ledger, output paths, image verification.

Images are real: one Blender 3.4 run writes the same frame as PNG, JPEG and OpenEXR (single-part
scanline and multilayer), then the tests cut them the way a crash while saving would.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from healer.supervising.ledger import JobLocked, Ledger, SupervisorLock, job_dir, process_alive
from healer.supervising.outputs import OutputPattern, verify_image


@pytest.fixture(scope="module")
def images(tmp_path_factory, scene_factory, blender34) -> dict[str, Path]:
    """{format: path} of real images of frame 1, written by Blender 3.4."""
    out = tmp_path_factory.mktemp("images")
    scene = scene_factory(frames=2)
    args = [blender34, "-b", str(scene)]
    for fmt in ("PNG", "JPEG", "OPEN_EXR", "OPEN_EXR_MULTILAYER"):
        args += ["-o", str(out / f"{fmt.lower()}_####"), "-F", fmt, "-f", "1"]
    subprocess.run(args, check=True, capture_output=True, timeout=120)
    return {fmt: next(out.glob(f"{fmt.lower()}_0001.*")) for fmt in ("PNG", "JPEG", "OPEN_EXR", "OPEN_EXR_MULTILAYER")}


def _cut(src: Path, dst: Path, keep: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


@pytest.mark.blender
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "OPEN_EXR", "OPEN_EXR_MULTILAYER"])
def test_complete_images_verify(images, fmt):
    v = verify_image(images[fmt])
    assert v.ok, v.reason
    assert v.size == images[fmt].stat().st_size


@pytest.mark.blender
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "OPEN_EXR", "OPEN_EXR_MULTILAYER"])
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_images_are_partial(images, tmp_path, fmt, keep):
    cut = _cut(images[fmt], tmp_path / images[fmt].name, keep)
    v = verify_image(cut)
    assert not v.ok and v.partial, (fmt, keep, v)


def test_missing_and_empty(tmp_path):
    assert verify_image(tmp_path / "nope.png").reason == "missing"
    (tmp_path / "empty.png").write_bytes(b"")
    v = verify_image(tmp_path / "empty.png")
    assert not v.ok and v.partial and v.reason == "empty file"


def test_unknown_format_is_verified_by_existence(tmp_path):
    p = tmp_path / "f_0001.tif"
    p.write_bytes(b"II*\x00" + b"\x00" * 100)
    assert verify_image(p).ok


@pytest.mark.parametrize("pattern, fmt, ext, frame, expected", [
    ("//frames/f_", "PNG", True, 7, "/shot/frames/f_0007.png"),
    ("/out/render_###_v2", "OPEN_EXR", True, 12, "/out/render_012_v2.exr"),
    ("/out/f_####.png", "PNG", True, 3, "/out/f_0003.png"),
    ("/out/f_####.jpg", "PNG", True, 3, "/out/f_0003.png"),        # a known image extension is replaced
    ("/out/f_####", "JPEG", False, 3, "/out/f_0003"),                # use_file_extension off
    ("/out/v##/f_", "PNG", True, 3, "/out/v##/f_0003.png"),          # hashes in folders are not frames
    ("/out/", "PNG", True, 250, "/out/0250.png"),
    ("/out/f_#", "PNG", True, 12345, "/out/f_12345.png"),
])
def test_output_pattern_resolves_like_blender(pattern, fmt, ext, frame, expected):
    assert OutputPattern.from_blender(pattern, "/shot", fmt, ext).path_for(frame) == expected


def test_ledger_round_trip_atomic_and_private(tmp_path):
    pat = OutputPattern.from_blender("//f_", str(tmp_path), "PNG")
    led = Ledger.open_or_create(tmp_path / "job", job="j1", scene=str(tmp_path / "s.blend"), frames=[3, 1, 2],
                                output=pat, spec={"strict": True})
    a = led.new_attempt([1, 2, 3], "initial")
    a.pid = 4242
    led.frame_started(1, a)
    led.frame_verified(1, str(tmp_path / "f_0001.png"), 123, a)
    led.save()
    mode = stat.S_IMODE(os.stat(led.path).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(led.path.parent).st_mode) == 0o700
    # no temp files left; the journal beside the snapshot is private too
    assert sorted(p.name for p in led.path.parent.iterdir()) == ["ledger.journal", "ledger.json"]
    assert stat.S_IMODE(os.stat(led.path.with_name("ledger.journal")).st_mode) == 0o600
    again = Ledger.load(led.path)
    assert again.frames_requested == [1, 2, 3]
    assert again.frame_render_counts == {1: 1}
    assert again.frames[1].size == 123
    assert again.attempts[0].frames_rendered == [1]
    assert again.missing() == [2, 3]
    assert again.running_attempt() is not None and again.running_attempt().pid == 4242
    assert json.loads(led.path.read_text())["spec"] == {"strict": True}


def test_ledger_refuses_a_different_job_under_the_same_id(tmp_path):
    Ledger.open_or_create(tmp_path, job="j", scene="/a.blend", frames=[1, 2])
    with pytest.raises(ValueError, match="already exists"):
        Ledger.open_or_create(tmp_path, job="j", scene="/b.blend", frames=[1, 2])


@pytest.mark.blender
def test_verify_frame_removes_a_partial_file(images, tmp_path):
    led = Ledger.open_or_create(tmp_path / "job", job="j", scene="/s.blend", frames=[1],
                                output=OutputPattern.from_blender(str(tmp_path / "f_"), "/", "PNG"))
    cut = _cut(images["PNG"], tmp_path / "f_0001.png", 0.5)
    ok, why = led.verify_frame(1)
    assert not ok and "removed" in why and not cut.exists()
    (tmp_path / "f_0001.png").write_bytes(images["PNG"].read_bytes())
    assert led.verify_frame(1) == (True, "")
    assert led.completed() == [1]


@pytest.mark.parametrize("bad", ["../etc", "abc\n", "-x", ".hidden", "", "a/b"])
def test_job_ids_are_checked(bad):
    with pytest.raises(ValueError, match="job id"):
        job_dir(bad)


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    import psutil

    lock = SupervisorLock(tmp_path)
    parent = psutil.Process(os.getppid())
    lock.path.write_text(json.dumps({"pid": parent.pid, "create_time": parent.create_time()}))
    with pytest.raises(JobLocked, match=str(parent.pid)):
        lock.acquire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.path.write_text(json.dumps({"pid": dead.pid, "create_time": 1.0}))
    lock.acquire()
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock.path.exists()


def test_process_alive_checks_pid_reuse():
    import psutil

    me = psutil.Process()
    assert process_alive(me.pid, me.create_time())
    assert not process_alive(me.pid, me.create_time() - 100)
    assert not process_alive(None)


def test_attempt_to_dict_is_asdict_without_the_deep_copy():
    """Ledger.save runs at every frame's start and end: Attempt.to_dict replaced dataclasses.asdict
    (12x slower). It must stay the same document, every field, lists copied."""
    from dataclasses import asdict, fields

    from healer.supervising.ledger import Attempt

    a = Attempt(3, pid=5, frames_planned=[1, 2], frames_rendered=[1], argv=["blender", "-b"], action="restart",
                frame_in_flight=2, device="CPU", threads=4, frame_age_s=1.5)
    d = a.to_dict()
    assert d == asdict(a) and set(d) == {f.name for f in fields(Attempt)}
    d["argv"].append("changed")
    assert a.argv == ["blender", "-b"]
