"""`renderwatch render`, `renderwatch exec`, `renderwatch healer` (and `classify`, from the classifier).

Usage::

    renderwatch render shot.blend --frames 1-240 --report report.json -- --python pipeline.py
    renderwatch exec -- blender -b shot.blend -s 1 -e 240 -a        # drop-in for a render manager
    renderwatch healer --listen 127.0.0.1:9465                        # per-host service with an HTTP API
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from blender_hooks.settings import DEFAULT_HEALER_LISTEN, ENV_SENTRY_DSN, ENV_WEBHOOK_URL
from healer.diagnosis.exits import EXIT_USAGE
from healer.supervising.frames import FrameSpecError, parse_frames
from kernel.console import setup_logging

TYPE_CHECKING = False   # not typing's: importing typing costs a farm task ~9 ms before its Blender starts
if TYPE_CHECKING:    # the config (and the supervisor) load after an exec's Blender has started
    from healer.config import HealerConfig
    from healer.supervising.launch import ProcessLauncher
    from healer.supervising.spawn import Prestarted


def _render_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", help="frames to render: 1-240, 1,5,9-12 or 1-20x2 (default: the scene's range)")
    p.add_argument("--output", help="output pattern, as Blender's -o (#### = frame digits, // = beside the .blend)")
    p.add_argument("--blender", help="Blender executable (default $RENDERWATCH_BLENDER or blender)")
    p.add_argument("--stall-timeout", type=float, metavar="S",
                   help="kill and restart Blender after S seconds without progress (default: adaptive)")
    p.add_argument("--max-restarts", type=int, metavar="N", help="restarts allowed per policy window")
    p.add_argument("--report", metavar="FILE.json", help="write the JSON report here")
    p.add_argument("--strict", action="store_true",
                   help="fail the job on reported errors too (Python errors, missing textures)")
    p.add_argument("--job", help="job id (default: derived from the command and the farm's job and task, so a "
                   "retry resumes)")
    p.add_argument("--fresh", action="store_true", help="forget verified frames and render every frame again")
    p.add_argument("--quiet", action="store_true", help="no live progress, only the final summary")
    p.add_argument("--config", help="TOML config file (default $RENDERWATCH_HEALER_CONFIG)")


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("render", help="render a .blend under supervision: heal crashes, hangs and kills",
                       description="Render SCENE headless with Blender, supervised. Arguments after `--` go to "
                                   "Blender unchanged. Exit status 0 iff every frame has a verified output.")
    r.add_argument("scene", metavar="SCENE.blend")
    _render_options(r)
    r.add_argument("--blender-output", action="store_true",
                   help="pass Blender's own output through to stdout (renderwatch's lines stay on stderr)")
    r.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    r.set_defaults(func=cmd_render, early_start=True)   # sets up logging once its Blender has started

    e = sub.add_parser("exec", help="drop-in `blender` wrapper: renderwatch exec -- blender ARGS...",
                       description="Parse a blender command line (scene, -s/-e/-f/-a/-o) and run it supervised.")
    _render_options(e)
    e.add_argument("--no-blender-output", dest="blender_output", action="store_false",
                   help="do not pass Blender's output through (by default it goes to stdout unchanged, as "
                        "Blender's would: a farm's task log shows it)")
    e.set_defaults(blender_output=True)
    e.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    e.set_defaults(func=cmd_exec, early_start=True)     # sets up logging once its Blender has started

    h = sub.add_parser("healer", help="the supervisor as a per-host service with an HTTP API")
    h.add_argument("--listen", help=f"host:port (default {DEFAULT_HEALER_LISTEN})")
    h.add_argument("--concurrency", type=int, help="renders at once (default 2)")
    h.add_argument("--config", help="TOML config file (default $RENDERWATCH_HEALER_CONFIG)")
    h.set_defaults(func=cmd_healer)


def _split_rest(rest: Sequence[str]) -> tuple[list[str], list[str]]:
    rest = list(rest)
    if "--" in rest:
        i = rest.index("--")
        return rest[:i], rest[i + 1:]
    return rest, []


def _reparse(args: argparse.Namespace, pre: list[str]) -> argparse.Namespace:
    """Options given after SCENE (argparse's REMAINDER keeps them): parse them into `args`."""
    if pre:
        p = argparse.ArgumentParser(prog="renderwatch render", add_help=False, argument_default=argparse.SUPPRESS)
        _render_options(p)
        p.add_argument("--blender-output", dest="blender_output", action="store_true")
        p.add_argument("--no-blender-output", dest="blender_output", action="store_false")
        p.parse_args(pre, namespace=args)
    return args


def _bad_option(args: argparse.Namespace) -> str | None:
    """What is wrong with an option whose problem would otherwise surface only after the render (the
    report's path) or as a traceback (the job id): checked before any Blender starts."""
    import os

    from kernel.paths import check_job_id

    try:
        if args.job is not None:
            check_job_id(args.job)
    except ValueError as e:
        return str(e)
    if args.report:
        report = os.path.abspath(args.report)
        folder = os.path.dirname(report)
        if os.path.isdir(report):
            return f"--report {args.report!r} is a folder; name a file (for example report.json)"
        while not os.path.lexists(folder) and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)            # made at the end, as Blender makes its output folder
        if not os.path.isdir(folder):
            return f"--report {args.report!r}: {folder} is not a folder"
        if not os.access(folder, os.W_OK):
            return f"--report {args.report!r}: this account cannot write in {folder}"
    return None


def _config(args: argparse.Namespace) -> HealerConfig:
    from healer.config import load_config

    return load_config(getattr(args, "config", None), overrides={
        "blender": args.blender, "stall_timeout": args.stall_timeout, "max_restarts": args.max_restarts})


def cmd_render(args: argparse.Namespace) -> int:
    pre, blender_args = _split_rest(args.rest)
    _reparse(args, pre)
    try:
        frames = tuple(parse_frames(args.frames)) if args.frames else None
    except FrameSpecError as e:
        print(f"renderwatch render: {e}", file=sys.stderr)
        return EXIT_USAGE
    bad = _bad_option(args)
    if bad is not None:
        print(f"renderwatch render: {bad}", file=sys.stderr)
        return EXIT_USAGE
    from kernel.paths import state_problem

    problem = state_problem()
    if problem is not None:
        print(f"renderwatch render: cannot keep state ({problem}); set RENDERWATCH_HOME to a folder this "
              "account can write", file=sys.stderr)
        return EXIT_USAGE
    early = None
    blender = _known_blender(args)
    if blender is not None:
        early = _prestart(blender, args.scene, frames, args.output, blender_args, ())
    setup_logging(args)
    from blender_hooks.statedir import UnsafeStateDir

    try:
        return _run(args, args.scene, frames, args.output, blender_args, prestarted=early)
    except UnsafeStateDir as e:          # the job's own folder (healer/jobs/<job>): a link, another account's
        print(f"renderwatch render: cannot keep state ({e})", file=sys.stderr)
        return EXIT_USAGE


def _known_blender(args: argparse.Namespace) -> str | None:
    """The Blender a render will run, where the command line and environment say it without the TOML
    config (flags > environment > config file > "blender"); None when only the config file can."""
    import os

    from blender_hooks.settings import ENV_BLENDER, ENV_HEALER_CONFIG

    if args.blender:
        return str(args.blender)
    if os.environ.get(ENV_BLENDER):
        return os.environ[ENV_BLENDER]
    return None if (args.config or os.environ.get(ENV_HEALER_CONFIG)) else "blender"


def cmd_exec(args: argparse.Namespace) -> int:
    from healer.supervising.blender_argv import BlenderArgvError, drives_itself, parse_blender_argv

    if "--" not in args.rest and args.rest and not args.rest[0].startswith("-"):
        pre: list[str] = []                    # `renderwatch exec blender ARGS...`: the `--` is optional
        argv = list(args.rest)
    else:
        pre, argv = _split_rest(args.rest)
    _reparse(args, pre)
    if not argv:
        print("renderwatch exec: usage: renderwatch exec [OPTIONS] -- blender ARGS...", file=sys.stderr)
        return EXIT_USAGE
    bad = _bad_option(args)
    if bad is not None:
        print(f"renderwatch exec: {bad}", file=sys.stderr)
        return EXIT_USAGE
    from kernel.paths import state_problem

    problem = state_problem()
    if problem is not None:
        return _bare_blender(argv, problem)
    if drives_itself(argv):
        setup_logging(args)
        return _supervise_only(args, argv)
    try:
        parsed = parse_blender_argv(argv)
    except BlenderArgvError as e:
        print(f"renderwatch exec: {e}", file=sys.stderr)
        return EXIT_USAGE
    if parsed.relative and not args.frames:
        print(f"renderwatch exec: {parsed.relative} is a frame relative to the scene's range, which Blender "
              "resolves as it reads its command line: running it as given, watched and reported but not "
              "resumed frame by frame (give absolute frames, e.g. -s 1 -e 240, for that)", file=sys.stderr)
        setup_logging(args)
        return _supervise_only(args, argv)
    if args.blender is None:
        args.blender = parsed.blender
    try:
        frames = tuple(parse_frames(args.frames)) if args.frames else parsed.frames
    except FrameSpecError as e:
        print(f"renderwatch exec: {e}", file=sys.stderr)
        return EXIT_USAGE
    output = args.output or parsed.output
    early = _prestart(args.blender, parsed.scene, frames, output, parsed.passthrough, parsed.after)
    setup_logging(args)
    from blender_hooks.statedir import UnsafeStateDir

    try:
        return _run(args, parsed.scene, frames, output, parsed.passthrough, after=parsed.after, prestarted=early,
                    frame_range=(parsed.range_start, parsed.range_end, parsed.range_step))
    except UnsafeStateDir as e:          # found as the job's folder opened: nothing was written in it
        return _bare_blender(argv, str(e))


def _bare_blender(argv: list[str], problem: str) -> int:
    """A farm task must never fare worse under renderwatch than under bare Blender: with no state folder
    it can write, renderwatch cannot keep a ledger, so it says so loudly and becomes Blender itself
    (exec: the same process, so the farm's signals, accounting and exit status are Blender's own)."""
    import os

    print(f"renderwatch exec: WARNING: cannot keep state ({problem}): running Blender unsupervised, as bare "
          "Blender would run (no resume, no restart, no frame checks). Fix: set RENDERWATCH_HOME to a folder "
          "this account can write.", file=sys.stderr, flush=True)
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        print(f"renderwatch exec: cannot start {argv[0]!r}: {e.strerror or e}", file=sys.stderr)
    return 127


def _prestart(blender: str, scene: str, frames: Sequence[int] | None, output: str | None,
              user_args: Sequence[str], after: Sequence[str]) -> Prestarted | None:
    """A farm task's Blender started now, held at its gate (spawn.py), as the job's first attempt would
    start it: its start-up overlaps the supervisor's (modules, lock, ledger, assets). The first launch
    takes it when it is exactly that Blender, and it is killed at the gate otherwise (a resumed job, a
    refused request). Only with the frames on the command line (a scene's own range needs the scene)."""
    if not frames:
        return None
    import os

    from healer.supervising.spawn import LaunchSpec, output_arg, prestart

    return prestart(LaunchSpec(blender=blender, scene=os.path.abspath(scene), frames=sorted(frames),
                               output=output_arg(output), user_args=tuple(user_args), after_render=tuple(after)))


def _supervise_only(args: argparse.Namespace, argv: list[str]) -> int:
    """No frames on the command line (a farm's client drives Blender): watch, pass through, report."""
    from blender_hooks.farm import farm_identity
    from healer.config import ConfigError
    from healer.supervising.supervise_only import supervise_only

    try:
        cfg = _config(args)
    except ConfigError as e:
        print(f"renderwatch: config: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.blender_output:
        sys.stdout.reconfigure(line_buffering=True, errors="surrogateescape")  # type: ignore[union-attr]
    incidents = _incidents(cfg)
    import asyncio

    try:
        return asyncio.run(supervise_only(argv, env=dict(cfg.env), incidents=incidents,
                                          echo=_echo if args.blender_output else None,
                                          farm=farm_identity(cfg.env), report=args.report, job=args.job))
    except OSError as e:
        print(f"renderwatch exec: cannot start {argv[0]!r}: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        _close(incidents)


def _close(incidents) -> None:
    """Drain and stop the incident dispatcher (webhooks not delivered by then stay in the outbox)."""
    close = getattr(incidents, "close", None)
    if close:
        close(timeout=5)


def _echo(line: str) -> None:
    try:
        sys.stdout.write(line + "\n")
    except BrokenPipeError:
        # The task log's reader went away: the render goes on (its status still says how it went), its
        # output no longer passed through. Blender itself would die of SIGPIPE; a healthy render is
        # not stopped for a log.
        from kernel.console import silence_stdout

        silence_stdout()


def _run(args: argparse.Namespace, scene: str, frames: tuple[int, ...] | None, output: str | None,
         blender_args: Sequence[str], *, after: Sequence[str] = (), prestarted: Prestarted | None = None,
         frame_range: tuple[int | None, int | None, int] = (None, None, 1)) -> int:
    from healer.config import ConfigError
    from healer.supervising.launch import ProcessLauncher

    launcher = ProcessLauncher(prestarted)
    try:
        return _supervise(args, scene, frames, output, blender_args, launcher, after=after, frame_range=frame_range)
    except ConfigError as e:
        print(f"renderwatch: config: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        launcher.discard_prestarted()


def _supervise(args: argparse.Namespace, scene: str, frames: tuple[int, ...] | None, output: str | None,
               blender_args: Sequence[str], launcher: ProcessLauncher, *, after: Sequence[str],
               frame_range: tuple[int | None, int | None, int]) -> int:
    import signal
    import time

    from blender_hooks.statedir import UnsafeStateDir
    from healer.supervising.progress import ProgressDisplay
    from healer.supervising.supervisor import RenderRequest, RequestError, Supervisor

    cfg = _config(args)
    policy = cfg.policy()
    from blender_hooks.farm import farm_identity

    req = RenderRequest(scene=scene, frames=frames, output=output, blender=cfg.blender,
                        blender_args=tuple(blender_args), stall_timeout=cfg.stall_timeout, strict=args.strict,
                        job=args.job, fresh=args.fresh, farm=farm_identity(cfg.env), after_args=tuple(after),
                        range_start=frame_range[0], range_end=frame_range[1], range_step=frame_range[2])
    echo = None
    if getattr(args, "blender_output", False):
        # Blender's lines unchanged on stdout, renderwatch's own (marked "renderwatch:") on stderr.
        sys.stdout.reconfigure(line_buffering=True, errors="surrogateescape")  # type: ignore[union-attr]
        echo = _echo
    display = ProgressDisplay(total=len(frames or ()), stream=sys.stderr, quiet=args.quiet,
                              tty=False if echo else None)
    incidents = _incidents(cfg)
    # No metrics registry here: a CLI render serves no /metrics (the healer service does).
    sup = Supervisor(req, policy=policy, incidents=incidents, metrics=None, display=display,
                     env=cfg.env, kill_grace_s=cfg.kill_grace_s, probe_interval_s=cfg.probe_interval_s,
                     sampler=_sampler(), echo=echo, launcher=launcher)
    t0 = time.monotonic()
    try:
        sup.begin()             # the first Blender starts here, before the event loop is even imported
    except RequestError as e:
        _close(incidents)
        print(f"renderwatch: {e}", file=sys.stderr)
        return EXIT_USAGE
    except UnsafeStateDir:                # the caller refuses (render) or runs Blender bare (exec)
        _close(incidents)
        raise
    finally:
        launcher.discard_prestarted()     # begin()'s first launch took it, or nothing will
    # asyncio here: it and what the supervisor's run() imports load while Blender starts up
    import asyncio

    async def main():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, sup.cancel)
            except (NotImplementedError, RuntimeError):
                pass
        return await sup.run()

    try:
        result = asyncio.run(main())
    except RequestError as e:
        print(f"renderwatch: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        _close(incidents)
    from healer.supervising.report import build_report, summary, write_report

    led = result.ledger
    display.total = len(led.frames_requested)
    display.finish(summary(led, time.monotonic() - t0))
    if args.report:
        try:
            write_report(args.report, build_report(led, result.exit_code))
        except OSError as e:         # the frames are rendered and kept: say why the report is missing
            print(f"renderwatch: cannot write the report {args.report!r}: {e.strerror}; the job's ledger "
                  f"{led.path} holds the same record", file=sys.stderr)
    if result.exit_code == 0:
        sup.delivered()
    return result.exit_code


# What turns incidents on (healer.incidents reads them); without any, the CLI skips loading the Sentry
# SDK and the webhook machinery: that import is a measurable part of a short render's overhead.
_INCIDENT_ENV = (ENV_SENTRY_DSN, ENV_WEBHOOK_URL)


def _incidents(cfg: HealerConfig):
    if not cfg.incidents and not any(cfg.env.get(k) for k in _INCIDENT_ENV):
        return None                       # the supervisor's no-op
    try:
        from healer.incidents.dispatch import Incidents
    except ImportError:
        return None
    try:
        return Incidents.from_config(cfg.incidents, env=cfg.env)
    except Exception as e:  # incidents must never stop a render
        print(f"renderwatch: incidents disabled: {e}", file=sys.stderr)
        return Incidents.noop()


def _sampler():
    from healer.supervising.probes import ResourceSampler
    return ResourceSampler()


def cmd_healer(args: argparse.Namespace) -> int:
    import dataclasses

    from aiohttp import web

    from healer.config import ConfigError, load_config
    from healer.service.app import create_app, parse_listen
    from healer.service.auth import ensure_token

    try:
        cfg = load_config(args.config, overrides={"listen": args.listen, "concurrency": args.concurrency})
        host, port = parse_listen(cfg)            # off loopback only with the operator's token
        token_file = None
        if not cfg.token:                         # never open: a token only this account can read
            made = ensure_token(cfg.env)
            cfg, token_file = dataclasses.replace(cfg, token=made.value), made.path
        app = create_app(cfg, token_file=token_file)
    except (ConfigError, ValueError, OSError) as e:
        print(f"renderwatch healer: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"renderwatch healer: listening on http://{host}:{port}", file=sys.stderr)
    if token_file is not None:
        print(f"renderwatch healer: API token in {token_file} (this account only; `renderwatch jobs` reads it)",
              file=sys.stderr)
    try:
        web.run_app(app, host=host, port=port, print=None, handle_signals=True)
    except OSError as e:           # the address is taken, or not this host's
        print(f"renderwatch healer: cannot listen on {host}:{port}: {e.strerror or e}; stop what holds it, or "
              "give another address with --listen", file=sys.stderr)
        return EXIT_USAGE
    return 0
