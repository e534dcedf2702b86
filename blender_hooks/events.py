"""The versioned event schema shared by the Blender hooks (producer) and the agent (consumer).

Standard library only: this module runs inside Blender's bundled Python as well as in CPython.

Every event is one JSON object. Common fields (all required):

    v        int    schema version (SCHEMA_VERSION)
    type     str    one of EVENT_TYPES
    session  str    random id of one Blender process run (hex, 8-64 chars)
    seq      int    1, 2, 3... per session, in emission order (dedupe + ordering key)
    ts       float  unix time the event happened (seconds)
    job      str    render job id; the healer sets RENDERWATCH_JOB_ID so restarts share it
    host     str    hostname
    pid      int    Blender's process id

Per type (see FIELDS): job_start, frame_start, phase, frame_end, job_end (from the hooks), and from the
healer: job_end with `final` (how the whole supervised job ended: complete, cancel, or failed with its
error_type), attempt_end (one attempt's classified end), frame_check (a saved frame that looks wrong, `reason` one of SUSPECT_REASONS) and frame_verified
(a frame the healer verified on disk after Blender died before its hooks could report it; the agent
counts it only if no frame_end of the hooks does).

Usage::

    ev = make_event("frame_start", session="ab12cd34", seq=3, job="j1", host="h", pid=42, frame=7)
    line = encode(ev)                  # bytes, one JSON line
    ev = decode(line)                  # -> dict, or raises EventError(reason, detail)
"""

from __future__ import annotations

import json
import math
import time

SCHEMA_VERSION = 1
MAX_EVENT_BYTES = 16 * 1024
MAX_STR = 4096
MAX_INT = 2**63 - 1          # JSON allows integers of any size; nothing renderwatch stores needs more
MAX_FRAME_SPAN = 1_048_574   # Blender's MAXFRAME: no job covers more frames than this
# Numbers with a meaning have a range: a frame of 1.7e308 seconds or a timestamp past the year 2500 is
# nobody's render, and once stored it overflows every consumer's arithmetic (ETA, status, spans).
MAX_TS = 2.0**34             # unix seconds (year ~2514)
MAX_SECONDS = 1e8            # one frame or one job: ~3 years
MAX_BYTES = 2.0**60          # memory peaks: 1 EiB
_RANGES: dict[str, tuple[float, float]] = {
    "ts": (0.0, MAX_TS), "started_at": (0.0, MAX_TS), "seconds": (0.0, MAX_SECONDS),
    "peak_memory_blender_bytes": (0.0, MAX_BYTES), "max_rss_bytes": (0.0, MAX_BYTES),
}

EVENT_TYPES = ("job_start", "frame_start", "phase", "frame_end", "job_end", "frame_check", "frame_verified",
               "attempt_end", "gpu_pause")
PHASES = ("sync", "bvh", "kernels", "sampling", "denoise", "compositing", "save", "other")
JOB_END_STATUS = ("complete", "cancel", "failed")   # "failed": the healer's verdict only (with error_type)
# The line the hooks print under the healer at each render's start: what its frames should be (JSON).
SETTINGS_MARK = "[renderwatch] render settings "
# Why a frame is suspect (healer.images.judge): the bounded `reason` label of the metric.
SUSPECT_REASONS = ("blank", "transparent", "partial", "resolution", "channels", "too_fast", "cpu_fallback")

# Rejection reasons (the `reason` label of renderwatch_events_rejected_total).
REASONS = (
    "invalid_utf8", "malformed_json", "not_object", "too_large", "unsupported_version",
    "unknown_type", "missing_field", "wrong_type", "out_of_range",
)

_NUM = (int, float)
_COMMON: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "v": (int, True), "type": (str, True), "session": (str, True), "seq": (int, True),
    "ts": (_NUM, True), "job": (str, True), "host": (str, True), "pid": (int, True),
    # Optional context carried on every event so a consumer that missed job_start
    # (restarted agent, evicted spool) can still label what it sees.
    "scene": (str, False), "engine": (str, False), "device_type": (str, False),
    "attempt": (int, False),
    # what the scene asked for where it differs in kind from device_type (Cycles: "GPU:CUDA" asked,
    # "CPU" used is a silent CPU fallback)
    "device_asked": (str, False),
}

# field -> (type, required)
FIELDS: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "job_start": {
        "blend_file": (str, True), "scene": (str, True), "frame_start": (int, True),
        "frame_end": (int, True), "frame_step": (int, False), "engine": (str, True),
        "device_type": (str, True), "samples": (int, False), "resolution_x": (int, False),
        "resolution_y": (int, False), "resolution_percentage": (int, False),
        "blender_version": (str, True), "output_path": (str, False),
        # the farm manager's identity of the job (blender_hooks.farm), when there is one
        "farm_engine": (str, False), "farm_job": (str, False), "farm_task": (str, False),
        "traceparent": (str, False),
    },
    "frame_start": {"frame": (int, True)},
    "phase": {"frame": (int, True), "name": (str, True), "detail": (str, False)},
    "frame_end": {
        "frame": (int, True), "seconds": (_NUM, True), "saved": (bool, True),
        "peak_memory_blender_bytes": (_NUM, False), "max_rss_bytes": (_NUM, False),
        "output_path": (str, False), "samples": (int, False),
        "resolution_x": (int, False), "resolution_y": (int, False),
    },
    # from the hooks: one Blender's render ended; from the healer, `final`: the whole job ended (every
    # attempt), "failed" with its error_type; only a later job_start (a person's restart) reopens it
    "job_end": {"status": (str, True), "frames_done": (int, False), "started_at": (_NUM, False),
                "final": (bool, False), "error_type": (str, False)},
    # sent by the healer, which inspects each saved frame: a frame that looks wrong, and why
    "frame_check": {"frame": (int, True), "reason": (str, True), "detail": (str, False),
                    "rendered": (int, False)},
    # sent by the healer: a frame it verified on disk whose frame_end the hooks may never have sent
    # (Blender killed between writing the file and the render_write handler)
    "frame_verified": {"frame": (int, True), "output_path": (str, False), "attempt": (int, False)},
    # sent by the healer: one attempt (one Blender run) ended, with its classified end ("ok" included),
    # the first line of evidence and the catalog's advice (the agent's page shows them as a timeline)
    "attempt_end": {"attempt": (int, True), "error_type": (str, True), "summary": (str, False),
                    "evidence": (str, False), "advice": (str, False), "started_at": (_NUM, False),
                    "frame": (int, False), "exit_code": (int, False)},
    # sent by the healer service: a GPU an alert paused (no new render goes there) or resumed; `job` is
    # the host's pseudo-job HOST_JOB, which holds no job at the agent
    "gpu_pause": {"uuid": (str, True), "paused": (bool, True), "reason": (str, False)},
}
HOST_JOB = "-host-"


class EventError(ValueError):
    """An event that does not match the schema. `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def make_event(type_: str, *, session: str, seq: int, job: str, host: str, pid: int,
               ts: float | None = None, **fields: object) -> dict:
    """Build an event dict (no validation: producers are trusted to be cheap, consumers validate)."""
    ev = {"v": SCHEMA_VERSION, "type": type_, "session": session, "seq": seq,
          "ts": time.time() if ts is None else ts, "job": job, "host": host, "pid": pid}
    ev.update(fields)
    return ev


def encode(ev: dict) -> bytes:
    """One compact JSON line (with trailing newline), UTF-8, never raising on odd strings."""
    return (json.dumps(ev, separators=(",", ":"), ensure_ascii=True, default=str) + "\n").encode()


def _type_error(name: str, value: object, want: type | tuple[type, ...]) -> EventError:
    wname = want.__name__ if isinstance(want, type) else "number"
    return EventError("wrong_type", f"field {name!r} must be {wname}, got {type(value).__name__}")


# Per type: the merged (common + specific) field table, precomputed once: the agent validates
# every event on its hot path, so validation is one dict walk with inlined type checks.
_TABLES: dict[str, tuple[tuple[str, type | tuple[type, ...], bool], ...]] = {
    typ: tuple((n, w, r) for table in (_COMMON, spec) for n, (w, r) in table.items())
    for typ, spec in FIELDS.items()
}


def valid_text(s: str) -> str:
    """`s` as text that encodes to UTF-8: JSON's `\\ud800` decodes to a lone surrogate, which every
    consumer that encodes (Prometheus exposition, a terminal, a log file) would fail on. Each lone
    surrogate becomes U+FFFD; valid text is returned as it is (ASCII at the cost of one check)."""
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in s)


def validate(obj: object) -> dict:
    """Check a decoded object against the schema; return it, or raise EventError. Text is made valid
    UTF-8 in place (valid_text); numbers with a meaning must lie in their range (_RANGES)."""
    if not isinstance(obj, dict):
        raise EventError("not_object", f"an event must be a JSON object, got {type(obj).__name__}")
    v = obj.get("v")
    if v != SCHEMA_VERSION or isinstance(v, bool):
        raise EventError("unsupported_version", f"field 'v' must be {SCHEMA_VERSION}, got {v!r}")
    typ = obj.get("type")
    table = _TABLES.get(typ) if isinstance(typ, str) else None
    if table is None:
        raise EventError("unknown_type", f"field 'type' must be one of {', '.join(EVENT_TYPES)}, got {typ!r}")
    get = obj.get
    for name, want, required in table:
        value = get(name)
        if value is None:
            if required:
                raise EventError("missing_field", f"{typ} event needs field {name!r}")
            continue
        # bool is a subclass of int: reject it where a number is wanted, and ints where bool is wanted.
        cls = type(value)
        if want is str:
            if cls is not str:
                raise _type_error(name, value, want)
            if len(value) > MAX_STR:
                raise EventError("too_large", f"field {name!r} is longer than {MAX_STR} characters")
            if not value.isascii():
                obj[name] = valid_text(value)
        elif want is int:
            if cls is not int:
                raise _type_error(name, value, want)
            if not -MAX_INT <= value <= MAX_INT:
                raise EventError("out_of_range", f"field {name!r} is outside +-2**63")
        elif want is bool:
            if cls is not bool:
                raise _type_error(name, value, want)
        else:  # number
            if cls is float:
                if not math.isfinite(value):
                    raise EventError("out_of_range", f"field {name!r} must be finite")
            elif cls is not int:
                raise _type_error(name, value, want)
            elif not -MAX_INT <= value <= MAX_INT:
                raise EventError("out_of_range", f"field {name!r} is outside +-2**63")
            bounds = _RANGES.get(name)
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                raise EventError("out_of_range", f"field {name!r} must be within {bounds[0]:g}..{bounds[1]:g}")
    if obj["seq"] < 1:
        raise EventError("out_of_range", "field 'seq' must be >= 1")
    if typ == "phase" and obj["name"] not in PHASES:
        raise EventError("out_of_range", f"phase 'name' must be one of {', '.join(PHASES)}")
    elif typ == "job_end" and obj["status"] not in JOB_END_STATUS:
        raise EventError("out_of_range", f"job_end 'status' must be one of {', '.join(JOB_END_STATUS)}")
    elif typ == "frame_check" and obj["reason"] not in SUSPECT_REASONS:
        raise EventError("out_of_range", f"frame_check 'reason' must be one of {', '.join(SUSPECT_REASONS)}")
    elif typ == "job_start" and not 0 <= obj["frame_end"] - obj["frame_start"] <= MAX_FRAME_SPAN:
        raise EventError("out_of_range", f"job_start frame_start..frame_end must span 0..{MAX_FRAME_SPAN} frames")
    return obj


def decode(data: bytes | str) -> dict:
    """Parse and validate one event from a JSON line; raise EventError with a precise reason."""
    if isinstance(data, bytes):
        if len(data) > MAX_EVENT_BYTES:
            raise EventError("too_large", f"event is {len(data)} bytes, the limit is {MAX_EVENT_BYTES}")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise EventError("invalid_utf8", f"byte {e.start} is not valid UTF-8") from None
    elif len(data) > MAX_EVENT_BYTES:
        raise EventError("too_large", f"event is {len(data)} characters, the limit is {MAX_EVENT_BYTES}")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise EventError("malformed_json", str(e)[:200]) from None
    return validate(obj)
