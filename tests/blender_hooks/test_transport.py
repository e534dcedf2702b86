"""The sender's minimal HTTP/1.1 client against a real aiohttp server: status codes, keep-alive,
reconnecting after the server drops an idle connection, responses without a length."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from blender_hooks.transport import HttpPoster

HEADERS = {"Content-Type": "application/x-ndjson", "Authorization": "Bearer t"}


@pytest.fixture
async def server():
    seen: list[tuple[int, bytes, str | None]] = []

    async def events(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.transport.get_extra_info("peername")[1], body, request.headers.get("Authorization")))
        return web.json_response({"ok": True}, status=int(request.query.get("status", "200")))

    async def chunked(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(status=202)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"partial")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/api/v1/events", events)
    app.router.add_post("/chunked", chunked)
    runner = web.AppRunner(app, keepalive_timeout=0.3)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_posts_over_one_kept_alive_connection(server):
    base, seen = server
    p = HttpPoster(base + "/api/v1/events")
    for i in range(3):
        assert await asyncio.to_thread(p.post, b'{"n":%d}\n' % i, HEADERS, 5.0) == 200
    assert [b for _, b, _ in seen] == [b'{"n":0}\n', b'{"n":1}\n', b'{"n":2}\n']
    assert len({port for port, _, _ in seen}) == 1 and {a for _, _, a in seen} == {"Bearer t"}
    p.close()


async def test_reconnects_after_the_server_closed_an_idle_connection(server):
    base, seen = server
    p = HttpPoster(base + "/api/v1/events")
    assert await asyncio.to_thread(p.post, b"a\n", HEADERS, 5.0) == 200
    await asyncio.sleep(1.0)  # past the server's keep-alive timeout: it closes the connection
    assert await asyncio.to_thread(p.post, b"b\n", HEADERS, 5.0) == 200
    assert [b for _, b, _ in seen] == [b"a\n", b"b\n"] and seen[0][0] != seen[1][0]
    p.close()


async def test_error_statuses_and_chunked_responses(server):
    base, seen = server
    p = HttpPoster(base + "/api/v1/events?status=413")
    assert await asyncio.to_thread(p.post, b"x\n", HEADERS, 5.0) == 413
    assert await asyncio.to_thread(HttpPoster(base + "/chunked").post, b"x\n", HEADERS, 5.0) == 202
    p.close()


def test_unreachable_raises_oserror():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        HttpPoster(f"http://127.0.0.1:{port}/api/v1/events").post(b"x\n", HEADERS, 1.0)


def test_url_parsing():
    p = HttpPoster("http://[::1]:9464/api/v1/events")
    assert (p.host, p.port, p.path) == ("::1", 9464, "/api/v1/events")
    p = HttpPoster("http://agent.local/api/v1/events")
    assert (p.host, p.port, p.path, p.tls) == ("agent.local", 80, "/api/v1/events", False)
    assert HttpPoster("https://agent.example/x").port == 443
