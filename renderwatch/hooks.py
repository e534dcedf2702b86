"""`renderwatch hooks ...`: where the Blender hooks live, and installing them into a Blender.

    renderwatch hooks path                      # for `blender --python PATH`
    renderwatch hooks install [--blender EXE]   # every launch of that Blender reports
    renderwatch hooks uninstall [--blender EXE]
    renderwatch hooks check [--blender EXE]     # one tiny frame with the hooks: a plain verdict

Check renders as the healer does: the user's preferences loaded (so an installed copy registers
first), the hooks' startup script passed with --python, and the job id and attempt given after
Blender has started, through the healer's start gate; the events must carry them.

Install asks that Blender (a subprocess) for its version and user directories, copies the hooks
(standard-library files only) and enables them in the user preferences from inside that Blender:
Blender 3.x-4.1 get a legacy add-on in <user scripts>/addons/renderwatch_hooks, 4.2+ an
extension in the "user_default" repository (<user extensions>/user_default/renderwatch_hooks).
Blender's own BLENDER_USER_CONFIG / BLENDER_USER_SCRIPTS / BLENDER_USER_EXTENSIONS are honoured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import blender_hooks
from blender_hooks.settings import ENV_ATTEMPT, ENV_JOB_ID

PACKAGE_DIR = Path(blender_hooks.__file__).resolve().parent
STARTUP = PACKAGE_DIR / "startup.py"
# What runs inside Blender: the standard-library modules the add-on imports.
PACKAGE_FILES = ("__init__.py", "addon.py", "events.py", "farm.py", "logs.py", "settings.py", "spool.py", "stats.py",
                 "statedir.py", "spoolfile.py", "transport.py", "blender_manifest.toml")
ADDON_ID = "renderwatch_hooks"
EXTENSIONS_REPO = "user_default"
EXTENSION_MIN = (4, 2, 0)
MARKER = "RENDERWATCH_HOOKS_RESULT "
TIMEOUT_S = 180

_QUERY = f"""
import json, bpy
v = tuple(bpy.app.version)
info = {{"version": list(v), "version_string": bpy.app.version_string,
        "scripts": bpy.utils.user_resource('SCRIPTS')}}
if v >= {EXTENSION_MIN!r}:
    info["extensions"] = bpy.utils.user_resource('EXTENSIONS', path={EXTENSIONS_REPO!r})
print({MARKER!r} + json.dumps(info), flush=True)
"""

_TOGGLE = """
import json, bpy
mod, enable = {module!r}, {enable!r}
if enable:
    bpy.ops.preferences.addon_enable(module=mod)
elif mod in bpy.context.preferences.addons:
    bpy.ops.preferences.addon_disable(module=mod)
bpy.ops.wm.save_userpref()
print({marker!r} + json.dumps({{"enabled": mod in bpy.context.preferences.addons}}), flush=True)
"""


class HooksInstallError(RuntimeError):
    pass


def _run_blender(exe: str, expr: str, factory: bool) -> dict:
    """Run a Python expression inside that Blender; return the JSON it printed after MARKER."""
    argv = [exe, "-b", *(["--factory-startup"] if factory else []), "--python-exit-code", "3",
            "--python-expr", expr]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HooksInstallError(f"could not run {exe}: {e}") from None
    for line in proc.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    tail = (proc.stdout + proc.stderr)[-1500:]
    raise HooksInstallError(f"{exe} exited {proc.returncode} without an answer:\n{tail}")


def query_blender(exe: str) -> dict:
    """{"version": [3, 4, 1], "version_string", "scripts": dir, "extensions": dir (4.2+)}."""
    return _run_blender(exe, _QUERY, factory=True)


def set_enabled(exe: str, module: str, enable: bool) -> bool:
    """Enable/disable an add-on persistently (in that Blender's user preferences)."""
    expr = _TOGGLE.format(module=module, enable=enable, marker=MARKER)
    return bool(_run_blender(exe, expr, factory=False)["enabled"])


def targets(info: dict) -> list[tuple[Path, str]]:
    """(directory, add-on module name) where the hooks go or may be, preferred first."""
    legacy = (Path(info["scripts"]) / "addons" / ADDON_ID, ADDON_ID)
    if tuple(info["version"]) >= EXTENSION_MIN and info.get("extensions"):
        ext = (Path(info["extensions"]) / ADDON_ID, f"bl_ext.{EXTENSIONS_REPO}.{ADDON_ID}")
        return [ext, legacy]
    return [legacy]


def copy_package(dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in PACKAGE_FILES:
        shutil.copy2(PACKAGE_DIR / name, dest / name)


def install(exe: str) -> tuple[dict, Path, str]:
    info = query_blender(exe)
    dest, module = targets(info)[0]
    copy_package(dest)
    if not set_enabled(exe, module, True):
        raise HooksInstallError(f"Blender {info['version_string']} did not enable {module} (copied to {dest})")
    return info, dest, module


def uninstall(exe: str) -> tuple[dict, list[Path]]:
    info = query_blender(exe)
    removed = []
    for dest, module in targets(info):
        if dest.exists():
            set_enabled(exe, module, False)
            shutil.rmtree(dest)
            removed.append(dest)
    return info, removed


def _blender(explicit: str | None) -> str:
    from renderwatch.scenes import find_blender

    exe = find_blender(explicit)
    if exe is None:
        raise HooksInstallError(f"no Blender found ({explicit or 'blender'}): pass --blender EXE "
                                "or set RENDERWATCH_BLENDER")
    return exe


# -- hooks check ------------------------------------------------------------------------------------

EXIT_BOUND_S = 3.0        # last line to exit: the hooks' flush bound (0.5 + 0.2 s) plus Blender's teardown
_CHECK_SCENE = """
import bpy
s = bpy.context.scene
s.render.engine = "CYCLES"
s.cycles.samples, s.cycles.use_denoising, s.cycles.device = 1, False, "CPU"
s.render.resolution_x = s.render.resolution_y = 16
s.render.resolution_percentage = 100
s.render.image_settings.file_format = "PNG"
s.render.filepath = {out!r}
s.frame_start = s.frame_end = 1
bpy.ops.render.render(animation=True)
import json
h = next((h for h in bpy.app.handlers.render_init if getattr(h, "_renderwatch_hook", None)), None)
copy = {{"copy": getattr(h, "_renderwatch_hook", None),
        "identity_per_job": bool(getattr(h, "_renderwatch_identity_per_job", False))}}
print({marker!r} + json.dumps(copy), flush=True)
"""
# The test frame is attempt 2 of its job, as a restarted render's: one whose attempt never reached
# the hooks shows as attempt 1 at the agent.
CHECK_ATTEMPT = 2
OLD_COPY_FIX = ("the hooks that ran read the job id and attempt when Blender started, before the healer gives "
                "them: an add-on or extension installed by an older renderwatch (run `renderwatch hooks install "
                "--blender EXE` again), or a copy of its own that a studio script loads (update it)")


class Check:
    """The result lines of `renderwatch hooks check` and the verdict they add up to."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str]] = []   # (ok|warn|FAIL, what, what to do)

    def add(self, status: str, what: str, fix: str = "") -> None:
        self.lines.append((status, what, fix))

    @property
    def failed(self) -> bool:
        return any(s == "FAIL" for s, _w, _f in self.lines)

    def report(self) -> str:
        out = []
        for status, what, fix in self.lines:
            out.append(f"  {status:<4}  {what}")
            if fix:
                out.append(f"        -> {fix}")
        if self.failed:
            out.append("verdict: FAIL: renders on this Blender are not reported as they should be (see above)")
        elif any(s == "warn" for s, _w, _f in self.lines):
            out.append("verdict: PASS with a warning: the hooks work; see the warning above")
        else:
            out.append("verdict: PASS: every render of this Blender with the hooks loaded reports to renderwatch")
        return "\n".join(out)


def _run_timed(argv: list[str], env: dict[str, str], timeout: float,
               stdin: bytes | None = None) -> tuple[int | None, str, float, float, int]:
    """Run argv, `stdin` written to it once started; (exit status, or None when killed, output, wall s,
    s from its last line to its end, pid).

    Killed at `timeout`, or EXIT_BOUND_S x 3 after "Blender quit" (a Blender that hangs on exit
    is the failure this looks for: no point waiting the whole timeout for it).
    """
    import threading
    import time

    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    if proc.stdin is not None:
        try:
            proc.stdin.write(stdin or b"")
        except OSError:      # it is gone already: its output says why
            pass
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass
    chunks: list[bytes] = []
    last = [t0]
    quit_at: list[float] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            chunks.append(line)
            last[0] = time.monotonic()
            if line.strip() == b"Blender quit":
                quit_at.append(last[0])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    rc: int | None = None
    while True:
        try:
            rc = proc.wait(0.05)
            break
        except subprocess.TimeoutExpired:
            now = time.monotonic()
            if now - t0 > timeout or (quit_at and now - quit_at[0] > 3 * EXIT_BOUND_S):
                proc.kill()
                proc.wait()
                break
    end = time.monotonic()
    reader.join(2)
    return rc, b"".join(chunks).decode(errors="replace"), end - t0, end - last[0], proc.pid


def _agent_saw(base: str, token: str | None, job: str, pid: int) -> tuple[str | None, str]:
    """What the agent made of the test frame, and a detail: "ok" (as job `job`, attempt CHECK_ATTEMPT),
    "attempt" (as `job` but another attempt), "identity" (as another job: its id in the detail),
    "missing" (not at all), or None (the agent is unreachable: why)."""
    import time

    from agent.status import fetch_jobs

    deadline = time.monotonic() + 5.0
    while True:
        try:
            doc = fetch_jobs(base, token)
        except Exception as e:   # refused, timeout, 401, not JSON
            return None, str(getattr(e, "reason", None) or e)
        jobs = doc.get("jobs", [])
        mine = [j for j in jobs if j.get("job") == job]
        if mine and mine[0].get("frames_done", 0) >= 1:
            j = mine[0]
            if j.get("attempts") != CHECK_ATTEMPT:
                return "attempt", f"attempt {j.get('attempts')}"
            return "ok", f"{j['frames_done']} frame, attempt {j.get('attempts')}, status {j.get('status')}"
        other = [j for j in jobs if j.get("pid") == pid and j.get("job") != job and j.get("frames_done", 0) >= 1]
        if other:
            return "identity", str(other[0].get("job"))
        if time.monotonic() >= deadline:
            if mine:
                return "missing", f"its job_start but no frame (status {mine[0].get('status')})"
            return "missing", f"{len(jobs)} other job(s)"
        time.sleep(0.2)


def _spooled(directory: Path, job: str, pid: int) -> tuple[int, int, set[str]]:
    """(events of `job`, of them those carrying attempt CHECK_ATTEMPT, other job ids of process `pid`)."""
    from blender_hooks.events import decode
    from blender_hooks.spoolfile import list_segments, segment_path

    n = with_attempt = 0
    others: set[str] = set()
    for path in (segment_path(directory, session, i) for session, idx in list_segments(directory).items()
                 for i in idx):
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                ev = decode(line)
            except ValueError:
                continue
            if ev.get("job") == job:
                n += 1
                with_attempt += ev.get("attempt") == CHECK_ATTEMPT
            elif ev.get("pid") == pid:
                others.add(str(ev.get("job")))
    return n, with_attempt, others


def _copy_line(text: str) -> dict | None:
    for line in text.splitlines():
        if line.startswith(MARKER):
            try:
                return json.loads(line[len(MARKER):])
            except ValueError:
                return None
    return None


def check(exe: str, timeout: float = 120.0) -> Check:
    """Render one 16x16 frame with the hooks in `exe`, as the healer starts Blender, and judge what came of it."""
    import os
    import tempfile

    from blender_hooks import spool
    from healer.supervising.spawn import GATE_ENV, GATE_EXPR

    c = Check()
    try:
        info = query_blender(exe)
    except HooksInstallError as e:
        c.add("FAIL", f"{exe} does not run as Blender: {e}",
              "pass --blender EXE (a Blender binary, or renderwatch-blender beside a bpy wheel)")
        return c
    c.add("ok", f"Blender {info['version_string']} at {exe}")
    job = f"hooks-check-{os.urandom(4).hex()}"
    # As the healer: Blender starts without the job's identity and gets it at the gate, once started
    # (its user preferences loaded, so a copy installed there has registered by then).
    env = {k: v for k, v in os.environ.items() if k not in GATE_ENV}
    gate = json.dumps({ENV_JOB_ID: job, ENV_ATTEMPT: str(CHECK_ATTEMPT)}).encode() + b"\n"
    with tempfile.TemporaryDirectory(prefix="renderwatch-check-") as tmp:
        out = os.path.join(tmp, "f_")
        argv = [exe, "-b", "--python-exit-code", "3", "--python-expr", GATE_EXPR, "--python", str(STARTUP),
                "--python-expr", _CHECK_SCENE.format(out=out, marker=MARKER)]
        rc, text, wall, exit_delay, pid = _run_timed(argv, env, timeout, stdin=gate)
        frame = os.path.exists(out + "0001.png")
    tail = "\n".join("          " + ln for ln in text.strip().splitlines()[-8:])
    if rc is None and "Blender quit" in text:
        c.add("FAIL", f"Blender printed 'Blender quit' and did not exit ({exit_delay:.1f} s later, killed)",
              "a farm task would hang until its timeout: run again with RENDERWATCH_AGENT=off; if that "
              "exits, the agent's address is the problem, else report it with this output")
    elif rc is None:
        c.add("FAIL", f"Blender did not finish within {timeout:.0f} s (killed); its last lines:\n{tail}",
              "try a longer --timeout on a slow machine; else report it with this output")
    elif rc != 0 or not frame:
        try:
            from healer.diagnosis.classify import classify

            why = classify(text, exit_code=rc).summary
        except Exception:   # the verdict must not depend on the classifier
            why = f"exit status {rc}"
        c.add("FAIL", f"the test frame did not render ({why}); last lines:\n{tail}",
              "run the same Blender on a scene of yours; if it renders there, report this output")
    else:
        c.add("ok", f"one frame rendered with the hooks loaded ({wall:.1f} s)")
    copy = _copy_line(text)
    if copy and copy.get("copy"):
        if copy.get("identity_per_job"):
            c.add("ok", f"the hooks that ran: {copy['copy']}")
        else:
            c.add("warn", f"the hooks that ran, {copy['copy']}, are an older renderwatch's",
                  "run `renderwatch hooks install --blender EXE` again (or update a studio script's own copy)")
    if rc is not None and frame:
        if exit_delay <= EXIT_BOUND_S:
            c.add("ok", f"exits by itself {exit_delay:.2f} s after its last line (bound {EXIT_BOUND_S:.1f} s)")
        else:
            c.add("FAIL", f"took {exit_delay:.2f} s to exit after its last line (bound {EXIT_BOUND_S:.1f} s)",
                  "a farm task would wait that long per launch: report it with this output")
    if "renderwatch hook" in text and "failed (ignored)" in text:
        c.add("warn", "a hook raised inside Blender (ignored, the render went on)",
              "report it with this output: some events may be missing")
    url = spool.agent_url()
    sdir = spool.spool_dir()
    given = f"job {job}, attempt {CHECK_ATTEMPT}, given at the healer's start gate"
    if url is None:
        n, with_attempt, others = _spooled(sdir, job, pid)
        if n and with_attempt == n:
            c.add("ok", f"{n} event(s) of the test job in the spool {sdir} (RENDERWATCH_AGENT=off), "
                  f"each with its attempt")
        elif n:
            c.add("FAIL", f"{n - with_attempt} of {n} event(s) of the test job in the spool lack attempt "
                  f"{CHECK_ATTEMPT} ({given})", OLD_COPY_FIX)
        elif others:
            c.add("FAIL", f"the test frame's events in the spool {sdir} are job {', '.join(sorted(others))}, not "
                  f"the {given}", OLD_COPY_FIX)
        else:
            c.add("FAIL", f"no event of the test job in the spool {sdir}",
                  "the hooks did not load or could not write there: check its permissions and the output")
        return c
    base = url[: -len(spool.EVENTS_PATH)]
    saw, detail = _agent_saw(base, spool.agent_token(), job, pid)
    if saw == "ok":
        c.add("ok", f"the agent at {base} counted the test job ({detail})")
    elif saw == "attempt":
        c.add("FAIL", f"the agent at {base} counted the test job as {detail}, not the {given}", OLD_COPY_FIX)
    elif saw == "identity":
        c.add("FAIL", f"the agent at {base} counted the test frame as job {detail}, not as the {given}: under "
              "the healer every attempt of a render would be a job of its own", OLD_COPY_FIX)
    elif saw == "missing":
        n = _spooled(sdir, job, pid)[0]
        c.add("FAIL", f"the agent at {base} answers but never saw the test job ({detail}); "
              f"{n} of its event(s) still in the spool {sdir}",
              "check that RENDERWATCH_TOKEN is the agent's, and the agent's log for rejected events")
    else:
        n, _with_attempt, others = _spooled(sdir, job, pid)
        if not n and others:
            c.add("FAIL", f"the agent at {base} is unreachable ({detail}); the test frame's events wait in the "
                  f"spool {sdir} as job {', '.join(sorted(others))}, not the {given}", OLD_COPY_FIX)
        else:
            status = "warn" if n else "FAIL"
            c.add(status, f"the agent at {base} is unreachable ({detail}); {n} event(s) of the test job wait in "
                  f"the spool {sdir}", "start it (`renderwatch agent`) or set RENDERWATCH_AGENT to its address; "
                  "spooled events are delivered when it comes up")
    return c


def cmd_check(args: argparse.Namespace) -> int:
    try:
        exe = _blender(args.blender)
    except HooksInstallError as e:
        print(f"renderwatch hooks check: {e}", file=sys.stderr)
        return 1
    print(f"renderwatch hooks check: rendering one test frame with {exe} ...", flush=True)
    result = check(exe, timeout=args.timeout)
    print(result.report())
    return 1 if result.failed else 0


def cmd_path(_args: argparse.Namespace) -> int:
    print(STARTUP)
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    try:
        info, dest, module = install(_blender(args.blender))
    except HooksInstallError as e:
        print(f"renderwatch hooks install: {e}", file=sys.stderr)
        return 1
    kind = "extension" if module.startswith("bl_ext.") else "add-on"
    print(f"installed renderwatch hooks into Blender {info['version_string']} as {kind} {module} at {dest} (enabled)")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    try:
        info, removed = uninstall(_blender(args.blender))
    except HooksInstallError as e:
        print(f"renderwatch hooks uninstall: {e}", file=sys.stderr)
        return 1
    if not removed:
        print(f"renderwatch hooks are not installed in Blender {info['version_string']}")
    for dest in removed:
        print(f"removed renderwatch hooks from Blender {info['version_string']}: {dest}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hooks", help="the Blender hooks: path, install, uninstall, check",
                       description=__doc__.split("\n\n")[0])
    hs = p.add_subparsers(dest="hooks_command", metavar="ACTION")
    hs.add_parser("path", help="print the script to pass as `blender --python PATH`").set_defaults(func=cmd_path)
    for name, func, text in (("install", cmd_install, "install into a Blender so every launch reports"),
                             ("uninstall", cmd_uninstall, "remove from a Blender")):
        sp = hs.add_parser(name, help=text)
        sp.add_argument("--blender", metavar="EXE", help="Blender executable (default $RENDERWATCH_BLENDER, "
                        "then `blender`); renderwatch-blender for a bpy wheel")
        sp.set_defaults(func=func)
    sp = hs.add_parser("check", help="render one tiny frame with the hooks and say whether they work")
    sp.add_argument("--blender", metavar="EXE", help="Blender executable (default $RENDERWATCH_BLENDER, "
                    "then `blender`); renderwatch-blender for a bpy wheel")
    sp.add_argument("--timeout", type=float, default=120.0, help="seconds before Blender is killed (default 120)")
    sp.set_defaults(func=cmd_check)
    p.set_defaults(func=lambda _a: (p.print_help(), 2)[1])
