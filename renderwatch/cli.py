"""The `renderwatch` console command: one entry point, a subcommand per capability.

Each package contributes its subcommands through a `register(subparsers)` function in its own
`cli.py`; a subparser sets `func` to a callable taking the parsed namespace and returning the
exit status.

Usage::

    renderwatch agent --listen 127.0.0.1:9464
    renderwatch render scene.blend --frames 1-10
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import sys

from blender_hooks.settings import ConfigError
from healer.diagnosis.exits import EXIT_INTERNAL
from kernel.console import EXIT_SIGPIPE, setup_logging, silence_stdout
from kernel.version import __version__

# Packages that contribute subcommands, in help order. A package whose cli module is missing
# (partial install) is skipped rather than breaking every other command.
_CLI_MODULES = ("renderwatch.hooks", "agent.cli", "healer.cli", "healer.service.client", "renderwatch.classify",
                "renderwatch.demo")


# Which module registers each command: a farm runs `renderwatch exec` once per frame, so only the
# command's own module is imported for it (the others' imports cost tens of milliseconds per launch).
_COMMANDS = {"hooks": "renderwatch.hooks", "agent": "agent.cli", "status": "agent.cli", "logs": "agent.cli", "render": "healer.cli",
             "exec": "healer.cli", "healer": "healer.cli", "jobs": "healer.service.client",
             "classify": "renderwatch.classify", "demo": "renderwatch.demo"}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="renderwatch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"renderwatch {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    command = next((a for a in (argv or []) if not a.startswith("-")), None)
    modules = [_COMMANDS[command]] if command in _COMMANDS and "-h" not in (argv or [])[:1] else _CLI_MODULES
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        # The process ends with the command: the interpreter's final garbage collections have nothing
        # worth collecting, and cost ~35 ms of a farm task (a full pass over every object). Registered
        # first, so it runs after every other exit handler (logging, the incident dispatcher).
        atexit.register(gc.freeze)
    args_in = sys.argv[1:] if argv is None else argv
    try:
        return _run(args_in)
    except BrokenPipeError:          # stdout closed early: stop quietly, no traceback
        silence_stdout()
        return EXIT_SIGPIPE
    finally:
        try:
            sys.stdout.flush()       # here (also after --help's exit), not as "Exception ignored" at exit
        except BrokenPipeError:      # the command's work is done: its status stands
            silence_stdout()
        except (OSError, ValueError):
            pass


def _run(args_in: list[str]) -> int:
    parser = build_parser(args_in)
    args = parser.parse_args(args_in)
    if not getattr(args, "early_start", False):
        setup_logging(args)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise                        # stdout's reader went away: main() ends quietly with 141
    except ConfigError as e:
        # a bad value that reached a loader the command did not guard itself: the message names it
        print(f"renderwatch {args.command}: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        # A bug, not the user's input: one line that says so, the traceback only when asked for
        # (tests/renderwatch/test_cli_hostile.py walks every command and flag and fails on this line).
        if str(args.log_level).upper() == "DEBUG":
            raise
        print(f"renderwatch {args.command}: internal error: {type(e).__name__}: {e} (a bug in renderwatch: "
              "run again with --log-level DEBUG for the traceback, and report it)", file=sys.stderr)
        return EXIT_INTERNAL


def main_exec_blender(argv: list[str] | None = None) -> int:
    """`renderwatch-exec-blender ARGS...`: the Blender in $RENDERWATCH_BLENDER (default `blender`), run
    with ARGS under `renderwatch exec`. Point a farm's Blender path at it (Deadline Cloud's
    BLENDER_EXECUTABLE, a Flamenco or OpenCue Blender command). Here, not beside the supervise-only
    mode it often ends in: a per-frame task's Blender starts before the supervisor's modules load."""
    import os

    from blender_hooks.settings import ENV_BLENDER

    args = sys.argv[1:] if argv is None else argv
    blender = os.environ.get(ENV_BLENDER) or "blender"
    if os.path.basename(blender) == "renderwatch-exec-blender":
        print("renderwatch-exec-blender: RENDERWATCH_BLENDER names this wrapper; set it to Blender itself",
              file=sys.stderr)
        return 2
    if argv is None:
        atexit.register(gc.freeze)      # as main() does for the process it ends
    return main(["exec", "--", blender, *args])


if __name__ == "__main__":
    sys.exit(main())
