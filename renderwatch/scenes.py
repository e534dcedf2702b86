"""Generate small real .blend scenes (for the demo, the tests and the benchmarks) with real Blender.

Usage::

    path = create_demo_scene("/tmp/demo.blend", frames=24, blender="blender")
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from blender_hooks.settings import ENV_BLENDER, ENV_BPY_PYTHON

REPO_ROOT = Path(__file__).resolve().parent.parent


def find_blender(explicit: str | None = None) -> str | None:
    """The Blender executable to use: explicit, $RENDERWATCH_BLENDER, then `blender` on PATH."""
    cand = explicit or os.environ.get(ENV_BLENDER) or "blender"
    return shutil.which(cand)


def create_demo_scene(path: str | os.PathLike[str], frames: int = 10, samples: int = 16,
                      width: int = 160, height: int = 90, blender: str | None = None,
                      timeout: float = 120) -> Path:
    """Write a small animated Cycles scene to `path` using a real Blender (3.4 binary by default).

    A scene saved by Blender 3.4 opens in 5.0 too, so one generator serves both versions.
    """
    exe = find_blender(blender)
    if exe is None:
        raise FileNotFoundError("no Blender found: install Debian's `blender` or set RENDERWATCH_BLENDER")
    out = Path(path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    pkg_root = str(Path(__file__).resolve().parent.parent)
    expr = (f"import sys; sys.path.insert(0, {pkg_root!r}); from blender_hooks import addon; "
            f"addon.make_demo_scene({str(out)!r}, {int(frames)}, {int(samples)}, {int(width)}, {int(height)})")
    proc = subprocess.run([exe, "-b", "--factory-startup", "--python-exit-code", "3", "--python-expr", expr],
                          capture_output=True, text=True, errors="replace", timeout=timeout)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"scene generation failed (exit {proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return out


def bpy_python() -> str | None:
    """A Python interpreter that can `import bpy` (the bpy==5.0.1 wheel), or None."""
    cand = os.environ.get(ENV_BPY_PYTHON) or sys.executable
    try:
        ok = subprocess.run([cand, "-c", "import importlib.util,sys; sys.exit(importlib.util.find_spec('bpy') is None)"],
                            capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return None
    return cand if ok else None
