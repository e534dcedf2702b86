"""`renderwatch agent` (the per-host telemetry service) and `renderwatch status` (a live view of it).

Usage::

    renderwatch agent --listen 127.0.0.1:9464 --data-dir ~/.local/state/renderwatch/agent
    renderwatch status                # refreshes every second; --once prints one frame (pipes too)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from agent.config import ConfigError, load_config
from blender_hooks.settings import DEFAULT_AGENT, DEFAULT_AGENT_LISTEN, ENV_AGENT


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("agent", help="per-host telemetry agent: hook events -> Prometheus metrics + OTLP traces",
                       description="Ingest Blender hook events (HTTP and the local spool), sample processes and "
                                   "GPUs, serve /metrics, /healthz, /api/v1/jobs and export OTLP traces.")
    a.add_argument("--listen", metavar="HOST:PORT", help=f"address to serve on (default {DEFAULT_AGENT_LISTEN}, "
                   "$RENDERWATCH_AGENT_LISTEN); a non-loopback address needs $RENDERWATCH_TOKEN")
    a.add_argument("--config", metavar="FILE", help="TOML file with an [agent] table ($RENDERWATCH_CONFIG)")
    a.add_argument("--data-dir", metavar="DIR", help="journal and trace files (default <state home>/agent)")
    a.add_argument("--spool-dir", metavar="DIR", help="the hooks' spool to catch up from (default <state home>/spool)")
    a.set_defaults(func=cmd_agent)

    s = sub.add_parser("status", help="live terminal view of the local agent's jobs and GPUs")
    s.add_argument("--agent", metavar="URL", help=f"agent base URL (default ${ENV_AGENT} or {DEFAULT_AGENT})")
    s.add_argument("--once", action="store_true", help="print one frame and exit (for pipes and scripts)")
    s.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_status)

    from agent.logcli import register as register_logs
    register_logs(sub)


def cmd_agent(args: argparse.Namespace) -> int:
    from agent.app import serve
    from agent.spool import SpoolBusy
    from blender_hooks.statedir import UnsafeStateDir
    try:
        cfg = load_config(path=args.config, overrides={"listen": args.listen, "data_dir": args.data_dir,
                                                       "spool_dir": args.spool_dir})
    except ConfigError as e:
        print(f"renderwatch agent: {e}", file=sys.stderr)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(cfg, stop)

    try:
        asyncio.run(main())
    except SpoolBusy as e:
        print(f"renderwatch agent: {e}", file=sys.stderr)
        return 2
    except UnsafeStateDir as e:    # its data or spool folder: a link, or another account's
        print(f"renderwatch agent: {e}", file=sys.stderr)
        return 2
    except OSError as e:           # address in use, permission denied...
        print(f"renderwatch agent: cannot listen on {cfg.listen}: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from agent.status import run_status
    return run_status(args.agent, once=args.once, interval=args.interval)
