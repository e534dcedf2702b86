"""One attempt's Blender started (spawn.py: the argv, the environment, the process, the gate), held at
its gate until the supervisor has written its pid into the ledger, then let go. Nothing here writes the
ledger: the supervisor, its one writer, records what `start_attempt` returns.

Nothing here needs an event loop: a farm starts one renderwatch per frame, and the job's first Blender
is started before the event loop and the supervisor's other parts are even imported (process.py reads
its output once they are). The CLI starts it earlier still (`spawn.prestart`, before this module is
imported) and hands it over through `ProcessLauncher(prestarted=...)`: the first attempt takes it when
its argv and environment are exactly the ones it would have started, and discards it otherwise.

Usage::

    argv = attempt_argv(ctx, scene, frames=[1, 2, 3], action=action)
    started = start_attempt(ctx, job, attempt=1, argv=argv, state_dir=job_folder)   # held at its gate
    ...                                                    # the supervisor records started.spawned.pid
    ctx.parts.launcher.release(started.spawned, started.gate_env)                     # Blender renders
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from blender_hooks.settings import ENV_ATTEMPT, ENV_HEARTBEAT, ENV_JOB_ID  # noqa: F401 (names read from here)
from healer.diagnosis import errors
from healer.supervising.ledger import process_alive
from healer.supervising.spawn import (
    LaunchSpec,
    Prestarted,
    attempt_env,
    build_argv,
    output_arg,
    release,
    spawn_blender,
    split_gate_env,
    split_user_args,
)

if TYPE_CHECKING:
    from healer.supervising.context import JobContext
    from healer.supervising.ledger import Attempt
    from healer.supervising.policy import Action
    from healer.supervising.process import BlenderProcess
    from healer.supervising.seams import LineHandler, Spawned

# Blender arguments that choose frames or the output: the supervisor owns these.
RENDER_ACTION_ARGS = {"-a", "--render-anim", "-f", "--render-frame", "-s", "--frame-start", "-e",
                      "--frame-end", "-j", "--frame-jump", "-o", "--render-output"}


def check_user_args(args: Sequence[str]) -> None:
    """Refuse frame/output arguments after `--`: use --frames and --output so the ledger knows."""
    before, _ = split_user_args(args)
    bad = [a for a in before if a in RENDER_ACTION_ARGS]
    if bad:
        raise ValueError(f"Blender argument(s) {' '.join(bad)} choose frames or the output: use renderwatch's "
                         "--frames and --output instead, so restarts know what is rendered")


def exit_status(rc: int) -> tuple[int | None, int | None]:
    """(exit_code, exit_signal) from a returncode (negative = killed by that signal)."""
    return (None, -rc) if rc < 0 else (rc, None)


class ProcessLauncher:
    """The real `seams.Launcher`: Blender as a child process in its own process group. What runs on the
    event loop (process.py) is imported when the first Blender is attached, after it has started.
    `prestarted`: a Blender the caller started at the gate (spawn.prestart), used by the first spawn
    it matches exactly, discarded otherwise."""

    def __init__(self, prestarted: Prestarted | None = None):
        self.prestarted = prestarted

    def spawn(self, argv: Sequence[str], *, env: dict[str, str]) -> subprocess.Popen:
        pre, self.prestarted = self.prestarted, None
        taken = pre.take(argv, env) if pre is not None else None
        return taken if taken is not None else spawn_blender(argv, env=env)

    def discard_prestarted(self) -> None:
        """The prestarted Blender is not wanted (the job will not start with an immediate launch)."""
        pre, self.prestarted = self.prestarted, None
        if pre is not None:
            pre.discard()

    def release(self, spawned: subprocess.Popen, env: dict[str, str]) -> None:
        release(spawned, env)

    async def attach(self, spawned: subprocess.Popen, on_line: LineHandler) -> BlenderProcess:
        from healer.supervising.process import BlenderProcess

        return BlenderProcess(spawned, on_line)

    def alive(self, pid: int | None, create_time: float | None) -> bool:
        return process_alive(pid, create_time)

    async def stop_orphan(self, pid: int, create_time: float | None, grace_s: float) -> None:
        from healer.supervising.process import stop_group

        await stop_group(pid, grace_s, lambda: not self.alive(pid, create_time))


@dataclass
class Launched:
    """An attempt whose Blender has started: what `attempt.run_attempt` watches."""

    attempt: Attempt
    frames: list[int]
    spawned: Spawned
    started_at: float                 # clock time
    oom_kills_before: int | None      # the cgroup's OOM kills before it started
    heartbeat: str | None = None      # the file the hooks touch while it renders (probes.SignsOfLife)


def heartbeat_file(directory: str, attempt: int) -> str | None:
    """A fresh, empty file in `directory` (the job's private one, beside the ledger) for the hooks to
    touch, its mtime at 0 so that the first touch shows; None if it cannot be made (the other signs remain)."""
    path = os.path.join(directory, f"heartbeat.{attempt}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        os.close(fd)
        os.utime(path, (0, 0))
    except OSError:
        return None
    return path


@dataclass(frozen=True)
class Started:
    """A Blender started for an attempt, held at its gate: what the supervisor records before `release`."""

    spawned: Spawned
    gate_env: dict[str, str]          # what `Launcher.release` hands it: the job and the attempt
    started_at: float                 # clock time
    oom_kills_before: int | None      # the cgroup's OOM kills before it started
    pid_create_time: float | None     # with the pid: no pid reuse is taken for it
    heartbeat: str | None = None


def attempt_argv(ctx: JobContext, scene: str, frames: list[int], action: Action) -> list[str]:
    """Blender's command line for one attempt: the request's, the frames, the policy's device and threads."""
    req = ctx.parts.req
    return build_argv(LaunchSpec(blender=req.blender, scene=scene, frames=frames, output=output_arg(req.output),
                                 user_args=req.blender_args, device=action.device, threads=action.threads,
                                 after_render=req.after_args, gpu=ctx.gpu if action.device != "CPU" else None))


def start_attempt(ctx: JobContext, job: str, attempt: int, argv: list[str],
                  state_dir: str) -> Started | errors.RenderError:
    """Start the attempt's Blender, held at its gate. An engine that cannot start is the error returned."""
    oom_before = ctx.parts.probes.oom_kills()
    started_at = ctx.parts.clock()
    start_env, gate_env = split_gate_env(attempt_env(job, attempt, ctx.parts.env, ctx.gpu))
    heartbeat = heartbeat_file(state_dir, attempt)
    if heartbeat is not None:
        gate_env[ENV_HEARTBEAT] = heartbeat
    try:
        spawned = ctx.parts.launcher.spawn(argv, env=start_env)
    except OSError as e:
        return errors.EngineUnavailableError(summary=f"cannot start Blender {ctx.parts.req.blender!r}: {e}")
    return Started(spawned, gate_env, started_at, oom_before, ctx.parts.probes.process_create_time(spawned.pid), heartbeat)
