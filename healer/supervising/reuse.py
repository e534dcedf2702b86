"""When a frame file already on disk is kept instead of rendered: Blender's own rule, then the checks.

A frame this job's ledger verified is kept while nothing that shapes the image changed (the ledger's
fingerprint: the scene file, the command line, and the content of the scripts it runs, `scripts_of`).
A file no ledger of this job verified (another run's, a preview's) is kept only where Blender itself
would skip it, the scene saved with Output > Overwrite off (`use_overwrite = False`), and then only
if it is what the scene renders: a complete file (verify_image), of the scene's format, resolution
(`resolution_x/y * resolution_percentage / 100`) and channels (`color_mode`), read with the frame
checks' own readers (healer.images). Where the scene renders over existing files
(Blender's default) every such frame is rendered again, as Blender would. What cannot be known
(a border render cropped to its border, an unreadable scene, a format the readers do not know) is
not kept. The scene is read as saved: what a `--python` script changes when it runs is not seen
before the render, so a script that turns overwriting back on needs `--fresh` to render every frame.

And where the scene skips existing files, a frame the healer renders (not kept, forgotten by a
changed fingerprint or `--fresh`, or judged wrong after it was saved) has its file removed first:
Blender would otherwise skip it and the old picture would pass as the new one.

Usage::

    spec = OutputSpec.from_scene(info, fmt)           # what each frame of the scene is (or None)
    why = reuse_refusal(path, spec)                   # None: keep it; else why it is rendered again
    scripts_of(["--python", "preview.py", "-E", "CYCLES"])   # [["--python", "/abs/preview.py", "<sha256>"]]
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

_SCRIPT_FILE = ("-P", "--python")
_SCRIPT_OTHER = ("--python-expr", "--python-text")
# Blender's format names against what the frame readers call the file (Pillow's names, or their own).
_FAMILY = {"OPEN_EXR_MULTILAYER": "OPEN_EXR", "TARGA": "TGA", "TARGA_RAW": "TGA", "IRIS": "SGI",
           "JPEG2000": "JPEG2000", "TIFF": "TIFF", "BMP": "BMP", "WEBP": "WEBP", "PNG": "PNG", "JPEG": "JPEG",
           "OPEN_EXR": "OPEN_EXR"}


@dataclass(frozen=True)
class OutputSpec:
    """What each frame of the scene is, as saved (None: not known, so no file is kept)."""

    width: int | None
    height: int | None
    mode: str | None               # BW | RGB | RGBA (image_settings.color_mode)
    file_format: str | None        # PNG | OPEN_EXR | ... (after a command line's -F)

    @classmethod
    def from_scene(cls, info, file_format: str | None) -> OutputSpec | None:
        """From the scene's render settings (assets.SceneInfo), `file_format` as the command line makes it."""
        if info is None:
            return None
        w = h = None
        if info.resolution_x and info.resolution_y and info.resolution_percentage and not info.cropped:
            w = info.resolution_x * info.resolution_percentage // 100
            h = info.resolution_y * info.resolution_percentage // 100
        # -F to another format than the scene's: Blender fits the channels to it; not known here.
        mode = info.color_mode if file_format == info.file_format else None
        return cls(w, h, mode, file_format)


def reuse_refusal(path: str, spec: OutputSpec | None) -> str | None:
    """Why the file at `path` is not what the scene renders (None: it is, and may be kept)."""
    from healer.images.judge import Expected, judge_frame
    from healer.images.read import inspect_frame

    if spec is None or not spec.width or not spec.height or not spec.file_format:
        return "the scene's output size or format is not known"
    facts = inspect_frame(path)
    if facts.error:
        return f"unreadable: {facts.error}"
    asked = _FAMILY.get(spec.file_format)
    if asked is None or facts.format != asked:
        return f"the file is {facts.format or 'of an unknown format'}, the scene writes {spec.file_format}"
    if spec.file_format != "OPEN_EXR_MULTILAYER" and not (spec.mode and facts.mode):   # (passes, not channels)
        return "the scene's channels are not known"
    found = judge_frame(facts, Expected(spec.width, spec.height, spec.mode, spec.file_format))
    wrong = [s.detail for s in found if s.reason in ("resolution", "channels")]
    return "; ".join(wrong) or None


def scripts_of(args: Sequence[str], cwd: str | None = None) -> list[list[str]]:
    """The scripts a Blender command line runs before its render, each as [option, what]: a `--python`
    file by its absolute path and the SHA-256 of its content (so an edited script is a changed render),
    `--python-expr` by its text, `--python-text` by the name of the text block (inside the .blend).
    Arguments after `--` are the scripts' own, not Blender's."""
    from healer.supervising.blender_argv import _ONE_VALUE as ONE_VALUE

    out: list[list[str]] = []
    args = list(args)
    if "--" in args:
        args = args[:args.index("--")]
    i = 0
    while i < len(args):
        opt = args[i]
        if opt in ONE_VALUE and i + 1 < len(args):
            val = args[i + 1]
            if opt in _SCRIPT_FILE:
                path = os.path.abspath(os.path.join(cwd or os.getcwd(), val))
                out.append([opt, path, _digest(path)])
            elif opt in _SCRIPT_OTHER:
                out.append([opt, val])
            i += 2
        else:
            i += 1
    return out


def _digest(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        return f"unreadable: {e.strerror}"
