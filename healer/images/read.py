"""Reading a saved frame: `inspect_frame` (its size, its channels, and whether every pixel is one value)
and `empty_cells` (its grid of empty cells); the entries, by the file's first bytes, to the readers.

The failures that exit 0 leave frames that are complete files but wrong pictures: black or one flat
colour after a GPU error, fully transparent, the wrong size or channels. `inspect_frame` reads what is
needed to tell, and no more, because it runs on every frame (off Blender's critical path, in a worker
thread of the healer, but a 4K frame still must cost milliseconds, not the 100-370 ms of a full decode):
PNG (healer.images.png), OpenEXR single- and multi-layer (healer.images.exr), JPEG and anything else
Pillow reads (healer.images.pillow). What the facts mean for the job is healer.images.judge's, which
reads no file. `empty_cells` decodes the whole frame: only for a frame `may_be_partial` picked, and
its reference.

Usage::

    facts = inspect_frame("/out/frame_0007.png")      # FrameFacts; never raises
    cells = empty_cells("/out/frame_0007.png")        # EmptyCells, or None where it cannot be read
"""

from __future__ import annotations

import dataclasses
import os

from healer.images import exr, pillow, png
from healer.images.facts import DITHER_LEVELS, FLOAT_EMPTY, GRID, JPEG_TOLERANCE, EmptyCells, FrameFacts


def inspect_frame(path: str | os.PathLike[str]) -> FrameFacts:
    """The facts of one frame file; an unreadable file gives facts with `error` set (never raises)."""
    path = os.fspath(path)      # OpenEXR takes only a str
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            f.seek(0)
            if head.startswith(png.SIGNATURE):
                facts = png.inspect(path, f)
            elif head.startswith(exr.MAGIC):
                facts = exr.inspect(path, f)
            else:
                facts = pillow.inspect(path)
        return dataclasses.replace(facts, file_size=size)
    except Exception as e:       # a frame that cannot be read is not judged: the healer goes on
        return FrameFacts(path, error=f"{type(e).__name__}: {e}"[:300])


def empty_cells(path: str | os.PathLike[str]) -> EmptyCells | None:
    """The frame's grid of empty cells (see EmptyCells), or None where it cannot be read. Each cell's
    largest value per channel decides (one pass over the pixels)."""
    import numpy as np

    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            is_exr = f.read(4) == exr.MAGIC
        if is_exr:
            import OpenEXR

            with OpenEXR.File(path, separate_channels=True) as ef:
                chans = ef.channels()
                combined = exr.combined_channels(list(chans))
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
