"""The values the image readers produce and the judgement reads: a frame's facts, its grid of empty cells.

No I/O here and nothing heavy imported (the ledger's completeness check imports the readers before
Blender starts): `healer.images.read` fills these from the file, `healer.images.judge` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

# What counts as one value, as read (the readers' tolerances):
DITHER_LEVELS = 3           # an 8-bit frame within this many levels of one value is one value (dither)
JPEG_TOLERANCE = 4          # a flat JPEG decodes within this of one value (8-bit levels, dither + DCT)
GRID = 32                   # empty_cells: the frame is judged in GRID x GRID cells
FLOAT_EMPTY = 1e-6          # a float (EXR) value at most this is empty (an unrendered pixel is 0.0)


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
