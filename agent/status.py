"""`renderwatch status`: a live terminal view of the local agent (jobs, progress, ETA, memory, GPUs).

Plain text with ANSI only when stdout is a terminal; `--once` prints one frame and exits (pipes,
scripts, tests).

Usage::

    print(render_frame(fetch_jobs("http://127.0.0.1:9464")))
    run_status(None, once=True)
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from blender_hooks.settings import ENV_TOKEN  # noqa: F401 (names read from here)
from kernel.paths import DEFAULT_AGENT, ENV_AGENT

BAR = 20
MAX_ROWS = 20               # jobs shown; the rest are counted on one line


def fetch_jobs(base: str, token: str | None = None, timeout: float = 3.0) -> dict[str, Any]:
    req = urllib.request.Request(base.rstrip("/") + f"/api/v1/jobs?limit={MAX_ROWS}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # the agent is local
    with opener.open(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _num(v: Any) -> float | None:
    """A finite number from the agent's answer, or None: the view never does arithmetic on what a
    hostile event or a newer agent might put there (an infinity, a string)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


_CONTROL = dict.fromkeys([*range(0x20), 0x7f, *range(0x80, 0xa0)], "\ufffd")


def _text(v: Any, width: int | None = None) -> str:
    """Text for the terminal: job ids and scene names come from Blender and the network, so control
    characters (an escape sequence that clears the screen or sets the title) show as U+FFFD."""
    s = str(v if v is not None else "").translate(_CONTROL)
    return s[:width] if width is not None else s


def _dur(s: Any) -> str:
    s = _num(s)
    if s is None:
        return "-"
    s = max(0.0, s)
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(s + 0.5), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h < 10_000 else ">9999h"


def _bytes(v: Any) -> str:
    v = _num(v)
    if not v or v < 0:
        return "-"
    for unit in ("B", "K", "M", "G", "T", "P"):
        if v < 1024 or unit == "P":
            if v >= 1024:
                return ">1024P"
            return f"{v:.0f}{unit}" if unit in ("B", "K", "M") else f"{v:.1f}{unit}"
        v /= 1024
    return "-"


def bar(ratio: float, width: int = BAR) -> str:
    ratio = _num(ratio) or 0.0
    filled = int(round(max(0.0, min(1.0, ratio)) * width))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def render_frame(doc: dict[str, Any], color: bool = False) -> str:
    """The text of one refresh: a header, a line per job, a line per GPU."""
    bold, dim, reset = ("\x1b[1m", "\x1b[2m", "\x1b[0m") if color else ("", "", "")
    jobs = doc.get("jobs", [])
    total = max(int(_num(doc.get("jobs_total")) or 0), len(jobs))
    lines = [f"{bold}renderwatch status{reset}  host {_text(doc.get('host', '?'), 64)}  "
             f"{sum(1 for j in jobs if j.get('status') == 'running')} running, {min(len(jobs), MAX_ROWS)} shown  "
             f"{time.strftime('%H:%M:%S')}", ""]
    if not jobs:
        lines.append(f"{dim}no render jobs (start one with the hooks loaded){reset}")
    else:
        lines.append(f"{'JOB':<20} {'SCENE':<12} {'STATUS':<9} {'FRAMES':>9} {'PROGRESS':<27} {'ETA':>7} "
                     f"{'LAST':>7}  PEAK blender/rss/vram")
        for j in jobs[:MAX_ROWS]:
            frames = f"{_text(j.get('frames_done', 0), 9)}/{_text(j.get('frames_total', 0), 9)}"
            prog = min(1.0, max(0.0, _num(j.get("progress")) or 0.0))
            peaks = j.get("peaks") or {}
            mem = "/".join(_bytes(peaks.get(k)) for k in ("blender", "rss", "vram"))
            lines.append(f"{_text(j.get('job'), 20):<20} {_text(j.get('scene'), 12):<12} "
                         f"{_text(j.get('status'), 9):<9} {frames:>9} {bar(prog)} {prog * 100:4.0f}% "
                         f"{_dur(j.get('eta_seconds')):>7} {_dur(j.get('last_frame_seconds')):>7}  {mem}"
                         + (f"  {_text(j['error_type'], 32)}" if j.get("error_type") else ""))
        if total > MAX_ROWS:
            lines.append(f"{dim}... and {total - MAX_ROWS} more job(s) (GET /api/v1/jobs?limit=N){reset}")
    lines.append("")
    gpus = doc.get("gpus", [])
    if not gpus:
        lines.append(f"{dim}GPU: none (NVML not available){reset}")
    for g in gpus:
        if not g.get("ok"):
            lines.append(f"GPU {_text(g.get('gpu'), 8)} {_text(g.get('name'), 24)}: not answering")
            continue
        util = _num(g.get("utilization_ratio"))
        used, total = g.get("memory_used_bytes"), g.get("memory_total_bytes")
        vram = f"{_bytes(used)}/{_bytes(total)}" if total else "-"
        extra = []
        if _num(g.get("temperature_celsius")) is not None:
            extra.append(f"{g['temperature_celsius']:.0f}C")
        if _num(g.get("power_watts")) is not None:
            extra.append(f"{g['power_watts']:.0f}W")
        throttle = [_text(t, 32) for t in (g.get("throttle") or []) if t != "gpu_idle"]
        if throttle:
            extra.append("throttle: " + ",".join(throttle))
        lines.append(f"GPU {_text(g.get('gpu'), 8)} {_text(g.get('name'), 24):<24} util {bar(util or 0, 10)} "
                     f"{(util or 0) * 100:3.0f}%  VRAM {vram}  {'  '.join(extra)}")
    return "\n".join(lines) + "\n"


def run_status(agent: str | None, once: bool = False, interval: float = 1.0) -> int:
    from kernel.listen import http_url

    key = "--agent" if agent else ENV_AGENT
    raw = agent or (os.environ.get(ENV_AGENT) or "").strip() or DEFAULT_AGENT
    try:
        if raw.lower() == "off":
            raise ValueError(f"{key} is 'off' (the hooks spool only): give the agent's address with --agent")
        base = http_url(raw, key, DEFAULT_AGENT)
        if not (math.isfinite(interval) and 0.01 <= interval <= 3600):
            raise ValueError(f"--interval {interval!r}: give seconds between 0.01 and 3600")
    except ValueError as e:
        print(f"renderwatch status: {e}", file=sys.stderr)
        return 2
    token = os.environ.get(ENV_TOKEN) or None
    tty = sys.stdout.isatty()
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")   # a lone surrogate from an old agent is shown, not raised
    try:
        while True:
            try:
                text = render_frame(fetch_jobs(base, token), color=tty)
                ok = True
            except (OSError, ValueError) as e:
                detail = f"HTTP {e.code}" if isinstance(e, urllib.error.HTTPError) else str(e)
                text = f"renderwatch status: agent unreachable at {base} ({detail})\n"
                ok = False
            if once:
                sys.stdout.write(text)
                return 0 if ok else 1
            sys.stdout.write(("\x1b[H\x1b[2J" if tty else "") + text + ("" if tty else "\n"))
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
