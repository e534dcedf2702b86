"""Half-rendered frames: a render that stops part way (a GPU error after some tiles) saves a frame whose
missing tiles are empty (0 in every channel, alpha 0), exits 0, and looks done to a farm. Found by the
file's size against the job's other frames (costs nothing), then a decode of that frame and of the
nearest frame that is not small; judged as `partial` only where the empty part is new."""

from __future__ import annotations

import asyncio

import pytest

from healer.images.facts import FrameFacts
from healer.images.judge import judge_partial, may_be_partial, partial_reference
from healer.images.read import empty_cells, inspect_frame
from healer.supervising.suspects import judge_frames

np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")

W, H = 320, 180


def picture(seed: int, channels: int = 4) -> np.ndarray:
    """A render-like frame: a gradient with grain (nothing in it is empty)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W]
    base = 40 + 120 * x / W + 60 * y / H
    img = np.stack([base + rng.normal(0, 12, (H, W)) for _ in range(3)], axis=-1).clip(5, 250).astype(np.uint8)
    if channels == 4:
        img = np.concatenate([img, np.full((H, W, 1), 255, np.uint8)], axis=-1)
    return img


def save(path, img: np.ndarray, **kw) -> str:
    Image.fromarray(img).save(path, **kw)
    return str(path)


def unrendered(img: np.ndarray, x0: int, x1: int, y0: int, y1: int, dither: bool = False) -> np.ndarray:
    out = img.copy()
    out[y0:y1, x0:x1] = 0
    if dither:          # Blender's 8-bit dither leaves an empty RGB region 0s and 1s
        out[y0:y1, x0:x1, :3] = np.random.default_rng(9).integers(0, 2, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    return out


@pytest.mark.parametrize("channels,dither", [(4, False), (3, False), (3, True)])
def test_a_frame_with_a_tile_never_rendered_is_partial_with_where(tmp_path, channels, dither):
    ref = inspect_frame(save(tmp_path / "f_0001.png", picture(1, channels)))
    bad = inspect_frame(save(tmp_path / "f_0002.png", unrendered(picture(2, channels), 160, 320, 0, 90, dither)))
    assert bad.uniform is None and not bad.transparent          # not blank: the row scan cannot tell
    assert may_be_partial(bad, [ref]) and not may_be_partial(ref, [bad])
    found = judge_partial(empty_cells(bad.path), empty_cells(ref.path), 1)
    assert found is not None and found.reason == "partial"
    assert "25%" in found.detail and "x 160-319, y 0-89" in found.detail and "frame 1" in found.detail


def test_an_empty_part_the_other_frames_have_too_is_not_partial(tmp_path):
    """A border render, a letterbox, a transparent sky: the same emptiness in the job's frames is the scene."""
    a = empty_cells(save(tmp_path / "a.png", unrendered(picture(1), 0, 320, 0, 60)))
    b = empty_cells(save(tmp_path / "b.png", unrendered(picture(2), 0, 320, 0, 60)))
    assert a is not None and a.share() > 0.3
    assert judge_partial(b, a, 1) is None


def test_too_little_empty_is_not_partial_and_all_empty_is_left_to_blank(tmp_path):
    ref = empty_cells(save(tmp_path / "r.png", picture(1)))
    small = empty_cells(save(tmp_path / "s.png", unrendered(picture(2), 0, 40, 0, 90)))     # 6 % of the frame
    assert judge_partial(small, ref, 1) is None
    clear = empty_cells(save(tmp_path / "c.png", np.zeros((H, W, 4), np.uint8)))
    assert judge_partial(clear, ref, 1) is None
    assert judge_partial(None, ref, 1) is None
    other_size = empty_cells(save(tmp_path / "o.png", picture(3)[:90]))
    assert judge_partial(other_size, ref, 1) is None


def test_a_dark_picture_is_not_empty(tmp_path):
    """Night scenes: dark but not 0 (and not alpha 0) is a picture."""
    dark = (picture(1).astype(np.int16) // 40 + 4).astype(np.uint8)
    dark[..., 3] = 255
    cells = empty_cells(save(tmp_path / "d.png", dark))
    assert cells is not None and cells.share() == 0.0


def test_exr_float_and_multilayer_and_jpeg(tmp_path):
    OpenEXR = pytest.importorskip("OpenEXR")
    rng = np.random.default_rng(5)
    full = rng.random((H, W), dtype=np.float32) + 0.01
    part = full.copy()
    part[90:, :] = 0.0
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {c: full for c in "RGBA"}).write(str(tmp_path / "a.exr"))
    OpenEXR.File(header, {f"ViewLayer.Combined.{c}": part for c in "RGBA"}
                 | {"ViewLayer.Depth.Z": full}).write(str(tmp_path / "b.exr"))
    found = judge_partial(empty_cells(tmp_path / "b.exr"), empty_cells(tmp_path / "a.exr"), 7)
    assert found is not None and "50%" in found.detail and "y 90-179" in found.detail
    img = picture(1, 3)
    save(tmp_path / "a.jpg", img, quality=90)
    save(tmp_path / "b.jpg", unrendered(img, 0, 160, 0, 180), quality=90)
    found = judge_partial(empty_cells(tmp_path / "b.jpg"), empty_cells(tmp_path / "a.jpg"), 1)
    assert found is not None and "x 0-159" in found.detail


def test_unreadable_files_give_no_cells(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert empty_cells(tmp_path / "x.png") is None
    assert empty_cells(tmp_path / "missing.png") is None


def F(frame: int, size: int, **kw) -> FrameFacts:
    return FrameFacts(**{"path": f"f_{frame:04d}.png", "format": "PNG", "width": W, "height": H, "mode": "RGBA",
                         "file_size": size, **kw})


def test_the_size_step_and_the_reference_frame():
    facts = {1: F(1, 1000), 2: F(2, 1020), 3: F(3, 700), 4: F(4, 690), 5: F(5, 990)}
    assert may_be_partial(facts[3], [f for k, f in facts.items() if k != 3])
    assert not may_be_partial(facts[2], [f for k, f in facts.items() if k != 2])
    assert partial_reference(facts[3], facts, 3) == 2            # the nearest frame that is not small
    assert partial_reference(facts[4], facts, 4) == 5
    assert not may_be_partial(F(9, 100), [F(1, 1000, format="JPEG")])      # other formats are not compared
    assert not may_be_partial(F(9, 100, uniform=(0.0,)), [F(1, 1000)])     # blank says it already
    assert not may_be_partial(F(9, 100), [])


def test_judge_frames_decodes_only_the_small_frame_and_its_reference(tmp_path, monkeypatch):
    from healer.images import read
    from healer.supervising import suspects

    paths = [save(tmp_path / f"f_{i:04d}.png", picture(i)) for i in (1, 2, 3)]
    paths.append(save(tmp_path / "f_0004.png", unrendered(picture(4), 0, 320, 0, 90)))
    facts = {i + 1: inspect_frame(p) for i, p in enumerate(paths)}
    decoded: list[str] = []

    def counting(path):
        decoded.append(str(path))
        return read.empty_cells(path)

    monkeypatch.setattr(suspects, "empty_cells", counting)
    cells: dict = {}
    got = asyncio.run(judge_frames(facts, sorted(facts), None, {}, cells))
    assert [s.reason for s in got[4]] == ["partial"] and got[1] == got[2] == got[3] == []
    assert sorted(decoded) == sorted([paths[2], paths[3]])
    asyncio.run(judge_frames(facts, [4], None, {}, cells))         # judged again: the grids are kept
    assert len(decoded) == 2
