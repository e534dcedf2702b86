"""Start Blender for one attempt: the argv (a list, never a shell), its environment, the process.

Argument order matters to Blender (it executes arguments left to right, and a `--python` script
after `-a` would run after the render), so an attempt is always:

    BLENDER -b SCENE --python-expr MARKER [--python HOOKS] [USER ARGS] [-o PATTERN] [-t N]
            [--python-expr CPU] RENDER-CHUNKS [USER ARGS AFTER THE RENDER] [-- SCRIPT ARGS]

MARKER is a tiny render_pre handler that prints `[renderwatch] frame_start N PATH` before any other
handler runs: the supervisor learns which frame is in flight and where Blender will save it, even
when a user handler crashes Blender in the same render_pre call.

Nothing here needs an event loop: a farm starts one renderwatch per frame, and the job's first Blender
is started before the event loop and the supervisor's other parts are even imported (process.py reads
its output once they are).

Usage::

    launched = launch_attempt(ctx, ledger, frames=[1, 2, 3], action=action)   # Blender runs
    error = await run_attempt(ctx, ledger, launched)                          # attempt.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from blender_hooks.settings import ENV_ATTEMPT, ENV_JOB_ID  # noqa: F401 (names read from here)
from healer.diagnosis import errors
from healer.supervising.frames import render_args
from healer.supervising.ledger import process_alive
from healer.supervising.progress import MARKER

if TYPE_CHECKING:
    from healer.supervising.context import JobContext
    from healer.supervising.ledger import Attempt, Ledger
    from healer.supervising.policy import Action
    from healer.supervising.process import BlenderProcess
    from healer.supervising.seams import LineHandler, Spawned


# The marker is one os.write of the whole line: print() writes the text and the newline separately,
# and a thread logging to stderr in between (the hooks' "agent unreachable") tore the line, so the
# healer read a wrong output path and rendered a saved frame again.
MARKER_EXPR = (
    "import bpy, os, sys\n"
    "def _renderwatch_frame_start(scene, *_a):\n"
    "    try:\n"
    "        f = scene.frame_current\n"
    "        line = '" + MARKER + "%d %s\\n' % (f, bpy.path.abspath(scene.render.frame_path(frame=f)))\n"
    "        sys.stdout.flush()\n"
    "        os.write(1, line.encode('utf-8', 'surrogateescape'))\n"
    "    except Exception as e:\n"
    "        print('[renderwatch] marker failed: %r' % (e,), flush=True)\n"
    "bpy.app.handlers.render_pre.insert(0, bpy.app.handlers.persistent(_renderwatch_frame_start))\n"
)
# Cycles on the one GPU CUDA_VISIBLE_DEVICES leaves visible (the healer service placed the render there):
# OptiX if this build and driver have it, else CUDA; the scene's own device setting is kept.
GPU_EXPR = (
    "import bpy\n"
    "p = bpy.context.preferences.addons['cycles'].preferences\n"
    "for t in ('OPTIX', 'CUDA'):\n"
    "    try:\n"
    "        p.compute_device_type = t\n"
    "    except TypeError:\n"
    "        continue\n"
    "    p.get_devices()\n"
    "    if any(d.type == t for d in p.devices):\n"
    "        for d in p.devices: d.use = d.type == t\n"
    "        break\n"
    "print('[renderwatch] GPU placement:', p.compute_device_type, [d.name for d in p.devices if d.use], flush=True)\n"
)
CPU_EXPR = (
    "import bpy\n"
    "for s in bpy.data.scenes:\n"
    "    if hasattr(s, 'cycles'): s.cycles.device = 'CPU'\n"
    "print('[renderwatch] device forced to CPU', flush=True)\n"
)

# Blender arguments that choose frames or the output: the supervisor owns these.
RENDER_ACTION_ARGS = {"-a", "--render-anim", "-f", "--render-frame", "-s", "--frame-start", "-e",
                      "--frame-end", "-j", "--frame-jump", "-o", "--render-output"}


def hooks_startup() -> str | None:
    """The hooks' startup script to inject with --python, if the hooks package ships one."""
    try:
        import blender_hooks
    except ImportError:
        return None
    path = Path(blender_hooks.__file__).resolve().parent / "startup.py"
    return str(path) if path.exists() else None


def split_user_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(Blender args, ['--', script args...]): Blender stops reading its own options at `--`."""
    args = list(args)
    if "--" in args:
        i = args.index("--")
        return args[:i], args[i:]
    return args, []


def check_user_args(args: Sequence[str]) -> None:
    """Refuse frame/output arguments after `--`: use --frames and --output so the ledger knows."""
    before, _ = split_user_args(args)
    bad = [a for a in before if a in RENDER_ACTION_ARGS]
    if bad:
        raise ValueError(f"Blender argument(s) {' '.join(bad)} choose frames or the output: use renderwatch's "
                         "--frames and --output instead, so restarts know what is rendered")


@dataclass(frozen=True)
class LaunchSpec:
    blender: str
    scene: str
    frames: Sequence[int]
    output: str | None = None            # -o pattern (as the user gave it, Blender resolves it)
    user_args: Sequence[str] = ()
    device: str | None = None            # "CPU" forces Cycles onto the CPU
    threads: int | None = None
    hooks: str | None = field(default_factory=hooks_startup)
    after_render: Sequence[str] = ()      # user arguments that run after the render, in their order
    gpu: int | None = None                # placed on this GPU: Cycles set to use it (GPU_EXPR)


def build_argv(spec: LaunchSpec) -> list[str]:
    before, script = split_user_args(spec.user_args)
    after_render, script_after = split_user_args(spec.after_render)
    argv = [spec.blender, "-b", spec.scene, "--python-expr", MARKER_EXPR]
    if spec.hooks:
        argv += ["--python", spec.hooks]
    argv += before
    if spec.output:
        argv += ["-o", spec.output]
    if spec.threads:
        argv += ["-t", str(int(spec.threads))]
    if spec.device == "CPU":
        argv += ["--python-expr", CPU_EXPR]
    elif spec.gpu is not None:
        argv += ["--python-expr", GPU_EXPR]
    argv += render_args(spec.frames)
    return argv + after_render + (script or script_after)


def attempt_env(job: str, attempt: int, base: dict[str, str] | None = None, gpu: int | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env[ENV_JOB_ID] = job
    env[ENV_ATTEMPT] = str(attempt)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    elif env.get("CUE_GPU_CORES") and not env.get("CUDA_VISIBLE_DEVICES"):
        env["CUDA_VISIBLE_DEVICES"] = env["CUE_GPU_CORES"]     # OpenCue's RQD reserved these GPUs for the frame
    return env


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """The child's pre-exec step: SIGKILL when the healer dies (Linux; elsewhere nothing to set)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl   # resolved here: the child only calls it
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    sigkill = int(signal.SIGKILL)

    def pre_exec() -> None:
        prctl(PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent:      # the healer died between fork and prctl
            os._exit(1)

    return pre_exec


def exit_status(rc: int) -> tuple[int | None, int | None]:
    """(exit_code, exit_signal) from a returncode (negative = killed by that signal)."""
    return (None, -rc) if rc < 0 else (rc, None)


def spawn_blender(argv: Sequence[str], *, env: dict[str, str], cwd: str | None = None) -> subprocess.Popen:
    """Start Blender now, stdout and stderr merged into one pipe (process.BlenderProcess reads it).

    Blender gets a process group of its own (the healer stops it and what it started with one killpg)
    but stays in the caller's session, where a farm's accounting looks (RQD sums its frame's session).
    It must never outlive the healer: a farm cancels by SIGKILL to the healer's group (OpenJD, RQD),
    which does not reach Blender's group, so the kernel kills Blender the moment its parent dies
    (PR_SET_PDEATHSIG)."""
    return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, cwd=cwd, process_group=0, preexec_fn=_die_with_parent(os.getpid()), bufsize=0)


class ProcessLauncher:
    """The real `seams.Launcher`: Blender as a child process in its own process group. What runs on the
    event loop (process.py) is imported when the first Blender is attached, after it has started."""

    def spawn(self, argv: Sequence[str], *, env: dict[str, str]) -> subprocess.Popen:
        return spawn_blender(argv, env=env)

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


def launch_attempt(ctx: JobContext, led: Ledger, frames: list[int], action: Action) -> Launched | errors.RenderError:
    """A new attempt in the ledger and its Blender started (the ledger names its pid, fsynced: a healer
    that dies now leaves its successor what to stop). An engine that cannot start is the error returned."""
    req = ctx.req
    att = led.new_attempt(frames, action.reason)
    att.device, att.threads = action.device, action.threads
    att.argv = build_argv(LaunchSpec(blender=req.blender, scene=led.scene, frames=frames, output=output_arg(req.output),
                                     user_args=req.blender_args, device=action.device, threads=action.threads,
                                     after_render=req.after_args, gpu=ctx.gpu if action.device != "CPU" else None))
    oom_before = ctx.probes.oom_kills()
    started_at = ctx.clock()
    try:
        spawned = ctx.launcher.spawn(att.argv, env=attempt_env(led.job, att.attempt, ctx.env, ctx.gpu))
    except OSError as e:
        att.ended_at = ctx.wall()
        att.error_type = "engine_unavailable"
        att.error_summary = f"cannot start Blender {req.blender!r}: {e}"
        led.save()
        return errors.EngineUnavailableError(summary=att.error_summary)
    att.pid = spawned.pid
    att.pid_create_time = ctx.probes.process_create_time(spawned.pid)
    att.started_at = ctx.wall()
    led.status = "running"
    led.save()
    return Launched(att, list(frames), spawned, started_at, oom_before)


def output_arg(out: str | None) -> str | None:
    """The -o pattern as Blender gets it: absolute, except Blender's own `//` (beside the .blend)."""
    if out and not out.startswith("//"):
        out = os.path.abspath(os.path.expanduser(out)) + ("/" if out.endswith("/") else "")
    return out
