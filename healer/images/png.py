"""PNG: the frame's facts read from its filtered rows, and whether the file is complete.

`inspect`: the header, then the image data inflated a block at a time and compared row by row, still
filtered, with the rows a one-value image has for each PNG filter type (or, for Blender's dithered
8-bit output, rows of small differences only). A real frame differs in its first rows (an early exit
after a few KB); only a frame that may be blank is inflated to the end (and then decoded by Pillow to
tell within dither), which is the rare case the check exists for. `check_complete`: the signature and
the IEND chunk at the end.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

from healer.images import pillow
from healer.images.facts import DITHER_LEVELS, FrameFacts

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_MODES = {0: "BW", 2: "RGB", 3: "RGB", 4: "BW", 6: "RGBA"}
_PNG_ALPHA = {4: True, 6: True}
_READ = 256 * 1024


def inspect(path: str, f) -> FrameFacts:
    """The facts of the PNG open as `f` (at its start)."""
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
        full = pillow.inspect(path)
        return FrameFacts(path, "PNG", w, h, _PNG_MODES[color], full.uniform, full.transparent, full.error)
    channels = _PNG_CHANNELS[color]
    bpp = channels * depth // 8
    uniform = _png_uniform(_idat_stream(f), w, h, bpp, depth)
    if uniform is None:
        return base
    if not isinstance(uniform, bytes):   # True: one value within dither, perhaps: the full decode tells
        full = pillow.inspect(path, tolerance=DITHER_LEVELS)
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



def check_complete(f, head: bytes, size: int) -> str:
    """The problem with the PNG open as `f` (`head`: its first bytes, `size`: its length), or ""."""
    if not head.startswith(SIGNATURE):
        return "not a PNG (bad signature)"
    f.seek(max(0, size - 12))
    if f.read(12) != _IEND:
        return "truncated PNG (no IEND chunk at the end)"
    return ""
