"""Before any Blender runs: the request checked, the scene's settings and dependencies read, the job
named. A few milliseconds that save a launch (and GPU time) on a job that cannot succeed.

Usage::

    plan = prepare(request)            # RequestError: bad arguments (exit status 2)
    if isinstance(plan, EarlyFailure): ...   # the job fails before any launch (missing .blend, movie)
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from blender_hooks.farm import FarmIdentity
from healer.diagnosis.catalog import EXIT_INPUT, EXIT_STRICT
from healer.supervising.assets import AssetReport, scan_scene
from healer.supervising.context import RenderRequest
from healer.supervising.launch import check_user_args
from healer.supervising.outputs import MOVIE_FORMATS, OutputPattern
from healer.supervising.reuse import OutputSpec, scripts_of
from healer.supervising.spawn import split_user_args

log = logging.getLogger("healer.supervising.supervisor")


class RequestError(ValueError):
    """A render request that cannot start (bad arguments); exit status 2."""


@dataclass(frozen=True)
class Prepared:
    scene: str                       # absolute path
    frames: tuple[int, ...]
    pattern: OutputPattern | None    # where frames are written (None: learnt from Blender's output)
    job: str
    fingerprint: dict                # what the frames are made from: the scene file, the command line, its scripts
    scene_saved_at: float            # the .blend's mtime
    assets: AssetReport              # what the scene uses that is missing, and unbaked simulations
    output_spec: OutputSpec | None = None   # each frame's size, channels and format, as the scene is saved
    skips_existing: bool | None = None      # the scene's use_overwrite is off: Blender skips files on disk


@dataclass(frozen=True)
class EarlyFailure:
    type: str
    message: str
    exit_code: int
    frames: tuple[int, ...] = ()


@dataclass(frozen=True)
class AssetVerdict:
    failure: EarlyFailure | None            # missing linked files (or --strict with any missing file)
    warnings: tuple[tuple[str, str], ...]   # (type, message) to report
    notes: tuple[tuple[str, str], ...]      # (type, message) to say without an incident


def job_id_for(scene: str, frames: Sequence[int], output: str | None, args: Sequence[str],
               farm: FarmIdentity | None = None) -> str:
    """The same command line gives the same job id, so running it again resumes the job; under a farm,
    the farm's job and task are part of it, so two farm jobs of one scene never share a ledger."""
    key: tuple = (os.path.abspath(scene), list(frames), output, list(args))
    if farm is not None and (farm.job or farm.task):
        key += (farm.discriminator(),)
    h = hashlib.sha256(repr(key).encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.splitext(os.path.basename(scene))[0]).lstrip("._-")[:40] or "job"
    return f"{stem}-{h}"


def arg_value(args: Sequence[str], *names: str) -> str | None:
    value = None
    for i, a in enumerate(args[:-1]):
        if a in names:
            value = args[i + 1]
    return value


def prepare(req: RenderRequest, cache_dir: Path | None = None) -> Prepared | EarlyFailure:
    """Check the request and read the scene (once per version of it, cached in `cache_dir`).
    Raises RequestError for bad arguments."""
    scene = os.path.abspath(req.scene)
    frames = list(req.frames or ())
    try:
        check_user_args(req.blender_args)
        check_user_args(req.after_args)
    except ValueError as e:
        raise RequestError(str(e)) from None
    if shutil.which(req.blender) is None:
        raise RequestError(f"Blender executable {req.blender!r} not found: install Blender, pass --blender "
                           "or set RENDERWATCH_BLENDER")
    if not os.path.isfile(scene):
        return EarlyFailure("missing_file", f"the .blend file does not exist: {scene}", EXIT_INPUT, tuple(frames))
    info, why, assets = scan_scene(scene, cache_dir)
    if why is not None:
        if "not a blend file" in why.lower():
            return EarlyFailure("blend_invalid", f"not a .blend file: {scene}", EXIT_INPUT, tuple(frames))
        log.warning("cannot read render settings from %s (%s): relying on Blender's output", scene, why)
    if not frames:
        if info is None:
            raise RequestError(f"cannot read the frame range of {scene}: pass --frames")
        first = info.frame_start if req.range_start is None else req.range_start
        last = info.frame_end if req.range_end is None else req.range_end
        step = info.frame_step if req.range_start is None and req.range_end is None else req.range_step
        frames = list(range(first, last + 1, max(1, step)))
        if not frames:
            raise RequestError(f"no frames to render: {first}..{last} of {scene} is empty")
    before, _ = split_user_args(req.blender_args)
    fmt = arg_value(before, "-F", "--render-format") or (info.file_format if info else None)
    if fmt in MOVIE_FORMATS:
        return EarlyFailure("output_error", f"the scene writes a movie ({fmt}): a movie cannot be resumed "
                            "frame by frame; choose an image format (-- -F PNG or OPEN_EXR)", EXIT_INPUT, tuple(frames))
    use_ext = arg_value(before, "-x", "--use-extension")
    pattern_src = req.output or (info.output if info else None)
    pattern = (OutputPattern.from_blender(pattern_src, os.path.dirname(scene), fmt,
                                          use_ext != "0" if use_ext is not None else (info.use_extension if info else True))
               if pattern_src else None)
    # The scene's own output may be replaced by a script of the command line (a pipeline's --python):
    # then only Blender knows where frames go. -o comes after those scripts, so it is what Blender uses.
    sure = req.output is not None or not any(a in _SCRIPT_ARGS for a in before)
    why_not = output_folder_problem(os.path.dirname(pattern.template)) if pattern and sure else None
    if why_not:
        return EarlyFailure("output_error", f"cannot write the frames: {why_not}", EXIT_INPUT, tuple(frames))
    args = [*req.blender_args, *(["<after>", *req.after_args] if req.after_args else [])]
    job = req.job or job_id_for(scene, frames, req.output, args, req.farm)
    st = os.stat(scene)
    fingerprint = {"the scene file": [st.st_size, st.st_mtime_ns],
                   "the render settings": [req.blender, list(req.blender_args), list(req.after_args), req.output]}
    scripts = scripts_of(req.blender_args)      # (those after the render do not shape its frames)
    if scripts:         # only then: a ledger of a job without scripts keeps its fingerprint
        fingerprint["the scripts"] = scripts
    return Prepared(scene=scene, frames=tuple(frames), pattern=pattern, job=job, fingerprint=fingerprint,
                    scene_saved_at=st.st_mtime, assets=assets, output_spec=OutputSpec.from_scene(info, fmt),
                    skips_existing=None if info is None or info.use_overwrite is None else not info.use_overwrite)


_SCRIPT_ARGS = frozenset({"-P", "--python", "--python-expr", "--python-text"})


def output_folder_problem(folder: str) -> str | None:
    """Why Blender could not write frames into `folder`, or None. Found before Blender starts, not
    after the first frame has rendered in full. Nothing is created: a folder that does not exist yet is
    fine where Blender can create it (the nearest existing folder above it is writable)."""
    path = os.path.abspath(folder)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        return f"{path} is not a folder (output folder {folder})"
    if os.access(path, os.W_OK | os.X_OK):
        return None
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    what = "is on a read-only file system" if read_only else "is not writable by this user"
    return f"{path} {what} (output folder {folder})"


def judge_assets(rep: AssetReport, *, strict: bool, resuming_mid_range: bool) -> AssetVerdict:
    """What the .blend uses that is missing (blender-asset-tracer), and whether the job can start."""
    if rep.fatal:
        listing = "; ".join(f"{m.kind} {m.path}" for m in rep.fatal)
        return AssetVerdict(EarlyFailure("missing_file", f"missing linked files: {listing}; restore them or fix "
                                         "the paths in the .blend", EXIT_INPUT), (), ())
    soft = [m for m in rep.missing if not m.fatal]
    warnings = tuple(("missing_file", f"missing {m.kind} {m.path} (used by {m.block})") for m in soft)
    if soft and strict:
        listing = "; ".join(f"{m.kind} {m.path}" for m in soft)
        return AssetVerdict(EarlyFailure("missing_file", f"--strict: missing files: {listing}", EXIT_STRICT),
                            warnings, ())
    notes: tuple[tuple[str, str], ...] = ()
    if rep.simulations and resuming_mid_range:
        notes = (("simulation", "resuming mid-range in a scene with unbaked simulations; frames rendered after "
                  f"the restart may differ: {', '.join(rep.simulations)}"),)
    return AssetVerdict(None, warnings, notes)
