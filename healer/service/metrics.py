"""Prometheus metrics of the healer (one set per registry: tests build a fresh registry each).

Usage::

    m = HealerMetrics(CollectorRegistry())
    m.probe_healthy.labels(job="j1", probe="stall").set(1)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from healer.incidents.dispatch import incidents_counter


class HealerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.probe_healthy = Gauge("renderwatch_healer_probe_healthy",
                                   "1 if the probe passes for the job's running Blender, 0 if not",
                                   ["job", "probe"], registry=r)
        self.restarts = Counter("renderwatch_healer_restarts", "Blender restarts by the healer",
                                ["job", "error_type"], registry=r)
        self.gave_up = Counter("renderwatch_healer_gave_up", "Jobs the healer stopped retrying, by the reason's type",
                               ["job", "error_type"], registry=r)
        self.attempts = Counter("renderwatch_healer_attempts", "Blender attempts that ended, by typed outcome",
                                ["error_type"], registry=r)
        self.frames_requested = Gauge("renderwatch_healer_frames_requested", "Frames a job asked for",
                                      ["job"], registry=r)
        self.frames_completed = Gauge("renderwatch_healer_frames_completed",
                                      "Frames of a job with a verified output file", ["job"], registry=r)
        self.frames_rerendered = Counter("renderwatch_healer_frames_rerendered",
                                         "Frame renders started for a frame already started before",
                                         ["job"], registry=r)
        self.jobs = Gauge("renderwatch_healer_jobs", "Jobs known to the healer by status", ["status"], registry=r)
        self.incidents = incidents_counter(r)     # every Incidents the service makes counts here
        self.stall_detect = Histogram("renderwatch_healer_stall_detect_seconds",
                                      "Time from the last progress to the stall kill, minus the timeout",
                                      buckets=(0.1, 0.25, 0.5, 1, 2, 5), registry=r)

    def forget_job(self, job: str) -> None:
        """Drop a finished job's per-job series so a long-running service does not grow without bound."""
        for g in (self.frames_requested, self.frames_completed):
            try:
                g.remove(job)
            except KeyError:
                pass
        for probe in ("alive", "progress", "heartbeat", "stall", "memory", "gpu"):
            try:
                self.probe_healthy.remove(job, probe)
            except KeyError:
                pass
