"""`renderwatch demo`: a supervised render of a generated scene, with live metrics and traces.

Everything runs on embedded defaults, no other services: an agent in this process serves
/metrics and writes OTLP-JSON spans to a file, with a data folder and a spool of its own per run
(the host's spool belongs to the node's agent: the demo never takes its events); the healer supervises a real Blender rendering a
small generated scene with the hooks loaded; by default Blender is made to crash once (SIGSEGV at
one frame) so the demo shows a typed error, a restart from the last verified frame and a job that
still finishes with every frame rendered exactly once.

Usage::

    renderwatch demo                       # 12 frames, one injected crash, then a summary
    renderwatch demo --frames 24 --no-crash --serve   # keep the agent up afterwards (Ctrl-C to stop)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

from blender_hooks.settings import DEFAULT_AGENT_LISTEN, ENV_SPOOL_DIR
from kernel.listen import parse_listen
from kernel.paths import ENV_AGENT, ensure_private_dir, home, user_path

# Injected fault: SIGSEGV in a render_pre handler at one frame, only on the first attempt (a marker
# file beside the script remembers it happened). A Blender script, run by Blender, not imported here.
_CRASH_ONCE = """\
import bpy, ctypes, os
_marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crashed-once")
def _crash_once(scene, *args):
    if scene.frame_current == {frame} and not os.path.exists(_marker):
        open(_marker, "w").close()
        ctypes.string_at(0)   # segfault, like a real driver or add-on bug
bpy.app.handlers.render_pre.append(_crash_once)
"""

_SHOW = ("renderwatch_frames_rendered_total", "renderwatch_frame_render_seconds_count",
         "renderwatch_frame_render_seconds_sum", "renderwatch_frame_peak_memory_bytes_count",
         "renderwatch_job_progress_ratio", "renderwatch_job_attempts", "renderwatch_events_ingested_total",
         "renderwatch_gpu_available")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="supervised demo render with live metrics and traces (embedded defaults)",
                       description=__doc__)
    p.add_argument("--frames", type=int, default=12, help="frames in the generated scene (default 12)")
    p.add_argument("--crash-at", type=int, default=5, help="frame at which Blender crashes once (default 5)")
    p.add_argument("--no-crash", action="store_true", help="render without the injected crash")
    p.add_argument("--dir", help="working directory for the scene, frames and report (default <state>/demo)")
    p.add_argument("--listen", default=DEFAULT_AGENT_LISTEN,
                   help=f"agent address (default {DEFAULT_AGENT_LISTEN}; a free port is used if it is taken)")
    p.add_argument("--blender", help="Blender executable (default: blender on PATH)")
    p.add_argument("--serve", action="store_true", help="keep the agent serving after the render (Ctrl-C stops)")
    p.set_defaults(func=cmd_demo)


def _free(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    with socket.socket() as s:
        try:
            s.bind((host, int(port)))
            return listen
        except OSError:
            return f"{host}:0"


def _get(url: str) -> str:
    import urllib.request  # here, not at import: every `renderwatch` command imports this module

    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode("utf-8", "replace")


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.app import run_in_thread
    from agent.config import ConfigError, load_config
    from renderwatch.cli import main as cli_main
    from renderwatch.scenes import create_demo_scene, find_blender

    blender = find_blender(args.blender)
    if blender is None:
        print("renderwatch demo: no Blender found: install Debian's `blender` (./bootstrap demo does) "
              "or pass --blender EXE", file=sys.stderr)
        return 2
    if not 1 <= args.frames <= 10_000 or (not args.no_crash and not 1 <= args.crash_at <= args.frames):
        print("renderwatch demo: --frames must be within 1..10000 and --crash-at within 1..--frames",
              file=sys.stderr)
        return 2
    try:
        parse_listen(args.listen, "--listen")
        workdir = user_path(args.dir, "--dir").resolve() if args.dir is not None else home() / "demo"
        workdir = ensure_private_dir(workdir)
        run_dir = ensure_private_dir(workdir / time.strftime("run-%Y%m%d-%H%M%S"))
    except ValueError as e:        # ConfigError too
        print(f"renderwatch demo: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"renderwatch demo: cannot make the demo's folder {e.filename or args.dir!r}: {e.strerror}; "
              "give --dir a folder this account can write", file=sys.stderr)
        return 2
    print(f"renderwatch demo: working in {run_dir}")

    print(f"[1/4] generating a {args.frames}-frame Cycles scene with {blender}")
    try:
        scene = create_demo_scene(run_dir / "demo.blend", frames=args.frames, samples=16, width=160, height=90,
                                  blender=blender)
    except RuntimeError as e:
        print(f"renderwatch demo: {blender} could not make the demo scene: {e}\n"
              "Check that it is Blender (`--blender EXE`, or Debian's `blender`: ./bootstrap demo installs it)",
              file=sys.stderr)
        return 1

    print("[2/4] starting the agent (embedded: spans go to a local OTLP-JSON file)")
    env = dict(os.environ)
    try:
        # A data directory per run: the summary then shows this run, not every demo before it. A spool
        # per run too: the host's spool is the node agent's (events waiting there while it is down
        # are its own), and the hooks and the healer below spool here.
        cfg = load_config(env, overrides={"listen": _free(args.listen), "job_grace_seconds": 3600,
                                          "data_dir": str(run_dir / "agent"), "spool_dir": str(run_dir / "spool")})
    except ConfigError as e:
        print(f"renderwatch demo: agent config: {e}", file=sys.stderr)
        return 2
    agent = run_in_thread(cfg)
    os.environ[ENV_AGENT] = agent.url            # the hooks inside Blender report here
    os.environ[ENV_SPOOL_DIR] = str(cfg.spool_dir)   # ... and spool here (the healer's events too)
    print(f"      page: {agent.url}/   metrics: {agent.url}/metrics   jobs: {agent.url}/api/v1/jobs")

    blender_args: list[str] = []
    if not args.no_crash:
        fault = run_dir / "crash_once.py"
        fault.write_text(_CRASH_ONCE.format(frame=int(args.crash_at)))
        blender_args = ["--python", str(fault)]
        print(f"[3/4] supervised render; Blender will segfault once at frame {args.crash_at}")
    else:
        print("[3/4] supervised render")
    report_path = run_dir / "report.json"
    argv = ["render", str(scene), "--frames", f"1-{args.frames}", "--blender", blender,
            "--output", str(run_dir / "frames" / "f_####"), "--report", str(report_path)]
    if blender_args:
        argv += ["--", *blender_args]
    try:
        status = cli_main(argv)
        _summary(agent.url, cfg.data_dir, report_path)
        if args.serve:
            print(f"serving {agent.url}/ (the page) and /metrics (Ctrl-C to stop); try `renderwatch status --agent {agent.url}`")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        agent.stop()
    return status


def _summary(url: str, data_dir: Path, report_path: Path) -> None:
    print("[4/4] what renderwatch saw")
    time.sleep(2.5)  # one batch-span-processor delay, so the frame spans are on disk
    try:
        report = json.loads(report_path.read_text())
        counts = report.get("frame_render_counts", {})
        twice = sorted(int(f) for f, n in counts.items() if n > 1)
        print(f"  report: {report['status']}, {len(report['frames_completed'])}/{len(report['frames_requested'])} "
              f"frames, {report['restarts']} restart(s); frames rendered twice: {twice or 'none'}")
        for a in report.get("attempts", []):
            print(f"    attempt {a['attempt']}: frames {a['frames_planned'][:1]}..{a['frames_planned'][-1:]} "
                  f"-> {a['error_type']}: {a['error_summary'] or ''}"[:160])
    except (OSError, ValueError, KeyError) as e:
        print(f"  report unavailable: {e}")
    try:
        lines = [ln for ln in _get(url + "/metrics").splitlines()
                 if ln.startswith(_SHOW) and not ln.startswith("#")]
        print("  metrics (excerpt):")
        for ln in lines[:14]:
            print(f"    {ln}")
    except OSError as e:
        print(f"  metrics unavailable: {e}")
    spans = 0
    files = sorted((data_dir / "traces").glob("spans-*.jsonl"))
    for f in files:
        for line in f.read_text(errors="replace").splitlines():
            try:
                req = json.loads(line)
            except ValueError:
                continue
            for rs in req.get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    spans += len(ss.get("spans", []))
    where = files[-1] if files else data_dir / "traces"
    print(f"  traces: {spans} spans (render.job, render.frame, render.phase.*) in {where}")
