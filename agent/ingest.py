"""Event ingest: the POST /api/v1/events handler and the one path every event takes.

decode + validate (blender_hooks.events; pure, `decode_body`) -> dedupe by (session, seq) -> enrich a
frame_end with the sampled peaks -> one journal write per batch -> fold into the state -> spans
(`Ingestor.apply`). Nothing in `apply` awaits, so a batch is applied atomically between the HTTP
handler and the spool scanner (agent.spool) that share it. The HTTP handler decodes its body in a
worker thread and stops after MAX_REJECTED_PER_BODY rejected events (the body is then refused
whole): a client posting junk cannot hold the event loop (/healthz, /metrics) for its whole body.

Usage::

    ingestor = Ingestor(state, journal, stats, tracer=tracer, frame_hook=hook)
    result = ingestor.ingest_lines(body.split(b"\\n"))     # NDJSON
    result.accepted, result.duplicate, result.errors
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from agent.journal import Journal
from agent.metrics import IngestStats
from agent.state import State
from blender_hooks.events import MAX_EVENT_BYTES, EventError, decode, encode, validate

MAX_ERRORS_REPORTED = 20
MAX_REJECTED_PER_BODY = 1000    # an HTTP body with more rejected events than this is refused whole


@dataclass
class IngestResult:
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def error(self, index: int, reason: str, detail: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS_REPORTED:
            self.errors.append({"index": index, "reason": reason, "detail": detail})

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicate": self.duplicate, "rejected": self.rejected,
                "errors": self.errors}


@dataclass
class Decoded:
    """What decoding found in a batch (pure: no state touched, so it can run off the event loop)."""

    events: list[tuple[dict, bytes]] = field(default_factory=list)     # each event and its journal line
    errors: list[tuple[int, str, str]] = field(default_factory=list)   # (index, reason, detail)
    # Why nothing of the batch is applied: "not_json" (a JSON body that does not parse) or
    # "too_many_rejected" (more than max_rejected errors: decoding stopped there); None: apply it.
    refused: str | None = None

    def reject(self, i: int, e: EventError, max_rejected: int | None) -> bool:
        """Record item i's rejection; True when decoding must stop (more than `max_rejected`)."""
        self.errors.append((i, e.reason, e.detail))
        if max_rejected is not None and len(self.errors) > max_rejected:
            self.refused = "too_many_rejected"
            return True
        return False


def decode_lines(lines: Iterable[bytes], max_rejected: int | None = None) -> Decoded:
    """NDJSON lines (newlines stripped or not); blank lines are ignored. Stops after `max_rejected`
    rejected lines (then `refused`): a body of junk costs that many decodes, not one per line."""
    out = Decoded()
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line:
            continue
        try:
            out.events.append((decode(line), line))
        except EventError as e:
            if out.reject(i, e, max_rejected):
                break
    return out


def decode_objects(objs: list[Any], max_rejected: int | None = None) -> Decoded:
    """Already-parsed events (a JSON array body)."""
    out = Decoded()
    for i, obj in enumerate(objs):
        try:
            ev = validate(obj)
            line = encode(ev).rstrip(b"\n")
            if len(line) > MAX_EVENT_BYTES:
                raise EventError("too_large", f"event is {len(line)} bytes, the limit is {MAX_EVENT_BYTES}")
            out.events.append((ev, line))
        except EventError as e:
            if out.reject(i, e, max_rejected):
                break
    return out


def decode_body(body: bytes, content_type: str, max_rejected: int | None = MAX_REJECTED_PER_BODY) -> Decoded:
    """An HTTP body: NDJSON, or a JSON array (or one JSON object) when it starts with `[` (or `{` with a
    JSON content type). Pure and bounded: run it in a worker thread, never on the event loop."""
    head = body.lstrip()[:1]
    if head in (b"[", b"{") and (head == b"[" or "json" in content_type and "ndjson" not in content_type):
        try:
            doc = json.loads(body)
        except UnicodeDecodeError as e:
            return Decoded(errors=[(0, "invalid_utf8", f"byte {e.start} is not valid UTF-8")], refused="not_json")
        except (ValueError, RecursionError) as e:
            return Decoded(errors=[(0, "malformed_json", str(e)[:200])], refused="not_json")
        return decode_objects(doc if isinstance(doc, list) else [doc], max_rejected)
    return decode_lines(body.split(b"\n"), max_rejected)


class Ingestor:
    """Applies batches of raw events to the state, journal and tracer."""

    def __init__(self, state: State, journal: Journal, stats: IngestStats, tracer: Any = None,
                 frame_hook: Callable[[dict], bool] | None = None):
        self.state = state
        self.journal = journal
        self.stats = stats
        self.tracer = tracer
        # Called for frame_start/frame_end before journaling; returns True when it changed the event.
        self.frame_hook = frame_hook

    def ingest_lines(self, lines: Iterable[bytes]) -> IngestResult:
        """NDJSON lines (newlines stripped or not); blank lines are ignored."""
        return self.apply(decode_lines(lines))

    def ingest_objects(self, objs: list[Any]) -> IngestResult:
        """Already-parsed events (a JSON array body)."""
        return self.apply(decode_objects(objs))

    def apply(self, decoded: Decoded) -> IngestResult:
        """Dedupe, enrich, journal and fold a decoded batch, all at once (nothing here awaits)."""
        res = IngestResult()
        for i, reason, detail in decoded.errors:
            res.error(i, reason, detail)
            self.stats.reject(reason)
        if decoded.refused is not None:
            return res
        batch: list[tuple[dict, bytes]] = []
        accept, hook = self.state.accept, self.frame_hook
        for ev, line in decoded.events:
            if not accept(ev):
                res.duplicate += 1
                continue
            if hook is not None and ev["type"] in ("frame_start", "frame_end") and hook(ev):
                line = encode(ev).rstrip(b"\n")
            batch.append((ev, line))
        self._commit(batch, res)
        return res

    def _commit(self, batch: list[tuple[dict, bytes]], res: IngestResult) -> None:
        res.accepted = len(batch)
        self.stats.ingested += len(batch)
        self.stats.duplicate += res.duplicate
        if not batch:
            return
        pos = self.journal.append([line for _, line in batch])
        apply, tracer = self.state.apply, self.tracer
        for ev, _ in batch:
            effect = apply(ev)
            if effect is not None and tracer is not None:
                tracer.emit(effect, pos)
            pos += 1


def check_token(request: web.Request, token: str | None) -> bool:
    """Constant-time bearer-token check; always true when no token is configured."""
    if not token:
        return True
    got = request.headers.get("Authorization", "")
    scheme, _, value = got.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode("utf-8", "surrogateescape"), token.encode())


def _fail(status: int, reason: str, detail: str) -> web.Response:
    return web.json_response({"error": reason, "detail": detail}, status=status)


async def handle_events(request: web.Request, ingestor: Ingestor, max_body: int, token: str | None) -> web.Response:
    """POST /api/v1/events: NDJSON (one event per line) or a JSON array (or one JSON object).

    200: all accepted (or duplicates); 400: some or all events rejected (the valid ones are
    still accepted; the body says which and why), or more than MAX_REJECTED_PER_BODY rejected (then
    none is: `error` too_many_rejected); 401: token missing/wrong; 413: body too large.
    """
    stats = ingestor.stats
    if not check_token(request, token):
        return _fail(401, "unauthorized", "send 'Authorization: Bearer <RENDERWATCH_TOKEN>'")
    if request.content_length is not None and request.content_length > max_body:
        stats.reject("too_large")
        return _fail(413, "too_large", f"body is {request.content_length} bytes, the limit is {max_body}")
    try:
        body = await request.content.readexactly(request.content_length) if request.content_length is not None \
            else await _read_limited(request, max_body)
    except _TooLarge:
        stats.reject("too_large")
        return _fail(413, "too_large", f"body is over the limit of {max_body} bytes")
    except (ConnectionError, OSError, EOFError) as e:
        return _fail(400, "malformed_json", f"could not read the body: {e}")
    # Decoding is pure and is the costly part (a MiB of junk lines held the event loop ~2 s): a worker
    # thread does it, bounded by MAX_REJECTED_PER_BODY; only dedupe, journal and state run on the loop.
    decoded = await asyncio.get_running_loop().run_in_executor(None, decode_body, body, request.content_type)
    result = ingestor.apply(decoded)
    if decoded.refused == "too_many_rejected":
        return web.json_response({**result.to_dict(), "error": "too_many_rejected",
                                  "detail": f"more than {MAX_REJECTED_PER_BODY} events of this body were rejected: "
                                            "it was refused whole, nothing from it was applied"}, status=400)
    if decoded.refused is not None:       # the body is not JSON at all
        _, reason, detail = decoded.errors[0]
        return _fail(400, reason, detail)
    return web.json_response(result.to_dict(), status=400 if result.rejected else 200)


class _TooLarge(Exception):
    pass


async def _read_limited(request: web.Request, max_body: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > max_body:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)
