"""Helpers for the healer's integration tests: run the real `renderwatch render` CLI on real Blender."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
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
    """Every requested frame completed with a verified image and rendered exactly once, except a frame
    lost with a failed attempt (the first frame it planned and did not keep: the one in flight, or one
    whose file the crash left partial), which may be rendered once more per such attempt; 0 renders
    for a frame that was on disk already; and no frame saved by two attempts."""
    assert doc["frames_requested"] == frames
    assert doc["frames_completed"] == frames, doc
    saved = [f for a in doc["attempts"] for f in a["frames_rendered"]]
    assert sorted(saved) == sorted(set(saved)), f"a frame was saved by two attempts: {saved}"
    lost = [next((f for f in a["frames_planned"] if f not in a["frames_rendered"]), None)
            for a in doc["attempts"] if a.get("error_type") not in (None, "ok")]
    for f in frames:
        n = doc["frame_render_counts"][str(f)]
        allowed = set(range(1, 2 + lost.count(f))) | ({0} if f not in saved else set())
        assert n in allowed, f"frame {f} rendered {n} times (lost with a failed attempt {lost.count(f)} times): " \
                             f"{doc['frame_render_counts']}"


class RecordingActions:
    """The healer's alert actions (healer.service.alerts.AlertActions), recorded instead of done.
    `fail_next` makes the next restart_job raise, as for a job this healer does not know."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail_next = False

    def restart_job(self, job: str) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("no such job")
        self.calls.append(("restart_job", job))

    def pause_gpu(self, uuid: str) -> None:
        self.calls.append(("pause_gpu", uuid))

    def resume_gpu(self, uuid: str) -> None:
        self.calls.append(("resume_gpu", uuid))


def spooled_events(spool_dir: Path) -> list[dict]:
    """Every event the hooks spooled under SPOOL_DIR (RENDERWATCH_AGENT=off), in segment order."""
    from blender_hooks import spoolfile
    from blender_hooks.events import decode

    return [decode(line) for session, indices in spoolfile.list_segments(spool_dir).items() for i in indices
            for line in (spool_dir / f"{session}.{i:06d}.ndjson").read_bytes().splitlines()]
