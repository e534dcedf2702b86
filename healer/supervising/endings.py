"""How a supervised job ends: complete, failed (with its typed reason) or cancelled. Each ending
saves the ledger, updates the metrics, tells the incident sink once and gives the exit status; the
host's agent hears how the whole job ended (`tell_agent`), not only how its last Blender did.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from healer.diagnosis import errors
from healer.diagnosis.catalog import EXIT_CANCELLED, EXIT_OK
from healer.incidents.model import RENDER_COMPLETED, RENDER_GAVE_UP
from healer.supervising.context import JobContext
from healer.supervising.ledger import Ledger, job_dir
from healer.supervising.preflight import EarlyFailure, job_id_for


@dataclass
class RenderResult:
    status: str                       # complete | failed | cancelled
    exit_code: int
    ledger: Ledger
    error: dict | None = None


def finish_complete(ctx: JobContext, led: Ledger) -> RenderResult:
    led.status, led.error = "complete", None
    if not ctx.announced_complete:    # on disk (the incident journal) before the ledger says so
        ctx.parts.incidents.emit(RENDER_COMPLETED, ctx.info(message="every requested frame has a verified output"))
    led.save()
    ctx.update_metrics()
    return RenderResult("complete", EXIT_OK, led)


def finish_failed(ctx: JobContext, led: Ledger, etype: str, message: str, code: int) -> RenderResult:
    led.status, led.error = "failed", {"type": etype, "message": message, "exit_code": code}
    cls = errors.ERROR_TYPES.get(etype, errors.UnknownError)
    ctx.parts.incidents.emit(RENDER_GAVE_UP, ctx.info(message=message), cls(summary=message))
    led.save()
    ctx.update_metrics()
    if ctx.parts.metrics:
        ctx.parts.metrics.gave_up.labels(led.job, etype).inc()
    return RenderResult("failed", code, led, led.error)


def finish_cancelled(ctx: JobContext, led: Ledger) -> RenderResult:
    led.status, led.error = "cancelled", {"type": "interrupted", "message": "cancelled", "exit_code": EXIT_CANCELLED}
    led.save()
    ctx.update_metrics()
    return RenderResult("cancelled", EXIT_CANCELLED, led, led.error)


def fail_early(ctx: JobContext, failure: EarlyFailure) -> RenderResult:
    """A failure before any Blender ran: an unsaved ledger carries it to the report."""
    req = ctx.parts.req
    job = ctx.job or job_id_for(req.scene, failure.frames, req.output, req.blender_args, req.farm)
    led = Ledger(job=job, scene=os.path.abspath(req.scene), frames_requested=sorted(failure.frames),
                 path=job_dir(job, ctx.parts.env) / "ledger.json")
    led.status = "failed"
    led.error = {"type": failure.type, "message": failure.message, "exit_code": failure.exit_code}
    ctx.ledger = led
    ctx.parts.incidents.emit(RENDER_GAVE_UP, ctx.info(message=failure.message),
                       errors.error_class(failure.type)(summary=failure.message))
    return RenderResult("failed", failure.exit_code, led, led.error)


_AGENT_STATUS = {"complete": "complete", "cancelled": "cancel", "failed": "failed"}


def tell_agent(ctx: JobContext, result: RenderResult) -> None:
    """The job's end as the agent shows it: a `final` job_end after every event of its Blenders.

    A Blender's hooks only see their own render end (a cancel when the healer stops it, a crash ends
    with nothing at all): without this a cancelled or failed job stayed `running` at the agent, then
    went `stale`. Jobs that never started a Blender are not the agent's to show.
    """
    led = result.ledger
    if ctx.agent is None or not led.attempts:
        return
    fields: dict = {"status": _AGENT_STATUS.get(result.status, "failed"), "final": True,
                    "frames_done": len(led.completed()), "started_at": ctx.started_at,
                    "attempt": led.attempts[-1].attempt}
    if result.status == "failed":
        fields["error_type"] = (result.error or {}).get("type") or "unknown"
    # The agent's spool scanner picks it up within a second: a job end opens no connection of its own
    ctx.agent.send("job_end", job=led.job, spool_only=True, **fields)
