"""OpenEXR: the one header parser, the chunk offset table, a frame's facts and whether the file is complete.

`parse_header` reads one part's header (the attributes the healer uses: channels, data window,
compression, chunk count, tiles, type) for both readers: `check_complete` (the ledger's completeness
check: every header of a single- or multi-part file, then every chunk offset inside the file and the
last chunk whole) and `inspect` (the frame check, scanline single- and multi-layer): the header and
the chunk offset table parsed here: a chunk of one value compresses to almost nothing, so a file with
a big chunk is not one value and no pixel is read. Otherwise the Combined/RGBA channels' samples are
read out of each chunk here (NONE, RLE, ZIPS, ZIP: Blender's default is ZIP), stopping at the first
chunk where they vary, or, for the other codecs and tiled or multi-part files, OpenEXR reads them and
each must be one value. (Not the legacy `InputFile`, which reads a range of scanlines but crashed the
process when called repeatedly.)
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Sequence

from healer.images.facts import FrameFacts

MAGIC = b"\x76\x2f\x31\x01"
TILED, MULTIPART = 0x200, 0x1000      # version flags
# scanlines per chunk by compression id (NONE, RLE, ZIPS, ZIP, PIZ, PXR24, B44, B44A, DWAA, DWAB)
LINES_PER_CHUNK = {0: 1, 1: 1, 2: 1, 3: 16, 4: 32, 5: 16, 6: 32, 7: 32, 8: 32, 9: 256}
HEADER_CAP = 1 << 20        # bytes read for the headers (Blender's multilayer headers are a few KB)


def parse_header(data: bytes, pos: int) -> tuple[dict, int]:
    """One part's header from `pos` -> (attributes, the position after its terminating 0). Kept:
    `channels` {name: pixel type}, every box2i by name (`dataWindow`), `compression`, `chunkCount`,
    `tiled` (a `tiles` attribute), `type`. Raises ValueError on a header cut short or a negative size."""
    out: dict = {}
    while True:
        if pos >= len(data):
            raise ValueError("OpenEXR header cut short")
        end = data.index(b"\0", pos)
        name = data[pos:end].decode("latin-1")
        pos = end + 1
        if not name:
            return out, pos
        end = data.index(b"\0", pos)
        typ = data[pos:end].decode("latin-1")
        size = struct.unpack_from("<i", data, end + 1)[0]
        if size < 0:
            raise ValueError("OpenEXR header: negative attribute size")
        value = data[end + 5:end + 5 + size]
        if len(value) < size:
            raise ValueError("OpenEXR header cut short")
        pos = end + 5 + size
        if typ == "chlist":
            chans, i = {}, 0
            while i < len(value) and value[i] != 0:
                j = value.index(b"\0", i)
                chans[value[i:j].decode("utf-8", "replace")] = struct.unpack_from("<i", value, j + 1)[0]
                i = j + 1 + 16
            out[name] = chans
        elif typ == "box2i":
            out[name] = struct.unpack("<iiii", value[:16])
        elif name == "compression":
            out[name] = value[0]
        elif name == "chunkCount":
            out[name] = struct.unpack("<i", value)[0]
        elif name == "tiles":
            out["tiled"] = True
        elif name == "type":
            out[name] = value.rstrip(b"\0").decode("latin-1")


def chunk_count(header: dict) -> int | None:
    """The number of chunks of a part: its chunkCount, or from its data window and compression
    (scanline parts; None for a tiled part without chunkCount, one without a data window, or one whose
    compression is not in LINES_PER_CHUNK: a newer codec's chunk height is not guessed)."""
    if header.get("chunkCount"):
        return header["chunkCount"]
    lines = LINES_PER_CHUNK.get(header.get("compression", 0))
    if header.get("tiled") or "dataWindow" not in header or lines is None:
        return None
    _x0, y0, _x1, y1 = header["dataWindow"]
    return -(-(y1 - y0 + 1) // lines)


# -- complete? -----------------------------------------------------------------------------------------
def check_complete(f, head: bytes, size: int) -> str:
    """Walk the EXR header(s) to the offset table; every chunk offset must lie inside the file."""
    if not head.startswith(MAGIC):
        return "not an OpenEXR file (bad magic)"
    if len(head) < 8:
        return "truncated OpenEXR header"
    flags = struct.unpack("<I", head[4:8])[0]
    multipart = bool(flags & MULTIPART)
    f.seek(8)
    data = f.read(min(size - 8, HEADER_CAP))     # headers are small; cap the read
    pos, headers = 0, []
    try:
        while True:
            attrs, pos = parse_header(data, pos)
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
        count = chunk_count(attrs)
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


# -- a frame's facts -------------------------------------------------------------------------------------
def inspect(path: str, f) -> FrameFacts:
    """The facts of the OpenEXR file open as `f` (at its start)."""
    data = f.read(HEADER_CAP)
    version = struct.unpack_from("<I", data, 4)[0]
    header, end = parse_header(data, 8)   # of the first part (Blender writes one scanline part)
    chans = header.get("channels", {})
    x0, y0, x1, y1 = header.get("dataWindow", (0, 0, -1, -1))
    w, h = x1 - x0 + 1, y1 - y0 + 1
    combined = combined_channels(list(chans))
    mode = "RGBA" if "A" in combined else ("RGB" if {"R", "G", "B"} <= set(combined) else ("BW" if combined else ""))
    base = FrameFacts(path, "OPEN_EXR", w, h, mode)
    if not combined or w <= 0 or h <= 0:
        return base
    compression = header.get("compression", 0)
    if not version & (TILED | MULTIPART):     # scanline, single part: the chunk sizes tell a flat image first
        lines = LINES_PER_CHUNK.get(compression, 0)
        passes = len(combined) < len(chans)     # other passes beside the beauty (multilayer): chunks not flat
        if lines and not passes and not _exr_may_be_flat(f, end, w, h, lines,
                                                         sum(_EXR_BYTES.get(t, 4) for t in chans.values())):
            return base
        if compression in _EXR_OWN_CODECS:
            # the Combined channels' samples read out of each chunk here, stopping at the first chunk
            # where they vary (OpenEXR would decode every pass of every chunk first)
            own = _exr_combined_uniform(f, end, header, w, h, combined)
            if own is None:
                return base
            vals = tuple(own[c] for c in sorted(own, key="YRGBA".find))
            return FrameFacts(path, "OPEN_EXR", w, h, mode, vals, own.get("A", 1.0) == 0.0)
    uniform = _exr_uniform(path, combined)
    if uniform is None:
        return base
    vals = tuple(uniform[c] for c in sorted(uniform, key="YRGBA".find))
    return FrameFacts(path, "OPEN_EXR", w, h, mode, vals, uniform.get("A", 1.0) == 0.0)


# bytes per pixel by pixel type
_EXR_BYTES = {0: 4, 1: 2, 2: 4}
EXR_FLAT_RATIO = 0.05       # a chunk of one value compresses far below this share of its raw size


def _exr_may_be_flat(f, table_at: int, w: int, h: int, lines: int, pixel_bytes: int) -> bool:
    """False when some chunk is too big to hold one value: its compressed size, from the offset table
    (no pixel read), is over EXR_FLAT_RATIO of its raw size. Uncompressed files always may be."""
    n = -(-h // lines)
    f.seek(table_at)
    table = f.read(8 * n)
    if len(table) < 8 * n:
        raise ValueError("OpenEXR offset table cut short")
    offsets = sorted(struct.unpack(f"<{n}Q", table))
    f.seek(0, 2)
    ends = [*offsets[1:], f.tell()]
    biggest = max(e - o for o, e in zip(offsets, ends, strict=True))
    return biggest <= max(4096, EXR_FLAT_RATIO * lines * w * pixel_bytes)


_EXR_OWN_CODECS = (0, 1, 2, 3)     # NONE, RLE, ZIPS, ZIP: decoded here (Blender's default is ZIP)
_EXR_STRUCT = {0: "I", 1: "e", 2: "f"}


def _exr_combined_uniform(f, table_at: int, header: dict, w: int, h: int,
                          combined: dict[str, str]) -> dict[str, float] | None:
    """The one value of each Combined channel, read chunk by chunk (only those channels' bytes are
    compared); None at the first chunk where one of them varies. A scanline chunk holds, for each of
    its lines, each channel (in the header's sorted order) as `w` samples."""
    compression = header.get("compression", 0)
    chans: dict[str, int] = header["channels"]
    lines = LINES_PER_CHUNK[compression]
    n = -(-h // lines)
    f.seek(table_at)
    offsets = struct.unpack(f"<{n}Q", f.read(8 * n))
    sizes = {name: _EXR_BYTES.get(t, 4) for name, t in chans.items()}
    wanted = {name: letter for letter, name in combined.items()}
    first: dict[str, bytes] = {}
    order = sorted(chans)
    starts = list(itertools.accumulate((w * sizes[n] for n in order), initial=0))
    span = (min(starts[order.index(n)] for n in wanted), max(starts[order.index(n) + 1] for n in wanted))
    last = b""
    for i, off in enumerate(offsets):
        f.seek(off)
        _y, packed = struct.unpack("<ii", f.read(8))
        data = f.read(packed)
        count = min(lines, h - i * lines)
        raw_size = count * w * sum(sizes.values())
        if i == 0 and compression in (2, 3) and packed < raw_size:
            # the common case, a picture: its first line's beauty varies, told from that line's bytes alone
            line0 = _exr_zip_range(data, raw_size, *span)
            if any(line0[starts[order.index(n)] - span[0]:starts[order.index(n) + 1] - span[0]]
                   != line0[starts[order.index(n)] - span[0]:][:sizes[n]] * w for n in wanted):
                return None
        if data == last:        # a chunk packed to the same bytes as the one before holds the same samples
            continue
        last = data
        raw = data if packed == raw_size or compression == 0 else _exr_unpack(data, compression, raw_size)
        if len(raw) != raw_size:
            raise ValueError(f"OpenEXR chunk {i} holds {len(raw)} bytes, not {raw_size}")
        pos = 0
        for _line in range(count):
            for name in order:
                step = w * sizes[name]
                if name in wanted:
                    seg = raw[pos:pos + step]
                    sample = first.setdefault(name, seg[:sizes[name]])
                    if seg != sample * w:
                        return None
                pos += step
    out: dict[str, float] = {}
    for name, sample in first.items():
        v = float(struct.unpack("<" + _EXR_STRUCT.get(chans[name], "f"), sample)[0])
        if math.isnan(v):
            return None
        out[wanted[name]] = v
    return out


def _exr_zip_range(data: bytes, raw_size: int, lo: int, hi: int) -> bytes:
    """Bytes lo..hi of a ZIP chunk's unpacked data, inflating no further than they need and undoing the
    predictor over that range only (a running sum: byte k is the first byte plus the sum of the next
    k differences)."""
    import numpy as np

    half = (raw_size + 1) // 2
    ev = ((lo + 1) // 2, (hi + 1) // 2)               # even output bytes come from t[k], odd from t[half + k]
    od = (half + lo // 2, half + hi // 2)
    t = zlib.decompressobj().decompress(data, od[1])
    d = np.frombuffer(t, np.uint8)

    def pred(k0: int, k1: int) -> np.ndarray:
        if k1 <= k0:
            return np.empty(0, np.uint8)
        base = (int(d[0]) + int(d[1:k0].sum(dtype=np.uint64)) - 128 * max(0, k0 - 1)) & 0xFF if k0 else 0
        step = d[k0:k1] - np.uint8(128)
        if k0 == 0:
            step[0] = d[0]
        out = np.cumsum(step, dtype=np.uint8)
        return out + np.uint8(base) if k0 else out

    res = np.empty(hi - lo, np.uint8)
    res[(lo & 1)::2] = pred(*ev)[: len(res[(lo & 1)::2])]
    res[1 - (lo & 1)::2] = pred(*od)[: len(res[1 - (lo & 1)::2])]
    return res.tobytes()


def _exr_unpack(data: bytes, compression: int, raw_size: int) -> bytes:
    """OpenEXR's ZIP/ZIPS (zlib) and RLE chunks: decompress, then undo the byte predictor and the
    split of even and odd bytes that both apply before compressing."""
    if compression in (2, 3):
        t = zlib.decompress(data)
    else:
        out = bytearray()
        i = 0
        while i < len(data):
            c = data[i] if data[i] < 128 else data[i] - 256
            if c < 0:
                out += data[i + 1:i + 1 - c]
                i += 1 - c
            else:
                out += data[i + 1:i + 2] * (c + 1)
                i += 2
        t = bytes(out)
    import numpy as np

    d = np.frombuffer(t, np.uint8) - np.uint8(128)        # wraps, as the predictor's byte arithmetic does
    d[0] = t[0]
    p = np.cumsum(d, dtype=np.uint8)
    half = (len(p) + 1) // 2
    res = np.empty(len(p), np.uint8)
    res[0::2], res[1::2] = p[:half], p[half:]
    return res.tobytes()


def combined_channels(names: Sequence[str]) -> dict[str, str]:
    """Letter -> channel name of the beauty image: R/G/B/A, or a multilayer file's `<layer>.Combined.R`."""
    plain = {n: n for n in names if n in ("R", "G", "B", "A", "Y")}
    if plain:
        return plain
    out: dict[str, str] = {}
    for n in sorted(names):
        parts = n.split(".")
        if len(parts) >= 2 and parts[-2] == "Combined" and parts[-1] in ("R", "G", "B", "A") and parts[-1] not in out:
            out[parts[-1]] = n
    return out


def _exr_uniform(path: str, combined: dict[str, str]) -> dict[str, float] | None:
    """The one value of each Combined channel, or None (OpenEXR reads the whole file: only a file
    whose chunks may be flat, or that is uncompressed or tiled, gets here)."""
    import OpenEXR

    out: dict[str, float] = {}
    with OpenEXR.File(path, separate_channels=True) as f:
        chans = f.channels()
        for letter, name in combined.items():
            px = chans[name].pixels
            lo, hi = float(px.min()), float(px.max())
            if lo != hi or math.isnan(lo):
                return None
            out[letter] = lo
    return out
