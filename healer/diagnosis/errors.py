"""Typed render errors: one stable ID per failure class, each carrying its evidence.

Usage::

    err = classify(evidence)            # healer.classify -> a RenderError subclass instance
    err.type, err.fatal, err.summary    # "gpu_oom", True, "GPU out of memory: ..."
    err.to_dict()                       # the `renderwatch classify --json` shape

What each type is, how it ranks and what the healer does about it: `healer.diagnosis.catalog`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from healer.diagnosis.catalog import TYPES


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

    def __init_subclass__(cls, **kw: object) -> None:
        # The row of the catalog is the truth: a class whose type is not there is a bug, found at import.
        super().__init_subclass__(**kw)
        row = TYPES[cls.type]
        cls.severity = row.severity
        cls.__doc__ = cls.__doc__ or row.doc



# One class per row of healer.diagnosis.catalog; the class name is what Sentry and the webhooks show.
class OkError(RenderError):
    type = "ok"


class SegfaultError(RenderError):
    type = "segfault"


class AbortError(RenderError):
    type = "abort"


class KilledError(RenderError):
    type = "killed"


class InterruptedError(RenderError):  # noqa: A001 - the name incidents have always carried
    type = "interrupted"


class HostOomError(RenderError):
    type = "host_oom"


class GpuOomError(RenderError):
    type = "gpu_oom"


class GpuError(RenderError):
    type = "gpu_error"


class PythonError(RenderError):
    type = "python_error"


class MissingFileError(RenderError):
    type = "missing_file"


class BlendInvalidError(RenderError):
    type = "blend_invalid"


class OutputError(RenderError):
    type = "output_error"


class DenoiserUnavailableError(RenderError):
    type = "denoiser_unavailable"


class SceneLimitError(RenderError):
    type = "scene_limit"


class EngineUnavailableError(RenderError):
    type = "engine_unavailable"


class CpuFallbackError(RenderError):
    type = "cpu_fallback"


class SuspectFrameError(RenderError):
    type = "suspect_frame"


class StallError(RenderError):
    type = "stall"


class UnknownError(RenderError):
    type = "unknown"


ERROR_TYPES: dict[str, type[RenderError]] = {c.type: c for c in RenderError.__subclasses__()}


def error_class(type_id: str) -> type[RenderError]:
    """The class for a stable ID; KeyError names the valid IDs."""
    try:
        return ERROR_TYPES[type_id]
    except KeyError:
        raise KeyError(f"unknown error type {type_id!r}; valid: {', '.join(ERROR_TYPES)}") from None
