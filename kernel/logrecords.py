"""Blender's output lines as log records: the format shared by the capture (healer) and the agent.

Records travel like the hooks' events, through the durable spool (blender_hooks.spool's writer and
on-disk format), in a stream of their own: `<spool>/logs/`, one session per supervised job run. The
agent's spool scanner reads that directory too and stores the records per job (agent/logstore.py).
A separate stream keeps a million progress lines out of the event journal and its dedupe state.

One record per line, compact JSON (standard library only)::

    {"v":1,"s":"<session>","n":<seq in session>,"job":"j1","ts":1712.5,"attempt":1,"frame":3,
     "phase":"render","level":"warning","text":"...","folded":12}

`text` is always valid UTF-8 (undecodable bytes replaced) and at most MAX_TEXT_BYTES, cut with
CUT_MARK. Levels, lowest first: progress < info < warning < error.

Usage::

    line = encode_record(session="ab12", n=1, job="j1", ts=time.time(), attempt=1, frame=3,
                         phase="render", level="info", text="Saved: 'f_0003.png'")
    rec = decode_record(line)          # None when the line is not a record
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from json.encoder import encode_basestring as _js  # the C encoder json.dumps uses (ensure_ascii=False)
from pathlib import Path
from typing import Any

from blender_hooks.settings import ENV_LOGS
from blender_hooks.spool import spool_dir

LEVELS = ("progress", "info", "warning", "error")
LEVEL_RANK = {name: i for i, name in enumerate(LEVELS)}
MAX_TEXT_BYTES = 16 * 1024          # one line's text; longer lines are cut (the cut counted)
CUT_MARK = " …[cut {n} bytes]"
LOGS_SUBDIR = "logs"


def logs_enabled(env: Mapping[str, str] | None = None) -> bool:
    """False when $RENDERWATCH_LOGS is off/0/false/none."""
    e = os.environ if env is None else env
    return (e.get(ENV_LOGS) or "on").strip().lower() not in ("off", "0", "false", "no", "none")


def logs_spool_dir(env: Mapping[str, str] | None = None) -> Path:
    """The log records' spool stream: <spool dir>/logs."""
    return spool_dir(env) / LOGS_SUBDIR


_CONTROLS = {c: "\ufffd" for c in (*range(0, 9), *range(10, 32), *range(127, 160))}


def clean_text(text: str, max_bytes: int = MAX_TEXT_BYTES) -> tuple[str, int]:
    """(valid UTF-8 text, bytes cut): undecodable bytes (surrogate-escaped by the reader) and control
    characters but tab replaced by U+FFFD (a terminal or a log viewer is not driven by them), and the
    text cut to max_bytes with CUT_MARK."""
    if len(text) <= max_bytes and text.isascii() and text.isprintable():
        return text, 0                      # the common line: nothing to do
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:              # a lone surrogate that is not an escaped byte
        data = text.encode("utf-8", "replace")
    size = len(data)
    if size > max_bytes:
        data = data[:max_bytes]
    text = data.decode("utf-8", "replace" if size <= max_bytes else "ignore").translate(_CONTROLS)
    if size <= max_bytes:
        return text, 0
    return text + CUT_MARK.format(n=size - max_bytes), size - max_bytes


def encode_record(*, session: str, n: int, job: str, ts: float, attempt: int | None, frame: int | None,
                  phase: str | None, level: str, text: str, folded: int = 0, dropped: int = 0) -> bytes:
    """One record, the bytes json.dumps(rec, ensure_ascii=False, separators=(",", ":")) gives, built
    from the json module's own C string encoder: a written line costs the capture ~2x less than a
    dict through json.dumps (bench/bench_logs.py)."""
    out = (f'{{"v":1,"s":{_js(session)},"n":{int(n)},"job":{_js(job)},"ts":{float(round(ts, 6))!r},'
           f'"attempt":{_int(attempt)},"frame":{_int(frame)},"phase":{"null" if phase is None else _js(phase)},'
           f'"level":{_js(level)},"text":{_js(text)}')
    if folded:
        out += f',"folded":{int(folded)}'
    if dropped:
        out += f',"dropped":{int(dropped)}'
    return (out + "}\n").encode("utf-8", "replace")


def _int(v: int | None) -> str:
    return "null" if v is None else str(int(v))


def decode_record(line: bytes) -> dict[str, Any] | None:
    """A record from one spool line; None for anything that is not one (counted by the caller)."""
    try:
        rec = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(rec, dict) or rec.get("v") != 1:
        return None
    if not isinstance(rec.get("job"), str) or not rec["job"] or not isinstance(rec.get("s"), str):
        return None
    if not isinstance(rec.get("n"), int) or not isinstance(rec.get("ts"), (int, float)):
        return None
    if rec.get("level") not in LEVEL_RANK or not isinstance(rec.get("text"), str):
        return None
    for key in ("attempt", "frame"):
        if rec.get(key) is not None and not isinstance(rec[key], int):
            return None
    if rec.get("phase") is not None and not isinstance(rec["phase"], str):
        return None
    return rec
