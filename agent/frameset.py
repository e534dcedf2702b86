"""A set of frame numbers as a bitmap: one bit per frame between the lowest and highest seen.

A job's expected and done frames are dense ranges (1-10,000 is 1.25 KB here, about 0.5 MB as a
Python set), and Blender's frames are bounded (-1,048,574 .. 1,048,574), so the bitmap is bounded
too (256 KiB at the very worst). Adding, testing and counting are O(1); `len` is kept, not counted.

Usage::

    fs = FrameSet()
    fs.update(range(1, 10_001)); fs.add(10_001)
    5 in fs, len(fs), sorted(fs) == list(range(1, 10_002))
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

# Frames outside a window this wide (Blender's whole range, twice over) go to a plain set: events can
# name any integer frame, and one far-off frame must not allocate a huge bitmap.
MAX_BITS = 1 << 22


class FrameSet:
    """Distinct frame numbers; set-like (`in`, `len`, iteration in order, == with a set)."""

    __slots__ = ("_base", "_bits", "_len", "_far")

    def __init__(self, frames: Iterable[int] = ()) -> None:
        self._base = 0                 # frame number of bit 0 (a multiple of 8)
        self._bits = bytearray()
        self._len = 0
        self._far: set[int] = set()    # frames the bitmap cannot reach within MAX_BITS
        self.update(frames)

    def _cover(self, lo: int, hi: int) -> bool:
        """Grow the bitmap so it spans frames lo..hi (inclusive); False when that is too wide."""
        base = min(lo, self._base) if self._bits else lo
        top = max(hi, self._base + len(self._bits) * 8 - 1) if self._bits else hi
        if top - base >= MAX_BITS:
            return False
        if not self._bits:
            self._base = lo - lo % 8
            self._bits = bytearray((hi - self._base) // 8 + 1)
        elif lo < self._base:
            new_base = lo - lo % 8
            self._bits[0:0] = bytes((self._base - new_base) // 8)
            self._base = new_base
        need = (hi - self._base) // 8 + 1
        if need > len(self._bits):
            self._bits.extend(bytes(need - len(self._bits)))
        if self._far:                  # far frames the window now reaches move into it
            top = self._base + len(self._bits) * 8
            for f in [f for f in self._far if self._base <= f < top]:
                self._far.discard(f)
                i = f - self._base
                self._bits[i >> 3] |= 1 << (i & 7)
        return True

    def add(self, frame: int) -> bool:
        """Add a frame; True when it was not in the set."""
        if not self._cover(frame, frame):
            if frame in self._far:
                return False
            self._far.add(frame)
            self._len += 1
            return True
        i = frame - self._base
        mask = 1 << (i & 7)
        if self._bits[i >> 3] & mask:
            return False
        self._bits[i >> 3] |= mask
        self._len += 1
        return True

    def discard(self, frame: int) -> bool:
        """Remove a frame; True when it was in the set."""
        if frame not in self:
            return False
        if frame in self._far:
            self._far.discard(frame)
            self._len -= 1
            return True
        i = frame - self._base
        self._bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF
        self._len -= 1
        return True

    def update(self, frames: Iterable[int]) -> list[int]:
        """Add frames; returns the ones that were new."""
        if isinstance(frames, range) and len(frames):
            self._cover(min(frames[0], frames[-1]), max(frames[0], frames[-1]))
        return [f for f in frames if self.add(f)]

    def __contains__(self, frame: object) -> bool:
        if not isinstance(frame, int):
            return False
        i = frame - self._base
        if 0 <= i < len(self._bits) * 8:
            return bool(self._bits[i >> 3] & (1 << (i & 7)))
        return frame in self._far

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[int]:
        far = sorted(self._far)
        base = self._base
        yield from (f for f in far if f < base)
        for byte_index, byte in enumerate(self._bits):
            if byte:
                for bit in range(8):
                    if byte & (1 << bit):
                        yield base + byte_index * 8 + bit
        yield from (f for f in far if f >= base)

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, FrameSet | set | frozenset):
            return len(self) == len(other) and all(f in self for f in other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FrameSet({len(self)} frames)"

    @property
    def nbytes(self) -> int:
        return len(self._bits) + 32 * len(self._far)
