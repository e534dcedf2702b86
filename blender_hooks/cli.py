"""`renderwatch hooks ...`: where the Blender hooks live, and installing them into a Blender.

    renderwatch hooks path                      # for `blender --python PATH`
    renderwatch hooks install [--blender EXE]   # every launch of that Blender reports
    renderwatch hooks uninstall [--blender EXE]

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

PACKAGE_DIR = Path(__file__).resolve().parent
STARTUP = PACKAGE_DIR / "startup.py"
# What runs inside Blender: the standard-library modules (not this CLI nor the wheel's).
PACKAGE_FILES = ("__init__.py", "addon.py", "events.py", "spool.py", "stats.py", "transport.py", "blender_manifest.toml")
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
    p = sub.add_parser("hooks", help="the Blender hooks: path, install, uninstall",
                       description=__doc__.split("\n\n")[0])
    hs = p.add_subparsers(dest="hooks_command", metavar="ACTION")
    hs.add_parser("path", help="print the script to pass as `blender --python PATH`").set_defaults(func=cmd_path)
    for name, func, text in (("install", cmd_install, "install into a Blender so every launch reports"),
                             ("uninstall", cmd_uninstall, "remove from a Blender")):
        sp = hs.add_parser(name, help=text)
        sp.add_argument("--blender", metavar="EXE", help="Blender executable (default $RENDERWATCH_BLENDER, "
                        "then `blender`); renderwatch-blender5 for the 5.0 wheel")
        sp.set_defaults(func=func)
    p.set_defaults(func=lambda _a: (p.print_help(), 2)[1])
