"""A long job: thousands of tiny frames replayed by the recorded-run Blender (tests/support/fake_blender.py; a
real Blender at this length takes minutes here, and these paths are bookkeeping, not processes). What a
frame costs is measured in bench/bench_healer.py, not timed here; this asserts what must stay true at
any length: each frame verified once, a resume after the healer dies mid-job renders only the missing
frames, and the ledger's files stay bounded (the journal is compacted, a save appends one short line).
"""

from __future__ import annotations

import asyncio
import collections
import json
import shutil
from pathlib import Path

import pytest

from healer.diagnosis.catalog import EXIT_OK
from healer.supervising import attempt, ledger
from healer.supervising.ledger import Ledger
from healer.supervising.ledger_journal import COMPACT_MIN_BYTES
from healer.supervising.policy import Policy
from healer.supervising.supervisor import RenderRequest, Supervisor
from tests.support.fake_blender import ReplayLauncher, ReplayProbes, long_run

N = 2000


def _supervisor(scene: Path, home: Path, launcher: ReplayLauncher, frames: range) -> Supervisor:
    return Supervisor(RenderRequest(scene=str(scene), frames=tuple(frames), blender=shutil.which("true") or "true",
                                    job="long"),
                      policy=Policy.default().with_overrides(backoff_base_s=0.0),
                      env={"RENDERWATCH_HOME": str(home), "RENDERWATCH_AGENT": "off",
                           "RENDERWATCH_SPOOL_DIR": str(home / "spool")},
                      launcher=launcher, probes=ReplayProbes(launcher), probe_interval_s=0.05, kill_grace_s=0.1)


@pytest.fixture
def verified(monkeypatch) -> collections.Counter:
    """How many times each frame file was read to verify it (the real verify_image, counted)."""
    counts: collections.Counter = collections.Counter()
    real = ledger.verify_image

    def counting(path):
        counts[Path(path).name] += 1
        return real(path)

    monkeypatch.setattr(ledger, "verify_image", counting)
    monkeypatch.setattr(attempt, "verify_image", counting)
    return counts


@pytest.mark.slow
async def test_a_long_job_verifies_each_frame_once_and_keeps_its_ledger_bounded(scene, tmp_path, verified,
                                                                               monkeypatch):
    home = tmp_path / "home"
    appended: list[int] = []          # bytes each journal append wrote
    over: list[tuple[int, int]] = []  # a journal past its bound: (its size, the snapshot's)
    real_append = ledger.append_line

    def spy(path, data, size, ino, **kw):
        ok = real_append(path, data, size, ino, **kw)
        if ok:
            appended.append(len(data))
            sizes = (path.stat().st_size, path.with_name("ledger.json").stat().st_size)
            if sizes[0] > max(COMPACT_MIN_BYTES, sizes[1]):
                over.append(sizes)
        return ok

    monkeypatch.setattr(ledger, "append_line", spy)
    launcher = ReplayLauncher([long_run(range(1, N + 1))], speed=0.0)
    result = await _supervisor(scene, home, launcher, range(1, N + 1)).run()
    assert result.exit_code == EXIT_OK and result.status == "complete"
    assert len(launcher.argvs) == 1
    names = {f"f_{f:04d}.png" for f in range(1, N + 1)}
    # each frame once; the attempt's last frame once more at its end (a crash while it was written
    # comes after its Saved: line): O(1) per attempt, not per frame
    last = f"f_{N:04d}.png"
    assert set(verified) == names and {n: c for n, c in verified.items() if c != 1} == {last: 2}, \
        sorted((n, c) for n, c in verified.items() if c != 1)[:5]
    # Two saves a frame (its start, its verified file), each a short line, not the ledger again.
    assert len(appended) >= 2 * N - 4 and max(appended) < 1024, (len(appended), max(appended))
    job = home / "healer" / "jobs" / "long"
    snapshot = (job / "ledger.json").stat().st_size
    journal = (job / "ledger.journal").read_bytes()
    # The job ended: compacted, its whole state in ledger.json; its journal is the header line only.
    assert journal.count(b"\n") == 1
    assert json.loads(journal)["journal"] == json.loads((job / "ledger.json").read_text())["journal"]
    # While it ran, the journal was compacted whenever it would outgrow the snapshot (or the floor): the
    # folder stays within about twice the snapshot, whatever the job's length; and it had to be.
    assert not over, over[:3]
    assert sum(appended) > max(COMPACT_MIN_BYTES, snapshot)
    again = Ledger.load(job / "ledger.json")
    assert again.completed_count() == N and again.status == "complete"
    assert again.frame_render_counts == {f: 1 for f in range(1, N + 1)}


@pytest.mark.slow
async def test_a_healer_killed_mid_job_is_resumed_for_the_missing_frames_only(scene, tmp_path, verified):
    home = tmp_path / "home"
    half = N // 2
    first = ReplayLauncher([long_run(range(1, N + 1), played=half, hang=True)], speed=0.0)
    task = asyncio.create_task(_supervisor(scene, home, first, range(1, N + 1)).run())
    path = home / "healer" / "jobs" / "long" / "ledger.json"
    for _ in range(600):                        # what a new healer would read, from the files
        await asyncio.sleep(0.05)
        if path.exists() and Ledger.load(path).completed_count() == half:
            break
    assert Ledger.load(path).completed_count() == half
    task.cancel()                               # the healer dies (its Blender hangs on, unsupervised)
    with pytest.raises(asyncio.CancelledError):
        await task
    on_disk = Ledger.load(path)
    assert on_disk.status == "running" and on_disk.running_attempt() is not None
    # The new healer renders exactly the other half (ReplayLauncher checks the frames asked for).
    second = ReplayLauncher([long_run(range(half + 1, N + 1))], speed=0.0)
    result = await _supervisor(scene, home, second, range(1, N + 1)).run()
    assert result.exit_code == EXIT_OK and result.ledger.completed_count() == N
    assert len(second.argvs) == 1
    assert result.ledger.frame_render_counts == {f: 1 for f in range(1, N + 1)}
    assert result.ledger.attempts[0].frames_rendered == list(range(1, half + 1))
