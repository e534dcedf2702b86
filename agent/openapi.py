"""The agent's HTTP API as an OpenAPI 3.0.3 document (served at GET /openapi.json).

The event schema is built from blender_hooks.events (the one definition the hooks and the agent
share), so the document cannot drift from what the decoder accepts.

Usage::

    from agent.openapi import SPEC        # a dict; json.dumps(SPEC) is the document
"""

from __future__ import annotations

from typing import Any

from blender_hooks.events import (
    _COMMON,
    EVENT_TYPES,
    FIELDS,
    JOB_END_STATUS,
    MAX_EVENT_BYTES,
    MAX_INT,
    MAX_STR,
    PHASES,
    REASONS,
    SCHEMA_VERSION,
)
from kernel.openapi import BEARER, document, json_body, metrics_operation, nullable, ref

SECURED: list[dict[str, list[str]]] = [{"token": []}]
_ERROR = json_body(ref("Error"), "")


def _field(want: Any) -> dict[str, Any]:
    if want is str:
        return {"type": "string", "maxLength": MAX_STR}
    if want is int:
        return {"type": "integer", "minimum": -MAX_INT, "maximum": MAX_INT}
    if want is bool:
        return {"type": "boolean"}
    return {"type": "number", "minimum": -MAX_INT, "maximum": MAX_INT}


def _event(typ: str) -> dict[str, Any]:
    table = {**_COMMON, **FIELDS[typ]}
    props = {name: _field(want) for name, (want, _) in table.items()}
    props.update(v={"type": "integer", "enum": [SCHEMA_VERSION]}, type={"type": "string", "enum": [typ]},
                 seq={"type": "integer", "minimum": 1, "maximum": MAX_INT})
    if typ == "phase":
        props["name"] = {"type": "string", "enum": list(PHASES)}
    elif typ == "job_end":
        props["status"] = {"type": "string", "enum": list(JOB_END_STATUS)}
    elif typ == "frame_end":
        props["seconds"] = {"type": "number", "minimum": 0, "maximum": MAX_INT}
    return {"type": "object", "title": typ, "required": sorted(n for n, (_, req) in table.items() if req),
            "properties": props}


_NUM_OR_NULL = nullable({"type": "number"})
_JOB = {"name": "job", "in": "path", "required": True, "schema": {"type": "string"}}

SCHEMAS: dict[str, Any] = {
    **{f"Event_{typ}": _event(typ) for typ in EVENT_TYPES},
    "Event": {"oneOf": [ref(f"Event_{typ}") for typ in EVENT_TYPES],
              "description": f"One event of schema version {SCHEMA_VERSION}, at most {MAX_EVENT_BYTES} bytes "
                             "as JSON (blender_hooks.events). Unknown fields are ignored."},
    "Error": {"type": "object", "required": ["error", "detail"],
              "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}},
    "IngestResult": {
        "type": "object", "required": ["accepted", "duplicate", "rejected", "errors"],
        "properties": {
            "accepted": {"type": "integer", "minimum": 0},
            "duplicate": {"type": "integer", "minimum": 0, "description": "(session, seq) seen before"},
            "rejected": {"type": "integer", "minimum": 0},
            "errors": {"type": "array", "maxItems": 20, "description": "the first 20 rejections", "items": {
                "type": "object", "required": ["index", "reason", "detail"],
                "properties": {"index": {"type": "integer", "minimum": 0, "description": "line or array index"},
                               "reason": {"type": "string", "enum": list(REASONS)},
                               "detail": {"type": "string"}}}}}},
    "Job": {
        "type": "object",
        "required": ["job", "scene", "status", "frames_done", "frames_total", "progress", "eta_seconds",
                     "last_frame_seconds", "peaks", "attempts", "host", "pid", "blender_version", "engine",
                     "device_type", "blend_file", "current_frame", "started_at", "ended_at", "last_progress_ts",
                     "error_type", "cpu_ratio", "rss_bytes", "vram_bytes"],
        "properties": {
            "job": {"type": "string"}, "scene": {"type": "string"},
            "status": {"type": "string", "enum": ["running", "complete", "cancelled", "failed", "stale"]},
            "error_type": nullable({"type": "string", "description": "why a failed job failed (the healer's verdict)"}),
            "frames_done": {"type": "integer"}, "frames_total": {"type": "integer"},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "eta_seconds": _NUM_OR_NULL, "last_frame_seconds": _NUM_OR_NULL,
            "peaks": {"type": "object", "additionalProperties": {"type": "number"},
                      "description": "peak rss / vram bytes of the job so far"},
            "attempts": {"type": "integer", "minimum": 1}, "host": {"type": "string"}, "pid": {"type": "integer"},
            "blender_version": {"type": "string"}, "engine": {"type": "string"},
            "device_type": {"type": "string"}, "blend_file": {"type": "string"},
            "current_frame": nullable({"type": "integer"}), "started_at": {"type": "number"},
            "ended_at": _NUM_OR_NULL, "last_progress_ts": {"type": "number"},
            "cpu_ratio": _NUM_OR_NULL, "rss_bytes": _NUM_OR_NULL, "vram_bytes": _NUM_OR_NULL}},
    "Gpu": {
        "type": "object",
        "required": ["gpu", "uuid", "name", "ok", "utilization_ratio", "memory_used_bytes", "memory_total_bytes",
                     "temperature_celsius", "power_watts", "throttle"],
        "properties": {
            "gpu": {"type": "integer"}, "uuid": {"type": "string"}, "name": {"type": "string"},
            "ok": {"type": "boolean"}, "utilization_ratio": _NUM_OR_NULL, "memory_used_bytes": _NUM_OR_NULL,
            "memory_total_bytes": _NUM_OR_NULL, "temperature_celsius": _NUM_OR_NULL, "power_watts": _NUM_OR_NULL,
            "throttle": {"type": "array", "items": {"type": "string"}}}},
}

_UNAUTHORIZED = {**_ERROR, "description": "A token is configured (RENDERWATCH_TOKEN) and the request lacks it"}

PATHS: dict[str, Any] = {
    "/api/v1/events": {"post": {
        "summary": "Ingest render events", "operationId": "postEvents", "security": SECURED,
        "description": "NDJSON (one event per line; what the Blender hooks send) or a JSON array of events "
                       "(or one event object). Valid events are accepted even when others in the batch are "
                       "rejected; duplicates (session, seq already seen) are counted, not applied twice.",
        "requestBody": {"required": True, "content": {
            "application/x-ndjson": {"schema": {"type": "array", "items": ref("Event")},
                                     "x-description": "each item is one line of JSON"},
            "application/json": {"schema": {"oneOf": [{"type": "array", "items": ref("Event")},
                                                      ref("Event")]}}}},
        "responses": {
            "200": json_body(ref("IngestResult"), "Every event accepted or a duplicate"),
            "400": json_body({"anyOf": [ref("IngestResult"), ref("Error")]},
                             "Some or all events rejected (IngestResult says which and why; the valid ones "
                             "are accepted), or a body that is not JSON at all (Error)"),
            "401": _UNAUTHORIZED,
            "413": {**_ERROR, "description": "Body larger than max_body_bytes (default 1 MiB)"}}}},
    "/api/v1/jobs": {"get": {
        "summary": "Jobs this agent sees, with live process and GPU readings", "operationId": "listJobs",
        "security": SECURED,
        "parameters": [{"name": "limit", "in": "query", "required": False,
                        "description": "At most this many jobs (default 100, at most 1000): running ones first, "
                                       "then the most recently ended; jobs_total counts them all",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}],
        "responses": {
            "200": json_body({"type": "object", "required": ["host", "jobs", "gpus", "gpu_available"],
                              "properties": {"host": {"type": "string"},
                                             "jobs": {"type": "array", "items": ref("Job")},
                                             "jobs_total": {"type": "integer", "minimum": 0},
                                             "gpus": {"type": "array", "items": ref("Gpu")},
                                             "gpu_available": {"type": "boolean"}}}, "Jobs and GPUs"),
            "400": _ERROR, "401": _UNAUTHORIZED}}},
    "/api/v1/jobs/{job}/log": {"get": {
        "summary": "A job's Blender log: stored records, filtered; follow=1 streams new ones (server-sent events)",
        "operationId": "jobLog", "security": SECURED,
        "parameters": [
            {"name": "job", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "frame", "in": "query", "required": False, "schema": {"type": "integer"}},
            {"name": "attempt", "in": "query", "required": False, "schema": {"type": "integer"}},
            {"name": "level", "in": "query", "required": False, "description": "this level and above",
             "schema": {"type": "string", "enum": ["progress", "info", "warning", "warn", "error"]}},
            {"name": "after", "in": "query", "required": False, "description": "records with seq > after",
             "schema": {"type": "integer", "minimum": 0, "default": 0}},
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}},
            {"name": "follow", "in": "query", "required": False, "description": "1: text/event-stream, "
             "`event: log` / `data: <record>` per record, a `: keepalive` comment every 15 s",
             "schema": {"type": "integer", "enum": [0, 1]}}],
        "responses": {
            "200": json_body({"type": "object", "required": ["job", "records", "next", "truncated"],
                              "properties": {"job": {"type": "string"},
                                             "records": {"type": "array", "items": {"type": "object"}},
                                             "next": {"type": "integer"}, "truncated": {"type": "boolean"}}},
                             "Records, oldest first"),
            "400": _ERROR, "401": _UNAUTHORIZED, "404": _ERROR}}},
    "/api/v1/jobs/{job}/frames": {"get": {
        "summary": "Every frame of a job, column by column, and its attempts (the page's job view)",
        "operationId": "jobFrames", "security": SECURED,
        "description": "Also accepts the page's cookie (POST /login). gzip-compressed when asked.",
        "parameters": [_JOB],
        "responses": {
            "200": json_body({"type": "object",
                              "required": ["job", "version", "epoch", "states", "columns", "devices", "frames",
                                           "attempts", "summary", "links", "trace_id", "dropped"],
                              "properties": {"frames": {"type": "object"}, "attempts": {"type": "array"}}},
                             "One list per field (frame, state, seconds, ...), one entry per frame"),
            "401": _UNAUTHORIZED, "404": {**_ERROR, "description": "No such job on this node"}}}},
    "/api/v1/jobs/{job}/stream": {"get": {
        "summary": "Follow a job live (server-sent events: frames, job, attempts, reload, gone)",
        "operationId": "jobStream", "security": SECURED,
        "parameters": [_JOB,
                       {"name": "version", "in": "query", "required": False, "schema": {"type": "integer"},
                        "description": "The frames table's version the page has (from .../frames)"},
                       {"name": "epoch", "in": "query", "required": False, "schema": {"type": "string"},
                        "description": "The agent run the page's version comes from (from .../frames)"}],
        "responses": {
            "200": {"description": "An event stream, kept open", "content": {"text/event-stream": {
                "schema": {"type": "string"}}}},
            "401": _UNAUTHORIZED, "404": {**_ERROR, "description": "No such job on this node"},
            "503": {**_ERROR, "description": "Too many pages follow this agent"}}}},
    "/": {"get": {
        "summary": "The page (node view; #job=ID the job view)", "operationId": "page", "security": [],
        "responses": {"200": {"description": "HTML (no data: the page reads the API)",
                              "content": {"text/html": {"schema": {"type": "string"}}}}}}},
    "/static/{name}": {"get": {
        "summary": "The page's script, style and icon", "operationId": "pageStatic", "security": [],
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The file", "content": {
                          "text/javascript": {"schema": {"type": "string"}}, "text/css": {"schema": {"type": "string"}},
                          "image/svg+xml": {"schema": {"type": "string"}}}},
                      "304": {"description": "Not modified (ETag)"},
                      "404": {"description": "Not one of the page's files"}}}},
    "/login": {"post": {
        "summary": "Sign the page in: the token in a form's body sets an HttpOnly, SameSite=Strict cookie",
        "operationId": "pageLogin", "security": [],
        "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
            "type": "object", "properties": {"token": {"type": "string"}}}}}},
        "responses": {"303": {"description": "To / (with the cookie), or to /?signin=failed"},
                      "400": {**_ERROR, "description": "Not a sign-in form (or larger than 4 KB)"},
                      "403": {**_ERROR, "description": "A cross-origin form"}}}},
    "/logout": {"post": {
        "summary": "Sign the page out (clears its cookie)", "operationId": "pageLogout", "security": [],
        "responses": {"303": {"description": "To /"}, "403": {**_ERROR, "description": "A cross-origin form"}}}},
    "/metrics": metrics_operation("Prometheus metrics (jobs, frames, ingest, process, GPU)", SECURED,
                                  _UNAUTHORIZED),
    "/healthz": {"get": {
        "summary": "Liveness", "operationId": "healthz", "security": [],
        "responses": {"200": json_body({
            "type": "object", "required": ["status", "version", "uptime_seconds", "jobs"],
            "properties": {"status": {"type": "string", "enum": ["ok"]}, "version": {"type": "string"},
                           "uptime_seconds": {"type": "number"}, "jobs": {"type": "integer", "minimum": 0}}},
            "Up")}}},
}

SPEC: dict[str, Any] = document(
    "renderwatch agent",
    "Per-host telemetry: the Blender hooks post render events here; Prometheus scrapes /metrics. "
    "Every route but /healthz and /openapi.json needs the bearer token when one is configured "
    "(RENDERWATCH_TOKEN; required off loopback).",
    PATHS, SCHEMAS, {"token": BEARER})
