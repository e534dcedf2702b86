"""The Blender process itself: its argv (a list, never a shell), its environment, its start, its gate.

Standard library only (and the frame-set helpers): a farm starts one renderwatch per frame, and
`prestart` starts that frame's Blender from here before the supervisor's own modules are imported.

Argument order matters to Blender (it executes arguments left to right, and a `--python` script
after `-a` would run after the render), so an attempt is always:

    BLENDER -b SCENE --python-expr GATE --python-expr MARKER [--python HOOKS] [USER ARGS] [-o PATTERN]
            [-t N] [--python-expr CPU|GPU] RENDER-CHUNKS [USER ARGS AFTER THE RENDER] [-- SCRIPT ARGS]

GATE holds Blender, once it has started up and read the scene, until the supervisor lets it go: a
line on its stdin with the job's id and the attempt's number (set in Blender's environment before
the hooks read them). The supervisor sends it once the ledger names the attempt and its pid, so a
Blender can be started before the supervisor knows whether, or as which attempt, it may render
(`prestart`): Blender's start-up (a second or more) overlaps the supervisor's (the lock, the ledger,
the assets), and a Blender the supervisor does not use is killed at the gate, having rendered
nothing. A Blender whose stdin closes before the line comes (its supervisor died) exits at once.

MARKER is a tiny render_pre handler that prints `[renderwatch] frame_start N PATH` before any other
handler runs: the supervisor learns which frame is in flight and where Blender will save it, even
when a user handler crashes Blender in the same render_pre call.

Usage::

    argv = build_argv(LaunchSpec(blender="blender", scene="/shot/a.blend", frames=[1, 2, 3]))
    popen = spawn_blender(argv, env=start_env)       # waits at the gate
    release(popen, {ENV_JOB_ID: "a-1f2e", ENV_ATTEMPT: "1"})   # renders from here
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

from blender_hooks.settings import ENV_ATTEMPT, ENV_HEARTBEAT, ENV_JOB_ID
from healer.supervising.frames import render_args

# The line the supervisor's frame-start marker prints (MARKER_EXPR, injected into Blender).
MARKER = "[renderwatch] frame_start "

# Blender's stdout line-buffered, in C stdio (Blender's and Cycles' own lines) and in Python: on a pipe
# both hold output in 4-8 KiB blocks (the binary's too, unless PYTHONUNBUFFERED is set), so a frame's
# lines would reach the healer and a farm's log only when a block fills or Blender exits. Run first,
# as part of the gate: what Blender printed before it (the banner, `Read blend:`) goes out with the
# next line. glibc's setvbuf(_IOLBF) only sets a flag, so it is safe on a stream already written.
LINE_BUFFERED_EXPR = (
    "def _renderwatch_line_buffered():\n"
    "    import sys\n"
    "    try:\n"
    "        sys.stdout.reconfigure(line_buffering=True)\n"
    "    except Exception:\n"
    "        pass\n"
    "    if sys.platform.startswith('linux'):\n"
    "        try:\n"
    "            import ctypes\n"
    "            libc = ctypes.CDLL(None)\n"
    "            out = ctypes.c_void_p.in_dll(libc, 'stdout')\n"
    "            libc.fflush.argtypes = [ctypes.c_void_p]\n"
    "            libc.setvbuf.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t]\n"
    "            libc.fflush(out)\n"
    "            libc.setvbuf(out, None, 1, 0)\n"
    "        except Exception:\n"
    "            pass\n"
    "_renderwatch_line_buffered()\n"
    "del _renderwatch_line_buffered\n"
)

# Blender waits here (after reading the scene, before anything of the render) for the supervisor's
# go: one JSON line of environment variables on stdin. EOF instead (the supervisor is gone, or chose
# not to use this Blender): exit without rendering.
GATE_EXPR = LINE_BUFFERED_EXPR + (
    "import json, os\n"
    "def _renderwatch_gate():\n"
    "    data = b''\n"
    "    while not data.endswith(b'\\n'):\n"
    "        chunk = os.read(0, 65536)\n"
    "        if not chunk:\n"
    "            os.write(2, b'[renderwatch] not started: the supervisor did not confirm this Blender\\n')\n"
    "            os._exit(1)\n"
    "        data += chunk\n"
    "    os.environ.update(json.loads(data))\n"
    "_renderwatch_gate()\n"
    "del _renderwatch_gate\n"
)
# What the gate sets, and what therefore may differ between a prestarted Blender and the attempt.
GATE_ENV = (ENV_JOB_ID, ENV_ATTEMPT, ENV_HEARTBEAT)

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

_HOOKS_DEFAULT = object()


def hooks_startup() -> str | None:
    """The hooks' startup script to inject with --python, if the hooks package ships one."""
    try:
        import blender_hooks
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(os.path.realpath(blender_hooks.__file__)), "startup.py")
    return path if os.path.exists(path) else None


class LaunchSpec:
    """What one Blender renders and how (`build_argv` turns it into the command line)."""

    __slots__ = ("blender", "scene", "frames", "output", "user_args", "device", "threads", "hooks",
                 "after_render", "gpu")

    def __init__(self, blender: str, scene: str, frames: Sequence[int], output: str | None = None,
                 user_args: Sequence[str] = (), device: str | None = None, threads: int | None = None,
                 hooks: str | None | object = _HOOKS_DEFAULT, after_render: Sequence[str] = (),
                 gpu: int | None = None):
        self.blender = blender
        self.scene = scene
        self.frames = frames
        self.output = output              # -o pattern (as the user gave it, Blender resolves it)
        self.user_args = user_args
        self.device = device              # "CPU" forces Cycles onto the CPU
        self.threads = threads
        self.hooks: str | None = hooks_startup() if hooks is _HOOKS_DEFAULT else hooks  # type: ignore[assignment]
        self.after_render = after_render  # user arguments that run after the render, in their order
        self.gpu = gpu                    # placed on this GPU: Cycles set to use it (GPU_EXPR)


def split_user_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(Blender args, ['--', script args...]): Blender stops reading its own options at `--`."""
    args = list(args)
    if "--" in args:
        i = args.index("--")
        return args[:i], args[i:]
    return args, []


def build_argv(spec: LaunchSpec) -> list[str]:
    before, script = split_user_args(spec.user_args)
    after_render, script_after = split_user_args(spec.after_render)
    argv = [spec.blender, "-b", spec.scene, "--python-expr", GATE_EXPR, "--python-expr", MARKER_EXPR]
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


def output_arg(out: str | None) -> str | None:
    """The -o pattern as Blender gets it: absolute, except Blender's own `//` (beside the .blend)."""
    if out and not out.startswith("//"):
        out = os.path.abspath(os.path.expanduser(out)) + ("/" if out.endswith("/") else "")
    return out


def attempt_env(job: str, attempt: int, base: Mapping[str, str] | None = None, gpu: int | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env[ENV_JOB_ID] = job
    env[ENV_ATTEMPT] = str(attempt)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    elif env.get("CUE_GPU_CORES") and not env.get("CUDA_VISIBLE_DEVICES"):
        env["CUDA_VISIBLE_DEVICES"] = env["CUE_GPU_CORES"]     # OpenCue's RQD reserved these GPUs for the frame
    return env


def split_gate_env(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(the environment Blender starts with, what the gate sets once the attempt is known)."""
    start = {k: v for k, v in env.items() if k not in GATE_ENV}
    return start, {k: env[k] for k in GATE_ENV if k in env}


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


def spawn_blender(argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None = None) -> subprocess.Popen:
    """Start Blender now, stdout and stderr merged into one pipe (process.BlenderProcess reads it); an
    argv with the GATE gets its stdin as the gate's pipe (`release`), any other argv /dev/null.

    Blender gets a process group of its own (the healer stops it and what it started with one killpg)
    but stays in the caller's session, where a farm's accounting looks (RQD sums its frame's session).
    It must never outlive the healer: a farm cancels by SIGKILL to the healer's group (OpenJD, RQD),
    which does not reach Blender's group, so the kernel kills Blender the moment its parent dies
    (PR_SET_PDEATHSIG)."""
    stdin = subprocess.PIPE if GATE_EXPR in argv else subprocess.DEVNULL
    return subprocess.Popen(list(argv), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(env), cwd=cwd, process_group=0, preexec_fn=_die_with_parent(os.getpid()),
                            bufsize=0)


def release(popen: subprocess.Popen, env: Mapping[str, str]) -> None:
    """Let a gated Blender go on, with these variables set in its environment (a Blender that already
    exited is seen as exited by whoever waits for it)."""
    if popen.stdin is None:
        return
    import json

    try:
        popen.stdin.write(json.dumps(dict(env)).encode() + b"\n")
    except OSError:            # BrokenPipeError: it is gone
        pass
    finally:
        try:
            popen.stdin.close()
        except OSError:
            pass


def discard(popen: subprocess.Popen) -> None:
    """Stop a gated Blender that will not be used (SIGKILL to its group: it has rendered nothing)."""
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except OSError:
        pass
    if popen.stdin is not None:
        try:
            popen.stdin.close()
        except OSError:
            pass
    popen.wait()
    if popen.stdout is not None:
        popen.stdout.close()


class Prestarted:
    """A Blender started before the supervisor has decided (`prestart`): `take` hands it to the attempt
    whose argv and start environment are exactly its own; anything else discards it."""

    def __init__(self, argv: list[str], env: dict[str, str], child: subprocess.Popen):
        self.argv, self.env, self.child = argv, env, child
        self.used = False

    def take(self, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen | None:
        """This Blender, if it is the one wanted; None (and it is stopped) if not. Only once."""
        if self.used:
            return None
        self.used = True
        if list(argv) == self.argv and dict(env) == self.env:
            return self.child          # (one that already exited is that attempt's failure, its output kept)
        discard(self.child)
        return None

    def discard(self) -> None:
        """Stop it unless an attempt took it."""
        if not self.used:
            self.used = True
            discard(self.child)


def prestart(spec: LaunchSpec, base_env: Mapping[str, str] | None = None) -> Prestarted | None:
    """Start the Blender a first attempt of `spec` would start, held at the gate; None if it cannot
    start (the supervisor then starts it itself and reports why not)."""
    argv = build_argv(spec)
    start, _ = split_gate_env(attempt_env("", 0, base_env))
    try:
        return Prestarted(argv, start, spawn_blender(argv, env=start))
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
