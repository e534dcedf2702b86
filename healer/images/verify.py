"""Whether a file on disk is a complete image (the ledger's check after every `Saved:` line).

Reads only the bytes it needs (headers, tails, EXR offset tables), so it is cheap enough to run after
every frame: PNG (signature + IEND), JPEG (SOI + EOI), OpenEXR (magic, headers, every chunk offset
inside the file, the last chunk whole). Other formats: existence and a size over 0.

Usage::

    verify_image("/shot/frames/f_0007.png")   # Verdict(ok=True, size=..., reason="")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from healer.images import exr, jpeg, png


@dataclass(frozen=True)
class Verdict:
    ok: bool
    size: int = 0
    reason: str = ""
    partial: bool = False          # the file exists but is incomplete/corrupt (remove and re-render)


def verify_image(path: str | os.PathLike[str]) -> Verdict:
    """Is `path` a complete image? PNG (signature + IEND), JPEG (SOI + EOI), EXR (magic + offset table)."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        return Verdict(False, 0, "missing")
    except OSError as e:
        return Verdict(False, 0, f"unreadable: {e.strerror}")
    if size == 0:
        return Verdict(False, 0, "empty file", partial=True)
    try:
        with open(p, "rb") as f:
            head = f.read(16)
            checker = _checker(head, p.suffix.lower())
            if checker is None:
                return Verdict(True, size)
            problem = checker(f, head, size)
    except OSError as e:
        return Verdict(False, size, f"unreadable: {e.strerror}")
    if problem:
        return Verdict(False, size, problem, partial=True)
    return Verdict(True, size)


def _checker(head: bytes, suffix: str):
    if head.startswith(png.SIGNATURE) or suffix == ".png":
        return png.check_complete
    if head.startswith(jpeg.SOI) or suffix in (".jpg", ".jpeg"):
        return jpeg.check_complete
    if head.startswith(exr.MAGIC) or suffix == ".exr":
        return exr.check_complete
    return None
