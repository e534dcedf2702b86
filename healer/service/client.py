"""`renderwatch jobs`: the healer service's API from the command line, authenticated without extra steps.

The token is $RENDERWATCH_HEALER_TOKEN, else the file the healer made for its own account
(healer.service.auth): the account that runs the healer needs nothing more; another account gets a
message saying whose token it needs.

Usage::

    renderwatch jobs                                  # list
    renderwatch jobs submit /abs/shot.blend --frames 1-240 [-- --python post.py]
    renderwatch jobs show ID | cancel ID | restart ID
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from blender_hooks.settings import ENV_HEALER_LISTEN
from healer.diagnosis.catalog import EXIT_USAGE
from healer.service.auth import client_token
from kernel.paths import DEFAULT_HEALER_LISTEN

EXIT_API = 1


class ApiError(Exception):
    """A request the healer refused or could not be made; str() is the message for the user."""


def default_url(env: Mapping[str, str]) -> str:
    """The healer's URL on this host from $RENDERWATCH_HEALER_LISTEN (ValueError naming it if malformed)."""
    from kernel.listen import parse_listen

    host, port = parse_listen(env.get(ENV_HEALER_LISTEN) or DEFAULT_HEALER_LISTEN, ENV_HEALER_LISTEN,
                              DEFAULT_HEALER_LISTEN)
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def call(url: str, method: str, path: str, body: Any = None, *, env: Mapping[str, str],
         timeout: float = 30.0) -> Any:
    """One API call; returns the decoded JSON answer or raises ApiError with what to do."""
    # Imported here, not at the top: every `renderwatch` command registers this one, and
    # urllib.request (http.client, ssl, email) is 25 ms of each start.
    import urllib.error
    import urllib.request

    token, token_file = client_token(env)          # PermissionError: someone else's file
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read() or b"{}").get("error") or e.reason
        except (ValueError, AttributeError):
            message = e.reason
        if e.code == 401 and not token:
            message = (f"the healer at {url} wants a token and none was found: neither {token_file} (the file "
                       f"the healer makes for its own account) nor $RENDERWATCH_HEALER_TOKEN")
        raise ApiError(f"{method} {path}: {e.code} {message}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ApiError(f"cannot reach the healer at {url}: {reason} (is `renderwatch healer` running? "
                       f"--url or {ENV_HEALER_LISTEN} names another address)") from None


def register(sub: argparse._SubParsersAction) -> None:
    j = sub.add_parser("jobs", help="the healer service's jobs: list, submit, show, cancel, restart",
                       description=__doc__.splitlines()[0])
    j.add_argument("--url", help=f"the healer's address (default from ${ENV_HEALER_LISTEN}, else "
                                 f"http://{DEFAULT_HEALER_LISTEN})")
    js = j.add_subparsers(dest="action", metavar="ACTION")
    js.add_parser("list", help="every job the healer knows (the default)")
    s = js.add_parser("submit", help="render SCENE under the healer; arguments after -- go to Blender")
    s.add_argument("scene", metavar="SCENE.blend")
    _submit_options(s)
    s.add_argument("args", nargs=argparse.REMAINDER, metavar="-- BLENDER_ARGS", help="Blender's own arguments")
    for name, what in (("show", "one job with its report"), ("cancel", "stop its Blender"),
                       ("restart", "run it again from its verified frames")):
        a = js.add_parser(name, help=what)
        a.add_argument("id")
    j.set_defaults(func=cmd_jobs, action=None)


def _submit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", help="e.g. 1-240 or 1,5,9 (default: the scene's range)")
    p.add_argument("--output", help="Blender's -o pattern")
    p.add_argument("--strict", action="store_true", help="reported errors fail the job too")
    p.add_argument("--job", help="job id (default: derived)")


def _blender_args(args: argparse.Namespace) -> list[str]:
    """Options given after SCENE land in REMAINDER: parse those before `--` as ours, pass the rest on."""
    rest = list(args.args)
    pre, post = (rest[:rest.index("--")], rest[rest.index("--") + 1:]) if "--" in rest else (rest, [])
    if pre:
        p = argparse.ArgumentParser(prog="renderwatch jobs submit", argument_default=argparse.SUPPRESS)
        _submit_options(p)
        p.parse_args(pre, namespace=args)             # an unknown option exits 2 with argparse's message
    return post


def cmd_jobs(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    from kernel.listen import http_url
    from kernel.paths import check_job_id

    env = os.environ if env is None else env
    action = args.action or "list"
    try:
        url = http_url(args.url, "--url") if args.url is not None else default_url(env)
        if action not in ("list", "submit"):
            check_job_id(args.id, "JOB")
    except ValueError as e:
        print(f"renderwatch jobs: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if action == "list":
            jobs = call(url, "GET", "/api/v1/jobs", env=env)["jobs"]
            for job in jobs:
                done = f"{job.get('frames_completed') or 0}/{job.get('frames_requested') or '?'}"
                print(f"{job['id']}\t{job['state']}\t{done}\t{job.get('scene')}")
            if not jobs:
                print("no jobs", file=sys.stderr)
        elif action == "submit":
            blender_args = _blender_args(args)
            body: dict[str, Any] = {"scene": os.path.abspath(args.scene), "args": blender_args}
            for key in ("frames", "output", "job"):
                if getattr(args, key):
                    body[key] = getattr(args, key)
            if args.strict:
                body["strict"] = True
            job = call(url, "POST", "/api/v1/jobs", body, env=env)
            print(job["id"])
        else:
            from urllib.parse import quote

            path = f"/api/v1/jobs/{quote(args.id, safe='')}"
            if action == "show":
                print(json.dumps(call(url, "GET", path, env=env), indent=2))
            else:
                job = call(url, "POST", f"{path}/{action}", {}, env=env)
                print(f"{job['id']}\t{job['state']}")
    except (ApiError, PermissionError, ValueError) as e:     # ValueError: a token that cannot be sent
        print(f"renderwatch jobs: {e}", file=sys.stderr)
        return EXIT_API if isinstance(e, ApiError) else EXIT_USAGE
    return 0
