"""Listen addresses, shared by the agent and the healer: parse `HOST:PORT` and tell loopback apart.

Usage::

    host, port = parse_listen("127.0.0.1:9464")      # ValueError with a fix-it message when malformed
    is_loopback(host)                                 # a non-loopback listener needs a token
"""

from __future__ import annotations

import ipaddress

from blender_hooks.settings import DEFAULT_AGENT, DEFAULT_AGENT_LISTEN


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1; host names and wildcard addresses are not loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(value: str, key: str = "listen", example: str = DEFAULT_AGENT_LISTEN) -> tuple[str, int]:
    """'HOST:PORT' or '[V6]:PORT' -> (host, port); ValueError naming `key` when malformed."""
    v = value.strip()
    if v.startswith("["):
        host, sep, rest = v[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
        ok = bool(sep) and bool(port_s)
    else:
        host, sep, port_s = v.rpartition(":")
        ok = bool(sep) and bool(host)
    if not ok or not port_s.isdigit() or int(port_s) > 65535:
        port = example.rpartition(":")[2]
        raise ValueError(f"{key}: {value!r} is not HOST:PORT (for example {example}, or [::1]:{port})")
    return host, int(port_s)


def http_url(value: str, key: str, example: str = DEFAULT_AGENT) -> str:
    """A base URL a person gave (a flag or a variable): `HOST:PORT` gets `http://`; ValueError naming
    `key` unless it is http(s) with a host and, when given, a numeric port (urllib would raise
    InvalidURL or 'unknown url type' from deep inside a request)."""
    from urllib.parse import urlsplit

    v = (value or "").strip()
    url = v if "://" in v else f"http://{v}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not url.isascii() \
            or (port is None and parts.netloc.endswith(":")):
        raise ValueError(f"{key}: {value!r} is not an http(s) address (for example {example})")
    try:
        parts.hostname.encode("idna")    # '..' or a 300-character label: what a request would fail on
    except UnicodeError:
        raise ValueError(f"{key}: {value!r}: {parts.hostname!r} is not a host name (for example {example})") from None
    return url.rstrip("/")


def check_token(value: str, key: str) -> str:
    """A bearer token as it travels in an HTTP header: printable ASCII without spaces, at most 4096
    characters; ValueError naming `key` otherwise (a non-ASCII one failed inside the HTTP client, and
    the server's constant-time comparison)."""
    if not (0 < len(value) <= 4096 and value.isascii() and value.isprintable() and " " not in value):
        raise ValueError(f"{key}: a token is printable ASCII without spaces, at most 4096 characters "
                         "(for example the output of `openssl rand -hex 32`)")
    return value
