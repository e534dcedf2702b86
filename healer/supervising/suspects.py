"""Frames that are complete files but wrong pictures: inspected as they are saved, rendered again once.

Each frame Blender saves (and the healer verified complete) is inspected in a worker thread while
Blender goes on with the next one (`start_check`). When the attempt ends, `review_frames` judges
every inspected frame against the scene's settings (the hooks' render settings line) and the job's
other frames (healer.images.judge.judge_frame):

- a frame whose file is clearly smaller than the job's others is decoded, with the nearest frame that
  is not, to find a part left empty (`partial`: a render that stopped part way);
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
from collections.abc import Callable, Iterable

from healer.images.facts import EmptyCells, FrameFacts
from healer.images.judge import Expected, JobFrames, Suspect, judge_frame, judge_partial
from healer.images.read import empty_cells, inspect_frame
from healer.supervising.context import AttemptState, JobContext
from healer.supervising.ledger import Ledger

log = logging.getLogger("healer.supervising.suspects")

CHECK_WAIT_S = 30.0      # an inspection still running this long after Blender exited is skipped


def start_check(ctx: JobContext, st: AttemptState, frame: int, path: str, seconds: float | None) -> None:
    """Inspect the saved frame off the event loop and off Blender's critical path."""
    if not ctx.parts.check_frames:
        return
    fut = asyncio.get_running_loop().run_in_executor(None, inspect_frame, path)
    st.checks.append((frame, seconds, fut))


def read_settings(ctx: JobContext, st: AttemptState, text: str) -> None:
    """The hooks' render settings line: what each frame should be, and the device Cycles uses."""
    parsed = parse_settings(text)
    if parsed is None:
        return
    st.expected, fallback = parsed
    if fallback:
        ctx.warn("cpu_fallback", fallback)


def parse_settings(text: str) -> tuple[Expected, str | None] | None:
    """(what each frame should be, the silent CPU fallback's message or None); None: not the line's JSON."""
    try:
        d = json.loads(text)
    except ValueError:
        return None
    if not isinstance(d, dict):
        return None

    def num(k: str) -> int | None:
        v = d.get(k)
        return v if isinstance(v, int) and v > 0 else None

    engine = d.get("engine") if isinstance(d.get("engine"), str) else None
    expected = Expected(num("width"), num("height"), d.get("color_mode") or None, d.get("file_format") or None,
                        engine)
    asked, used, why = d.get("device_asked"), d.get("device_used"), d.get("fallback")
    if isinstance(asked, str) and asked.startswith("GPU") and used == "CPU":
        return expected, f"the scene asks for {asked} rendering but Cycles renders on the CPU: {why}"
    return expected, None


RASTER_ENGINES = ("BLENDER_EEVEE", "BLENDER_WORKBENCH")


def check_raster_gl(ctx: JobContext, st: AttemptState, frame: int, pid: int) -> None:
    """`raster_gl_saved` for `renderwatch exec`: the job's warning and the agent's events."""
    def send(frame: int, detail: str) -> None:
        if ctx.agent is not None and ctx.ledger is not None:
            ctx.agent.send("frame_check", job=ctx.ledger.job, frame=frame, reason="cpu_fallback", detail=detail,
                           rendered=1)

    ctx.raster_gl = raster_gl_saved(ctx.raster_gl, st.expected.engine if st.expected else None,
                                    ctx.parts.probes.gl_driver, pid, frame, ctx.warn, send)


def raster_gl_saved(known: tuple[str, str] | None, engine: str | None,
                    probe: Callable[[int], tuple[str, str] | None], pid: int, frame: int,
                    warn: Callable[[str, str], None], send: Callable[[int, str], object]) -> tuple[str, str] | None:
    """EEVEE and Workbench render through OpenGL/Vulkan; on a node with no usable GPU, Mesa's software
    driver renders them on the CPU, silently and many times slower (the raster engines' silent CPU
    fallback). The driver is asked once per job, when a frame is saved (the context exists by then):
    software is a `cpu_fallback` warning, and every frame from then on is told to the agent. Returns
    the driver known (`known` for the next frame)."""
    if not engine or not engine.startswith(RASTER_ENGINES):
        return known
    if known is None:
        known = probe(pid)
        if known is None:
            return None
        if known[0] == "software":
            warn("cpu_fallback", software_gl_message(engine, known[1]))
    if known[0] == "software":
        send(frame, f"{engine} on a software driver ({known[1]})"[:500])
    return known


def software_gl_message(engine: str, evidence: str) -> str:
    return (f"{engine} renders on a software OpenGL/Vulkan driver ({evidence}): the CPU draws every frame; give "
            "the node a GPU with its driver (and /dev/dri or /dev/nvidia* inside a container)")


async def review_frames(ctx: JobContext, led: Ledger, st: AttemptState) -> list[int]:
    """Judge the frames inspected in this attempt; returns the frames forgotten to be rendered again.
    Each frame is judged against a summary of the others (JobFrames): the attempt's end costs O(log n)
    per frame, not a walk of the job per frame."""
    if not st.checks:
        return []
    futures = [f for _, _, f in st.checks]
    done, pending = await asyncio.wait(futures, timeout=CHECK_WAIT_S)
    for f in pending:
        f.cancel()
    if ctx.frame_facts is None:
        ctx.frame_facts = JobFrames()
    job = ctx.frame_facts
    for frame, seconds, fut in st.checks:
        if fut in done and frame in led.frames:
            job.add(frame, fut.result(), seconds)
            ctx.frame_verdicts.pop(frame, None)
    st.checks.clear()
    if pending:
        ctx.say(f"{len(pending)} frame inspection(s) did not finish in {CHECK_WAIT_S:g} s: those frames are not judged")
    todo = [f for f in sorted(job.facts) if f in led.frames and not (
        f in ctx.frame_verdicts and not _may_change(job.facts[f], ctx.frame_verdicts[f]))]
    verdicts = await judge_frames(job, todo, st.expected, None, ctx.frame_cells)
    again = []
    for frame, found in verdicts.items():
        reasons = tuple(sorted(s.reason for s in found))
        ctx.frame_verdicts[frame] = reasons
        if _settle(ctx, led, frame, reasons, "; ".join(s.detail for s in found), found):
            again.append(frame)
    if again:
        led.save()
    return again


async def judge_frames(facts: JobFrames | dict[int, FrameFacts], frames: Iterable[int], expected: Expected | None,
                       seconds: dict[int, float] | None, cells: dict[tuple[str, int], EmptyCells | None]
                       ) -> dict[int, list[Suspect]]:
    """What is wrong with each of `frames`, judged against the job's other inspected frames (a
    JobFrames, or the facts and seconds by frame). A frame whose file is clearly smaller than the
    others' is decoded (with the frame it is compared to), in a worker thread; `cells` keeps the
    decoded grids between calls."""
    job = facts if isinstance(facts, JobFrames) else JobFrames(facts, seconds)
    out: dict[int, list[Suspect]] = {}
    for frame in frames:
        this = job.facts[frame]
        found = judge_frame(this, expected, others=job.others(frame), seconds=job.seconds.get(frame))
        ref = job.partial_reference(frame) if job.may_be_partial(frame) else None
        if ref is not None:
            grids = [await _cells(cells, f) for f in (this, job.facts[ref])]
            partial = judge_partial(grids[0], grids[1], ref)
            if partial is not None:
                found.append(partial)
        out[frame] = found
    return out


async def _cells(cache: dict[tuple[str, int], EmptyCells | None], facts: FrameFacts) -> EmptyCells | None:
    key = (facts.path, facts.file_size)
    if key not in cache:
        cache[key] = await asyncio.get_running_loop().run_in_executor(None, empty_cells, facts.path)
    return cache[key]


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
