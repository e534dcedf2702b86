"""`renderwatch logs JOB`: a job's log from the local agent, with journalctl / kubectl logs conventions.

    renderwatch logs JOB                          # every stored line, oldest first
    renderwatch logs JOB --frame 12 --level warning
    renderwatch logs JOB -n 50 -f                 # the last 50 lines, then follow (Ctrl-C ends)
    renderwatch logs JOB -o json                  # one record per line (NDJSON), for jq

Levels, lowest first: progress < info < warning < error; --level shows that level and above
(journalctl -p). Exit status: 0, 1 when the agent cannot be reached or does not know the job, 2 for
a bad argument.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Iterator
from typing import Any

from blender_hooks.settings import ENV_TOKEN
from kernel.logrecords import LEVELS
from kernel.paths import DEFAULT_AGENT, ENV_AGENT

PAGE = 10000
_CONTROLS = {c: "\ufffd" for c in (*range(0, 9), *range(10, 32), *range(127, 160))}
_COLORS = {"error": "\x1b[31m", "warning": "\x1b[33m", "progress": "\x1b[2m"}
_TAGS = {"error": "ERROR", "warning": "WARN ", "info": "INFO ", "progress": "PROG "}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("logs", help="a job's Blender log from the local agent (filter by frame, attempt, level; follow)",
                       description=__doc__.split("\n\n", 1)[0])
    p.add_argument("job", metavar="JOB", help="the job id (renderwatch status, renderwatch jobs)")
    p.add_argument("--frame", type=int, metavar="N", help="only this frame's lines")
    p.add_argument("--attempt", type=int, metavar="K", help="only this attempt's lines")
    p.add_argument("--level", "-p", metavar="LEVEL", choices=[*LEVELS, "warn"],
                   help="this level and above: progress, info, warning, error (journalctl -p)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines as they are stored")
    p.add_argument("--tail", "-n", "--lines", type=int, metavar="N", dest="tail",
                   help="only the last N lines (then follow, with -f)")
    p.add_argument("--output", "-o", choices=["short", "json"], default="short", help="short (default) or json")
    p.add_argument("--agent", metavar="URL", help=f"agent base URL (default ${ENV_AGENT} or {DEFAULT_AGENT})")
    p.set_defaults(func=cmd_logs)


def format_record(rec: dict[str, Any], color: bool = False) -> str:
    """One record as one terminal line: time, frame/attempt, level, text (control characters replaced)."""
    t = float(rec.get("ts") or 0)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
    where = f"f{rec['frame']}" if rec.get("frame") is not None else "-"
    where += f" a{rec['attempt']}" if rec.get("attempt") is not None else ""
    level = str(rec.get("level", "info"))
    text = str(rec.get("text", "")).translate(_CONTROLS)
    if rec.get("folded"):
        text += f"  (+{rec['folded']} folded)"
    line = f"{stamp} {where:<10} {_TAGS.get(level, level)} {text}"
    if color and level in _COLORS:
        line = _COLORS[level] + line + "\x1b[0m"
    return line


def _get(url: str, token: str | None, timeout: float | None = 10.0) -> Any:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))    # the agent is local
    return opener.open(req, timeout=timeout)


def _pages(base: str, query: dict[str, Any], token: str | None) -> Iterator[dict[str, Any]]:
    after = 0
    while True:
        q = urllib.parse.urlencode({**query, "after": after, "limit": PAGE})
        with _get(f"{base}?{q}", token) as resp:
            doc = json.loads(resp.read())
        yield from doc["records"]
        if not doc.get("truncated"):
            return
        after = doc["next"]


def _sse(base: str, query: dict[str, Any], after: int, token: str | None) -> Iterator[dict[str, Any]]:
    q = urllib.parse.urlencode({**query, "after": after, "follow": 1})
    with _get(f"{base}?{q}", token, timeout=None) as resp:
        for raw in resp:
            if raw.startswith(b"data: "):
                yield json.loads(raw[6:])


def cmd_logs(args: argparse.Namespace) -> int:
    from kernel.listen import http_url

    key = "--agent" if args.agent else ENV_AGENT
    try:
        agent = http_url(args.agent or (os.environ.get(ENV_AGENT) or "").strip() or DEFAULT_AGENT, key, DEFAULT_AGENT)
        if not args.job or not args.job.isprintable() or len(args.job) > 4096 or any(
                "\ud800" <= c <= "\udfff" for c in args.job):
            raise ValueError(f"JOB {args.job!r}: not a job id (`renderwatch status` lists them)")
    except ValueError as e:
        print(f"renderwatch logs: {e}", file=sys.stderr)
        return 2
    base = agent + "/api/v1/jobs/" + urllib.parse.quote(args.job, safe="") + "/log"
    token = os.environ.get(ENV_TOKEN) or None
    query = {k: v for k, v in (("frame", args.frame), ("attempt", args.attempt),
                               ("level", "warning" if args.level == "warn" else args.level)) if v is not None}
    if args.tail is not None and args.tail < 0:
        print("renderwatch logs: --tail must be 0 or more", file=sys.stderr)
        return 2
    color = args.output == "short" and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")

    def show(rec: dict[str, Any]) -> None:
        line = json.dumps(rec, ensure_ascii=False) if args.output == "json" else format_record(rec, color)
        sys.stdout.write(line + "\n")

    last = 0
    try:
        records: Iterator[dict[str, Any]] | deque[dict[str, Any]] = _pages(base, query, token)
        if args.tail is not None:
            records = deque(records, maxlen=args.tail) if args.tail else deque()
        for rec in records:
            show(rec)
            last = max(last, int(rec["seq"]))
        if args.tail == 0 and args.follow:      # -n 0 -f: only what comes from now on
            for rec in _pages(base, query, token):
                last = max(last, int(rec["seq"]))
        sys.stdout.flush()
        if args.follow:
            for rec in _sse(base, query, last, token):
                show(rec)
                sys.stdout.flush()
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("detail") or f"HTTP {e.code}"
        except (ValueError, OSError, AttributeError):
            detail = f"HTTP {e.code}"
        print(f"renderwatch logs: {detail}", file=sys.stderr)
        return 2 if e.code == 400 else 1
    except (OSError, ValueError) as e:
        print(f"renderwatch logs: agent unreachable at {agent} ({e})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return 0
    return 0
