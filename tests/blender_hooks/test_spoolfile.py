"""blender_hooks.spoolfile: the spool's one on-disk contract. Its ack has one owner: consumers that
advance it at once (threads of one process, and separate processes, as the hooks' sender and the
agent's scanner are) never move it back, never lose an advance and never leave a torn ack."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.metrics import IngestStats
from agent.spool import SpoolScanner
from blender_hooks import spoolfile
from blender_hooks.events import encode, make_event
from blender_hooks.spool import SpoolSender, SpoolWriter

REPO = Path(__file__).resolve().parents[2]
ADVANCES = 3000          # per consumer; consumer A takes the even offsets, B the odd ones

# One consumer: advance the ack through its offsets as fast as it can; after each advance the ack must
# be at least there (else another consumer's older write replaced it: an advance lost).
_CONSUMER = r"""
import sys, time
from pathlib import Path
from blender_hooks.spoolfile import advance_ack, read_ack
d, first, n, go = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
while not go.exists():
    time.sleep(0.0005)
lost = busy = 0
for off in range(first, first + 2 * n, 2):
    while not advance_ack(d, "s1", 1, off):
        busy += 1
    if read_ack(d, "s1") < (1, off):
        lost += 1
print(lost, busy)
"""


class AckWatcher(threading.Thread):
    """Reads the ack file over and over: every read must be a whole "<index> <offset>" line, never smaller
    than the one before, and never missing once it was there."""

    def __init__(self, directory: Path, gone_ok: Callable[[], bool] = lambda: False):
        super().__init__(daemon=True)
        self.path = directory / "s1.ack"
        self.gone_ok = gone_ok           # when the ack may vanish: its session is finished and forgotten
        self.stop = threading.Event()
        self.reads = 0
        self.problems: list[str] = []

    def run(self) -> None:
        last: tuple[int, int] | None = None
        while not self.stop.is_set():
            try:
                raw = self.path.read_bytes()
            except FileNotFoundError:
                if last is not None and not self.gone_ok():
                    self.problems.append(f"the ack vanished after {last}")
                continue
            self.reads += 1
            parts = raw.split()
            if not raw.endswith(b"\n") or len(parts) != 2 or not all(p.isdigit() for p in parts):
                self.problems.append(f"torn ack {raw!r}")
                continue
            now = (int(parts[0]), int(parts[1]))
            if last is not None and now < last:
                self.problems.append(f"the ack moved back from {last} to {now}")
            last = now


def _segment(tmp_path: Path) -> Path:
    seg = tmp_path / spoolfile.segment_name("s1", 1)
    seg.write_bytes(b"x" * (2 * ADVANCES + 2))
    return seg


def test_two_consumer_processes_never_move_the_ack_back_nor_lose_an_advance(tmp_path):
    _segment(tmp_path)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _CONSUMER, str(tmp_path), str(first), str(ADVANCES), str(go)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for first in (2, 1)]
    watcher = AckWatcher(tmp_path)
    watcher.start()
    time.sleep(0.3)                         # both interpreters up, waiting at the gate
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    watcher.stop.set()
    watcher.join()
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    lost = [int(out.split()[0]) for out, _ in outs]
    assert lost == [0, 0], f"advances lost (the ack was found below a consumer's own last advance): {lost}"
    assert watcher.problems == [], watcher.problems[:5]
    assert watcher.reads > 0
    assert spoolfile.read_ack(tmp_path, "s1", [1]) == (1, 2 * ADVANCES)       # the furthest advance stands


def test_two_consumer_threads_never_move_the_ack_back_nor_lose_an_advance(tmp_path):
    _segment(tmp_path)
    lost = [0, 0]
    errors: list[BaseException] = []
    gate = threading.Barrier(2)

    def consumer(slot: int, first: int) -> None:
        try:
            gate.wait()
            for off in range(first, first + 2 * ADVANCES, 2):
                while not spoolfile.advance_ack(tmp_path, "s1", 1, off):
                    pass
                if spoolfile.read_ack(tmp_path, "s1") < (1, off):
                    lost[slot] += 1
        except BaseException as e:  # noqa: BLE001 (reported below, with the thread's own error)
            errors.append(e)

    watcher = AckWatcher(tmp_path)
    watcher.start()
    threads = [threading.Thread(target=consumer, args=(slot, first)) for slot, first in enumerate((2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    watcher.stop.set()
    watcher.join()
    assert errors == []
    assert lost == [0, 0], f"advances lost: {lost}"
    assert watcher.problems == [], watcher.problems[:5]
    assert spoolfile.read_ack(tmp_path, "s1", [1]) == (1, 2 * ADVANCES)


def test_a_held_ack_lock_makes_a_consumer_write_nothing_and_return_at_once(tmp_path):
    """The lock is only tried: a consumer never waits on another (a stopped process holding it must not
    stall Blender's sender thread or the agent's event loop); it writes nothing and tries again later."""
    import fcntl

    _segment(tmp_path)
    assert spoolfile.advance_ack(tmp_path, "s1", 1, 10)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    code = ("import time, sys; from pathlib import Path; from blender_hooks.spoolfile import advance_ack\n"
            f"t = time.monotonic(); ok = advance_ack(Path({str(tmp_path)!r}), 's1', 1, 20, wait=0.05)\n"
            "print(ok, round(time.monotonic() - t, 3))")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)       # another consumer (this process) holds it
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.close(fd)
    ok, took = p.stdout.split()
    assert ok == "False" and float(took) < 1.0, p.stderr[-2000:]
    assert spoolfile.read_ack(tmp_path, "s1") == (1, 10)
    assert spoolfile.advance_ack(tmp_path, "s1", 1, 20)            # free again: it moves
    assert spoolfile.read_ack(tmp_path, "s1") == (1, 20)


def test_an_ack_is_never_written_for_a_segment_that_is_gone(tmp_path):
    """A consumer that finishes a segment the other one already delivered and deleted (and whose session
    it then forgot) must not bring the session's ack back: nothing would ever remove it."""
    seg = _segment(tmp_path)
    assert spoolfile.advance_ack(tmp_path, "s1", 1, 10)
    seg.unlink()
    spoolfile.forget_session(tmp_path, "s1")
    assert spoolfile.advance_ack(tmp_path, "s1", 1, 20)            # nothing left to acknowledge
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stale", [True, False])
def test_an_ack_judged_on_a_stale_listing_is_kept_when_it_is_valid_now(tmp_path, stale):
    """A consumer that listed the segments before the other one rotated, delivered and deleted some must
    not remove the other's valid ack (that would move it back to nothing delivered)."""
    (tmp_path / spoolfile.segment_name("s1", 3)).write_bytes(b"x" * 100)
    (tmp_path / "s1.ack").write_bytes(b"2 50\n")                   # segment 2: delivered and deleted
    indices = [1] if stale else [3]
    assert spoolfile.read_ack(tmp_path, "s1", indices) == (2, 50)
    assert (tmp_path / "s1.ack").read_bytes() == b"2 50\n"


class _Receiver(http.server.BaseHTTPRequestHandler):
    """The agent's POST /api/v1/events as the hooks' sender sees it: 200, and the seqs it got."""

    seqs: list[int] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seqs.extend(json.loads(line)["seq"] for line in body.splitlines() if line)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_a: object) -> None:
        pass


class _RecordingIngestor:
    """The scanner's LineIngestor seam (agent.spool): keeps the seqs of the lines it is given."""

    def __init__(self) -> None:
        self.stats = IngestStats()
        self.seqs: list[int] = []

    def ingest_lines(self, lines):
        got = [json.loads(line)["seq"] for line in lines if line]
        self.seqs.extend(got)
        return SimpleNamespace(accepted=len(got))


def test_the_hooks_sender_and_the_agent_scanner_racing_deliver_every_event_and_only_advance_the_ack(tmp_path):
    """The real consumers on one spool at once (a dead Blender's session: the sender adopts it, the agent's
    scanner catches it up). Delivery is at least once: every event reaches one of them, a line both read
    before either acknowledged it reaches both (the agent keeps one, by session and seq); the ack only
    moves forward and the session's files are all gone at the end."""
    n = 3000
    w = SpoolWriter(tmp_path, "s1", segment_bytes=16 * 1024, max_bytes=1 << 30)
    for seq in range(1, n + 1):
        assert w.append(encode(make_event("frame_start", session="s1", seq=seq, job="j", host="h", pid=1, frame=seq)))
    w.close()
    assert len(spoolfile.list_segments(tmp_path)["s1"]) > 5
    _Receiver.seqs = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sender = SpoolSender(tmp_path, f"http://127.0.0.1:{server.server_address[1]}/api/v1/events", batch_bytes=2048)
    ingestor = _RecordingIngestor()
    scanner = SpoolScanner(tmp_path, ingestor, chunk_bytes=2048)
    watcher = AckWatcher(tmp_path, gone_ok=lambda: not spoolfile.list_segments(tmp_path))
    watcher.start()
    errors: list[BaseException] = []

    def until_empty(step) -> None:
        try:
            deadline = time.monotonic() + 60
            while spoolfile.list_segments(tmp_path) and time.monotonic() < deadline:
                step()
            step()                                      # the last pass forgets the session
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=until_empty, args=(step,)) for step in (sender.drain_once, scanner.scan_once)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    watcher.stop.set()
    watcher.join()
    sender.close()
    server.shutdown()
    server.server_close()
    assert errors == []
    delivered = _Receiver.seqs + ingestor.seqs
    assert set(delivered) == set(range(1, n + 1))                 # every event, by one consumer or both
    assert watcher.problems == [], watcher.problems[:5]
    assert scanner.session_errors == 0                             # no pass cut short by the other's ack write
    assert sorted(p.name for p in tmp_path.iterdir()) == []        # segments, ack, temporary ack and lock


def test_a_scanner_that_finds_the_ack_lock_busy_reads_no_further_in_that_session(tmp_path):
    """Busy on one segment's ack, the agent's scanner must not go on to the next segment: acknowledging
    that one would pass the first one's unread lines, lost for good (found by the racing test above)."""
    import fcntl

    w = SpoolWriter(tmp_path, "s1", segment_bytes=4096, max_bytes=1 << 30)
    for seq in range(1, 201):
        w.append(encode(make_event("frame_start", session="s1", seq=seq, job="j", host="h", pid=1, frame=seq)))
    w.close()
    assert len(spoolfile.list_segments(tmp_path)["s1"]) >= 3
    held = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held, fcntl.LOCK_EX)                # the hooks' sender is writing the ack
    ingestor = _RecordingIngestor()
    calls = 0
    plain = ingestor.ingest_lines

    def ingest_lines(lines):
        nonlocal calls
        calls += 1
        if calls == 2:
            fcntl.flock(held, fcntl.LOCK_UN)         # ... and is done with it a moment later
        return plain(lines)

    ingestor.ingest_lines = ingest_lines  # type: ignore[method-assign]
    scanner = SpoolScanner(tmp_path, ingestor, chunk_bytes=1024)
    try:
        scanner.scan_once()
    finally:
        os.close(held)
    assert not (tmp_path / "s1.ack").exists()      # the first advance was refused: nothing past it acknowledged
    while spoolfile.list_segments(tmp_path):
        scanner.scan_once()
    assert set(ingestor.seqs) == set(range(1, 201))


def test_a_spool_folder_reached_through_the_admins_link_still_has_its_ack_advanced(tmp_path):
    """RENDERWATCH_SPOOL_DIR may be a link (statedir follows the root's own link: an admin's choice); the
    ack lock is taken on the folder it names."""
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (real / spoolfile.segment_name("s1", 1)).write_bytes(b"x" * 100)
    link = tmp_path / "spool"
    link.symlink_to(real)
    assert spoolfile.advance_ack(link, "s1", 1, 50)
    assert spoolfile.read_ack(link, "s1", [1]) == (1, 50)
