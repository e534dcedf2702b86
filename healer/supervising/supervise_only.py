"""Supervise a Blender that someone else drives: no frames in its command line, nothing to restart.

The Deadline Cloud adaptor starts `$BLENDER_EXECUTABLE --background --python-exit-code 1 --python
blender_client.py --python-use-system-env` and renders frame after frame over a socket; a restart
would break its session. So here renderwatch only watches: the hooks and the frame marker are loaded
(the agent still counts every frame), Blender's output passes through unchanged (the adaptor reads
`BlenderClient: Finished Rendering Frame N` from it), the exit is classified and reported, and
Blender dies with its supervisor. The exit status is Blender's (128+N when a signal N killed it).

Usage::

    code = await supervise_only(["blender", "--background", "--python", "client.py"], env=os.environ)
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from blender_hooks.farm import FarmIdentity
from healer.diagnosis.classify import LogScanner
from healer.diagnosis.crashfile import read_crash_file
from healer.diagnosis.errors import RenderError
from healer.supervising.launch import MARKER_EXPR, ProcessLauncher, attempt_env, exit_status, hooks_startup
from healer.supervising.progress import parse_line
from healer.supervising.seams import IncidentSink, Launcher, NoIncidents
from renderwatch.files import write_atomic


def supervised_argv(argv: Sequence[str], hooks: str | None) -> list[str]:
    """Blender's own command line with the frame marker and the hooks first (before any of its scripts)."""
    exe, *rest = argv
    return [exe, "--python-expr", MARKER_EXPR, *(["--python", hooks] if hooks else []), *rest]


async def supervise_only(argv: Sequence[str], *, env: dict[str, str], incidents: IncidentSink | None = None,
                         echo: Callable[[str], None] | None = None, say: Callable[[str], None] | None = None,
                         launcher: Launcher | None = None, farm: FarmIdentity | None = None,
                         report: str | None = None, job: str | None = None) -> int:
    incidents = incidents or NoIncidents()
    launcher = launcher or ProcessLauncher()
    say = say or (lambda text: print(f"renderwatch: {text}", file=sys.stderr, flush=True))
    job = job or f"supervised-{uuid.uuid4().hex[:12]}"
    scanner = LogScanner()
    saved: list[str] = []
    crash_file: list[str] = []

    def on_line(line: str, _now: float) -> None:
        if echo is not None:
            echo(line)
        scanner.feed(line)
        ev = parse_line(line)
        if ev.kind == "saved" and ev.path:
            saved.append(ev.path)
        elif ev.kind == "crash_file" and ev.path:
            crash_file.append(ev.path)

    info: dict[str, Any] = {"job": job, "scene": "", "mode": "supervise-only"}
    if farm is not None:
        info["farm"] = farm.to_dict()
    incidents.job_started(info)
    t0 = time.time()
    proc = await launcher.start(supervised_argv(argv, hooks_startup()), env=attempt_env(job, 1, env),
                                on_line=on_line)
    rc = await proc.wait()
    code, sig = exit_status(rc)
    path = crash_file[-1] if crash_file else scanner.crash_file
    error: RenderError = scanner.finish(code, sig, crash_file=path,
                                        crash_text=read_crash_file(path) if path else None)
    info.update(frames_completed=len(saved), duration_s=time.time() - t0, log_tail=list(proc.tail))
    if error.type != "ok" and error.fatal:
        say(f"Blender ended: {error.type}: {error.summary}")
        incidents.emit("render.crashed", {**info, "message": error.summary}, error)
    elif error.type != "ok":
        say(f"warning: {error.type}: {error.summary}")
        incidents.emit("render.warning", {**info, "message": error.summary}, error)
    else:
        incidents.emit("render.completed", {**info, "message": f"{len(saved)} frame(s) saved"})
    if report:
        doc = {"mode": "supervise-only", "job": job, "exit_code": (code or 0) if sig is None else 128 + sig,
               "frames_saved": saved, "error": error.to_dict()}
        write_atomic(Path(report), (json.dumps(doc, indent=2) + "\n").encode(), sync=False)
    return (code or 0) if sig is None else 128 + sig


def main_exec_blender(argv: list[str] | None = None) -> int:
    """`renderwatch-exec-blender ARGS...`: the Blender in $RENDERWATCH_BLENDER (default `blender`), run
    with ARGS under `renderwatch exec`. Point a farm's Blender path at it (Deadline Cloud's
    BLENDER_EXECUTABLE, a Flamenco or OpenCue Blender command)."""
    from blender_hooks.settings import ENV_BLENDER
    from renderwatch.cli import main as renderwatch_main

    args = sys.argv[1:] if argv is None else argv
    blender = os.environ.get(ENV_BLENDER) or "blender"
    if os.path.basename(blender) == "renderwatch-exec-blender":
        print("renderwatch-exec-blender: RENDERWATCH_BLENDER names this wrapper; set it to Blender itself",
              file=sys.stderr)
        return 2
    return renderwatch_main(["exec", "--", blender, *args])
