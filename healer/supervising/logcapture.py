"""Every line Blender prints, kept: bounded log records for the agent, through the durable spool.

The supervisor's line handler (attempt.py, supervise_only.py) hands each line here after the
classifier read it, with the classifier's reading as the level (`LogScanner.line_level`) and the
frame, attempt and phase in flight. Nothing is classified twice. What is kept is bounded:

- progress lines (Blender's `Fra:` lines, the lowest level) are folded per frame and attempt: the
  first one is kept, then at most one a second (a sample), and the last one when the frame ends,
  each kept line carrying the count of lines folded into it;
- past INFO_PER_FRAME info lines in one frame, info lines are folded the same way;
- a warning, an error or a traceback line is never folded;
- every line is valid UTF-8 (undecodable bytes and control characters replaced) and at most
  16 KiB, cut with a marker (kernel.logrecords).

Records go to a spool session of their own under `<spool>/logs/` with the hooks' spool writer
(durable while the agent is down or restarting; the spool's bound evicts the oldest segments,
counted). The work is batched: the line handler only queues a line; at most FLUSH_S (50 ms) later
the flusher thread folds, cleans and encodes the queued lines and writes them in one `os.write`
(or sooner, past BATCH_LINES lines or BATCH_BYTES bytes). A warning or an error line is processed
and written at once, with everything before it. So a crash of the supervisor itself loses at most
the last 50 ms of progress and info lines, never a warning or an error, and a line is at the agent
well within a second. (Line by line, with one write per record, capture cost ~2.5 % of a core at
1,000 written lines a second: bench/bench_logs.py.) A spool that cannot be written (disk full)
drops records, counted and told to the agent in the next record that is written; the render never
waits for its log.

Usage::

    logs = LogCapture(job="j1", env=os.environ)
    logs.feed(line, scanner.line_level, frame=3, attempt=1, rendering=True)
    logs.frame_tail(3)            # the frame's last lines (incidents)
    logs.close()
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping

from blender_hooks import spool
from kernel.logrecords import clean_text, encode_record, logs_enabled, logs_spool_dir

log = logging.getLogger("healer.supervising.logcapture")

SAMPLE_S = 1.0              # a folded stream keeps at most one line a second
INFO_PER_FRAME = 1000       # info lines kept per frame before they are folded too
TAIL_LINES = 50             # the last lines kept per capture for incidents
TAIL_LINE_CHARS = 1000
FLUSH_S = 0.05              # a batched record waits at most this long for its write
BATCH_BYTES = 64 * 1024     # ... or until this much is waiting
BATCH_LINES = 4096          # ... or until this many lines are queued
URGENT = frozenset(("warning", "error"))     # written at once


class _Fold:
    """One folded stream (progress, or info past its budget) of one frame and attempt."""

    __slots__ = ("pending", "folded", "last_emit")

    def __init__(self) -> None:
        self.pending: tuple[float, str, str] | None = None     # (ts, level, raw text) held back
        self.folded = 0                                        # lines folded into `pending`
        self.last_emit = -1e18


class LogCapture:
    """Bounded log records of one supervised job, spooled for the agent. Never raises into the caller."""

    def __init__(self, job: str, env: Mapping[str, str], *, clock: Callable[[], float] = time.time,
                 directory: os.PathLike[str] | str | None = None):
        self.job = job
        self.enabled = logs_enabled(env)
        self.clock = clock
        self.directory = logs_spool_dir(env) if directory is None else directory
        self.max_bytes = spool.spool_max_bytes(env)
        self.session = os.urandom(8).hex()
        self.n = 0
        self.counts = collections.Counter[str]()      # lines, records, folded, cut, dropped
        self.tail: collections.deque[tuple[int | None, int | None, str, str]] = collections.deque(maxlen=TAIL_LINES)
        self._writer: spool.SpoolWriter | None = None
        self._keeper: spool.SpoolSender | None = None
        self._failed = False
        self._unreported_drops = 0
        self._key: tuple[int | None, int | None] = (None, None)
        self._folds: dict[str, _Fold] = {}
        self._info = 0
        self._phase: str | None = None
        # The batch: encoded records not yet written, their bytes, and the drops they report.
        # The lock is taken by the line handler and the flusher thread, never across a render step.
        self._lock = threading.Lock()
        self._lines: list[tuple[str, str, int | None, int | None, bool, float]] = []   # queued, not processed
        self._buf: list[bytes] = []
        self._buf_bytes = 0
        self._buf_reported = 0
        self._due = threading.Event()
        self._closing = threading.Event()
        self._flusher: threading.Thread | None = None

    # -- feeding --------------------------------------------------------------------------------
    def feed(self, line: str, level: str, frame: int | None, attempt: int | None, rendering: bool) -> None:
        """One line as Blender printed it (surrogate-escaped bytes allowed), with the classifier's level.

        The line handler only queues the line: folding, cleaning, encoding and writing run for a
        whole batch at once (at most FLUSH_S later, on the flusher thread), where the code is hot;
        one at a time between Blender's lines they cost ~4x more CPU. A warning or an error line
        is processed and written at once, with every line before it."""
        if not self.enabled:
            return
        try:
            now = self.clock()
            if self._writer is None and not self._failed:
                self._open()
            with self._lock:
                self._lines.append((line, level, frame, attempt, rendering, now))
                if level in URGENT or self._flusher is None or len(self._lines) >= BATCH_LINES:
                    self._process_locked()
                    self._flush_locked()
                elif len(self._lines) == 1:
                    self._due.set()                              # the flusher takes it within FLUSH_S
        except Exception as e:              # the log never stops the render
            self._capture_failed(e)

    def _capture_failed(self, e: BaseException) -> None:
        if not self._failed:
            self._failed = True
            log.warning("log capture failed (%s): Blender's lines are no longer kept for this job", e)

    def _process_locked(self) -> None:
        """Fold, clean and encode the queued lines (the caller holds the lock)."""
        lines, self._lines = self._lines, []
        for item in lines:
            try:
                self._feed(*item)
            except Exception as e:
                self._capture_failed(e)

    def _feed(self, line: str, level: str, frame: int | None, attempt: int | None, rendering: bool,
              now: float) -> None:
        self.counts["lines"] += 1
        key = (attempt, frame)
        if key != self._key:
            self._flush_folds()
            self._key, self._info = key, 0
        self._phase = "render" if rendering else ("startup" if frame is None else "post")
        if level == "progress" or (level == "info" and self._info >= INFO_PER_FRAME):
            self._fold(level, line, now)
            return
        if level == "info":
            self._info += 1
        self._flush_folds()
        self._write(now, level, line, 0)

    def _fold(self, level: str, line: str, now: float) -> None:
        f = self._folds.get(level)
        if f is None:
            f = self._folds[level] = _Fold()
            self._write(now, level, line, 0)          # the first line of the stream is kept
            f.last_emit = now
            return
        if f.pending is not None:
            f.folded += 1
            self.counts["folded"] += 1
        f.pending = (now, level, line)
        if now - f.last_emit >= SAMPLE_S:              # the sample: at most one a second
            self._write(now, level, line, f.folded)
            f.pending, f.folded, f.last_emit = None, 0, now

    def _flush_folds(self) -> None:
        """The last line of each folded stream, with the count folded into it (a frame's end)."""
        if not self._folds:
            return
        for f in self._folds.values():
            if f.pending is not None:
                ts, level, line = f.pending
                self._write(ts, level, line, f.folded)
        self._folds.clear()

    def _write(self, ts: float, level: str, line: str, folded: int) -> None:
        """Encode one record into the batch (the caller holds the lock)."""
        text, cut = clean_text(line)
        if cut:
            self.counts["cut"] += 1
        attempt, frame = self._key
        self.tail.append((frame, attempt, level, text[:TAIL_LINE_CHARS]))
        if self._writer is None:
            self._drop(1)
            return
        self.n += 1
        rec = encode_record(session=self.session, n=self.n, job=self.job, ts=ts, attempt=attempt, frame=frame,
                            phase=self._phase, level=level, text=text, folded=folded,
                            dropped=self._unreported_drops - self._buf_reported)
        self._buf_reported = self._unreported_drops         # the agent learns of lines the full disk took
        self._buf.append(rec)
        self._buf_bytes += len(rec)
        if self._buf_bytes >= BATCH_BYTES:
            self._flush_locked()

    def _flush_locked(self) -> None:
        """Write the waiting records in one os.write (the caller holds the lock)."""
        if not self._buf or self._writer is None:
            return
        batch, n = b"".join(self._buf), len(self._buf)
        reported = self._buf_reported
        self._buf, self._buf_bytes, self._buf_reported = [], 0, 0
        if self._writer.append(batch):
            self.counts["records"] += n
            self._unreported_drops -= reported
        else:
            self.n -= n                                      # the sequence stays gapless
            self._drop(n)

    def flush(self) -> None:
        """Process and write what is waiting now."""
        with self._lock:
            self._process_locked()
            self._flush_locked()

    def _flush_loop(self) -> None:
        while True:
            self._due.wait()
            if self._closing.wait(FLUSH_S):
                return                                       # close() writes the rest
            with self._lock:
                self._due.clear()
                try:
                    self._process_locked()
                    self._flush_locked()
                except Exception as e:                       # never a dead flusher with lines waiting
                    log.warning("log capture flush failed: %s", e)

    def _drop(self, n: int) -> None:
        self.counts["dropped"] += n
        self._unreported_drops += n

    def _open(self) -> spool.SpoolWriter | None:
        if self._failed:
            return None
        try:
            self._writer = spool.SpoolWriter(self.directory, self.session, max_bytes=self.max_bytes)
            # No URL: the agent's spool scanner reads this stream; the thread only makes spare
            # segments and keeps the directory within its bound (the writer's hot path never does).
            self._keeper = spool.SpoolSender(self.directory, None, writer=self._writer).start()
            self._flusher = threading.Thread(target=self._flush_loop, name="renderwatch-log-flush", daemon=True)
            self._flusher.start()
        except Exception as e:
            self._failed = True
            log.warning("cannot spool Blender's lines for the agent (%s): they are not kept", e)
            return None
        return self._writer

    # -- reading back ---------------------------------------------------------------------------
    def frame_tail(self, frame: int | None, limit: int = 30) -> list[str]:
        """The last lines captured for `frame` (all frames when None), oldest first."""
        try:
            with self._lock:
                self._process_locked()
        except Exception:
            pass
        lines = [f"[{level}] {text}" for f, _a, level, text in self.tail if frame is None or f == frame]
        return lines[-limit:]

    def close(self, timeout: float = 0.5) -> None:
        """Write the folded streams' last lines, then close the session (idempotent)."""
        self._closing.set()
        self._due.set()
        if self._flusher is not None:
            self._flusher.join(timeout)
        try:
            with self._lock:
                self._process_locked()
                if self.enabled:
                    self._flush_folds()
                self._flush_locked()
        except Exception:
            pass
        writer, keeper, self._writer, self._keeper = self._writer, self._keeper, None, None
        if writer is not None:
            writer.close()
        if keeper is not None:
            keeper.close(timeout)
        self.enabled = False                 # nothing more after close
