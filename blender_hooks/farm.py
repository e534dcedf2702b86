"""Who runs this render: the farm manager's own identity of the job, read from the environment it sets.

AWS Deadline Cloud's worker agent sets DEADLINE_FARM_ID, DEADLINE_QUEUE_ID, DEADLINE_JOB_ID,
DEADLINE_STEP_ID, DEADLINE_TASK_ID, DEADLINE_SESSION_ID and DEADLINE_SESSIONACTION_ID; OpenCue's RQD
sets CUE_JOB, CUE_JOB_ID, CUE_LAYER, CUE_FRAME, CUE_FRAME_ID, CUE_SHOW, CUE_SHOT, CUE_GPUS,
CUE_THREADS...; `openjd run` sets OPENJD_SESSION_WORKING_DIR. OpenTelemetry carries a trace context
in TRACEPARENT / TRACESTATE. Pure and standard library only: the healer reads it for job ids and
incidents, the hooks inside Blender for the events (so a farm's Blender with the add-on installed and
no healer still reports its farm job).

Usage::

    farm = farm_identity(os.environ)       # None outside a farm
    farm.job, farm.task, farm.discriminator()
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

_DEADLINE = ("DEADLINE_FARM_ID", "DEADLINE_QUEUE_ID", "DEADLINE_JOB_ID", "DEADLINE_STEP_ID", "DEADLINE_TASK_ID",
             "DEADLINE_SESSION_ID", "DEADLINE_SESSIONACTION_ID")
_CUE = ("CUE_SHOW", "CUE_SHOT", "CUE_JOB", "CUE_JOB_ID", "CUE_LAYER", "CUE_LAYER_ID", "CUE_FRAME", "CUE_FRAME_ID",
        "CUE_GPUS", "CUE_THREADS")


@dataclass(frozen=True)
class FarmIdentity:
    engine: str                          # "deadline" | "opencue" | "openjd"
    job: str | None = None               # the farm's job id
    task: str | None = None              # its task (Deadline step/task, OpenCue layer/frame)
    run: str | None = None               # this run of the task (Deadline session action), if the farm says
    traceparent: str | None = None       # a W3C trace context to join
    tracestate: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)   # everything the farm set, for spans/incidents

    def discriminator(self) -> str:
        """What makes one farm job's task a different renderwatch job from another's (never the run:
        a retry of the same task must find the same ledger)."""
        return f"{self.engine}:{self.job or ''}:{self.task or ''}"

    def to_dict(self) -> dict[str, str]:
        out = {"engine": self.engine, **{k: v for k, v in (("job", self.job), ("task", self.task),
                                                            ("run", self.run)) if v}}
        return {**out, **self.attributes}


def farm_identity(env: Mapping[str, str]) -> FarmIdentity | None:
    tp, ts = env.get("TRACEPARENT") or None, env.get("TRACESTATE") or None
    if env.get("DEADLINE_JOB_ID") or env.get("DEADLINE_SESSION_ID"):
        attrs = {k[len("DEADLINE_"):].lower(): env[k] for k in _DEADLINE if env.get(k)}
        task = "/".join(x for x in (env.get("DEADLINE_STEP_ID"), env.get("DEADLINE_TASK_ID")) if x) or None
        return FarmIdentity("deadline", env.get("DEADLINE_JOB_ID"), task, env.get("DEADLINE_SESSIONACTION_ID"),
                            tp, ts, attrs)
    if env.get("CUE_JOB") or env.get("CUE_JOB_ID"):
        attrs = {k[len("CUE_"):].lower(): env[k] for k in _CUE if env.get(k)}
        task = "/".join(x for x in (env.get("CUE_LAYER"), env.get("CUE_FRAME")) if x) or None
        return FarmIdentity("opencue", env.get("CUE_JOB_ID") or env.get("CUE_JOB"), task, None, tp, ts, attrs)
    if env.get("OPENJD_SESSION_WORKING_DIR"):
        return FarmIdentity("openjd", None, None, env["OPENJD_SESSION_WORKING_DIR"], tp, ts,
                            {"session_working_dir": env["OPENJD_SESSION_WORKING_DIR"]})
    if tp:
        return FarmIdentity("otel", None, None, None, tp, ts, {})
    return None
