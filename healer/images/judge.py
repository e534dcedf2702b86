"""The pure judgement of a frame: its facts (healer.images.facts) against what the scene asked for and
the job's other frames. No I/O: values in, values out (a test reads this module's imports and calls).

`judge_frame` judges one frame; `JobFrames` keeps the job's frames so that judging one against the
others is O(log n). Half-rendered frames (a GPU error part way through leaves the tiles not rendered
empty: 0 in every channel, alpha 0) cannot be told from the first rows. They are found in two steps,
so that the common frame costs nothing more: `may_be_partial` compares the file's size with the job's
other frames (an empty region compresses to almost nothing, so a frame missing an eighth or more of
its picture is a clearly smaller file); only such a frame, and the nearest frame that is not small,
are decoded (healer.images.read.empty_cells), and `judge_partial` reports the cells empty here and not
in that frame.

Usage::

    suspects = judge_frame(facts, Expected(1920, 1080, "RGBA"), others=[...], seconds=0.2, other_seconds=[31.0])
    if may_be_partial(facts, others):
        found = judge_partial(empty_cells(facts.path), empty_cells(neighbour.path), 6)
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from blender_hooks.events import SUSPECT_REASONS  # noqa: F401 (the metric's bounded `reason` label)
from healer.images.facts import EmptyCells, FrameFacts

TOO_FAST_FRACTION = 0.1     # a frame ten times faster than the job's median frame...
TOO_FAST_MIN_TYPICAL_S = 1.0   # ...of a job whose frames take at least this long (else noise rules)
TOO_FAST_MIN_FRAMES = 3     # ...measured on at least this many other frames
PARTIAL_SIZE_RATIO = 0.9    # a frame file this much smaller than the job's median may be part empty...
PARTIAL_MIN_SHARE = 0.125   # ...and is partial when this share of it is empty where its neighbour is not


@dataclass(frozen=True)
class Expected:
    """What the scene asks for (from the hooks' render settings line); None: not known, not judged."""

    width: int | None = None
    height: int | None = None
    mode: str | None = None          # BW | RGB | RGBA (image_settings.color_mode)
    file_format: str | None = None   # PNG | JPEG | OPEN_EXR | OPEN_EXR_MULTILAYER | ...
    engine: str | None = None        # CYCLES | BLENDER_EEVEE(_NEXT) | BLENDER_WORKBENCH | ...


@dataclass(frozen=True)
class Suspect:
    reason: str                      # one of SUSPECT_REASONS
    detail: str                      # the evidence, for the report, the span and the incident


@dataclass(frozen=True)
class Others:
    """What judging one frame needs of the job's other frames (JobFrames.others, in O(log n))."""

    opaque: bool = False               # some readable frame is not fully transparent
    pictured: bool = False             # some readable frame is not one value
    typical_s: float | None = None     # the median of their render times
    timed: int = 0                     # how many have a render time


def judge_frame(facts: FrameFacts, expected: Expected | None, *, others: Iterable[FrameFacts] | Others = (),
                seconds: float | None = None, other_seconds: Sequence[float] = ()) -> list[Suspect]:
    """The ways this frame looks wrong. `others`: the job's other inspected frames, or their summary
    (a blank frame is suspect only where the job has frames that are not blank: a fade to black is
    not); `other_seconds`: their render times (a frame far faster than the job's median did not render
    what the others did; with a summary, its `typical_s`)."""
    if facts.error:
        return []
    if not isinstance(others, Others):
        ok = [o for o in others if not o.error]
        others = Others(opaque=any(not o.transparent for o in ok), pictured=any(o.uniform is None for o in ok),
                        typical_s=statistics.median(other_seconds) if other_seconds else None,
                        timed=len(other_seconds))
    out: list[Suspect] = []
    exp = expected or Expected()
    if exp.width and exp.height and (facts.width, facts.height) != (exp.width, exp.height):
        out.append(Suspect("resolution", f"the frame is {facts.size}, the scene renders {exp.width}x{exp.height}"))
    if exp.mode and facts.mode and _comparable(facts.format, exp.file_format) and facts.mode != exp.mode:
        out.append(Suspect("channels", f"the frame is {facts.mode}, the scene's output is {exp.mode}"))
    if facts.transparent and others.opaque:
        out.append(Suspect("transparent", "every pixel is fully transparent (alpha 0), where other frames "
                                          "of the job are not"))
    elif facts.uniform is not None and others.pictured:
        out.append(Suspect("blank", f"every pixel is one value {_value(facts.uniform)}, where other frames of "
                                    "the job are not"))
    if seconds is not None and others.timed >= TOO_FAST_MIN_FRAMES and others.typical_s is not None:
        typical = others.typical_s
        if typical >= TOO_FAST_MIN_TYPICAL_S and seconds < TOO_FAST_FRACTION * typical:
            out.append(Suspect("too_fast", f"rendered in {seconds:.2f} s where the job's frames take "
                                           f"{typical:.1f} s (median of {others.timed})"))
    return out


class SortedValues:
    """A sorted multiset of numbers whose median, with or without one of its values, is O(1); adding
    or removing a value is a binary search (O(log n) comparisons) and a list insert (a memmove of 8
    bytes per value: about a microsecond at 10,000)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def __len__(self) -> int:
        return len(self.values)

    def add(self, v: float) -> None:
        bisect.insort(self.values, v)

    def remove(self, v: float) -> None:
        i = bisect.bisect_left(self.values, v)
        if i < len(self.values) and self.values[i] == v:
            del self.values[i]

    def median(self, without: float | None = None) -> float | None:
        """statistics.median of the values (less one `without`, which must be among them)."""
        vals, n = self.values, len(self.values)
        skip = -1 if without is None else bisect.bisect_left(vals, without)
        m = n - (skip >= 0)
        if m <= 0:
            return None

        def at(j: int) -> float:
            return vals[j + 1 if 0 <= skip <= j else j]
        return at(m // 2) if m % 2 else (at(m // 2 - 1) + at(m // 2)) / 2


class JobFrames:
    """The job's inspected frames, kept so that judging one against the others is O(log n), not a walk
    of the job: counts for `blank`/`transparent`, the render times' median for `too_fast`, and per
    format and size the file sizes' median and the frame numbers for `may_be_partial` and its reference.

    Usage::

        job = JobFrames(); job.add(7, facts, seconds=31.2)
        judge_frame(job.facts[7], expected, others=job.others(7), seconds=31.2)
        job.may_be_partial(7) and job.partial_reference(7)
    """

    def __init__(self, facts: dict[int, FrameFacts] | None = None, seconds: dict[int, float] | None = None):
        self.facts: dict[int, FrameFacts] = {}
        self.seconds: dict[int, float] = {}
        self._times = SortedValues()
        self._opaque = self._pictured = 0
        self._sizes: dict[tuple, SortedValues] = {}
        self._numbers: dict[tuple, list[int]] = {}
        for frame, f in (facts or {}).items():
            self.add(frame, f, (seconds or {}).get(frame))

    def __contains__(self, frame: object) -> bool:
        return frame in self.facts

    def __len__(self) -> int:
        return len(self.facts)

    def add(self, frame: int, facts: FrameFacts, seconds: float | None = None) -> None:
        self.remove(frame)
        self.facts[frame] = facts
        if not facts.error:
            self._opaque += not facts.transparent
            self._pictured += facts.uniform is None
        key = _alike_key(facts)
        if key is not None:
            self._sizes.setdefault(key, SortedValues()).add(facts.file_size)
            bisect.insort(self._numbers.setdefault(key, []), frame)
        if seconds is not None:
            self.seconds[frame] = seconds
            self._times.add(seconds)

    def remove(self, frame: int) -> None:
        facts = self.facts.pop(frame, None)
        if facts is not None:
            if not facts.error:
                self._opaque -= not facts.transparent
                self._pictured -= facts.uniform is None
            key = _alike_key(facts)
            if key is not None:
                self._sizes[key].remove(facts.file_size)
                nums = self._numbers[key]
                del nums[bisect.bisect_left(nums, frame)]
        s = self.seconds.pop(frame, None)
        if s is not None:
            self._times.remove(s)

    def others(self, frame: int) -> Others:
        f, s = self.facts.get(frame), self.seconds.get(frame)
        own = f is not None and not f.error
        return Others(opaque=self._opaque - (own and not f.transparent) > 0,     # type: ignore[union-attr]
                      pictured=self._pictured - (own and f.uniform is None) > 0,  # type: ignore[union-attr]
                      typical_s=self._times.median(s), timed=len(self._times) - (s is not None))

    def typical_size(self, frame: int) -> float | None:
        """The median file size of the other frames of this frame's format and size (None: none)."""
        f = self.facts[frame]
        key = _alike_key(f) or (f.format, f.width, f.height)
        sizes = self._sizes.get(key)
        if not sizes:
            return None
        return sizes.median(f.file_size if _alike_key(f) is not None else None)

    def may_be_partial(self, frame: int) -> bool:
        """`may_be_partial` against the job's other frames, in O(1)."""
        f = self.facts[frame]
        if f.error or f.uniform is not None or f.transparent or f.file_size <= 0:
            return False
        typical = self.typical_size(frame)
        return typical is not None and f.file_size < PARTIAL_SIZE_RATIO * typical

    def partial_reference(self, frame: int) -> int | None:
        """`partial_reference`: the nearest frame (by number, the lower on a tie) of the same
        format and size that is not small; searched outward from the frame (a neighbour, as a rule)."""
        f = self.facts[frame]
        key = (f.format, f.width, f.height)
        typical = self.typical_size(frame)
        nums = self._numbers.get(key, [])
        if typical is None or not nums:
            return None
        i = bisect.bisect_left(nums, frame)
        lo, hi = i - 1, i + (i < len(nums) and nums[i] == frame)
        while lo >= 0 or hi < len(nums):
            left = nums[lo] if lo >= 0 else None
            right = nums[hi] if hi < len(nums) else None
            if right is None or (left is not None and frame - left <= right - frame):
                k, lo = left, lo - 1
            else:
                k, hi = right, hi + 1
            if self.facts[k].file_size >= PARTIAL_SIZE_RATIO * typical:   # type: ignore[index]
                return k
        return None



def may_be_partial(facts: FrameFacts, others: Iterable[FrameFacts]) -> bool:
    """Whether the frame's file is small enough against the job's other frames of its format and size
    that part of it may be empty (worth `empty_cells`). Costs nothing: sizes only."""
    if facts.error or facts.uniform is not None or facts.transparent or facts.file_size <= 0:
        return False
    sizes = [o.file_size for o in _alike(facts, others)]
    return bool(sizes) and facts.file_size < PARTIAL_SIZE_RATIO * statistics.median(sizes)


def partial_reference(facts: FrameFacts, others: dict[int, FrameFacts], frame: int) -> int | None:
    """The frame to compare a possibly partial frame with: the nearest one (by number) that is not small."""
    alike = {k: o for k, o in others.items() if k != frame and o in _alike(facts, [o])}
    if not alike:
        return None
    typical = statistics.median(o.file_size for o in alike.values())
    ok = [k for k, o in alike.items() if o.file_size >= PARTIAL_SIZE_RATIO * typical]
    return min(ok, key=lambda k: (abs(k - frame), k)) if ok else None


def _alike_key(f: FrameFacts) -> tuple | None:
    """The group a frame's file size is compared within (None: a frame that is never compared)."""
    if f.error or f.uniform is not None or f.transparent or f.file_size <= 0:
        return None
    return (f.format, f.width, f.height)


def _alike(facts: FrameFacts, others: Iterable[FrameFacts]) -> list[FrameFacts]:
    return [o for o in others if not o.error and o.uniform is None and not o.transparent and o.file_size > 0
            and (o.format, o.width, o.height) == (facts.format, facts.width, facts.height)]


def judge_partial(this: EmptyCells | None, ref: EmptyCells | None, ref_frame: int) -> Suspect | None:
    """`partial` when at least PARTIAL_MIN_SHARE of the frame is empty where frame `ref_frame` (of the
    same job and size) has a picture: a render that stopped part way and saved what it had."""
    if this is None or ref is None or (this.rows, this.cols, this.width, this.height) != (
            ref.rows, ref.cols, ref.width, ref.height):
        return None
    new = [i for i, (a, b) in enumerate(zip(this.cells, ref.cells, strict=True)) if a and not b]
    share = len(new) / len(this.cells)
    if share < PARTIAL_MIN_SHARE or all(this.cells):
        return None
    rs = [i // this.cols for i in new]
    cs = [i % this.cols for i in new]
    x0, x1 = min(cs) * this.width // this.cols, (max(cs) + 1) * this.width // this.cols - 1   # as empty_cells cuts
    y0, y1 = min(rs) * this.height // this.rows, (max(rs) + 1) * this.height // this.rows - 1
    return Suspect("partial", f"{share:.0%} of the picture is empty (nothing rendered: 0 in every channel) "
                              f"within x {x0}-{x1}, y {y0}-{y1} (from the top left), where frame {ref_frame} "
                              "has a picture: the render stopped part way and saved what it had")


def _comparable(fmt: str, asked: str | None) -> bool:
    """Channels are compared only where the file is the format asked for (a multilayer EXR holds passes)."""
    if not asked:
        return fmt in ("PNG", "JPEG", "OPEN_EXR")
    return asked == fmt and asked != "OPEN_EXR_MULTILAYER"


def _value(v: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{x:.3g}" for x in v) + ")"
