"""The node's page: `/` (static HTML/CSS/JS shipped in agent/web), a job's frames, and a live stream.

Routes (read-only; the same rules as the API: open on loopback, a token off loopback):

    GET  /                              the page (node view; `#job=ID` the job view)
    GET  /static/{name}                 its script and style (a fixed list, read once at start)
    POST /login                         a form's `token`: sets an HttpOnly, SameSite=Strict cookie the
                                        read-only routes accept like the bearer token (not the token)
    POST /logout                        clears it
    GET  /api/v1/jobs/{job}/frames      every frame of a job, column by column, and its attempts
    GET  /api/v1/jobs/{job}/stream      server-sent events: `job`, `frames`, `attempts`, `reload`

Every response carries a Content-Security-Policy that allows no inline script or style and no request
to anywhere but this agent. A follower of the stream holds no queue: each tick it reads the frames
changed since its own cursor (agent.frames keeps a bounded ring of changes), so a slow or idle page
costs a version comparison, and one too far behind is told to reload.

Usage::

    add_page_routes(app)        # from agent.app.create_app
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote

from aiohttp import web

from agent.frames import COLUMNS, STATES
from agent.ingest import check_token
from agent.state import Job
from agent.traces import farm_parent, job_ids

log = logging.getLogger("renderwatch.agent.page")

COOKIE = "renderwatch_page"
STATIC = {"page.js": "text/javascript", "page.css": "text/css", "favicon.svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
TICK_SECONDS = 0.2          # a saved frame reaches the page within this (plus the spool's second at worst)
KEEPALIVE_SECONDS = 15.0
MAX_STREAMS = 32            # followers at once; more get 503 (each costs a task and a socket)
MAX_ROWS_PER_EVENT = 2000
LOGIN_MAX_BYTES = 4096      # the sign-in form: a token, nothing else   # more changes than this in one tick: the page reloads the table instead


class PageAssets:
    """The page's files, read from the package once (the page never loads anything else)."""

    def __init__(self) -> None:
        root = resources.files("agent") / "web"
        self.index = (root / "index.html").read_bytes()
        self.files = {name: (root / name).read_bytes() for name in STATIC}
        self.etags = {name: hashlib.sha256(b).hexdigest()[:16] for name, b in self.files.items()}
        self.streams: set[asyncio.Task[Any]] = set()
        self.epoch = os.urandom(6).hex()    # this agent's run: a page from before a restart reloads
        self.closing = asyncio.Event()


PAGE = web.AppKey("page", PageAssets)


def session_value(token: str) -> str:
    """The cookie's value: derived from the token (a cookie that leaks is not the token, and a new
    token ends every page's session); only the read-only routes accept it."""
    return hmac.new(token.encode(), b"renderwatch page session v1", hashlib.sha256).hexdigest()


def check_read(request: web.Request, token: str | None) -> bool:
    """The bearer token, or the page's cookie (GET routes only: the cookie never authorises a write)."""
    if check_token(request, token):
        return True
    assert token
    got = request.cookies.get(COOKIE, "")
    return request.method == "GET" and hmac.compare_digest(got.encode("utf-8", "surrogateescape"),
                                                           session_value(token).encode())


def unauthorized() -> web.Response:
    return web.json_response({"error": "unauthorized",
                              "detail": "send 'Authorization: Bearer <RENDERWATCH_TOKEN>', or sign in on the page"},
                             status=401)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "same-origin")   # no-referrer makes Chromium send `Origin: null` on the sign-in form
    h.setdefault("X-Frame-Options", "DENY")


def add_page_routes(app: web.Application, agent_key: Any) -> None:
    app[PAGE] = PageAssets()
    app.on_response_prepare.append(security_headers)
    app.on_shutdown.append(_close_streams)
    app.router.add_get("/", _index)
    app.router.add_get("/static/{name}", _static)
    app.router.add_post("/login", _login(agent_key))
    app.router.add_post("/logout", _logout)
    app.router.add_get("/api/v1/jobs/{job}/frames", _frames(agent_key))
    app.router.add_get("/api/v1/jobs/{job}/stream", _stream(agent_key))


async def _close_streams(app: web.Application) -> None:
    app[PAGE].closing.set()


async def _index(request: web.Request) -> web.Response:
    return web.Response(body=request.app[PAGE].index, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


async def _static(request: web.Request) -> web.Response:
    p = request.app[PAGE]
    name = request.match_info["name"]
    if name not in p.files:
        raise web.HTTPNotFound()
    etag = p.etags[name]
    if request.headers.get("If-None-Match") == f'"{etag}"':
        return web.Response(status=304, headers={"ETag": f'"{etag}"'})
    return web.Response(body=p.files[name], content_type=STATIC[name],
                        headers={"ETag": f'"{etag}"', "Cache-Control": "no-cache"})


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


def _login(agent_key: Any) -> Any:
    async def handler(request: web.Request) -> web.Response:
        token = request.app[agent_key].config.token
        if not _same_origin(request):
            return web.json_response({"error": "forbidden", "detail": "cross-origin sign-in"}, status=403)
        if request.content_type != "application/x-www-form-urlencoded":
            return web.json_response({"error": "bad_request", "detail": "send the sign-in form "
                                      "(application/x-www-form-urlencoded, field token)"}, status=400)
        body = await request.content.read(LOGIN_MAX_BYTES + 1)
        if len(body) > LOGIN_MAX_BYTES:
            return web.json_response({"error": "bad_request", "detail": "form too large"}, status=400)
        given = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0]
        if token and not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode()):
            raise web.HTTPSeeOther("/?signin=failed")
        resp = web.HTTPSeeOther("/")
        if token:
            resp.set_cookie(COOKIE, session_value(token), httponly=True, samesite="Strict", path="/",
                            secure=request.secure)
        raise resp
    return handler


async def _logout(request: web.Request) -> web.Response:
    if not _same_origin(request):
        return web.json_response({"error": "forbidden", "detail": "cross-origin sign-out"}, status=403)
    resp = web.HTTPSeeOther("/")
    resp.del_cookie(COOKIE, path="/")
    raise resp


# -- a job's frames -----------------------------------------------------------------------------------

def trace_id(job: Job) -> str:
    parent = farm_parent(job)
    return f"{parent.trace_id if parent else job_ids(job.id)[0]:032x}"


def links(cfg: Any, job: Job) -> dict[str, str]:
    """The job's trace, logs and dashboard in Grafana/Tempo/Loki, where their URL templates are set."""
    out = {}
    values = {"job": quote(job.id, safe=""), "trace_id": trace_id(job)}
    for name in ("trace_url", "logs_url", "dashboard_url"):
        template = getattr(cfg, name, None)
        if template:
            url = template
            for k, v in values.items():
                url = url.replace("{" + k + "}", v)
            out[name.removesuffix("_url")] = url
    return out


def attempts(job: Job) -> list[dict[str, Any]]:
    return [dict(a) for _, a in sorted(job.attempt_log.items())]


def frames_doc(agent: Any, job: Job, agent_epoch: str) -> dict[str, Any]:
    t = job.frames
    return {"job": job.id, "version": t.version, "epoch": agent_epoch, "states": list(STATES), "columns": list(COLUMNS),
            "devices": list(t.devices), "frames": t.to_columns(), "dropped": t.dropped,
            "attempts": attempts(job), "summary": job.to_dict(), "links": links(agent.config, job),
            "trace_id": trace_id(job)}


def _frames(agent_key: Any) -> Any:
    async def handler(request: web.Request) -> web.Response:
        a = request.app[agent_key]
        if not check_read(request, a.config.token):
            return unauthorized()
        job = a.state.jobs.get(request.match_info["job"])
        if job is None:
            return web.json_response({"error": "not_found", "detail": "no such job on this node"}, status=404)
        body = json.dumps(frames_doc(a, job, request.app[PAGE].epoch), separators=(",", ":"))
        resp = web.Response(text=body, content_type="application/json", headers={"Cache-Control": "no-store"})
        resp.enable_compression()
        return resp
    return handler


# -- following a job live ---------------------------------------------------------------------------------

def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _attempts_key(job: Job) -> tuple:
    return tuple((n, a["ended_at"], a["error_type"]) for n, a in job.attempt_log.items())


def _stream(agent_key: Any) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        a = request.app[agent_key]
        page = request.app[PAGE]
        if not check_read(request, a.config.token):
            return unauthorized()
        jid = request.match_info["job"]
        job = a.state.jobs.get(jid)
        if job is None:
            return web.json_response({"error": "not_found", "detail": "no such job on this node"}, status=404)
        if len(page.streams) >= MAX_STREAMS:
            return web.json_response({"error": "busy", "detail": f"{MAX_STREAMS} pages follow this agent"},
                                     status=503, headers={"Retry-After": "5"})
        try:
            version = int(request.query.get("version", "-1"))
        except ValueError:
            version = -1
        if request.query.get("epoch") != page.epoch:
            version = -1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        page.streams.add(task)
        loop = asyncio.get_running_loop()
        try:
            await resp.write(b"retry: 2000\n\n")
            summary_key: tuple = ()
            att_key = _attempts_key(job)
            last_write = loop.time()
            while not page.closing.is_set():
                job = a.state.jobs.get(jid)
                if job is None:
                    await resp.write(_sse("gone", {"job": jid}))
                    break
                out = []
                t = job.frames
                if version != t.version:
                    changed = t.changed_since(version) if version >= 0 else None
                    if changed is None or len(changed) > MAX_ROWS_PER_EVENT:
                        out.append(_sse("reload", {"version": t.version}))
                    else:
                        rows = [r for r in (t.row(f) for f in changed) if r is not None]
                        out.append(_sse("frames", {"version": t.version, "rows": rows}))
                    version = t.version
                key = (job.status, job.frames_done, job.current_frame, job.attempts, job.error_type,
                       job.eta_seconds is None)
                if key != summary_key or (out and job.status == "running"):
                    summary_key = key
                    out.append(_sse("job", job.to_dict()))
                ak = _attempts_key(job)
                if ak != att_key:
                    att_key = ak
                    out.append(_sse("attempts", attempts(job)))
                now = loop.time()
                if out:
                    await resp.write(b"".join(out))
                    last_write = now
                elif now - last_write >= KEEPALIVE_SECONDS:
                    await resp.write(b": keepalive\n\n")
                    last_write = now
                try:
                    await asyncio.wait_for(page.closing.wait(), TICK_SECONDS)
                except TimeoutError:
                    pass
        except ConnectionResetError:
            pass
        finally:
            page.streams.discard(task)
        return resp
    return handler
