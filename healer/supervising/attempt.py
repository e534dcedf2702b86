"""One attempt: one Blender for the frames still missing, watched line by line until it exits.

Every output line feeds the classifier's scanner and the progress parser (watch.py); a `Saved:` line
verifies that frame on disk and reports it to the listener (the supervisor records it in the ledger,
fsynced, so nothing verified is rendered again). A probe loop stops Blender on a stall or a cancel.
When Blender exits the attempt is classified; what it did is returned as a value, which the
supervisor settles (outcome.settle) and records. Nothing here writes the ledger.

Usage::

    launched = supervisor._start(ledger, frames=[3, 4], action=action)      # Blender runs
    result = await run_attempt(ctx, ledger, launched, listener)             # an AttemptResult
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

from healer.images.verify import verify_image
from healer.supervising.context import AttemptState, JobContext
from healer.supervising.launch import Launched, exit_status
from healer.supervising.ledger import Attempt, Ledger
from healer.supervising.outcome import AttemptResult
from healer.supervising.probes import ProbeSnapshot, SignsOfLife, evaluate, last_sign_of_life, stall_timeout
from healer.supervising.seams import AttemptListener, RunningBlender
from healer.supervising.watch import OutputWatch

if TYPE_CHECKING:
    from healer.diagnosis.classify import LogScanner


async def run_attempt(ctx: JobContext, led: Ledger, launched: Launched, listener: AttemptListener) -> AttemptResult:
    """Watch the attempt `launch.start_attempt` started until its Blender exits: each frame started and
    saved is reported to `listener` as it comes, and what the attempt did is returned as a value (the
    supervisor checks its frames on disk, settles it and records it: outcome.settle). The ledger is
    only read here."""
    att = launched.attempt
    ctx.attempt = st = AttemptState(last_progress_at=launched.started_at)
    oom_before = launched.oom_kills_before
    out = OutputWatch(_new_scanner(), echo=ctx.parts.echo, say=ctx.say)

    def on_line(line: str, now: float) -> None:
        _on_line(ctx, out, led, att, listener, line, now)

    proc = await ctx.parts.launcher.attach(launched.spawned, on_line)
    ctx.proc = proc
    watcher = asyncio.create_task(_watch(ctx, led, proc, st, launched.heartbeat))
    try:
        rc = await proc.wait()
    finally:
        watcher.cancel()
        ctx.proc = None
        if launched.heartbeat:
            try:
                os.unlink(launched.heartbeat)
            except OSError:
                pass
    exit_code, exit_signal = exit_status(rc)
    in_flight = att.frame_in_flight
    oom_after = ctx.parts.probes.oom_kills()
    classified = out.classify(rc, st.crash_file, stalled=bool(st.stalled), frame=in_flight,
                              oom_killed=exit_signal == 9 and oom_before is not None and (oom_after or 0) > oom_before)
    return AttemptResult(
        classified=classified, exit_code=exit_code, exit_signal=exit_signal, frames_saved=tuple(att.frames_rendered),
        frame_in_flight=in_flight, frame_started_at=st.frame_started_at,
        last_started=st.current_frame, stalled=st.stalled, disk_full=st.disk_full, cancelled=ctx.cancelled,
        crash_file=st.crash_file, log_tail=tuple(proc.tail))


def _new_scanner() -> LogScanner:
    """The classifier is imported once Blender runs (this module is imported after the first Blender
    starts), so that Blender's start-up hides its cost: a farm launches one Blender per frame."""
    from healer.diagnosis.classify import LogScanner
    from healer.supervising import suspects  # noqa: F401 (the frame checks, needed from the first frame)

    return LogScanner()


def _on_line(ctx: JobContext, out: OutputWatch, led: Ledger, att: Attempt, listener: AttemptListener, line: str,
             now: float) -> None:
    ev = out.feed(line)
    st = ctx.attempt
    if ctx.logs is not None and ev.kind != "frame_start" and ev.kind != "settings":    # the frame's log
        ctx.logs.feed(line, out.scanner.line_level, st.current_frame, att.attempt, st.frame_started_at is not None)
    if ev.kind == "progress":
        if ev.text != st.last_progress_text or ev.frame != st.current_frame:
            st.last_progress_at = now
            st.last_progress_text = ev.text
        if st.current_frame is None:
            st.current_frame = ev.frame
    elif ev.kind == "frame_start" and ev.frame is not None:
        st.current_frame, st.frame_started_at, st.last_progress_at = ev.frame, now, now
        listener.frame_started(ev.frame, ev.path)
    elif ev.kind == "saved" and ev.path:
        st.last_progress_at = now
        frame = _frame_for(led, att, ev.path, st.current_frame)
        if frame is None:
            return
        v = verify_image(ev.path)
        if not v.ok:
            full = ctx.parts.probes.full_disk(ev.path)
            if full:
                st.disk_full = full
            return
        seconds = now - st.frame_started_at if st.frame_started_at is not None else None
        st.frame_started_at = None
        listener.frame_saved(frame, ev.path, v.size, seconds)
    elif ev.kind == "crash_file":
        st.crash_file = ev.path
    elif ev.kind == "settings":
        from healer.supervising.suspects import read_settings

        read_settings(ctx, st, ev.text)


def _frame_for(led: Ledger, att: Attempt, path: str, current: int | None) -> int | None:
    apath = os.path.abspath(path)
    if current is not None and led.requested(current):
        expected = led.expected_paths.get(current)
        if expected is None or os.path.abspath(expected) == apath:
            return current
    for f in att.frames_planned:
        p = led.path_for(f)
        if p and os.path.abspath(p) == apath:
            return f
    return None


def _mtime_ns(path: str | None) -> int | None:
    if not path:
        return None
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


async def _watch(ctx: JobContext, led: Ledger, proc: RunningBlender, st: AttemptState,
                 heartbeat: str | None = None) -> None:
    """Probe loop: metrics every tick, stop the process group on a stall or a cancel. The host is read
    once a second (CPU time of Blender's tree, memory, GPU, the hooks' heartbeat file), each tick is a
    pure `evaluate` over what was read."""
    last_sample, res = 0.0, {}
    life = SignsOfLife()
    while proc.returncode() is None:
        await asyncio.sleep(ctx.parts.probe_interval_s)
        if ctx.cancelled:
            await proc.stop(ctx.parts.kill_grace_s)
            return
        now = ctx.parts.clock()
        if now - last_sample >= 1.0:
            res, last_sample = dict(ctx.parts.probes.resources(proc.pid)), now
            life.observe(now, cpu_seconds=res.pop("cpu_seconds", None), gpu_busy=res.pop("gpu_busy", None),
                         heartbeat_mtime_ns=_mtime_ns(heartbeat))
        snap = ProbeSnapshot(now=now, started_at=st.last_progress_at, status=ctx.parts.probes.process_status(proc.pid),
                             last_output_at=proc.last_output_at, last_progress_at=st.last_progress_at,
                             last_event_at=life.last_event_at, last_cpu_at=life.last_cpu_at,
                             last_gpu_at=life.last_gpu_at, frame_times=ctx.frame_times,
                             stall_timeout=ctx.parts.req.stall_timeout, **res)
        findings = evaluate(snap)
        if ctx.parts.metrics:
            for f in findings:
                ctx.parts.metrics.probe_healthy.labels(led.job, f.probe).set(1 if f.healthy else 0)
        stall = next((f for f in findings if f.action == "kill_stall"), None)
        if stall is not None and proc.returncode() is None and not st.stalled:
            frame = st.current_frame
            st.stalled = f"{stall.detail}" + (f" at frame {frame}" if frame is not None else "")
            if ctx.parts.metrics:   # how late the probe loop noticed, past the timeout itself
                late = now - last_sign_of_life(snap) - stall_timeout(ctx.parts.req.stall_timeout, ctx.frame_times)
                ctx.parts.metrics.stall_detect.observe(max(0.0, late))
            ctx.say(f"stall: {st.stalled}: stopping Blender (pid {proc.pid})")
            await proc.stop(ctx.parts.kill_grace_s)
            return
