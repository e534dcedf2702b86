"""The fuzz targets: each takes the fuzzer's bytes, drives one parser of renderwatch, and raises only on a bug.

A bug is an exception other than the parser's documented rejection (EventError, PayloadError), or a
broken promise about the result (an event that does not encode and decode back to itself, a
classification without a type or a summary, a decision for an alert that is not in the payload).
Targets are plain functions of `bytes`: `fuzz.__main__` hands them to atheris (coverage-guided) and
tests/fuzz/test_targets.py replays the corpus kept in fuzz/corpus/<target>/ through them on every run.

Usage::

    from fuzz.targets import TARGETS
    TARGETS["events"](b'{"v": 1, "type": "frame_start", ...}')
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

from blender_hooks.events import EVENT_TYPES, REASONS, EventError, decode, encode
from healer.diagnosis.classify import LogScanner
from healer.diagnosis.crashfile import CrashReport, parse_crash_file
from healer.diagnosis.errors import RenderError
from healer.diagnosis.logformat import LogLine, iter_lines, parse_line
from healer.service.alert_rules import DEFAULT_RULES
from healer.service.alerts import PayloadError, decide, parse_notification

# The exit statuses the classifier is asked about: a clean exit, errors, signals (negative).
_EXITS = (None, 0, 1, 2, 3, 134, 137, 139, -6, -9, -11, -15)


class Broken(AssertionError):
    """A target's promise about its result does not hold."""


def fuzz_events(data: bytes) -> None:
    """The agent's event decoder (blender_hooks.events.decode), as ingest calls it on one NDJSON line."""
    try:
        ev = decode(data)
    except EventError as e:
        if e.reason not in REASONS or not e.detail:
            raise Broken(f"rejection without a documented reason: {e.reason!r} {e.detail!r}") from None
        return
    if ev.get("type") not in EVENT_TYPES:
        raise Broken(f"accepted an event of type {ev.get('type')!r}")
    again = decode(encode(ev))
    if again != ev:
        raise Broken(f"an accepted event does not survive encode/decode: {ev!r} -> {again!r}")


def fuzz_crashfile(data: bytes) -> None:
    """Blender's crash file (blender.crash.txt, any version, Linux/macOS/Windows), bytes and text."""
    for given in (data, data.decode("utf-8", errors="replace")):
        report = parse_crash_file(given)
        if not isinstance(report, CrashReport):
            raise Broken(f"parse_crash_file returned {type(report).__name__}")
        if any(not isinstance(x, str) for x in report.native_frames):
            raise Broken("a native frame that is not a string")


def fuzz_loglines(data: bytes) -> None:
    """Blender's output as the healer reads it: lines from the pipe, each parsed, all classified."""
    if not data:
        return
    code = _EXITS[data[0] % len(_EXITS)]
    body = data[1:]
    scanner = LogScanner()
    for line in iter_lines(io.BytesIO(body), chunk_size=max(1, len(body) // 3 or 1)):
        parsed = parse_line(line)
        if not isinstance(parsed, LogLine):
            raise Broken(f"parse_line returned {type(parsed).__name__}")
        scanner.feed(line)
    if isinstance(code, int) and code < 0:
        error = scanner.finish(None, -code)
    else:
        error = scanner.finish(code)
    if not isinstance(error, RenderError) or not error.type or not error.summary:
        raise Broken(f"a classification without a type or a summary: {error!r}")


def fuzz_alertmanager(data: bytes) -> None:
    """Alertmanager's webhook payload (version 4) as the healer's receiver parses and acts on it."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return                                   # aiohttp answers 400 before the parser sees it
    try:
        note = parse_notification(obj)
    except PayloadError as e:
        if not str(e):
            raise Broken("a PayloadError without a message") from None
        return
    decisions = decide(note, DEFAULT_RULES)
    if [d.alert for d in decisions] != list(note.alerts):
        raise Broken("not one decision per alert, in order")
    for d in decisions:
        if d.outcome not in ("act", "unknown", "no_label", "nothing"):
            raise Broken(f"an undocumented outcome: {d!r}")
        if d.outcome == "act" and (d.call is None or d.target not in d.alert.labels.values()):
            raise Broken(f"an action without a call, or on a target not named by the alert: {d!r}")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "events": fuzz_events,
    "crashfile": fuzz_crashfile,
    "loglines": fuzz_loglines,
    "alertmanager": fuzz_alertmanager,
}
