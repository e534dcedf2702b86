"""The spool scanner: catch-up from the hooks' durable spool, so an agent that was down loses nothing.

The spool's files (segments, acks, locks) and how they are read and acknowledged are one contract,
`blender_hooks.spoolfile`, shared with the writer and the sender inside Blender; this module is the
agent's consumer of it. `<dir>/agent.reader.lock` is flock()ed by the one agent reading the spool.

One reader per spool: the scanner acknowledges (and deletes) what it ingests, so a second agent on
the same spool would take events that are the node's agent's. `claim_spool` takes the reader lock
(which names its holder) and raises SpoolBusy, with a message saying who holds it, when another
agent has it; the lock dies with its process, so a crashed agent leaves nothing to clean up.

At start and every second the scanner ingests whole lines past each session's ack, then moves
the ack forward (`spoolfile.advance_ack`: never backward, atomic with the hooks' own sender, which
writes it too; the agent deduplicates by session seq, so reading a line twice is harmless). A segment that is fully acknowledged and
finished (a newer one exists, or its writer is gone) is deleted; so are the ack and lock files of
a session with nothing left.

Usage::

    claim = claim_spool(spool_dir, listen="127.0.0.1:9464", data_dir=data_dir)   # SpoolBusy: taken
    scanner = SpoolScanner(spool_dir, ingestor)
    scanner.scan_once()                 # tests; the agent runs `await scanner.run(1.0)`
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

# One implementation of the spool's on-disk contract, shared with the writer inside Blender.
from blender_hooks.spoolfile import (
    READER_LOCK,
    advance_ack,
    forget_session,
    list_segments,
    read_ack,
    read_lines,
    read_tail,
    segment_path,
    writer_gone,
)
from blender_hooks.statedir import open_nofollow, private_dir

log = logging.getLogger(__name__)
CHUNK_BYTES = 1 << 20
ACK_WAIT_S = 0.005      # the ack lock is tried this long at most: the scanner runs on the event loop


class LineIngestor(Protocol):
    """What a scanner feeds: agent.ingest.Ingestor (events) or agent.logs.LogIngestor (log records)."""

    stats: Any

    def ingest_lines(self, lines: Iterable[bytes]) -> Any: ...


class SpoolBusy(Exception):
    """Another agent reads this spool; str() says which, and what to do."""


class SpoolClaim:
    """The reader lock of one spool, held until release() (or the process ends)."""

    def __init__(self, directory: Path, fd: int):
        self.directory = directory
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)               # releases the flock; the file stays (unlinking it would race a claimer)


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096) or b"{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or not info.get("pid"):
        return "another agent"
    where = ", ".join(f"{k} {info[k]}" for k in ("listen", "data_dir") if info.get(k))
    return f"the agent pid {info['pid']}" + (f" ({where})" if where else "")


def claim_spool(directory: Path, *, listen: str = "", data_dir: Path | str = "") -> SpoolClaim:
    """Become the one reader of the spool at `directory` (created 0700 if missing), or raise SpoolBusy.
    A folder another account owns, or reached through a link below the state root, raises
    UnsafeStateDir (blender_hooks.statedir)."""
    directory = Path(directory)
    private_dir(directory)
    fd = open_nofollow(directory / READER_LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        who = _holder(fd)
        os.close(fd)
        raise SpoolBusy(f"the spool {directory} is read by {who}: a second reader would take that agent's "
                        "events. Give this agent its own state (RENDERWATCH_HOME, or --spool-dir and "
                        "--data-dir), or stop the other agent first") from None
    except OSError:
        os.close(fd)
        raise
    info = {"pid": os.getpid(), "listen": listen, "data_dir": str(data_dir), "since": round(time.time(), 3)}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    except OSError as e:             # the lock is what counts; the note only helps the message
        log.warning("spool %s: cannot note this agent in %s: %s", directory, READER_LOCK, e)
    return SpoolClaim(directory, fd)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("spool: cannot delete %s: %s", path, e)


class SpoolScanner:
    """Ingests spooled events the HTTP path has not delivered (yet)."""

    def __init__(self, directory: Path, ingestor: LineIngestor, chunk_bytes: int = CHUNK_BYTES):
        self.dir = Path(directory)
        self.ingestor = ingestor
        self.chunk_bytes = chunk_bytes
        self.ingested = 0
        self.session_errors = 0     # passes over a session that an OSError cut short
        self._failing = False
        self._dir_checked = False

    def scan_once(self) -> int:
        """One full pass; returns events accepted."""
        before = self.ingested
        for _ in self._scan():
            pass
        return self.ingested - before

    async def run(self, interval: float) -> None:
        """Scan now and then every `interval` seconds, yielding to the event loop between chunks."""
        while True:
            try:
                for _ in self._scan():
                    await asyncio.sleep(0)
                if self._failing:
                    self._failing = False
                    log.info("spool %s readable again", self.dir)
            except OSError as e:
                if not self._failing:
                    self._failing = True
                    log.warning("spool %s: %s", self.dir, e)
            await asyncio.sleep(interval)

    def _scan(self) -> Iterator[None]:
        stats = self.ingestor.stats
        if not self._dir_checked:                # once: then no other account can change the folder
            try:
                private_dir(self.dir, create=False)
            except FileNotFoundError:
                stats.spool_segments = stats.spool_pending_bytes = 0
                return
            self._dir_checked = True
        segments = list_segments(self.dir)
        totals = [0, 0]                          # segments kept, bytes pending
        for session, indices in segments.items():
            try:
                yield from self._scan_session(session, indices, totals)
            except OSError as e:
                # One session's broken file (an ack the rename cannot replace, a segment that went
                # unreadable) must not keep every other session's events from being caught up.
                self.session_errors += 1
                log.warning("spool %s: session %s skipped this pass: %s", self.dir, session, e)
        stats.spool_segments, stats.spool_pending_bytes = totals

    def _scan_session(self, session: str, indices: list[int], totals: list[int]) -> Iterator[None]:
        ack_index, ack_offset = read_ack(self.dir, session, indices)
        kept = 0
        busy = False
        for index in indices:
            path = segment_path(self.dir, session, index)
            if busy:                                # not read this pass: counted as kept
                kept += 1
                with contextlib.suppress(OSError):
                    totals[1] += os.path.getsize(path)
                continue
            if index < ack_index:
                _unlink(path)                       # fully delivered and a newer one exists
                continue
            # Decide "finished" before reading the size: a writer that is gone appends no more.
            finished = index < indices[-1] or writer_gone(self.dir, session)
            offset = ack_offset if index == ack_index else 0
            try:
                size = os.path.getsize(path)
            except FileNotFoundError:
                continue
            while offset < size:
                try:
                    data = read_lines(path, offset, self.chunk_bytes)
                    if not data:
                        if not finished:
                            break                   # the writer is mid-line: wait for the rest
                        data = read_tail(path, offset, size)   # a torn last line of a dead writer
                except FileNotFoundError:
                    break                           # the hooks' sender delivered it all and deleted it (or evicted)
                res = self.ingestor.ingest_lines(data.split(b"\n"))
                self.ingested += res.accepted
                if not advance_ack(self.dir, session, index, offset + len(data), wait=ACK_WAIT_S):
                    # The hooks' sender holds the ack lock: stop this session until the next pass. Not
                    # only this segment: acknowledging a later one would pass this one's unread lines.
                    busy = True
                    break
                offset += len(data)
                yield
            if (offset >= size and finished) or not os.path.lexists(path):   # read all, or deleted under us
                _unlink(path)
            else:
                kept += 1
                totals[1] += max(0, size - offset)
        totals[0] += kept
        if not kept and writer_gone(self.dir, session):
            forget_session(self.dir, session, wait=ACK_WAIT_S)
