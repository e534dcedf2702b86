"""Helpers for the healer's integration tests: run the real `renderwatch render` CLI on real Blender."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAULTS = REPO / "tests" / "faults"
RENDERWATCH = [sys.executable, "-m", "renderwatch"]


def healer_env(home: Path, **extra: str) -> dict[str, str]:
    """A private state root, fast backoff and kill grace, hooks that spool locally (no agent)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RENDERWATCH_", "SENTRY_", "FAULT_"))}
    env.update({
        "RENDERWATCH_HOME": str(home), "RENDERWATCH_AGENT": "off", "RENDERWATCH_SPOOL_DIR": str(home / "spool"),
        "RENDERWATCH_HEALER_BACKOFF_S": "0.05", "RENDERWATCH_HEALER_KILL_GRACE_S": "2",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    env.update(extra)
    return env


def render(args: list[str], home: Path, report: Path, *, timeout: float = 120, **env: str) -> tuple[int, dict, str]:
    """Run `renderwatch render ARGS --report REPORT`; (exit status, report, output)."""
    proc = subprocess.run([*RENDERWATCH, "render", *args[:1], "--report", str(report), "--quiet", *args[1:]],
                          env=healer_env(home, **env), capture_output=True, text=True, timeout=timeout)
    doc = json.loads(report.read_text()) if report.exists() else {}
    return proc.returncode, doc, proc.stdout + proc.stderr


def fault(name: str) -> str:
    return str(FAULTS / f"{name}.py")


def assert_every_frame_once(doc: dict, frames: list[int]) -> None:
    """Every requested frame completed, its file a verified image, and none rendered more than twice (0: already there)."""
    assert doc["frames_requested"] == frames
    assert doc["frames_completed"] == frames, doc
    for f in frames:
        assert doc["frame_render_counts"][str(f)] <= 2, doc["frame_render_counts"]
    rendered = [f for a in doc["attempts"] for f in a["frames_rendered"]]
    assert sorted(rendered) == sorted(set(rendered)), f"a frame was saved by two attempts: {rendered}"
