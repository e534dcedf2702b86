"""The healer service's HTTP API as an OpenAPI 3.0.3 document (served at GET /openapi.json).

Usage::

    from healer.service.openapi import spec
    spec(alertmanager=True)      # the document; without the receiver when it is not mounted
"""

from __future__ import annotations

import copy
from typing import Any

from healer.service.alerts import ALERTMANAGER_PATH, ENV_ALERTMANAGER_TOKEN, PAYLOAD_VERSION
from healer.supervising.frames import MAX_FRAME, MIN_FRAME
from kernel.openapi import BEARER, document, json_body, metrics_operation, nullable, ref

SECURED: list[dict[str, list[str]]] = [{"token": []}]
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"     # healer.ledger's job ids
_INT_OR_NULL = nullable({"type": "integer"})
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "JobRequest": {
        "type": "object", "required": ["scene"], "additionalProperties": False,
        "properties": {
            "scene": {"type": "string", "pattern": "^/", "maxLength": 4096, "description": "absolute path to the .blend"},
            "frames": {"oneOf": [{"type": "string", "description": "a spec like '1-240' or '1,3,5-9'"},
                                 {"type": "array", "items": {"type": "integer", "minimum": MIN_FRAME, "maximum": MAX_FRAME}}],
                       "description": "default: the scene's frame range"},
            "output": {"type": "string", "maxLength": 4096, "description": "output pattern, as Blender's -o"},
            "blender": {"type": "string", "description": "one of the healer's allowed Blender executables"},
            "args": {"type": "array", "maxItems": 256, "items": {"type": "string", "maxLength": 4096},
                     "description": "extra Blender arguments, passed as argv (never a shell). Those that choose "
                                    "frames or the output (-a, -f, -s, -e, -j, -o and their long forms) are "
                                    "refused before `--` (400 naming them): use `frames` and `output`"},
            "strict": {"type": "boolean"},
            "stall_timeout": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 604800,
                              "description": "seconds without progress before Blender is restarted (finite; "
                                             "default: the healer's, else adaptive)"},
            "job": {"type": "string", "pattern": JOB_ID_PATTERN,
                    "description": "job id (default: derived from scene, frames, output and args)"}}},
    "Job": {
        "type": "object",
        "required": ["id", "state", "scene", "exit_code", "submitted_at", "error", "frames_requested",
                     "frames_completed", "restarts", "pid", "frame_in_flight", "gpu"],
        "properties": {
            "id": {"type": "string"},
            "state": {"type": "string", "enum": ["queued", "running", "complete", "failed", "cancelled"]},
            "scene": {"type": "string"}, "exit_code": _INT_OR_NULL, "submitted_at": {"type": "number"},
            "error": {"nullable": True, "description": "why it failed: a message or the ledger's {type, message}",
                      "oneOf": [{"type": "string"}, {"type": "object"}]},
            "frames_requested": _INT_OR_NULL, "frames_completed": _INT_OR_NULL, "restarts": _INT_OR_NULL,
            "pid": _INT_OR_NULL, "frame_in_flight": _INT_OR_NULL,
            "gpu": {"type": "string", "nullable": True,
                    "description": "UUID of the GPU the service placed the render on (null: not placed)"}}},
    "JobWithReport": {"allOf": [ref("Job"), {"type": "object", "properties": {"report": ref("Report")}}]},
    "Report": {
        "type": "object", "description": "the `renderwatch render --report` document (healer.report)",
        "required": ["status", "scene", "frames_requested", "frames_completed", "frame_render_counts", "restarts",
                     "attempts", "job", "job_status", "warnings", "ledger"],
        "properties": {
            "status": {"type": "string", "enum": ["complete", "failed"]}, "scene": {"type": "string"},
            "frames_requested": {"type": "array", "items": {"type": "integer"}},
            "frames_completed": {"type": "array", "items": {"type": "integer"}},
            "frame_render_counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "restarts": {"type": "integer"},
            "attempts": {"type": "array", "items": {"type": "object", "properties": {
                "attempt": {"type": "integer"}, "pid": _INT_OR_NULL,
                "frames_planned": {"type": "array", "items": {"type": "integer"}},
                "frames_rendered": {"type": "array", "items": {"type": "integer"}},
                "exit_code": _INT_OR_NULL, "exit_signal": _INT_OR_NULL,
                "error_type": nullable({"type": "string"}), "error_summary": nullable({"type": "string"}),
                "started_at": nullable({"type": "number"}), "ended_at": nullable({"type": "number"})}}},
            "job": {"type": "string"}, "job_status": {"type": "string"},
            "warnings": {"type": "array", "items": {"type": "object"}}, "ledger": {"type": "string"},
            "error": {"type": "object", "properties": {"type": {"type": "string"}, "message": {"type": "string"},
                                                       "exit_code": {"type": "integer"}}},
            "exit_code": {"type": "integer"}}},
    "AlertmanagerWebhook": {
        "type": "object", "required": ["version", "alerts"],
        "description": "Alertmanager's webhook payload, version 4 (fields not listed here are ignored)",
        "properties": {
            "version": {"type": "string", "enum": [PAYLOAD_VERSION]},
            "status": {"type": "string", "enum": ["firing", "resolved"]},
            "receiver": {"type": "string"}, "groupKey": {"type": "string"},
            "groupLabels": _STR_MAP, "commonLabels": _STR_MAP, "commonAnnotations": _STR_MAP,
            "externalURL": {"type": "string"}, "truncatedAlerts": {"type": "integer"},
            "alerts": {"type": "array", "items": {
                "type": "object", "required": ["status"],
                "properties": {"status": {"type": "string", "enum": ["firing", "resolved"]},
                               "labels": _STR_MAP, "annotations": _STR_MAP,
                               "startsAt": {"type": "string"}, "endsAt": {"type": "string"},
                               "generatorURL": {"type": "string"}, "fingerprint": {"type": "string"}}}}}},
    "AlertResults": {
        "type": "object", "required": ["status", "results"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}, "results": {"type": "array", "items": {
            "type": "object", "required": ["alertname", "status", "action", "target", "outcome"],
            "properties": {
                "alertname": {"type": "string"}, "status": {"type": "string", "enum": ["firing", "resolved"]},
                "action": nullable({"type": "string"}), "target": nullable({"type": "string"}),
                "outcome": {"type": "string", "enum": ["done", "failed", "duplicate", "held", "unknown",
                                                       "no_label", "nothing", "no_target"]}}}}}},
}

_ERROR = json_body(ref("Error"), "")
_UNAUTHORIZED = {**_ERROR, "description": "The bearer token is missing or wrong: the operator's "
                                          "(RENDERWATCH_HEALER_TOKEN), else the one the healer keeps in "
                                          "<state home>/healer/token"}
_NOT_FOUND = {**_ERROR, "description": "No such job"}
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": JOB_ID_PATTERN}}]


def _job_action(summary: str, op_id: str, conflict: bool) -> dict[str, Any]:
    responses = {"202": json_body(ref("Job"), "Accepted; the job as it is now"), "401": _UNAUTHORIZED,
                 "404": _NOT_FOUND}
    if conflict:
        responses["409"] = {**_ERROR, "description": "The job is queued or running: cancel it first"}
    return {"post": {"summary": summary, "operationId": op_id, "security": SECURED, "parameters": _ID,
                     "responses": responses}}


PATHS: dict[str, Any] = {
    "/api/v1/jobs": {
        "post": {
            "summary": "Submit a render", "operationId": "submitJob", "security": SECURED,
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref("JobRequest")}}},
            "responses": {
                "201": {**json_body(ref("Job"), "Queued"),
                        "headers": {"Location": {"schema": {"type": "string"}}}},
                "400": {**_ERROR, "description": "Not JSON (or NaN, or nested too deeply), or a field is wrong "
                                                  "(the message names it)"},
                "413": {**_ERROR, "description": "The body is over 1 MiB"},
                "401": _UNAUTHORIZED,
                "409": {**_ERROR, "description": "A job with this id is already queued or running"}}},
        "get": {
            "summary": "Every job this service knows", "operationId": "listJobs", "security": SECURED,
            "responses": {"200": json_body({"type": "object", "required": ["jobs"], "properties": {
                "jobs": {"type": "array", "items": ref("Job")}}}, "Jobs"), "401": _UNAUTHORIZED}}},
    "/api/v1/jobs/{id}": {"get": {
        "summary": "One job, with its report once it has a ledger", "operationId": "getJob",
        "security": SECURED, "parameters": _ID,
        "responses": {"200": json_body(ref("JobWithReport"), "The job"), "401": _UNAUTHORIZED,
                      "404": _NOT_FOUND}}},
    "/api/v1/jobs/{id}/cancel": _job_action("Stop the job's Blender and mark it cancelled", "cancelJob", False),
    "/api/v1/jobs/{id}/restart": _job_action("Run a finished, failed or cancelled job again (resumes from its "
                                             "ledger)", "restartJob", True),
    "/metrics": metrics_operation("Prometheus metrics (jobs, probes, restarts, frames, incidents)", SECURED,
                                  _UNAUTHORIZED),
    "/healthz": {"get": {
        "summary": "Liveness", "operationId": "healthz", "security": [],
        "responses": {"200": json_body({
            "type": "object", "required": ["status", "running", "concurrency"],
            "properties": {"status": {"type": "string", "enum": ["ok"]},
                           "running": {"type": "integer", "minimum": 0},
                           "concurrency": {"type": "integer", "minimum": 1}}}, "Up")}}},
    ALERTMANAGER_PATH: {"post": {
        "summary": "Alertmanager webhook receiver", "operationId": "alertmanager",
        "security": [{"alertmanager": []}],
        "description": "Mounted only when RENDERWATCH_ALERTMANAGER_TOKEN is set. RenderStalled stops that "
                       "job's Blender as stalled (the policy restarts it); GPUOverheating pauses the GPU. "
                       "Unknown alerts are acknowledged; a firing alert re-sent is acted on once.",
        "requestBody": {"required": True, "content": {"application/json": {"schema": ref("AlertmanagerWebhook")}}},
        "responses": {"200": json_body(ref("AlertResults"), "What was done for each alert"),
                      "400": {**_ERROR, "description": "Not Alertmanager's webhook v4 (the message says why)"},
                      "401": {**_ERROR, "description": "Missing or wrong Alertmanager token"}}}},
}

_DESCRIPTION = ("Per-host supervision: submit, list, cancel and restart Blender renders; Alertmanager's "
                "webhook. Every route but /healthz, /openapi.json and the Alertmanager receiver (which has its "
                "own token) needs the bearer token: the operator's (RENDERWATCH_HEALER_TOKEN; required off "
                "loopback), else one the healer makes for its own account in <state home>/healer/token, when "
                "/metrics is open on loopback.")
_SECURITY = {"token": BEARER,
             "alertmanager": {**BEARER, "description": f"the token Alertmanager sends ({ENV_ALERTMANAGER_TOKEN})"}}


def spec(*, alertmanager: bool = True) -> dict[str, Any]:
    """The document; `alertmanager=False` leaves out the receiver (not mounted without its token)."""
    paths = copy.deepcopy(PATHS)
    if not alertmanager:
        paths.pop(ALERTMANAGER_PATH)
    return document("renderwatch healer", _DESCRIPTION, paths, copy.deepcopy(SCHEMAS), _SECURITY)
