"""JPEG: whether the file is complete (its facts are read through Pillow: healer.images.pillow)."""

from __future__ import annotations

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"


def check_complete(f, head: bytes, size: int) -> str:
    """The problem with the JPEG open as `f` (`head`: its first bytes, `size`: its length), or ""."""
    if not head.startswith(SOI):
        return "not a JPEG (no SOI marker)"
    f.seek(max(0, size - 64))
    if EOI not in f.read(64).rstrip(b"\x00"):
        return "truncated JPEG (no EOI marker)"
    return ""
