"""The console every command shares: the root logger at `--log-level`, and a stdout whose reader went away.

`renderwatch` (renderwatch.cli) and the healer's commands (healer/cli.py) call these; standard library only.
"""

from __future__ import annotations

import argparse
import sys


def setup_logging(args: argparse.Namespace) -> None:
    """The root logger at --log-level (once; a command that starts Blender first calls it itself)."""
    import logging

    if getattr(args, "_logging_set_up", False):
        return
    args._logging_set_up = True
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


EXIT_SIGPIPE = 141     # 128 + SIGPIPE: what a shell shows for a C tool whose reader went away


def silence_stdout() -> None:
    """Stdout's reader is gone (`renderwatch status | head`): point fd 1 at /dev/null, so that what is still
    buffered, and any later write, goes nowhere instead of raising BrokenPipeError again at exit (the
    way the Python docs handle SIGPIPE: the signal itself stays ignored, as the services need)."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):    # no real stdout (a test's StringIO): nothing to redirect
        pass
