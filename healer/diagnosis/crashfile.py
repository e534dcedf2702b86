"""Read Blender's crash file (`<tempdir>/<blend>.crash.txt`, named on stdout as `Writing: <path>`).

Layout (Linux/macOS)::

    # Blender 3.4.1, Commit date: 2022-12-19 17:00, Hash 55485cb379f7      (or ", Unknown revision")
    <report lines>
    # backtrace
    ./blender(+0x1c2a5d6) [0x55d1e0c2a5d6]
    # Python backtrace
      File "/path/seg.py", line 3 in pre                                     (innermost first)

Windows adds `Exception Record:` / `ExceptionCode : EXCEPTION_ACCESS_VIOLATION` / `Stack trace:`
blocks; its console prints `Error   : EXCEPTION_ACCESS_VIOLATION`, `Address : 0x...`, `Module  : ...`.

Usage::

    report = parse_crash_file(read_crash_file(path) or "")
    report.blender_version, report.python_frames[-1]   # "3.4.1", ("/path/seg.py", 3, "pre")

A crash file is written by a dying process: it may be truncated, empty or binary. Parsing never
raises; `partial` says the file lacked the parts a complete one has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from healer.diagnosis.logformat import find_crash_file_path

__all__ = ["CrashReport", "parse_crash_file", "read_crash_file", "find_crash_file_path"]

MAX_CRASH_BYTES = 4 << 20        # a real crash file is a few KiB; never read more than this
_MAX_FRAMES = 256

_HEADER = re.compile(
    r"#\s*Blender\s+(?P<version>\d+\.\d+(?:\.\d+)?)(?:\s*\(sub\s*(?P<sub>\d+)\))?"
    r"(?:,\s*(?P<rest>.*))?"
)
_HASH = re.compile(r"Hash\s+(\w+)")
_REVISION = re.compile(r"(?:Revision|revision):?\s*(\w+)")
_DATE = re.compile(r"Commit date:\s*([\d-]+(?:\s+[\d:]+)?)")
_PY_FRAME = re.compile(r'\s*File "(?P<file>[^"]*)", line (?P<line>\d{1,9}),? in (?P<func>.*)')
# Windows exception-record fields: `ExceptionCode : EXCEPTION_...` in the file, `Error   : ...` on the console.
_WIN_FIELD = re.compile(r"\s*(Error|Exception ?\w*|Address|Module|Thread|Parameters\[\d+\])\s*:\s*(.*)")
_EXCEPTION = re.compile(r"EXCEPTION_[A-Z_]+")


@dataclass
class CrashReport:
    """What a crash file says. Missing parts are None/empty; `partial` flags an incomplete file."""

    blender_version: str | None = None
    revision: str | None = None          # commit hash, or None for "Unknown revision"
    commit_date: str | None = None
    python_frames: list[tuple[str, int, str]] = field(default_factory=list)  # outermost first
    native_frames: list[str] = field(default_factory=list)
    report_lines: list[str] = field(default_factory=list)
    exception: str | None = None          # Windows: EXCEPTION_ACCESS_VIOLATION, EXCEPTION_STACK_OVERFLOW, ...
    address: str | None = None
    module: str | None = None
    partial: bool = False                 # no header, no backtrace section, binary data or cut short

    @property
    def innermost_python_frame(self) -> tuple[str, int, str] | None:
        return self.python_frames[-1] if self.python_frames else None


def parse_crash_file(text: str | bytes | None) -> CrashReport:
    """Parse a crash file's text (bytes are decoded with errors='replace'). Never raises."""
    report = CrashReport()
    if text is None:
        report.partial = True
        return report
    if isinstance(text, bytes | bytearray):
        text = bytes(text[:MAX_CRASH_BYTES]).decode("utf-8", errors="replace")
    else:
        text = text[:MAX_CRASH_BYTES]
    if "\x00" in text or "\ufffd" in text:
        report.partial = True          # binary garbage or a torn write: keep what still reads
        text = text.replace("\x00", "")

    section = "report"
    seen_backtrace = False
    py_innermost_first: list[tuple[str, int, str]] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line:
            continue
        stripped = line.lstrip()
        if report.blender_version is None and "# Blender" in line:
            m = _HEADER.search(line)            # search: a torn write can leave bytes before it
            if m:
                _read_header(report, m)
                continue
        if stripped.startswith("#"):
            low = stripped.lower()
            if low.startswith("# python backtrace"):
                section = "python"
                continue
            if low.startswith("# backtrace"):
                section, seen_backtrace = "native", True
                continue
        if stripped.startswith("Loaded Modules"):     # Windows: the DLL list that follows the stack
            section = "modules"
            continue
        if section == "modules":
            continue
        if section == "python":
            fm = _PY_FRAME.match(line)
            if fm and len(py_innermost_first) < _MAX_FRAMES:
                py_innermost_first.append((fm.group("file"), int(fm.group("line")), fm.group("func").strip()))
            continue
        wm = _WIN_FIELD.match(line)
        if wm:
            _read_windows_field(report, wm.group(1), wm.group(2).strip())
            if section == "report":
                report.report_lines.append(stripped)
            continue
        if section == "native":
            if len(report.native_frames) < _MAX_FRAMES and stripped not in ("Stack trace:", "Exception Record:"):
                report.native_frames.append(stripped)
        elif len(report.report_lines) < _MAX_FRAMES:
            report.report_lines.append(stripped)
            if report.exception is None:
                em = _EXCEPTION.search(stripped)
                if em:
                    report.exception = em.group(0)
    # Blender writes the Python stack innermost first (like faulthandler); we keep outermost first
    # like a Python traceback, so the last frame is where it crashed.
    report.python_frames = py_innermost_first[::-1]
    if report.blender_version is None or not (seen_backtrace or report.exception):
        report.partial = True
    return report


def _read_header(report: CrashReport, m: re.Match[str]) -> None:
    report.blender_version = m.group("version") + (f" (sub {m.group('sub')})" if m.group("sub") else "")
    rest = m.group("rest") or ""
    hm = _HASH.search(rest) or _REVISION.search(rest)
    if hm and "unknown" not in hm.group(1).lower():
        report.revision = hm.group(1)
    dm = _DATE.search(rest)
    if dm:
        report.commit_date = dm.group(1)


def _read_windows_field(report: CrashReport, key: str, value: str) -> None:
    if key in ("Error", "ExceptionCode", "Exception Code", "Exception"):
        em = _EXCEPTION.search(value)
        if em and report.exception is None:
            report.exception = em.group(0)
    elif key in ("Address", "Exception Address") and report.address is None:
        report.address = value
    elif key in ("Module", "Exception Module") and report.module is None:
        report.module = value


def read_crash_file(path: str, max_bytes: int = MAX_CRASH_BYTES) -> str | None:
    """The crash file's text (invalid UTF-8 replaced), or None when it can't be read."""
    try:
        with open(path, "rb") as f:
            return f.read(max_bytes).decode("utf-8", errors="replace")
    except OSError:
        return None
