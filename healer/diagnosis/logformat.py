"""Parse one line of Blender's output, in both log formats, into a small typed record.

Blender ≤ 4.x prints bare lines (`Fra:12 Mem:1402.77M (Peak 1530.02M) | Time:00:09.81 | ... |
Sample 32/512`); Blender ≥ 5.0 prefixes most lines with a clock and a module column
(`00:00.327  render           | Saved: '/path/f_0001.png'`) and still prints some bare lines
(Python tracebacks, `Error: ...`). `parse_line` strips the 5.0 prefix and reads either.

Usage::

    rec = parse_line("Fra:12 Mem:1402.77M (Peak 1530.02M) | Time:00:09.81 | Scene, ViewLayer | Sample 32/512")
    rec.kind, rec.frame, rec.sample, rec.samples_total, rec.phase   # "progress", 12, 32, 512, "sampling"

It is on the supervisor's hot path (every stdout line feeds the progress and stall probes and the
frame ledger), so it does one anchored regex match per line and never raises: callers decode
with errors="replace", and CRLF endings and giant lines are fine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

# Lines longer than this are cut before matching: Blender's own lines are < 1 KiB, and a binary
# blob without newlines must not make the probes quadratic or hold megabytes per record.
MAX_LINE = 16384

# Record kinds.
PROGRESS = "progress"          # a render status line (Fra:...)
SAVED = "saved"                # Saved: '<path>' (a frame was written)
FRAME_TIME = "frame_time"      # Time: <t> (Saving: <t>) after Saved
SKIPPED = "skipped"            # Skipping existing frame "<path>" (counts as completed)
READ_BLEND = "read_blend"      # Read blend: <path> / Info: Read library: <path>
QUIT = "quit"                  # Blender quit (normal end)
WRITING_CRASH = "writing_crash"  # Writing: <path>.crash.txt (the SIGSEGV handler)
OTHER = "other"

# Phases, in render order.
PHASES = ("sync", "kernels", "bvh", "sampling", "denoise", "compositing", "save")


@dataclass(slots=True)
class LogLine:
    """One parsed line. Fields that the line does not carry are None."""

    kind: str
    text: str                          # the message, 5.0 prefix and line ending removed
    module: str | None = None          # 5.0 module column ("render", "blend", "image", ...)
    clock_s: float | None = None       # 5.0 clock column (seconds since start)
    level: str | None = None           # 5.0 level word (ERROR, WARNING, INFO) when present
    frame: int | None = None
    sample: int | None = None
    samples_total: int | None = None
    tile: int | None = None
    tiles_total: int | None = None
    mem_mb: float | None = None        # host memory (≤ 4.x `Mem:X (Peak Y)`)
    peak_mb: float | None = None
    render_mem_mb: float | None = None  # render/device memory (`Mem:X, Peak:Y`; 5.0's only `Mem: X`)
    render_peak_mb: float | None = None
    elapsed_s: float | None = None     # Time: in a progress line
    remaining_s: float | None = None   # Remaining: in a progress line
    status: str | None = None          # the status text of a progress line ("Sample 1/16")
    phase: str | None = None           # one of PHASES, from the status text
    path: str | None = None            # saved / skipped / read / crash-file path
    frame_s: float | None = None       # per-frame time (Time: line after Saved)
    save_s: float | None = None        # of which saving


# Blender ≥ 5.0 (intern/clog): `MM:SS.mmm  ` (`HH:MM:SS.mmm  ` after an hour), with
# --log-show-memory a `123M   ` column, the log type padded to 16, `| `, a level word below INFO
# (FATAL, ERROR, WARNING; INFO and finer print none), the message. A message of several lines (and
# the --log-show-source line) goes on in lines indented to the message with `| ` just before it.
# On a terminal the level and source are coloured with ANSI escapes.
_PREFIX = re.compile(r"((?:\d+:)?\d+:\d\d\.\d+) +(?:\d+M +)?([\w.]+) *\| ?")
_LEVEL = re.compile(r"(FATAL|ERROR|WARNING|WARN|INFO|DEBUG|TRACE) ")
_CONTINUATION = re.compile(r" {8,}\| ")
_ANSI = re.compile(r"\x1b\[[\d;]*m")

_MB = r"(\d+(?:\.\d+)?[KMG]?)"  # float(): no digit limit (a huge value is inf)
# Digit runs that go to int() are capped: int() refuses > 4300 digits, and a frame needs 9.
_PROGRESS = re.compile(
    r"Fra: ?(-?\d{1,9})(?!\d)"
    r"(?: Mem: ?" + _MB + r" \((?:" + _MB + r", )?Peak ?" + _MB + r"\))?"     # ≤ 4.x host memory (older: 3 values)
    r"(?: ?\| ?Time: ?([\d:.]+))?"
    r"(?: ?\| ?Remaining: ?([\d:.]+))?"
    r"(?: ?\| ?Mem: ?" + _MB + r"(?:, ?Peak: ?" + _MB + r")?)?"                # render memory
    r"(?: ?\| ?(.*))?"
)
_SAMPLES = re.compile(r"(?:Sample|Path Tracing Sample|Rendering) (\d{1,9}) ?/ ?(\d{1,9})(?!\d)")
_TILES = re.compile(r"(?:Rendered|Path Tracing Tile) (\d{1,9})/(\d{1,9})(?!\d)")
_FRAME_TIME = re.compile(r"\s*Time: ?([\d:.]+) \(Saving: ?([\d:.]+)\)")
_QUOTED = re.compile(r"""['"](.*)['"]\s*$""")
_SKIP = re.compile(r"""[Ss]kipping existing frame ["'](.*?)["']""")

# Status keywords -> phase, first match wins (BVH before the generic "Updating", kernels before "Loading").
_PHASE_RULES = (
    ("Denois", "denoise"),
    ("Compositing", "compositing"),
    ("BVH", "bvh"),
    ("kernels", "kernels"),
    ("Sample", "sampling"), ("Rendered", "sampling"), ("Path Tracing", "sampling"), ("Rendering", "sampling"),
    ("Finished", "save"), ("Saving", "save"),
    ("Synchroniz", "sync"), ("Initializing", "sync"), ("Waiting for render", "sync"), ("Updating", "sync"),
    ("Loading", "sync"), ("Building", "sync"), ("Reading", "sync"), ("Preparing", "sync"),
)


def split_prefix(line: str) -> tuple[str, str | None, float | None, str | None]:
    """(message, module, clock_s, level) for a 5.0 line; (line, None, None, None) for a bare line.

    A 5.0 continuation line (the second and later lines of one message) gives its text with the
    indentation it had inside the message (a traceback's `  File ...`), and no module."""
    if "\x1b[" in line:
        line = _ANSI.sub("", line)
    c = line[:1]
    if c == " ":
        m = _CONTINUATION.match(line)
        return (line[m.end():] if m else line), None, None, None
    if c.isdigit():
        m = _PREFIX.match(line)
        if m:
            msg = line[m.end():]
            level = None
            if msg[:1].isupper():
                lm = _LEVEL.match(msg)
                if lm:
                    level, msg = lm.group(1), msg[lm.end():]
            return msg, m.group(2), parse_clock(m.group(1)), level
    return line, None, None, None


def parse_line(line: str) -> LogLine:
    """Parse one line (with or without its line ending) of either format. Never raises."""
    if len(line) > MAX_LINE:
        line = line[:MAX_LINE]
    line = line.rstrip("\r\n")
    msg, module, clock, level = split_prefix(line)
    rec = _parse_message(msg)
    if module is not None:
        rec.module, rec.clock_s, rec.level = module, clock, level
    return rec


def _parse_message(msg: str) -> LogLine:
    c = msg[:1]
    if c == "F" and msg.startswith("Fra:"):
        return parse_progress(msg)
    if c == "S":
        if msg.startswith("Saved: "):
            path = msg[7:]
            m = _QUOTED.match(path)
            return LogLine(SAVED, msg, path=m.group(1) if m else path.strip())
        if msg.startswith("Skipping existing frame"):
            return _skipped(msg)
    elif c == " " or c == "T":
        m = _FRAME_TIME.match(msg)
        if m:
            return LogLine(FRAME_TIME, msg, frame_s=parse_clock(m.group(1)), save_s=parse_clock(m.group(2)))
    elif c == "s" and msg.startswith("skipping existing frame"):   # ≤ 4.x spells it in lower case
        return _skipped(msg)
    elif c == "R" and msg.startswith("Read blend: "):
        return LogLine(READ_BLEND, msg, path=_unquote(msg[12:]))
    elif c == "I" and msg.startswith("Info: Read library: "):
        return LogLine(READ_BLEND, msg, path=_unquote(msg[20:].split(",", 1)[0]))
    elif c == "B" and msg.startswith("Blender quit"):
        return LogLine(QUIT, msg)
    elif c == "W":
        crash = find_crash_file_path(msg)
        if crash:
            return LogLine(WRITING_CRASH, msg, path=crash)
    return LogLine(OTHER, msg)


def _skipped(msg: str) -> LogLine:
    m = _SKIP.match(msg)
    return LogLine(SKIPPED, msg, path=m.group(1) if m else None)


def parse_progress(msg: str) -> LogLine:
    """A `Fra:` status line, ≤ 4.x (`Fra:1 Mem:... | Time:... | ... | Sample 1/16`) or 5.0 (`Fra: 1 | Mem: 2M | ...`)."""
    m = _PROGRESS.match(msg)
    if m is None:
        return LogLine(OTHER, msg)
    g = m.groups()
    rec = LogLine(PROGRESS, msg, frame=int(g[0]))
    if g[1] is not None:
        rec.mem_mb, rec.peak_mb = _mb(g[1]), _mb(g[3])
    if g[4] is not None:
        rec.elapsed_s = parse_clock(g[4])
    if g[5] is not None:
        rec.remaining_s = parse_clock(g[5])
    if g[6] is not None:
        rec.render_mem_mb = _mb(g[6])
        if g[7] is not None:
            rec.render_peak_mb = _mb(g[7])
    rest = g[8]
    if rest:
        # ≤ 4.x puts "Scene, ViewLayer" before the status; drop it when a status follows.
        head, sep, tail = rest.partition(" | ")
        if sep and ", " in head:
            rest = tail
        rec.status = rest
        if "/" in rest:
            sm = _SAMPLES.search(rest)
            if sm:
                rec.sample, rec.samples_total = int(sm.group(1)), int(sm.group(2))
            tm = _TILES.search(rest)
            if tm:
                rec.tile, rec.tiles_total = int(tm.group(1)), int(tm.group(2))
        rec.phase = phase_of(rest)
    return rec


def phase_of(status: str) -> str | None:
    """The render phase a status text names (sync, kernels, bvh, sampling, denoise, compositing, save)."""
    for key, phase in _PHASE_RULES:
        if key in status:
            return phase
    return None


def parse_clock(text: str) -> float | None:
    """`00:09.81`, `01:02:03.45` or `3.2` -> seconds; None when it isn't a clock."""
    try:
        secs = 0.0
        for part in text.split(":"):
            secs = secs * 60 + float(part)
        return secs
    except ValueError:
        return None


def _mb(text: str | None) -> float | None:
    if not text:
        return None
    unit = text[-1]
    if unit.isdigit():
        return float(text)
    scale = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}[unit]
    return float(text[:-1]) * scale


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def find_crash_file_path(line: str) -> str | None:
    """The crash-file path of a `Writing: <path>.crash.txt` line (either format), else None."""
    line = line.rstrip("\r\n")
    if not line.startswith("Writing: "):
        line = split_prefix(line)[0]
        if not line.startswith("Writing: "):
            return None
    path = _unquote(line[9:])
    return path if path.endswith("crash.txt") else None


def iter_lines(stream: BinaryIO, chunk_size: int = 1 << 20) -> Iterator[str]:
    """Decoded lines (no line ending) of a binary stream, read in chunks with bounded memory.

    Invalid UTF-8 becomes U+FFFD; a line longer than MAX_LINE is cut to MAX_LINE and the rest of
    it skipped, so a file without newlines costs MAX_LINE of memory, not its size.
    """
    carry = b""
    skipping = False
    while True:
        chunk = stream.read(chunk_size)
        if not chunk:
            break
        data = carry + chunk if carry else chunk
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            if skipping:
                skipping = False
            else:
                yield _decode(data[start:min(nl, start + MAX_LINE)])
            start = nl + 1
        carry = data[start:]
        if len(carry) > MAX_LINE and not skipping:
            yield _decode(carry[:MAX_LINE])
            skipping = True
        if skipping:
            carry = b""
    if carry and not skipping:
        yield _decode(carry)


def split_text(text: str) -> Iterable[str]:
    """The lines of an already decoded log (split on \\n only, so numbers match `grep -n`)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")
