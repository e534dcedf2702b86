"""Start Blender for one attempt: the argv (a list, never a shell), its environment, its output.

Argument order matters to Blender (it executes arguments left to right, and a `--python` script
after `-a` would run after the render), so an attempt is always:

    BLENDER -b SCENE --python-expr MARKER [--python HOOKS] [USER ARGS] [-o PATTERN] [-t N]
            [--python-expr CPU] RENDER-CHUNKS [USER ARGS AFTER THE RENDER] [-- SCRIPT ARGS]

MARKER is a tiny render_pre handler that prints `[renderwatch] frame_start N PATH` before any other
handler runs: the supervisor learns which frame is in flight and where Blender will save it, even
when a user handler crashes Blender in the same render_pre call.

Usage::

    argv = build_argv(LaunchSpec(blender="blender", scene="/s.blend", frames=[1, 2, 3]))
    proc = await BlenderProcess.start(argv, env=attempt_env(job, attempt), on_line=handle)
    rc = await proc.wait()
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from blender_hooks.settings import ENV_ATTEMPT, ENV_JOB_ID  # noqa: F401 (names read from here)
from healer.supervising.frames import render_args
from healer.supervising.ledger import process_alive

MARKER = "[renderwatch] frame_start "
LOG_TAIL_LINES = 500

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


class BlenderProcess:
    """One Blender child in its own process group; stdout+stderr merged and fed line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, on_line: Callable[[str, float], None]):
        self.proc = proc
        self.pid = proc.pid
        self.on_line = on_line
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self.last_output_at = time.monotonic()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, argv: Sequence[str], *, env: dict[str, str], cwd: str | None = None,
                    on_line: Callable[[str, float], None]) -> BlenderProcess:
        # Blender gets a process group of its own (the healer stops it and what it started with one
        # killpg) but stays in the caller's session, where a farm's accounting looks (RQD sums its
        # frame's session). It must never outlive the healer: a farm cancels by SIGKILL to the
        # healer's group (OpenJD, RQD), which does not reach Blender's group, so the kernel kills
        # Blender the moment its parent dies (PR_SET_PDEATHSIG).
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, cwd=cwd, process_group=0,
            preexec_fn=_die_with_parent(os.getpid()))
        return cls(proc, on_line)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        pending = b""
        while True:
            chunk = await self.proc.stdout.read(65536)
            if not chunk:
                break
            now = time.monotonic()
            self.last_output_at = now
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self._emit(raw, now)
            if len(pending) > 1 << 20:          # a runaway line without newline: cut it
                self._emit(pending, now)
                pending = b""
        if pending:
            self._emit(pending, time.monotonic())

    def _emit(self, raw: bytes, now: float) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        self.tail.append(line)
        self.on_line(line, now)

    async def wait(self, drain_timeout: float = 5.0) -> int:
        """Wait for exit and for the output to be read to the end (bounded: a grandchild may hold it)."""
        rc = await self.proc.wait()
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), drain_timeout)
        except TimeoutError:
            self._reader.cancel()
        return rc

    def returncode(self) -> int | None:
        return self.proc.returncode

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the whole process group, then SIGKILL after `grace_s`."""
        await stop_group(self.pid, grace_s, lambda: self.proc.returncode is not None)


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


async def stop_group(pgid: int, grace_s: float, exited: Callable[[], bool]) -> None:
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if exited():
                return
            await asyncio.sleep(0.05)


def exit_status(rc: int) -> tuple[int | None, int | None]:
    """(exit_code, exit_signal) from a returncode (negative = killed by that signal)."""
    return (None, -rc) if rc < 0 else (rc, None)


class ProcessLauncher:
    """The real `seams.Launcher`: Blender as a child process in its own process group."""

    async def start(self, argv: Sequence[str], *, env: dict[str, str],
                    on_line: Callable[[str, float], None]) -> BlenderProcess:
        return await BlenderProcess.start(argv, env=env, on_line=on_line)

    def alive(self, pid: int | None, create_time: float | None) -> bool:
        return process_alive(pid, create_time)

    async def stop_orphan(self, pid: int, create_time: float | None, grace_s: float) -> None:
        await stop_group(pid, grace_s, lambda: not self.alive(pid, create_time))
