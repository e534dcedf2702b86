"""The supervisor: runs Blender for a job until every requested frame has a verified output, healing
crashes, kills and stalls, or gives up with a typed reason.

Its parts, one module each: `preflight` (the request checked, the scene read, before any launch),
`attempt` (one Blender for the missing frames, watched line by line, classified when it exits,
returned as a value), `outcome` (the pure `settle` of how the attempt ended), `recording` (every
write of an attempt into the ledger: the supervisor's alone) and `endings` (complete, failed,
cancelled). Between attempts `policy.plan` decides the next step; the supervisor only executes it. What it is given comes in through `seams`: the launcher (real: a
child process group; tests: a Blender replaying recorded runs), the host probes, the clock, the
incident and metric sinks.

Healer restarts: Blender dies with the healer that started it (the kernel's parent-death signal,
launch.py), whatever killed the healer, a farm's SIGKILL to its process group included. The ledger
names the attempt in progress and its Blender pid; a new supervisor for the same job takes the lock
(refused while the old healer lives), credits the frames that attempt saved, and renders the rest.
Where no parent-death signal exists (not Linux) and that Blender still runs (an orphan: its output has
nobody to read it), it is stopped deliberately (SIGTERM to its group, SIGKILL after the grace period).

A job starts in two steps. `begin()` needs no event loop: the request prepared, the job locked, its
ledger opened and renewed, its assets judged and, when the first step is a launch, the first Blender
started. `run()` goes on from there on the loop (and calls `begin()` itself if the caller has not). A
farm starts renderwatch once per frame, so the CLI calls `begin()` before it imports asyncio, and this
module imports the event loop and the attempt's watch (and, through it, the classifier) in `run()`:
they load while Blender starts up, not before it.

Usage::

    sup = Supervisor(RenderRequest(scene="/shot/a.blend", frames=(1, 2, 3)))
    sup.begin()                   # optional: Blender starts here, before any event loop
    result = await sup.run()      # result.exit_code: 0 iff every frame is verified
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from healer.diagnosis.catalog import EXIT_STRICT, REPORT_TYPES, TYPES, exit_status
from healer.incidents.model import RENDER_RECOVERED, RENDER_RESTARTED
from healer.supervising.context import JobContext, JobParts, RenderRequest
from healer.supervising.endings import (
    RenderResult,
    fail_early,
    finish_cancelled,
    finish_complete,
    finish_failed,
    tell_agent,
)
from healer.supervising.launch import Launched, ProcessLauncher
from healer.supervising.ledger import Attempt, JobLocked, Ledger, SupervisorLock, job_dir
from healer.supervising.openjd import OpenJDLines
from healer.supervising.outputs import remove_partial
from healer.supervising.policy import Action, JobState, Outcome, Policy, plan
from healer.supervising.preflight import EarlyFailure, Prepared, RequestError, judge_assets, prepare
from healer.supervising.probes import ResourceSampler, SystemProbes
from healer.supervising.progress import ProgressDisplay
from healer.supervising.recording import AttemptRecorder, policy_outcome
from healer.supervising.retention import prune_at_start
from healer.supervising.reuse import reuse_refusal
from healer.supervising.seams import HostProbes, IncidentSink, Launcher, NoIncidents, SupervisorMetrics
from kernel.paths import home

if TYPE_CHECKING:
    import asyncio

    from healer.diagnosis.errors import RenderError

__all__ = ["RenderRequest", "RenderResult", "RequestError", "Supervisor"]


class Supervisor:
    def __init__(self, request: RenderRequest, *, policy: Policy | None = None, incidents: IncidentSink | None = None,
                 metrics: SupervisorMetrics | None = None, display: ProgressDisplay | None = None,
                 env: Mapping[str, str] | None = None, kill_grace_s: float = 5.0,
                 probe_interval_s: float = 0.25, sampler: ResourceSampler | None = None,
                 launcher: Launcher | None = None, probes: HostProbes | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 echo: Callable[[str], None] | None = None):
        self.req = request
        self.policy = (policy or Policy.default()).with_overrides(strict=request.strict)
        self.ctx = JobContext(JobParts(
            req=request, launcher=launcher or ProcessLauncher(), probes=probes or SystemProbes(sampler),
            incidents=incidents if incidents is not None else NoIncidents(), metrics=metrics, display=display,
            env=dict(os.environ if env is None else env), kill_grace_s=kill_grace_s,
            probe_interval_s=probe_interval_s, clock=clock, wall=wall, echo=echo,
            openjd=OpenJDLines(sys.stdout) if request.farm and request.farm.engine == "openjd" else None),
            job=request.job, started_at=wall())
        self._session_first_attempt = 0
        self._history: list[Outcome] = []                    # this run's attempts that ran a Blender, as the policy sees them
        self._lock: SupervisorLock | None = None
        self._kick_task: asyncio.Task | None = None
        self._begun = False
        self._prepared: Prepared | None = None
        self._orphan: Attempt | None = None                  # a dead healer's attempt, its Blender maybe alive
        self._first: Action | None = None                    # the first step, once begun
        self._launched: Launched | RenderError | None = None    # its Blender, when that step is a launch
        self._ended: RenderResult | None = None              # the job ended before any Blender

    # ------------------------------------------------------------------ public
    @property
    def job(self) -> str | None:
        return self.ctx.job

    @property
    def ledger(self) -> Ledger | None:
        return self.ctx.ledger

    @property
    def started_at(self) -> float:
        return self.ctx.started_at

    def cancel(self) -> None:
        self.ctx.cancel_requested = True
        if self.ctx.wake is not None:
            self.ctx.wake.set()

    def place_on(self, gpu: int | None) -> None:
        """Render on this GPU (its index): CUDA_VISIBLE_DEVICES and Cycles' device (the service's placer)."""
        self.ctx.gpu = gpu

    def kick(self, reason: str) -> bool:
        """Stop the running Blender as stalled (e.g. Alertmanager's RenderStalled): the policy restarts it."""
        ctx = self.ctx
        if ctx.proc is None or ctx.attempt.stalled:
            return False
        ctx.attempt.stalled = reason
        ctx.say(f"stall: {reason}: stopping Blender (pid {ctx.proc.pid})")
        import asyncio

        self._kick_task = asyncio.get_running_loop().create_task(ctx.proc.stop(ctx.parts.kill_grace_s))
        return True

    @property
    def cancelled(self) -> bool:
        return self.ctx.cancelled

    def status(self) -> dict:
        ctx, led = self.ctx, self.ctx.ledger
        if led is None:
            return {"job": ctx.job, "status": "pending", "scene": self.req.scene}
        return {"job": led.job, "status": led.status, "scene": led.scene,
                "frames_requested": len(led.frames_requested), "frames_completed": led.completed_count(),
                "restarts": led.restarts, "pid": ctx.proc.pid if ctx.proc else None,
                "frame_in_flight": ctx.attempt.current_frame if ctx.proc else None, "error": led.error}

    async def run(self) -> RenderResult:
        import asyncio

        from healer.supervising.telemetry import AgentEvents

        ctx = self.ctx
        try:
            self.begin()
            ctx.wake = asyncio.Event()
            if ctx.cancelled:
                ctx.wake.set()
            ctx.agent = AgentEvents(ctx.parts.env)
            if ctx.job:
                from healer.supervising.logcapture import LogCapture

                ctx.logs = LogCapture(ctx.job, ctx.parts.env)
            if self._orphan is not None:
                await self._stop_orphan(self._orphan)
                self._settle()
            if self._ended is not None:
                result = self._ended
            else:
                assert self.ctx.ledger is not None and self._first is not None
                result = await self._loop(self.ctx.ledger, self._first, self._launched)
            tell_agent(ctx, result)
            return result
        finally:
            if ctx.agent is not None:
                await asyncio.to_thread(ctx.agent.close)
            if ctx.logs is not None:
                ctx.logs.close()
            if self._lock:
                self._lock.release()

    def delivered(self) -> None:
        """The caller has reported the completed job (exit 0): running it again is a requeue."""
        led = self.ctx.ledger
        if led is not None and led.status == "complete":
            led.delivered = True
            led.save()

    # ------------------------------------------------------------------ the start (no event loop)
    def begin(self) -> None:
        """Prepare, lock and open the job, and start its first Blender when that is the first step.
        Raises RequestError (the job's lock released) for a request that cannot run at all."""
        if self._begun:
            return
        self._begun = True
        try:
            led = self._open()
            if led is not None and self._orphan is None:
                self._settle()
        except BaseException:
            if self._lock:
                self._lock.release()
                self._lock = None
            raise

    def _open(self) -> Ledger | None:
        """The scene read, the job locked, its ledger opened; a dead healer's attempt looked at."""
        ctx, req = self.ctx, self.req
        prepared = prepare(req, home(ctx.parts.env) / "healer" / "scenes")
        if isinstance(prepared, EarlyFailure):
            self._ended = fail_early(ctx, prepared)
            return None
        self._prepared = prepared
        ctx.job = prepared.job
        prune_at_start(ctx.parts.env, prepared.job)      # job folders and scene cache past retention
        directory = job_dir(prepared.job, ctx.parts.env)
        self._lock = SupervisorLock(directory)
        try:
            self._lock.acquire()
        except JobLocked as e:
            raise RequestError(str(e)) from e
        try:
            ctx.ledger = led = Ledger.open_or_create(
                directory, job=prepared.job, scene=prepared.scene, frames=list(prepared.frames),
                output=prepared.pattern,
                spec={"blender": req.blender, "output": req.output, "blender_args": list(req.blender_args),
                      "strict": req.strict, "stall_timeout": req.stall_timeout, "origin": req.origin},
                wall=ctx.parts.wall)
        except ValueError as e:
            raise RequestError(str(e)) from e
        led.when_unwritable(self._ledger_unwritable)
        self._session_first_attempt = len(led.attempts)
        # A job an earlier healer already completed (and announced) is not announced again.
        ctx.announced_complete = led.status == "complete"
        if ctx.parts.display:
            ctx.parts.display.total = len(prepared.frames)
        if ctx.parts.metrics:
            ctx.parts.metrics.frames_requested.labels(prepared.job).set(len(prepared.frames))
        att = led.running_attempt()
        if att is not None:
            if att.pid and ctx.parts.launcher.alive(att.pid, att.pid_create_time):
                self._orphan = att          # stopped on the event loop (run), before anything else
            else:
                self._credit_orphan(att, "healer restarted: Blender had already exited (status not seen)")
        return led

    def _settle(self) -> None:
        """The ledger renewed against the scene, the assets judged, the first step chosen and, when it
        is a launch, its Blender started."""
        ctx, req, prepared, led = self.ctx, self.req, self._prepared, self.ctx.ledger
        assert prepared is not None and led is not None
        new_job = not led.fingerprint and not led.attempts
        why = led.renew(prepared.fingerprint, fresh=req.fresh)
        if why:
            ctx.say(why)
        for note in led.reverify(led.completed()):
            ctx.say(note)
        if new_job and not req.fresh:
            self._reuse_from_disk(led, prepared)
        led.save()
        ctx.update_metrics()
        ctx.parts.incidents.job_started(ctx.info())

        action = Action("launch", frames=tuple(led.missing()), reason="resume" if led.attempts else "initial")
        verdict = judge_assets(prepared.assets, strict=req.strict,     # before any Blender (or GPU) time
                               resuming_mid_range=bool(led.completed() and led.missing()))
        for etype, message in verdict.warnings:
            ctx.warn(etype, message)
        for etype, message in verdict.notes:
            ctx.warn(etype, message, incident=False)
        if verdict.failure is not None:
            f = verdict.failure
            self._ended = finish_failed(ctx, led, f.type, f.message, f.exit_code)
            return
        if not led.missing():
            action = plan(JobState((), ctx.warning_types()), None, self.policy, [], now=ctx.parts.wall())
        self._first = action
        if action.kind == "launch" and not action.delay_s and not ctx.cancelled:
            self._launched = self._launch(led, action)

    def _ledger_unwritable(self, e: OSError) -> None:
        """The state disk filled up (or went read-only) mid-render: the frames on the output disk are what
        counts, so the render goes on; said once, counted in the report. Each later save retries."""
        ctx = self.ctx
        ctx.ledger_save_errors += 1
        if ctx.ledger_save_errors == 1:
            path = ctx.ledger.path if ctx.ledger is not None else "the ledger"
            ctx.say(f"WARNING: cannot write the job's ledger ({path}: {e.strerror or e}): the render goes on, "
                    "but until it can be written a restart of this job renders its frames again; free space "
                    "or fix RENDERWATCH_HOME")

    def _reuse_from_disk(self, led: Ledger, prepared: Prepared) -> None:
        """Frames another run left on disk (reuse.py): kept only where Blender would skip them too
        (the scene's use_overwrite off) and each is what the scene renders; else rendered again."""
        ctx = self.ctx
        if not prepared.skips_existing:
            found = led.in_the_way(led.missing())
            if found:
                ctx.say(f"{len(found)} frame(s) already on disk from another run: rendering them again (the scene "
                        "renders over existing files, as Blender does: Output > Overwrite is on)"
                        if prepared.skips_existing is False else
                        f"{len(found)} frame(s) already on disk from another run: rendering them again (the "
                        "scene's settings could not be read)")
            return
        spec = prepared.output_spec
        kept, refused, notes = led.adopt_existing(prepared.scene_saved_at, lambda path: reuse_refusal(path, spec))
        for note in notes:
            ctx.say(note)
        if kept:
            ctx.say(f"{len(kept)} frame(s) already on disk kept: the scene skips existing files (Output > Overwrite "
                    "is off) and each is complete, written after the scene was last saved, and of its size, "
                    "format and channels")
        if refused:
            first = min(refused)
            ctx.say(f"{len(refused)} frame(s) already on disk rendered again, not what the scene renders "
                    f"(frame {first}: {refused[first]})")

    def _launch(self, led: Ledger, action: Action) -> Launched | RenderError:
        frames = [f for f in action.frames if f not in led.frames] or led.missing()
        prepared = self._prepared
        if prepared is not None and prepared.skips_existing:
            # Blender would skip a file already there (use_overwrite off) and it would pass as rendered.
            gone = [path for path in led.in_the_way(frames) if remove_partial(path)]
            if gone:
                self.ctx.say(f"{len(gone)} file(s) of frames to render removed first ({gone[0]}"
                             f"{', ...' if len(gone) > 1 else ''}): the scene skips existing files (Output > "
                             "Overwrite is off), so Blender would keep them")
        return AttemptRecorder(self.ctx, led).start(frames, action)

    def _tell_failure(self, led: Ledger, error) -> None:
        """Say at once why the attempt ended, with its evidence (not only when the job gives up)."""
        att = led.attempts[-1]
        self.ctx.say(f"attempt {att.attempt} ended: {error.type}: {error.summary}{_evidence(error)}")

    async def _stop_orphan(self, att: Attempt) -> None:
        """The previous healer died with an attempt in progress and its Blender still runs: stop it."""
        ctx = self.ctx
        assert att.pid
        ctx.say(f"stopping Blender pid {att.pid}, left running unsupervised by a healer that died")
        await ctx.parts.launcher.stop_orphan(att.pid, att.pid_create_time, ctx.parts.kill_grace_s)
        self._credit_orphan(att, f"healer restarted: stopped its orphaned Blender (pid {att.pid})")
        self._orphan = None

    def _credit_orphan(self, att: Attempt, summary: str) -> None:
        """A dead healer's attempt ends as interrupted; the frames it saved and verify are credited."""
        led = self.ctx.ledger
        assert led is not None
        att.error_summary = summary
        att.error_type = "interrupted"
        att.ended_at = self.ctx.parts.wall()
        for f in att.frames_planned:
            ok, _ = led.verify_frame(f)
            if ok and f not in att.frames_rendered:
                att.frames_rendered.append(f)
                led.frame_render_counts[f] = max(1, led.frame_render_counts.get(f, 0))

    # ------------------------------------------------------------------ the healing loop
    async def _loop(self, led: Ledger, action: Action, launched: Launched | RenderError | None) -> RenderResult:
        import asyncio

        from healer.supervising.attempt import run_attempt

        ctx = self.ctx
        while True:
            if launched is None:
                if ctx.cancelled:
                    return finish_cancelled(ctx, led)
                if action.kind == "complete":
                    return finish_complete(ctx, led)
                if action.kind == "give_up":
                    etype = action.error_type or "unknown"
                    if ctx.parts.openjd:
                        ctx.parts.openjd.fail(f"renderwatch gave up: {action.reason}")
                    code = EXIT_STRICT if action.strict else exit_status(etype)
                    return finish_failed(ctx, led, etype, action.reason, code)
                if action.restart:
                    # on disk (the incident journal) before the restart is announced or made
                    ctx.parts.incidents.emit(RENDER_RESTARTED, ctx.info(message=action.reason))
                    ctx.say(f"restart: {action.reason}" + (f" (in {action.delay_s:.1f} s)" if action.delay_s else ""))
                    if ctx.parts.openjd:
                        ctx.parts.openjd.status(f"renderwatch restart {led.restarts + 1}: {action.reason}")
                    if ctx.parts.metrics:
                        ctx.parts.metrics.restarts.labels(led.job, action.error_type or "unknown").inc()
                if action.delay_s > 0:
                    assert ctx.wake is not None
                    try:
                        await asyncio.wait_for(ctx.wake.wait(), action.delay_s)
                        continue
                    except TimeoutError:
                        pass
                launched = self._launch(led, action)
            if isinstance(launched, Launched):
                rec = AttemptRecorder(ctx, led)
                result = await run_attempt(ctx, led, launched, rec.listener(launched.attempt))
                error, outcome = await rec.finish(launched, result)
                self._history.append(outcome)
            else:
                error = launched
            launched = None
            if ctx.cancelled:
                return finish_cancelled(ctx, led)
            if error.type != "ok" and (error.fatal or error.type not in REPORT_TYPES):
                self._tell_failure(led, error)
            _tell_agent_attempt(ctx, led, error)
            history = self._history
            earlier = [policy_outcome(a) for a in led.attempts[:self._session_first_attempt]
                       if a.pid is not None and a.ended_at is not None]
            action = plan(JobState(tuple(led.missing()), ctx.warning_types()), error, self.policy, history,
                          now=ctx.parts.wall(), cpu_count=os.cpu_count() or 1, earlier=earlier)
            if action.kind == "complete" and any(o.error_type not in (None, "ok") for o in history):
                ctx.parts.incidents.emit(RENDER_RECOVERED, ctx.info(message="every frame rendered after restarts"))


def _tell_agent_attempt(ctx: JobContext, led: Ledger, error) -> None:
    """The attempt's classified end for the agent's page (its attempt timeline): type, summary, the
    first line of evidence and the catalog's advice. Spool only: the agent's scanner reads it within a
    second, and a crash opens no connection of its own."""
    if ctx.agent is None or not led.attempts:
        return
    att = led.attempts[-1]
    f = next((f for f in error.findings if f.line > 0), None) or next(iter(error.findings), None)
    row = TYPES.get(error.type)
    fields: dict = {"attempt": att.attempt, "error_type": error.type, "summary": (error.summary or "")[:1000]}
    if f is not None:
        fields["evidence"] = (f"line {f.line}: " if f.line > 0 else "") + f.text[:500]
    if row is not None and row.advice and error.type != "ok":
        fields["advice"] = row.advice
    if att.started_at:
        fields["started_at"] = att.started_at
    frame = error.frame if error.frame is not None else att.frame_in_flight
    if frame is not None and error.type != "ok":
        fields["frame"] = frame
    if att.exit_code is not None:
        fields["exit_code"] = att.exit_code
    ctx.agent.send("attempt_end", job=led.job, spool_only=True, **fields)


def _evidence(error) -> str:
    """The first line of the output that shows what happened (the farm log's reader starts there)."""
    f = next((f for f in error.findings if f.line > 0), None)
    return f" [line {f.line}: {f.text[:200]}]" if f is not None else ""
