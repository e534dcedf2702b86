"""Frame content checks on 4K frames (healer.images), next to a full decode with Pillow.

Frames are 3840x2160: a render-like RGBA PNG (gradients and noise, written by Pillow at zlib level 6,
Blender's default 15 % compression being close), the same as a multilayer-free RGBA half-float EXR
(ZIP) and as a multilayer EXR with depth and normal passes (read chunk by chunk), and the case the check exists for: a dithered black PNG (values 0 and 1, as Blender writes a
black frame) and a black EXR. The goal is the normal frame: a few milliseconds; a blank frame is the
rare case and may cost a decode. The half-rendered check: a frame whose file is clearly smaller than
the job's others (the top half empty, dithered, alpha 0) is decoded with its reference frame; that is
the rare case, and its cost is the row's figure. The peer is what a naive check does for every frame: decode it
fully with Pillow (PNG) or OpenEXR (EXR) and take each channel's extrema.

Usage::

    python -m bench frames
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from healer.images.judge import judge_partial, may_be_partial
from healer.images.read import empty_cells, inspect_frame

W, H = 3840, 2160
RUNS = 5
GOAL_MS = 5.0


def _frames(d: Path) -> dict[str, Path]:
    import numpy as np
    import OpenEXR
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([x * 255 // W, y * 255 // H, (x + y) * 255 // (W + H)], -1)
    rgb = np.clip(rgb + rng.integers(-6, 7, (H, W, 3)), 0, 255).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full((H, W, 1), 255, np.uint8)], -1)
    out = {"render.png": d / "render.png", "black.png": d / "black.png", "render.exr": d / "render.exr",
           "black.exr": d / "black.exr"}
    Image.fromarray(rgba).save(out["render.png"], compress_level=6)
    black = np.zeros((H, W, 4), np.uint8)
    black[..., :3] = rng.integers(0, 2, (H, W, 3))
    black[..., 3] = 255
    Image.fromarray(black).save(out["black.png"], compress_level=6)
    half = rgba.copy()
    half[: H // 2] = 0
    half[: H // 2, :, :3] = rng.integers(0, 2, (H // 2, W, 3))
    out["half.png"] = d / "half.png"
    Image.fromarray(half).save(out["half.png"], compress_level=6)
    f = (rgba.astype(np.float32) / 255).astype(np.float16)
    hdr = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(hdr, {c: f[..., i] for i, c in enumerate("RGBA")}).write(str(out["render.exr"]))
    passes = {"ViewLayer.Depth.Z": rng.random((H, W), dtype=np.float32) * 10,
              **{f"ViewLayer.Normal.{c}": rng.random((H, W), dtype=np.float32) for c in "XYZ"}}
    out["multilayer.exr"] = d / "multilayer.exr"
    OpenEXR.File(hdr, {f"ViewLayer.Combined.{c}": f[..., i] for i, c in enumerate("RGBA")} | passes).write(
        str(out["multilayer.exr"]))
    z = np.zeros((H, W), np.float16)
    OpenEXR.File(hdr, {"R": z, "G": z, "B": z, "A": np.ones((H, W), np.float16)}).write(str(out["black.exr"]))
    return out


def _full_decode(path: Path) -> object:
    if path.suffix == ".exr":
        import OpenEXR

        with OpenEXR.File(str(path)) as f:
            return [(a.min(), a.max()) for a in f.channels().values() for a in [a.pixels]]
    from PIL import Image

    with Image.open(path) as im:
        return im.getextrema()


def _ms(fn, path: Path) -> float:
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        got = fn(path)
        assert getattr(got, "error", None) is None, got
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def run() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        frames = _frames(Path(tmp))
        half = frames.pop("half.png")
        for name, path in frames.items():
            facts = inspect_frame(path)
            blank = name.startswith("black")
            assert (facts.uniform is not None) == blank and facts.error is None, (name, facts)
            ours, peer = _ms(inspect_frame, path), _ms(_full_decode, path)
            rows.append({"name": f"frame check, 4K {name} ({path.stat().st_size >> 20} MB)"
                                 + (": blank, the rare case" if blank else ""),
                         "measured": round(ours, 2), "unit": "ms", "goal": None if blank else f"<= {GOAL_MS:g}",
                         "peer": "full decode + extrema (Pillow / OpenEXR)", "peer_measured": round(peer, 1),
                         "pass": None if blank else ours <= GOAL_MS})
        ref, bad = inspect_frame(frames["render.png"]), inspect_frame(half)
        assert may_be_partial(bad, [ref]) and not may_be_partial(ref, [bad])

        def partial(path: Path) -> object:
            found = judge_partial(empty_cells(path), empty_cells(frames["render.png"]), 1)
            assert found is not None and found.reason == "partial", found
            return found

        ours, peer = _ms(partial, half), _ms(_full_decode, half) + _ms(_full_decode, frames["render.png"])
        rows.append({"name": f"half-rendered check, 4K half-empty PNG ({half.stat().st_size >> 20} MB, "
                             f"{bad.file_size / ref.file_size:.0%} of its reference): the rare case, both decoded",
                     "measured": round(ours, 1), "unit": "ms", "goal": None,
                     "peer": "two full decodes + extrema (Pillow)", "peer_measured": round(peer, 1), "pass": None})
        t = time.perf_counter()
        for _ in range(1000):
            may_be_partial(ref, [bad, ref, ref])
        rows.append({"name": "half-rendered check, the size step every frame pays", "measured":
                     round((time.perf_counter() - t) * 1e3, 2), "unit": "us", "goal": "<= 100",
                     "peer": None, "peer_measured": None, "pass": (time.perf_counter() - t) * 1e3 <= 100})
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
