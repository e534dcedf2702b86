"""The robustness oracle: what a correct answer of each parser of untrusted input looks like. One judge,
used by the fuzz targets (fuzz.targets, atheris), the property tests (tests/fuzz/test_robustness.py,
hypothesis) and the benchmark (bench/bench_robustness.py, 100,000 seeded inputs per target).

A bug is an exception other than the parser's documented rejection (EventError, PayloadError), a
rejection without a documented reason (`Unclear`), or a broken promise about the result (`Broken`: an
event that does not encode and decode back to itself, a classification without a type or a summary,
a decision for an alert that is not in the payload). Each judge returns True for a clear rejection and
False for an accepted input; any other exception of the parser propagates, as the crash it is.

Usage::

    from fuzz import oracle
    oracle.event(b'{"v": 1, "type": "frame_start", ...}')     # False: accepted, and it round-trips
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from blender_hooks.events import EVENT_TYPES, REASONS, EventError, decode, encode
from healer.diagnosis.crashfile import CrashReport
from healer.diagnosis.errors import RenderError
from healer.service.alert_rules import DEFAULT_RULES
from healer.service.alerts import PayloadError, decide, parse_notification

MAX_CRASH_FRAMES = 256                              # healer.diagnosis.crashfile keeps at most this many


class Broken(AssertionError):
    """A parser's promise about its result does not hold."""


class Unclear(Broken):
    """A rejection that does not say why in the documented terms (events.REASONS, a PayloadError message)."""


# -- the event decoder (blender_hooks.events), as ingest calls it on one NDJSON line -------------------------

def event(data: bytes | str) -> bool:
    """Decode one event line: True when it is rejected with a documented reason and a detail; False when
    it is accepted, is one of the event types, and survives encode/decode unchanged."""
    try:
        ev = decode(data)
    except EventError as e:
        rejection(e)
        return True
    if not isinstance(ev, dict) or ev.get("type") not in EVENT_TYPES:
        raise Broken(f"accepted an event of type {ev.get('type') if isinstance(ev, dict) else ev!r}")
    again = decode(encode(ev))
    if again != ev:
        raise Broken(f"an accepted event does not survive encode/decode: {ev!r} -> {again!r}")
    return False


def rejection(e: EventError) -> None:
    if e.reason not in REASONS or not e.detail:
        raise Unclear(f"rejection without a documented reason: {e.reason!r} {e.detail!r}")


def unclear_errors(errors: Iterable[Mapping[str, Any]]) -> int:
    """How many of an ingest result's errors ({"reason", "detail"}) do not name a documented reason."""
    return sum(1 for e in errors if e.get("reason") not in REASONS or not e.get("detail"))


def ingest_reply(status: int, doc: Any) -> bool:
    """The agent's answer to POST /api/v1/events: 200, 400 naming documented reasons, or 413 (too large).
    True for a 400."""
    if status not in (200, 400, 413):
        raise Broken(f"POST /api/v1/events answered HTTP {status}: {str(doc)[:200]}")
    if status != 400:
        return False
    reasons = [e.get("reason") for e in doc.get("errors", [])] or [doc.get("error")]
    if not all(r in REASONS for r in reasons) or not (doc.get("errors") or doc.get("detail")):
        raise Unclear(f"a 400 that does not name a documented reason: {str(doc)[:200]}")
    return True


# -- the healer's readers of Blender's output ------------------------------------------------------------------

def classification(error: object) -> None:
    """The classifier always names a type and says what happened."""
    if not isinstance(error, RenderError) or not error.type or not isinstance(error.summary, str) \
            or not error.summary:
        raise Broken(f"a classification without a type or a summary: {error!r}")


def crash_report(report: object) -> bool:
    """parse_crash_file always returns a CrashReport, its frames strings and bounded. True: partial."""
    if not isinstance(report, CrashReport):
        raise Broken(f"parse_crash_file returned {type(report).__name__}")
    if not isinstance(report.partial, bool):
        raise Broken(f"partial is {report.partial!r}")
    for frames in (report.native_frames, report.python_frames):
        if len(frames) > MAX_CRASH_FRAMES:
            raise Broken(f"{len(frames)} frames kept (at most {MAX_CRASH_FRAMES})")
    if any(not isinstance(x, str) for x in report.native_frames):
        raise Broken("a native frame that is not a string")
    return report.partial


def verification(verdict: Any) -> bool:
    """An output file's verdict (healer's verify_image): complete, or not with a reason. True: not ok."""
    if verdict.ok:
        return False
    if not verdict.reason:
        raise Unclear(f"a frame judged incomplete without a reason: {verdict!r}")
    return True


# -- the Alertmanager receiver (healer.service.alerts) ---------------------------------------------------------

def alert_payload(obj: object) -> bool:
    """Parse a webhook payload and decide on it with the default rules: True when it is rejected with a
    message; else one decision per alert, in order, each with a documented outcome, acting only with a
    call and on a target the alert names."""
    try:
        note = parse_notification(obj)
    except PayloadError as e:
        if not str(e):
            raise Unclear("a PayloadError without a message") from None
        return True
    if any(a.status not in ("firing", "resolved") for a in note.alerts):
        raise Broken(f"an alert status that is neither firing nor resolved: {note.alerts!r}")
    decisions = decide(note, DEFAULT_RULES)
    if [d.alert for d in decisions] != list(note.alerts):
        raise Broken("not one decision per alert, in order")
    for d in decisions:
        if d.outcome not in ("act", "unknown", "no_label", "nothing"):
            raise Broken(f"an undocumented outcome: {d!r}")
        if d.outcome == "act" and (d.call is None or d.target not in d.alert.labels.values()):
            raise Broken(f"an action without a call, or on a target not named by the alert: {d!r}")
    return False


def alert_reply(status: int, doc: Any) -> bool:
    """The receiver's answer: 200 with a status, or 400 with an error. True for a 400."""
    if status not in (200, 400):
        raise Broken(f"POST /api/v1/alertmanager answered HTTP {status}: {str(doc)[:200]}")
    if not doc.get("error" if status == 400 else "status"):
        raise Unclear(f"an answer without its {'error' if status == 400 else 'status'}: {str(doc)[:200]}")
    return status == 400
