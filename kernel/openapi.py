"""What the agent's and the healer's OpenAPI documents share, and the route that serves them.

Each service keeps its document as Python data next to its app (agent.openapi, healer.openapi) and
serves it at `GET /openapi.json` without a token, like /healthz: it describes the API, it holds no
data. A test keeps each document and its app's routes the same set.

Usage::

    add_openapi_route(app, spec)          # GET /openapi.json -> the document
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from kernel.version import __version__

OPENAPI_PATH = "/openapi.json"
BEARER = {"type": "http", "scheme": "bearer",
          "description": "`Authorization: Bearer <token>`; compared in constant time."}


def document(title: str, description: str, paths: dict[str, Any], schemas: dict[str, Any],
             security_schemes: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.0.3 document with the parts both services serve (/openapi.json)."""
    paths = {**paths, OPENAPI_PATH: {"get": {
        "summary": "This document", "operationId": "openapi", "security": [],
        "description": "Served without a token: it describes the API and holds no data.",
        "responses": {"200": {"description": "The OpenAPI document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}}}}
    return {"openapi": "3.0.3",
            "info": {"title": title, "version": __version__, "description": description,
                     "license": {"name": "MIT"}},
            "paths": paths,
            "components": {"schemas": schemas, "securitySchemes": security_schemes}}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def metrics_operation(summary: str, security: list[dict[str, list[str]]],
                      unauthorized: dict[str, Any]) -> dict[str, Any]:
    text = {"schema": {"type": "string"}}
    return {"get": {
        "summary": summary, "operationId": "metrics", "security": security,
        "responses": {"200": {"description": "Prometheus text format 0.0.4 (OpenMetrics when Accept asks for it)",
                              "content": {"text/plain": text, "application/openmetrics-text": text}},
                      "401": unauthorized}}}


def add_openapi_route(app: web.Application, spec: dict[str, Any]) -> None:
    """Serve `spec` at GET /openapi.json (a copy per app: no shared mutable state)."""
    doc = copy.deepcopy(spec)

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(doc)

    app.router.add_get(OPENAPI_PATH, openapi)
