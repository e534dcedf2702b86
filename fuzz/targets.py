"""The fuzz targets: each takes the fuzzer's bytes, drives one parser of renderwatch, and raises only on a bug.

What a bug is, is fuzz.oracle's to say (shared with the property tests and the robustness benchmark): an
exception other than the parser's documented rejection (EventError, PayloadError), a rejection without a
documented reason, or a broken promise about the result. Targets are plain functions of `bytes`:
`fuzz.__main__` hands them to atheris (coverage-guided) and tests/fuzz/test_targets.py replays the corpus
kept in fuzz/corpus/<target>/ through them on every run.

Usage::

    from fuzz.targets import TARGETS
    TARGETS["events"](b'{"v": 1, "type": "frame_start", ...}')
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

from fuzz import oracle
from fuzz.oracle import Broken
from healer.diagnosis.classify import LogScanner
from healer.diagnosis.crashfile import parse_crash_file
from healer.diagnosis.logformat import LogLine, iter_lines, parse_line

# The exit statuses the classifier is asked about: a clean exit, errors, signals (negative).
_EXITS = (None, 0, 1, 2, 3, 134, 137, 139, -6, -9, -11, -15)


def fuzz_events(data: bytes) -> None:
    """The agent's event decoder (blender_hooks.events.decode), as ingest calls it on one NDJSON line."""
    oracle.event(data)


def fuzz_crashfile(data: bytes) -> None:
    """Blender's crash file (blender.crash.txt, any version, Linux/macOS/Windows), bytes and text."""
    for given in (data, data.decode("utf-8", errors="replace")):
        oracle.crash_report(parse_crash_file(given))


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
    oracle.classification(error)


def fuzz_alertmanager(data: bytes) -> None:
    """Alertmanager's webhook payload (version 4) as the healer's receiver parses and acts on it."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return                                   # aiohttp answers 400 before the parser sees it
    oracle.alert_payload(obj)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "events": fuzz_events,
    "crashfile": fuzz_crashfile,
    "loglines": fuzz_loglines,
    "alertmanager": fuzz_alertmanager,
}
