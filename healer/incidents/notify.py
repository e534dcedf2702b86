"""Alert webhooks out: signed, retried, queued on disk, delivered once each.

Each incident a target subscribes to becomes one *delivery*: a file in the outbox
(``home()/healer/outbox/<target>.<created>-<id>.json``, mode 0600, written atomically) holding the exact body.
One worker thread per target posts its deliveries in order, deletes the file after a 2xx, and retries
anything else with exponential backoff and jitter (a 4xx other than 408/425/429 is permanent: the
file moves to ``outbox/failed/``). A healer restart finds the files and goes on; a target that hangs
holds up only its own thread. Supervision never waits on any of it.

Why urllib in worker threads rather than aiohttp: deliveries are few (a handful per job), each target
needs isolation from the others (a hanging receiver must not delay a healthy one), and the supervisor
may be a plain CLI process with no event loop; a blocking client with a timeout, one thread per
target, is the simplest thing that meets all three, with no loop to share or shut down.

Payload v1 (``format = "renderwatch"``)::

    {"version": "1", "id": "<32 hex, stable across retries>", "kind": "render.crashed",
     "time": "2026-01-02T03:04:05.678Z", "host": "node-7", "message": "...",
     "job": {"id", "scene", "host", "frame_start", "frame_end", "frames_total", "frames_completed",
             "progress", "frame", "attempt", "restarts", "blender_version", "engine", "device", "gpu_name"},
     "error": {"type": "segfault", "class": "SegfaultError", "summary": "...", "fatal": true,
               "severity": "error", "frame": 3, "exit_code": 139, "exit_signal": 11} | null}

Headers: ``X-Renderwatch-Event`` (kind), ``X-Renderwatch-Delivery`` (id), ``X-Renderwatch-Timestamp``
(unix seconds) and, with a secret, ``X-Renderwatch-Signature: v1=<hex HMAC-SHA256(secret, f"{ts}.{body}")>``.
Receivers check it with `verify_signature` and drop repeated ids (a crash between the 2xx and the
file's removal is the one case where a delivery is sent again).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from healer.incidents.model import DEFAULT_WEBHOOK_KINDS, KINDS, Incident
from healer.incidents.scrub import Scrubber
from kernel.files import remove_stale_temps, sync_dir, write_atomic
from kernel.listen import http_url
from kernel.paths import ensure_private_dir
from kernel.version import __version__

log = logging.getLogger(__name__)

PAYLOAD_VERSION = "1"
FORMATS = ("renderwatch", "slack")
HEADER_EVENT = "X-Renderwatch-Event"
HEADER_DELIVERY = "X-Renderwatch-Delivery"
HEADER_TIMESTAMP = "X-Renderwatch-Timestamp"
HEADER_SIGNATURE = "X-Renderwatch-Signature"
SIGNATURE_TOLERANCE_S = 300
_RETRY_STATUS = frozenset({408, 425, 429})
_NAME_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# -- signatures -----------------------------------------------------------------------------------------
def sign(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """`v1=` + hex HMAC-SHA256(secret, f"{timestamp}.{body}")."""
    raw = body.encode() if isinstance(body, str) else body
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + raw, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str | int | None, body: bytes | str, signature: str | None,
                     tolerance_s: float = SIGNATURE_TOLERANCE_S, now: float | None = None) -> bool:
    """For receivers: True iff `signature` is ours for this body and `timestamp` is within `tolerance_s`."""
    if not secret or timestamp is None or not signature:
        return False
    try:
        ts = int(str(timestamp))
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    expected = sign(secret, ts, body)
    return any(hmac.compare_digest(expected.encode(), s.strip().encode()) for s in signature.split(","))


# -- targets ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WebhookTarget:
    """One `[[incidents.webhooks]]` entry."""

    url: str
    name: str = ""
    kinds: frozenset[str] | None = None        # None: every kind but render.started
    format: str = "renderwatch"
    secret: str | None = None
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", _default_name(self.url))

    def accepts(self, kind: str) -> bool:
        return kind in (self.kinds if self.kinds is not None else DEFAULT_WEBHOOK_KINDS)

    @classmethod
    def from_mapping(cls, m: Any, where: str, env: Mapping[str, str] | None = None) -> WebhookTarget:
        """Validate one config table; ValueError names the key. `secret_env` reads the secret from a variable."""
        if not isinstance(m, Mapping):
            raise ValueError(f"{where}: expected a table")
        url = m.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ValueError(f"{where}.url: expected an http(s) URL, got {url!r}")
        http_url(url, f"{where}.url", "https://hooks.example.com/renderwatch")   # a port or host a request fails on
        fmt = m.get("format", "renderwatch")
        if fmt not in FORMATS:
            raise ValueError(f"{where}.format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
        kinds = m.get("kinds")
        if kinds is not None:
            if not isinstance(kinds, list) or not all(k in KINDS for k in kinds):
                raise ValueError(f"{where}.kinds: expected a list of {', '.join(KINDS)}, got {kinds!r}")
            kinds = frozenset(kinds)
        secret = m.get("secret")
        if m.get("secret_env"):
            secret = (env if env is not None else os.environ).get(str(m["secret_env"])) or secret
        if secret is not None and not isinstance(secret, str):
            raise ValueError(f"{where}.secret: expected a string")
        name = m.get("name") or _default_name(url)
        if not isinstance(name, str) or not _NAME_OK.match(name):
            raise ValueError(f"{where}.name: expected 1-64 letters, digits, '_' or '-', got {name!r}")
        timeout = m.get("timeout_s", 5.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(f"{where}.timeout_s: expected a positive number, got {timeout!r}")
        return cls(url=url, name=name, kinds=kinds, format=fmt, secret=secret or None, timeout_s=float(timeout))


def _default_name(url: str) -> str:
    host = urlsplit(url).netloc.rsplit("@", 1)[-1]
    return (re.sub(r"[^A-Za-z0-9_-]+", "-", host).strip("-") or "webhook")[:40] + "-" + \
        hashlib.sha256(url.encode()).hexdigest()[:8]


# -- payloads (pure) ----------------------------------------------------------------------------------------
def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _message(incident: Incident) -> str:
    if incident.info.get("message"):
        return str(incident.info["message"])
    what = incident.kind.split(".", 1)[-1].replace("_", " ")
    scene = incident.scene_name or "render"
    text = f"{scene}: {what} on {incident.host}"
    job = incident.job()
    if "frames_completed" in job and "frames_total" in job:
        text += f" ({job['frames_completed']}/{job['frames_total']} frames)"
    if incident.error is not None and incident.error.type != "ok":
        text += f": {type(incident.error).__name__}: {incident.error.summary}"
    return text


FRAME_LOG_LINES, FRAME_LOG_CHARS = 30, 1000


def build_payload(incident: Incident, scrubber: Scrubber | None = None) -> dict[str, Any]:
    """The documented v1 payload for one incident, scrubbed."""
    err = incident.error
    error = None if err is None else {
        "type": err.type, "class": type(err).__name__, "summary": err.summary, "fatal": err.fatal,
        "severity": err.severity, "frame": err.frame, "exit_code": err.exit_code, "exit_signal": err.exit_signal,
    }
    payload: dict[str, Any] = {"version": PAYLOAD_VERSION, "id": incident.id, "kind": incident.kind, "time": _iso(incident.time),
               "host": incident.host, "message": _message(incident), "job": incident.job(), "error": error}
    frame_log = incident.info.get("frame_log")
    if isinstance(frame_log, list | tuple) and frame_log:       # the failed frame's last lines (logcapture.py)
        payload["frame_log"] = [str(x)[:FRAME_LOG_CHARS] for x in frame_log[-FRAME_LOG_LINES:]]
    return scrubber.value(payload) if scrubber is not None else payload


def slack_payload(v1: Mapping[str, Any]) -> dict[str, Any]:
    """Slack incoming-webhook format ({"text", "blocks"}) from a v1 payload."""
    job, err = v1.get("job") or {}, v1.get("error")
    title = f"{v1['kind']}: {job.get('scene') or 'render'}"
    fields = [f"*{label}*\n{job[key]}" for label, key in (("Job", "id"), ("Host", "host"), ("Frame", "frame"),
                                                            ("Attempt", "attempt"), ("Restarts", "restarts"))
              if job.get(key) is not None]
    if "frames_completed" in job and "frames_total" in job:
        fields.append(f"*Frames*\n{job['frames_completed']}/{job['frames_total']}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": str(v1.get("message", ""))[:3000]}},
    ]
    if err:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": f"*{err['class']}* ({err['type']}): {err['summary']}"[:3000]}})
    if fields:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields[:10]]})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn",
                                                    "text": f"renderwatch · {v1['time']} · id {v1['id']}"}]})
    return {"text": str(v1.get("message", title)), "blocks": blocks}


def render_body(incident: Incident, target: WebhookTarget, scrubber: Scrubber | None = None) -> bytes:
    v1 = build_payload(incident, scrubber)
    doc = slack_payload(v1) if target.format == "slack" else v1
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


# -- the outbox ------------------------------------------------------------------------------------------------
class Outbox:
    """One file per undelivered delivery (0600, written atomically), in a 0700 directory. A delivered
    one leaves an empty marker of the same name in `sent/` (kept `keep_sent_s`), so the same delivery
    handed over again (a killed healer's journal replayed after its outbox file was delivered) is
    known and not sent twice."""

    def __init__(self, path: Path, keep_sent_s: float = 7 * 24 * 3600.0) -> None:
        self.path = Path(path)
        self.failed = self.path / "failed"
        self.sent = self.path / "sent"
        for d in (self.path, self.failed, self.sent):
            ensure_private_dir(d)
        remove_stale_temps(self.path)        # a killed healer's half-written file
        cutoff = time.time() - keep_sent_s
        with contextlib.suppress(OSError):
            for e in os.scandir(self.sent):
                with contextlib.suppress(OSError):
                    if e.stat().st_mtime < cutoff:
                        os.unlink(e.path)

    @staticmethod
    def filename(record: Mapping[str, Any]) -> str:
        """`<target>.<created, ns, zero-padded>-<id>.json`: names sort in the order deliveries were made."""
        return f"{record['target']}.{int(float(record['created']) * 1e9):020d}-{record['id']}.json"

    def put(self, record: Mapping[str, Any]) -> Path:
        dst = self.path / self.filename(record)
        write_atomic(dst, json.dumps(record, separators=(",", ":")).encode())
        sync_dir(self.path)                  # make the rename durable
        return dst

    def names(self, target: str) -> list[str]:
        """This target's deliveries, oldest first."""
        prefix = target + "."
        try:
            return sorted(e.name for e in os.scandir(self.path)
                          if e.name.startswith(prefix) and e.name.endswith(".json") and e.is_file())
        except FileNotFoundError:
            return []

    def holds(self, target: str, delivery_id: str) -> bool:
        """Whether a delivery with this id waits for this target, or was delivered or given up already."""
        suffix = f"-{delivery_id}.json"
        prefix = target + "."
        if any(n.endswith(suffix) for n in self.names(target)):
            return True
        for d in (self.sent, self.failed):
            with contextlib.suppress(OSError):
                if any(e.name.startswith(prefix) and e.name.endswith(suffix) for e in os.scandir(d)):
                    return True
        return False

    def was_sent(self, name: str) -> bool:
        return (self.sent / name).exists()

    def delivered(self, name: str) -> None:
        """The delivery was accepted: its marker first, then the file (killed between, the marker tells)."""
        with contextlib.suppress(OSError):
            os.close(os.open(self.sent / name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        self.remove(name)

    def read(self, name: str) -> dict[str, Any] | None:
        try:
            with open(self.path / name) as f:
                rec = json.load(f)
            return rec if isinstance(rec, dict) else None
        except (OSError, ValueError):
            return None

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path / name)

    def fail(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path / name, self.failed / name)

    def pending(self) -> int:
        try:
            return sum(1 for e in os.scandir(self.path) if e.is_file() and e.name.endswith(".json")
                       and not e.name.startswith(".tmp-"))
        except FileNotFoundError:
            return 0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook that redirects is misconfigured; following it would re-send the body elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# -- the notifier ------------------------------------------------------------------------------------------------
class WebhookNotifier:
    """Incident exporter to webhook targets (see module docstring)."""

    name = "webhooks"

    def __init__(self, targets: Sequence[WebhookTarget], *, outbox: Path, scrubber: Scrubber | None = None,
                 retry_base_s: float = 1.0, retry_max_s: float = 300.0, max_age_s: float = 7 * 24 * 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.targets = {t.name: t for t in targets}
        self.outbox = Outbox(outbox)
        self.scrubber = scrubber
        self.retry_base_s, self.retry_max_s, self.max_age_s = retry_base_s, retry_max_s, max_age_s
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirect())
        self._stop = threading.Event()
        self._wake = {name: threading.Event() for name in self.targets}
        # Backoff is per target: deliveries go out in order, and a target that is down is not hammered.
        self._retry_at: dict[str, float] = {name: 0.0 for name in self.targets}
        self._failures: dict[str, int] = {name: 0 for name in self.targets}
        self._busy = {name: False for name in self.targets}
        self._cv = threading.Condition()
        self._count: Callable[[str, str, str], None] | None = None
        self._state: dict[str, str] = {}
        self._lock_fd: int | None = None
        self._lock_mu = threading.Lock()
        self._live = len(self.targets)
        self._threads = [threading.Thread(target=self._run, args=(name,), name=f"renderwatch-webhook-{name}",
                                          daemon=True) for name in self.targets]
        for t in self._threads:
            t.start()

    def bind_counter(self, count: Callable[[str, str, str], None]) -> None:
        self._count = count

    def _inc(self, kind: str, target: str, outcome: str) -> None:
        if self._count is not None:
            self._count(kind, target, outcome)

    # -- exporter -------------------------------------------------------------------------------------
    def export(self, batch: Iterable[Incident]) -> dict[str, str]:
        """Write one outbox file per (incident, subscribed target) and wake the target's worker."""
        outcomes: dict[str, str] = {}
        for incident in batch:
            for t in self.targets.values():
                if not t.accepts(incident.kind):
                    continue
                if self.outbox.holds(t.name, incident.id):
                    outcomes[t.name] = "queued"   # a replay from the journal: the delivery is already here
                    continue
                body = render_body(incident, t, self.scrubber)
                self.outbox.put({"id": incident.id, "target": t.name, "kind": incident.kind,
                                 "created": self._clock(), "attempts": 0, "body": body.decode()})
                outcomes[t.name] = "queued"
                self._wake[t.name].set()
        return outcomes

    def force_flush(self, timeout: float) -> bool:
        """Wait until every target's outbox is empty (all delivered or failed), at most `timeout`."""
        deadline = time.monotonic() + timeout
        for w in self._wake.values():
            w.set()
        while time.monotonic() < deadline:
            if all(not self.outbox.names(n) for n in self.targets) and not any(self._busy.values()):
                return True
            time.sleep(0.01)
        return False

    def shutdown(self) -> None:
        """Stop the workers; what is not delivered stays in the outbox for the next start. Idempotent."""
        self._stop.set()
        for w in self._wake.values():
            w.set()
        for t in self._threads:
            t.join(timeout=0.2)

    # -- worker ------------------------------------------------------------------------------------------
    def _owns_outbox(self) -> bool:
        """One process sends from an outbox at a time (flock), so no delivery goes out twice at once."""
        with self._lock_mu:
            if self._lock_fd is not None:
                return True
            fd = os.open(self.outbox.path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self._lock_fd = fd
            return True

    def _worker_done(self) -> None:
        with self._lock_mu:
            self._live -= 1
            if self._live == 0 and self._lock_fd is not None:
                os.close(self._lock_fd)   # releases the flock only once no delivery can be in flight
                self._lock_fd = None

    def _run(self, name: str) -> None:
        try:
            while not self._stop.is_set():
                try:
                    wait = self._cycle(name)
                except Exception as e:     # a sender thread that died would hold every later incident back
                    log.error("webhook %s: delivery failed unexpectedly (%s: %s); retrying in 5 s", name,
                              type(e).__name__, e)
                    wait = 5.0
                self._wake[name].wait(timeout=wait)
                self._wake[name].clear()
        finally:
            self._worker_done()

    def _cycle(self, name: str) -> float:
        """Send this target's deliveries in order until one must be retried; return how long to sleep."""
        if not self._owns_outbox():
            return 0.5
        wait = self._retry_at[name] - time.monotonic()
        if wait > 0:
            return min(wait, 1.0)
        for fname in self.outbox.names(name):
            if self._stop.is_set():
                return 0.0
            self._busy[name] = True
            try:
                delay = self._attempt(name, fname)
            finally:
                self._busy[name] = False
            if delay is not None:
                self._retry_at[name] = time.monotonic() + delay
                return min(delay, 1.0)
        return 1.0

    def _attempt(self, name: str, fname: str) -> float | None:
        """One delivery attempt; the backoff delay if it must be retried, else None (done with it)."""
        target = self.targets[name]
        rec = self.outbox.read(fname)
        if rec is None or not isinstance(rec.get("body"), str):
            log.warning("webhook %s: unreadable outbox file %s moved to failed/", name, fname)
            self.outbox.fail(fname)
            return None
        if self.outbox.was_sent(fname):        # delivered by a healer killed before it removed the file
            self.outbox.remove(fname)
            return None
        kind = str(rec.get("kind", "?"))
        body = rec["body"].encode()
        ts = int(self._clock())
        headers = {"Content-Type": "application/json", "User-Agent": f"renderwatch/{__version__}",
                   HEADER_EVENT: kind, HEADER_DELIVERY: str(rec.get("id", "")), HEADER_TIMESTAMP: str(ts)}
        if target.secret:
            headers[HEADER_SIGNATURE] = sign(target.secret, ts, body)
        status, retry_after = self._post(target, body, headers)
        attempts = int(rec.get("attempts", 0)) + 1
        if status is not None and 200 <= status < 300:
            self.outbox.delivered(fname)
            self._failures[name] = 0
            self._inc(kind, name, "delivered")
            self._transition(name, "up", f"webhook {name}: delivering again")
            return None
        permanent = status is not None and 300 <= status < 500 and status not in _RETRY_STATUS
        too_old = self._clock() - float(rec.get("created", self._clock())) > self.max_age_s
        if permanent or too_old:
            self.outbox.fail(fname)
            self._inc(kind, name, "failed")
            log.error("webhook %s: delivery %s %s; moved to %s", name, rec.get("id"),
                      f"refused with HTTP {status}" if permanent else "expired", self.outbox.failed)
            return None
        self._failures[name] += 1
        delay = min(self.retry_max_s, self.retry_base_s * (2 ** min(self._failures[name] - 1, 30)))
        delay = delay * random.uniform(0.8, 1.2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_max_s))
        rec["attempts"] = attempts
        with contextlib.suppress(OSError):
            if (self.outbox.path / fname).exists():
                self.outbox.put(rec)
        self._inc(kind, name, "retried")
        self._transition(name, "down", f"webhook {name}: not delivering ({'HTTP ' + str(status) if status else 'unreachable'}); "
                                       "retrying with backoff, deliveries kept in the outbox")
        return delay

    def _post(self, target: WebhookTarget, body: bytes, headers: Mapping[str, str]) -> tuple[int | None, float | None]:
        req = urllib.request.Request(target.url, data=body, headers=dict(headers), method="POST")
        try:
            with self._opener.open(req, timeout=target.timeout_s) as resp:
                resp.read(1 << 16)
                return int(resp.status), None
        except urllib.error.HTTPError as e:
            ra = e.headers.get("Retry-After") if e.headers else None
            with contextlib.suppress(Exception):
                e.close()
            try:
                return e.code, float(ra) if ra else None
            except ValueError:
                return e.code, None
        except (OSError, ValueError) as e:   # URLError, timeouts, resets, bad URLs
            log.debug("webhook %s: %s", target.name, e)
            return None, None

    def _transition(self, name: str, state: str, message: str) -> None:
        """Log a target going down or coming back once, not on every attempt."""
        prev = self._state.get(name, "up")
        self._state[name] = state
        if prev != state:
            (log.warning if state == "down" else log.info)(message)
