"""JPEG and every other format Pillow reads: the frame's facts.

JPEG: Pillow's DCT-domain draft at 1/8 scale (a flat JPEG decodes flat, within rounding). Anything
else: a full decode (rare formats pay the full price). PNGs Blender never writes (interlaced, under 8
bits, palette) and a PNG that may be one value within dither come here too.
"""

from __future__ import annotations

from healer.images.facts import JPEG_TOLERANCE, FrameFacts


def inspect(path: str, tolerance: int = 0) -> FrameFacts:
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

