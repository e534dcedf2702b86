"""Sentry reporting: one event per typed render error, with Blender's real stack, plus job-health check-ins.

Uses sentry-sdk's own `Client`, `Scope` and HTTP transport (a private client: nothing touches the global
SDK state, so an application that also uses Sentry keeps its own setup). Nothing is sent without a DSN.

Event shape, per typed error (`healer.diagnosis.errors.RenderError`):

- exception type = the error's class name (`GpuOomError`), value = its summary; level by severity
  (a non-fatal error, e.g. a Python error that did not stop the render or a missing texture: warning);
- stacktrace = the crash file's native `# backtrace` then its `# Python backtrace` (or the last Python
  traceback in the log), outermost first, the user's scripts `in_app`;
- fingerprint = [error class, scene file name, top in-app frame `file:function`];
- tags, `job`/`memory`/`gpu` contexts, breadcrumbs of the job's history, and attachments: the crash
  file, the last 500 lines of Blender's output, the render settings as JSON. All scrubbed (`healer.incidents.scrub`).

Usage::

    reporter = SentryReporter(SentryConfig(dsn="https://key@sentry.example/1"), scrubber=Scrubber())
    reporter.export([incident]); reporter.force_flush(2); reporter.shutdown()
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import sentry_sdk
from sentry_sdk.crons import capture_checkin
from sentry_sdk.scope import Scope

from healer.diagnosis import crashfile
from healer.diagnosis.classify import last_traceback
from healer.diagnosis.crashfile import read_crash_file
from healer.diagnosis.errors import RenderError
from healer.incidents.model import CHECKIN_STATUS, RENDER_GAVE_UP, RENDER_STARTED, Incident
from healer.incidents.scrub import Scrubber
from kernel.version import __version__

if TYPE_CHECKING:
    from sentry_sdk._types import Event

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 500
TARGET = "sentry"
TARGET_CRON = "sentry_cron"
# Check-ins with this config create/update the monitor (upsert): a job that started and neither
# completed nor gave up within max_runtime minutes shows as timed out; no job for a day as missed.
DEFAULT_MONITOR_CONFIG: Mapping[str, Any] = {
    "schedule": {"type": "interval", "value": 1, "unit": "day"},
    "checkin_margin": 60, "max_runtime": 720, "failure_issue_threshold": 1,
}
# Paths that are Blender's or Python's own code, never the user's.
_NOT_IN_APP = re.compile(
    r"[/\\]python\d+(\.\d+)?[/\\]|site-packages|dist-packages|/usr/share/blender/|Blender Foundation|"
    r"[/\\]\d+\.\d+[/\\](scripts[/\\](startup|modules|addons|addons_core|freestyle|presets)|python)[/\\]|"
    r"^<frozen |^<string>$"
)
_NATIVE = re.compile(r"^(?P<pkg>[^()\[\]]*?)\((?P<sym>[^()+]*)(?:\+(?P<off>0x[0-9a-fA-F]+))?\)\s*\[(?P<addr>0x[0-9a-fA-F]+)\]")


@dataclass(frozen=True)
class SentryConfig:
    """Sentry settings (`[incidents.sentry]`; SENTRY_DSN / SENTRY_RELEASE / SENTRY_ENVIRONMENT work too)."""

    dsn: str | None = None
    release: str | None = None            # default renderwatch@<version>
    environment: str | None = None        # default "production" (the SDK's)
    server_name: str | None = None        # default the host name
    monitor_slug: str | None = None       # default derived from the scene: render-<scene-stem>
    monitor_config: Mapping[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_MONITOR_CONFIG))
    in_app_include: tuple[str, ...] = ()  # path prefixes that are the user's code (win over the built-in rules)
    in_app_exclude: tuple[str, ...] = ()  # path prefixes that are not
    shutdown_timeout: float = 2.0

    @property
    def enabled(self) -> bool:
        return bool(self.dsn)


# -- stack frames (pure) -----------------------------------------------------------------------------
def parse_crash_file(text: str) -> tuple[list[tuple[str, int, str]], list[str]]:
    """(python frames outermost first, native lines as written: innermost first) from a crash file."""
    parsed = crashfile.parse_crash_file(text)
    return ([(str(f[0]), int(f[1]), str(f[2])) for f in parsed.python_frames],
            [str(n) for n in parsed.native_frames])


def is_in_app(path: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> bool:
    """The user's own code (their scene scripts, pipeline hooks), not Blender's or Python's."""
    p = path.replace("\\", "/")
    if any(p.startswith(x.replace("\\", "/")) for x in include):
        return True
    if any(p.startswith(x.replace("\\", "/")) for x in exclude):
        return False
    return not _NOT_IN_APP.search(path)


def python_frame(file: str, lineno: int, func: str, include: Sequence[str] = (),
                 exclude: Sequence[str] = ()) -> dict[str, Any]:
    return {"filename": file, "abs_path": file, "function": func, "lineno": lineno,
            "in_app": is_in_app(file, include, exclude), "platform": "python"}


def native_frame(line: str) -> dict[str, Any]:
    """One glibc `backtrace_symbols` line (`/path/blender(sym+0x1d) [0x55d1...]`) as a Sentry frame."""
    m = _NATIVE.match(line.strip())
    if not m:
        return {"function": line.strip()[:200] or "<unknown>", "in_app": False, "platform": "native"}
    frame: dict[str, Any] = {"function": m["sym"] or "<unknown>", "package": m["pkg"].strip() or None,
                             "instruction_addr": m["addr"], "in_app": False, "platform": "native"}
    if not m["sym"] and m["off"]:
        frame["function"] = f"{Path(m['pkg'].strip()).name}+{m['off']}"
    return {k: v for k, v in frame.items() if v is not None}


def stack_frames(error: RenderError | None, crash_text: str | None, log_lines: Sequence[str],
                 include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Sentry frames, outermost first: Blender's native stack, then the Python stack running inside it."""
    py: list[tuple[str, int, str]] = list(error.python_frames) if error is not None else []
    native: list[str] = list(error.native_frames) if error is not None else []
    if crash_text and not (py or native):
        py, native = parse_crash_file(crash_text)
    if not py and log_lines:
        py, _ = last_traceback(log_lines)
    frames = [native_frame(n) for n in reversed(native)]
    frames += [python_frame(f, ln, fn, include, exclude) for f, ln, fn in py]
    return frames


def top_in_app_frame(frames: Sequence[Mapping[str, Any]]) -> str:
    """`file:function` of the innermost in-app frame (file name only, so mount points don't matter)."""
    pick = next((f for f in reversed(frames) if f.get("in_app")), None) or (frames[-1] if frames else None)
    if pick is None:
        return "<no stack>"
    where = pick.get("filename") or pick.get("package") or "?"
    return f"{Path(str(where).replace(chr(92), '/')).name}:{pick.get('function', '?')}"


def level_for(kind: str, error: RenderError) -> str:
    if kind == RENDER_GAVE_UP:
        return "fatal"
    if error.severity == "info":
        return "info"
    if error.severity == "warning" or not error.fatal:
        return "warning"
    return "error"


def monitor_slug(scene: str, configured: str | None = None) -> str:
    """A Sentry monitor slug: the configured one, else `render-<scene stem>` (lowercase, [a-z0-9_-], ≤ 50)."""
    if configured:
        return configured
    stem = Path(scene.replace("\\", "/")).stem if scene else "job"
    slug = re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-") or "job"
    return ("render-" + slug)[:50]


def read_tail(path: str | Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 4 << 20) -> list[str]:
    """The last `lines` lines of a file, reading at most `max_bytes` from its end."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        data = f.read()
    return data.decode("utf-8", "replace").splitlines()[-lines:]


def log_tail_lines(info: Mapping[str, Any]) -> list[str]:
    tail = info.get("log_tail")
    if isinstance(tail, str):
        return tail.splitlines()[-LOG_TAIL_LINES:]
    if isinstance(tail, list | tuple | deque):
        return [str(x).rstrip("\n") for x in list(tail)[-LOG_TAIL_LINES:]]
    path = info.get("log_path")
    if path:
        try:
            return read_tail(path)
        except OSError:
            return []
    return []


# -- the event (pure over the incident) -----------------------------------------------------------------
@dataclass
class EventParts:
    event: dict[str, Any]
    attachments: list[tuple[str, bytes, str]]   # (filename, bytes, content type), already scrubbed


def build_event(incident: Incident, scrubber: Scrubber, *, include: Sequence[str] = (),
                exclude: Sequence[str] = (), breadcrumbs: Sequence[Mapping[str, Any]] = ()) -> EventParts:
    """The Sentry event and attachments for one incident carrying a typed error."""
    error = incident.error
    assert error is not None
    info = incident.info
    crash_path = error.crash_file or info.get("crash_file")
    crash_text = read_crash_file(crash_path) if crash_path else None
    lines = log_tail_lines(info)
    frames = stack_frames(error, crash_text, lines, include, exclude)
    type_name = type(error).__name__
    scene = incident.scene_name or "<no scene>"
    job = incident.job()
    tags = {
        "error_type": error.type, "kind": incident.kind, "host": incident.host,
        "blender_version": info.get("blender_version"), "engine": info.get("engine"),
        "device": info.get("device"), "gpu_name": info.get("gpu_name"), "frame": incident.frame,
        "attempt": info.get("attempt"), "job": incident.job_id or None, "scene": incident.scene_name or None,
    }
    farm: Mapping[str, Any] = info["farm"] if isinstance(info.get("farm"), Mapping) else {}
    tags.update({"farm.engine": farm.get("engine"), "farm.job": farm.get("job"), "farm.task": farm.get("task")})
    contexts: dict[str, Any] = {"job": {k: v for k, v in job.items() if k not in ("host",)}}
    memory = info.get("memory")
    if isinstance(memory, Mapping) and memory:
        contexts["memory"] = dict(memory)
    gpu = dict(info.get("gpu") or {}) if isinstance(info.get("gpu"), Mapping) else {}
    if info.get("gpu_name"):
        gpu.setdefault("name", info["gpu_name"])
    if info.get("gpu_uuid"):
        gpu.setdefault("id", info["gpu_uuid"])
    if gpu:
        contexts["gpu"] = {"type": "gpu", **gpu}
    exc: dict[str, Any] = {"type": type_name, "value": error.summary or error.type, "module": "renderwatch.blender",
                           "mechanism": {"type": "renderwatch", "handled": not error.fatal,
                                         "data": {"error_type": error.type, "kind": incident.kind}}}
    if frames:
        exc["stacktrace"] = {"frames": frames}
    if error.exit_signal is not None:
        exc["mechanism"]["meta"] = {"signal": {"number": error.exit_signal}}
    crumbs = [dict(b) for b in breadcrumbs]
    event: dict[str, Any] = {
        # The incident's id: a healer that replays its journal after a kill sends the same event_id,
        # which Sentry keeps once.
        "event_id": incident.id if _is_event_id(incident.id) else uuid.uuid4().hex,
        "level": level_for(incident.kind, error),
        "logger": "renderwatch.healer",
        "platform": "python",
        "transaction": f"render {scene}",
        "exception": {"values": [exc]},
        "fingerprint": [type_name, scene, top_in_app_frame(frames)],
        "tags": {k: str(v)[:200] for k, v in tags.items() if v is not None and v != ""},
        "contexts": contexts,
        "extra": {"findings": [f.to_dict() for f in error.findings][:50],
                  "exit_code": error.exit_code, "exit_signal": error.exit_signal,
                  **({"frame_log": scrubber.value([str(x)[:1000] for x in info["frame_log"][-30:]])}
                     if isinstance(info.get("frame_log"), list | tuple) and info["frame_log"] else {})},
        "breadcrumbs": {"values": crumbs},
    }
    attachments: list[tuple[str, bytes, str]] = []
    if crash_text is not None:
        name = Path(str(crash_path).replace("\\", "/")).name or "blender.crash.txt"
        attachments.append((name, scrubber.text(crash_text).encode(), "text/plain"))
    if lines:
        attachments.append(("blender-output.log", scrubber.text("\n".join(lines) + "\n").encode(), "text/plain"))
    settings = info.get("render_settings")
    if isinstance(settings, Mapping) and settings:
        body = json.dumps(scrubber.value(dict(settings)), indent=2, sort_keys=True, default=str)
        attachments.append(("render-settings.json", body.encode(), "application/json"))
    return EventParts(event=event, attachments=attachments)


def _is_event_id(value: str) -> bool:
    """Sentry's event_id: 32 lowercase hex digits."""
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


# -- the reporter --------------------------------------------------------------------------------------
class SentryReporter:
    """Incident exporter to Sentry (typed errors as events, job start/end as cron check-ins)."""

    name = TARGET
    durable = False        # export() hands events to sentry-sdk's in-memory transport: settled on flush

    def __init__(self, config: SentryConfig, *, scrubber: Scrubber | None = None,
                 client_options: Mapping[str, Any] | None = None) -> None:
        if not config.dsn:
            raise ValueError("SentryReporter needs a DSN (set SENTRY_DSN or incidents.sentry.dsn)")
        self.config = config
        self.scrubber = scrubber or Scrubber(secrets=[config.dsn])
        opts: dict[str, Any] = {
            "dsn": config.dsn,
            "release": config.release or f"renderwatch@{__version__}",
            "environment": config.environment,
            "server_name": config.server_name or socket.gethostname(),
            # No integrations: they would hook this process globally (excepthook, logging) and add
            # sys.argv/modules to events. We send only what build_event() makes.
            "default_integrations": False, "auto_enabling_integrations": False, "integrations": [],
            # send_default_pii stays False (unset: setting it is deprecated in favour of data_collection).
            "data_collection": {"user_info": False, "http_bodies": [], "stack_frame_variables": False},
            "include_local_variables": False, "attach_stacktrace": False,
            "before_send": self.scrubber.before_send, "before_breadcrumb": self.scrubber.before_breadcrumb,
            "max_breadcrumbs": 100, "shutdown_timeout": config.shutdown_timeout,
        }
        if config.environment is None:
            opts.pop("environment")
        opts.update(client_options or {})
        self.client = sentry_sdk.Client(**opts)
        self._seen: OrderedDict[int, RenderError] = OrderedDict()   # id → error (held, so ids aren't reused)
        self._crumbs: dict[str, deque[dict[str, Any]]] = {}
        self._started: dict[str, float] = {}
        self._count: Callable[[str, str, str], None] | None = None

    def bind_counter(self, count: Callable[[str, str, str], None]) -> None:
        self._count = count

    # -- exporter ---------------------------------------------------------------------------------
    def export(self, batch: Sequence[Incident]) -> dict[str, str]:
        outcomes: dict[str, str] = {}
        for incident in batch:
            self._breadcrumb(incident)
            status = "in_progress" if incident.kind == RENDER_STARTED else CHECKIN_STATUS.get(incident.kind)
            if status is not None:
                outcomes[TARGET_CRON] = "sent" if self.check_in(incident, status) else "skipped"
            if incident.error is not None and incident.error.type != "ok":
                outcomes[TARGET] = "sent" if self.capture(incident) else "duplicate"
            if incident.kind in CHECKIN_STATUS:
                self._crumbs.pop(incident.job_id, None)
                self._started.pop(incident.job_id, None)
        return outcomes

    def capture(self, incident: Incident) -> str | None:
        """Send one event for the incident's typed error; None if this error was already sent."""
        error = incident.error
        assert error is not None
        # One event per error *object*: the supervisor may pass the same error with crashed, restarted
        # and gave_up; a new crash (even an identical one) is a new object and a new event.
        if self._seen.get(id(error)) is error:
            return None
        self._seen[id(error)] = error
        while len(self._seen) > 1000:
            self._seen.popitem(last=False)
        parts = build_event(incident, self.scrubber, include=self.config.in_app_include,
                            exclude=self.config.in_app_exclude,
                            breadcrumbs=list(self._crumbs.get(incident.job_id, ())))
        scope = Scope(client=self.client)
        for name, data, ctype in parts.attachments:
            scope.add_attachment(bytes=data, filename=name, content_type=ctype)
        return self.client.capture_event(cast("Event", parts.event), scope=scope)

    def check_in(self, incident: Incident, status: str) -> str | None:
        """Sentry cron check-in for the job; the id is derived from the job so a restarted healer closes it."""
        job = incident.job_id or incident.scene or "job"
        now = time.monotonic()
        if status == "in_progress":
            self._started.setdefault(job, now)
        duration = incident.info.get("duration_s")
        if duration is None and status != "in_progress" and job in self._started:
            duration = now - self._started[job]
        # sentry-sdk's own check-in, sent through this reporter's private client (never the host
        # application's global one): a scope of our own carries the client.
        with sentry_sdk.new_scope() as scope:
            scope.set_client(self.client)
            return capture_checkin(
                monitor_slug=monitor_slug(incident.scene, self.config.monitor_slug),
                check_in_id=uuid.uuid5(uuid.NAMESPACE_URL, f"renderwatch:job:{job}").hex,
                status=status, duration=float(duration) if duration is not None else None,
                monitor_config=cast("Any", dict(self.config.monitor_config)) if self.config.monitor_config else None)

    def _breadcrumb(self, incident: Incident) -> None:
        crumbs = self._crumbs.setdefault(incident.job_id, deque(maxlen=100))
        for extra in incident.info.get("breadcrumbs") or ():
            if isinstance(extra, Mapping):
                crumbs.append(dict(extra))
        data = {k: v for k, v in (("frames_completed", incident.frames_completed()),
                                  ("restarts", incident.info.get("restarts")),
                                  ("attempt", incident.info.get("attempt")),
                                  ("frame", incident.frame)) if v is not None}
        msg = incident.kind
        if incident.error is not None and incident.error.type != "ok":
            msg += f": {incident.error.type}: {incident.error.summary}"
        crumbs.append({"type": "default", "category": "render", "message": msg, "data": data,
                       "level": "warning" if incident.error is not None and incident.error.type != "ok" else "info",
                       "timestamp": incident.time})

    def force_flush(self, timeout: float) -> bool:
        try:
            self.client.flush(timeout=timeout)
            return True
        except Exception:  # noqa: BLE001
            log.exception("sentry flush failed")
            return False

    def shutdown(self) -> None:
        self.client.close(timeout=self.config.shutdown_timeout)
