"""Per-frame detail of a job, for the page's grid: state, time, memory, device, attempt, log counts.

A job may have 100,000 frames, so the table is columnar (one typed array per field, one row per frame
between the lowest and highest frame it holds: 25 bytes a frame, 250 KB for 10,000), bounded by a
window of MAX_ROWS frames (frames beyond it are counted in `dropped`, not stored). Every change bumps
`version` and is remembered in a bounded ring of (version, frame), which the page's live stream reads
from its own cursor: a follower costs no memory of its own, and one too far behind starts over.

Usage::

    t = FrameTable()
    t.expect(range(1, 101)); t.started(7, attempt=1, device="CPU")
    t.ended(7, saved=True, seconds=1.5, peaks={"rss": 2e9}, attempt=1, device="CPU")
    t.to_columns(expected)          # the /api/v1/jobs/{job}/frames answer's "frames"
    t.changed_since(version)        # frames changed after `version`, or None: too far behind
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np

STATES = ("waiting", "rendering", "done", "rerendered", "suspect", "failed")
WAITING, RENDERING, DONE, RERENDERED, SUSPECT, FAILED = range(len(STATES))
MAX_ROWS = 1 << 18          # a window of 262,144 frames (6.5 MB at most per job)
CHANGES = 4096              # changes remembered for live followers
MAX_DEVICES = 64            # distinct device names per job; more are "other"
_U16 = 0xFFFF
_NP = {"B": np.uint8, "H": np.uint16, "f": np.float32}
COLUMNS = ("frame", "state", "seconds", "peak_blender_bytes", "rss_bytes", "vram_bytes", "device", "attempt",
           "warnings", "errors")
_TYPES = {"state": "B", "tries": "B", "attempt": "H", "device": "B", "warnings": "H", "errors": "H",
          "seconds": "f", "blender": "f", "rss": "f", "vram": "f", "seen": "B"}


class FrameTable:
    """The frames of one job, one row per frame in [base, base + rows)."""

    def __init__(self, first_version: int = 0) -> None:
        self.base = 0
        self.rows = 0
        self.cols: dict[str, array] = {k: array(t) for k, t in _TYPES.items()}
        self.devices: list[str] = []
        # distinct per table (State numbers them): a page that followed a job now gone and back is
        # behind the new table's first version, so it reloads
        self.version = first_version
        self.changes: deque[tuple[int, int]] = deque(maxlen=CHANGES)
        self.dropped = 0

    # -- storage ------------------------------------------------------------------------------------
    def _cover(self, lo: int, hi: int) -> bool:
        if self.rows == 0:
            if hi - lo >= MAX_ROWS:
                return False
            self.base = lo
            self._grow(0, hi - lo + 1)
            return True
        new_lo, new_hi = min(lo, self.base), max(hi, self.base + self.rows - 1)
        if new_hi - new_lo >= MAX_ROWS:
            return False
        if new_lo < self.base:
            self._grow(self.base - new_lo, 0)
            self.base = new_lo
        if new_hi >= self.base + self.rows:
            self._grow(0, new_hi - (self.base + self.rows) + 1)
        return True

    def _grow(self, front: int, back: int) -> None:
        for k, col in self.cols.items():
            if front:
                self.cols[k] = array(col.typecode, bytes(front * col.itemsize)) + col
            if back:
                self.cols[k].extend(array(col.typecode, bytes(back * col.itemsize)))
        self.rows += front + back

    def _row(self, frame: int) -> int | None:
        if not self._cover(frame, frame):
            self.dropped += 1
            return None
        i = frame - self.base
        self.cols["seen"][i] = 1
        return i

    def _touch(self, frame: int) -> None:
        self.version += 1
        self.changes.append((self.version, frame))

    def _device(self, name: str | None) -> int:
        if not name:
            return 0
        if name in self.devices:
            return self.devices.index(name) + 1
        if len(self.devices) >= MAX_DEVICES:
            name = "other"
            if name in self.devices:
                return self.devices.index(name) + 1
        self.devices.append(name[:64])
        return len(self.devices)

    @property
    def nbytes(self) -> int:
        return sum(c.itemsize * len(c) for c in self.cols.values())

    # -- what happens to a frame --------------------------------------------------------------------
    def expect(self, frames: Iterable[int]) -> None:
        """The job announced these frames (they show as waiting)."""
        fl = list(frames)
        if fl and self._cover(min(fl), max(fl)):
            seen, base = self.cols["seen"], self.base
            for f in fl:
                seen[f - base] = 1
        else:
            for f in fl:
                self._row(f)
        self.version += 1                       # no per-frame change: followers get the whole table anew
        self.changes.clear()

    def started(self, frame: int, attempt: int, device: str | None) -> None:
        i = self._row(frame)
        if i is None:
            return
        c = self.cols
        c["state"][i] = RENDERING
        c["tries"][i] = min(255, c["tries"][i] + 1)
        c["attempt"][i] = max(0, min(_U16, attempt))
        if device:
            c["device"][i] = self._device(device)
        self._touch(frame)

    def ended(self, frame: int, saved: bool, seconds: float | None, peaks: dict[str, float], attempt: int,
              device: str | None) -> None:
        i = self._row(frame)
        if i is None:
            return
        c = self.cols
        if c["tries"][i] == 0:                   # no frame_start seen (catch-up, or verified on disk)
            c["tries"][i] = 1
        if saved:
            c["state"][i] = DONE if c["tries"][i] <= 1 else RERENDERED
        elif c["state"][i] not in (DONE, RERENDERED, SUSPECT):
            c["state"][i] = FAILED
        if seconds is not None:
            c["seconds"][i] = seconds
        for kind in ("blender", "rss", "vram"):
            if peaks.get(kind):
                c[kind][i] = peaks[kind]
        if attempt:
            c["attempt"][i] = max(0, min(_U16, attempt))
        if device:
            c["device"][i] = self._device(device)
        self._touch(frame)

    def suspect(self, frame: int) -> None:
        i = self._row(frame)
        if i is not None:
            self.cols["state"][i] = SUSPECT
            self._touch(frame)

    def failed(self, frame: int) -> None:
        """The frame in flight when its Blender died (the healer's attempt_end, or the job's end)."""
        if not self.base <= frame < self.base + self.rows:
            return
        i = frame - self.base
        if self.cols["state"][i] == RENDERING:
            self.cols["state"][i] = FAILED
            self._touch(frame)

    def note(self, frame: int, level: str) -> None:
        """One warning or error line of the frame's log (agent.logs counts them here)."""
        if level not in ("warning", "error") or not self.base <= frame < self.base + self.rows:
            return
        col = self.cols["warnings" if level == "warning" else "errors"]
        i = frame - self.base
        if col[i] < _U16:
            col[i] += 1
            self._touch(frame)

    # -- reading ------------------------------------------------------------------------------------
    def row(self, frame: int) -> list[Any] | None:
        """One frame as a row of COLUMNS (the live stream's `frame` event)."""
        if not self.base <= frame < self.base + self.rows:
            return None
        i, c = frame - self.base, self.cols
        if not c["seen"][i]:
            return None
        return [frame, STATES[c["state"][i]], _num(c["seconds"][i]), _int(c["blender"][i]), _int(c["rss"][i]),
                _int(c["vram"][i]), self.devices[c["device"][i] - 1] if c["device"][i] else None,
                c["attempt"][i] or None, c["warnings"][i], c["errors"][i]]

    def to_columns(self) -> dict[str, Any]:
        """Every frame held, column by column (compact JSON: one list per field, `device` an index
        into `devices`, 0 for none; 0 for a time or a peak not known). numpy does the per-frame work:
        a 10,000-frame job's table in a few milliseconds."""
        c = self.cols
        seen = np.frombuffer(c["seen"], dtype=np.uint8).astype(bool) if self.rows else np.zeros(0, bool)
        every = bool(seen.all())

        def col(name: str) -> np.ndarray:
            a = np.frombuffer(c[name], dtype=_NP[c[name].typecode]) if self.rows else np.zeros(0)
            return a if every else a[seen]

        frames = np.flatnonzero(seen) + self.base
        return {
            "frame": frames.tolist(),
            "state": col("state").tolist(),
            "seconds": np.round(col("seconds").astype(np.float64), 3).tolist(),
            "peak_blender_bytes": col("blender").astype(np.int64).tolist(),
            "rss_bytes": col("rss").astype(np.int64).tolist(),
            "vram_bytes": col("vram").astype(np.int64).tolist(),
            "device": col("device").tolist(),
            "attempt": col("attempt").tolist(),
            "warnings": col("warnings").tolist(),
            "errors": col("errors").tolist(),
        }

    def changed_since(self, version: int) -> list[int] | None:
        """Frames changed after `version` (in order, each once); None when the ring no longer reaches
        back that far (the follower reloads the whole table)."""
        if version >= self.version:
            return []
        if not self.changes or self.changes[0][0] > version + 1:
            return None
        seen: dict[int, None] = {}
        for v, f in reversed(self.changes):
            if v <= version:
                break
            seen[f] = None
        return list(reversed(seen))


def _num(v: float) -> float | None:
    return round(v, 3) if v else None


def _int(v: float) -> int | None:
    return int(v) if v else None
