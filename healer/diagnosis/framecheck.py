"""What a saved frame is, read from the file: its size, its channels, and whether every pixel is one value.

The failures that exit 0 leave frames that are complete files but wrong pictures: black or one flat
colour after a GPU error, fully transparent, the wrong size or channels. `inspect_frame` reads what is
needed to tell, and no more, because it runs on every frame (off Blender's critical path, in a worker
thread of the healer, but a 4K frame still must cost milliseconds, not the 100-370 ms of a full decode):

- PNG: the header, then the image data inflated a block at a time and compared row by row, still
  filtered, with the rows a one-value image has for each PNG filter type (or, for Blender's dithered
  8-bit output, rows of small differences only). A real frame differs in its first rows (an early
  exit after a few KB); only a frame that may be blank is inflated to the end (and then decoded by
  Pillow to tell within dither), which is the rare case the check exists for.
- OpenEXR (scanline, single- and multi-layer): the header and the chunk offset table parsed here
  (channels, data window, compression): a chunk of one value compresses to almost nothing, so a file
  with a big chunk is not one value and no pixel is read. Otherwise (and for uncompressed or tiled
  files) OpenEXR reads the Combined/RGBA channels and each must be one value. (Not the legacy
  `InputFile`, which reads a range of scanlines but crashed the process when called repeatedly.)
- JPEG: Pillow's DCT-domain draft at 1/8 scale (a flat JPEG decodes flat, within rounding).
- Anything else Pillow reads: a full decode (rare formats pay the full price).

`judge_frame` is the pure part: the facts of one frame against what the scene asked for and the job's
other frames.

Half-rendered frames (a GPU error part way through leaves the tiles not rendered empty: 0 in every
channel, alpha 0) cannot be told from the first rows. They are found in two steps, so that the common
frame costs nothing more: `may_be_partial` compares the file's size with the job's other frames (an
empty region compresses to almost nothing, so a frame missing an eighth or more of its picture is a
clearly smaller file); only such a frame, and the nearest frame that is not small, are decoded by
`empty_cells` (a coarse grid of the cells where every pixel is empty), and `judge_partial` reports
the cells empty here and not in that frame.

Usage::

    facts = inspect_frame("/out/frame_0007.png")      # FrameFacts; never raises
    suspects = judge_frame(facts, Expected(1920, 1080, "RGBA"), others=[...], seconds=0.2, typical_s=31.0)
    if may_be_partial(facts, others):
        found = judge_partial(empty_cells(facts.path), empty_cells(neighbour.path), neighbour=6)
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import os
import statistics
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from blender_hooks.events import SUSPECT_REASONS  # noqa: F401 (the metric's bounded `reason` label)

TOO_FAST_FRACTION = 0.1     # a frame ten times faster than the job's median frame...
TOO_FAST_MIN_TYPICAL_S = 1.0   # ...of a job whose frames take at least this long (else noise rules)
TOO_FAST_MIN_FRAMES = 3     # ...measured on at least this many other frames
DITHER_LEVELS = 3           # an 8-bit frame within this many levels of one value is one value (dither)
JPEG_TOLERANCE = 4          # a flat JPEG decodes within this of one value (8-bit levels, dither + DCT)
PARTIAL_SIZE_RATIO = 0.9    # a frame file this much smaller than the job's median may be part empty...
PARTIAL_MIN_SHARE = 0.125   # ...and is partial when this share of it is empty where its neighbour is not
GRID = 32                   # empty_cells: the frame is judged in GRID x GRID cells
FLOAT_EMPTY = 1e-6          # a float (EXR) value at most this is empty (an unrendered pixel is 0.0)

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_EXR_MAGIC = b"\x76\x2f\x31\x01"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_MODES = {0: "BW", 2: "RGB", 3: "RGB", 4: "BW", 6: "RGBA"}
_PNG_ALPHA = {4: True, 6: True}
_READ = 256 * 1024


@dataclass(frozen=True)
class FrameFacts:
    """What the file holds. `uniform`: the one value of every pixel (per channel, 0..1), or None."""

    path: str
    format: str = ""                 # PNG | OPEN_EXR | JPEG | <Pillow's format name>
    width: int = 0
    height: int = 0
    mode: str = ""                   # BW | RGB | RGBA (the colour channels present)
    uniform: tuple[float, ...] | None = None
    transparent: bool = False        # an alpha channel that is 0 on every pixel
    error: str | None = None         # unreadable: nothing is judged, the reason is kept
    file_size: int = 0               # bytes on disk (may_be_partial)

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


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


# ------------------------------------------------------------------------------ the pure judgement
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
        """framecheck.may_be_partial against the job's other frames, in O(1)."""
        f = self.facts[frame]
        if f.error or f.uniform is not None or f.transparent or f.file_size <= 0:
            return False
        typical = self.typical_size(frame)
        return typical is not None and f.file_size < PARTIAL_SIZE_RATIO * typical

    def partial_reference(self, frame: int) -> int | None:
        """framecheck.partial_reference: the nearest frame (by number, the lower on a tie) of the same
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


@dataclass(frozen=True)
class EmptyCells:
    """A frame cut into rows x cols cells; `cells[r * cols + c]` is 1 where every pixel of that cell is
    empty (0 in every channel within dither, alpha 0 where there is alpha), as tiles a render never
    reached are."""

    width: int
    height: int
    rows: int
    cols: int
    cells: bytes

    def share(self) -> float:
        return sum(self.cells) / max(1, len(self.cells))


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


# ------------------------------------------------------------------------------ reading the file
def inspect_frame(path: str | os.PathLike[str]) -> FrameFacts:
    """The facts of one frame file; an unreadable file gives facts with `error` set (never raises)."""
    path = os.fspath(path)      # OpenEXR takes only a str
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            f.seek(0)
            if head.startswith(_PNG_SIG):
                facts = _png(path, f)
            elif head.startswith(_EXR_MAGIC):
                facts = _exr(path, f)
            else:
                facts = _pillow(path)
        return dataclasses.replace(facts, file_size=size)
    except Exception as e:       # a frame that cannot be read is not judged: the healer goes on
        return FrameFacts(path, error=f"{type(e).__name__}: {e}"[:300])


def _png(path: str, f) -> FrameFacts:
    f.read(8)
    length, ctype = struct.unpack(">I4s", f.read(8))
    if ctype != b"IHDR" or length != 13:
        raise ValueError("PNG without IHDR first")
    w, h, depth, color, _comp, _filt, interlace = struct.unpack(">IIBBBBB", f.read(13))
    f.read(4)
    if color not in _PNG_CHANNELS:
        raise ValueError(f"PNG colour type {color}")
    base = FrameFacts(path, "PNG", w, h, _PNG_MODES[color])
    if interlace or depth < 8 or color == 3:      # Blender writes none of these: decode them the slow way
        full = _pillow(path)
        return FrameFacts(path, "PNG", w, h, _PNG_MODES[color], full.uniform, full.transparent, full.error)
    channels = _PNG_CHANNELS[color]
    bpp = channels * depth // 8
    uniform = _png_uniform(_idat_stream(f), w, h, bpp, depth)
    if uniform is None:
        return base
    if not isinstance(uniform, bytes):   # True: one value within dither, perhaps: the full decode tells
        full = _pillow(path, tolerance=DITHER_LEVELS)
        return FrameFacts(path, "PNG", w, h, _PNG_MODES[color], full.uniform, full.transparent, full.error)
    scale = float((1 << depth) - 1)
    vals = tuple(int.from_bytes(uniform[i:i + depth // 8], "big") / scale for i in range(0, bpp, depth // 8))
    transparent = _PNG_ALPHA.get(color, False) and vals[-1] == 0.0
    return FrameFacts(path, "PNG", w, h, _PNG_MODES[color], vals, transparent)


def _idat_stream(f) -> Iterable[bytes]:
    """The IDAT payloads in file order, a piece at a time (chunks can be megabytes)."""
    while True:
        hdr = f.read(8)
        if len(hdr) < 8:
            return
        length, ctype = struct.unpack(">I4s", hdr)
        if ctype == b"IDAT":
            left = length
            while left > 0:
                piece = f.read(min(left, _READ))
                if not piece:
                    raise ValueError("PNG image data cut short")
                left -= len(piece)
                yield piece
            f.read(4)
        elif ctype == b"IEND":
            return
        else:
            f.seek(length + 4, 1)


def _png_uniform(stream: Iterable[bytes], w: int, h: int, bpp: int, depth: int = 8) -> bytes | bool | None:
    """The one pixel value of the image (bytes); True where it may be one value within dither (decode it
    to tell); None at the first row that shows it is not.

    Rows are compared still filtered: for a one-value image p, each filter type gives a known row
    (None: p p p..., Sub: p 0 0..., Up: p p p... on the first row and 0 0 0... after, Average and
    Paeth likewise), so no unfiltering is needed, only one bytes comparison per row. Blender dithers
    8-bit output (render.dither_intensity), so a black frame is 0s and 1s: a row that is not exact
    but whose filtered bytes are all small differences (or, unfiltered, near p) keeps it possible."""
    stride = 1 + w * bpp
    z = zlib.decompressobj()
    buf = bytearray()
    expected: dict[tuple[bool, int], bytes] = {}
    p: bytes | None = None
    near_raw = b""
    exact, row = True, 0
    for piece in stream:
        buf += z.decompress(piece)
        while len(buf) >= stride and row < h:
            line = bytes(buf[:stride])
            del buf[:stride]
            if p is None:
                p = line[1:1 + bpp]
                expected = _uniform_rows(p, w, bpp)
                near_raw = bytes({(v + d) & 0xFF for v in p for d in range(-DITHER_LEVELS, DITHER_LEVELS + 1)})
            if exact and line[1:] == expected.get((row == 0, line[0])):
                row += 1
                continue
            exact = False
            if depth != 8:
                return None
            if row > 0:       # the first row's Average/Up residuals are not small: judged by the decode
                allowed = near_raw if line[0] == 0 else _SMALL
                if line[1 + bpp:].translate(None, allowed):
                    return None
            row += 1
        if row >= h:
            return p if exact else True
    raise ValueError(f"PNG image data ends after {row} of {h} rows")


_SMALL = bytes(d & 0xFF for d in range(-DITHER_LEVELS, DITHER_LEVELS + 1))   # filtered residuals of near-p pixels


def _uniform_rows(p: bytes, w: int, bpp: int) -> dict[tuple[bool, int], bytes]:
    zeros = bytes((w - 1) * bpp)
    half = bytes((b - (b >> 1)) & 0xFF for b in p)        # p - floor(p / 2): Average with only one neighbour
    rest = w - 1
    return {
        (True, 0): p * w, (True, 1): p + zeros, (True, 2): p * w, (True, 3): p + half * rest, (True, 4): p + zeros,
        (False, 0): p * w, (False, 1): p + zeros, (False, 2): bytes(w * bpp), (False, 3): half + zeros,
        (False, 4): bytes(w * bpp),
    }


# -- OpenEXR ----------------------------------------------------------------------------------------
def _exr(path: str, f) -> FrameFacts:
    data = f.read(1 << 20)          # the header (Blender's multilayer headers are a few KB)
    version = struct.unpack_from("<I", data, 4)[0]
    header, end = _exr_header(data, 8)   # of the first part (Blender writes one scanline part)
    chans = header.get("channels", {})
    x0, y0, x1, y1 = header.get("dataWindow", (0, 0, -1, -1))
    w, h = x1 - x0 + 1, y1 - y0 + 1
    combined = _combined_channels(list(chans))
    mode = "RGBA" if "A" in combined else ("RGB" if {"R", "G", "B"} <= set(combined) else ("BW" if combined else ""))
    base = FrameFacts(path, "OPEN_EXR", w, h, mode)
    if not combined or w <= 0 or h <= 0:
        return base
    compression = header.get("compression", 0)
    if not version & 0x1200:     # scanline, single part: the chunk sizes tell a flat image first
        lines = _EXR_LINES.get(compression, 0)
        passes = len(combined) < len(chans)     # other passes beside the beauty (multilayer): chunks not flat
        if lines and not passes and not _exr_may_be_flat(f, end, w, h, lines,
                                                         sum(_EXR_BYTES.get(t, 4) for t in chans.values())):
            return base
        if compression in _EXR_OWN_CODECS:
            # the Combined channels' samples read out of each chunk here, stopping at the first chunk
            # where they vary (OpenEXR would decode every pass of every chunk first)
            own = _exr_combined_uniform(f, end, header, w, h, combined)
            if own is None:
                return base
            vals = tuple(own[c] for c in sorted(own, key="YRGBA".find))
            return FrameFacts(path, "OPEN_EXR", w, h, mode, vals, own.get("A", 1.0) == 0.0)
    uniform = _exr_uniform(path, combined)
    if uniform is None:
        return base
    vals = tuple(uniform[c] for c in sorted(uniform, key="YRGBA".find))
    return FrameFacts(path, "OPEN_EXR", w, h, mode, vals, uniform.get("A", 1.0) == 0.0)


# scanlines per chunk by compression (OpenEXR's numbering); bytes per pixel by pixel type
_EXR_LINES = {0: 1, 1: 1, 2: 1, 3: 16, 4: 32, 5: 16, 6: 32, 7: 32, 8: 32, 9: 256}
_EXR_BYTES = {0: 4, 1: 2, 2: 4}
EXR_FLAT_RATIO = 0.05       # a chunk of one value compresses far below this share of its raw size


def _exr_may_be_flat(f, table_at: int, w: int, h: int, lines: int, pixel_bytes: int) -> bool:
    """False when some chunk is too big to hold one value: its compressed size, from the offset table
    (no pixel read), is over EXR_FLAT_RATIO of its raw size. Uncompressed files always may be."""
    n = -(-h // lines)
    f.seek(table_at)
    table = f.read(8 * n)
    if len(table) < 8 * n:
        raise ValueError("OpenEXR offset table cut short")
    offsets = sorted(struct.unpack(f"<{n}Q", table))
    f.seek(0, 2)
    ends = [*offsets[1:], f.tell()]
    biggest = max(e - o for o, e in zip(offsets, ends, strict=True))
    return biggest <= max(4096, EXR_FLAT_RATIO * lines * w * pixel_bytes)


_EXR_OWN_CODECS = (0, 1, 2, 3)     # NONE, RLE, ZIPS, ZIP: decoded here (Blender's default is ZIP)
_EXR_STRUCT = {0: "I", 1: "e", 2: "f"}


def _exr_combined_uniform(f, table_at: int, header: dict, w: int, h: int,
                          combined: dict[str, str]) -> dict[str, float] | None:
    """The one value of each Combined channel, read chunk by chunk (only those channels' bytes are
    compared); None at the first chunk where one of them varies. A scanline chunk holds, for each of
    its lines, each channel (in the header's sorted order) as `w` samples."""
    compression = header.get("compression", 0)
    chans: dict[str, int] = header["channels"]
    lines = _EXR_LINES[compression]
    n = -(-h // lines)
    f.seek(table_at)
    offsets = struct.unpack(f"<{n}Q", f.read(8 * n))
    sizes = {name: _EXR_BYTES.get(t, 4) for name, t in chans.items()}
    wanted = {name: letter for letter, name in combined.items()}
    first: dict[str, bytes] = {}
    order = sorted(chans)
    starts = list(itertools.accumulate((w * sizes[n] for n in order), initial=0))
    span = (min(starts[order.index(n)] for n in wanted), max(starts[order.index(n) + 1] for n in wanted))
    last = b""
    for i, off in enumerate(offsets):
        f.seek(off)
        _y, packed = struct.unpack("<ii", f.read(8))
        data = f.read(packed)
        count = min(lines, h - i * lines)
        raw_size = count * w * sum(sizes.values())
        if i == 0 and compression in (2, 3) and packed < raw_size:
            # the common case, a picture: its first line's beauty varies, told from that line's bytes alone
            line0 = _exr_zip_range(data, raw_size, *span)
            if any(line0[starts[order.index(n)] - span[0]:starts[order.index(n) + 1] - span[0]]
                   != line0[starts[order.index(n)] - span[0]:][:sizes[n]] * w for n in wanted):
                return None
        if data == last:        # a chunk packed to the same bytes as the one before holds the same samples
            continue
        last = data
        raw = data if packed == raw_size or compression == 0 else _exr_unpack(data, compression, raw_size)
        if len(raw) != raw_size:
            raise ValueError(f"OpenEXR chunk {i} holds {len(raw)} bytes, not {raw_size}")
        pos = 0
        for _line in range(count):
            for name in order:
                step = w * sizes[name]
                if name in wanted:
                    seg = raw[pos:pos + step]
                    sample = first.setdefault(name, seg[:sizes[name]])
                    if seg != sample * w:
                        return None
                pos += step
    out: dict[str, float] = {}
    for name, sample in first.items():
        v = float(struct.unpack("<" + _EXR_STRUCT.get(chans[name], "f"), sample)[0])
        if math.isnan(v):
            return None
        out[wanted[name]] = v
    return out


def _exr_zip_range(data: bytes, raw_size: int, lo: int, hi: int) -> bytes:
    """Bytes lo..hi of a ZIP chunk's unpacked data, inflating no further than they need and undoing the
    predictor over that range only (a running sum: byte k is the first byte plus the sum of the next
    k differences)."""
    import numpy as np

    half = (raw_size + 1) // 2
    ev = ((lo + 1) // 2, (hi + 1) // 2)               # even output bytes come from t[k], odd from t[half + k]
    od = (half + lo // 2, half + hi // 2)
    t = zlib.decompressobj().decompress(data, od[1])
    d = np.frombuffer(t, np.uint8)

    def pred(k0: int, k1: int) -> np.ndarray:
        if k1 <= k0:
            return np.empty(0, np.uint8)
        base = (int(d[0]) + int(d[1:k0].sum(dtype=np.uint64)) - 128 * max(0, k0 - 1)) & 0xFF if k0 else 0
        step = d[k0:k1] - np.uint8(128)
        if k0 == 0:
            step[0] = d[0]
        out = np.cumsum(step, dtype=np.uint8)
        return out + np.uint8(base) if k0 else out

    res = np.empty(hi - lo, np.uint8)
    res[(lo & 1)::2] = pred(*ev)[: len(res[(lo & 1)::2])]
    res[1 - (lo & 1)::2] = pred(*od)[: len(res[1 - (lo & 1)::2])]
    return res.tobytes()


def _exr_unpack(data: bytes, compression: int, raw_size: int) -> bytes:
    """OpenEXR's ZIP/ZIPS (zlib) and RLE chunks: decompress, then undo the byte predictor and the
    split of even and odd bytes that both apply before compressing."""
    if compression in (2, 3):
        t = zlib.decompress(data)
    else:
        out = bytearray()
        i = 0
        while i < len(data):
            c = data[i] if data[i] < 128 else data[i] - 256
            if c < 0:
                out += data[i + 1:i + 1 - c]
                i += 1 - c
            else:
                out += data[i + 1:i + 2] * (c + 1)
                i += 2
        t = bytes(out)
    import numpy as np

    d = np.frombuffer(t, np.uint8) - np.uint8(128)        # wraps, as the predictor's byte arithmetic does
    d[0] = t[0]
    p = np.cumsum(d, dtype=np.uint8)
    half = (len(p) + 1) // 2
    res = np.empty(len(p), np.uint8)
    res[0::2], res[1::2] = p[:half], p[half:]
    return res.tobytes()


def _exr_header(data: bytes, pos: int) -> tuple[dict, int]:
    out: dict = {}
    while True:
        end = data.index(b"\0", pos)
        name = data[pos:end].decode("latin-1")
        pos = end + 1
        if not name:
            return out, pos
        end = data.index(b"\0", pos)
        typ = data[pos:end].decode("latin-1")
        size = struct.unpack_from("<i", data, end + 1)[0]
        value = data[end + 5:end + 5 + size]
        if len(value) < size:
            raise ValueError("OpenEXR header cut short")
        pos = end + 5 + size
        if typ == "chlist":
            chans, i = {}, 0
            while i < len(value) and value[i] != 0:
                j = value.index(b"\0", i)
                chans[value[i:j].decode("utf-8", "replace")] = struct.unpack_from("<i", value, j + 1)[0]
                i = j + 1 + 16
            out[name] = chans
        elif typ == "box2i":
            out[name] = struct.unpack("<iiii", value[:16])
        elif typ == "compression":
            out[name] = value[0]


def _combined_channels(names: Sequence[str]) -> dict[str, str]:
    """Letter -> channel name of the beauty image: R/G/B/A, or a multilayer file's `<layer>.Combined.R`."""
    plain = {n: n for n in names if n in ("R", "G", "B", "A", "Y")}
    if plain:
        return plain
    out: dict[str, str] = {}
    for n in sorted(names):
        parts = n.split(".")
        if len(parts) >= 2 and parts[-2] == "Combined" and parts[-1] in ("R", "G", "B", "A") and parts[-1] not in out:
            out[parts[-1]] = n
    return out


def _exr_uniform(path: str, combined: dict[str, str]) -> dict[str, float] | None:
    """The one value of each Combined channel, or None (OpenEXR reads the whole file: only a file
    whose chunks may be flat, or that is uncompressed or tiled, gets here)."""
    import OpenEXR

    out: dict[str, float] = {}
    with OpenEXR.File(path, separate_channels=True) as f:
        chans = f.channels()
        for letter, name in combined.items():
            px = chans[name].pixels
            lo, hi = float(px.min()), float(px.max())
            if lo != hi or math.isnan(lo):
                return None
            out[letter] = lo
    return out


# -- empty regions (a decode: only for a frame may_be_partial picked, and its reference) ---------------
def empty_cells(path: str | os.PathLike[str]) -> EmptyCells | None:
    """The frame's grid of empty cells (see EmptyCells), or None where it cannot be read. Each cell's
    largest value per channel decides (one pass over the pixels)."""
    import numpy as np

    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            exr = f.read(4) == _EXR_MAGIC
        if exr:
            import OpenEXR

            with OpenEXR.File(path, separate_channels=True) as ef:
                chans = ef.channels()
                combined = _combined_channels(list(chans))
                if not combined:
                    return None
                a = np.stack([np.abs(np.asarray(chans[n].pixels, np.float32)) for n in combined.values()], -1)
            tol, alpha = FLOAT_EMPTY, False          # every channel (alpha too) at most FLOAT_EMPTY
            full = (a.shape[1], a.shape[0])
        else:
            from PIL import Image

            with Image.open(path) as im:
                full = im.size
                if im.format == "JPEG":
                    im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                if im.mode == "P":
                    im = im.convert("RGBA")
                tol = JPEG_TOLERANCE if im.format == "JPEG" else DITHER_LEVELS
                alpha = im.mode in ("RGBA", "LA")
                a = np.asarray(im)
            if a.dtype == np.uint16:
                tol *= 257
            if a.ndim == 2:
                a = a[..., None]
    except Exception:
        return None
    h, w = a.shape[:2]
    rows, cols = min(GRID, h), min(GRID, w)
    ys, xs = np.arange(rows) * h // rows, np.arange(cols) * w // cols     # cell edges: every pixel in a cell
    top = np.maximum.reduceat(np.maximum.reduceat(a, xs, axis=1), ys, axis=0)    # rows x cols x channels (x first: 5x faster)
    if alpha:       # alpha exactly 0, the colour within dither (Blender dithers an empty region's 0s to 0s and 1s)
        grid = (top[..., -1] == 0) & (top[..., :-1] <= tol).all(axis=-1)
    else:
        grid = (top <= tol).all(axis=-1)
    return EmptyCells(full[0], full[1], rows, cols, grid.astype(np.uint8).tobytes())


# -- JPEG and the rest, through Pillow -------------------------------------------------------------
def _pillow(path: str, tolerance: int = 0) -> FrameFacts:
    from PIL import Image

    with Image.open(path) as im:
        fmt = im.format or ""
        w, h = im.size
        mode = {"L": "BW", "LA": "BW", "I;16": "BW", "RGB": "RGB", "RGBA": "RGBA", "P": "RGB"}.get(im.mode, im.mode)
        tol = tolerance
        if fmt == "JPEG":
            im.draft(im.mode, (max(1, w // 8), max(1, h // 8)))
            tol = JPEG_TOLERANCE
        if im.mode == "P":
            im = im.convert("RGBA")
        ext = im.getextrema()
        bands = [ext] if not isinstance(ext[0], tuple) else list(ext)
        if any(hi - lo > tol for lo, hi in bands):
            return FrameFacts(path, "JPEG" if fmt == "JPEG" else fmt, w, h, mode)
        top = 65535.0 if im.mode.startswith("I;16") else 255.0
        vals = tuple(((lo + hi) / 2) / top for lo, hi in bands)
        transparent = im.mode in ("RGBA", "LA") and bands[-1][1] == 0
        return FrameFacts(path, "JPEG" if fmt == "JPEG" else fmt, w, h, mode, vals, transparent)
