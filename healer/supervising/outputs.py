"""Output files: where Blender writes frame N, and whether a file on disk is a complete image.

Usage::

    OutputPattern.from_blender("//frames/f_", blend_dir="/shot", file_format="PNG").path_for(7)
    # -> /shot/frames/f_0007.png
    verify_image("/shot/frames/f_0007.png")   # Verdict(ok=True, size=..., reason="")

Verification reads only the bytes it needs (headers, tails, EXR offset tables), so it is cheap
enough to run after every `Saved:` line.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

# Blender's R_IMF_IMTYPE_* ids (DNA_scene_types.h) -> (format name, extension). Movie types map to None.
IMTYPES: dict[int, tuple[str, str | None]] = {
    0: ("TARGA", ".tga"), 1: ("IRIS", ".rgb"), 4: ("JPEG", ".jpg"), 7: ("IRIZ", ".rgb"),
    14: ("TARGA_RAW", ".tga"), 15: ("AVI_RAW", None), 16: ("AVI_JPEG", None), 17: ("PNG", ".png"),
    20: ("BMP", ".bmp"), 21: ("HDR", ".hdr"), 22: ("TIFF", ".tif"), 23: ("OPEN_EXR", ".exr"),
    24: ("FFMPEG", None), 26: ("CINEON", ".cin"), 27: ("DPX", ".dpx"), 28: ("OPEN_EXR_MULTILAYER", ".exr"),
    29: ("DDS", ".dds"), 30: ("JPEG2000", ".jp2"), 35: ("WEBP", ".webp"),
}
FORMAT_EXT: dict[str, str | None] = {name: ext for name, ext in IMTYPES.values()}
MOVIE_FORMATS = frozenset(name for name, ext in IMTYPES.values() if ext is None)
_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".bmp", ".tga", ".rgb", ".sgi", ".hdr",
               ".cin", ".dpx", ".dds", ".jp2", ".j2c", ".webp"}
_HASHES = re.compile(r"#+")


@dataclass(frozen=True)
class OutputPattern:
    """A resolved output pattern: absolute path template with `#` frame digits, plus the extension."""

    template: str                  # absolute, '#' run marks the frame digits
    extension: str | None          # ".png"; None = unknown format (verify by existence only)
    file_format: str | None = None

    @classmethod
    def from_blender(cls, pattern: str, blend_dir: str | os.PathLike[str], file_format: str | None = "PNG",
                     use_extension: bool = True) -> OutputPattern:
        """Resolve like Blender: `//` is the blend's folder, no `#` in the file name appends `####`."""
        if pattern.startswith("//"):
            pattern = os.path.join(str(blend_dir), pattern[2:])
        pattern = os.path.abspath(os.path.expanduser(pattern)) + ("/" if pattern.endswith(("/", "\\")) else "")
        head, name = os.path.split(pattern)
        if "#" not in name:
            name += "####"
        ext = FORMAT_EXT.get(file_format or "", None) if file_format else None
        return cls(os.path.join(head, name), ext if use_extension else "", file_format)

    def path_for(self, frame: int) -> str:
        """The file Blender writes for `frame` (the last `#` run of the file name holds the digits)."""
        head, name = os.path.split(self.template)
        runs = list(_HASHES.finditer(name))
        m = runs[-1]
        digits = f"{frame:0{len(m.group(0))}d}" if frame >= 0 else f"-{-frame:0{len(m.group(0)) - 1}d}"
        name = name[:m.start()] + digits + name[m.end():]
        path = os.path.join(head, name)
        if self.extension:
            root, ext = os.path.splitext(path)
            if ext.lower() in _IMAGE_EXTS and ext.lower() != self.extension:
                path = root + self.extension
            elif ext.lower() != self.extension:
                path += self.extension
        return path

    def to_dict(self) -> dict:
        return {"template": self.template, "extension": self.extension, "file_format": self.file_format}


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
    if head.startswith(b"\x89PNG\r\n\x1a\n") or suffix == ".png":
        return _check_png
    if head.startswith(b"\xff\xd8") or suffix in (".jpg", ".jpeg"):
        return _check_jpeg
    if head.startswith(b"\x76\x2f\x31\x01") or suffix == ".exr":
        return _check_exr
    return None


def _tail(f, size: int, n: int) -> bytes:
    f.seek(max(0, size - n))
    return f.read(n)


def _check_png(f, head: bytes, size: int) -> str:
    if not head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "not a PNG (bad signature)"
    if _tail(f, size, 12) != b"\x00\x00\x00\x00IEND\xaeB`\x82":
        return "truncated PNG (no IEND chunk at the end)"
    return ""


def _check_jpeg(f, head: bytes, size: int) -> str:
    if not head.startswith(b"\xff\xd8"):
        return "not a JPEG (no SOI marker)"
    if b"\xff\xd9" not in _tail(f, size, 64).rstrip(b"\x00"):
        return "truncated JPEG (no EOI marker)"
    return ""


def _check_exr(f, head: bytes, size: int) -> str:
    """Walk the EXR header(s) to the offset table; every chunk offset must lie inside the file."""
    if not head.startswith(b"\x76\x2f\x31\x01"):
        return "not an OpenEXR file (bad magic)"
    flags = struct.unpack("<I", head[4:8])[0]
    multipart = bool(flags & 0x1000)
    f.seek(8)
    data = f.read(min(size - 8, 1 << 20))     # headers are small; cap the read
    pos, headers = 0, []
    try:
        while True:
            attrs, pos = _exr_header(data, pos)
            headers.append(attrs)
            if not multipart:
                break
            if data[pos:pos + 1] == b"\x00":
                pos += 1
                break
    except (IndexError, struct.error, ValueError):
        return "truncated OpenEXR header"
    table_start = 8 + pos
    offsets: list[int] = []
    for attrs in headers:
        count = attrs.get("chunkCount") or _exr_chunk_count(attrs)
        if count is None:
            return "" if size > table_start else "OpenEXR has no offset table"
        # The count comes from the file: bound it by what the file can hold before reading.
        if not isinstance(count, int) or not 0 < count <= (size - table_start) // 8 - len(offsets):
            return "truncated or corrupt OpenEXR (chunk count does not fit the file)"
        f.seek(table_start + 8 * len(offsets))
        raw = f.read(8 * count)
        if len(raw) < 8 * count:
            return "truncated OpenEXR offset table"
        offsets.extend(struct.unpack(f"<{count}Q", raw))
    if not offsets or any(o == 0 or o >= size for o in offsets):
        return "truncated OpenEXR (a chunk offset points past the end of the file)"
    # The last chunk must also be complete: read its data size.
    last = max(offsets)
    f.seek(last)
    prefix = f.read(24)
    need = 4 + (4 if multipart else 0)
    if len(prefix) < need + 4:
        return "truncated OpenEXR (last chunk cut off)"
    tiled = any(a.get("tiled") for a in headers)
    skip = need + (12 if tiled else 0)
    if len(prefix) < skip + 4:
        return "truncated OpenEXR (last chunk cut off)"
    chunk_len = struct.unpack("<i", prefix[skip:skip + 4])[0]
    if last + skip + 4 + chunk_len > size:
        return "truncated OpenEXR (last chunk cut off)"
    return ""


def _exr_header(data: bytes, pos: int) -> tuple[dict, int]:
    attrs: dict = {}
    while True:
        if data[pos] == 0:
            return attrs, pos + 1
        name_end = data.index(b"\x00", pos)
        name = data[pos:name_end].decode("latin-1")
        type_end = data.index(b"\x00", name_end + 1)
        typ = data[name_end + 1:type_end].decode("latin-1")
        (length,) = struct.unpack_from("<i", data, type_end + 1)
        if length < 0:
            raise ValueError("negative attribute size")
        value = data[type_end + 5:type_end + 5 + length]
        if len(value) < length:
            raise IndexError("attribute cut off")
        if name == "dataWindow" and typ == "box2i":
            attrs["dataWindow"] = struct.unpack("<4i", value)
        elif name == "compression":
            attrs["compression"] = value[0]
        elif name == "chunkCount":
            attrs["chunkCount"] = struct.unpack("<i", value)[0]
        elif name == "tiles":
            attrs["tiled"] = True
        pos = type_end + 5 + length


# Scanlines per chunk by compression id (NONE, RLE, ZIPS, ZIP, PIZ, PXR24, B44, B44A, DWAA, DWAB).
_LINES_PER_CHUNK = {0: 1, 1: 1, 2: 1, 3: 16, 4: 32, 5: 16, 6: 32, 7: 32, 8: 32, 9: 256}


def _exr_chunk_count(attrs: dict) -> int | None:
    if attrs.get("tiled") or "dataWindow" not in attrs:
        return None   # tiled single-part without chunkCount: fall back to a size check
    x0, y0, x1, y1 = attrs["dataWindow"]
    lines = _LINES_PER_CHUNK.get(attrs.get("compression", 0), 1)
    return -(-(y1 - y0 + 1) // lines)


def remove_partial(path: str | os.PathLike[str]) -> bool:
    """Delete an incomplete output so Blender writes it again; True if something was removed."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
