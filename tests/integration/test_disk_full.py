"""Disk full: the spool, the ledger and the frame output on a real, tiny filesystem.

Each test mounts a 1 MiB tmpfs (we run as root in CI; a loop-mounted ext2 image is the fallback,
and the test is skipped, saying why, when neither can be mounted) and fills it with a real file
until write() fails with ENOSPC. Then the real code runs: the hooks' SpoolWriter, the healer's
Ledger.save(), and `renderwatch render` driving Debian's Blender 3.4 into a full output disk.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from blender_hooks.events import encode, make_event
from tests.support.healer import RENDERWATCH, healer_env

PAGE = 4096


@contextlib.contextmanager
def small_fs(path: Path, size_kib: int = 1024) -> Iterator[str]:
    """Mount a filesystem of `size_kib` at `path`; yields how ("tmpfs" or "ext2 loop")."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(path)],
                       capture_output=True, text=True)
    how = "tmpfs"
    if r.returncode != 0:
        img = path.parent / (path.name + ".img")
        with open(img, "wb") as f:
            f.truncate(size_kib * 1024)
        r2 = subprocess.run(["mkfs.ext2", "-q", "-F", str(img)], capture_output=True, text=True)
        r3 = subprocess.run(["mount", "-o", "loop", str(img), str(path)], capture_output=True, text=True) \
            if r2.returncode == 0 else r2
        if r3.returncode != 0:
            pytest.skip(f"cannot mount a small filesystem in this sandbox: tmpfs: {r.stderr.strip()}; "
                        f"loop ext2: {r3.stderr.strip()}")
        how = "ext2 loop"
    try:
        yield how
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(fs: Path, leave_pages: int = 0) -> Path:
    """Fill the filesystem with one file until ENOSPC, then give `leave_pages` pages back."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = b"\0" * (64 * 1024)
        while True:
            try:
                if os.write(fd, chunk) < len(chunk):
                    chunk = chunk[:PAGE]
            except OSError as e:
                assert e.errno == errno.ENOSPC
                if len(chunk) > 1:
                    chunk = chunk[: len(chunk) // 2]
                    continue
                break
        size = os.fstat(fd).st_size
        os.ftruncate(fd, max(0, (size // PAGE - leave_pages) * PAGE))
    finally:
        os.close(fd)
    return filler


def event(seq: int, pad: int = 200) -> bytes:
    return encode(make_event("phase", session="abcdef12", seq=seq, job="j", host="h", pid=1, frame=1,
                             name="sampling", detail="x" * pad))


# -- the hooks' spool ---------------------------------------------------------------------------------------------
def test_spool_writer_counts_and_drops_on_a_full_disk(tmp_path: Path) -> None:
    from blender_hooks.spool import SpoolWriter

    fs = tmp_path / "fs"
    with small_fs(fs):
        filler = fill(fs)
        w = SpoolWriter(fs / "spool", "abcdef12", segment_bytes=64 * 1024, max_bytes=256 * 1024)
        results = [w.append(event(i)) for i in range(1, 2001)]      # must never raise
        assert not all(results)
        assert w.dropped == results.count(False) and w.dropped > 0
        assert w.appended == results.count(True)
        # space comes back: after its retry delay the writer writes again
        filler.unlink()
        time.sleep(1.1)
        assert w.append(event(5000))
        w.close()
        lines = [ln for p in sorted((fs / "spool").glob("*.ndjson")) for ln in p.read_bytes().splitlines()]
        assert lines and json.loads(lines[-1])["seq"] == 5000


def test_spool_is_bounded_when_the_agent_is_away(tmp_path: Path) -> None:
    from blender_hooks.spool import SpoolWriter
    from blender_hooks.spoolfile import read_evicted

    fs = tmp_path / "fs"
    with small_fs(fs):
        d = fs / "spool"
        w = SpoolWriter(d, "abcdef12", segment_bytes=32 * 1024, max_bytes=128 * 1024)
        for i in range(1, 5001):                   # ~1.2 MB of events, nobody sending them
            w.append(event(i))
            if w.evict_pending:
                w.evict_now()
        w.evict_now()
        w.close()
        total = sum(p.stat().st_size for p in d.glob("*.ndjson"))
        assert total <= 128 * 1024 + 32 * 1024, total
        assert w.dropped == 0 and read_evicted(d) > 0          # evicted oldest-first, and counted


def test_spool_never_leaves_a_torn_line(tmp_path: Path) -> None:
    from blender_hooks.spool import SpoolWriter

    fs = tmp_path / "fs"
    with small_fs(fs):
        w = SpoolWriter(fs / "spool", "abcdef12", segment_bytes=1 << 20, max_bytes=1 << 30)
        w.append(event(1))
        filler = fill(fs)
        w.append(event(2, pad=6000))       # crosses the page boundary: short write
        filler.unlink()
        time.sleep(1.1)
        w.append(event(3))
        w.close()
        for p in (fs / "spool").glob("*.ndjson"):
            for line in p.read_bytes().splitlines():
                json.loads(line)


# -- the ledger ---------------------------------------------------------------------------------------------------
def test_ledger_save_on_a_full_disk_keeps_the_previous_ledger(tmp_path: Path) -> None:
    from healer.supervising.ledger import Ledger

    fs = tmp_path / "fs"
    with small_fs(fs):
        led = Ledger.open_or_create(fs / "jobs" / "j1", job="j1", scene="/s.blend", frames=list(range(1, 200)))
        led.frame_verified(1, "/out/f_0001.png", 100)
        led.save()
        before = (fs / "jobs" / "j1" / "ledger.json").read_text()
        filler = fill(fs)
        for f in range(2, 200):
            led.frame_verified(f, f"/out/f_{f:04d}.png", 100)
        with pytest.raises(OSError) as ei:
            led.save()
        assert ei.value.errno == errno.ENOSPC
        path = fs / "jobs" / "j1" / "ledger.json"
        assert path.read_text() == before                     # the old state, whole
        assert sorted(Ledger.load(path).frames) == [1]
        # no temp file left behind, and no torn line in the journal (the failed append was cut off)
        assert sorted(p.name for p in path.parent.iterdir()) == ["ledger.journal", "ledger.json"]
        assert (path.parent / "ledger.journal").read_bytes().endswith(b"\n")
        filler.unlink()
        led.save()
        assert sorted(Ledger.load(path).frames) == list(range(1, 200))


# -- a render into a full output disk -----------------------------------------------------------------------------
def _render(scene: Path, out: str, home: Path, blender: str, timeout: float, report: Path) -> tuple[int | None, str]:
    """`renderwatch render`; on timeout it gets SIGTERM (a cancel) and we return None as the exit status."""
    env = healer_env(home, RENDERWATCH_BLENDER=blender, RENDERWATCH_HEALER_BACKOFF_S="0.05")
    proc = subprocess.Popen([*RENDERWATCH, "render", str(scene), "--frames", "1-3", "--output", out, "--quiet",
                             "--max-restarts", "2", "--report", str(report)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        text, _ = proc.communicate(timeout=timeout)
        return proc.returncode, text
    except subprocess.TimeoutExpired:
        proc.terminate()
        text, _ = proc.communicate(timeout=30)
        return None, text


def _ledger(home: Path) -> dict:
    (path,) = (home / "healer" / "jobs").glob("*/ledger.json")
    return json.loads(path.read_text())            # valid JSON, whatever happened


@pytest.mark.blender
def test_render_to_a_full_disk_ends_with_output_error(tmp_path: Path, scene_factory, blender34: str) -> None:
    scene = tmp_path / "shot" / "scene.blend"
    scene.parent.mkdir()
    shutil.copy(scene_factory(frames=3, samples=4), scene)
    fs = tmp_path / "out"
    with small_fs(fs):
        fill(fs)
        code, text = _render(scene, str(fs / "f_####"), tmp_path / "home", blender34, 25, tmp_path / "r.json")
        led = _ledger(tmp_path / "home")
        assert code == 3, text[-2000:]
        assert led["error"]["type"] == "output_error" and "space" in led["error"]["message"], led["error"]


@pytest.mark.blender
def test_full_output_disk_leaves_a_valid_ledger_and_recovers(tmp_path: Path, scene_factory, blender34: str) -> None:
    """Room for one frame: frame 1 is verified, 2-3 are not (their empty files removed); the ledger stays valid;
    once space returns the same command finishes without rendering frame 1 again."""
    scene = tmp_path / "shot" / "scene.blend"
    scene.parent.mkdir()
    shutil.copy(scene_factory(frames=3, samples=4), scene)
    fs, home = tmp_path / "out", tmp_path / "home"
    out = str(fs / "f_####")
    with small_fs(fs) as how:
        filler = fill(fs, leave_pages=1 if how == "tmpfs" else 2)      # one ~2.5 KB PNG fits
        code, text = _render(scene, out, home, blender34, 15, tmp_path / "r1.json")
        assert code in (None, 1, 3, 130), text[-2000:]           # cancelled by us, or gave up: not "complete"
        led = _ledger(home)
        assert sorted(led["frames"]) == ["1"], led["frames"]
        assert led["status"] in ("cancelled", "failed"), led["status"]
        assert sorted(p.name for p in fs.iterdir()) == ["f_0001.png", "filler"]   # no empty or partial frame left
        renders_of_1 = led["frame_render_counts"]["1"]

        filler.unlink()                                           # space comes back
        code, text = _render(scene, out, home, blender34, 120, tmp_path / "r2.json")
        assert code == 0, text[-2000:]
        led = _ledger(home)
        assert led["status"] == "complete" and sorted(led["frames"]) == ["1", "2", "3"]
        assert led["frame_render_counts"]["1"] == renders_of_1 == 1      # a verified frame is never rendered again
        rendered = [f for a in led["attempts"] for f in a["frames_rendered"]]
        assert sorted(rendered) == [1, 2, 3], rendered                    # each frame saved by one attempt
        assert sorted(p.name for p in fs.iterdir()) == ["f_0001.png", "f_0002.png", "f_0003.png"]


@pytest.mark.blender
def test_a_state_disk_that_fills_mid_render_does_not_stop_the_render(tmp_path: Path, scene_factory,
                                                                    blender34: str) -> None:
    """The state folder's disk fills after frame 1 (ledger saves then fail with ENOSPC): the render goes on,
    every frame is rendered and verified, renderwatch says once what it could not record, exit 0 (it
    ended in a traceback after Blender finished, the ledger left `running`)."""
    scene = tmp_path / "shot" / "scene.blend"
    scene.parent.mkdir()
    shutil.copy(scene_factory(frames=3, samples=4), scene)
    home = tmp_path / "state"
    fault = Path(__file__).resolve().parents[1] / "faults" / "fill_disk.py"
    with small_fs(home, size_kib=2048):
        env = healer_env(home, RENDERWATCH_BLENDER=blender34, FILL_DIR=str(home), FAULT_FRAME="1")
        p = subprocess.run([*RENDERWATCH, "render", str(scene), "--frames", "1-3", "--output",
                            str(tmp_path / "out" / "f_####"), "--quiet", "--", "--python", str(fault)],
                           env=env, capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stderr[-3000:]
        assert "Traceback" not in p.stderr and "internal error" not in p.stderr
        assert p.stderr.count("cannot write the job's ledger") == 1, p.stderr[-3000:]
        assert sorted(x.name for x in (tmp_path / "out").iterdir()) == ["f_0001.png", "f_0002.png", "f_0003.png"]


def test_a_full_spool_disk_still_delivers_to_a_reachable_agent(tmp_path: Path) -> None:
    """The hooks' writer and sender (the code that runs inside Blender) with their spool on a full
    filesystem and the agent up: every event reaches the agent, in order, from memory (they were all
    dropped, and `hooks check` blamed the token)."""
    from agent.app import run_in_thread
    from blender_hooks.spool import SpoolSender, SpoolWriter, agent_url
    from tests.support.agent import agent_config, get

    h = run_in_thread(agent_config(tmp_path, spool_dir=tmp_path / "agent-spool"))
    spool = tmp_path / "spool"
    try:
        with small_fs(spool):
            fill(spool)
            w = SpoolWriter(spool, "fullspool1")
            sender = SpoolSender(spool, agent_url({"RENDERWATCH_AGENT": h.url}), writer=w, poll_interval=0.05).start()
            evs = [make_event("job_start", session="fullspool1", seq=1, job="full-disk-job", host="h", pid=1,
                              blend_file="/s.blend", scene="s", frame_start=1, frame_end=20, engine="CYCLES",
                              device_type="CPU", blender_version="4.2")]
            evs += [make_event("frame_end", session="fullspool1", seq=i + 1, job="full-disk-job", host="h", pid=1,
                               frame=i, seconds=0.1, saved=True) for i in range(1, 21)]
            assert all(w.append(encode(e)) for e in evs)
            assert w.dropped == 0 and w.appended == 0          # nothing could go to the disk
            sender.wake()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and sender.sent < len(evs):
                time.sleep(0.05)
            sender.close()
            w.close()
        jobs = json.loads(get(h.url, "/api/v1/jobs")[1])["jobs"]
        job = next(j for j in jobs if j["job"] == "full-disk-job")
        assert job["frames_done"] == 20, job
    finally:
        h.stop()
