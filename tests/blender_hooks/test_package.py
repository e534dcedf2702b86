"""The hooks package outside Blender: no bpy on import, the manifest, `renderwatch hooks path`,
and the blender-compatible argument parser of renderwatch-blender5."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import blender_hooks
from blender_hooks import wheel_cli
from renderwatch import hooks as hooks_cli

PKG = Path(blender_hooks.__file__).parent


def test_importing_the_package_and_schema_does_not_import_bpy():
    code = ("import sys, blender_hooks, blender_hooks.events, blender_hooks.spool, blender_hooks.stats, "
            "renderwatch.hooks, blender_hooks.wheel_cli; sys.exit('bpy' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_stdlib_only_in_what_runs_inside_blender():
    import ast
    # Blender's own modules: bpy, and _cycles (Cycles' C module, asked which devices it found)
    allowed = set(sys.stdlib_module_names) | {"bpy", "_cycles"}
    for name in hooks_cli.PACKAGE_FILES:
        if not name.endswith(".py"):
            continue
        tree = ast.parse((PKG / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module or ""]
            else:
                continue
            for m in mods:
                assert m.split(".")[0] in allowed, f"{name} imports {m}"


def test_every_module_the_installed_package_imports_is_installed_with_it():
    """The add-on and the extension get PACKAGE_FILES only: a module of the hooks left out (found:
    logs.py) makes every `renderwatch hooks install` fail inside Blender with ModuleNotFoundError."""
    import ast

    shipped = set(hooks_cli.PACKAGE_FILES)
    for name in shipped:
        if not name.endswith(".py"):
            continue
        for node in ast.walk(ast.parse((PKG / name).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = [node.module] if node.module else [a.name for a in node.names]
                for t in targets:
                    assert f"{t.split('.')[0]}.py" in shipped, f"{name} imports .{t}, not in PACKAGE_FILES"


def test_only_addon_imports_bpy():
    import ast
    for p in PKG.glob("*.py"):
        if p.name == "addon.py":
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "bpy" for n in names), p.name


def test_legacy_bl_info_and_extension_manifest():
    assert blender_hooks.bl_info["blender"] == (3, 4, 0)
    assert callable(blender_hooks.register) and callable(blender_hooks.unregister)
    m = tomllib.loads((PKG / "blender_manifest.toml").read_text())
    assert m["schema_version"] == "1.0.0" and m["id"] == "renderwatch_hooks" and m["type"] == "add-on"
    assert m["blender_version_min"] == "4.2.0"
    assert set(m["permissions"]) == {"network", "files"} and all(m["permissions"].values())
    assert len(m["tagline"]) <= 64 and not m["tagline"].endswith(".")


def test_hooks_path_prints_the_startup_script():
    out = subprocess.run([sys.executable, "-m", "renderwatch", "hooks", "path"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    path = Path(out.stdout.strip())
    assert path.is_absolute() and path.name == "startup.py" and path.exists()


def test_install_targets_by_version(tmp_path):
    legacy = hooks_cli.targets({"version": [3, 4, 1], "scripts": str(tmp_path / "s")})
    assert legacy == [(tmp_path / "s" / "addons" / "renderwatch_hooks", "renderwatch_hooks")]
    new = hooks_cli.targets({"version": [4, 2, 0], "scripts": str(tmp_path / "s"), "extensions": str(tmp_path / "e")})
    assert new[0] == (tmp_path / "e" / "renderwatch_hooks", "bl_ext.user_default.renderwatch_hooks")


def test_wheel_cli_parses_in_order():
    acts = wheel_cli.parse(["-b", "a.blend", "--factory-startup", "-E", "CYCLES", "-o", "//f_", "-F", "PNG", "-x", "1",
                            "-s", "2", "-e", "5", "-j", "1", "-t", "2", "--python", "x.py", "--python-expr", "pass",
                            "--python-exit-code", "3", "-f", "1,3..4", "-a", "--", "-a", "ignored"])
    assert acts == [("file", "a.blend"), ("factory_startup", None), ("engine", "CYCLES"), ("output", "//f_"),
                    ("format", "PNG"), ("extension", "1"), ("start", "2"), ("end", "5"), ("jump", "1"),
                    ("threads", "2"), ("python", "x.py"), ("expr", "pass"), ("exit_code", "3"),
                    ("frames", "1,3..4"), ("anim", None)]


def test_wheel_cli_errors():
    with pytest.raises(wheel_cli.UsageError):
        wheel_cli.parse(["-s"])
    with pytest.raises(wheel_cli.UsageError):
        wheel_cli.parse(["-s", "one"])
    assert wheel_cli.parse(["--bogus"]) == [("file", "--bogus")]  # like Blender: loaded as a file
