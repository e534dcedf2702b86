"""Reading what Blender reports: render-stats strings, memory figures, `-f` frame lists.

Standard library only, so the parsing is tested (and benchmarked) in plain CPython; the handlers
in `addon.py` call these on Blender's thread, so each is a handful of substring checks.

Usage::

    phase_of("Mem: 2M | Updating Scene BVH | Building")   # -> "bvh"
    parse_memory("Mem: 12M | Sample 3/8")                  # -> 12582912.0
    parse_frame_list("1,3,5..7")                           # -> [1, 3, 5, 6, 7]
"""

from __future__ import annotations

import re

# First match wins: a stats string names what Blender is doing (Cycles' status line in 5.0;
# Blender 3.4 passes None to the render_stats handler and prints the stats to stdout only).
PHASE_KEYS = (
    ("Synchronizing", "sync"), ("BVH", "bvh"), ("kernels", "kernels"), ("Denois", "denoise"),
    ("Sample", "sampling"), ("Rendered", "sampling"), ("Path Tracing", "sampling"),
    ("Compositing", "compositing"), ("Saving", "save"),
)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_MEM_RE = re.compile(r"(?:Mem|Peak|Memory):?\s*([0-9][0-9.,]*)\s*([KMGT]?)")


def phase_of(stats: str) -> str | None:
    """The render phase a stats string reports, or None when it names none of them."""
    for key, name in PHASE_KEYS:
        if key in stats:
            return name
    return None


def parse_memory(text: str) -> float:
    """Largest memory figure (bytes) in a stats line or `scene.statistics()` string; 0.0 if none.

    Handles "Mem: 12M", "Mem:13.07M (Peak 14.23M)", "Peak:3.58M" and "Memory: 9.3 MiB".
    """
    best = 0.0
    for num, unit in _MEM_RE.findall(text):
        try:
            best = max(best, float(num.replace(",", "")) * _UNITS[unit])
        except ValueError:
            continue
    return best


def parse_frame_list(text: str) -> list[int] | None:
    """"1,3,5" / "2..4" / "7" -> the frames in order; None if any part is not understood."""
    out: list[int] = []
    for part in text.split(","):
        a, sep, b = part.strip().partition("..")
        try:
            out.extend(range(int(a), int(b) + 1) if sep else [int(a)])
        except ValueError:
            return None
    return out


def cli_frames(argv: list[str]) -> list[int] | None:
    """Sorted frames named by `-f/--render-frame LIST` on Blender's command line; None if absent."""
    frames: list[int] = []
    it = iter(argv)
    for arg in it:
        if arg == "--":
            break
        if arg in ("-f", "--render-frame"):
            frames.extend(parse_frame_list(next(it, "")) or [])
    return sorted(set(frames)) or None


def frame_range(frames: list[int]) -> tuple[int, int, int]:
    """(first, last, step) covering sorted frames: 1,3,5 -> (1, 5, 2); 1,2,7 -> (1, 7, 1)."""
    step = 0
    for a, b in zip(frames, frames[1:], strict=False):
        step = _gcd(step, b - a)
    return frames[0], frames[-1], step or 1


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return abs(a)
