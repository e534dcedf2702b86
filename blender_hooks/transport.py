"""A minimal HTTP/1.1 POST client for the spool sender (standard library `socket` only).

Why not urllib: inside Blender every millisecond of import and every POST's CPU is taken from the
render. `urllib.request` costs 10-25 ms to import (http.client, email, ssl) and opens a connection
per request; this keeps one connection alive to the local agent and parses only the status line
and the headers it needs. https URLs (an agent behind TLS) fall back to urllib, imported then.

Usage::

    poster = HttpPoster("http://127.0.0.1:9464/api/v1/events")
    status = poster.post(b'{"v":1,...}\\n', {"Content-Type": "application/x-ndjson"}, timeout=5.0)
    poster.close()
"""

from __future__ import annotations

import socket

MAX_HEADER_BYTES = 64 * 1024


class HttpPoster:
    """POSTs to one URL over a kept-alive connection; `post` returns the status or raises OSError."""

    def __init__(self, url: str):
        scheme, _, rest = url.partition("://")
        hostport, slash, path = rest.partition("/")
        self.url = url
        self.tls = scheme.lower() == "https"
        self.path = slash + path or "/"
        host, sep, port = hostport.rpartition(":")
        if not sep or not port.isdigit():
            host, port = hostport, ("443" if self.tls else "80")
        self.host = host.strip("[]")
        self.port = int(port)
        self.hostport = hostport
        self._sock: socket.socket | None = None
        self._connecting: socket.socket | None = None  # visible to abort() while connect() blocks
        # The first connect imports the idna codec (~1 ms holding the GIL, which Blender's thread
        # may be waiting for): do it now, at register time, on the caller's thread.
        self.host.encode("idna")

    def abort(self) -> None:
        """Unblock a post in flight on another thread (safe from any thread; the fd stays open).

        shutdown() wakes a blocked recv/send and, on Linux, a connect still in SYN_SENT; the
        posting thread then fails with OSError and closes the socket itself.
        """
        for sock in (self._connecting, self._sock):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def post(self, body: bytes, headers: dict[str, str], timeout: float) -> int:
        if self.tls:
            return self._post_urllib(body, headers, timeout)
        head = [f"POST {self.path} HTTP/1.1", f"Host: {self.hostport}", f"Content-Length: {len(body)}",
                "Connection: keep-alive"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        reused = self._sock is not None
        try:
            return self._exchange(request, body, timeout)
        except OSError:
            self.close()
            if not reused:
                raise
        # The agent closed an idle kept-alive connection: try once on a fresh one.
        try:
            return self._exchange(request, body, timeout)
        except OSError:
            self.close()
            raise

    def _exchange(self, head: bytes, body: bytes, timeout: float) -> int:
        sock = self._sock
        if sock is None:
            sock = self._connect(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        sock.settimeout(timeout)
        # Head and body in one syscall without concatenating them (no copy of the batch while
        # holding the GIL, which Blender's thread may be waiting for).
        sent = sock.sendmsg([head, body])
        if sent < len(head) + len(body):
            sock.sendall((head + body)[sent:] if sent < len(head) else memoryview(body)[sent - len(head):])
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("the agent closed the connection")
            buf += chunk
            if len(buf) > MAX_HEADER_BYTES:
                raise ConnectionError("response headers too large")
        resp_head, _, rest = buf.partition(b"\r\n\r\n")
        lines = resp_head.split(b"\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            raise ConnectionError(f"not an HTTP response: {lines[0][:80]!r}") from None
        fields = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            fields[k.strip().lower()] = v.strip().lower()
        length = fields.get(b"content-length")
        keep = length is not None and length.isdigit() and fields.get(b"connection") != b"close"
        if keep:
            need = int(length) - len(rest)  # type: ignore[arg-type]
            while need > 0:
                chunk = sock.recv(min(need, 65536))
                if not chunk:
                    keep = False
                    break
                need -= len(chunk)
        if not keep:  # no length, chunked or "close": don't try to find the next response
            self.close()
        return status

    def _connect(self, timeout: float) -> socket.socket:
        """socket.create_connection, with the socket reachable by abort() while it connects."""
        err: OSError | None = None
        for family, kind, proto, _name, addr in socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            self._connecting = sock
            try:
                sock.settimeout(timeout)
                sock.connect(addr)
                return sock
            except OSError as e:
                err = e
                sock.close()
            finally:
                self._connecting = None
        raise err or OSError(f"cannot resolve {self.host}")

    def _post_urllib(self, body: bytes, headers: dict[str, str], timeout: float) -> int:
        import urllib.error
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        req = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
        try:
            with opener.open(req, timeout=timeout) as resp:
                resp.read()
                return int(resp.status)
        except urllib.error.HTTPError as e:
            e.close()
            return int(e.code)
        except urllib.error.URLError as e:
            raise ConnectionError(str(e.reason)) from None
