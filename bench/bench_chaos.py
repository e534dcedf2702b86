"""Chaos benchmark: many seeded rounds of tests/support/chaos.py (real Blender 3.4, agent, healer, webhooks).

Each round renders 6 frames under `renderwatch render` while Blender (SIGKILL, SIGSEGV, SIGSTOP), the
agent (SIGKILL + restart) or the healer (SIGKILL + the same command again) is killed at random moments.
Rows: rounds that met every invariant, frames missing, verified frames rendered twice, frame telemetry
lost or doubled, incidents lost or doubled (goal 0 each), faults injected and time per round.

Usage::

    python -m bench chaos                                    # $RENDERWATCH_CHAOS_ROUNDS rounds (default 30)
    RENDERWATCH_CHAOS_SEED=123 python -m bench chaos         # replay a seed
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from renderwatch.scenes import create_demo_scene, find_blender

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.chaos import (  # noqa: E402  (tests/ is imported from the repository root)
    FRAMES,
    WebhookReceiver,
    check_round,
    default_rounds,
    default_seed,
    round_figures,
    run_round,
)


def _row(name: str, measured: float, unit: str, goal: object, ok: bool | None) -> dict:
    return {"name": name, "measured": measured, "unit": unit, "goal": goal, "peer": None,
            "peer_measured": None, "pass": ok}


def run() -> list[dict]:
    blender = find_blender()
    if blender is None:
        return [_row("chaos: no Blender found", 0, "", None, False)]
    seed, rounds = default_seed(), default_rounds(30)
    failures: list[str] = []
    figures: list[dict[str, int]] = []
    times: list[float] = []
    kinds: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="rw-chaos-") as tmp, WebhookReceiver() as rx:
        work = Path(tmp)
        scene = create_demo_scene(work / "scene.blend", frames=FRAMES, samples=4, width=64, height=36, blender=blender)
        for n in range(rounds):
            r = run_round(seed, n, work, scene, rx, blender=blender)
            times.append(r.duration_s)
            figures.append(round_figures(r))
            for f in r.faults:
                if not f.effect.startswith(("skipped", "pending")):
                    kinds[f.kind] = kinds.get(f.kind, 0) + 1
            try:
                check_round(r)
            except AssertionError as e:
                failures.append(str(e))
                print(f"[bench chaos] round {n} FAILED:\n{e}", file=sys.stderr)
    for text in failures[:3]:
        print(text.splitlines()[0], file=sys.stderr)

    def total(key: str) -> int:
        return sum(f[key] for f in figures)

    passed = rounds - len(failures)
    rows = [
        _row(f"chaos rounds meeting every invariant (seed {seed})", passed, "rounds", rounds, passed == rounds),
        _row("frames missing at the end", total("frames_missing"), "frames", 0, total("frames_missing") == 0),
        _row("verified frames rendered twice", total("verified_frames_rendered_twice"), "frames", 0,
             total("verified_frames_rendered_twice") == 0),
        _row("frame telemetry lost or doubled in the agent", total("telemetry_frames_off"), "frames", 0,
             total("telemetry_frames_off") == 0),
        _row("incidents lost", total("incidents_lost"), "incidents", 0, total("incidents_lost") == 0),
        _row("incidents notified twice or unexplained", total("incidents_extra"), "incidents", 0,
             total("incidents_extra") == 0),
        _row("faults injected (" + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + ")",
             total("faults_applied"), "faults", None, None),
        _row("Blender restarts healed", total("restarts"), "restarts", None, None),
        _row("time per round (median, 6 frames + faults + checks)", round(statistics.median(times), 2), "s",
             None, None),
    ]
    return rows
