"""Render progress: what a Blender output line says about progress, and the progress display.

`parse_line` understands both log formats (Blender <= 4.x bare lines and 5.0's
`00:00.327  render           | Saved: '...'`) and the supervisor's own frame-start marker.

`ProgressDisplay` draws one live line on a TTY (frame x/y, bar, ETA, restarts), prints a plain
line every few seconds otherwise (CI logs, farm managers), and a final summary.

Usage::

    ev = parse_line("Saved: '/shot/frames/f_0007.png'")     # LineEvent("saved", path=...)
    display = ProgressDisplay(total=240, stream=sys.stderr)
    display.update(done=12, restarts=1, frame=13); display.finish(summary)
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

from blender_hooks.events import SETTINGS_MARK
from healer.diagnosis import logformat
from healer.supervising.spawn import MARKER  # noqa: F401 (names read from here)


@dataclass(frozen=True)
class LineEvent:
    kind: str                 # frame_start | progress | saved | crash_file | settings | other
    frame: int | None = None
    path: str | None = None
    text: str = ""


_KINDS = {logformat.SAVED: "saved", logformat.SKIPPED: "saved", logformat.WRITING_CRASH: "crash_file"}


def parse_line(line: str) -> LineEvent:
    """Progress meaning of one line: healer.logformat's record, plus the supervisor's frame marker."""
    rec = logformat.parse_line(line)
    if rec.kind == logformat.PROGRESS:
        return LineEvent("progress", rec.frame, text=rec.status or "")
    if rec.kind == logformat.OTHER:
        if rec.text.startswith(MARKER):
            num, _, path = rec.text[len(MARKER):].partition(" ")
            try:
                return LineEvent("frame_start", int(num), path.strip() or None)
            except ValueError:
                pass
        if rec.text.startswith(SETTINGS_MARK):
            return LineEvent("settings", text=rec.text[len(SETTINGS_MARK):])
        return LineEvent("other", text=rec.text)
    return LineEvent(_KINDS.get(rec.kind, "other"), rec.frame, rec.path, rec.text)


# What renderwatch's own lines inside Blender start with (spawn.py's marker, gate and device lines; the
# hooks' render settings line): Blender's stdout passed through never carries them.
OWN_PREFIX = "[renderwatch] "


def own_line(line: str, ev: LineEvent) -> str | None:
    """None for a line of Blender's (or of the user's scripts): it passes through to stdout unchanged.
    For renderwatch's own line, printed inside Blender by what the healer injected: "" for a marker
    only the healer reads (frame_start, render settings), else the text to say on stderr."""
    if ev.kind in ("frame_start", "settings"):
        return ""
    if line.startswith(OWN_PREFIX):
        return line[len(OWN_PREFIX):]
    return None


def _bar(frac: float, width: int = 24) -> str:
    full = int(frac * width)
    return "#" * full + "-" * (width - full)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class ProgressDisplay:
    """Live progress on a TTY, periodic plain lines elsewhere; `quiet` shows only the summary."""

    def __init__(self, total: int, stream: TextIO | None = None, *, tty: bool | None = None,
                 interval_s: float = 10.0, quiet: bool = False, clock=time.monotonic):
        self.total = max(total, 0)
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval_s = interval_s
        self.quiet = quiet
        self.clock = clock
        self.started = clock()
        self._last_plain: float | None = None   # none shown yet: the first line always is
        self._last_key: tuple | None = None
        self._first_done: int | None = None

    def line(self, done: int, restarts: int = 0, frame: int | None = None, note: str = "") -> str:
        now = self.clock()
        if self._first_done is None:
            self._first_done = done          # frames already there at start don't speed up the ETA
        new = done - self._first_done
        rate = new / (now - self.started) if new > 0 and now > self.started else None
        eta = (self.total - done) / rate if rate else None
        frac = done / self.total if self.total else 1.0
        parts = [f"frame {done}/{self.total}", f"[{_bar(frac)}]", f"{frac * 100:3.0f}%", f"ETA {_eta(eta)}"]
        if frame is not None:
            parts.append(f"rendering {frame}")
        if restarts:
            parts.append(f"restarts {restarts}")
        if note:
            parts.append(note)
        return " ".join(parts)

    def update(self, done: int, restarts: int = 0, frame: int | None = None, note: str = "") -> None:
        if self.quiet:
            return
        key = (done, restarts, frame, note)
        now = self.clock()
        if self.tty:
            if key != self._last_key:
                self.stream.write("\r\x1b[2K" + self.line(done, restarts, frame, note))
                self.stream.flush()
        elif key != self._last_key and (self._last_plain is None or now - self._last_plain >= self.interval_s
                                        or done == self.total
                                        or note):
            self.stream.write("renderwatch: " + self.line(done, restarts, frame, note) + "\n")
            self.stream.flush()
            self._last_plain = now
        self._last_key = key

    def message(self, text: str) -> None:
        """A one-off message (warning, restart) that must not be overdrawn by the live line."""
        if self.tty and not self.quiet:
            self.stream.write("\r\x1b[2K")
        self.stream.write(f"renderwatch: {text}\n")
        self.stream.flush()
        self._last_key = None

    def finish(self, summary: str) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\r\x1b[2K")
        self.stream.write(summary.rstrip("\n") + "\n")
        self.stream.flush()
