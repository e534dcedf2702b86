"""One attempt's outcome, decided in one place: `settle` is a pure function of what the attempt
returned (`AttemptResult`: what the classifier said, the exit status, what the frames on disk say,
what the user asked), and the supervisor writes what it decided into the ledger.

Usage::

    result = await run_attempt(ctx, ledger, launched)     # attempt.py: an AttemptResult, nothing written
    out = settle(result)                                  # out.error: the classified end the policy reads
    out.frames_rendered, out.frame_in_flight, out.incident
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from healer.diagnosis import errors
from healer.diagnosis.errors import OkError, OutputError, RenderError, StallError, UnknownError
from healer.incidents.model import RENDER_CRASHED, RENDER_STALLED

# A clean exit, an unexplained one or an output error are what a full disk looks like from Blender's side.
_DISK_FULL_SHOWS_AS = (OkError.type, UnknownError.type, OutputError.type)


@dataclass(frozen=True)
class FrameOnDisk:
    """One frame of the attempt checked on disk after Blender exited (Ledger.check_frame)."""

    frame: int
    ok: bool                  # a whole file: verified
    removed: bool = False     # a partial file, removed: it renders again


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt's Blender did, as values: nothing in the ledger is written from it yet."""

    classified: RenderError                       # what the classifier said of the exit
    exit_code: int | None = None
    exit_signal: int | None = None
    frames_saved: tuple[int, ...] = ()            # verified from their `Saved:` lines, in order
    on_disk: tuple[FrameOnDisk, ...] = ()         # the attempt's frames checked on disk once it exited
    verified_after: frozenset[int] = frozenset()  # the ledger's verified frames, after the checks and the review
    frame_in_flight: int | None = None            # the frame it had started and not saved when it ended
    frame_started_at: float | None = None         # clock time of that frame's start marker
    frame_age_s: float | None = None              # how far into that frame it ended (the recorder's clock)
    last_started: int | None = None               # the frame of its last start marker (or progress line)
    stalled: str | None = None                    # the probe loop (or a kick) stopped it as stalled: why
    disk_full: str | None = None                  # a save that failed verification found this directory full
    cancelled: bool = False                       # the user asked to cancel
    crash_file: str | None = None
    log_tail: tuple[str, ...] = ()


@dataclass(frozen=True)
class AttemptOutcome:
    """What the attempt's end was decided to be: the ledger's attempt record and the policy's input."""

    error: RenderError
    frames_rendered: tuple[int, ...]
    frame_in_flight: int | None
    frame_age_s: float | None
    incident: str | None          # RENDER_CRASHED | RENDER_STALLED: the incident to emit, None for none


def settle(r: AttemptResult) -> AttemptOutcome:
    """The attempt's outcome from the classifier's result, the frames on disk and the user's request."""
    error = r.classified
    if r.stalled and error.type == StallError.type:
        error = dataclasses.replace(error, summary=f"{r.stalled}; {error.summary}" if error.summary else r.stalled)
    if r.cancelled:
        error = errors.InterruptedError(summary="cancelled", exit_code=r.exit_code, exit_signal=r.exit_signal)
    if error.frame is None and r.frame_in_flight is not None:
        error = dataclasses.replace(error, frame=r.frame_in_flight)
    if r.disk_full and not r.cancelled and error.type in _DISK_FULL_SHOWS_AS:
        # Blender prints `Saved:` and exits 0 even when the write hit a full disk: trust the disk.
        error = OutputError(summary=f"no space left on {r.disk_full}: Blender reported frames saved but the files "
                                    "are empty or incomplete; free space there and run the same command again",
                            exit_code=r.exit_code, exit_signal=r.exit_signal, frame=r.frame_in_flight,
                            findings=error.findings)
    rendered = list(r.frames_saved)
    for d in r.on_disk:
        if d.ok and d.frame not in rendered:
            rendered.append(d.frame)        # saved, but its line was missed
        elif not d.ok and d.removed:
            rendered = [f for f in rendered if f != d.frame]    # a partial file: renders again
    in_flight = r.frame_in_flight if r.frame_in_flight not in r.verified_after else None
    incident = None
    if error.type != OkError.type and error.fatal and not r.cancelled:
        incident = RENDER_STALLED if error.type == StallError.type else RENDER_CRASHED
    return AttemptOutcome(error=error, frames_rendered=tuple(rendered), frame_in_flight=in_flight,
                          frame_age_s=r.frame_age_s if in_flight is not None else None, incident=incident)
