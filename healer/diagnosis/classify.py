"""Classify a Blender run: (output, crash file, exit status) -> one typed `RenderError`, root cause first.

Pure: no I/O. Feed lines as they arrive, then ask once the process has ended::

    scanner = LogScanner()
    for line in lines:                       # decoded with errors="replace"
        scanner.feed(line)
    err = scanner.finish(exit_code=proc.returncode, crash_text=text)
    err.type, err.fatal, err.summary          # "segfault", True, "Blender crashed (SIGSEGV) ..."

    err = classify(log_text, exit_code=139)   # the same in one call

Memory is bounded whatever the log's size: the first and last `FINDINGS_KEPT` findings per
type, a small tail, and the first and last Python traceback.

Precedence (root cause over symptom; the first that has evidence wins):

1. fatal causes found in the output: gpu_oom > gpu_error > host_oom (also `oom_killed=True`) >
   denoiser_unavailable > scene_limit > engine_unavailable > blend_invalid > missing_file (the
   .blend itself) > output_error > python_error (`script failed` with --python-exit-code, `Fatal Python error`,
   or a non-zero exit whose last output is a traceback; a traceback whose exception names a
   missing file / unwritable output / bad_alloc is that type instead);
2. how the process ended: segfault (SIGSEGV/SIGBUS/SIGILL/SIGFPE, 0xC0000005, a crash file,
   `Writing: ...crash.txt`, EXCEPTION_*) > abort (SIGABRT, BLI_assert, uncaught C++ exception)
   > interrupted (SIGINT/SIGTERM/SIGHUP, `Sent an internal break event`, `Blender killed`)
   > killed (SIGKILL). With `stalled=True` the healer stopped Blender itself, so a SIGKILL/SIGTERM
   /SIGINT is its own doing and the result is `stall`;
3. stall (`stalled=True`);
4. unknown: a non-zero exit (or a log that stops mid-frame with no exit status) that nothing explains;
5. warnings on a run that otherwise succeeded (Blender often exits 0 after an error):
   missing_file (a texture/library; 5.x Cycles' `Image file ... does not exist`, `Failed to load N
   image files`) > python_error (a handler exception, or a bare `Error: ...` line no rule explains:
   a script that reported its failure and carried on); fatal=False;
6. ok.

GPU errors are fatal even when Blender saved an image and exited 0: that image is wrong.
"""

from __future__ import annotations

import copy
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from healer.diagnosis import errors
from healer.diagnosis.catalog import CAUSE_ORDER, CRASH_ORDER, TYPES
from healer.diagnosis.crashfile import CrashReport, parse_crash_file
from healer.diagnosis.errors import Finding, RenderError
from healer.diagnosis.logformat import MAX_LINE, find_crash_file_path, split_prefix, split_text

FINDINGS_KEPT = 20          # per type: the first N and the last N findings
TAIL_KEPT = 20              # last non-progress lines, for the `unknown` summary
_TEXT_MAX = 500             # finding text is cut to this
_TB_FRAMES_MAX = 64

# --- patterns -------------------------------------------------------------------------------
# (type, role, keys, regex). Roles: "cause" = a fatal cause; "warn" = the render usually goes on;
# "blend" = the .blend itself is missing (a fatal missing_file); "crash" = how the process died;
# "script" = a Python failure that stops Blender; "error" = a generic error line (unknown).
# `keys` are literal substrings, one of which is in every line the regex matches: together they make
# the one cheap gate every line goes through (most lines match none). Within one line the first
# match of each type is kept, so specific rules come first.
_RULES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    # GPU memory (Cycles CUDA/HIP/OptiX/Metal/oneAPI; current, queue and legacy formats). Cycles'
    # device code reports `<cuewErrorString> in <call> (<file>:<line>)` and `<name> in CUDA queue <op>
    # (<kernels>)`; the texture-size limits are here too: the same frame fits on the CPU.
    ("gpu_oom", "cause", ("Out of memory",), r"Out of memory in \S|Out of memory - couldn't allocate"),
    ("gpu_oom", "cause", ("ut of memory",), r"(?:CUDA|HIP|OptiX|Metal|oneAPI)[\w ]*error[^\n]*?[Oo]ut of (?:device )?memory"),
    ("gpu_oom", "cause", ("GPU",), r"System is out of GPU(?: and shared host)? memory"),
    ("gpu_oom", "cause", ("Out of memory",), r"Failed to (?:retain|create) (?:CUDA|HIP) context \(Out of memory\)"),
    ("gpu_oom", "cause", ("OUT_OF_", "OutOfMemory", "MemoryAllocation"),
     r"CUDA_ERROR_OUT_OF_MEMORY|hipErrorOutOfMemory|cudaErrorMemoryAllocation|OPTIX_ERROR_\w*OUT_OF_MEMORY"
     r"|\w*_ERROR_OUT_OF_DEVICE_MEMORY"),
    ("gpu_oom", "cause", ("exceed", "GPU"),
     r"Maximum GPU image size or available GPU memory was likely exceeded|Maximum GPU 2D texture size exceeded"
     r"|Texture exceeds maximum allowed size|GPU image allocation failed"),
    ("gpu_oom", "cause", ("Failed to ",), r"Failed to allocate [\w ]+ for (?:BLAS|TLAS)"),
    # other GPU faults: any other CUDA/HIP/OptiX call that failed, device set-up, kernels, BVH, denoisers
    ("gpu_error", "cause", ("Illegal ", "Launch ", "Misaligned address", "Invalid value", "Unknown error"),
     r"(?:Illegal address|Launch failed|Launch exceeded timeout|Misaligned address|Illegal instruction"
     r"|Invalid value|Unknown error) in (?:CUDA|HIP|cu|hip|optix)"),
    ("gpu_error", "cause", ("/device/", "\\device\\"), r"\b[A-Z][A-Za-z -]{2,60} in (?:cu|hip|hiprt|optix)[A-Z]\w*\("),
    ("gpu_error", "cause", ("OptiX", "OPTIX_ERROR_", "Failed loading"),
     r"OptiX (?:CUDA )?error|Failed loading OptiX kernel|OPTIX_ERROR_\w+|Failed to load OptiX [\w ]*kernel"
     r"|Unable to compile OptiX kernels|OptiX headers not found|Failed to build OptiX acceleration structure"
     r"|Failed to (?:create|set up) OptiX denoiser|maximum supported with OptiX"),
    ("gpu_error", "cause", ("CUDA", "HIP", "Failed to "),
     r"CUDA kernel compilation failed|CUDA device supported only with compute capability"
     r"|(?:CUDA|HIP) backend requires|(?:CUDA|HIP) binary kernel for this graphics card|CUDA nvcc compiler not found"
     r"|Failed to load (?:CUDA|HIP) kernel from|Failed to (?:initialize (?:CUDA|HIP) runtime|get (?:CUDA|HIP) device handle"
     r"|configure CUDA context|retain CUDA context|create HIP context|create HIPRT|enable peer access on (?:CUDA|HIP))"),
    ("gpu_error", "cause", ("Failed to ",), r"Failed to (?:build|create) (?:BLAS|TLAS)|Failed to get scratch buffer size for"),
    ("gpu_error", "cause", ("oneAPI", "GPU"),
     r"oneAPI [\w ]*(?:error|initialization|execution|loading)[\w ]*: got (?:a )?runtime exception"
     r"|oneAPI kernel \"[^\"]*\" execution error|BVH failed to migrate to the GPU"),
    ("gpu_error", "cause", ("Could not activate", "Failed to ", "Command buffer"),
     r"Could not activate pipeline for|Failed to compile library:|Command buffer not completed"),
    ("gpu_error", "cause", ("GPU", "OIDN", "Failed loading"),
     r"GPU denoiser (?:creation|configuration) has failed|Failed to create OIDN device|Failed loading denoising kernel"),
    ("gpu_error", "cause", ("GPU",), r"Refer to the Cycles GPU rendering documentation"),
    ("gpu_error", "cause", (" error", "CUDA", "hipError", " queue "),
     r"\b(?:CUDA|HIP|Metal|oneAPI) error\b|CUDA_ERROR_\w+|hipError\w+| in (?:CUDA|HIP) queue "),
    # host memory
    ("host_oom", "cause", ("returns null", "Malloc array"),
     r"(?:Malloc|Calloc) returns null|Malloc array aborted due to integer overflow"),
    ("host_oom", "cause", ("bad_alloc", "MemoryError"), r"std::bad_alloc|^MemoryError\b"),
    ("host_oom", "cause", ("Killed process", "oom-kill", "oom_reaper"),
     r"(?i:out of memory): Killed process|invoked oom-killer|oom-kill:|oom_reaper: reaped process"),
    # denoiser
    ("denoiser_unavailable", "cause", ("OpenImageDenoise", "denoise on", "OIDN"),
     r"Build without OpenImageDenoise|build has no OpenImageDenoise support"
     r"|OpenImageDenoiser? is not supported on this (?:CPU|platform)|OpenImageDenoise error|No device available to denoise on"
     r"|Failed to create OIDN CPU device"),
    # a limit of the scene that no device lifts
    ("scene_limit", "cause", ("exceed",), r"Number of emissive triangles exceeds the limit"),
    # engine / display
    ("engine_unavailable", "cause", ("not available", "engine not found", "Cycles is not enabled", "open a display"),
     r"Engine '[^']*' not available|engine not found '|Cycles is not enabled|Unable to open a display"),
    # the .blend
    ("blend_invalid", "cause", ("File format is not supported", "Failed to read blend file", "newer Blender",
                                "not a blend file"),
     r"File format is not supported in file|Failed to read blend file|File written by newer Blender binary"
     r"|not a blend file"),
    ("missing_file", "blend", ("Cannot read file",), r"""Cannot read file ['"]"""),
    # assets (the render goes on without them)
    ("missing_file", "warn", ("Cannot read ", "Unable to open ", " not found", "non-existent directory",
                              "Failed to open dir", "Cannot find lib "),
     r"""Cannot read ['"]|Unable to open ['"]|Path ['"].*['"] not found| non-existent directory"""
     r"|Failed to open dir \(|Cannot find lib |Library file .* not found"),
    # Cycles' image loader: 5.0 logs `cycles | ERROR Image file '<path>' does not exist.`, 5.2+ `WARNING Image
    # file <path> does not exist.` then `ERROR Failed to load N image files` per frame; 3.4-4.x say
    # `File '<path>' does not exist.` only at a verbose log level. The frame is rendered magenta.
    ("missing_file", "warn", ("does not exist", "Failed to load ", "can't use as image", "missing from "),
     r"""\b(?:Image |Volume )?[Ff]ile \S.* does not exist|can't use as image"""
     r"""|Failed to load \d+ image files?\b|^(?:Warning: )?LIB: .+ missing from ['"]"""),
    # output
    ("output_error", "cause", ("cannot save", "for writing", "create directory", "filesystem_error", "Error writing tile"),
     r"cannot save|Cannot open file for writing|Couldn't create directory|Cannot create directory"
     r"|boost::filesystem::filesystem_error|Error writing tile"),
    # Python
    ("python_error", "script", ("script failed",), r"script failed, file: "),
    ("python_error", "script", ("Fatal Python error",),
     r"^Fatal Python error: (?!Segmentation fault|Aborted|Bus error|Floating point)"),
    ("python_error", "warn", ("Error in bpy.app.handlers.", "Error: Python: "),
     r"^Error in bpy\.app\.handlers\.|^Error: Python: "),
    # how the process died
    ("segfault", "crash", ("Writing: ", "EXCEPTION_", "Segmentation fault", "Fatal Python error"),
     r"^Writing: .*crash\.txt|EXCEPTION_[A-Z_]+|Segmentation fault"
     r"|^Fatal Python error: (?:Segmentation fault|Bus error|Floating point)"),
    ("abort", "crash", ("BLI_assert failed", "terminate called", "Aborted"),
     r"BLI_assert failed|terminate called after throwing|^Aborted\b|^Fatal Python error: Aborted"),
    ("interrupted", "crash", ("internal break", "Blender killed", "KeyboardInterrupt"),
     r"Sent an internal break event|^Blender killed|^KeyboardInterrupt\b"),
    ("killed", "crash", ("Killed",), r"^Killed$"),
    # any other error line: evidence for `unknown` ("Error: Not freed memory blocks" is a leak report, not an error)
    ("unknown", "error", ("Error", "ERROR", "] "),
     r"^(?:Error|ERROR)\b(?!: Not freed memory blocks)|^E\d{4} [\d:.]+ +\d+ \S+\] "),
)

_COMPILED = tuple((t, re.compile(rx), role) for t, role, _keys, rx in _RULES)
# The gate: one scan per line for any rule's keyword (an alternation of literals is cheap for `re`;
# the full rule regexes together cost ~10x more). Only lines that pass it are matched rule by rule.
_GATE = re.compile("|".join(sorted({re.escape(k) for *_, keys, _rx in _RULES for k in keys}, key=len, reverse=True)))

_TRACEBACK = "Traceback (most recent call last):"
# The supervisor's render_pre marker (healer.launch.MARKER): the frame in flight, in any Blender version.
FRAME_MARKER = "[renderwatch] frame_start "
_GLOG = re.compile(r"[EWF]\d{4} [\d:.]+ +\d+ \S+\] ")
_PY_FRAME = re.compile(r'\s*File "(?P<file>[^"]*)", line (?P<line>\d{1,9}),? in (?P<func>.*)')
# `KeyError: 'x'`, `pipeline.AssetError: ...`, `KeyboardInterrupt` (a class name: last part capitalised)
_EXC_LINE = re.compile(r"(?P<type>(?:[A-Za-z_]\w*\.)*[A-Z]\w*)(?::\s?(?P<msg>.*))?$")
_NOT_EXCEPTIONS = frozenset(("Saved", "Error", "Info", "Warning", "Read", "Time", "Writing", "Fra", "Blender"))
_HANDLER = re.compile(r"Error in bpy\.app\.handlers\.(\w+)\[\d+\]")
_GPU_CALL = re.compile(r"Out of memory in (.+?)(?: \(\S+:\d+\))?\s*$")

# Precedence, root cause over symptom: the catalog's order of its "cause" and "crash" rows.
_CAUSE_ORDER = CAUSE_ORDER
_CRASH_ORDER = CRASH_ORDER

# Linux signal numbers (exit codes from shells are 128+n; subprocess reports -n).
SIGHUP, SIGINT, SIGILL, SIGABRT, SIGBUS, SIGFPE, SIGKILL, SIGSEGV, SIGTERM = 1, 2, 4, 6, 7, 8, 9, 11, 15
_SIGNAL_NAMES = {SIGHUP: "SIGHUP", SIGINT: "SIGINT", SIGILL: "SIGILL", SIGABRT: "SIGABRT", SIGBUS: "SIGBUS",
                 SIGFPE: "SIGFPE", SIGKILL: "SIGKILL", SIGSEGV: "SIGSEGV", SIGTERM: "SIGTERM"}
_SIGNAL_TYPES = {SIGSEGV: "segfault", SIGBUS: "segfault", SIGILL: "segfault", SIGFPE: "segfault",
                 SIGABRT: "abort", SIGKILL: "killed", SIGINT: "interrupted", SIGTERM: "interrupted",
                 SIGHUP: "interrupted"}
# Windows NTSTATUS exit codes.
_NTSTATUS = {0xC0000005: ("segfault", "EXCEPTION_ACCESS_VIOLATION"), 0xC00000FD: ("segfault", "EXCEPTION_STACK_OVERFLOW"),
             0xC000001D: ("segfault", "EXCEPTION_ILLEGAL_INSTRUCTION"), 0xC0000094: ("segfault", "EXCEPTION_INT_DIVIDE_BY_ZERO"),
             0xC0000409: ("abort", "STATUS_STACK_BUFFER_OVERRUN (abort)"), 0xC000013A: ("interrupted", "STATUS_CONTROL_C_EXIT")}


def signal_name(sig: int) -> str:
    return _SIGNAL_NAMES.get(sig, f"signal {sig}")


@dataclass
class _Traceback:
    line: int                                   # line of the exception (or of the header)
    frames: list[tuple[str, int, str]] = field(default_factory=list)
    exc_type: str | None = None
    message: str | None = None
    text: str = ""
    handler: str | None = None                  # render_pre, ... when it came from a handler
    types: tuple[str, ...] = ()                 # finding types the exception line matched
    frame: int | None = None                    # frame in flight when it happened
    after: int | None = None                    # last frame saved before it happened
    saved: int = 0                              # frames saved before it happened
    recent_first: bool = False                  # faulthandler dumps innermost first


class LogScanner:
    """Streaming classifier over Blender output lines (either format). See the module docstring."""

    def __init__(self, first_line: int = 1) -> None:
        self.lines = first_line - 1             # number of the last line fed (1-based)
        self.frame: int | None = None           # last frame seen in a progress line
        self.frame_done = False                 # whether `frame` was saved since
        self.last_saved_frame: int | None = None
        self.frames_saved = 0
        self.frames_skipped = 0
        self.last_saved_path: str | None = None
        self.crash_file: str | None = None      # from a `Writing: ...crash.txt` line
        self.quit_seen = False
        self.tail: deque[tuple[int, str]] = deque(maxlen=TAIL_KEPT)
        self._first: dict[str, list[Finding]] = {}
        self._last: dict[str, deque[Finding]] = {}
        self._counts: dict[str, int] = {}
        self._roles: dict[tuple[str, str], int] = {}       # (type, role) -> count
        self._first_role: dict[tuple[str, str], Finding] = {}
        self._first_at: dict[str, tuple[int | None, int | None, int]] = {}  # (in flight, last saved, saved count)
        self._frame_text = ""
        self._tb: _Traceback | None = None                 # traceback being read
        self._tb_first: _Traceback | None = None
        self._tb_last: _Traceback | None = None
        self._tb_count = 0
        self._last_event = ""                              # "progress" | "saved" | "error" | "traceback" | ...
        # The reading of the last line fed, for its log record: "progress" | "info" | "warning" | "error"
        self.line_level = "info"

    # -- feeding --------------------------------------------------------------------------
    def feed(self, line: str) -> None:
        """One line of output, with or without its line ending."""
        self.lines += 1
        self.line_level = "info"
        if line.startswith("Fra:"):
            self.line_level = "progress"
            self._progress(line)
            return
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE]
        line = line.rstrip("\r\n")
        msg = line
        c = line[:1]
        if c.isdigit() or (c == " " and line[:8] == "        "):      # 5.0: a prefixed or continued line
            msg, _module, _clock, level = split_prefix(line)
            if level == "ERROR" or level == "FATAL":
                msg = f"{level} {msg}"          # keep it: an ERROR line is evidence for `unknown`
                self.line_level = "error"
            elif level == "WARNING":
                self.line_level = "warning"
        if msg.startswith("Fra:"):
            self.line_level = "progress"
            self._progress(msg)
            return
        if msg[:1] in "EW" and msg.startswith(("Error", "ERROR", "Warning", "WARN")):
            self.line_level = "error" if msg[0] == "E" else "warning"
        self._other(msg)

    def feed_text(self, text: str) -> None:
        """A block of decoded output (whole lines; a trailing partial line counts as a line)."""
        feed = self.feed
        for line in split_text(text):
            feed(line)

    def _progress(self, line: str) -> None:
        start = 5 if line[4:5] == " " else 4         # 5.0: "Fra: 12 | ..."
        end = line.find(" ", start)
        ftext = line[start:end] if end > 0 else line[start:]
        if ftext != self._frame_text:
            self._frame_text = ftext
            try:
                frame = int(ftext)
            except ValueError:
                frame = None
            if frame is not None and frame != self.frame:
                self.frame, self.frame_done = frame, False
        self._last_event = "progress"
        # After a GPU error Cycles shows `| Cancel | <message>` in the status: the message itself
        # is also printed on its own line, but keep it in case only the status survived.
        if "| Cancel |" in line:
            self._match(line[line.index("| Cancel |") + 11:].rstrip("\r\n"))

    def _other(self, msg: str) -> None:
        n = self.lines
        if self._tb is not None and self._traceback_line(msg):
            self.line_level = "error"            # a line of a traceback
            return
        c = msg[:1]
        if c == "S" and msg.startswith("Saved: "):
            self.frames_saved += 1
            self.last_saved_path = msg[7:].strip().strip("'\"")
            if self.frame is not None and not self.frame_done:
                self.last_saved_frame = self.frame
            self.frame_done = True
            self._last_event = "saved"
        elif (c == "S" or c == "s") and msg[1:].startswith("kipping existing frame"):
            self.frames_skipped += 1
            self._last_event = "saved"
        elif c == "B" and msg.startswith("Blender quit"):
            self.quit_seen = True
        elif c == "W" and msg.startswith("Writing: "):
            found = find_crash_file_path(msg)
            if found:                            # Blender's crash handler: the crash's own line
                self.crash_file, self.line_level = found, "error"
        elif c == "[" and msg.startswith(FRAME_MARKER):
            num = msg[len(FRAME_MARKER):].partition(" ")[0]
            if num.lstrip("-").isdigit() and len(num) < 10:
                self.frame, self.frame_done, self._frame_text = int(num), False, ""
                self._last_event = "progress"
        if msg:
            self.tail.append((n, msg))
        if _TRACEBACK in msg:
            self.line_level = "error"
            self._tb = _Traceback(line=n, frame=self._frame_in_flight(), after=self.last_saved_frame,
                                  saved=self.frames_saved)
            self._last_event = "traceback"
            m = _HANDLER.search(self._prev_msg(1))
            if m:
                self._tb.handler = m.group(1)
        elif msg.startswith("Current thread 0x") and "most recent call first" in msg:
            self._tb = _Traceback(line=n, frame=self._frame_in_flight(), after=self.last_saved_frame,
                                  saved=self.frames_saved, recent_first=True)
        if _GATE.search(msg):
            self._match(msg)

    def _prev_msg(self, back: int) -> str:
        return self.tail[-1 - back][1] if len(self.tail) > back else ""

    def _traceback_line(self, msg: str) -> bool:
        """Consume a line inside a traceback; False when the traceback has ended before it."""
        tb = self._tb
        assert tb is not None
        if not msg.strip():
            if tb.recent_first:          # faulthandler: a blank line ends the stack
                self._end_traceback()
            return not tb.recent_first
        if msg[0] in " \t":
            m = _PY_FRAME.match(msg)
            if m and len(tb.frames) < _TB_FRAMES_MAX:
                tb.frames.append((m.group("file"), int(m.group("line")), m.group("func").strip()))
            return True
        if tb.recent_first:
            self._end_traceback()
            return False
        if msg.startswith(("During handling of the above exception", "The above exception was the direct cause")):
            return True
        if _TRACEBACK in msg:
            return False                 # a chained traceback: _other starts it again
        m = _EXC_LINE.match(msg)
        if m and tb.frames and m.group("type") not in _NOT_EXCEPTIONS:
            tb.line, tb.exc_type, tb.message = self.lines, m.group("type"), m.group("msg")
            tb.text = msg[:_TEXT_MAX]
            types = self._match(msg, python_exception=True)
            tb.types = tuple(types)
            self._end_traceback()
            if msg:
                self.tail.append((self.lines, msg))
            return True
        self._end_traceback()
        return False

    def _end_traceback(self) -> None:
        tb = self._tb
        self._tb = None
        if tb is None:
            return
        if tb.recent_first:
            tb = replace(tb, frames=tb.frames[::-1])
        self._tb_count += 1
        if self._tb_first is None:
            self._tb_first = tb
        self._tb_last = tb
        self._last_event = "traceback"

    def _match(self, msg: str, python_exception: bool = False) -> list[str]:
        """Record a finding for each type whose rule matches `msg`; returns the types."""
        found: list[str] = []
        for type_id, rx, role in _COMPILED:
            if type_id in found or (role == "error" and found):
                continue
            if rx.search(msg):
                found.append(type_id)
                self._add(type_id, role, msg)
        if python_exception and "python_error" not in found:
            found.append("python_error")
            self._add("python_error", "exception", msg)
        if found and found != ["unknown"]:
            self._last_event = "error"
        elif found and msg.startswith("Error: "):
            # A bare `Error: ...` that no rule explains: what a pipeline script prints when it fails
            # and carries on. Evidence for `unknown` when Blender fails; a warning when it does not.
            self._add("python_error", "report", msg)
        return found

    def _add(self, type_id: str, role: str, msg: str) -> None:
        f = Finding(type_id, self.lines, msg[:_TEXT_MAX])
        level = "warning" if role == "warn" else "error"
        if self.line_level != "error" and self.line_level != level:
            self.line_level = level
        count = self._counts.get(type_id, 0)
        self._counts[type_id] = count + 1
        key = (type_id, role)
        self._roles[key] = self._roles.get(key, 0) + 1
        self._first_role.setdefault(key, f)
        if count < FINDINGS_KEPT:
            self._first.setdefault(type_id, []).append(f)
            self._first_at.setdefault(type_id, (self._frame_in_flight(), self.last_saved_frame, self.frames_saved))
        else:
            self._last.setdefault(type_id, deque(maxlen=FINDINGS_KEPT)).append(f)

    # -- state ----------------------------------------------------------------------------
    def _frame_in_flight(self) -> int | None:
        return None if self.frame_done else self.frame

    @property
    def frame_in_flight(self) -> int | None:
        """The last frame seen in a progress line that has not been saved since, else None."""
        return self._frame_in_flight()

    @property
    def findings(self) -> list[Finding]:
        """Kept findings (first and last FINDINGS_KEPT per type), in line order."""
        out = [f for fs in self._first.values() for f in fs]
        out += [f for fs in self._last.values() for f in fs]
        out.sort(key=lambda f: f.line)
        return out

    def count(self, type_id: str, role: str | None = None) -> int:
        if role is None:
            return self._counts.get(type_id, 0)
        return self._roles.get((type_id, role), 0)

    def first(self, type_id: str, role: str | None = None) -> Finding | None:
        """The first finding of a type (and role: cause, warn, blend, script, crash, error, exception)."""
        if role is not None:
            return self._first_role.get((type_id, role))
        fs = self._first.get(type_id)
        return fs[0] if fs else None

    # -- the verdict ----------------------------------------------------------------------
    def finish(self, exit_code: int | None = None, signal: int | None = None, *, crash_file: str | None = None,
               crash_text: str | bytes | None = None, stalled: bool = False, oom_killed: bool = False,
               frame: int | None = None) -> RenderError:
        """The typed error for everything fed so far and how the process ended.

        exit_code: the process's exit status as the caller saw it (subprocess's -N means signal N;
        128+N from a shell is read as signal N for crash/kill signals; Windows NTSTATUS codes are
        understood). signal: the terminating signal when known separately. crash_file/crash_text:
        the crash file's path (reported) and its text (parsed: this function does no I/O).
        stalled: the healer stopped Blender for making no progress. oom_killed: the kernel's OOM
        killer killed it (cgroup memory.events). frame: the frame in flight when the caller knows
        better than the log. Does not change the scanner: it can be called again after more lines.
        """
        scanner = self
        if self._tb is not None:                 # a traceback cut off by the end of the log
            scanner = copy.copy(self)
            scanner._end_traceback()
        return scanner._verdict(exit_code, signal, crash_file, crash_text, stalled, oom_killed, frame)

    def _verdict(self, exit_code: int | None, sig: int | None, crash_file: str | None,
                 crash_text: str | bytes | None, stalled: bool, oom_killed: bool,
                 frame: int | None) -> RenderError:
        proc_type, sig, how = _decode_exit(exit_code, sig)
        crash = parse_crash_file(crash_text) if crash_text is not None else None
        crash_path = crash_file or self.crash_file
        extra: list[Finding] = []
        if sig:
            extra.append(Finding(proc_type or "unknown", 0, f"killed by {how}" + (
                f" (exit status {exit_code})" if exit_code is not None else "")))
        elif how:
            extra.append(Finding(proc_type or "unknown", 0, how))
        if crash is not None:
            extra.append(Finding("segfault", 0, _crash_note(crash, crash_path)))
        if oom_killed:
            extra.append(Finding("host_oom", 0, "the kernel OOM killer killed Blender (cgroup memory.events oom_kill)"))
        if stalled:
            extra.append(Finding("stall", 0, "no sign of life (output, hook heartbeat, CPU, GPU) within the stall timeout: the healer stopped Blender"))

        exited_nonzero = exit_code is not None and sig is None and proc_type is None and exit_code != 0
        ctx = _Context(self, frame if frame is not None else self._frame_in_flight(), sig, exit_code, how,
                       crash, crash_path)
        tb_last = self._tb_last

        # 1. fatal causes in the output
        primary: str | None = None
        for t in _CAUSE_ORDER:
            if t == "missing_file":
                if self.count(t, "blend"):
                    primary = t
            elif t == "python_error":
                if self.count(t, "script"):
                    primary = t
            elif t == "host_oom" and oom_killed:
                primary = t
            elif self.count(t):
                primary = t
            if primary:
                break
        # a script that died on its exception: the exception's own type names the cause, also
        # when Blender said so (`Error: script failed, ...` after --python-exit-code)
        if primary == "python_error" and tb_last is not None:
            primary = next((t for t in tb_last.types if t in _CAUSE_ORDER), "python_error")
        if primary is None and exited_nonzero and tb_last is not None and self._last_event in ("traceback", "error"):
            primary = next((t for t in tb_last.types if t in _CAUSE_ORDER), "python_error")
        if primary is not None:
            return ctx.build(primary, True, extra)

        # 2. how the process died
        crash_type = proc_type
        if crash_type is None:
            if crash is not None:
                crash_type = "segfault"          # Blender writes a crash file from its SIGSEGV handler
            else:
                crash_type = next((t for t in _CRASH_ORDER if self.count(t)), None)
        elif crash_type == "killed" and self.count("interrupted"):
            crash_type = "interrupted"           # an interrupt that was escalated to SIGKILL
        if stalled and crash_type in (None, "killed", "interrupted"):
            return ctx.build("stall", True, extra)
        if (crash_type == "interrupted" and proc_type is None and exit_code == 0
                and self._first_at["interrupted"][2] < self.frames_saved):
            # 5.0 as a module: a SIGINT breaks the frame in flight, which is saved anyway, and goes on.
            return ctx.build(crash_type, False, extra)
        if crash_type is not None:
            return ctx.build(crash_type, True, extra)

        # 4. a failure nothing explains
        stopped_mid_frame = (exit_code is None and sig is None and not self.quit_seen
                             and self._frame_in_flight() is not None and self._last_event == "progress")
        if exited_nonzero or stopped_mid_frame:
            return ctx.build("unknown", True, extra)

        # 5. warnings on a successful run, 6. ok
        if self.count("missing_file"):
            return ctx.build("missing_file", False, extra)
        if self.count("python_error") or self._tb_count:
            return ctx.build("python_error", False, extra)
        return ctx.build("ok", False, extra)


def last_traceback(log: str | Iterable[str]) -> tuple[list[tuple[str, int, str]], str | None]:
    """The last Python traceback in an output: its frames (file, line, function) outermost first and
    its final `Type: message` line (None when the output was cut before it)."""
    scanner = LogScanner()
    if isinstance(log, str):
        scanner.feed_text(log)
    else:
        for line in log:
            scanner.feed(line)
    tb = scanner._tb_last
    if tb is None:
        return [], None
    exc = None
    if tb.exc_type:
        exc = f"{tb.exc_type}: {tb.message}" if tb.message else tb.exc_type
    return list(tb.frames), exc


def classify(log: str | bytes | Iterable[str], exit_code: int | None = None, signal: int | None = None,
             **kw) -> RenderError:
    """Classify a whole captured output (text, bytes or lines). kw: as `LogScanner.finish`."""
    scanner = LogScanner()
    if isinstance(log, bytes | bytearray):
        log = bytes(log).decode("utf-8", errors="replace")
    if isinstance(log, str):
        scanner.feed_text(log)
    else:
        for line in log:
            scanner.feed(line)
    return scanner.finish(exit_code, signal, **kw)


def _decode_exit(exit_code: int | None, sig: int | None) -> tuple[str | None, int | None, str | None]:
    """(process-outcome type, signal, short description) from an exit status and/or a signal."""
    if sig is None and exit_code is not None:
        if -64 <= exit_code < 0:
            sig = -exit_code
        elif exit_code - 128 in _SIGNAL_TYPES:
            sig = exit_code - 128
        else:
            nt = _NTSTATUS.get(exit_code & 0xFFFFFFFF)
            if nt:
                return nt[0], None, f"{nt[1]}, exit status {exit_code & 0xFFFFFFFF:#010X}"
    if sig:
        return _SIGNAL_TYPES.get(sig, "segfault"), sig, signal_name(sig)
    if exit_code:
        return None, None, f"exit status {exit_code}"
    return None, None, None


def _crash_note(crash: CrashReport, path: str | None) -> str:
    bits = [f"crash file {path}" if path else "crash file"]
    if crash.blender_version:
        bits.append(f"Blender {crash.blender_version}" + (f" {crash.revision}" if crash.revision else ""))
    if crash.exception:
        bits.append(crash.exception)
    if crash.python_frames:
        f = crash.python_frames[-1]
        bits.append(f'Python {f[0]}:{f[1]} in {f[2]}')
    if crash.partial:
        bits.append("partial")
    return ", ".join(bits)


class _Context:
    """Builds the RenderError for a chosen type: evidence, frames, one sentence of summary."""

    def __init__(self, scanner: LogScanner, frame: int | None, sig: int | None, exit_code: int | None,
                 how: str | None, crash: CrashReport | None, crash_path: str | None) -> None:
        self.s, self.frame, self.sig, self.exit_code, self.how = scanner, frame, sig, exit_code, how
        self.crash, self.crash_path = crash, crash_path

    def build(self, type_id: str, fatal: bool, extra: list[Finding]) -> RenderError:
        s = self.s
        tb = self._traceback_for(type_id, fatal)
        # Where it happened: at the evidence's own line when it came from the log, else at the end.
        frame, after, saved = self.frame, s.last_saved_frame, s.frames_saved
        if type_id == "python_error" and tb is not None:
            frame, after, saved = tb.frame, tb.after, tb.saved
        elif type_id in s._first_at and (type_id not in ("segfault", "abort", "killed", "interrupted", "stall")
                                         or (self.sig is None and self.crash is None)):
            frame, after, saved = s._first_at[type_id]
        py_frames: tuple[tuple[str, int, str], ...] = ()
        if self.crash is not None and self.crash.python_frames:
            py_frames = tuple(self.crash.python_frames)
        elif tb is not None:
            py_frames = tuple(tb.frames)
        native = tuple(self.crash.native_frames) if self.crash is not None else ()
        summary = _summary(type_id, fatal, self, _at(frame, after, saved), tb, py_frames)
        cls = errors.error_class(type_id)
        return cls(summary=summary, findings=tuple(s.findings) + tuple(extra), fatal=fatal, frame=frame,
                   exit_code=self.exit_code, exit_signal=self.sig, crash_file=self.crash_path,
                   python_frames=py_frames, native_frames=native)

    def _traceback_for(self, type_id: str, fatal: bool) -> _Traceback | None:
        s = self.s
        if type_id in ("segfault", "abort"):           # faulthandler's stack, when Python had one
            for tb in (s._tb_last, s._tb_first):
                if tb is not None and tb.recent_first:
                    return tb
            return None
        if type_id == "python_error":
            return s._tb_last if fatal else (s._tb_first or s._tb_last)
        for tb in (s._tb_last, s._tb_first):           # a traceback whose exception names the cause
            if tb is not None and type_id in tb.types:
                return tb
        return None


# --- summaries ------------------------------------------------------------------------------
def _advice(type_id: str) -> str:
    return TYPES[type_id].advice



def _at(frame: int | None, after: int | None, saved: int = 0) -> str:
    if frame is not None:
        return f" at frame {frame}"
    if after is not None:
        return f" after frame {after} was saved"
    if saved:                            # 5.0 prints no frame numbers at its default log level
        return f" after {saved} frame{'s were' if saved > 1 else ' was'} saved"
    return ""


def _quote(text: str, limit: int = 160) -> str:
    text = _GLOG.sub("", text.strip(), count=1)
    return text if len(text) <= limit else text[:limit - 1] + "…"


_UNQUOTED_MISSING = re.compile(r"[Ff]ile (\S.*?) does not exist")


def _path_in(text: str) -> str | None:
    m = re.search(r"""['"]([^'"]+)['"]""", text) or _UNQUOTED_MISSING.search(text)
    return m.group(1) if m else None


def _user_frame(frames: tuple[tuple[str, int, str], ...]) -> tuple[str, int, str] | None:
    """The innermost frame outside Python's library (what the user wrote), else the innermost."""
    for f in reversed(frames):
        p = f[0].replace("\\", "/")
        if "/lib/python" not in p and "/site-packages/" not in p and not p.startswith("<frozen"):
            return f
    return frames[-1] if frames else None


def _where(frames: tuple[tuple[str, int, str], ...]) -> str:
    f = _user_frame(frames)
    return f", in {f[0].replace(chr(92), '/').rsplit('/', 1)[-1]} line {f[1]}, {f[2]}()" if f else ""


def _summary(type_id: str, fatal: bool, ctx: _Context, at: str, tb: _Traceback | None,
             py_frames: tuple[tuple[str, int, str], ...]) -> str:
    s = ctx.s
    first = s.first(type_id)
    text = _quote(first.text) if first else ""
    sig = ctx.sig
    how = f" ({ctx.how})" if ctx.how else ""
    if type_id == "ok":
        n = s.frames_saved + s.frames_skipped
        return f"Render finished: {n} frame{'s' if n != 1 else ''} saved" + (
            f" ({s.frames_skipped} already existed)" if s.frames_skipped else "") + "."
    if type_id == "gpu_oom":
        call = None
        for f in s._first.get("gpu_oom", ()):
            m = _GPU_CALL.search(f.text)
            if m:
                call = m.group(1)
                break
        what = f"GPU out of memory in {call}" if call else f"GPU out of memory ({text})"
        return f"{what}{at}: {_advice(type_id)}."
    if type_id == "gpu_error":
        best = next((f for f in s._first.get("gpu_error", ()) if "Refer to the Cycles" not in f.text), first)
        return f"GPU error{at}: {_quote(best.text) if best else 'see the log'}; {_advice(type_id)}."
    if type_id == "host_oom":
        if text:
            return f"The host ran out of memory{at} ({text}): {_advice(type_id)}."
        return f"Blender was killed by the kernel OOM killer{at}: {_advice(type_id)}."
    if type_id in ("denoiser_unavailable", "scene_limit", "engine_unavailable", "blend_invalid", "output_error"):
        label = {"denoiser_unavailable": "The denoiser is unavailable", "engine_unavailable": "The render engine is unavailable",
                 "scene_limit": "The scene exceeds a limit of Cycles",
                 "blend_invalid": "The .blend cannot be read", "output_error": "The output could not be written"}[type_id]
        if type_id == "output_error" and text:
            path = next((p for f in s._first.get(type_id, ()) if (p := _path_in(f.text))), None)
            if path:
                label = f"The output {path!r} could not be written"
        return f"{label}{at if type_id == 'output_error' else ''} ({text}): {_advice(type_id)}."
    if type_id == "missing_file":
        blend = s.first("missing_file", "blend")
        if fatal and blend is not None:
            path = _path_in(blend.text)
            return f"The .blend file {path!r} cannot be read ({_quote(blend.text)}): check the path and that it was synced to this host." if path else \
                f"The .blend file cannot be read ({_quote(blend.text)}): check the path."
        paths = []
        for f in s._first.get("missing_file", ()):
            p = _path_in(f.text)
            if p and p not in paths:
                paths.append(p)
        name = ", ".join(repr(p) for p in paths[:3]) or f"({text})"
        if fatal:
            return f"A missing input file {name} stopped the render{_where(py_frames)}: {_advice(type_id)}."
        return (f"Missing input file {name}: the render went on without it, so the frames are wrong; "
                f"{_advice(type_id)}.")
    if type_id == "python_error" and not fatal and tb is None and s.count("python_error") == s.count(
            "python_error", "report"):
        n = s.count("python_error")
        more = f" ({n - 1} more such line{'s' if n > 2 else ''})" if n > 1 else ""
        return f"A script reported an error{at} and the render went on: {text!r}{more}; {_advice(type_id)}."
    if type_id == "python_error":
        exc = f"{tb.exc_type}: {_quote(tb.message or '', 120)}" if tb and tb.exc_type else text
        where = _where(tuple(tb.frames)) if tb else ""
        if tb and tb.handler:
            origin = f"in the {tb.handler} handler"
        elif s.count("python_error", "script"):
            origin = "in a script"
            exc = exc or _quote(s.first("python_error", "script").text)  # type: ignore[union-attr]
        else:
            origin = ""
        if fatal:
            return f"Python error{origin and ' ' + origin}{at}{how}: {exc}{where}; {_advice(type_id)}."
        return f"Python error{origin and ' ' + origin}{at}: {exc}{where}; the render went on ({_advice(type_id)})."
    if type_id in ("segfault", "abort"):
        detail = ""
        if ctx.crash is not None and ctx.crash.exception and ctx.crash.exception not in (ctx.how or ""):
            detail = f" {ctx.crash.exception}"
        elif text and not ctx.how:
            detail = f" ({text})"
        name = "crashed" if type_id == "segfault" else "aborted"
        return f"Blender {name}{how}{detail}{at}{_where(py_frames)}: {_advice(type_id)}."
    if type_id == "killed":
        return f"Blender was killed{how}{at} with no other evidence: {_advice(type_id)}."
    if type_id == "interrupted":
        if not fatal:
            return (f"The render was interrupted{at} ({text}) and went on: the frame in flight was probably "
                    "saved incomplete; check it or render it again.")
        return f"The render was interrupted{how}{at}" + (f" ({text})" if text else "") + "."
    if type_id == "stall":
        return f"Blender stopped making progress{at} and was stopped by the healer: {_advice(type_id)}."
    # unknown
    last_err = s._last.get("unknown") or s._first.get("unknown")
    if last_err:
        return f"Blender failed{how}{at} and no known pattern explains it; last error line: {_quote(last_err[-1].text)!r}."
    if ctx.exit_code is None and sig is None:
        return f"The output stops{at} with no error and no exit status: Blender was probably killed; pass the exit status."
    last = s.tail[-1][1] if s.tail else ""
    return f"Blender failed{how}{at} and no known pattern explains it" + (f"; last line: {_quote(last)!r}." if last else ".")
