"""Who may use the healer's API: a bearer token, always, made by the healer when the operator set none.

The API starts Blender with caller-chosen arguments (`--python` scripts included), so whoever can call
it runs code as the healer's account. Like Jupyter, the service never runs open: when neither
RENDERWATCH_HEALER_TOKEN nor the config's `token` is set, `renderwatch healer` makes one and keeps it
in `<state home>/healer/token`, a file only the healer's account can read (0600 in a 0700 directory,
like Docker's socket is owner/group-only). The same account's `renderwatch jobs` reads it without extra
steps; any other account gets 401 with a message naming the file and how to get a token.

Which routes need it::

    /healthz, /openapi.json          never (they hold no data)
    /api/v1/alertmanager             Alertmanager's own token (healer.service.alerts)
    /metrics                         the operator's token when one is configured; open on loopback
                                     with a generated token (read-only counters; Prometheus on the
                                     same host scrapes it without a credentials file)
    everything else                  the token

Usage::

    token = ensure_token(env)            # GeneratedToken(value, path): read or made, 0600
    app = web.Application(middlewares=[auth_middleware(token=..., token_file=...)])
    value, path = client_token(env)      # for clients: env var, else the file (PermissionError explained)
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from blender_hooks.settings import ENV_HEALER_TOKEN, ConfigError
from kernel.paths import ensure_private_dir, home

ALERTMANAGER_PATH = "/api/v1/alertmanager"     # checks Alertmanager's own token (healer.service.alerts)
_TOKEN_BYTES = 32


def token_path(env: Mapping[str, str]) -> Path:
    """Where the healer keeps the token it made: <state home>/healer/token."""
    return home(env) / "healer" / "token"


@dataclass(frozen=True)
class GeneratedToken:
    value: str
    path: Path


def ensure_token(env: Mapping[str, str]) -> GeneratedToken:
    """The token file's value, made first if missing. A file another account owns is refused
    (ConfigError), and so is a `healer/` folder that is a link or another account's (UnsafeStateDir, a
    PermissionError); a file that others can read is replaced by a new token (the old one may be known)."""
    path = token_path(env)
    # healer/ checked from the state root down: a link or another account's folder there is refused
    # (UnsafeStateDir), never given the token
    ensure_private_dir(path.parent, root=home(env))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)   # a FIFO there must not hang the start
    except FileNotFoundError:
        return GeneratedToken(_write_new(path), path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConfigError(f"{path} is a symbolic link: remove it and the healer makes a new token there") from None
        raise ConfigError(f"cannot read the healer's token file {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_uid != os.geteuid():
            raise ConfigError(f"{path} belongs to uid {st.st_uid}, not to this account (uid {os.geteuid()}): "
                              "remove it, or run the healer as its owner")
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{path} is a directory: remove it and the healer makes a new token there")
        value = f.read(4096).decode("ascii", "replace").strip() if stat.S_ISREG(st.st_mode) else ""
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077 or len(value) < 32 or not value.isprintable():
        return GeneratedToken(_write_new(path), path)
    return GeneratedToken(value, path)


def _write_new(path: Path) -> str:
    value = secrets.token_urlsafe(_TOKEN_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)                 # whatever the umask
        os.write(fd, (value + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return value


def client_token(env: Mapping[str, str]) -> tuple[str | None, Path]:
    """The token a client on this host sends: $RENDERWATCH_HEALER_TOKEN, else the healer's token file
    when this account can read it. Raises PermissionError with the fix when the file is someone else's."""
    from kernel.files import read_small_file
    from kernel.listen import check_token

    path = token_path(env)
    if env.get(ENV_HEALER_TOKEN):
        return check_token(env[ENV_HEALER_TOKEN], ENV_HEALER_TOKEN), path
    try:
        value = read_small_file(path, 4096).decode("ascii", errors="replace").strip()
    except FileNotFoundError:
        return None, path
    except PermissionError:
        raise PermissionError(f"cannot read the healer's token {path}: it belongs to the account that runs the "
                              f"healer. Ask its operator for the token and set {ENV_HEALER_TOKEN}") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the healer's token {path}: {getattr(e, 'strerror', None) or e}; set "
                          f"{ENV_HEALER_TOKEN}, or let the healer make the file again") from None
    return (check_token(value, str(path)) if value else None), path


def unauthorized_message(token_file: Path | None) -> dict[str, str]:
    body = {"error": "missing or wrong bearer token"}
    if token_file is not None:
        body["error"] += (f": send `Authorization: Bearer <token>` with the token the healer keeps in {token_file} "
                          f"(readable by the healer's account only; `renderwatch jobs` reads it for that account), "
                          f"or ask the healer's operator for a token ({ENV_HEALER_TOKEN})")
    return body


def auth_middleware(token: str | None, token_file: Path | None = None):
    """aiohttp middleware. `token_file` set means the token was generated (loopback only): /metrics is
    open then. No token at all (an embedding application's choice, never `renderwatch healer`): open."""
    # Imported here: `renderwatch jobs` reads the token without the server's imports.
    from aiohttp import web

    from kernel.openapi import OPENAPI_PATH

    expected = f"Bearer {token}".encode() if token else None
    open_paths = {"/healthz", OPENAPI_PATH, ALERTMANAGER_PATH} | ({"/metrics"} if token_file is not None else set())

    @web.middleware
    async def auth(request: web.Request, handler):
        if expected is not None and request.path not in open_paths:
            got = request.headers.get("Authorization", "")
            if not hmac.compare_digest(got.encode("utf-8", "surrogateescape"), expected):
                return web.json_response(unauthorized_message(token_file), status=401,
                                         headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)
    return auth
