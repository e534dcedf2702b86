"""Read a .blend without starting Blender (blender-asset-tracer): render settings, external files,
simulations.

- `read_scene_info`: the active scene's frame range, output path, file format and extension flag,
  so the supervisor knows where frame N lands before it launches anything.
- `check_assets`: every external file the .blend (and its libraries) uses; `//` paths resolve against
  the folder of the .blend that refers to them. Missing linked libraries are fatal (the scene
  renders without whole objects); missing images, fonts, sounds and caches are reported (and fatal
  only in --strict), since Blender renders on with a pink or empty texture.
- Simulations: cloth, particle physics and soft body point caches whose BAKED flag is off, plus
  fluid, dynamic paint and rigid body, whose bake state is not checked (reported as "unknown").
  Best effort: geometry-node simulation zones (4.x+) and caches in linked libraries are not seen.

Usage::

    info = read_scene_info("/shot/a.blend")      # SceneInfo(frame_start=1, frame_end=240, ...)
    report = check_assets("/shot/a.blend")        # AssetReport(missing=[...], simulations=[...])
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from healer.supervising.outputs import IMTYPES

log = logging.getLogger(__name__)
# BAT logs every file it opens at INFO: keep a render's console for what matters.
logging.getLogger("blender_asset_tracer").setLevel(logging.WARNING)

R_EXTENSION = 1 << 4          # scene.r.scemode: use_file_extension
R_BORDER, R_CROP = 1 << 9, 1 << 11   # scene.r.mode: use_border, use_crop_to_border
R_NO_OVERWRITE = 1 << 22      # scene.r.mode: use_overwrite off (Blender skips frames already on disk)
_PLANES = {8: "BW", 24: "RGB", 32: "RGBA"}    # r.im_format.planes: image_settings.color_mode
PTCACHE_BAKED = 1 << 0
_KIND = {b"LI": "library", b"IM": "image", b"VF": "font", b"SO": "sound", b"MC": "movie clip",
         b"CF": "cache file", b"VO": "volume", b"ME": "mesh data", b"OB": "object cache", b"SC": "sequencer strip"}
FATAL_KINDS = frozenset({"library"})
_SIM_MODIFIERS = {"ClothModifierData": "cloth", "FluidModifierData": "fluid",
                  "DynamicPaintModifierData": "dynamic paint", "FluidsimModifierData": "fluid"}


class BlendReadError(Exception):
    """blender-asset-tracer could not read the file (corrupt, compressed by a newer Blender...)."""


@dataclass(frozen=True)
class SceneInfo:
    scene: str
    frame_start: int
    frame_end: int
    frame_step: int
    output: str                    # r.pic, as stored (may start with //)
    file_format: str | None        # "PNG", "OPEN_EXR", "FFMPEG"...; None if unknown
    use_extension: bool
    # what each frame is and whether Blender renders over a file already there (None: not read)
    resolution_x: int | None = None
    resolution_y: int | None = None
    resolution_percentage: int | None = None
    color_mode: str | None = None  # BW | RGB | RGBA
    cropped: bool = False          # a border render cropped to its border (the frame's size differs)
    use_overwrite: bool | None = None


@dataclass(frozen=True)
class MissingAsset:
    path: str
    kind: str
    block: str

    @property
    def fatal(self) -> bool:
        return self.kind in FATAL_KINDS


@dataclass
class AssetReport:
    missing: list[MissingAsset] = field(default_factory=list)
    simulations: list[str] = field(default_factory=list)   # "Suzanne: cloth (not baked)"
    error: str | None = None                               # the check itself failed

    @property
    def fatal(self) -> list[MissingAsset]:
        return [m for m in self.missing if m.fatal]


def _open(path: str | os.PathLike[str]):
    from blender_asset_tracer import blendfile
    try:
        return blendfile.open_cached(Path(path).resolve())
    except Exception as e:     # BAT raises several unrelated types for unreadable files
        raise BlendReadError(f"{path}: {type(e).__name__}: {e}") from e


def _scene_block(bf):
    glob = bf.find_blocks_from_code(b"GLOB")
    sc = glob[0].get_pointer(b"curscene") if glob else None
    if sc is None:
        scenes = bf.find_blocks_from_code(b"SC")
        sc = scenes[0] if scenes else None
    if sc is None:
        raise BlendReadError("no scene in the file")
    return sc


def _str(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def read_scene_info(path: str | os.PathLike[str]) -> SceneInfo:
    bf = _open(path)
    try:
        sc = _scene_block(bf)
        imtype = sc.get((b"r", b"im_format", b"imtype"))
        fmt = IMTYPES.get(int(imtype), (None, None))[0]
        mode = int(sc.get((b"r", b"mode")))
        return SceneInfo(
            scene=_str(sc.id_name)[2:], frame_start=int(sc.get((b"r", b"sfra"))),
            frame_end=int(sc.get((b"r", b"efra"))), frame_step=max(1, int(sc.get((b"r", b"frame_step")))),
            output=_str(sc.get((b"r", b"pic"))), file_format=fmt,
            use_extension=bool(int(sc.get((b"r", b"scemode"))) & R_EXTENSION),
            resolution_x=int(sc.get((b"r", b"xsch"))), resolution_y=int(sc.get((b"r", b"ysch"))),
            resolution_percentage=int(sc.get((b"r", b"size"))),
            color_mode=_PLANES.get(int(sc.get((b"r", b"im_format", b"planes")))),
            cropped=(mode & (R_BORDER | R_CROP)) == (R_BORDER | R_CROP), use_overwrite=not (mode & R_NO_OVERWRITE))
    except BlendReadError:
        raise
    except Exception as e:
        raise BlendReadError(f"{path}: cannot read the render settings: {type(e).__name__}: {e}") from e


def check_assets(path: str | os.PathLike[str]) -> AssetReport:
    """Missing external files and unbaked simulations of a .blend (never raises: see `.error`)."""
    return _scan_assets(str(Path(path).resolve()))[0]


def _exists(usage) -> bool:
    if not usage.is_sequence:
        return Path(usage.abspath).exists()
    return next(iter(usage.files()), None) is not None


def _baked(pc) -> bool | None:
    return None if pc is None else bool(int(pc.get(b"flag")) & PTCACHE_BAKED)


def _simulations(bf) -> list[str]:
    out: list[str] = []
    for ob in bf.find_blocks_from_code(b"OB"):
        name = _str(ob.id_name)[2:]
        md = ob.get_pointer((b"modifiers", b"first"))
        seen = 0
        while md is not None and seen < 1000:
            seen += 1
            typ = md.dna_type_name
            if typ == "ClothModifierData":
                out.append(_sim(name, "cloth", _baked(md.get_pointer(b"point_cache"))))
            elif typ == "ParticleSystemModifierData":
                psys = md.get_pointer(b"psys")
                part = psys.get_pointer(b"part") if psys is not None else None
                if part is not None and int(part.get(b"phystype")) != 0 and int(part.get(b"type")) != 2:
                    out.append(_sim(name, "particles", _baked(psys.get_pointer(b"pointcache"))))
            elif typ in _SIM_MODIFIERS:
                out.append(_sim(name, _SIM_MODIFIERS[typ], None))
            md = md.get_pointer((b"modifier", b"next"))
        soft = ob.get_pointer(b"soft")
        if soft is not None:
            shared = soft.get_pointer(b"shared")
            out.append(_sim(name, "soft body", _baked(shared.get_pointer(b"pointcache") if shared else None)))
    sc = _scene_block(bf)
    if sc.get_pointer(b"rigidbody_world") is not None:
        out.append(_sim(_str(sc.id_name)[2:], "rigid body world", None))
    return [s for s in out if s]


def _sim(owner: str, kind: str, baked: bool | None) -> str:
    if baked:
        return ""
    return f"{owner}: {kind} ({'not baked' if baked is False else 'bake state unknown'})"


# -- one read per scene version: a farm launches the same .blend for every frame --------------------

CACHE_VERSION = 2             # 2: the output's size, channels and use_overwrite


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def scan_scene(path: str | os.PathLike[str], cache_dir: Path | None = None) -> tuple[SceneInfo | None, str | None,
                                                                                        AssetReport]:
    """(scene info or None, why not, asset report) of a .blend, read once per version of the file.

    The reading (blender-asset-tracer decodes the whole file and every linked library: tens of ms on
    a small scene, more on a big one) is cached in `cache_dir`, keyed by the size, modification time
    and inode of the .blend and of each linked library. Whether each dependency exists is checked
    again every time (a texture can go missing without the .blend changing).
    """
    spath = str(Path(path).resolve())
    key_file = None
    if cache_dir is not None:
        import hashlib

        from kernel.paths import ensure_private_dir

        key_file = cache_dir / (hashlib.sha256(os.fsencode(spath)).hexdigest()[:24] + ".json")
        try:
            # what the cache says (frame range, output path) is trusted: read only from a folder this
            # account owns, reached through no link below the state root
            ensure_private_dir(cache_dir)
        except OSError as e:
            log.warning("scene cache not used (%s)", e)
            key_file = None
    if key_file is not None:
        import json

        try:
            doc = json.loads(key_file.read_text())
            if (doc.get("v") == CACHE_VERSION and doc.get("stamp") == _stamp(spath)
                    and all(_stamp(p) == s for p, s in doc.get("libraries", []))):
                cached = SceneInfo(**doc["info"]) if doc.get("info") else None
                report = AssetReport(missing=[MissingAsset(d["path"], d["kind"], d["block"])
                                              for d in doc["deps"] if not os.path.exists(d["path"])],
                                     simulations=list(doc.get("simulations", [])))
                return cached, doc.get("info_error"), report
        except (OSError, ValueError, KeyError, TypeError):
            pass
    info: SceneInfo | None = None
    why: str | None = None
    try:
        info = read_scene_info(spath)
    except BlendReadError as e:
        why = str(e)
    report, deps, libraries, cacheable = _scan_assets(spath)
    if key_file is not None and cacheable and why is None:
        import dataclasses
        import json

        from kernel.files import write_atomic
        from kernel.paths import ensure_private_dir

        try:
            ensure_private_dir(key_file.parent)
            doc = {"v": CACHE_VERSION, "stamp": _stamp(spath), "info": dataclasses.asdict(info) if info else None,
                   "info_error": why, "deps": deps, "libraries": libraries, "simulations": report.simulations}
            write_atomic(key_file, json.dumps(doc).encode(), sync=False)
        except OSError as e:
            log.debug("scene cache not written (%s): %s", key_file, e)
    return info, why, report


def _scan_assets(path: str) -> tuple[AssetReport, list[dict], list[list], bool]:
    """check_assets, plus what the cache needs: every dependency and each library's stamp."""
    from blender_asset_tracer import trace

    report = AssetReport()
    deps: list[dict] = []
    libraries: list[list] = []
    cacheable = True
    try:
        for usage in trace.deps(Path(path)):
            kind = _KIND.get(bytes(usage.block.code), usage.block.dna_type_name)
            entry = {"path": str(usage.abspath), "kind": kind, "block": _str(usage.block_name)[2:]}
            if usage.is_sequence:
                cacheable = False          # a sequence's files are matched by pattern: not cached
            deps.append(entry)
            if kind == "library":
                libraries.append([entry["path"], _stamp(entry["path"])])
            if not _exists(usage):
                report.missing.append(MissingAsset(entry["path"], kind, entry["block"]))
    except Exception as e:
        report.error = f"asset check failed: {type(e).__name__}: {e}"
        log.warning("%s: %s", path, report.error)
        cacheable = False
    try:
        report.simulations = _simulations(_open(path))
    except Exception as e:
        log.debug("simulation scan failed for %s: %s", path, e)
    return report, deps, libraries, cacheable
