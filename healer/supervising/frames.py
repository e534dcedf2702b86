"""Frame specs (`--frames 1-240 | 1,5,9-12 | 1-20x2`) and the Blender arguments that render a frame set.

Usage::

    frames = parse_frames("1-10,20x")          # FrameSpecError: clear message naming the bad part
    frames = parse_frames("1-4,9,12-20x2")     # [1, 2, 3, 4, 9, 12, 14, 16, 18, 20]
    render_args([1, 2, 3, 5, 9, 10])           # ['-s','1','-e','3','-j','1','-a','-f','5','-s','9',...]

Blender executes its render arguments in order, so one process renders every chunk of a plan, in
ascending frame order (the supervisor relies on that to know which frame was in flight).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MIN_FRAME = 0
MAX_FRAME = 1048574          # Blender's MAXFRAME
MAX_FRAMES_PER_JOB = 100_000

_ITEM = re.compile(r"^(\d+)(?:(?:-|\.\.)(\d+)(?:x(\d+))?)?$")


class FrameSpecError(ValueError):
    """A `--frames` value that cannot be parsed; the message names the offending part."""


def parse_frames(spec: str) -> list[int]:
    """Sorted unique frames of a spec: items `N`, `A-B` (or `A..B`), `A-BxS` separated by commas."""
    if spec is None or not str(spec).strip():
        raise FrameSpecError("--frames is empty: use e.g. 1-240, 1,5,9-12 or 1-20x2")
    frames: set[int] = set()
    for raw in str(spec).split(","):
        item = raw.strip()
        m = _ITEM.match(item)
        if not m:
            raise FrameSpecError(
                f"--frames {spec!r}: {item!r} is not a frame, a range A-B or a stepped range A-BxS "
                f"(frames are whole numbers {MIN_FRAME}..{MAX_FRAME})")
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) is not None else start
        step = int(m.group(3)) if m.group(3) is not None else 1
        if end < start:
            raise FrameSpecError(f"--frames {spec!r}: range {item!r} ends before it starts")
        if step < 1:
            raise FrameSpecError(f"--frames {spec!r}: step in {item!r} must be at least 1")
        if end > MAX_FRAME:
            raise FrameSpecError(f"--frames {spec!r}: frame {end} is beyond Blender's last frame {MAX_FRAME}")
        if len(frames) + (end - start) // step + 1 > MAX_FRAMES_PER_JOB:
            raise FrameSpecError(f"--frames {spec!r}: more than {MAX_FRAMES_PER_JOB} frames in one job")
        frames.update(range(start, end + 1, step))
    return sorted(frames)


def format_frames(frames: Iterable[int]) -> str:
    """Compact spec for a frame set (inverse of parse_frames for step-1 runs): [1,2,3,7] -> '1-3,7'."""
    out: list[str] = []
    for start, end, _step in runs(sorted(set(frames)), min_len=2, allow_step=False):
        out.append(str(start) if start == end else f"{start}-{end}")
    return ",".join(out)


def runs(frames: list[int], min_len: int = 2, allow_step: bool = True) -> list[tuple[int, int, int]]:
    """Split sorted frames into (start, end, step) runs; frames not in a long-enough run are (f, f, 1).

    A step-1 run needs `min_len` frames; a stepped run (allow_step) needs at least 3.
    """
    out: list[tuple[int, int, int]] = []
    i, n = 0, len(frames)
    while i < n:
        j = i
        if i + 1 < n:
            step = frames[i + 1] - frames[i]
            if step == 1 or allow_step:
                j = i + 1
                while j + 1 < n and frames[j + 1] - frames[j] == step:
                    j += 1
                need = min_len if step == 1 else 3
                if j - i + 1 < need:
                    j = i
                out.append((frames[i], frames[j], step if j > i else 1))
                i = j + 1
                continue
        out.append((frames[i], frames[i], 1))
        i += 1
    return out


def render_args(frames: Iterable[int]) -> list[str]:
    """Blender render arguments for a frame set: runs as `-s A -e B -j S -a`, other frames as `-f a,b,c`.

    `-j` is always given with a run so a scene saved with a frame step does not skip frames.
    """
    todo = sorted(set(frames))
    if not todo:
        return []
    args: list[str] = []
    singles: list[int] = []

    def flush() -> None:
        if singles:
            args.extend(["-f", ",".join(str(f) for f in singles)])
            singles.clear()

    for start, end, step in runs(todo):
        if start == end:
            singles.append(start)
            continue
        flush()
        args.extend(["-s", str(start), "-e", str(end), "-j", str(step), "-a"])
    flush()
    return args
