"""The ledger's record of each attempt, written in one place for the supervisor: the attempt started
(its Blender's pid in the ledger before it renders), each frame it reports while it runs (as its
`seams.AttemptListener`), its frames on disk once Blender exited, and its outcome as `outcome.settle`
decides it, with the incident that comes before the ledger records it.

Usage::

    rec = AttemptRecorder(ctx, ledger)
    launched = rec.start([1, 2, 3], action)            # a Launched, or the error of an engine that cannot start
    result = await run_attempt(ctx, ledger, launched, rec.listener(launched.attempt))
    error, outcome = await rec.finish(launched, result)    # outcome: the attempt as the policy sees it
"""

from __future__ import annotations

import dataclasses
import os

from healer.diagnosis.errors import RenderError
from healer.supervising.context import JobContext
from healer.supervising.launch import Launched, Started, attempt_argv, start_attempt
from healer.supervising.ledger import Attempt, Ledger
from healer.supervising.outcome import AttemptResult, FrameOnDisk, settle
from healer.supervising.policy import Action, Outcome


class AttemptRecorder:
    """Every write of an attempt into the job's ledger."""

    def __init__(self, ctx: JobContext, led: Ledger):
        self.ctx, self.led = ctx, led

    def start(self, frames: list[int], action: Action) -> Launched | RenderError:
        """A new attempt in the ledger and its Blender started; the ledger names its pid (fsynced: a
        healer that dies now leaves its successor what to stop) before it is let go to render."""
        ctx, led = self.ctx, self.led
        att = led.new_attempt(frames, action.reason)
        att.device, att.threads = action.device, action.threads
        att.argv = attempt_argv(ctx, led.scene, frames, action)
        started = start_attempt(ctx, led.job, att.attempt, att.argv, os.path.dirname(os.path.abspath(led.path)))
        if not isinstance(started, Started):
            att.ended_at = ctx.parts.wall()
            att.error_type, att.error_summary = started.type, started.summary
            led.save()
            return started
        att.pid = started.spawned.pid
        att.pid_create_time = started.pid_create_time
        att.started_at = ctx.parts.wall()
        led.status = "running"
        led.save()
        ctx.parts.launcher.release(started.spawned, started.gate_env)      # the ledger names it: it may render now
        return Launched(att, list(frames), started.spawned, started.started_at, started.oom_kills_before,
                        started.heartbeat)

    def listener(self, att: Attempt) -> FrameRecorder:
        """What the running attempt reports its frames to."""
        return FrameRecorder(self.ctx, self.led, att)

    async def finish(self, launched: Launched, result: AttemptResult) -> tuple[RenderError, Outcome]:
        """The attempt's frames checked on disk, its outcome settled and written into the ledger: the
        error the policy reads, and the attempt as the policy sees it."""
        result = await self._frames_on_disk(launched, result)
        return self._record(launched.attempt, result)

    async def _frames_on_disk(self, launched: Launched, result: AttemptResult) -> AttemptResult:
        """What the attempt's frames on disk say once its Blender exited, recorded in the ledger: the
        frames it saved whose line was missed, partial files left by a crash (removed), and the whole
        files that are wrong pictures (suspects.py: forgotten, to render again)."""
        from healer.supervising.suspects import review_frames

        ctx, led, att = self.ctx, self.led, launched.attempt
        # A frame verified from its `Saved:` line in this attempt is not read again (each frame once),
        # except the last one: a crash while it was being written, or a render_write handler that cut it
        # short, comes after its `Saved:` line (its check then saw a whole file), and it must not be
        # delivered broken.
        saved = result.frames_saved
        last = saved[-1] if saved else None
        on_disk = []
        for f in launched.frames:
            if f in att.frames_rendered and f in led.frames and f != last:
                continue
            check = led.check_frame(f)
            on_disk.append(FrameOnDisk(f, check.ok, check.removed))
            if check.removed:
                ctx.say(check.reason)
        await review_frames(ctx, led, ctx.attempt)       # whole files but wrong pictures: rendered again
        verified = frozenset(f for f in (*launched.frames, result.frame_in_flight) if f in led.frames)
        # The frame's age is read now, after the review, as it always was (a review waiting on slow
        # inspections adds to it); a cancel during the review counts too.
        started = result.frame_started_at
        age = round(ctx.parts.clock() - started, 3) if started is not None else None
        return dataclasses.replace(result, on_disk=tuple(on_disk), verified_after=verified, frame_age_s=age,
                                   cancelled=result.cancelled or ctx.cancelled)

    def _record(self, att: Attempt, result: AttemptResult) -> tuple[RenderError, Outcome]:
        ctx, led = self.ctx, self.led
        out = settle(result)
        _set_frames(att.frames_rendered, out.frames_rendered)
        _tell_agent_verified(ctx, led, att, result.last_started, result.exit_code, result.exit_signal)
        att.frame_in_flight = out.frame_in_flight
        if out.frame_age_s is not None:
            att.frame_age_s = out.frame_age_s
        att.exit_code, att.exit_signal = result.exit_code, result.exit_signal
        error = out.error
        att.error_type = error.type
        att.error_summary = error.summary or None
        att.ended_at = ctx.parts.wall()
        # The incident is on disk (the incident journal) before the ledger records the crash and the
        # healer acts on it: a healer killed in between loses nothing; the next one replays the journal.
        if out.incident is not None:
            ctx.parts.incidents.emit(out.incident, ctx.info(
                frame=error.frame, log_tail=list(result.log_tail), crash_file=result.crash_file,
                message=error.summary, frame_log=ctx.logs.frame_tail(error.frame) if ctx.logs else None), error)
        ctx.record_warnings(error)
        led.save()
        ctx.update_metrics()
        if ctx.parts.metrics:
            ctx.parts.metrics.attempts.labels(error.type).inc()
        return error, policy_outcome(att)


class FrameRecorder:
    """The supervisor's side of a running attempt (seams.AttemptListener): each frame it reports,
    recorded in the ledger (saved: fsynced at most once a second, ledger_journal.py) and shown."""

    def __init__(self, ctx: JobContext, led: Ledger, att: Attempt):
        self.ctx, self.led, self.att = ctx, led, att

    def frame_started(self, frame: int, expected_path: str | None) -> None:
        ctx, led = self.ctx, self.led
        if expected_path:
            led.expected_paths[frame] = expected_path
        if frame in led.frame_render_counts and ctx.parts.metrics:
            ctx.parts.metrics.frames_rerendered.labels(led.job).inc()
        led.frame_started(frame, self.att)
        led.save()
        ctx.show()

    def frame_saved(self, frame: int, path: str, size: int, seconds: float | None) -> None:
        ctx, led = self.ctx, self.led
        led.frame_verified(frame, path, size, self.att)
        if seconds is not None:
            ctx.frame_times.append(seconds)
        from healer.supervising import suspects  # imported once Blender runs, as the classifier

        st = ctx.attempt
        suspects.start_check(ctx, st, frame, path, seconds)
        if ctx.proc is not None:
            suspects.check_raster_gl(ctx, st, frame, ctx.proc.pid)
        led.save()
        ctx.update_metrics()
        ctx.show()


def policy_outcome(a: Attempt) -> Outcome:
    """A finished attempt of the ledger as the policy sees it (its history)."""
    return Outcome(ended_at=a.ended_at or 0.0, error_type=None if a.error_type in (None, "ok") else a.error_type,
                   frame=a.frame_in_flight, frames_planned=tuple(a.frames_planned),
                   frames_rendered=tuple(a.frames_rendered), device=a.device, threads=a.threads,
                   frame_age_s=a.frame_age_s)


def _tell_agent_verified(ctx: JobContext, led: Ledger, att: Attempt, last: int | None,
                         exit_code: int | None, exit_signal: int | None) -> None:
    """Blender died (not a clean exit) on frame `last` (its last frame_start): if that frame is verified on disk,
    the hooks may have been killed between the file's write and their render_write handler, so the
    agent never heard of it. Say so (frame_verified); the agent counts it only if no frame_end does."""
    if last is None or last not in led.frames or last not in att.frames_rendered:
        return
    if exit_code == 0 and exit_signal is None:
        return                              # a clean exit ran every handler
    if ctx.agent is not None:
        ctx.agent.send("frame_verified", job=led.job, frame=last, output_path=led.frames[last].path,
                       attempt=att.attempt)


def _set_frames(frames: list[int], settled: tuple[int, ...]) -> None:
    """The attempt's rendered frames as settled: appended to where only added (the journal then writes
    the new tail), else rewritten."""
    n = len(frames)
    if tuple(frames) == settled[:n]:
        frames.extend(settled[n:])
    else:
        frames[:] = settled
