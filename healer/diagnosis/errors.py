"""Typed render errors: one stable ID per failure class, each carrying its evidence.

Usage::

    err = classify(evidence)            # healer.classify -> a RenderError subclass instance
    err.type, err.fatal, err.summary    # "gpu_oom", True, "GPU out of memory: ..."
    err.to_dict()                       # the `renderwatch classify --json` shape
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Finding:
    """One piece of evidence: its type ID, 1-based line number in the log (0 = not from the log), text."""

    type: str
    line: int
    text: str

    def to_dict(self) -> dict:
        return {"type": self.type, "line": self.line, "text": self.text}


@dataclass(frozen=True)
class RenderError:
    """Base class. Subclasses fix `type` (stable ID) and the default `fatal`/`severity`."""

    summary: str = ""
    findings: tuple[Finding, ...] = field(default_factory=tuple)
    fatal: bool = True
    frame: int | None = None            # frame in flight when it happened, if known
    exit_code: int | None = None
    exit_signal: int | None = None
    crash_file: str | None = None
    python_frames: tuple[tuple[str, int, str], ...] = ()   # (filename, lineno, function), outermost first
    native_frames: tuple[str, ...] = ()                      # raw native backtrace lines

    type = "unknown"          # class attribute: stable ID
    severity = "error"        # "error" | "warning" | "info"

    def __post_init__(self) -> None:
        # An error the render went on after (a missing texture, a handler exception) is a warning.
        if not self.fatal and type(self).severity == "error":
            object.__setattr__(self, "severity", "warning")

    def to_dict(self) -> dict:
        return {
            "type": self.type, "fatal": self.fatal, "summary": self.summary,
            "severity": self.severity, "frame": self.frame, "exit_code": self.exit_code,
            "exit_signal": self.exit_signal, "crash_file": self.crash_file,
            "findings": [f.to_dict() for f in self.findings],
            "python_frames": [list(f) for f in self.python_frames],
        }


def _error(type_id: str, doc: str, severity: str = "error") -> type[RenderError]:
    # No new fields: the subclass inherits the frozen dataclass's __init__/__eq__/__repr__ (which
    # names the subclass), so it needs no @dataclass of its own (that would cost ~1 ms per class at import).
    cls = type(_camel(type_id), (RenderError,), {"__doc__": doc, "type": type_id, "severity": severity,
                                                 "__module__": __name__})
    globals()[cls.__name__] = cls   # importable (and picklable) under its class name too: SegfaultError
    return cls


def _camel(type_id: str) -> str:
    return "".join(p.capitalize() for p in type_id.split("_")) + ("" if type_id.endswith("error") else "Error")


Ok = _error("ok", "The render finished and nothing went wrong.", "info")
Segfault = _error("segfault", "Blender crashed with SIGSEGV / an access violation.")
Abort = _error("abort", "Blender aborted (SIGABRT, failed assert, uncaught C++ exception).")
Killed = _error("killed", "Blender was killed from outside (SIGKILL) with no other evidence.")
Interrupted = _error("interrupted", "The render was interrupted on purpose (Ctrl-C, SIGTERM, SIGINT).", "warning")
HostOom = _error("host_oom", "The host ran out of memory (malloc failures, bad_alloc, kernel OOM kill).")
GpuOom = _error("gpu_oom", "The GPU ran out of memory.")
GpuError = _error("gpu_error", "A GPU fault other than out-of-memory (illegal address, launch failure, OptiX).")
PythonError = _error("python_error", "A Python exception in a script or handler.")
MissingFile = _error("missing_file", "An input file (the .blend, a texture, a library, a cache) is missing.")
BlendInvalid = _error("blend_invalid", "The .blend cannot be read (corrupt, unsupported or newer format).")
OutputError = _error("output_error", "The output could not be written.")
DenoiserUnavailable = _error("denoiser_unavailable", "The scene asks for a denoiser this build or CPU lacks.")
EngineUnavailable = _error("engine_unavailable", "The render engine is not available (no Cycles, no display).")
Stall = _error("stall", "Blender stopped making progress (hang) and was stopped by the healer.")
Unknown = _error("unknown", "Blender failed and no known pattern explains why.")

ERROR_TYPES: dict[str, type[RenderError]] = {
    c.type: c for c in (Ok, Segfault, Abort, Killed, Interrupted, HostOom, GpuOom, GpuError, PythonError,
                        MissingFile, BlendInvalid, OutputError, DenoiserUnavailable, EngineUnavailable,
                        Stall, Unknown)
}


def error_class(type_id: str) -> type[RenderError]:
    """The class for a stable ID; KeyError names the valid IDs."""
    try:
        return ERROR_TYPES[type_id]
    except KeyError:
        raise KeyError(f"unknown error type {type_id!r}; valid: {', '.join(ERROR_TYPES)}") from None
