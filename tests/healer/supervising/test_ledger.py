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

from healer.images.verify import verify_image
from healer.supervising.ledger import JobLocked, Ledger, SupervisorLock, job_dir, process_alive
from healer.supervising.outputs import OutputPattern


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


@pytest.mark.blender
def test_a_complete_exr_of_a_codec_not_in_the_chunk_table_is_not_removed(images, tmp_path):
    """A compression id newer than the lines-per-chunk table (OpenEXR adds codecs) gives no chunk count
    to check (a single-part file has no chunkCount): the file is not guessed at one line per chunk,
    which read chunk data as offsets and removed a complete frame as partial, every attempt."""
    data = bytearray(images["OPEN_EXR"].read_bytes())
    at = data.index(b"compression\0compression\0") + len(b"compression\0compression\0") + 4
    data[at] = 10
    p = tmp_path / "f_0001.exr"
    p.write_bytes(bytes(data))
    v = verify_image(p)
    assert v.ok and not v.partial, v


@pytest.mark.blender
@pytest.mark.parametrize("fmt", ["OPEN_EXR", "OPEN_EXR_MULTILAYER"])
def test_an_exr_cut_anywhere_is_partial_and_nothing_raises(images, tmp_path, fmt):
    """Cut after its magic (a crash as the file is written), in its header, its offset table or its
    chunks: every cut is a partial file, and verify_image never raises (it runs after every `Saved:`)."""
    data = images[fmt].read_bytes()
    p = tmp_path / "f_0001.exr"
    for cut in [*range(1, 64), *range(64, len(data), max(1, len(data) // 200)), len(data) - 1]:
        p.write_bytes(data[:cut])
        v = verify_image(p)
        assert not v.ok and v.partial and v.reason, (cut, v)


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
    # the check as a value: whether the file was removed is a field, not words in the reason
    _cut(images["PNG"], tmp_path / "f_0001.png", 0.5)
    check = led.check_frame(1)
    assert not check.ok and check.removed and led.completed() == []
    assert not led.check_frame(1).removed           # nothing left to remove: missing, not partial


def test_the_ledger_records_times_from_the_clock_it_is_given(tmp_path):
    now = [1_000.0]
    led = Ledger.open_or_create(tmp_path / "job", job="j", scene="/s.blend", frames=[1, 2], wall=lambda: now[0])
    assert led.created_at == led.updated_at == 1_000.0
    now[0] = 1_005.0
    att = led.new_attempt([1, 2], "initial")
    led.frame_verified(1, str(tmp_path / "f_0001.png"), 10, att)
    led.save()
    assert att.started_at == led.frames[1].verified_at == led.updated_at == 1_005.0
    now[0] = 1_010.0
    again = Ledger.open_or_create(tmp_path / "job", job="j", scene="/s.blend", frames=[1, 2], wall=lambda: now[0])
    again.save()
    assert again.created_at == 1_000.0 and again.updated_at == 1_010.0


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


# -- the journal (ledger_journal.py): what a save writes, what a crash leaves, what an old healer left ----------
def _job(tmp_path, frames=range(1, 11)):
    return Ledger.open_or_create(tmp_path / "job", job="j", scene="/s.blend", frames=list(frames))


def _state(led: Ledger) -> dict:
    d = led.to_dict()
    d.pop("updated_at")
    return d


def test_a_save_appends_a_line_whose_size_does_not_grow_with_the_job(tmp_path):
    led = _job(tmp_path, range(1, 3001))
    a = led.new_attempt(list(range(1, 3001)), "initial")
    journal = led.path.with_name("ledger.journal")
    sizes = {}
    for f in range(1, 3001):
        led.frame_started(f, a)
        led.frame_verified(f, f"/out/f_{f:04d}.png", 100, a)
        before = journal.stat().st_size
        led.save()
        after = journal.stat().st_size
        if after > before:
            sizes[f] = after - before
    # the frame's line, not the ledger (1 MB at 10,000): the same but for the digits of its number and times
    # (frame 1's save also writes the new attempt, its 3,000 frames planned: once per attempt)
    early, late = max(v for f, v in sizes.items() if 1 < f <= 100), max(v for f, v in sizes.items() if f > 2900)
    assert late <= early + 32 < 400
    assert journal.stat().st_size <= max(65536, led.path.stat().st_size) and len(sizes) < 3000   # compacted
    assert _state(Ledger.load(led.path)) == _state(led)


def test_every_kind_of_change_survives_a_reload(tmp_path):
    led = _job(tmp_path)
    a = led.new_attempt([1, 2, 3], "initial")
    a.pid = 7
    led.save()
    for f in (1, 2, 3):
        led.frame_started(f, a)
        led.frame_verified(f, f"/o/{f}.png", f * 10, a)
        led.expected_paths[f] = f"/o/{f}.png"
        led.save()
    led.suspects[2] = {"reasons": ["blank"], "detail": "d", "renders": 1}
    led.frames.pop(2)
    led.save()
    led.suspects.get(2).update(final=True)                 # changed in place, as suspects.py does
    led.warnings.append({"type": "missing_texture", "message": "m", "at": 1.0})
    a.frames_rendered[:] = [1, 3]                           # rewritten, as run_attempt does for a removed partial
    a.exit_code, a.ended_at = 0, 5.0
    b = led.new_attempt([2], "resume")
    b.pid = 8
    led.save()
    again = Ledger.load(led.path)
    assert _state(again) == _state(led)
    assert again.suspects[2]["final"] is True and again.attempts[0].frames_rendered == [1, 3]
    led.frames.clear()                                       # as renew() forgets them
    led.frame_render_counts = {9: 1}                         # a map replaced whole
    led.save()
    assert _state(Ledger.load(led.path)) == _state(led)


def test_a_torn_last_line_is_ignored(tmp_path):
    led = _job(tmp_path)
    a = led.new_attempt([1, 2], "initial")
    led.frame_verified(1, "/o/1.png", 10, a)
    led.save()
    whole = _state(Ledger.load(led.path))
    journal = led.path.with_name("ledger.journal")
    with open(journal, "ab") as f:                # a healer killed in the middle of its next write
        f.write(b'{"u":1.0,"f":{"2":["/o/2.png",10')
    again = Ledger.load(led.path)
    assert _state(again) == whole and sorted(again.frames) == [1]
    again.frame_verified(2, "/o/2.png", 10, again.attempts[0])
    again.save()                                  # the next healer starts from a fresh journal
    assert sorted(Ledger.load(led.path).frames) == [1, 2]


def test_compaction_is_atomic(tmp_path, monkeypatch):
    from healer.supervising import ledger as ledger_mod

    led = _job(tmp_path)
    a = led.new_attempt([1, 2, 3], "initial")
    led.frame_verified(1, "/o/1.png", 10, a)
    led.save()
    real = ledger_mod.write_atomic

    def dies_at(name):
        def write(path, data, **kw):
            if path.name == name:
                raise KeyboardInterrupt("killed")
            return real(path, data, **kw)
        return write

    # Killed before the new snapshot is in place: the old snapshot and its journal hold every save.
    led.frame_verified(2, "/o/2.png", 10, a)
    led.status = "failed"                         # a header change compacts
    monkeypatch.setattr(ledger_mod, "write_atomic", dies_at("ledger.json"))
    with pytest.raises(KeyboardInterrupt):
        led.save()
    back = Ledger.load(led.path)
    assert sorted(back.frames) == [1] and back.status == "pending"
    # Killed between the two renames: the new snapshot is whole, the old journal is stale and ignored.
    monkeypatch.setattr(ledger_mod, "write_atomic", dies_at("ledger.journal"))
    with pytest.raises(KeyboardInterrupt):
        led.save()
    back = Ledger.load(led.path)
    assert sorted(back.frames) == [1, 2] and back.status == "failed"
    monkeypatch.setattr(ledger_mod, "write_atomic", real)
    led.frame_verified(3, "/o/3.png", 10, a)
    led.save()                                    # this process compacts again: nothing it wrote is lost
    assert _state(Ledger.load(led.path)) == _state(led)


def test_a_ledger_written_by_the_previous_version_resumes(tmp_path):
    """Before the journal, ledger.json was the whole ledger, rewritten at every save (no "journal" key)."""
    d = tmp_path / "job"
    d.mkdir()
    old = {"version": 1, "job": "j", "scene": "/s.blend", "frames_requested": [1, 2, 3], "output": None,
           "frames": {"1": {"path": "/o/1.png", "size": 10, "verified_at": 1.0}},
           "frame_render_counts": {"1": 1, "2": 1}, "expected_paths": {"2": "/o/2.png"},
           "attempts": [{"attempt": 1, "pid": 4242, "frames_planned": [1, 2, 3], "frames_rendered": [1],
                         "exit_code": None, "exit_signal": None, "error_type": None, "error_summary": None,
                         "started_at": 1.0, "ended_at": None, "pid_create_time": 1.0, "argv": ["blender"],
                         "action": "initial", "frame_in_flight": 2, "device": None, "threads": None,
                         "frame_age_s": None}],
           "status": "running", "error": None, "warnings": [], "created_at": 1.0, "updated_at": 2.0,
           "spec": {}, "fingerprint": {}, "delivered": False, "run_from": 0, "suspects": {}}
    (d / "ledger.json").write_text(json.dumps(old))
    led = Ledger.open_or_create(d, job="j", scene="/s.blend", frames=[1, 2, 3])
    assert led.missing() == [2, 3] and led.running_attempt().pid == 4242 and led.frame_render_counts == {1: 1, 2: 1}
    a = led.new_attempt(led.missing(), "resume")
    led.frame_verified(2, "/o/2.png", 10, a)
    led.save()
    again = Ledger.load(d / "ledger.json")
    assert again.missing() == [3] and [x.frames_rendered for x in again.attempts] == [[1], [2]]
