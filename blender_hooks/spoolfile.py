"""The spool's on-disk contract: one module for every reader and writer of a spool folder (standard
library only: it runs inside Blender).

The hooks' writer and sender (blender_hooks.spool), the healer's own writer and the agent's scanner
(agent.spool) all go through these functions; none of them spells a file name or parses a file itself.

Layout of one stream folder (0700, files 0600; the events' `<state>/spool`, the log records'
`<state>/spool/logs`), one set of files per writing process (`session`: `[0-9A-Za-z_-]+`, no dots):

    <dir>/<session>.<index:06d>.ndjson   segments, one JSON event per line, only ever appended to
    <dir>/<session>.next                 the writer's spare next segment (not a segment yet)
    <dir>/<session>.ack                  "<index> <offset>\\n": every line before it was delivered
    <dir>/<session>.ack.tmp              the next ack while it is written (under the ack lock)
    <dir>/<session>.lock                 flock()ed by the live writer; a free lock = a dead writer
    <dir>/                               the folder itself: flock()ed around every change of an ack
    <dir>/agent.reader.lock              flock()ed by the one agent reading the folder (agent.spool)
    <dir>/evicted_events                 total events evicted unsent (a decimal integer)

The ack's contract, for any number of consumers (the Blender's sender thread, the senders of later
Blenders adopting a dead session, the agent's scanner), threads or processes:

- It only moves forward. `advance_ack` reads, compares and replaces it under an exclusive flock on
  the stream folder (no file of its own to create or clean up), so no advance is ever lost to a concurrent older one; the new value is written
  to a temporary file and renamed over it, so a reader sees the old line or the new one, never a torn
  one. An invalid ack is removed (counted as nothing delivered) under the same lock, after reading it
  again there.
- The lock is only ever tried (non-blocking, a few retries within `wait` seconds): a consumer that
  does not get it writes nothing and tries again on its next pass. No consumer waits on another,
  so a stopped process holding the lock cannot stall Blender's sender or the agent's event loop.
- Delivery is at least once: a consumer reads whole lines past the ack, delivers them, then
  advances. Two consumers that read the same lines before either advanced both deliver them; the
  agent keeps one (it deduplicates by session and seq). Every line is delivered by one of them
  before the ack passes it, unless its segment is evicted (counted in `evicted_events`).
- An ack never names a segment that is gone when it is written: a consumer that finishes a segment
  another one already deleted (or evicted) leaves the ack as it is, so a forgotten session's ack is
  never written again.

Usage::

    for session, indices in list_segments(directory).items():
        index, offset = read_ack(directory, session, indices)
        lines = read_lines(segment_path(directory, session, index), offset, 64 * 1024)
        ...deliver lines...
        advance_ack(directory, session, index, offset + len(lines))   # False: busy, try again later
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from pathlib import Path
from typing import BinaryIO

from .logs import logger
from .statedir import open_nofollow, read_small

log = logger("renderwatch.hooks.spool")

EVICTED_FILE = "evicted_events"
READER_LOCK = "agent.reader.lock"
ACK_BYTES = 64                      # "<index> <offset>\n" is at most 29 bytes
ACK_WAIT_S = 0.05                   # how long a consumer tries the ack lock before it tries again next pass
SEGMENT_RE = re.compile(r"^([0-9A-Za-z_-]+)\.(\d{6,})\.ndjson$")
_ACK_RE = re.compile(rb"(\d{1,12}) (\d{1,15})\n?")


# -- layout -----------------------------------------------------------------------------------------

def segment_name(session: str, index: int) -> str:
    return f"{session}.{index:06d}.ndjson"


def segment_path(directory: Path, session: str, index: int) -> Path:
    return directory / segment_name(session, index)


def ack_path(directory: Path, session: str) -> Path:
    return directory / f"{session}.ack"


def session_lock_path(directory: Path, session: str) -> Path:
    return directory / f"{session}.lock"


def spare_path(directory: Path, session: str) -> Path:
    """The writer's next segment, created ahead of need (not a segment until renamed into place)."""
    return directory / f"{session}.next"


def spare_session(name: str) -> str | None:
    """The session whose spare `name` is, or None when `name` is no spare."""
    session, dot, ext = name.rpartition(".")
    return session if dot and ext == "next" and session else None


# -- segments ---------------------------------------------------------------------------------------

def list_segments(directory: Path) -> dict[str, list[int]]:
    """{session: sorted segment indices} of every segment in the directory: regular files only (a
    folder or a link named like a segment is no segment, and must not stop the scan of the others)."""
    out: dict[str, list[int]] = {}
    try:
        with os.scandir(directory) as it:
            for entry in it:
                m = SEGMENT_RE.match(entry.name)
                if m and entry.is_file(follow_symlinks=False):
                    out.setdefault(m.group(1), []).append(int(m.group(2)))
    except OSError:
        return out
    for idx in out.values():
        idx.sort()
    return out


def open_segment(path: Path) -> BinaryIO:
    """A segment opened for reading (binary file object), never through a link."""
    return os.fdopen(open_nofollow(path, os.O_RDONLY), "rb")


def read_lines(path: Path, offset: int, limit: int) -> bytes:
    """Whole lines of the segment from `offset`: at most `limit` bytes, or one line if a line is longer;
    b"" when no whole line is there yet (a writer mid-line). FileNotFoundError when it is gone."""
    with open_segment(path) as f:
        f.seek(offset)
        data = f.read(limit)
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) == limit:
            f.seek(offset)
            data = f.readline()
            cut = len(data) if data.endswith(b"\n") else 0
    return data[:cut]


def read_tail(path: Path, offset: int, size: int) -> bytes:
    """The bytes from `offset` to `size`: a dead writer's torn last line."""
    with open_segment(path) as f:
        f.seek(offset)
        return f.read(size - offset)


def count_lines(path: Path, start: int) -> int:
    try:
        with open_segment(path) as f:
            f.seek(start)
            n = 0
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n")
            return n
    except OSError:
        return 0


# -- locks ------------------------------------------------------------------------------------------

def try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on path (created if missing), or None when another holder has it."""
    try:
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return None


def writer_gone(directory: Path, session: str) -> bool:
    """True when nobody holds the session's lock (its writer exited or crashed). Never creates the lock."""
    try:
        fd = open_nofollow(session_lock_path(directory, session), os.O_RDWR)
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


def _ack_lock(directory: Path, wait: float) -> int | None:
    """The ack lock (a flock on the folder itself), tried (never waited on) until `wait` seconds pass;
    None when busy. OSError when the folder cannot be opened."""
    # The folder's own link is followed, as statedir follows the root's (RENDERWATCH_SPOOL_DIR may be one).
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.001)
        except OSError:
            os.close(fd)
            raise


# -- the ack ----------------------------------------------------------------------------------------

def _judge(directory: Path, session: str, raw: bytes | None, indices: list[int] | None) -> tuple[tuple[int, int] | None, str]:
    """((index, offset), "") for a valid ack; (None, why) for one that must not be trusted."""
    if raw is None:
        return None, "not a small regular file of this account's"
    m = _ACK_RE.fullmatch(raw)
    if m is None:
        return None, f"{raw[:40]!r} is not '<segment> <offset>'"
    index, offset = int(m.group(1)), int(m.group(2))
    if indices:
        try:
            size: int | None = os.stat(segment_path(directory, session, index)).st_size
        except OSError:
            size = None
        if size is None and index > indices[-1]:
            return None, f"segment {index} does not exist (the last is {indices[-1]})"
        if size is not None and offset > size:
            return None, f"offset {offset} is past the end of segment {index} ({size} bytes)"
    return (index, offset), ""


def read_ack(directory: Path, session: str, indices: list[int] | None = None) -> tuple[int, int]:
    """(segment index, byte offset) delivered so far; (0, 0) when nothing was acknowledged.

    The ack is read like anything else in the spool: a small regular file of this account's, never
    through a link, at most ACK_BYTES, two unsigned integers. With `indices` (the session's segments)
    it must also name a place that exists: a segment not past the last one and an offset within it.
    An ack that is none of that is removed with a warning and counts as (0, 0): the session is read
    again from its oldest segment and the agent drops what it already has (dedupe by session, seq),
    where trusting it would skip or delete unread segments. The removal happens under the ack lock,
    after reading the ack and the segments again there (another consumer may have just advanced it)."""
    path = ack_path(directory, session)
    raw = read_small(path, ACK_BYTES)
    if raw is None and not os.path.lexists(path):
        return 0, 0
    pos, _why = _judge(directory, session, raw, indices)
    if pos is not None:
        return pos
    try:
        fd = _ack_lock(directory, ACK_WAIT_S)
    except OSError:
        fd = None
    if fd is None:
        return 0, 0                    # busy: read from the oldest segment this pass, judge it again next
    try:
        raw = read_small(path, ACK_BYTES)
        if raw is None and not os.path.lexists(path):
            return 0, 0
        fresh = list_segments(directory).get(session) if indices else None
        pos, why = _judge(directory, session, raw, fresh)
        if pos is not None:
            return pos
        _remove_bad_ack(path, why)
        return 0, 0
    finally:
        os.close(fd)


def _remove_bad_ack(path: Path, why: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError as e:
        log.debug("renderwatch spool: cannot remove the invalid ack %s: %s", path, e)
        return
    log.warning("renderwatch spool: ignored and removed the ack %s (%s): the session is read again from its "
                "oldest segment", path.name, why)


def advance_ack(directory: Path, session: str, index: int, offset: int, *, wait: float = ACK_WAIT_S) -> bool:
    """Move the session's ack forward to (index, offset), never backward, atomically between consumers.

    True when the ack is now at least there (or its segment is gone: nothing left to acknowledge);
    False when another consumer held the ack lock for `wait` seconds (nothing written: try again on
    the next pass). OSError when it cannot be written (never through a link)."""
    fd = _ack_lock(directory, wait)
    if fd is None:
        return False
    try:
        path = ack_path(directory, session)
        pos, _why = _judge(directory, session, read_small(path, ACK_BYTES), None)
        if pos is not None and pos >= (index, offset):
            return True
        if not os.path.lexists(segment_path(directory, session, index)):
            return True                # delivered and deleted, or evicted, by another: never resurrect an ack
        tmp = directory / f"{session}.ack.tmp"
        tfd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(tfd, f"{index} {offset}\n".encode())
        finally:
            os.close(tfd)
        os.replace(tmp, path)
        return True
    finally:
        os.close(fd)


def forget_session(directory: Path, session: str, *, wait: float = ACK_WAIT_S) -> None:
    """Remove a finished session's ack, temporary ack and lock (its segments are all gone); under the
    ack lock when it can be had within `wait` seconds."""
    fd: int | None = None
    try:
        fd = _ack_lock(directory, wait)
    except OSError:
        pass
    try:
        for path in (ack_path(directory, session), directory / f"{session}.ack.tmp",
                     session_lock_path(directory, session)):
            try:
                os.unlink(path)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    log.warning("renderwatch spool: cannot delete %s: %s", path, e)
    finally:
        if fd is not None:
            os.close(fd)


# -- bound and eviction -----------------------------------------------------------------------------

def read_evicted(directory: Path) -> int:
    """Total events evicted unsent from this spool directory."""
    raw = read_small(directory / EVICTED_FILE, 64)
    try:
        return int((raw or b"").strip() or 0)
    except ValueError:
        return 0


def add_evicted(directory: Path, n: int) -> None:
    fd = open_nofollow(directory / EVICTED_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.read(fd, 64).strip()
        total = (int(raw) if raw.isdigit() else 0) + n
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, f"{total}\n".encode())
    finally:
        os.close(fd)  # also releases the flock


def evict(directory: Path, max_bytes: int, keep: dict[str, int] | None = None) -> int:
    """Delete the oldest segments until the directory holds at most max_bytes; return events lost.

    `keep` maps session -> segment index that must stay (a live writer's open segment). The last
    segment of any session whose writer is alive (lock held) stays too. Unsent events of an
    evicted segment (past its ack) are added to `evicted_events`.
    """
    keep = dict(keep or {})
    entries = []
    total = 0
    segments = list_segments(directory)
    for session, indices in segments.items():
        for index in indices:
            p = segment_path(directory, session, index)
            try:
                st = os.stat(p)
            except OSError:
                continue
            total += st.st_size
            entries.append((st.st_mtime, index, session, p, st.st_size))
    if total <= max_bytes:
        return 0
    last = {s: max(i) for s, i in list_segments(directory).items()}
    lost = 0
    for _mtime, index, session, p, size in sorted(entries):
        if total <= max_bytes:
            break
        if keep.get(session) == index:
            continue
        if index == last.get(session) and session not in keep:
            fd = try_lock(session_lock_path(directory, session))
            if fd is None:  # a live writer is still appending to it
                continue
            os.close(fd)
        ack_index, ack_offset = read_ack(directory, session, segments.get(session))
        unsent = 0 if index < ack_index else count_lines(p, ack_offset if index == ack_index else 0)
        try:
            os.unlink(p)
        except OSError:
            continue
        total -= size
        lost += unsent
    remaining = list_segments(directory)
    for session in last:
        if session not in remaining and session not in keep:
            forget_session(directory, session)
    if lost:
        add_evicted(directory, lost)
        log.warning("spool over %d bytes: evicted %d unsent events (oldest first)", max_bytes, lost)
    return lost
