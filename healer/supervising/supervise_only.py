"""Supervise a Blender that someone else drives: no frames in its command line, nothing to restart.

The Deadline Cloud adaptor starts `$BLENDER_EXECUTABLE --background --python-exit-code 1 --python
blender_client.py --python-use-system-env` and renders frame after frame over a socket; a restart
would break its session. So here renderwatch only watches: the hooks and the frame marker are loaded
(the agent still counts every frame), Blender's output passes through unchanged (the adaptor reads
`BlenderClient: Finished Rendering Frame N` from it), the exit is classified and reported, and
Blender dies with its supervisor. The exit status is Blender's (128+N when a signal N killed it).
Blender's output is read and its exit classified as under the supervisor (watch.OutputWatch).

Each saved frame is inspected as it is saved, as under `renderwatch exec` (healer.supervising.suspects),
and judged then against the frames saved before it (FrameWatch): nothing can be rendered again here, so
a frame that looks wrong (blank, transparent, partial, the wrong size or channels) is a `suspect_frame`
warning straight away, and a silent CPU fallback a `cpu_fallback` one.

Usage::

    code = await supervise_only(["blender", "--background", "--python", "client.py"], env=os.environ)
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from blender_hooks.farm import FarmIdentity
from healer.diagnosis import errors
from healer.diagnosis.classify import LogScanner
from healer.diagnosis.errors import RenderError
from healer.images.facts import EmptyCells
from healer.images.judge import Expected, JobFrames, Suspect
from healer.images.read import inspect_frame
from healer.incidents.model import RENDER_COMPLETED, RENDER_CRASHED, RENDER_WARNING
from healer.supervising import probes
from healer.supervising.launch import ProcessLauncher, exit_status
from healer.supervising.logcapture import LogCapture
from healer.supervising.seams import IncidentSink, Launcher, NoIncidents
from healer.supervising.spawn import MARKER_EXPR, attempt_env, hooks_startup
from healer.supervising.suspects import CHECK_WAIT_S, judge_frames, parse_settings, raster_gl_saved
from healer.supervising.telemetry import AgentEvents
from healer.supervising.watch import OutputWatch
from kernel.files import write_atomic

log = logging.getLogger("healer.supervising.supervise_only")


def supervised_argv(argv: Sequence[str], hooks: str | None) -> list[str]:
    """Blender's own command line with the frame marker and the hooks first (before any of its scripts)."""
    exe, *rest = argv
    return [exe, "--python-expr", MARKER_EXPR, *(["--python", hooks] if hooks else []), *rest]


async def supervise_only(argv: Sequence[str], *, env: dict[str, str], incidents: IncidentSink | None = None,
                         echo: Callable[[str], None] | None = None, say: Callable[[str], None] | None = None,
                         launcher: Launcher | None = None, farm: FarmIdentity | None = None,
                         report: str | None = None, job: str | None = None, check_frames: bool = True,
                         gl_driver: Callable[[int], tuple[str, str] | None] | None = None) -> int:
    incidents = incidents or NoIncidents()
    blender: Launcher = launcher or ProcessLauncher()
    say = say or (lambda text: print(f"renderwatch: {text}", file=sys.stderr, flush=True))
    job = job or f"supervised-{uuid.uuid4().hex[:12]}"
    out = OutputWatch(LogScanner(), echo=echo, say=say)
    scanner = out.scanner
    saved: list[str] = []
    crash_file: list[str] = []
    current: int | None = None      # the frame Blender renders (its marker or progress lines)
    info: dict[str, Any] = {"job": job, "scene": "", "mode": "supervise-only"}
    if farm is not None:
        info["farm"] = farm.to_dict()

    def warn(etype: str, message: str, frame: int | None = None) -> None:
        say(f"warning: {etype}: {message}")
        incidents.emit(RENDER_WARNING, {**info, "message": message, **({"frame": frame} if frame is not None else {})},
                       errors.error_class(etype)(summary=message, fatal=False))

    watch = FrameWatch(job, env, warn, gl_driver)
    logs = LogCapture(job, env)

    def on_line(line: str, _now: float) -> None:
        nonlocal current
        ev = out.feed(line)
        if ev.kind in ("frame_start", "progress") and ev.frame is not None:
            current = ev.frame
        if ev.kind != "frame_start" and ev.kind != "settings":      # the frame's log (logcapture.py)
            logs.feed(line, scanner.line_level, current, 1, scanner.frame_in_flight is not None)
        if ev.kind == "saved" and ev.path:
            saved.append(ev.path)
            if check_frames:
                watch.saved(current if current is not None else len(saved), ev.path)
        elif ev.kind == "crash_file" and ev.path:
            crash_file.append(ev.path)
        elif ev.kind == "settings":
            watch.settings(ev.text)

    incidents.job_started(info)
    t0 = time.time()
    spawned = blender.spawn(supervised_argv(argv, hooks_startup()), env=attempt_env(job, 1, env))
    proc = await blender.attach(spawned, on_line)
    watch.pid = proc.pid
    rc = await proc.wait()
    code, sig = exit_status(rc)
    error: RenderError = out.classify(rc, crash_file[-1] if crash_file else None)
    info.update(frames_completed=len(saved), duration_s=time.time() - t0, log_tail=list(proc.tail))
    await watch.finish()
    logs.close()
    if error.type != "ok":
        info["frame_log"] = logs.frame_tail(scanner.frame_in_flight)
    if error.type != "ok" and error.fatal:
        say(f"Blender ended: {error.type}: {error.summary}")
        incidents.emit(RENDER_CRASHED, {**info, "message": error.summary}, error)
    elif error.type != "ok":
        say(f"warning: {error.type}: {error.summary}")
        incidents.emit(RENDER_WARNING, {**info, "message": error.summary}, error)
    else:
        incidents.emit(RENDER_COMPLETED, {**info, "message": f"{len(saved)} frame(s) saved"})
    if report:
        doc = {"mode": "supervise-only", "job": job, "exit_code": (code or 0) if sig is None else 128 + sig,
               "frames_saved": saved, "error": error.to_dict(),
               "suspect_frames": {str(f): v for f, v in sorted(watch.suspects.items())}}
        write_atomic(Path(report), (json.dumps(doc, indent=2) + "\n").encode(), sync=False)
    return (code or 0) if sig is None else 128 + sig


class FrameWatch:
    """The saved frames of a Blender someone else drives, judged as they come (so a warning lands in
    the farm's log of the task that rendered the frame), against the frames seen so far. A frame that
    can only be told later (one value while every frame so far is; small, with no frame to compare it
    with yet) is judged again as frames come, and a last time when Blender exits."""

    def __init__(self, job: str, env: dict[str, str], warn: Callable[..., None],
                 gl_driver: Callable[[int], tuple[str, str] | None] | None = None):
        self.job, self.warn = job, warn
        self.pid: int | None = None           # Blender's, once started: the raster engines' driver is read from it
        self.gl_driver = gl_driver or probes.gl_driver
        self.raster_gl: tuple[str, str] | None = None
        self.agent = AgentEvents(env)         # opens its spool only if there is something to say
        self.expected: Expected | None = None
        self.fallbacks: set[str] = set()
        self.facts = JobFrames()              # judged against in O(log n) per frame, not a walk of them
        self.cells: dict[tuple[str, int], EmptyCells | None] = {}
        self.later: set[int] = set()
        self.suspects: dict[int, dict] = {}
        self.queue: asyncio.Queue[tuple[int, asyncio.Future] | None] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def settings(self, text: str) -> None:
        parsed = parse_settings(text)
        if parsed is None:
            return
        self.expected, fallback = parsed
        if fallback and fallback not in self.fallbacks:
            self.fallbacks.add(fallback)
            self.warn("cpu_fallback", fallback)

    def saved(self, frame: int, path: str) -> None:
        if self.pid is not None:
            self.raster_gl = raster_gl_saved(
                self.raster_gl, self.expected.engine if self.expected else None, self.gl_driver, self.pid, frame,
                self.warn, lambda f, detail: self.agent.send("frame_check", job=self.job, frame=f,
                                                             reason="cpu_fallback", detail=detail, rendered=1))
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._judge_loop())
        self.queue.put_nowait((frame, asyncio.get_running_loop().run_in_executor(None, inspect_frame, path)))

    async def finish(self) -> None:
        if self.task is not None:
            self.queue.put_nowait(None)
            try:
                await asyncio.wait_for(self.task, CHECK_WAIT_S)
            except TimeoutError:
                log.warning("frame inspections did not finish in %g s: the rest are not judged", CHECK_WAIT_S)
            await self._judge(sorted(self.later), final=True)
        self.agent.close()

    async def _judge_loop(self) -> None:
        while (item := await self.queue.get()) is not None:
            frame, fut = item
            facts = await fut            # inspect_frame never raises
            before = self._kinds()
            self.facts.add(frame, facts)
            self.suspects.pop(frame, None)
            # The frames waiting for others (one value, transparent) can only be told otherwise once the
            # job first has a frame with a picture, or an opaque one: judged again then, not every frame.
            again = sorted(self.later - {frame}) if self._kinds() != before else []
            await self._judge([frame, *again])

    def _kinds(self) -> tuple[bool, bool]:
        o = self.facts.others(-1 << 62)       # a frame number no job has: the summary of all of them
        return o.pictured, o.opaque

    async def _judge(self, frames: list[int], final: bool = False) -> None:
        if not frames:
            return
        verdicts = await judge_frames(self.facts, frames, self.expected, None, self.cells)
        for frame, found in verdicts.items():
            facts = self.facts.facts[frame]
            if found:
                self.later.discard(frame)
                self._report(frame, found)
            elif not final and (facts.uniform is not None or facts.transparent or (
                    self.facts.may_be_partial(frame) and self.facts.partial_reference(frame) is None)):
                self.later.add(frame)
            else:
                self.later.discard(frame)

    def _report(self, frame: int, found: list[Suspect]) -> None:
        reasons = sorted(s.reason for s in found)
        if self.suspects.get(frame, {}).get("reasons") == reasons:
            return
        detail = "; ".join(s.detail for s in found)
        self.suspects[frame] = {"reasons": reasons, "detail": detail}
        self.warn("suspect_frame", f"frame {frame}: {detail}", frame)
        for s in found:             # the agent's metric and the frame's trace, as under `renderwatch exec`
            self.agent.send("frame_check", job=self.job, frame=frame, reason=s.reason, detail=s.detail[:500],
                            rendered=1)
