"""One supervised job as the supervisor's parts (pre-flight, one attempt, the endings) share it: what
it was given (`JobParts`: the request and the collaborators, frozen), the state of its run
(`JobContext`: the ledger, the running Blender, what its frames showed so far), and the few helpers
every part needs (say, warn, the incident info, the metrics of the ledger).

Usage::

    ctx = JobContext(JobParts(req=request, launcher=..., probes=..., ...), job=request.job)
    ctx.parts.launcher.spawn(argv, env=env); ctx.ledger; ctx.say("restart: segfault")
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from blender_hooks.farm import FarmIdentity
from healer.diagnosis import errors
from healer.diagnosis.catalog import REPORT_TYPES
from healer.incidents.model import RENDER_WARNING
from healer.supervising.ledger import Ledger
from healer.supervising.openjd import OpenJDLines
from healer.supervising.progress import ProgressDisplay
from healer.supervising.seams import HostProbes, IncidentSink, Launcher, RunningBlender, SupervisorMetrics

if TYPE_CHECKING:
    import asyncio

    from healer.images.facts import EmptyCells
    from healer.images.judge import Expected, JobFrames
    from healer.supervising.logcapture import LogCapture
    from healer.supervising.telemetry import AgentEvents

log = logging.getLogger("healer.supervising.supervisor")


@dataclass(frozen=True)
class RenderRequest:
    scene: str
    frames: tuple[int, ...] | None = None     # None: the scene's own frame range
    output: str | None = None
    blender: str = "blender"
    blender_args: tuple[str, ...] = ()
    stall_timeout: float | None = None
    strict: bool = False
    job: str | None = None
    origin: str = "cli"                        # "service": the healer service resumes it after a restart
    fresh: bool = False                        # forget verified frames: render everything again
    after_args: tuple[str, ...] = ()           # Blender arguments that run after the render (`-a --python x.py`)
    range_start: int | None = None             # frames None: the scene's range, from here (`-s N -a`)
    range_end: int | None = None               # ... to here (`-e N -a`)
    range_step: int = 1
    farm: FarmIdentity | None = None           # the farm manager's identity of this job (farm.py)


@dataclass
class AttemptState:
    """What the output of the running attempt told so far."""

    current_frame: int | None = None
    frame_started_at: float | None = None
    crash_file: str | None = None
    last_progress_at: float = 0.0
    last_progress_text: str = ""
    stalled: str | None = None
    disk_full: str | None = None          # output directory found full after a failed verification
    expected: Expected | None = None      # what each frame should be (the hooks' render settings line)
    checks: list[tuple[int, float | None, asyncio.Future]] = field(default_factory=list)   # frame inspections


@dataclass(frozen=True)
class JobParts:
    """What the supervisor of one job is given, fixed for its run: the request and the collaborators."""

    req: RenderRequest
    launcher: Launcher
    probes: HostProbes
    incidents: IncidentSink
    metrics: SupervisorMetrics | None
    display: ProgressDisplay | None
    env: dict[str, str]
    kill_grace_s: float
    probe_interval_s: float
    clock: Callable[[], float]                 # monotonic seconds: probes, stall detection
    wall: Callable[[], float]                  # epoch seconds: the ledger, the report, the policy window
    echo: Callable[[str], None] | None = None  # Blender's own lines, passed through as they come
    openjd: OpenJDLines | None = None          # progress/status/fail lines for Open Job Description
    check_frames: bool = True                  # inspect each saved frame (suspects.py)


@dataclass
class JobContext:
    """The run of one job: its collaborators (`parts`) and what changes while it runs."""

    parts: JobParts
    job: str | None = None
    ledger: Ledger | None = None
    frame_times: list[float] = field(default_factory=list)
    cancel_requested: bool = False
    wake: asyncio.Event | None = None          # set by a cancel: ends a restart's back-off early (made on the loop)
    proc: RunningBlender | None = None
    attempt: AttemptState = field(default_factory=AttemptState)
    started_at: float = 0.0
    announced_complete: bool = False           # an earlier healer announced render.completed already
    ledger_save_errors: int = 0                # saves that failed (a full state disk): said once, render goes on
    gpu: int | None = None                     # the GPU the healer service placed this job on
    agent: AgentEvents | None = None           # the healer's own events for the host's agent
    logs: LogCapture | None = None             # Blender's lines, kept for the agent (logcapture.py)
    frame_facts: JobFrames | None = None       # this run's inspected frames (made by the first review)
    frame_verdicts: dict[int, tuple[str, ...]] = field(default_factory=dict)
    frame_cells: dict[tuple[str, int], EmptyCells | None] = field(default_factory=dict)  # (path, size): decoded grids
    raster_gl: tuple[str, str] | None = None   # EEVEE/Workbench: (software | hardware, evidence), once known

    @property
    def cancelled(self) -> bool:
        return self.cancel_requested

    # -- telling --------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        if self.parts.display:
            self.parts.display.message(text)
        else:
            log.info("%s: %s", self.job, text)

    def show(self) -> None:
        led = self.ledger
        if self.parts.display and led:
            self.parts.display.update(led.completed_count(), led.restarts, self.attempt.current_frame)
        if self.parts.openjd and led:
            self.parts.openjd.progress(led.completed_count(), len(led.frames_requested))

    def update_metrics(self) -> None:
        led = self.ledger
        if self.parts.metrics and led:
            self.parts.metrics.frames_completed.labels(led.job).set(led.completed_count())

    def info(self, **extra: Any) -> dict:
        """The job as incidents describe it."""
        led = self.ledger
        info: dict[str, Any] = {"job": self.job, "scene": os.path.abspath(self.parts.req.scene)}
        if self.parts.req.farm is not None:
            info["farm"] = self.parts.req.farm.to_dict()
        if led is not None:
            fr = led.frames_requested
            info.update(frames=[fr[0], fr[-1]] if fr else [], frames_total=len(fr),
                        frames_completed=led.completed_count(), restarts=led.restarts,
                        attempt=led.attempts[-1].attempt if led.attempts else 0,
                        duration_s=self.parts.wall() - self.started_at)
        info.update({k: v for k, v in extra.items() if v is not None})
        return info

    # -- warnings (reported, not fatal unless --strict) -----------------------------------------
    def warning_types(self) -> tuple[str, ...]:
        led = self.ledger
        return tuple(sorted({w["type"] for w in led.warnings if w.get("type") in REPORT_TYPES})) if led else ()

    def record_warnings(self, error: errors.RenderError) -> None:
        seen = []
        if error.type in REPORT_TYPES and not error.fatal:
            seen.append((error.type, error.summary))
        for f in error.findings:
            if f.type in REPORT_TYPES and (f.type, f.text) not in seen:
                seen.append((f.type, f.text))
        for etype, text in seen:
            self.warn(etype, text, error=error)

    def warn(self, etype: str, message: str, *, error: errors.RenderError | None = None,
             incident: bool = True, frame: int | None = None) -> None:
        led = self.ledger
        if led is None or any(w["type"] == etype and w["message"] == message for w in led.warnings):
            return
        led.warnings.append({"type": etype, "message": message, "at": self.parts.wall()})
        self.say(f"warning: {etype}: {message}")
        if incident:
            if error is None and etype in errors.ERROR_TYPES:
                error = errors.error_class(etype)(summary=message, fatal=False)
            self.parts.incidents.emit(RENDER_WARNING, self.info(message=message, frame=frame), error)
