"""Incidents: typed render errors and job events fanned out to Sentry and webhook targets, off the hot path.

The supervisor calls `emit()` at each state change; the call writes the incident to the on-disk journal
(`healer.incidents.journal`: one fsynced file, ~1 ms, so the incident survives a healer killed the moment
after), puts it on a bounded queue, and returns; it never raises. A worker thread hands it to each
exporter: Sentry (`healer.incidents.sentry.SentryReporter`, one event per typed error, plus cron check-ins
for job health) and webhooks (`healer.incidents.notify.WebhookNotifier`, signed deliveries through an
on-disk outbox), and settles the journal file once every exporter holds it. The next healer to start
replays what a killed one left in the journal.

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
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from healer.diagnosis.errors import RenderError
from healer.incidents.config import IncidentsConfig, load_incidents_config
from healer.incidents.journal import Journal
from healer.incidents.model import RENDER_STARTED, Incident, IncidentExporter
from healer.incidents.notify import WebhookNotifier
from healer.incidents.scrub import Scrubber
from healer.incidents.sentry import SentryReporter
from kernel.paths import home

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
                 queue_size: int = 1000, counter: Counter | None = None, journal: Journal | None = None,
                 flush_timeout_s: float = 2.0) -> None:
        self._exporters = list(exporters)
        self._journal = journal if self._exporters else None
        self._journal_failed = False
        self._flush_timeout_s = flush_timeout_s
        # Exporters whose export() only queues (Sentry's transport): their incidents are settled in the
        # journal once a flush says they were sent.
        self._unsent: dict[str, list[str]] = {e.name: [] for e in self._exporters if not getattr(e, "durable", True)}
        self._unsent_lock = threading.Lock()
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
        if self._journal is not None:
            self._replay(self._journal)

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
        journal = None
        if exporters:
            # beside the webhook outbox where that was configured, else in the healer's state home
            where = (Path(config.outbox).parent if config.outbox else home(dict(env)) / "healer") / "incidents"
            try:
                journal = Journal(where)
            except OSError as e:
                log.warning("incident journal %s cannot be used (%s): incidents are kept in memory only until "
                            "sent; fix the directory's permissions", where, e)
        return cls(exporters, registry=registry, queue_size=config.queue_size, counter=counter, journal=journal)

    # -- the hot path ---------------------------------------------------------------------------------
    def emit(self, kind: str, info: Any = None, error: RenderError | None = None) -> None:
        """Record an incident. Never blocks and never raises: a full queue drops it (counted)."""
        if not self._exporters or self._closed:
            return
        try:
            incident = Incident(kind=kind, info=_snapshot(info), error=error)
            self._write_ahead(incident)
            with self._idle:
                self._pending += 1
            self._queue.put_nowait((incident, None))
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

    def _write_ahead(self, incident: Incident) -> None:
        """The incident on disk before emit() returns (see healer.incidents.journal)."""
        if self._journal is None:
            return
        try:
            self._journal.write(incident, [e.name for e in self._exporters])
        except Exception as e:  # noqa: BLE001 - a full disk must not stop supervision: keep it in memory
            self._counter.labels(incident.kind, "journal", "error").inc()
            if not self._journal_failed:
                log.warning("incident journal: could not write %s (%s): incidents are kept in memory only until "
                            "sent, and a healer killed before then loses them; free space or fix permissions in %s",
                            incident.kind, e, self._journal.path)
                self._journal_failed = True

    def _replay(self, journal: Journal) -> None:
        """Hand over what a killed healer left in the journal (to the exporters it still owed)."""
        try:
            orphans = list(journal.orphans())
        except Exception:  # noqa: BLE001
            log.exception("incident journal: could not read %s", journal.path)
            return
        for incident, left in orphans:
            with self._idle:
                self._pending += 1
            try:
                self._queue.put_nowait((incident, left))
            except queue.Full:
                with self._idle:
                    self._pending -= 1
                break                              # the rest stays on disk for the next start
            self._counter.labels(incident.kind, "journal", "replayed").inc()
        if orphans:
            log.info("incident journal: replaying %d incident(s) a stopped healer had not handed over", len(orphans))

    # -- worker ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._dispatch(*item)
            finally:
                with self._idle:
                    self._pending -= 1
                    if self._pending <= 0:
                        self._idle.notify_all()

    def _dispatch(self, incident: Incident, only: set[str] | None = None) -> None:
        for exp in self._exporters:
            if only is not None and exp.name not in only:
                continue
            try:
                outcomes = exp.export([incident])
            except Exception:  # noqa: BLE001 - one exporter's bug must not stop the others
                log.exception("incident exporter %s failed", exp.name)
                self._counter.labels(incident.kind, exp.name, "error").inc()
                continue                  # stays in the journal: the next start tries this exporter again
            # An exporter answers {target: outcome} for what it did with the incident.
            if isinstance(outcomes, Mapping):
                for target, outcome in outcomes.items():
                    self._counter.labels(incident.kind, str(target), str(outcome)).inc()
            if exp.name in self._unsent:
                with self._unsent_lock:
                    self._unsent[exp.name].append(incident.id)
            elif self._journal is not None:
                self._journal.done(incident.id, exp.name)
        self._settle_unsent(self._flush_timeout_s)

    def _settle_unsent(self, timeout: float) -> None:
        """Flush the exporters that only queue; what they sent is settled in the journal."""
        for exp in self._exporters:
            if not self._unsent.get(exp.name):
                continue
            with self._unsent_lock:
                flushing = len(self._unsent[exp.name])
            try:
                sent = exp.force_flush(timeout)
            except Exception:  # noqa: BLE001
                sent = False
            if sent:
                self._mark_sent(exp.name, flushing)

    def _mark_sent(self, name: str, count: int | None = None) -> None:
        """The first `count` (default: all) incidents queued with exporter `name` were sent."""
        with self._unsent_lock:
            ids = self._unsent[name]
            n = len(ids) if count is None else count
            sent, ids[:n] = ids[:n], []
        if self._journal is not None:
            for incident_id in sent:
                self._journal.done(incident_id, name)

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
        if ok:
            for name in self._unsent:
                self._mark_sent(name)
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
