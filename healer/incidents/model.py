"""What an incident is: its kinds, the Incident record and the exporter shape. Imports no exporter.

Usage::

    from healer.incidents.model import RENDER_CRASHED, Incident
    incident = Incident(RENDER_CRASHED, {"job": "j1", "scene": "/shots/a.blend"}, error)
    incident.job()      # the job section of payloads and of the Sentry `job` context
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from healer.diagnosis.errors import RenderError

# Incident kinds (stable: webhook targets subscribe to them, payloads carry them).
RENDER_STARTED = "render.started"        # job_started(); Sentry check-in in_progress; not sent to webhooks by default
RENDER_CRASHED = "render.crashed"
RENDER_STALLED = "render.stalled"
RENDER_RESTARTED = "render.restarted"
RENDER_RECOVERED = "render.recovered"
RENDER_GAVE_UP = "render.gave_up"        # Sentry check-in error
RENDER_COMPLETED = "render.completed"    # Sentry check-in ok
RENDER_WARNING = "render.warning"        # a non-fatal typed error (python_error that did not stop it, missing texture)
KINDS: tuple[str, ...] = (RENDER_CRASHED, RENDER_STALLED, RENDER_RESTARTED, RENDER_RECOVERED, RENDER_GAVE_UP,
                          RENDER_COMPLETED, RENDER_WARNING, RENDER_STARTED)
DEFAULT_WEBHOOK_KINDS: frozenset[str] = frozenset(KINDS) - {RENDER_STARTED}
# Terminal kinds close the job's Sentry cron check-in with this status.
CHECKIN_STATUS: Mapping[str, str] = {RENDER_COMPLETED: "ok", RENDER_GAVE_UP: "error"}

@dataclass(frozen=True)
class Incident:
    """One thing that happened to a render job, as exporters see it."""

    kind: str
    info: Mapping[str, Any]
    error: RenderError | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    time: float = field(default_factory=time.time)

    # -- normalized views (shared by the Sentry event and the webhook payload) ------------------------
    @property
    def job_id(self) -> str:
        return str(self.info.get("job") or self.info.get("job_id") or "")

    @property
    def scene(self) -> str:
        return str(self.info.get("scene") or "")

    @property
    def scene_name(self) -> str:
        """The .blend's file name: the same scene groups across hosts whatever its mount point."""
        return Path(self.scene.replace("\\", "/")).name if self.scene else ""

    @property
    def host(self) -> str:
        return str(self.info.get("host") or socket.gethostname())

    @property
    def frame(self) -> int | None:
        f = self.info.get("frame")
        if f is None and self.error is not None:
            f = self.error.frame
        return _int_or_none(f)

    def frame_range(self) -> tuple[int | None, int | None]:
        start, end = self.info.get("frame_start"), self.info.get("frame_end")
        frames = self.info.get("frames")
        if (start is None or end is None) and isinstance(frames, list | tuple) and frames:
            nums = [f for f in (_int_or_none(x) for x in frames) if f is not None]
            if nums:
                start, end = min(nums), max(nums)
        return _int_or_none(start), _int_or_none(end)

    def frames_completed(self) -> int | None:
        done = self.info.get("frames_completed")
        if isinstance(done, list | tuple | set | frozenset):
            return len(done)
        return _int_or_none(done)

    def job(self) -> dict[str, Any]:
        """The job section of payloads and of the Sentry `job` context."""
        start, end = self.frame_range()
        frames = self.info.get("frames")
        total = _int_or_none(self.info.get("frames_total"))
        if total is None and isinstance(frames, list | tuple) and frames and "frame_start" not in self.info:
            total = len(frames) if len(frames) != 2 else (end - start + 1 if start is not None and end is not None else None)
        done = self.frames_completed()
        progress = self.info.get("progress")
        if progress is None and total and done is not None:
            progress = round(done / total, 4)
        out = {
            "id": self.job_id or None, "scene": self.scene or None, "host": self.host,
            "frame_start": start, "frame_end": end, "frames_total": total, "frames_completed": done,
            "progress": progress, "frame": self.frame,
            "attempt": _int_or_none(self.info.get("attempt")), "restarts": _int_or_none(self.info.get("restarts")),
            "blender_version": self.info.get("blender_version"), "engine": self.info.get("engine"),
            "device": self.info.get("device"), "gpu_name": self.info.get("gpu_name"),
            "farm": dict(self.info["farm"]) if isinstance(self.info.get("farm"), Mapping) else None,
        }
        return {k: v for k, v in out.items() if v is not None}


def _int_or_none(v: Any) -> int | None:
    try:
        return None if v is None or isinstance(v, bool) else int(v)
    except (TypeError, ValueError):
        return None


class IncidentExporter(Protocol):
    """What Incidents fans out to (OpenTelemetry's exporter shape). Failures are counted, never raised."""

    name: str

    def export(self, batch: Sequence[Incident]) -> object: ...
    def force_flush(self, timeout: float) -> bool: ...
    def shutdown(self) -> None: ...
