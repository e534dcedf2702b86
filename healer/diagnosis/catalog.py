"""The one table of error types: what each is, how it ranks, what the healer does about it.

Everything else reads this table: the classifier's precedence (`CAUSE_ORDER`, `CRASH_ORDER`) and the
advice its summaries end with, the policy's default rules (`healer.supervising.policy`), the exit
status of a job that gives up on a type, and the classes in `healer.diagnosis.errors` (whose names
Sentry and the webhooks carry). A new type is one row here and one class there; `tests/healer/diagnosis/test_errors.py`
checks that the two agree.

Usage::

    from healer.diagnosis.catalog import TYPES, exit_status
    TYPES["gpu_oom"].policy          # "retry_gpu_then_cpu"
    exit_status("missing_file")      # 3: an input error that restarting cannot fix
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Exit statuses of `renderwatch render` / `exec` (their table is in README's "Operations").
from healer.diagnosis.exits import (  # noqa: F401 (names read from here)
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INPUT,
    EXIT_OK,
    EXIT_STRICT,
    EXIT_USAGE,
)


@dataclass(frozen=True)
class ErrorType:
    """One row: a stable type ID and everything the healer derives from it."""

    id: str
    doc: str                        # what it is (the class docstring)
    rank: str                       # "cause": evidence in the output, first row wins; "crash": how the
                                    # process ended, first row wins; "other": decided elsewhere
    policy: str                     # the default rule's kind (healer.supervising.policy.KINDS); "" for ok
    exit_status: int = EXIT_FAILED  # of a job that gives up on it
    severity: str = "error"         # of the error when fatal: error | warning | info
    advice: str = ""                # what to do: the classifier's summaries end with it
    fix: str = ""                   # fail_fast / report_only: what the user must fix (the give-up reason ends with it)
    rule: dict[str, Any] = field(default_factory=dict)   # settings of the default rule beyond the kind
    reportable: bool = False        # a finding of this type on a run that went on is reported (--strict fails)


_ROWS = (
    ErrorType("ok", "The render finished and nothing went wrong.", "other", "", EXIT_OK, "info"),
    # fatal causes found in the output, in precedence order (root cause over symptom)
    ErrorType("gpu_oom", "The GPU ran out of memory.", "cause", "retry_gpu_then_cpu",
              advice="reduce texture sizes, use fewer/simpler objects or render this frame on the CPU"),
    ErrorType("gpu_error", "A GPU fault other than out-of-memory (illegal address, launch failure, OptiX).",
              "cause", "retry_gpu_then_cpu",
              advice="update the GPU driver and retry; if it repeats, render this frame on the CPU"),
    ErrorType("host_oom", "The host ran out of memory (malloc failures, bad_alloc, kernel OOM kill).",
              "cause", "restart_fewer_threads", advice="render with fewer threads or on a host with more memory"),
    ErrorType("denoiser_unavailable", "The scene asks for a denoiser this build or CPU lacks.", "cause",
              "fail_fast", EXIT_INPUT,
              advice="turn denoising off in the scene (cycles.use_denoising = False) or use a Blender build with "
                     "OpenImageDenoise on a CPU with SSE4.1",
              fix="this Blender build or CPU has no denoiser: turn denoising off in the scene or use a build "
                  "with OpenImageDenoise"),
    ErrorType("scene_limit", "The scene exceeds a limit of the renderer that no device lifts (emissive triangles).",
              "cause", "fail_fast", EXIT_INPUT,
              advice="enable the Light Tree (Cycles > Light Paths) or turn Emission Sampling off on some emissive "
                     "materials",
              fix="the scene exceeds a Cycles limit on every device: enable the Light Tree or turn Emission Sampling "
                  "off on some emissive materials"),
    ErrorType("engine_unavailable", "The render engine is not available (no Cycles, no display).", "cause",
              "fail_fast", EXIT_INPUT,
              advice="enable the engine (Cycles add-on) or give EEVEE/Workbench a GPU/EGL display, or render "
                     "with Cycles",
              fix="the render engine is not available: enable the add-on (Cycles) or use an engine that runs "
                  "headless"),
    ErrorType("blend_invalid", "The .blend cannot be read (corrupt, unsupported or newer format).", "cause",
              "fail_fast", EXIT_INPUT,
              advice="re-save the .blend with this Blender version (or an older one) and check it is complete",
              fix="the .blend cannot be read: re-save it with this Blender version or use the Blender it was "
                  "made with"),
    ErrorType("missing_file", "An input file (the .blend, a texture, a library, a cache) is missing.", "cause",
              "fail_fast", EXIT_INPUT, advice="restore or relink it",
              fix="an input file is missing: fix the path or restore the file", reportable=True),
    ErrorType("output_error", "The output could not be written.", "cause", "fail_fast", EXIT_INPUT,
              advice="make sure the output directory exists, is writable and has free space",
              fix="the output cannot be written: check the output path exists, is writable and has free space"),
    ErrorType("python_error", "A Python exception in a script or handler, or an `Error:` line a script printed "
              "before carrying on.", "cause", "report_only",
              advice="fix the script", fix="a Python script or handler raised; see the traceback",
              reportable=True),
    # how the process ended, in precedence order
    ErrorType("segfault", "Blender crashed with SIGSEGV / an access violation.", "crash", "restart",
              advice="it is retried; if it crashes again at the same frame, suspect the scene or an add-on/script"),
    ErrorType("abort", "Blender aborted (SIGABRT, failed assert, uncaught C++ exception).", "crash", "restart",
              advice="it is retried; if it aborts again at the same frame, suspect the scene or an add-on/script"),
    # Stopped on purpose by someone else (a farm's cancel, an operator): not restarted, and the job
    # ends as cancelled (130), like the healer's own cancel: it is not a configuration error (3).
    ErrorType("interrupted", "The render was interrupted on purpose (Ctrl-C, SIGTERM, SIGINT).", "crash",
              "fail_fast", EXIT_CANCELLED, "warning",
              fix="Blender was interrupted from outside (Ctrl-C or SIGTERM)"),
    ErrorType("killed", "Blender was killed from outside (SIGKILL) with no other evidence.", "crash", "restart",
              advice="check the kernel log and cgroup memory.events for an OOM kill, or who sent the signal"),
    # decided by the supervisor, or by nothing
    ErrorType("cpu_fallback", "The scene asks for GPU rendering but Cycles renders on the CPU (no GPU device "
              "enabled or found, or the compute device type is None).", "other", "report_only", severity="warning",
              advice="enable a GPU device of the compute device type in the preferences Blender runs with "
                     "(userpref.blend or a --python script), or check the driver with `nvidia-smi`",
              fix="Cycles rendered on the CPU where the scene asks for a GPU", reportable=True),
    ErrorType("suspect_frame", "A saved frame looks wrong: blank or transparent where the job's other frames are "
              "not, the wrong resolution or channels, or far faster than the job's frames.", "other",
              "report_only", severity="warning",
              advice="it was rendered again once and came out the same: look at the frame and at the GPU",
              fix="a saved frame looks wrong after two renders", reportable=True),
    ErrorType("stall", "Blender stopped making progress (hang) and was stopped by the healer.", "other", "restart",
              advice="it is retried; if it hangs again, look for a hanging handler, a network mount or the GPU "
                     "driver"),
    ErrorType("unknown", "Blender failed and no known pattern explains why.", "other", "restart",
              rule={"max_restarts": 3}),
)

TYPES: dict[str, ErrorType] = {row.id: row for row in _ROWS}
CAUSE_ORDER: tuple[str, ...] = tuple(r.id for r in _ROWS if r.rank == "cause")
CRASH_ORDER: tuple[str, ...] = tuple(r.id for r in _ROWS if r.rank == "crash")
REPORT_TYPES: frozenset[str] = frozenset(r.id for r in _ROWS if r.reportable)
FAIL_FAST_TYPES: frozenset[str] = frozenset(r.id for r in _ROWS if r.policy == "fail_fast")


def exit_status(type_id: str) -> int:
    """The exit status of a job that gives up on `type_id` (unknown IDs: 1)."""
    row = TYPES.get(type_id)
    return row.exit_status if row is not None and row.id != "ok" else EXIT_FAILED
