"""Frames that are complete files but wrong pictures: inspected as they are saved, rendered again once.

Each frame Blender saves (and the healer verified complete) is inspected in a worker thread while
Blender goes on with the next one (`start_check`). When the attempt ends, `review_frames` judges
every inspected frame against the scene's settings (the hooks' render settings line) and the job's
other frames (healer.diagnosis.framecheck.judge_frame):

- the first time a frame looks wrong, it is forgotten (no longer verified) so the next attempt
  renders it again, and the healer says why;
- the second time, it is kept, and reported as a `suspect_frame` warning with its evidence (the
  farm log, the report, Sentry, the webhooks; `--strict` fails the job). A re-render that comes out
  right clears it.

Every suspect finding also goes to the agent as a `frame_check` event (the metric, the trace).
The silent CPU fallback is a job-wide warning (`cpu_fallback`): rendering again would not change it.

Usage::

    start_check(ctx, st, frame=7, path="/out/f_0007.png", seconds=31.2)   # from the `Saved:` line
    await review_frames(ctx, led, st)                                        # after Blender exited
"""

from __future__ import annotations

import asyncio
import json
import logging

from healer.diagnosis.framecheck import Expected, FrameFacts, inspect_frame, judge_frame
from healer.supervising.context import AttemptState, JobContext
from healer.supervising.ledger import Ledger

log = logging.getLogger("healer.supervising.suspects")

CHECK_WAIT_S = 30.0      # an inspection still running this long after Blender exited is skipped


def start_check(ctx: JobContext, st: AttemptState, frame: int, path: str, seconds: float | None) -> None:
    """Inspect the saved frame off the event loop and off Blender's critical path."""
    if not ctx.check_frames:
        return
    fut = asyncio.get_running_loop().run_in_executor(None, inspect_frame, path)
    st.checks.append((frame, seconds, fut))


def read_settings(ctx: JobContext, st: AttemptState, text: str) -> None:
    """The hooks' render settings line: what each frame should be, and the device Cycles uses."""
    try:
        d = json.loads(text)
    except ValueError:
        return
    if not isinstance(d, dict):
        return

    def num(k: str) -> int | None:
        v = d.get(k)
        return v if isinstance(v, int) and v > 0 else None

    st.expected = Expected(num("width"), num("height"), d.get("color_mode") or None, d.get("file_format") or None)
    asked, used, why = d.get("device_asked"), d.get("device_used"), d.get("fallback")
    if isinstance(asked, str) and asked.startswith("GPU") and used == "CPU":
        ctx.warn("cpu_fallback", f"the scene asks for {asked} rendering but Cycles renders on the CPU: {why}")


async def review_frames(ctx: JobContext, led: Ledger, st: AttemptState) -> list[int]:
    """Judge the frames inspected in this attempt; returns the frames forgotten to be rendered again."""
    if not st.checks:
        return []
    futures = [f for _, _, f in st.checks]
    done, pending = await asyncio.wait(futures, timeout=CHECK_WAIT_S)
    for f in pending:
        f.cancel()
    for frame, seconds, fut in st.checks:
        if fut in done and frame in led.frames:
            ctx.frame_facts[frame] = fut.result()
            if seconds is not None:
                ctx.frame_seconds[frame] = seconds
            ctx.frame_verdicts.pop(frame, None)
    st.checks.clear()
    if pending:
        ctx.say(f"{len(pending)} frame inspection(s) did not finish in {CHECK_WAIT_S:g} s: those frames are not judged")
    again = []
    for frame in sorted(ctx.frame_facts):
        facts = ctx.frame_facts[frame]
        if frame not in led.frames or frame in ctx.frame_verdicts and not _may_change(facts, ctx.frame_verdicts[frame]):
            continue
        others = [f for k, f in ctx.frame_facts.items() if k != frame]
        other_s = [s for k, s in ctx.frame_seconds.items() if k != frame]
        found = judge_frame(facts, st.expected, others=others, seconds=ctx.frame_seconds.get(frame),
                            other_seconds=other_s)
        reasons = tuple(sorted(s.reason for s in found))
        ctx.frame_verdicts[frame] = reasons
        if _settle(ctx, led, frame, reasons, "; ".join(s.detail for s in found), found):
            again.append(frame)
    if again:
        led.save()
    return again


def _may_change(facts: FrameFacts, verdict: tuple[str, ...]) -> bool:
    """A one-value frame judged fine while the job had only such frames is judged again as others come."""
    return not verdict and (facts.uniform is not None or facts.transparent)


def _settle(ctx: JobContext, led: Ledger, frame: int, reasons: tuple[str, ...], detail: str, found) -> bool:
    rec = led.suspects.get(frame)
    renders = led.frame_render_counts.get(frame, 1)
    for s in found:
        if ctx.agent is not None:
            ctx.agent.send("frame_check", job=led.job, frame=frame, reason=s.reason, detail=s.detail[:500],
                           rendered=renders)
    if not reasons:
        if rec is not None and not rec.get("final"):
            rec.update(final=True, cleared=True)
            ctx.say(f"frame {frame} rendered again: it looks right now")
        return False
    if rec is None:
        led.suspects[frame] = {"reasons": list(reasons), "detail": detail, "renders": renders}
        led.frames.pop(frame, None)
        ctx.say(f"frame {frame} looks wrong ({', '.join(reasons)}: {detail}): rendering it again once")
        return True
    if rec.get("final"):
        return False
    same = list(reasons) == rec.get("reasons")
    rec.update(final=True, reasons=list(reasons), detail=detail, renders=renders)
    ctx.warn("suspect_frame", f"frame {frame}: {detail} (rendered {renders} times, "
                              f"{'the same each time' if same else 'wrong both times'})", frame=frame)
    return False
