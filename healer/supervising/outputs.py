"""Output files: where Blender writes frame N, and removing an incomplete one.

Whether a file on disk is a complete image is healer.images.verify's (every image file is read in
healer.images).

Usage::

    OutputPattern.from_blender("//frames/f_", blend_dir="/shot", file_format="PNG").path_for(7)
    # -> /shot/frames/f_0007.png
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

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


def remove_partial(path: str | os.PathLike[str]) -> bool:
    """Delete an incomplete output so Blender writes it again; True if something was removed."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
