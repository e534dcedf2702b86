"""One attempt: one Blender for the frames still missing, watched line by line until it exits.

Every output line feeds the classifier's scanner and the progress parser; a `Saved:` line verifies
that frame on disk and records it in the ledger (fsynced), so nothing verified is rendered again. A
probe loop stops Blender on a stall or a cancel. When Blender exits the attempt is classified.

Usage::

    launched = launch_attempt(ctx, ledger, frames=[3, 4], action=action)    # launch.py: Blender runs
    error = await run_attempt(ctx, ledger, launched)                        # a RenderError ("ok" too)
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import TYPE_CHECKING

from healer.diagnosis import errors
from healer.images.verify import verify_image
from healer.incidents.model import RENDER_CRASHED, RENDER_STALLED
from healer.supervising.context import AttemptState, JobContext
from healer.supervising.launch import Launched, exit_status
from healer.supervising.ledger import Attempt, Ledger
from healer.supervising.probes import ProbeSnapshot, SignsOfLife, evaluate, last_sign_of_life, stall_timeout
from healer.supervising.progress import own_line, parse_line
from healer.supervising.seams import RunningBlender

if TYPE_CHECKING:
    from healer.diagnosis.classify import LogScanner


async def run_attempt(ctx: JobContext, led: Ledger, launched: Launched) -> errors.RenderError:
    """Watch the attempt `launch.launch_attempt` started until its Blender exits; classify the exit."""
    att, frames = launched.attempt, launched.frames
    ctx.attempt = st = AttemptState(last_progress_at=launched.started_at)
    oom_before = launched.oom_kills_before
    scanner = _new_scanner()

    def on_line(line: str, now: float) -> None:
        _on_line(ctx, scanner, led, att, line, now)

    proc = await ctx.launcher.attach(launched.spawned, on_line)
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
    oom_after = ctx.probes.oom_kills()
    crash_file = st.crash_file or scanner.crash_file
    from healer.diagnosis.crashfile import read_crash_file

    crash_text = read_crash_file(crash_file) if crash_file else None
    error = scanner.finish(exit_code, exit_signal, crash_file=crash_file, crash_text=crash_text,
                           stalled=bool(st.stalled), frame=in_flight,
                           oom_killed=exit_signal == 9 and oom_before is not None and (oom_after or 0) > oom_before)
    if st.stalled and error.type == "stall":
        error = dataclasses.replace(error, summary=f"{st.stalled}; {error.summary}" if error.summary else st.stalled)
    if ctx.cancelled:
        error = errors.InterruptedError(summary="cancelled", exit_code=exit_code, exit_signal=exit_signal)
    if error.frame is None and in_flight is not None:
        error = dataclasses.replace(error, frame=in_flight)
    if st.disk_full and not ctx.cancelled and error.type in ("ok", "unknown", "output_error"):
        # Blender prints `Saved:` and exits 0 even when the write hit a full disk: trust the disk.
        error = errors.OutputError(summary=f"no space left on {st.disk_full}: Blender reported frames saved "
                                           "but the files are empty or incomplete; free space there and run "
                                           "the same command again", exit_code=exit_code,
                                   exit_signal=exit_signal, frame=in_flight, findings=error.findings)
    # Frames Blender saved but whose line we missed, and partial files left by the crash. A frame
    # verified from its `Saved:` line in this attempt is not read again (each frame once), except the
    # last one: a crash while it was being written, or a render_write handler that cut it short, comes
    # after its `Saved:` line (its check then saw a whole file), and it must not be delivered broken.
    last = att.frames_rendered[-1] if att.frames_rendered else None
    for f in frames:
        if f in att.frames_rendered and f in led.frames and f != last:
            continue
        ok, why = led.verify_frame(f)
        if ok and f not in att.frames_rendered:
            att.frames_rendered.append(f)
        elif not ok and "removed" in why:
            att.frames_rendered[:] = [x for x in att.frames_rendered if x != f]
            ctx.say(why)
    from healer.supervising.suspects import review_frames

    await review_frames(ctx, led, st)       # frames that are whole files but wrong pictures: rendered again
    tell_agent_verified(ctx, led, att, st.current_frame, exit_code, exit_signal)
    att.frame_in_flight = in_flight if in_flight not in led.frames else None
    if att.frame_in_flight is not None and st.frame_started_at is not None:
        att.frame_age_s = round(ctx.clock() - st.frame_started_at, 3)
    att.exit_code, att.exit_signal = exit_code, exit_signal
    att.error_type = error.type
    att.error_summary = error.summary or None
    att.ended_at = ctx.wall()
    # The incident is on disk (the incident journal) before the ledger records the crash and the
    # healer acts on it: a healer killed in between loses nothing; the next one replays the journal.
    if error.type != "ok" and error.fatal and not ctx.cancelled:
        kind = RENDER_STALLED if error.type == "stall" else RENDER_CRASHED
        ctx.incidents.emit(kind, ctx.info(frame=error.frame, log_tail=list(proc.tail), crash_file=st.crash_file,
                                          message=error.summary,
                                          frame_log=ctx.logs.frame_tail(error.frame) if ctx.logs else None), error)
    ctx.record_warnings(error)
    led.save()
    ctx.update_metrics()
    if ctx.metrics:
        ctx.metrics.attempts.labels(error.type).inc()
    return error


def tell_agent_verified(ctx: JobContext, led: Ledger, att: Attempt, last: int | None,
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


def _new_scanner() -> LogScanner:
    """The classifier is imported once Blender runs (this module is imported after the first Blender
    starts), so that Blender's start-up hides its cost: a farm launches one Blender per frame."""
    from healer.diagnosis.classify import LogScanner
    from healer.supervising import suspects  # noqa: F401 (the frame checks, needed from the first frame)

    return LogScanner()


def _on_line(ctx: JobContext, scanner: LogScanner, led: Ledger, att: Attempt, line: str, now: float) -> None:
    ev = parse_line(line)
    if ctx.echo is not None:
        own = own_line(line, ev)
        if own is None:
            ctx.echo(line)              # Blender's stdout stays Blender's
        elif own:
            ctx.say(own)
    scanner.feed(line)
    st = ctx.attempt
    if ctx.logs is not None and ev.kind != "frame_start" and ev.kind != "settings":    # the frame's log
        ctx.logs.feed(line, scanner.line_level, st.current_frame, att.attempt, st.frame_started_at is not None)
    if ev.kind == "progress":
        if ev.text != st.last_progress_text or ev.frame != st.current_frame:
            st.last_progress_at = now
            st.last_progress_text = ev.text
        if st.current_frame is None:
            st.current_frame = ev.frame
    elif ev.kind == "frame_start" and ev.frame is not None:
        st.current_frame, st.frame_started_at, st.last_progress_at = ev.frame, now, now
        if ev.path:
            led.expected_paths[ev.frame] = ev.path
        if ev.frame in led.frame_render_counts and ctx.metrics:
            ctx.metrics.frames_rerendered.labels(led.job).inc()
        led.frame_started(ev.frame, att)
        led.save()
        ctx.show()
    elif ev.kind == "saved" and ev.path:
        st.last_progress_at = now
        frame = _frame_for(led, att, ev.path, st.current_frame)
        if frame is None:
            return
        v = verify_image(ev.path)
        if not v.ok:
            full = ctx.probes.full_disk(ev.path)
            if full:
                st.disk_full = full
            return
        led.frame_verified(frame, ev.path, v.size, att)
        seconds = now - st.frame_started_at if st.frame_started_at is not None else None
        if seconds is not None:
            ctx.frame_times.append(seconds)
        from healer.supervising import suspects  # imported once Blender runs, as the classifier

        suspects.start_check(ctx, st, frame, ev.path, seconds)
        if ctx.proc is not None:
            suspects.check_raster_gl(ctx, st, frame, ctx.proc.pid)
        st.frame_started_at = None
        led.save()
        ctx.update_metrics()
        ctx.show()
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
        await asyncio.sleep(ctx.probe_interval_s)
        if ctx.cancelled:
            await proc.stop(ctx.kill_grace_s)
            return
        now = ctx.clock()
        if now - last_sample >= 1.0:
            res, last_sample = dict(ctx.probes.resources(proc.pid)), now
            life.observe(now, cpu_seconds=res.pop("cpu_seconds", None), gpu_busy=res.pop("gpu_busy", None),
                         heartbeat_mtime_ns=_mtime_ns(heartbeat))
        snap = ProbeSnapshot(now=now, started_at=st.last_progress_at, status=ctx.probes.process_status(proc.pid),
                             last_output_at=proc.last_output_at, last_progress_at=st.last_progress_at,
                             last_event_at=life.last_event_at, last_cpu_at=life.last_cpu_at,
                             last_gpu_at=life.last_gpu_at, frame_times=ctx.frame_times,
                             stall_timeout=ctx.req.stall_timeout, **res)
        findings = evaluate(snap)
        if ctx.metrics:
            for f in findings:
                ctx.metrics.probe_healthy.labels(led.job, f.probe).set(1 if f.healthy else 0)
        stall = next((f for f in findings if f.action == "kill_stall"), None)
        if stall is not None and proc.returncode() is None and not st.stalled:
            frame = st.current_frame
            st.stalled = f"{stall.detail}" + (f" at frame {frame}" if frame is not None else "")
            if ctx.metrics:   # how late the probe loop noticed, past the timeout itself
                late = now - last_sign_of_life(snap) - stall_timeout(ctx.req.stall_timeout, ctx.frame_times)
                ctx.metrics.stall_detect.observe(max(0.0, late))
            ctx.say(f"stall: {st.stalled}: stopping Blender (pid {proc.pid})")
            await proc.stop(ctx.kill_grace_s)
            return
