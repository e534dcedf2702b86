"""Frame content checks: PNG rows compared still filtered (every PNG filter type), OpenEXR single- and
multilayer, JPEG through Pillow's draft, bad files, and the judgement against the scene and the job."""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from healer.images.facts import FrameFacts
from healer.images.judge import Expected, judge_frame
from healer.images.read import inspect_frame


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _filter(row: bytes, prior: bytes, bpp: int, ftype: int) -> bytes:
    out = bytearray()
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prior[i]
        c = prior[i - bpp] if i >= bpp else 0
        pred = (0, a, b, (a + b) // 2, _paeth(a, b, c))[ftype]
        out.append((x - pred) & 0xFF)
    return bytes(out)


def write_png(path, rows: list[bytes], width: int, color: int = 6, depth: int = 8, filters=(0,)) -> None:
    """A PNG whose rows use the given filter types in turn (what encoders such as libpng choose per row)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    bpp = channels * depth // 8
    prior = bytes(len(rows[0]))
    raw = bytearray()
    for i, row in enumerate(rows):
        ft = filters[i % len(filters)]
        raw.append(ft)
        raw += _filter(row, prior, bpp, ft)
        prior = row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compress(bytes(raw))
    idat = b"".join(chunk(b"IDAT", z[i:i + 97]) for i in range(0, len(z), 97))   # several IDAT chunks
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, len(rows), depth, color, 0, 0, 0))
                     + idat + chunk(b"IEND", b""))


PIXELS = [  # (colour type, depth, one pixel)
    (6, 8, bytes([200, 30, 7, 255])), (2, 8, bytes([0, 0, 0])), (0, 8, bytes([77])),
    (6, 16, bytes([0x12, 0x34, 0xFF, 0x00, 0x00, 0x01, 0xFF, 0xFF])), (4, 8, bytes([9, 128])),
]


@pytest.mark.parametrize("filters", [(0,), (1,), (2,), (3,), (4,), (1, 2, 3, 4, 0), (4, 3)])
@pytest.mark.parametrize("color,depth,pixel", PIXELS)
def test_a_one_value_png_is_found_blank_whatever_filters_the_encoder_chose(tmp_path, filters, color, depth, pixel):
    w, h = 7, 6
    write_png(tmp_path / "f.png", [pixel * w] * h, w, color, depth, filters)
    facts = inspect_frame(str(tmp_path / "f.png"))
    assert facts.error is None and (facts.width, facts.height) == (w, h)
    assert facts.uniform is not None
    step = depth // 8
    want = tuple(int.from_bytes(pixel[i:i + step], "big") / ((1 << depth) - 1) for i in range(0, len(pixel), step))
    assert facts.uniform == want


@pytest.mark.parametrize("filters", [(0,), (1,), (2,), (3,), (4,), (1, 2, 3, 4, 0)])
@pytest.mark.parametrize("where", ["last pixel", "first pixel of a middle row", "one channel of row 0"])
@pytest.mark.parametrize("color,depth,pixel", PIXELS[:4])
def test_one_pixel_off_is_not_blank(tmp_path, filters, where, color, depth, pixel):
    w, h = 7, 6
    rows = [bytearray(pixel * w) for _ in range(h)]
    r, i = {"last pixel": (h - 1, w * len(pixel) - 1), "first pixel of a middle row": (3, 0),
            "one channel of row 0": (0, len(pixel) + 1 if len(pixel) > 1 else len(pixel))}[where]
    rows[r][i] ^= 0x40
    write_png(tmp_path / "f.png", [bytes(x) for x in rows], w, color, depth, filters)
    assert inspect_frame(str(tmp_path / "f.png")).uniform is None


@pytest.mark.parametrize("filters", [(0,), (1,), (2,), (3,), (4,), (1, 2, 3, 4, 0)])
def test_blenders_dithered_black_is_blank_and_a_faint_picture_is_not(tmp_path, filters):
    """Blender dithers 8-bit output: a black frame is 0s and 1s (seen from real 3.4 renders)."""
    rnd = random.Random(5)
    w, h = 16, 12
    dithered = [bytes(v for _ in range(w) for v in (rnd.randint(0, 1),) * 3 + (255,)) for _ in range(h)]
    faint = [bytes(v for x in range(w) for v in ((8 if 4 <= x < 9 and 3 <= y < 7 else 0),) * 3 + (255,))
             for y in range(h)]
    write_png(tmp_path / "d.png", dithered, w, 6, 8, filters)
    write_png(tmp_path / "f.png", faint, w, 6, 8, filters)
    d = inspect_frame(str(tmp_path / "d.png"))
    assert d.uniform is not None and max(d.uniform[:3]) < 0.01 and d.uniform[3] == 1.0
    assert inspect_frame(str(tmp_path / "f.png")).uniform is None


def test_a_fully_transparent_png_is_transparent_and_an_opaque_one_is_not(tmp_path):
    write_png(tmp_path / "clear.png", [bytes(4) * 5] * 4, 5, 6, 8, (1, 2))
    write_png(tmp_path / "black.png", [bytes([0, 0, 0, 255]) * 5] * 4, 5, 6, 8, (1, 2))
    clear, black = inspect_frame(str(tmp_path / "clear.png")), inspect_frame(str(tmp_path / "black.png"))
    assert clear.transparent and clear.mode == "RGBA"
    assert not black.transparent and black.uniform == (0.0, 0.0, 0.0, 1.0)


def test_pillows_own_encoder_flat_and_noisy(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rnd = random.Random(1)
    noisy = Image.frombytes("RGB", (64, 48), bytes(rnd.randrange(256) for _ in range(64 * 48 * 3)))
    noisy.save(tmp_path / "n.png", optimize=True)
    Image.new("RGB", (64, 48), (10, 20, 30)).save(tmp_path / "flat.png", optimize=True)
    assert inspect_frame(str(tmp_path / "n.png")).uniform is None
    flat = inspect_frame(str(tmp_path / "flat.png"))
    assert flat.mode == "RGB" and flat.uniform == pytest.approx((10 / 255, 20 / 255, 30 / 255))


def test_jpeg_flat_within_rounding_and_noisy(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rnd = random.Random(2)
    Image.new("RGB", (640, 360), (0, 0, 0)).save(tmp_path / "black.jpg", quality=90)
    Image.frombytes("RGB", (640, 360), bytes(rnd.randrange(256) for _ in range(640 * 360 * 3))).save(
        tmp_path / "noisy.jpg", quality=90)
    black = inspect_frame(str(tmp_path / "black.jpg"))
    assert (black.format, black.width, black.height, black.mode) == ("JPEG", 640, 360, "RGB")
    assert black.uniform is not None and max(black.uniform) < 0.02
    assert inspect_frame(str(tmp_path / "noisy.jpg")).uniform is None


def _exr(path, chans: dict, compression="ZIP_COMPRESSION"):
    OpenEXR = pytest.importorskip("OpenEXR")
    OpenEXR.File({"compression": getattr(OpenEXR, compression), "type": OpenEXR.scanlineimage}, chans).write(str(path))


def _first_attribute_size_at(data: bytes) -> tuple[int, int]:
    """(where the first header attribute's size field is, how many bytes back its name starts)."""
    name_end = data.index(b"\0", 8)
    type_end = data.index(b"\0", name_end + 1)
    return type_end + 1, type_end + 5 - 8


@pytest.mark.parametrize("corrupt", ["back_to_itself", "negative", "past_the_end"])
def test_exr_header_corrupt_size_is_refused_by_both_readers_at_once(tmp_path, corrupt):
    """One OpenEXR header parser for the frame check and the completeness check: an attribute size that
    is negative (one pointing back at its own name looped the frame check forever, in the healer's
    worker thread or, for a kept frame, synchronously at the job's start) or past the end is a corrupt
    header to both, found without waiting."""
    import threading

    from healer.images.verify import verify_image

    np = pytest.importorskip("numpy")
    path = tmp_path / "f.exr"
    _exr(path, {c: np.full((8, 8), 0.5, np.float32) for c in "RGBA"})
    data = bytearray(path.read_bytes())
    at, back = _first_attribute_size_at(bytes(data))
    size = {"back_to_itself": -back, "negative": -1, "past_the_end": 1 << 30}[corrupt]
    data[at:at + 4] = struct.pack("<i", size)
    path.write_bytes(bytes(data))
    got: dict = {}
    t = threading.Thread(target=lambda: got.update(facts=inspect_frame(path), verdict=verify_image(path)),
                         daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "reading the header never ends"
    assert got["facts"].error and "OpenEXR header" in got["facts"].error, got["facts"]
    assert not got["verdict"].ok and got["verdict"].partial and got["verdict"].reason == "truncated OpenEXR header"


@pytest.mark.parametrize("compression", ["ZIP_COMPRESSION", "PIZ_COMPRESSION", "NO_COMPRESSION", "DWAA_COMPRESSION"])
def test_exr_single_layer_black_noisy_and_transparent(tmp_path, compression):
    np = pytest.importorskip("numpy")
    h, w = 90, 160
    ones, zeros = np.ones((h, w), np.float32), np.zeros((h, w), np.float32)
    noise = np.random.default_rng(3).random((h, w), dtype=np.float32)
    _exr(tmp_path / "black.exr", {"R": zeros, "G": zeros, "B": zeros, "A": ones}, compression)
    _exr(tmp_path / "clear.exr", {"R": zeros, "G": zeros, "B": zeros, "A": zeros}, compression)
    late = zeros.copy()
    late[-1, -1] = 0.5                      # a frame black but for its last pixel is not blank
    _exr(tmp_path / "late.exr", {"R": late, "G": zeros, "B": zeros, "A": ones}, compression)
    _exr(tmp_path / "noisy.exr", {"R": noise, "G": noise, "B": noise, "A": ones}, compression)
    black = inspect_frame(str(tmp_path / "black.exr"))
    assert (black.format, black.width, black.height, black.mode) == ("OPEN_EXR", w, h, "RGBA")
    assert black.uniform == (0.0, 0.0, 0.0, 1.0) and not black.transparent
    assert inspect_frame(tmp_path / "clear.exr").transparent          # a Path too (OpenEXR takes only str)
    assert inspect_frame(str(tmp_path / "late.exr")).uniform is None
    assert inspect_frame(str(tmp_path / "noisy.exr")).uniform is None


def test_exr_multilayer_a_black_render_with_its_passes_is_blank(tmp_path):
    np = pytest.importorskip("numpy")
    h, w = 40, 64
    flat = np.full((h, w), 0.25, np.float32)
    chans = {f"ViewLayer.Combined.{c}": flat for c in "RGBA"}
    chans |= {"ViewLayer.Depth.Z": np.full((h, w), 1e10, np.float32), "ViewLayer.Normal.X": flat * 0}
    _exr(tmp_path / "ml.exr", chans)
    facts = inspect_frame(str(tmp_path / "ml.exr"))
    assert facts.mode == "RGBA" and facts.uniform == (0.25, 0.25, 0.25, 0.25)


def test_exr_big_chunks_are_not_one_value_without_reading_a_pixel(tmp_path, monkeypatch):
    """The offset table decides: a file with a chunk too big for one value is not decoded at all.
    (A multilayer file with other passes is read chunk by chunk instead: the test below.)"""
    np = pytest.importorskip("numpy")
    from healer.images import exr

    h, w = 64, 256
    noise = np.random.default_rng(4).random((h, w), dtype=np.float32)
    _exr(tmp_path / "n.exr", {c: noise for c in "RGBA"})
    monkeypatch.setattr(exr, "_exr_uniform", lambda *a: pytest.fail("pixels read"))
    assert inspect_frame(str(tmp_path / "n.exr")).uniform is None


@pytest.mark.parametrize("cut", [20, 40, -20])
def test_a_damaged_png_is_an_error_not_an_exception(tmp_path, cut):
    write_png(tmp_path / "f.png", [bytes([1, 2, 3, 255]) * 9] * 9, 9)
    data = (tmp_path / "f.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:cut])
    facts = inspect_frame(str(tmp_path / "cut.png"))      # never raises
    if cut > 0:                           # cut in the header, or in the image data
        assert facts.error and facts.uniform is None
        assert cut == 20 or "ends after" in facts.error


def test_garbage_and_missing_files_are_errors(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\xff" * 50)
    (tmp_path / "y.bin").write_bytes(b"not an image at all")
    for p in ("x.png", "y.bin", "absent.png"):
        facts = inspect_frame(str(tmp_path / p))
        assert facts.error and facts.uniform is None
        assert judge_frame(facts, Expected(1, 1, "RGB"), others=[FrameFacts("o", "PNG", 1, 1, "RGB")]) == []


# ------------------------------------------------------------------------------ judgement
def F(**kw) -> FrameFacts:
    return FrameFacts(**{"path": "f.png", "format": "PNG", "width": 1920, "height": 1080, "mode": "RGBA", **kw})


def test_blank_is_suspect_only_where_the_job_has_frames_that_are_not():
    black = F(uniform=(0.0, 0.0, 0.0, 1.0))
    assert judge_frame(black, None, others=[F(), F()])[0].reason == "blank"
    assert judge_frame(black, None, others=[black, black]) == []        # a fade to black
    assert judge_frame(black, None, others=[]) == []
    clear = F(uniform=(0.0, 0.0, 0.0, 0.0), transparent=True)
    assert [s.reason for s in judge_frame(clear, None, others=[F()])] == ["transparent"]


def test_resolution_and_channels_against_the_scene():
    small = F(width=960, height=540, mode="RGB")
    got = judge_frame(small, Expected(1920, 1080, "RGBA", "PNG"))
    assert [s.reason for s in got] == ["resolution", "channels"]
    assert "960x540" in got[0].detail and "1920x1080" in got[0].detail
    assert judge_frame(F(), Expected(1920, 1080, "RGBA", "PNG")) == []
    # a multilayer EXR holds passes: its channels are not the colour mode's
    assert judge_frame(F(format="OPEN_EXR", mode="RGB"), Expected(1920, 1080, "RGBA", "OPEN_EXR_MULTILAYER")) == []
    assert judge_frame(F(), Expected(None, None, None)) == []


def test_too_fast_is_relative_to_the_jobs_own_median():
    assert judge_frame(F(), None, seconds=2.0, other_seconds=[30.0, 31.0, 29.0])[0].reason == "too_fast"
    assert judge_frame(F(), None, seconds=4.0, other_seconds=[30.0, 31.0, 29.0]) == []     # 13 %, not 10 %
    assert judge_frame(F(), None, seconds=2.0, other_seconds=[30.0, 31.0]) == []           # too few frames
    assert judge_frame(F(), None, seconds=0.01, other_seconds=[0.5, 0.4, 0.6]) == []       # frames too short to tell


@pytest.mark.parametrize("compression", ["ZIP_COMPRESSION", "ZIPS_COMPRESSION", "RLE_COMPRESSION", "NO_COMPRESSION"])
@pytest.mark.parametrize("pixel", ["half", "float"])
def test_exr_multilayer_with_passes_that_vary_is_judged_on_its_combined_only(tmp_path, monkeypatch, compression,
                                                                              pixel):
    """A black beauty beside a depth and a normal pass that are not flat (every real multilayer render)
    is blank; a picture is not, decided at its first chunk without OpenEXR reading the file."""
    np = pytest.importorskip("numpy")
    from healer.images import exr

    monkeypatch.setattr(exr, "_exr_uniform", lambda *a: pytest.fail("the whole file was read"))
    h, w = 70, 96
    dt = np.float16 if pixel == "half" else np.float32
    rng = np.random.default_rng(6)
    passes = {"ViewLayer.Depth.Z": rng.random((h, w), dtype=np.float32) * 10,
              "ViewLayer.Normal.X": rng.random((h, w), dtype=np.float32).astype(dt)}
    black = {f"ViewLayer.Combined.{c}": np.full((h, w), 1.0 if c == "A" else 0.0, dt) for c in "RGBA"}
    _exr(tmp_path / "black.exr", black | passes, compression)
    facts = inspect_frame(tmp_path / "black.exr")
    assert facts.uniform == (0.0, 0.0, 0.0, 1.0) and facts.mode == "RGBA", facts
    late = {k: v.copy() for k, v in black.items()}
    late["ViewLayer.Combined.G"][-1, -1] = 0.25              # black but for its last pixel: not blank
    _exr(tmp_path / "late.exr", late | passes, compression)
    assert inspect_frame(tmp_path / "late.exr").uniform is None
    clear = {f"ViewLayer.Combined.{c}": np.zeros((h, w), dt) for c in "RGBA"}
    _exr(tmp_path / "clear.exr", clear | passes, compression)
    assert inspect_frame(tmp_path / "clear.exr").transparent
    pic = {f"ViewLayer.Combined.{c}": rng.random((h, w), dtype=np.float32).astype(dt) for c in "RGBA"}
    _exr(tmp_path / "pic.exr", pic | passes, compression)
    assert inspect_frame(tmp_path / "pic.exr").uniform is None


def test_exr_zip_unpacking_whole_and_any_range_matches_the_bytes_packed():
    """OpenEXR's ZIP packing (even/odd split, byte predictor, zlib) undone whole, and for any range alone
    (the first line's beauty of a picture is read without undoing the rest of its chunk)."""
    np = pytest.importorskip("numpy")
    from healer.images.exr import _exr_unpack, _exr_zip_range

    rng = np.random.default_rng(1)
    for n in (1, 2, 11, 1000, 1001):
        raw = rng.integers(0, 256, n, dtype=np.uint8)
        t = np.concatenate([raw[0::2], raw[1::2]])
        d = t.copy()
        d[1:] = (t[1:].astype(int) - t[:-1].astype(int) + 128) & 0xFF
        data = zlib.compress(d.tobytes())
        assert _exr_unpack(data, 3, n) == raw.tobytes()
        for lo, hi in [(0, n), (0, min(n, 5)), (n // 3, n - n // 4), (n // 2, n // 2), (n - 1, n)]:
            assert _exr_zip_range(data, n, lo, hi) == raw.tobytes()[lo:hi], (n, lo, hi)
