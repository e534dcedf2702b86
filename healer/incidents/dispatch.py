"""Incidents: typed render errors and job events fanned out to Sentry and webhook targets, off the hot path.

The supervisor calls `emit()` at each state change; the call only puts the incident on a bounded queue
(microseconds, never blocks, never raises) and a worker thread hands it to each exporter: Sentry
(`healer.incidents.sentry.SentryReporter`, one event per typed error, plus cron check-ins for job health) and
webhooks (`healer.incidents.notify.WebhookNotifier`, signed deliveries through an on-disk outbox).

Usage::

    incidents = Incidents.from_config(cfg, registry=registry)   # or Incidents.noop()
    incidents.job_started({"job": "j1", "scene": "/shots/a.blend", "frames": [1, 240]})
    incidents.emit(RENDER_CRASHED, info, error)                  # error: a healer.errors.RenderError
    incidents.emit(RENDER_COMPLETED, info)                       # Sentry check-in "ok"
    incidents.close(timeout=5)

`info` is a mapping (or a dataclass) describing the job; every key is optional:
``job, scene, host, frames ([start, end] or a list), frame_start, frame_end, frames_total,
frames_completed (count or list), progress (0..1), frame, attempt, restarts, blender_version, engine,
device, gpu_name, gpu_uuid, memory ({rss_peak_bytes, gpu_peak_bytes, ...}), gpu ({...}), log_tail
(str or lines), log_path, crash_file, render_settings (dict), message, duration_s, breadcrumbs``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from healer.diagnosis.errors import RenderError
from healer.incidents.config import IncidentsConfig, load_incidents_config
from healer.incidents.model import RENDER_STARTED, Incident, IncidentExporter
from healer.incidents.notify import WebhookNotifier
from healer.incidents.scrub import Scrubber
from healer.incidents.sentry import SentryReporter
from renderwatch.paths import home

log = logging.getLogger(__name__)

METRIC_INCIDENTS = "renderwatch_healer_incidents"   # exported as renderwatch_healer_incidents_total



def incidents_counter(registry: CollectorRegistry) -> Counter:
    """The incidents counter, registered in `registry` (once per registry: whoever owns the registry
    keeps it and hands it to every Incidents it makes, as healer.service.metrics does)."""
    return Counter(METRIC_INCIDENTS, "Incidents handed to each target, by kind and outcome.",
                   ["kind", "target", "outcome"], registry=registry)


_STOP = object()


class Incidents:
    """Non-blocking fan-out of incidents to exporters (see module docstring)."""

    def __init__(self, exporters: Iterable[IncidentExporter] = (), *, registry: CollectorRegistry | None = None,
                 queue_size: int = 1000, counter: Counter | None = None) -> None:
        self._exporters = list(exporters)
        self._counter = counter if counter is not None else incidents_counter(
            registry if registry is not None else CollectorRegistry())
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._closed = False
        self._dropped_logged = False
        self._idle = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None
        if self._exporters:
            self._thread = threading.Thread(target=self._run, name="renderwatch-incidents", daemon=True)
            self._thread.start()
        for exp in self._exporters:
            bind = getattr(exp, "bind_counter", None)
            if callable(bind):
                bind(self.count)

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def noop(cls) -> Incidents:
        """Incidents that go nowhere (no thread, emit() is a no-op)."""
        return cls(())

    @classmethod
    def from_config(cls, cfg: Any = None, *, registry: CollectorRegistry | None = None,
                    env: Mapping[str, str] | None = None, counter: Counter | None = None) -> Incidents:
        """Build from an IncidentsConfig, an `[incidents]` mapping, or an object with an `incidents` attribute.

        Sentry is enabled only when a DSN is configured or SENTRY_DSN is set.
        """
        env = os.environ if env is None else env
        if cfg is not None and not isinstance(cfg, IncidentsConfig | Mapping):
            cfg = getattr(cfg, "incidents", None)
        config = cfg if isinstance(cfg, IncidentsConfig) else load_incidents_config(cfg, env)
        secrets = [t.secret for t in config.webhooks if t.secret]
        if config.sentry is not None and config.sentry.dsn:
            secrets.append(config.sentry.dsn)
        scrubber = Scrubber(path_rewrites=config.path_rewrites, secrets=secrets, env=env)
        exporters: list[IncidentExporter] = []
        if config.sentry is not None and config.sentry.enabled:
            exporters.append(SentryReporter(config.sentry, scrubber=scrubber))
        if config.webhooks:
            outbox = config.outbox or (home(dict(env)) / "healer" / "outbox")
            exporters.append(WebhookNotifier(config.webhooks, outbox=outbox, scrubber=scrubber,
                                             retry_base_s=config.retry_base_s, retry_max_s=config.retry_max_s,
                                             max_age_s=config.max_age_s))
        return cls(exporters, registry=registry, queue_size=config.queue_size, counter=counter)

    # -- the hot path ---------------------------------------------------------------------------------
    def emit(self, kind: str, info: Any = None, error: RenderError | None = None) -> None:
        """Record an incident. Never blocks and never raises: a full queue drops it (counted)."""
        if not self._exporters or self._closed:
            return
        try:
            incident = Incident(kind=kind, info=_snapshot(info), error=error)
            with self._idle:
                self._pending += 1
            self._queue.put_nowait(incident)
        except queue.Full:
            with self._idle:
                self._pending -= 1
            self._counter.labels(kind, "queue", "dropped").inc()
            if not self._dropped_logged:
                log.warning("incident queue full: dropping incidents until it drains")
                self._dropped_logged = True
        except Exception:  # noqa: BLE001 - supervision must never fail because of reporting
            log.exception("could not record incident %s", kind)

    def job_started(self, info: Any) -> None:
        """A job (or a resumed job) started: Sentry cron check-in `in_progress`."""
        self.emit(RENDER_STARTED, info)

    # -- worker ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._dispatch(item)
            finally:
                with self._idle:
                    self._pending -= 1
                    if self._pending <= 0:
                        self._idle.notify_all()

    def _dispatch(self, incident: Incident) -> None:
        for exp in self._exporters:
            try:
                outcomes = exp.export([incident])
            except Exception:  # noqa: BLE001 - one exporter's bug must not stop the others
                log.exception("incident exporter %s failed", exp.name)
                self._counter.labels(incident.kind, exp.name, "error").inc()
                continue
            # An exporter answers {target: outcome} for what it did with the incident.
            if isinstance(outcomes, Mapping):
                for target, outcome in outcomes.items():
                    self._counter.labels(incident.kind, str(target), str(outcome)).inc()

    def count(self, kind: str, target: str, outcome: str) -> None:
        """Count an outcome that happens later (a webhook delivered after retries)."""
        self._counter.labels(kind, target, outcome).inc()

    # -- lifecycle ------------------------------------------------------------------------------------
    def force_flush(self, timeout: float = 5.0) -> bool:
        """Wait until every emitted incident was handed to the exporters, then flush them."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        ok = True
        for exp in self._exporters:
            ok = exp.force_flush(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def close(self, timeout: float = 5.0) -> bool:
        """Drain the queue and flush exporters within `timeout`, then stop. Idempotent.

        Webhook deliveries not done by then stay in the on-disk outbox for the next start.
        """
        if self._closed:
            return True
        ok = self.force_flush(timeout)
        self._closed = True
        if self._thread is not None:
            try:
                self._queue.put_nowait(_STOP)
            except queue.Full:
                pass
            self._thread.join(timeout=0.5)
        for exp in self._exporters:
            try:
                exp.shutdown()
            except Exception:  # noqa: BLE001
                log.exception("incident exporter %s did not shut down cleanly", exp.name)
        return ok

    shutdown = close

    def __enter__(self) -> Incidents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _snapshot(info: Any) -> Mapping[str, Any]:
    """A shallow copy taken at emit() time: the supervisor may mutate its job state afterwards."""
    if info is None:
        return {}
    if isinstance(info, Mapping):
        return dict(info)
    if dataclasses.is_dataclass(info) and not isinstance(info, type):
        return {f.name: getattr(info, f.name) for f in dataclasses.fields(info)}
    to_dict = getattr(info, "to_dict", None)
    if callable(to_dict):
        d = to_dict()
        if isinstance(d, Mapping):
            return dict(d)
    return dict(vars(info))
