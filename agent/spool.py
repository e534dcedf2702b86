"""The spool scanner: catch-up from the hooks' durable spool, so an agent that was down loses nothing.

Spool layout (written by blender_hooks; one set per Blender process, `session`):

    <dir>/<session>.<index:06d>.ndjson   segments, one JSON event per line
    <dir>/<session>.ack                  "<index> <offset>": everything before it was delivered
    <dir>/<session>.lock                 flock()ed by the live writer; a free lock = a dead writer
    <dir>/agent.reader.lock              flock()ed by the one agent reading this spool, for its life

One reader per spool: the scanner acknowledges (and deletes) what it ingests, so a second agent on
the same spool would take events that are the node's agent's. `claim_spool` takes the reader lock
(which names its holder) and raises SpoolBusy, with a message saying who holds it, when another
agent has it; the lock dies with its process, so a crashed agent leaves nothing to clean up.

At start and every second the scanner ingests whole lines past each session's ack, then moves
the ack forward (never backward: the hooks' own sender writes it too; the agent deduplicates by
session seq, so reading a line twice is harmless). A segment that is fully acknowledged and
finished (a newer one exists, or its writer is gone) is deleted; so are the ack and lock files of
a session with nothing left.

Usage::

    claim = claim_spool(spool_dir, listen="127.0.0.1:9464", data_dir=data_dir)   # SpoolBusy: taken
    scanner = SpoolScanner(spool_dir, ingestor)
    scanner.scan_once()                 # tests; the agent runs `await scanner.run(1.0)`
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

# One implementation of the spool's on-disk contract, shared with the writer inside Blender.
from blender_hooks.spool import _segment_name, list_segments, read_ack, write_ack

log = logging.getLogger(__name__)
CHUNK_BYTES = 1 << 20
# Not a session's lock: session names have no dots (blender_hooks.spool._SEGMENT_RE).
READER_LOCK = "agent.reader.lock"


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
    """Become the one reader of the spool at `directory` (created 0700 if missing), or raise SpoolBusy."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / READER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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


def segment_path(directory: Path, session: str, index: int) -> Path:
    return directory / _segment_name(session, index)


def writer_gone(directory: Path, session: str) -> bool:
    """True when nobody holds the session's lock (its Blender exited or crashed)."""
    try:
        fd = os.open(directory / f"{session}.lock", os.O_RDWR)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)          # also releases the lock if we took it


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
        self._failing = False

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

    def _read(self, path: Path, offset: int) -> bytes:
        """Whole lines from offset, up to chunk_bytes (or one longer line)."""
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(self.chunk_bytes)
            cut = data.rfind(b"\n") + 1
            if cut == 0 and len(data) == self.chunk_bytes:
                f.seek(offset)
                data = f.readline()
                cut = len(data) if data.endswith(b"\n") else 0
        return data[:cut]

    def _scan(self) -> Iterator[None]:
        stats = self.ingestor.stats
        segments = list_segments(self.dir)
        pending = count = 0
        for session, indices in segments.items():
            ack_index, ack_offset = read_ack(self.dir, session)
            kept = 0
            for index in indices:
                path = segment_path(self.dir, session, index)
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
                    data = self._read(path, offset)
                    if not data:
                        if not finished:
                            break                       # the writer is mid-line: wait for the rest
                        with open(path, "rb") as f:     # a torn last line of a dead writer
                            f.seek(offset)
                            data = f.read(size - offset)
                    res = self.ingestor.ingest_lines(data.split(b"\n"))
                    self.ingested += res.accepted
                    offset += len(data)
                    write_ack(self.dir, session, index, offset)
                    yield
                if offset >= size and finished:
                    _unlink(path)
                else:
                    kept += 1
                    pending += max(0, size - offset)
            count += kept
            if not kept and writer_gone(self.dir, session):
                for suffix in (".ack", ".ack.agent.tmp", ".lock"):
                    _unlink(self.dir / f"{session}{suffix}")
        stats.spool_segments, stats.spool_pending_bytes = count, pending
