"""Incidents: typed render errors and job events fanned out to Sentry and webhook targets, off the hot path.

The supervisor calls `emit()` at each state change; the call only puts the incident on a bounded queue
(microseconds, never blocks, never raises) and a worker thread hands it to each exporter: Sentry
(`healer.sentry.SentryReporter`, one event per typed error, plus cron check-ins for job health) and
webhooks (`healer.notify.WebhookNotifier`, signed deliveries through an on-disk outbox).

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
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from healer.errors import RenderError

if TYPE_CHECKING:
    from healer.notify import WebhookTarget
    from healer.sentry import SentryConfig

log = logging.getLogger(__name__)

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

# Environment variables read by the incidents loader (the standard Sentry ones work as usual).
ENV_SENTRY_DSN = "SENTRY_DSN"
ENV_SENTRY_RELEASE = "SENTRY_RELEASE"
ENV_SENTRY_ENVIRONMENT = "SENTRY_ENVIRONMENT"
ENV_WEBHOOK_URL = "RENDERWATCH_WEBHOOK_URL"          # one extra renderwatch-format target, all kinds
ENV_WEBHOOK_SECRET = "RENDERWATCH_WEBHOOK_SECRET"    # its HMAC secret

METRIC_INCIDENTS = "renderwatch_healer_incidents"   # exported as renderwatch_healer_incidents_total


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


@dataclass(frozen=True)
class IncidentsConfig:
    """Where incidents go. Built by `load_incidents_config` from the `[incidents]` table + environment."""

    sentry: SentryConfig | None = None
    webhooks: tuple[WebhookTarget, ...] = ()
    outbox: Path | None = None                 # default: renderwatch.paths.home() / "healer" / "outbox"
    path_rewrites: tuple[tuple[str, str], ...] = ()
    retry_base_s: float = 1.0
    retry_max_s: float = 300.0
    max_age_s: float = 7 * 24 * 3600.0
    queue_size: int = 1000


def load_incidents_config(data: Mapping[str, Any] | None = None,
                          env: Mapping[str, str] | None = None) -> IncidentsConfig:
    """Pure loader: the `[incidents]` table (or {}) + environment → IncidentsConfig. ValueError names the key."""
    from healer.notify import WebhookTarget
    from healer.sentry import DEFAULT_MONITOR_CONFIG, SentryConfig

    env = os.environ if env is None else env
    data = dict(data or {})
    s = dict(_table(data, "sentry"))
    dsn = s.get("dsn") or env.get(ENV_SENTRY_DSN) or None
    monitor_config = s.get("monitor_config", dict(DEFAULT_MONITOR_CONFIG))
    if monitor_config is not None and monitor_config is not False and not isinstance(monitor_config, Mapping):
        raise ValueError("incidents.sentry.monitor_config: expected a table (or false to send none)")
    sentry = SentryConfig(
        dsn=dsn,
        release=s.get("release") or env.get(ENV_SENTRY_RELEASE) or None,
        environment=s.get("environment") or env.get(ENV_SENTRY_ENVIRONMENT) or None,
        server_name=s.get("server_name") or None,
        monitor_slug=s.get("monitor_slug") or None,
        monitor_config=dict(monitor_config) if monitor_config else None,
        in_app_include=tuple(_str_list(s, "in_app_include", "incidents.sentry")),
        in_app_exclude=tuple(_str_list(s, "in_app_exclude", "incidents.sentry")),
    ) if dsn or s else None
    hooks = data.get("webhooks", [])
    if not isinstance(hooks, list):
        raise ValueError("incidents.webhooks: expected a list of tables")
    targets = [WebhookTarget.from_mapping(h, f"incidents.webhooks[{i}]", env=env) for i, h in enumerate(hooks)]
    if env.get(ENV_WEBHOOK_URL):
        targets.append(WebhookTarget.from_mapping({"url": env[ENV_WEBHOOK_URL], "name": "env",
                                                   "secret": env.get(ENV_WEBHOOK_SECRET)}, ENV_WEBHOOK_URL))
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"incidents.webhooks: target names must be unique, got {names}")
    rewrites = data.get("path_rewrites", {})
    if isinstance(rewrites, Mapping):
        pairs = tuple((str(k), str(v)) for k, v in rewrites.items())
    elif isinstance(rewrites, list) and all(isinstance(p, list | tuple) and len(p) == 2 for p in rewrites):
        pairs = tuple((str(a), str(b)) for a, b in rewrites)
    else:
        raise ValueError("incidents.path_rewrites: expected a table {prefix = replacement} or [[prefix, replacement]]")
    outbox = data.get("outbox")
    return IncidentsConfig(
        sentry=sentry, webhooks=tuple(targets), outbox=Path(outbox).expanduser() if outbox else None,
        path_rewrites=pairs,
        retry_base_s=_positive(data, "retry_base_s", 1.0), retry_max_s=_positive(data, "retry_max_s", 300.0),
        max_age_s=_positive(data, "max_age_s", 7 * 24 * 3600.0),
        queue_size=int(_positive(data, "queue_size", 1000)),
    )


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    v = data.get(key, {})
    if not isinstance(v, Mapping):
        raise ValueError(f"incidents.{key}: expected a table")
    return v


def _str_list(data: Mapping[str, Any], key: str, where: str) -> list[str]:
    v = data.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"{where}.{key}: expected a list of strings")
    return v


def _positive(data: Mapping[str, Any], key: str, default: float) -> float:
    v = data.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
        raise ValueError(f"incidents.{key}: expected a positive number, got {v!r}")
    return float(v)


def _counter(registry: CollectorRegistry) -> Counter:
    try:
        return Counter(METRIC_INCIDENTS, "Incidents handed to each target, by kind and outcome.",
                       ["kind", "target", "outcome"], registry=registry)
    except ValueError:
        # Already registered in this registry (the healer re-created its Incidents): reuse it.
        existing = registry._names_to_collectors.get(METRIC_INCIDENTS + "_total")  # noqa: SLF001
        if isinstance(existing, Counter):
            return existing
        raise


_STOP = object()


class Incidents:
    """Non-blocking fan-out of incidents to exporters (see module docstring)."""

    def __init__(self, exporters: Iterable[IncidentExporter] = (), *, registry: CollectorRegistry | None = None,
                 queue_size: int = 1000, on_checkin: Callable[[Incident, str], None] | None = None) -> None:
        self._exporters = list(exporters)
        self._counter = _counter(registry if registry is not None else CollectorRegistry())
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
                    env: Mapping[str, str] | None = None) -> Incidents:
        """Build from an IncidentsConfig, an `[incidents]` mapping, or an object with an `incidents` attribute.

        Sentry is enabled only when a DSN is configured or SENTRY_DSN is set.
        """
        from healer.notify import WebhookNotifier
        from healer.scrub import Scrubber
        from healer.sentry import SentryReporter
        from renderwatch.paths import home

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
        return cls(exporters, registry=registry, queue_size=config.queue_size)

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
