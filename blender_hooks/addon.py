"""The only module that imports bpy: render handlers, the wheel's command line, the demo scene.

`register()` adds one `@persistent` module-level handler per render callback; each handler body
runs inside a guard that logs and swallows, builds one event and appends it to the local spool
(O(1), microseconds). HTTP happens only in the spool's sender thread, so an agent that is down or
hung never blocks Blender. See `blender_hooks.events` for the schema of what is emitted.

Usage (inside Blender)::

    from blender_hooks import addon
    addon.register()      # idempotent; also safe when another copy (the installed add-on) is active
    addon.unregister()    # removes every handler, flushes the spool (bounded to 0.5 s)
"""

from __future__ import annotations

import atexit
import itertools
import os
import resource
import sys
import time

import bpy
from bpy.app.handlers import persistent

from . import events, spool
from .farm import farm_identity
from .logs import logger
from .settings import ENV_ATTEMPT, ENV_HEARTBEAT, ENV_JOB_ID
from .stats import cli_frames, frame_range, parse_frame_list, parse_memory, phase_of

log = logger("renderwatch.hooks")

MARK = "_renderwatch_hook"             # attribute on our handlers, whichever copy of the module
# Also on our handlers: this copy reads the job's identity when each job starts (job_identity). A copy
# without it (installed by an older renderwatch) read it once, when Blender started.
IDENTITY_PER_JOB = "_renderwatch_identity_per_job"
FLUSH_AT_EXIT_S = 0.5
STATS_MAX_OBJECTS = 2000               # scene.statistics() is O(objects): skip it on big scenes
HEARTBEAT_EVERY_S = 1.0                # the healer's heartbeat file is touched at most this often


def _hostname() -> str:
    """socket.gethostname() without importing socket at Blender's start (it is uname's nodename)."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


class Hooks:
    """Per-process hook state: the session, the current job and frame, the spool."""

    def __init__(self, directory=None):
        self.session = os.urandom(8).hex()
        self.host = _hostname()
        self.pid = os.getpid()
        self._seq = itertools.count(1)
        directory = spool.spool_dir() if directory is None else directory
        # Both are made here, at register time: starting a thread waits for it to be scheduled and
        # creating a file can take milliseconds on a busy host, which a render handler must not.
        # A Blender that never renders removes its spare segment and lock at exit.
        self.writer = spool.SpoolWriter(directory, self.session)
        self.writer.prepare()  # the first segment, ready before the first render (see prepare)
        self.sender = spool.SpoolSender(directory, spool.agent_url(), token=spool.agent_token(),
                                        writer=self.writer).start()
        # The job's identity is read when each job starts (job_start), never here: an installed add-on
        # or a studio's startup script registers before the healer's start gate sets it.
        self.env_job: str | None = None
        self.attempt: int | None = None
        self.farm: dict = {}
        self.argv_frames = cli_frames(sys.argv) if bpy.app.background else None
        self.job_n = 0
        self.new_job = True          # next render_init starts a new job id
        self.local_job = f"{self.host}-{self.pid}-1"   # the job id outside the healer
        self.job = self.local_job
        self.ctx: dict = {}          # scene/engine/device_type/attempt, carried on every event
        self.job_open = False
        self.job_ts = 0.0
        self.frames_done = 0
        self.frame: int | None = None
        self.frame_t0 = 0.0
        self.frame_post_t: float | None = None
        self.phase: str | None = None
        self.peak = 0.0
        self.use_statistics = True
        self.errors = 0
        self.devices_cache: dict = {}   # compute device type -> ids Cycles can use (enumerated once)
        self.fallback_logged = ""

    # -- emission -------------------------------------------------------------------------------
    def emit(self, type_: str, **fields) -> None:
        ev = events.make_event(type_, session=self.session, seq=next(self._seq), job=self.job,
                               host=self.host, pid=self.pid, **{**self.ctx, **fields})
        self.writer.append(events.encode(ev))

    # -- handlers' bodies -----------------------------------------------------------------------
    def job_start(self, scene) -> None:
        if self.job_open:  # a render that never completed (no complete/cancel handler ran)
            self.job_end("cancel")
        self.env_job, self.attempt, self.farm = job_identity(os.environ)
        if self.new_job:
            self.job_n += 1
            self.local_job = f"{self.host}-{self.pid}-{self.job_n}"
            # `blender -f 1,3,5` runs one render per frame: keep them one job until a new file.
            self.new_job = not self.argv_frames
        self.job = self.env_job or self.local_job
        r = scene.render
        engine = r.engine
        asked, used, why = cycles_device(scene, self.devices_cache) if engine == "CYCLES" else (None, None, "")
        self.ctx = {"scene": scene.name, "engine": engine, "device_type": used or device_type(scene)}
        if asked:
            self.ctx["device_asked"] = asked
        if self.env_job:     # under the healer: what the scene asks, for its checks of each frame
            say_settings(scene, asked, used, why)
        if why and self.fallback_logged != why:
            self.fallback_logged = why
            log.warning("renderwatch: the scene asks for %s rendering but Cycles renders on the CPU: %s", asked, why)
        if self.attempt is not None:
            self.ctx["attempt"] = self.attempt
        first, last, step = scene.frame_start, scene.frame_end, scene.frame_step
        if self.argv_frames:
            first, last, step = frame_range(self.argv_frames)
        self.job_open, self.job_ts, self.frames_done = True, time.time(), 0
        self.emit("job_start", blend_file=bpy.data.filepath, frame_start=first, frame_end=last,
                  frame_step=step, samples=render_samples(scene), resolution_x=r.resolution_x,
                  resolution_y=r.resolution_y, resolution_percentage=r.resolution_percentage,
                  blender_version=bpy.app.version_string, output_path=bpy.path.abspath(r.filepath), **self.farm)
        self.sender.wake()

    def frame_start(self, scene) -> None:
        self.close_frame(scene)
        self.frame = scene.frame_current
        self.frame_t0 = time.perf_counter()
        self.frame_post_t = None
        self.phase = None
        self.peak = 0.0
        self.emit("frame_start", frame=self.frame)

    def stats(self, text) -> None:
        if not text or self.frame is None:  # Blender 3.4 passes None
            return
        if "M" in text:
            m = parse_memory(text)
            if m > self.peak:
                self.peak = m
        name = phase_of(text)
        if name is not None and name != self.phase:
            self.phase = name
            self.emit("phase", frame=self.frame, name=name, detail=text[:200])

    def frame_post(self, _scene) -> None:
        self.frame_post_t = time.perf_counter()

    def frame_end(self, scene, saved: bool = True) -> None:
        if self.frame is None:
            return
        end = time.perf_counter() if saved or self.frame_post_t is None else self.frame_post_t
        r = scene.render if scene is not None else None
        fields: dict = {"frame": self.frame, "seconds": max(0.0, end - self.frame_t0), "saved": saved,
                        "max_rss_bytes": max_rss_bytes()}
        if r is not None:
            if saved:
                fields["output_path"] = r.frame_path(frame=self.frame)
            pct = r.resolution_percentage
            fields["resolution_x"] = r.resolution_x * pct // 100
            fields["resolution_y"] = r.resolution_y * pct // 100
            n = render_samples(scene)
            if n is not None:
                fields["samples"] = n
            peak = max(self.peak, self.statistics_memory(scene))
            if peak > 0:
                fields["peak_memory_blender_bytes"] = int(peak)
        self.frame = None
        if saved:
            self.frames_done += 1
        self.emit("frame_end", **fields)

    def close_frame(self, scene=None) -> None:
        """A frame that started and was never written ends unsaved."""
        if self.frame is not None:
            self.frame_end(scene, saved=False)

    def job_end(self, status: str, scene=None) -> None:
        self.close_frame(scene)
        if self.job_open:
            self.job_open = False
            self.emit("job_end", status=status, frames_done=self.frames_done, started_at=self.job_ts)
        self.sender.wake()

    def file_loaded(self) -> None:
        self.new_job = True

    def statistics_memory(self, scene) -> float:
        """Blender's own memory in use (scene.statistics), where that is cheap enough."""
        if not self.use_statistics:
            return 0.0
        if len(bpy.data.objects) > STATS_MAX_OBJECTS:
            self.use_statistics = False
            return 0.0
        layer = bpy.context.view_layer or scene.view_layers[0]
        return parse_memory(scene.statistics(layer))

    def shutdown(self, timeout: float = FLUSH_AT_EXIT_S) -> None:
        try:
            if self.job_open:
                self.job_end("cancel")
        finally:
            self.writer.close()
            self.sender.close(timeout)


def job_identity(environ) -> tuple[str | None, int | None, dict]:
    """(job id, attempt, farm fields of job_start) as the environment gives them now.

    Read at the start of each render job, not when the hooks register: whichever copy registered
    first (an installed add-on or extension, a studio's startup script, `--python`) then reports the
    identity the healer's start gate set in os.environ after Blender started. A few dict lookups.
    """
    job = environ.get(ENV_JOB_ID) or None
    try:
        attempt: int | None = int(environ.get(ENV_ATTEMPT, ""))
    except ValueError:
        attempt = None
    f = farm_identity(environ)
    farm = {} if f is None else {k: v for k, v in (
        ("farm_engine", f.engine), ("farm_job", f.job), ("farm_task", f.task), ("traceparent", f.traceparent)) if v}
    return job, attempt, farm


def device_type(scene) -> str:
    """"CPU", or "GPU:<backend>" for Cycles on a GPU backend; "GPU" for the raster engines."""
    engine = scene.render.engine
    if engine == "CYCLES":
        if getattr(scene.cycles, "device", "CPU") == "GPU":
            try:
                backend = bpy.context.preferences.addons["cycles"].preferences.compute_device_type
            except (KeyError, AttributeError):
                backend = "NONE"
            if backend and backend != "NONE":
                return f"GPU:{backend}"
        return "CPU"
    return "GPU" if engine.startswith(("BLENDER_EEVEE", "BLENDER_WORKBENCH")) else "CPU"


CYCLES_DEVICE_OPT = "--cycles-device"


def cycles_device(scene, cache: dict) -> tuple[str, str, str]:
    """(asked, used, why used is not asked) for Cycles, decided the way Cycles decides it
    (blender_device_info in intern/cycles/blender/device.cpp): the scene's device GPU, the preferences'
    compute device type, and the enabled device entries that match a device Cycles found; with none
    Cycles renders on the CPU and says nothing. `--cycles-device X` after `--` overrides all of it.

    Read-only: the add-on's get_devices() would add entries for new GPUs with use=True, which changes
    the device Cycles then picks, so the devices Cycles found are asked of `_cycles` directly."""
    override = _cycles_device_override(sys.argv)
    if override and override != "CPU":
        found = _available(override, cache)
        return f"GPU:{override}", (f"GPU:{override}" if found else "none"), ""
    if override == "CPU" or getattr(scene.cycles, "device", "CPU") != "GPU":
        return "CPU", "CPU", ""
    try:
        prefs = bpy.context.preferences.addons["cycles"].preferences
        backend = prefs.compute_device_type
    except (KeyError, AttributeError):
        return "GPU", "CPU", "the Cycles add-on's preferences are not available"
    if not backend or backend == "NONE":
        return "GPU", "CPU", ("the compute device type in the preferences is None (Preferences > System > "
                              "Cycles Render Devices; in background, a userpref.blend or --python that sets "
                              "compute_device_type and enables a device)")
    asked = f"GPU:{backend}"
    found = _available(backend, cache)
    enabled = [d for d in prefs.devices if d.use and d.type == backend]
    used = [d for d in enabled if d.id in found]
    if used:
        return asked, asked, ""
    if not found:
        return asked, "CPU", f"Cycles found no {backend} device on this host (driver, or a GPU not visible here)"
    if not enabled:
        return asked, "CPU", f"no {backend} device is enabled in the preferences ({len(found)} found)"
    return asked, "CPU", (f"the enabled {backend} device(s) {', '.join(d.name for d in enabled)} are not on this "
                          "host (preferences saved on another machine)")


def _available(backend: str, cache: dict) -> frozenset:
    ids = cache.get(backend)
    if ids is None:
        try:
            import _cycles

            ids = frozenset(d[2] for d in _cycles.available_devices(backend) if d[1] == backend)
        except Exception:
            ids = frozenset()
        cache[backend] = ids
    return ids


def _cycles_device_override(argv) -> str | None:
    """Cycles reads `--cycles-device TYPE` among the arguments after `--` (its own argument parser)."""
    if "--" not in argv:
        return None
    rest = argv[argv.index("--") + 1:]
    for i, a in enumerate(rest):
        if a == CYCLES_DEVICE_OPT and i + 1 < len(rest):
            return rest[i + 1].upper()
        if a.startswith(CYCLES_DEVICE_OPT + "="):
            return a.split("=", 1)[1].upper()
    return None


def say_settings(scene, asked, used, why) -> None:
    """One line for the healer: what each frame of this render should be (size, channels, device)."""
    import json

    r = scene.render
    pct = r.resolution_percentage
    cropped = r.use_border and r.use_crop_to_border
    facts = {"engine": r.engine, "file_format": r.image_settings.file_format,
             "color_mode": r.image_settings.color_mode,
             "width": None if cropped else r.resolution_x * pct // 100,
             "height": None if cropped else r.resolution_y * pct // 100,
             "device_asked": asked, "device_used": used, "fallback": why or None}
    line = events.SETTINGS_MARK + json.dumps(facts, separators=(",", ":")) + "\n"
    sys.stdout.flush()
    os.write(1, line.encode("utf-8", "surrogateescape"))


def render_samples(scene) -> int | None:
    engine = scene.render.engine
    if engine == "CYCLES":
        return int(scene.cycles.samples)
    if engine.startswith("BLENDER_EEVEE"):
        return int(scene.eevee.taa_render_samples)
    return None


def max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


# -- the handlers: module-level, @persistent, removed by identity --------------------------------

_hooks: Hooks | None = None
_error_logs = 0
_beat_at = -HEARTBEAT_EVERY_S


def beat() -> None:
    """Tell the healer this Blender is alive: touch the file it named in $RENDERWATCH_HEARTBEAT, at most
    once a second. Called from the render handlers (render_stats fires while Cycles samples on the
    wheels), so it beats only while Blender's own thread runs them, and it does not go through stdout,
    which a Blender built as a module buffers. Read at each beat: the healer's gate sets it after the
    hooks may have registered. O(1), never raises."""
    global _beat_at
    now = time.monotonic()
    if now - _beat_at < HEARTBEAT_EVERY_S:
        return
    _beat_at = now
    path = os.environ.get(ENV_HEARTBEAT)
    if path:
        try:
            os.utime(path)          # the healer made the file: nothing is created here
        except OSError:
            pass


def _swallow(where: str) -> None:
    """The guard's except branch: count, log the first few, never raise into Blender."""
    global _error_logs
    if _hooks is not None:
        _hooks.errors += 1
    if _error_logs < 5:
        _error_logs += 1
        # imported here, not at Blender's start: it and textwrap are ~5 ms of every start
        import traceback

        log.error("renderwatch hook %s failed (ignored):\n%s", where, traceback.format_exc())


@persistent
def rw_render_init(scene=None, _depsgraph=None):
    try:
        beat()
        if _hooks is not None:
            _hooks.job_start(scene)
    except Exception:
        _swallow("render_init")


@persistent
def rw_render_pre(scene=None, _depsgraph=None):
    try:
        beat()
        if _hooks is not None:
            _hooks.frame_start(scene)
    except Exception:
        _swallow("render_pre")


@persistent
def rw_render_stats(stats=None, _depsgraph=None):
    try:
        beat()
        if _hooks is not None:
            _hooks.stats(stats)
    except Exception:
        _swallow("render_stats")


@persistent
def rw_render_post(scene=None, _depsgraph=None):
    try:
        beat()
        if _hooks is not None:
            _hooks.frame_post(scene)
    except Exception:
        _swallow("render_post")


@persistent
def rw_render_write(scene=None, _depsgraph=None):
    try:
        beat()
        if _hooks is not None:
            _hooks.frame_end(scene, saved=True)
    except Exception:
        _swallow("render_write")


@persistent
def rw_render_complete(scene=None, _depsgraph=None):
    try:
        if _hooks is not None:
            _hooks.job_end("complete", scene)
    except Exception:
        _swallow("render_complete")


@persistent
def rw_render_cancel(scene=None, _depsgraph=None):
    try:
        if _hooks is not None:
            _hooks.job_end("cancel", scene)
    except Exception:
        _swallow("render_cancel")


@persistent
def rw_load_post(_filepath=None, _depsgraph=None):
    try:
        if _hooks is not None:
            _hooks.file_loaded()
    except Exception:
        _swallow("load_post")


HANDLERS = (
    ("render_init", rw_render_init), ("render_pre", rw_render_pre), ("render_stats", rw_render_stats),
    ("render_post", rw_render_post), ("render_write", rw_render_write),
    ("render_complete", rw_render_complete), ("render_cancel", rw_render_cancel),
    ("load_post", rw_load_post),
)
for _name, _fn in HANDLERS:
    setattr(_fn, MARK, __name__)
    setattr(_fn, IDENTITY_PER_JOB, True)


def _active_handler():
    for name, _fn in HANDLERS:
        for h in getattr(bpy.app.handlers, name):
            if getattr(h, MARK, None):
                return h
    return None


def active_copy() -> str | None:
    """Module name of the renderwatch copy whose handlers are registered, if any."""
    h = _active_handler()
    return None if h is None else getattr(h, MARK)


def register() -> None:
    """Add the handlers and start the spool (idempotent; a no-op when another copy is active)."""
    global _hooks
    active = _active_handler()
    owner = None if active is None else getattr(active, MARK)
    if owner is not None and owner != __name__:
        if getattr(active, IDENTITY_PER_JOB, False):
            log.info("renderwatch hooks already active (%s): not registering %s again", owner, __name__)
        else:
            log.warning("renderwatch hooks already active (%s) are an older renderwatch's, which reads the job id "
                        "and attempt when Blender starts: under the healer each attempt reports as a job of its "
                        "own. Run `renderwatch hooks install` again to update them", owner)
        return
    if _hooks is None:
        _hooks = Hooks()
        atexit.register(_at_exit)
    for name, fn in HANDLERS:
        lst = getattr(bpy.app.handlers, name)
        for stale in [h for h in lst if getattr(h, MARK, None) == __name__ and h is not fn]:
            lst.remove(stale)  # this module before a script reload: same name, other functions
        if fn not in lst:
            lst.append(fn)


def _remove_handlers() -> None:
    for name, fn in HANDLERS:
        lst = getattr(bpy.app.handlers, name)
        while fn in lst:
            lst.remove(fn)


def unregister() -> None:
    """Remove every handler of this module (by identity) and flush the spool (bounded)."""
    global _hooks
    _remove_handlers()
    hooks, _hooks = _hooks, None
    if hooks is not None:
        atexit.unregister(_at_exit)
        hooks.shutdown()


def _at_exit() -> None:
    """Leave nothing of ours for Blender's own teardown, within FLUSH_AT_EXIT_S (+ABORT_GRACE_S).

    Blender as a module (the bpy wheels) tears down after the interpreter's atexit callbacks: a
    Python handler still in bpy.app.handlers or a thread still alive then hangs bpy 4.5 for ever
    and crashes 4.2 with SIGSEGV. So the handlers go first, then the sender thread is stopped.
    """
    global _hooks
    try:
        _remove_handlers()
    except Exception:
        _swallow("exit")
    hooks, _hooks = _hooks, None
    if hooks is not None:
        try:
            hooks.shutdown()
        except Exception:
            _swallow("exit")


def state() -> Hooks | None:
    """The live hook state (tests and the benchmark read counters from it)."""
    return _hooks


# -- a blender-like command line over the bpy wheel (see wheel_cli.py) ---------------------------

def handler_lists() -> dict[str, list]:
    """Every handler list of bpy.app.handlers, by name."""
    out = {}
    for name in dir(bpy.app.handlers):
        lst = getattr(bpy.app.handlers, name, None)
        if isinstance(lst, list) and not name.startswith("_"):
            out[name] = lst
    return out


def release_handlers(keep: dict[str, set[int]]) -> int:
    """Remove the handlers added since `keep` (ids by list name), as Blender's own exit would.

    Blender as a module tears itself down after the interpreter: a Python function still in a
    handler list then hangs bpy 4.5 and crashes bpy 4.2 (SIGSEGV after "Blender quit"), whoever
    added it (a farm's --python script, a fault script). The add-ons' own handlers (Cycles, an
    installed renderwatch extension) stay: bpy's exit unregisters those add-ons, and each removes
    its own. Returns how many were removed.
    """
    removed = 0
    for name, lst in handler_lists().items():
        kept = keep.get(name, set())
        for fn in [h for h in lst if id(h) not in kept]:
            lst.remove(fn)
            removed += 1
    return removed


def run_cli(actions: list[tuple[str, str | None]]) -> int:
    """Execute parsed command-line actions in order, like Blender's own argument handling.

    `actions` come from `wheel_cli.parse`: ("file", path), ("engine", "CYCLES"), ("output", pat),
    ("format", "PNG"), ("extension", "1"), ("start", "1"), ("end", "3"), ("jump", "1"),
    ("frames", "1,3..5"), ("anim", None), ("python", path), ("expr", code), ("exit_code", "3"),
    ("threads", "4"). Returns the process exit status; prints "Blender quit" like Blender.
    """
    print(f"Blender {bpy.app.version_string} (hash {bpy.app.build_hash.decode(errors='replace')})", flush=True)
    # Blender reads the user's preferences (and so enables their add-ons) at startup; the module
    # does not, so do it here unless told otherwise.
    if ("factory_startup", None) not in actions:
        _read_user_preferences()
    keep = {name: {id(h) for h in lst} for name, lst in handler_lists().items()}  # the add-ons'
    try:
        return _run_actions(actions)
    finally:
        release_handlers(keep)


# bpy as a module of these release lines dies of SIGSEGV in wm.read_userpref (4.2.23, every time,
# with or without add-ons): there, an installed renderwatch extension is enabled directly instead.
READ_USERPREF_CRASHES = {(4, 2)}


def _read_user_preferences() -> None:
    """Read the user's preferences (and so enable their add-ons) as Blender does at startup."""
    if tuple(bpy.app.version[:2]) in READ_USERPREF_CRASHES:
        repo = bpy.utils.user_resource("EXTENSIONS", path="user_default")
        if os.path.isfile(os.path.join(repo, "renderwatch_hooks", "blender_manifest.toml")):
            bpy.ops.preferences.addon_enable(module="bl_ext.user_default.renderwatch_hooks")
        return
    prefs = os.path.join(bpy.utils.user_resource("CONFIG"), "userpref.blend")
    if os.path.exists(prefs):
        bpy.ops.wm.read_userpref()


def _run_actions(actions: list[tuple[str, str | None]]) -> int:
    exit_code = 0        # --python-exit-code N
    threads = 0
    status = 0
    for kind, value in actions:
        scene = bpy.context.scene
        if kind == "file":
            path = os.path.abspath(value or "")
            try:
                bpy.ops.wm.open_mainfile(filepath=path)
            except RuntimeError:  # Blender has printed "Error: Cannot read file ..." itself
                print("\nBlender quit", flush=True)
                return 1
        elif kind == "engine":
            try:
                scene.render.engine = value
            except TypeError:  # as Blender: say so and stop
                print(f"\nError: engine not found '{value}'", flush=True)
                return 1
        elif kind == "output":
            scene.render.filepath = value
        elif kind == "format":
            try:
                scene.render.image_settings.file_format = value
            except TypeError:  # as Blender: say so and go on
                print("\nError: Format from '-F / --render-format' not known or not compiled in this release.",
                      flush=True)
        elif kind == "extension":
            scene.render.use_file_extension = value not in ("0", "false", "False")
        elif kind in ("start", "end", "jump"):
            setattr(scene, {"start": "frame_start", "end": "frame_end", "jump": "frame_step"}[kind], int(value or 0))
        elif kind == "factory_startup":
            pass
        elif kind == "threads":
            threads = int(value or 0)
        elif kind == "exit_code":
            exit_code = int(value or 0)
        elif kind in ("anim", "frames"):
            if not _cli_render(scene, value if kind == "frames" else None, threads):
                status = 1
        elif kind in ("python", "expr"):
            if not _cli_python(kind, value or ""):
                if exit_code:
                    what = f"file: '{os.path.basename(value or '')}'" if kind == "python" else f"expr: '{value}'"
                    print(f"Error: script failed, {what}, exiting.", flush=True)
                    return exit_code
    print("\nBlender quit", flush=True)
    return status


def _cli_render(scene, frames: str | None, threads: int) -> bool:
    """Render the animation (frames None) or each listed frame as its own one-frame animation."""
    r = scene.render
    if threads > 0:
        r.threads_mode, r.threads = "FIXED", threads
    runs: list[int | None]
    if frames is None:
        runs = [None]
    else:
        parsed = parse_frame_list(frames)
        if parsed is None:
            print(f"Error: invalid frame list '{frames}'", flush=True)
            return False
        runs = list(parsed)
    ok = True
    for f in runs:
        saved = scene.frame_start, scene.frame_end
        try:
            if f is not None:  # like `blender -f`: a one-frame animation, so the output is numbered
                scene.frame_start = scene.frame_end = f
            bpy.ops.render.render(animation=True, scene=scene.name)
        except RuntimeError:  # Blender has printed the render error itself
            ok = False
        finally:
            if f is not None:
                scene.frame_start, scene.frame_end = saved
    return ok


def _cli_python(kind: str, value: str) -> bool:
    """Run a --python file or --python-expr like Blender: print a traceback, report success."""
    try:
        if kind == "python":
            import runpy  # the wheel's command line only

            runpy.run_path(value, run_name="__main__")
        else:
            exec(compile(value, "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit:
        raise
    except BaseException:
        sys.stdout.flush()
        import traceback

        print("Error: Python: " + traceback.format_exc(), end="", flush=True)
        return False
    return True


# -- demo scene ----------------------------------------------------------------------------------

def make_demo_scene(path: str, frames: int = 10, samples: int = 16, width: int = 160, height: int = 90,
                    engine: str = "CYCLES") -> None:
    """Build a small animated scene (Suzanne, subdivided, turning once) and save it to `path`.

    Usage (inside Blender): ``blender -b --factory-startup --python-expr
    "from blender_hooks import addon; addon.make_demo_scene('/tmp/demo.blend', 24)"``
    """
    bpy.ops.wm.read_factory_settings(use_empty=False)
    scene = bpy.context.scene
    scene.render.engine = engine
    if engine == "CYCLES":
        scene.cycles.samples = samples
        scene.cycles.use_denoising = False  # Debian's Blender is built without OpenImageDenoise
        scene.cycles.device = "CPU"
    scene.render.resolution_x = width
    scene.render.resolution_y = height
    scene.render.resolution_percentage = 100
    scene.frame_start = 1
    scene.frame_end = frames
    scene.render.image_settings.file_format = "PNG"
    bpy.ops.mesh.primitive_monkey_add(location=(0, 0, 1))
    monkey = bpy.context.active_object
    mod = monkey.modifiers.new("sub", "SUBSURF")
    mod.levels = 1
    mod.render_levels = 1
    monkey.rotation_euler = (0, 0, 0)
    monkey.keyframe_insert("rotation_euler", frame=1)
    monkey.rotation_euler = (0, 0, 6.283)
    monkey.keyframe_insert("rotation_euler", frame=max(frames, 2))
    scene.render.filepath = "//frames/f_"
    bpy.ops.wm.save_as_mainfile(filepath=path)
