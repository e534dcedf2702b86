"""The durable local spool between the Blender hooks and the agent (standard library only).

Inside Blender, `SpoolWriter.append(line)` is the only thing a render handler does with an event:
one `os.write` of one encoded event on an `O_APPEND` descriptor (a few microseconds, no lock on
the hot path, never raises). `SpoolSender`, a daemon thread, reads the lines past the
acknowledged offset and POSTs them as NDJSON to the agent; the agent deduplicates by
(session, seq), so a resend after a crash is harmless and an agent that is down or restarted
loses nothing: it catches up from the spool.

The files (segments rotated at 4 MiB, the ack, the session lock, `evicted_events`) and how they are
read, acknowledged and evicted are the spool's contract, in one module: `blender_hooks.spoolfile`
(the agent's scanner reads the same folder through it). This module is the writer and the sender.

The directory is bounded (`RENDERWATCH_SPOOL_MAX_BYTES`, default 64 MiB): past it the oldest
segments are evicted first and their unsent events added to `evicted_events`. A sender also
adopts the segments of dead sessions (free lock) and delivers them, so the events of a Blender
that crashed while the agent was down arrive with the next render on the host.

Usage::

    writer = SpoolWriter(spool_dir(), session="ab12cd34")
    sender = SpoolSender(writer.directory, agent_url(), token=agent_token(), writer=writer).start()
    writer.append(events.encode(ev)); sender.wake()
    sender.close(timeout=0.5); writer.close()
"""

from __future__ import annotations

import collections
import errno
import itertools
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from .logs import logger
from .settings import DEFAULT_AGENT, ENV_AGENT, ENV_HOME, ENV_SPOOL_DIR, ENV_SPOOL_MAX, ENV_TOKEN  # noqa: F401 (names read from here)
from .spoolfile import (
    advance_ack,
    evict,
    forget_session,
    list_segments,
    read_ack,
    read_lines,
    segment_path,
    session_lock_path,
    spare_path,
    spare_session,
    try_lock,
)
from .statedir import UnsafeStateDir, open_nofollow, private_dir, state_home  # noqa: F401 (re-exported)

log = logger("renderwatch.hooks.spool")

EVENTS_PATH = "/api/v1/events"

HELD_MAX = 10_000           # events a writer holds in memory for its sender while the spool cannot take them
SEGMENT_BYTES = 4 * 1024 * 1024
# The sender's poll: what a frame's events wait at most before they leave for the agent. The page
# promises a saved frame turns done within a second of Blender's `Saved:` (its own tick is 0.2 s): a
# 1 s poll broke that for any frame saved just after a pass (lags of 0.08-1.01 s measured). An idle
# poll is one attribute read, so four a second cost nothing; batches stay one POST per pass.
POLL_S = 0.25
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def spool_dir(env: Mapping[str, str] | None = None) -> Path:
    """The spool directory: $RENDERWATCH_SPOOL_DIR, else <state home>/spool."""
    e = os.environ if env is None else env
    return Path(e[ENV_SPOOL_DIR]).expanduser() if e.get(ENV_SPOOL_DIR) else state_home(e) / "spool"


def spool_max_bytes(env: Mapping[str, str] | None = None) -> int:
    e = os.environ if env is None else env
    try:
        return max(SEGMENT_BYTES, int(e.get(ENV_SPOOL_MAX) or DEFAULT_MAX_BYTES))
    except ValueError:
        return DEFAULT_MAX_BYTES


def agent_url(env: Mapping[str, str] | None = None) -> str | None:
    """The agent's events endpoint, or None when $RENDERWATCH_AGENT is "off"."""
    e = os.environ if env is None else env
    base = (e.get(ENV_AGENT) or DEFAULT_AGENT).strip()
    if base.lower() in ("off", "none", "0"):
        return None
    if "://" not in base:
        base = "http://" + base
    return base.rstrip("/") + EVENTS_PATH


def agent_token(env: Mapping[str, str] | None = None) -> str | None:
    e = os.environ if env is None else env
    return e.get(ENV_TOKEN) or None


class SpoolWriter:
    """Appends encoded events to this session's segments. Never raises; failures are counted.

    Nothing touches the disk until the first append (a Blender that never renders leaves no file).

    Usage: ``w = SpoolWriter(dir, session); w.append(b'{"v":1,...}\\n'); w.close()``
    """

    def __init__(self, directory: str | os.PathLike[str], session: str, *,
                 segment_bytes: int = SEGMENT_BYTES, max_bytes: int | None = None):
        self.directory = Path(directory)
        self.session = session
        self.segment_bytes = segment_bytes
        self.max_bytes = spool_max_bytes() if max_bytes is None else max_bytes
        self.index = 0           # current segment index (1-based once open)
        self.appended = 0        # events written
        self.dropped = 0         # events that could not be written (disk full, permissions...)
        # When the spool cannot be written and a sender delivers over HTTP (`hold_for_sender`), events wait
        # here for it instead of being dropped, in order, bounded (HELD_MAX): with a full disk the agent
        # still gets them. While any wait, new ones queue behind them (the agent takes a session's events
        # in seq order only).
        self.held: collections.deque[bytes] | None = None
        self.closed = False
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._size = 0
        self._retry_at = 0.0
        self._logged = False
        # Handlers may run on Blender's main thread and on a render thread (render_stats): the
        # uncontended lock costs ~0.1 us and keeps rotation from racing a write.
        self._lock = threading.Lock()
        # Set when a segment opens; the sender thread then enforces max_bytes (eviction counts
        # the lines of whole segments: milliseconds that must not be spent on Blender's thread).
        self.evict_pending = False
        # Creating a file can take milliseconds on a busy disk (renaming one takes microseconds):
        # the sender thread pre-creates the next segment as <session>.next, opened, and a rotation
        # renames it into place.
        self._spare_fd: int | None = None
        self._spare_path = spare_path(self.directory, session)

    def hold_for_sender(self) -> None:
        """A sender delivers this writer's events over HTTP: hold what the disk refuses for it."""
        if self.held is None:
            self.held = collections.deque()

    def _hold(self, line: bytes) -> bool:
        held = self.held
        if held is not None and len(held) < HELD_MAX and not self.closed:
            held.append(line)
            return True
        self.dropped += 1
        return False

    def append(self, line: bytes) -> bool:
        """Write one encoded event (ending in a newline) with a single os.write. True if written (or, with
        a full spool and a sender, held in memory for it)."""
        with self._lock:
            if self.held:
                return self._hold(line)
            if self._fd is None:
                if self.closed or time.monotonic() < self._retry_at or not self._open():
                    return self._hold(line)
            fd: int = self._fd  # type: ignore[assignment]  # _open() succeeded
            try:
                n = os.write(fd, line)
                if n < len(line):
                    # A short write (the disk filled up mid-line): cut the torn line off again,
                    # or the next event would be glued to it and both lost as malformed.
                    os.ftruncate(fd, self._size)
                    raise OSError(errno.ENOSPC, f"short write ({n} of {len(line)} bytes)")
            except OSError as e:
                self._fail(e)
                return self._hold(line)
            self.appended += 1
            self._size += n
            if self._size >= self.segment_bytes:
                self._close_fd()
                self._open()
            return True

    def _fail(self, e: BaseException) -> None:
        if not self._logged:
            self._logged = True
            log.warning("renderwatch spool %s not writable (%s): events %s until it is", self.directory, e,
                        "go to the agent from memory" if self.held is not None else "are dropped")
        self._close_fd()
        self._retry_at = time.monotonic() + 1.0

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _prepare_dir(self) -> None:
        """The directory (0700) and this session's lock: before any segment is visible."""
        if self._lock_fd is None:
            # Checked once per writer, not per event: this account's, 0700, no link below the state
            # root (UnsafeStateDir otherwise: the writer drops events and says so once, see _fail).
            private_dir(self.directory)
            self._lock_fd = try_lock(session_lock_path(self.directory, self.session))

    def prepare(self) -> None:
        """Create the spare segment ahead of need (the sender thread calls this; never raises)."""
        if self._spare_fd is not None or self.closed:
            return
        try:
            with self._lock:
                self._prepare_dir()
            fd = open_nofollow(self._spare_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC)
        except OSError:
            return  # the writer finds out itself, and says so once
        with self._lock:
            if self._spare_fd is None and not self.closed:
                self._spare_fd = fd
                return
            lost_to_close = self.closed
        os.close(fd)
        if lost_to_close:      # close() ran while the spare was being made: it had none to remove
            try:
                os.unlink(self._spare_path)
            except OSError:
                pass

    def _open(self) -> bool:
        """Open the next segment (caller holds self._lock): the spare renamed, else a new file."""
        path = segment_path(self.directory, self.session, self.index + 1)
        try:
            spare, self._spare_fd = self._spare_fd, None
            if spare is not None:
                try:
                    os.rename(self._spare_path, path)
                except OSError:
                    os.close(spare)
                    spare = None
            if spare is None:
                self._prepare_dir()
                spare = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            self._fd = spare
            self.index += 1
            self._size = 0
        except OSError as e:
            self._fail(e)
            return False
        self.evict_pending = True   # the sender also makes the next spare
        return True

    @property
    def needs_spare(self) -> bool:
        return self._spare_fd is None and not self.closed

    def evict_now(self) -> int:
        """Bound the spool directory now (never this writer's open segment); events evicted."""
        self.evict_pending = False
        return evict(self.directory, self.max_bytes, keep={self.session: self.index})

    def close(self) -> None:
        """Close the segment and release the session lock (idempotent); segments stay for the sender."""
        with self._lock:
            self.closed = True
            self._close_fd()
            spare, self._spare_fd = self._spare_fd, None
            fd, self._lock_fd = self._lock_fd, None
        if spare is not None:
            for action in (lambda: os.close(spare), lambda: os.unlink(self._spare_path)):
                try:
                    action()
                except OSError:
                    pass
        if fd is not None:
            if self.index == 0:  # nothing was ever written: leave nothing behind
                try:
                    os.unlink(session_lock_path(self.directory, self.session))
                except OSError:
                    pass
            try:
                os.close(fd)
            except OSError:
                pass


ABORT_GRACE_S = 0.2  # after close()'s bound: how long the aborted thread gets to return


class SpoolSender:
    """Delivers spooled events to the agent from a daemon thread, resuming at the ack offset.

    - 2xx: delivered, the ack advances. 400 (rejected as malformed): the ack advances anyway (the
      agent counted it; resending cannot help). 413: the batch size halves and the batch is retried;
      a single line still too large is skipped. Anything else (down, 5xx, timeout): back off
      exponentially and retry the same bytes.
    - Segments fully acknowledged and finished (a newer segment exists, or the writer is gone)
      are deleted, then the ack and lock files of a finished session.
    - `close(timeout)` makes one last delivery attempt bounded by `timeout` seconds.

    Usage: ``SpoolSender(dir, url, token=None, writer=w).start()``; ``drain_once()`` for tests/tools.
    """

    def __init__(self, directory: str | os.PathLike[str], url: str | None, *, token: str | None = None,
                 writer: SpoolWriter | None = None, batch_bytes: int = 64 * 1024, timeout: float = 5.0,
                 poll_interval: float = POLL_S, max_backoff: float = 10.0, adopt: bool = True,
                 rescan_interval: float = 5.0):
        self.directory = Path(directory)
        self.url = url
        self.token = token
        self.writer = writer
        self.batch_bytes = batch_bytes
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.rescan_interval = rescan_interval  # how often an idle sender looks for dead sessions
        self.max_backoff = max_backoff
        self.adopt = adopt
        self.sent = 0            # events delivered (2xx)
        self.rejected = 0        # events the agent refused (400, or a single line over its limit)
        self.posts = 0
        if url and writer is not None:
            writer.hold_for_sender()   # a full spool: its events come to this sender from memory
        self._wake = threading.Event()
        self._stopping = False
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._backoff = 0.0
        self._unreachable = False
        self._last_status = 0
        self._adopted: dict[str, int] = {}  # session -> lock fd held while draining a dead session
        self._seen = -1            # writer.appended when the last successful pass began
        self._dir_checked = False  # the folder was found this account's own (statedir)
        self._dir_refused = False
        self._next_scan = 0.0
        headers = {"Content-Type": "application/x-ndjson"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._headers = headers
        self._http = None
        if url:                        # socket and the HTTP client load only for a sender that sends
            from .transport import HttpPoster

            self._http = HttpPoster(url)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> SpoolSender:
        """Start the thread (also without a URL: it then only keeps the spool within its bound)."""
        if (self.url or self.writer is not None) and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="renderwatch-spool-sender", daemon=True)
            self._thread.start()
        return self

    def wake(self) -> None:
        """Ask the thread to look now (safe from any thread; costs Blender's thread a GIL handover,
        ~30 us, so the hooks call it once per job, not per event)."""
        if not self._wake.is_set():
            self._wake.set()

    def close(self, timeout: float = 0.5) -> None:
        """Stop the thread after one last delivery attempt, waiting at most `timeout` seconds."""
        t = self._thread
        self._deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
            if t.is_alive() and self._http is not None:
                # A post still in flight (an agent that accepts and never answers, a connect to a
                # host that drops SYNs): cut it, so the thread is gone before the interpreter ends.
                # A live thread at exit hangs bpy 4.5 forever and crashes 4.2. Undelivered events
                # stay in the spool for the next sender or the agent's scanner.
                self._http.abort()
                t.join(ABORT_GRACE_S)
        if t is None or not t.is_alive():
            self._release_adopted()

    def _run(self) -> None:
        # Handlers never wake this thread per event (a wake-up makes Blender's thread wait for the
        # GIL); it polls instead, and an idle poll is one attribute read.
        while True:
            stopping = self._stopping
            ok = True
            try:
                w = self.writer
                if w is not None:
                    if w.needs_spare:
                        w.prepare()
                    if w.evict_pending:
                        w.evict_now()
                now = time.monotonic()
                appended = w.appended if w is not None else 0
                if stopping or appended != self._seen or now >= self._next_scan or (w is not None and w.held):
                    ok = self.drain_once(self._deadline if stopping else None)
                    if ok and w is not None and w.held:
                        ok = self._send_held(w, self._deadline if stopping else None)
                    if ok:
                        self._seen, self._next_scan = appended, now + self.rescan_interval
            except Exception as e:  # the thread must survive anything
                log.warning("renderwatch spool sender: %s", e)
                ok = False
            if stopping:
                self._release_adopted()
                if self._http is not None:
                    self._http.close()
                return
            if ok:
                self._backoff = 0.0
                wait = self.poll_interval
            else:
                self._backoff = min(self.max_backoff, max(0.2, self._backoff * 2))
                wait = self._backoff
            self._wake.wait(wait)
            self._wake.clear()

    def _release_adopted(self) -> None:
        for fd in self._adopted.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._adopted.clear()

    # -- delivery -------------------------------------------------------------------------------
    def drain_once(self, deadline: float | None = None) -> bool:
        """Deliver everything deliverable now. False when the agent could not be reached."""
        if not self.url:
            return True
        if not self._dir_checked and not self._check_dir():
            return True
        own = self.writer.session if self.writer is not None else None
        if self.adopt:
            self._sweep(own)
        sessions = list_segments(self.directory)
        order = sorted(sessions, key=lambda s: s != own)  # our own events first
        for session in order:
            if session != own:
                if not self.adopt:
                    continue
                if session not in self._adopted:
                    fd = try_lock(session_lock_path(self.directory, session))
                    if fd is None:
                        continue  # its writer is alive: it has its own sender
                    self._adopted[session] = fd
            if not self._drain_session(session, sessions[session], deadline):
                return False
        return True

    def _check_dir(self) -> bool:
        """Whether the spool folder may be read (once: then no other account can change it): this
        account's, no link below the state root. Never creates it (a Blender that never renders leaves
        nothing behind)."""
        try:
            private_dir(self.directory, create=False)
        except FileNotFoundError:
            return False                       # nothing spooled yet
        except OSError as e:
            if not self._dir_refused:
                self._dir_refused = True
                (log.debug if self.writer is not None else log.warning)(   # the writer says so itself
                    "renderwatch spool %s not read: %s", self.directory, e)
            return False
        self._dir_checked = True
        return True

    def _sweep(self, own: str | None) -> None:
        """Remove the spare and lock of dead sessions that never wrote a segment."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        with_segments = list_segments(self.directory)
        for name in names:
            session = spare_session(name)
            if session is None or session == own or session in with_segments:
                continue
            lock = session_lock_path(self.directory, session)
            fd = try_lock(lock)
            if fd is None:
                continue  # alive
            self._unlink(self.directory / name)
            self._unlink(lock)
            os.close(fd)

    def _session_open_index(self, session: str) -> int | None:
        """The segment a live writer may still append to, or None when the session is finished."""
        w = self.writer
        if w is not None and w.session == session and not w.closed:
            return w.index
        return None

    def _read_batch(self, path: Path, offset: int) -> bytes:
        """Whole lines from offset, at most batch_bytes (or one line, if a line is longer)."""
        try:
            return read_lines(path, offset, self.batch_bytes)
        except FileNotFoundError:  # evicted under us
            return b""

    def _drain_session(self, session: str, indices: list[int], deadline: float | None) -> bool:
        open_index = self._session_open_index(session)
        for index in indices:
            path = segment_path(self.directory, session, index)
            finished = open_index is None or index < open_index
            while True:
                # Re-read each time: the agent's spool scanner may have moved the ack forward.
                ack_index, ack_offset = read_ack(self.directory, session, indices)
                if index < ack_index:
                    break
                offset = ack_offset if index == ack_index else 0
                data = self._read_batch(path, offset)
                if not data:
                    if finished:
                        self._skip_torn_tail(session, index, path, offset)
                    break
                status = self._post(data, deadline)
                if status is None:
                    return False
                lines = data.count(b"\n")
                if status == 413 and lines > 1:
                    self.batch_bytes = max(1, len(data) // 2)
                    continue  # same bytes, smaller batches
                if 200 <= status < 300:
                    self.sent += lines
                    self._last_status = 0
                elif status in (400, 413, 422):
                    # Some events were malformed (the agent counted them, kept the rest) or a
                    # single event is over its limit: resending cannot help, so move on.
                    self.rejected += lines
                else:
                    self._log_status(status)
                    return False
                try:
                    if not advance_ack(self.directory, session, index, offset + len(data)):
                        return False  # another consumer holds the ack lock: again on the next pass
                except OSError as e:
                    log.warning("renderwatch spool: cannot write ack: %s", e)
                    return False
                if deadline is not None and time.monotonic() >= deadline:
                    return True
            if not finished:
                return True  # the live segment: more may come
            self._unlink(path)  # finished and delivered (or evicted already)
        if open_index is None and not list_segments(self.directory).get(session):
            self._forget_session(session)
        return True

    def _skip_torn_tail(self, session: str, index: int, path: Path, offset: int) -> None:
        """A finished segment ending without a newline (its writer died mid-write): drop the tail."""
        try:
            size = os.path.getsize(path)
        except OSError:
            return
        if size > offset:
            log.warning("renderwatch spool: dropping %d bytes of a torn last line in %s", size - offset, path.name)
            advance_ack(self.directory, session, index, size)   # busy: the segment is deleted all the same

    def _log_status(self, status: int) -> None:
        if status != self._last_status:
            self._last_status = status
            log.warning("renderwatch agent answered HTTP %d at %s: events wait in the spool", status, self.url)

    def _send_held(self, w: SpoolWriter, deadline: float | None) -> bool:
        """Deliver what the writer holds in memory (its spool could not take it), after the session's
        segments (drain_once), oldest first. False when the agent could not be reached."""
        held = w.held
        while held:
            with w._lock:                      # a handler may append meanwhile: take a snapshot
                batch = list(itertools.islice(held, 500))
            size = 0
            for n, line in enumerate(batch):
                size += len(line)
                if size > self.batch_bytes and n:
                    del batch[n:]
                    break
            status = self._post(b"".join(batch), deadline)
            if status is None:
                return False
            with w._lock:
                for _ in batch:
                    held.popleft()
            if 200 <= status < 300:
                self.sent += len(batch)
            else:
                self.rejected += len(batch)
                self._log_status(status)
        return True

    def _post(self, data: bytes, deadline: float | None) -> int | None:
        """POST one batch; the HTTP status, or None when the agent was unreachable."""
        assert self.url
        timeout = self.timeout
        if deadline is not None:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                return None
        assert self._http is not None
        self.posts += 1
        try:
            status = self._http.post(data, self._headers, timeout)
        except (OSError, ValueError) as e:  # refused, timeouts, resets, bad URL
            if not self._unreachable:
                self._unreachable = True
                log.warning("renderwatch agent unreachable at %s (%s): events wait in the spool", self.url, e)
            return None
        if status >= 500:
            return None
        if self._unreachable:
            self._unreachable = False
            log.warning("renderwatch agent reachable again at %s", self.url)
        return status

    def _unlink(self, path: Path) -> None:
        try:
            os.unlink(path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                log.warning("renderwatch spool: cannot delete %s: %s", path, e)

    def _forget_session(self, session: str) -> None:
        forget_session(self.directory, session)
        fd = self._adopted.pop(session, None)
        if fd is not None:
            os.close(fd)
