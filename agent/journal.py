"""Durability: an append-only journal of accepted events, replayed at start, compacted as jobs expire.

An agent killed with SIGKILL mid-render and restarted rebuilds its jobs, dedupe cursors and
cumulative frame totals from the journal, so every frame is counted exactly once. Each record has
a position (monotonic, kept across compactions); the span exporter persists the highest position
whose spans were exported (ExportMark), and replay re-emits spans only above it.

File format (`journal.log`, 0600), one record per line:

    H<TAB>{"next": N, "totals": {...}, "cursors": {...}}      first line after a compaction
    <pos><TAB><event JSON>                                    an accepted event (as journaled)

Usage::

    j = Journal(data_dir)
    j.replay(state, on_effect=lambda effect, pos: ...)     # at start
    first_pos = j.append([event_json_bytes, ...])           # one write per ingest batch
    j.compact(state, exported=mark.value)                   # after jobs expired
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from agent.aggregates import FrameTotals
from agent.state import Effect, State
from blender_hooks.events import EventError, validate
from blender_hooks.statedir import open_nofollow, read_small
from kernel.paths import ensure_private_dir

log = logging.getLogger(__name__)

JOURNAL = "journal.log"
EXPORTED = "spans-exported"


def _write_private(path: Path, data: bytes, sync: bool = True) -> None:
    """Write a whole file atomically (tmp + rename), readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _open_journal(path: Path) -> BinaryIO:
    """The journal for reading: a regular file, never through a link (ELOOP), never a FIFO or device
    (a planted /dev/zero would be read without end)."""
    f = os.fdopen(open_nofollow(path, os.O_RDONLY | os.O_NONBLOCK), "rb")
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        f.close()
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return f


class ExportMark:
    """The highest journal position whose spans were exported, persisted in a small file."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / EXPORTED
        try:
            self.value = int((read_small(self.path, 64) or b"").strip() or 0)
        except ValueError:
            self.value = 0

    def advance(self, pos: int) -> None:
        if pos > self.value:
            self.value = pos
            # No fsync: the page cache survives a killed agent, and the time between the receiver
            # taking a batch and this mark being written is the window in which a kill makes a
            # restarted agent send those spans again (with the same ids: backends deduplicate).
            _write_private(self.path, str(pos).encode(), sync=False)


class Journal:
    """Append-only event journal under the agent's data directory."""

    def __init__(self, data_dir: Path):
        self.dir = Path(data_dir)
        ensure_private_dir(self.dir)
        self.path = self.dir / JOURNAL
        self.next_pos = 1
        self.replay_errors = 0          # records skipped at replay: unreadable, refused, or raising
        self._fd: int | None = None
        self.errors = 0
        self.waiting = 1           # compact once after a start: replayed jobs may have expired
        self.spans_given_up = 0    # ended jobs compacted away before their spans were exported (size bound)

    def _open(self) -> None:
        if self._fd is None:
            self._fd = open_nofollow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def replay(self, state: State, on_effect: Callable[[Effect, int], None] | None = None) -> int:
        """Rebuild `state` from the journal; call on_effect(effect, pos) per effect. Returns records read."""
        n = 0
        try:
            f = _open_journal(self.path)
        except FileNotFoundError:
            self._open()
            return 0
        with f:
            for raw in f:
                head, tab, body = raw.partition(b"\t")
                if not tab or not raw.endswith(b"\n"):
                    continue                       # a torn last line from a crash mid-write
                try:
                    if head == b"H":
                        h = json.loads(body)
                        state.totals = FrameTotals.from_dict(h.get("totals", {}))
                        state.cursors.update({str(k): int(v) for k, v in h.get("cursors", {}).items()})
                        self.next_pos = max(self.next_pos, int(h.get("next", 1)))
                        continue
                    pos, ev = int(head), validate(json.loads(body))
                except EventError as e:
                    # written by an agent that accepted what this one refuses (a lone surrogate, a frame
                    # of 1e308 s): replaying it would break /metrics again, so it is skipped and counted
                    self.replay_errors += 1
                    log.warning("journal %s: skipping a record the event schema refuses: %s", self.path, e)
                    continue
                except (ValueError, TypeError, AttributeError):
                    self.replay_errors += 1
                    log.warning("journal %s: skipping an unreadable record", self.path)
                    continue
                self.next_pos = max(self.next_pos, pos + 1)
                n += 1
                try:
                    if "session" in ev:
                        s = ev["session"]
                        if ev["seq"] > state.cursors.get(s, 0):
                            state.cursors.pop(s, None)
                            state.cursors[s] = ev["seq"]
                    effect = state.apply(ev)
                except Exception as e:  # one poisoned record must not stop the agent from starting
                    self.replay_errors += 1
                    log.warning("journal %s: skipping record %d that cannot be applied: %s", self.path, pos, e)
                    continue
                if effect is not None and on_effect is not None:
                    on_effect(effect, pos)
        self._open()
        return n

    def append(self, lines: Iterable[bytes]) -> int:
        """Journal event lines (JSON, no trailing newline) in one write; return the first position."""
        first = pos = self.next_pos
        chunks = []
        for line in lines:
            chunks.append(b"%d\t" % pos)
            chunks.append(line)
            chunks.append(b"\n")
            pos += 1
        if pos == first:
            return first
        self.next_pos = pos
        try:
            self._open()
            assert self._fd is not None
            data = b"".join(chunks)
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError as e:
            # Availability over durability: the events are still applied in memory.
            self.errors += 1
            if self.errors == 1:
                log.error("journal %s: cannot write (%s); events are kept in memory only", self.path, e)
        return first

    def compact(self, state: State, exported: int, max_bytes: int | None = None) -> int:
        """Rewrite the journal without the records of jobs no longer in `state` (expired) whose
        records were all exported (every position <= `exported`, the `_expire` record's included);
        their frames move into the header's totals. Past `max_bytes` (an exporter failing for days)
        expired jobs go whether exported or not: their unsent spans are given up, counted in
        `spans_given_up`. Returns how many records were dropped."""
        try:
            with _open_journal(self.path) as f:
                raw_lines = f.readlines()
        except FileNotFoundError:
            return 0
        over = max_bytes is not None and sum(len(r) for r in raw_lines) > max_bytes
        base = State()
        records: list[tuple[bytes, int, dict | None]] = []     # (line, pos, event) ; header: pos 0
        last: dict[str, int] = {}
        for raw in raw_lines:
            head, tab, body = raw.partition(b"\t")
            if not tab or not raw.endswith(b"\n"):
                continue
            try:
                if head == b"H":
                    base.totals = FrameTotals.from_dict(json.loads(body).get("totals", {}))
                    continue
                pos, ev = int(head), json.loads(body)
                job = ev["job"]
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
            records.append((raw, pos, ev))
            last[job] = max(last.get(job, 0), pos)
        gone = {job for job in last if job not in state.jobs}
        done = {job for job in gone if last[job] <= exported or over}
        self.waiting = len(gone) - len(done)
        if over:
            given_up = {job for job in done if last[job] > exported}
            if given_up:
                self.spans_given_up += len(given_up)
                log.warning("journal over %d bytes: %d ended job(s) dropped with spans not exported", max_bytes,
                            len(given_up))     # expired jobs whose last spans are not exported yet
        if not done:
            return 0
        retained = []
        for raw, _pos, ev in records:
            if ev is not None and ev["job"] in done:
                base.apply(ev)             # folds its frames into the base totals
            else:
                retained.append(raw)
        header = {"next": self.next_pos, "totals": base.totals.to_dict(), "cursors": state.cursors}
        data = b"H\t" + json.dumps(header, separators=(",", ":")).encode() + b"\n" + b"".join(retained)
        self.close()
        _write_private(self.path, data)
        self._open()
        return len(records) - len(retained)
