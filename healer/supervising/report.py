"""The `--report FILE.json` document and the final summary line, built from the ledger.

Shape (stable contract)::

    {"status": "complete"|"failed", "scene", "frames_requested": [...], "frames_completed": [...],
     "frame_render_counts": {"<frame>": n}, "restarts": n,
     "attempts": [{"attempt", "pid", "frames_planned", "frames_rendered", "exit_code", "exit_signal",
                   "error_type", "error_summary", "started_at", "ended_at"}]}

plus extra keys: "job", "error" (why a failed job stopped), "warnings", "ledger", "exit_code".

Usage::

    doc = build_report(ledger, exit_code=0); write_report(path, doc)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from healer.supervising.frames import format_frames
from healer.supervising.ledger import Ledger
from kernel.files import write_atomic


def build_report(ledger: Ledger, exit_code: int | None = None) -> dict:
    status = "complete" if ledger.status == "complete" else "failed"
    doc = {
        "status": status,
        "scene": ledger.scene,
        "frames_requested": list(ledger.frames_requested),
        "frames_completed": ledger.completed(),
        "frame_render_counts": {str(f): ledger.frame_render_counts.get(f, 0) for f in ledger.frames_requested},
        "restarts": ledger.restarts,
        "attempts": [a.report() for a in ledger.attempts if a.pid is not None],
        "job": ledger.job,
        "job_status": ledger.status,
        "warnings": ledger.warnings,
        "suspect_frames": {str(f): v for f, v in sorted(ledger.suspects.items())},
        "ledger": str(ledger.path),
    }
    if ledger.error:
        doc["error"] = ledger.error
    if exit_code is not None:
        doc["exit_code"] = exit_code
    return doc


def write_report(path: str | os.PathLike[str], doc: dict) -> None:
    """Write atomically, so a reader polling the file never sees half a document."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(p, (json.dumps(doc, indent=2) + "\n").encode(), sync=False)


SUMMARY_FRAMES_MAX_CHARS = 120      # one terminal line: a 3,000-frame requeue printed 14 KB here


def frames_brief(frames: list[int]) -> str:
    """A frame set as ranges ('1-3000', '1-4,7'), cut to one line with the count of frames left out."""
    spec = format_frames(frames)
    if len(spec) <= SUMMARY_FRAMES_MAX_CHARS:
        return spec
    cut = spec[:SUMMARY_FRAMES_MAX_CHARS].rsplit(",", 1)[0]
    shown = sum(int(b) - int(a) + 1 if "-" in r else 1
                for r in cut.split(",") for a, _, b in [r.partition("-")])
    return f"{cut},... ({len(frames)} frames, {len(frames) - shown} more in the report)"


def summary(ledger: Ledger, elapsed_s: float | None = None) -> str:
    done, total = ledger.completed_count(), len(ledger.frames_requested)
    twice = sorted(f for f, n in ledger.frame_render_counts.items() if n > 1)
    parts = [f"renderwatch: {ledger.status}: {done}/{total} frames", f"{ledger.restarts} restarts"]
    if twice:
        parts.append(f"rendered again: {frames_brief(twice)}")
    if elapsed_s is not None:
        parts.append(f"{elapsed_s:.1f} s")
    line = ", ".join(parts)
    if ledger.error:
        line += f"\nrenderwatch: {ledger.error.get('type')}: {ledger.error.get('message')}"
    for w in ledger.warnings[-5:]:
        line += f"\nrenderwatch: warning: {w.get('type')}: {w.get('message')}"
    return line
