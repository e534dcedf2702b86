"""The per-task start, in the real `renderwatch exec` process with Debian's Blender 3.4: Blender is spawned
before the supervisor, its config, its ledger, the event loop and the watcher are imported, so their
import cost overlaps Blender's own start-up instead of adding to it (a farm that launches one Blender
per frame pays the start every frame). It waits at its gate (spawn.py) until the supervisor lets it go.

An audit hook (sys.addaudithook, in a sitecustomize on the healer's PYTHONPATH only) records which of
these modules were loaded at each `subprocess.Popen` of Blender; nothing is faked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.healer import RENDERWATCH, healer_env

pytestmark = pytest.mark.blender

LATE = ("asyncio", "healer.supervising.process", "healer.supervising.attempt", "healer.supervising.telemetry",
        "healer.supervising.supervisor", "healer.supervising.ledger", "healer.config", "psutil", "logging",
        "dataclasses")
SITECUSTOMIZE = f"""
import json, os, sys

def _hook(event, args):
    if event == "subprocess.Popen":
        argv = [str(a) for a in (args[1] or ())]
        if any(a.endswith(".blend") for a in argv):
            with open(os.environ["RW_PROBE_OUT"], "a") as f:
                f.write(json.dumps(sorted(m for m in {LATE!r} if m in sys.modules)) + "\\n")

sys.addaudithook(_hook)
"""


@pytest.mark.parametrize("command", ["exec", "render", "renderwatch-exec-blender"])
def test_blender_is_spawned_before_the_event_loop_is_imported(tmp_path: Path, scene_copy, blender34: str,
                                                              command: str):
    scene = scene_copy(frames=1, samples=1)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    probe = tmp_path / "loaded-at-spawn.json"
    env = healer_env(tmp_path / "home", RW_PROBE_OUT=str(probe),
                     PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    out = str(tmp_path / "f_####")
    blender_args = ["-b", str(scene), "-o", out, "-f", "1"]
    if command == "exec":
        argv = [*RENDERWATCH, "exec", "--", blender34, *blender_args]
    elif command == "render":
        argv = [*RENDERWATCH, "render", str(scene), "--frames", "1", "--output", out, "--blender", blender34]
    else:       # a farm's Blender path pointed at the wrapper (Flamenco, OpenCue, Deadline Cloud)
        argv = [str(Path(sys.executable).parent / command), *blender_args]
        env["RENDERWATCH_BLENDER"] = blender34
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert (tmp_path / "f_0001.png").exists()
    assert probe.exists(), "the audit hook never saw Blender spawned (sitecustomize not loaded?)"
    spawns = [json.loads(line) for line in probe.read_text().splitlines()]
    assert spawns == [[]], f"Blender spawns, and what was loaded at each: {spawns}"   # one Blender, started first


def _until_loaded(proc: subprocess.Popen, timeout: float = 60.0) -> list[str]:
    """Blender's output up to `Read blend:` (it has read the scene; the gate comes right after)."""
    import selectors
    import time

    lines: list[str] = []
    buf = b""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sel.select(timeout=1.0):
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        *done, buf = buf.split(b"\n")
        lines += [d.decode(errors="replace") for d in done]
        if any(line.startswith("Read blend:") for line in lines):
            return lines
    raise AssertionError(f"Blender never read its scene: {lines[-20:]}")


def test_the_gate_holds_blender_until_the_supervisor_lets_it_go(tmp_path: Path, scene_copy, blender34: str):
    """Held: alive, the scene read, nothing rendered, however long the supervisor takes; released: it
    renders with the job and attempt the gate set. Discarded or abandoned (stdin closed): nothing rendered."""
    import time

    from blender_hooks.settings import ENV_ATTEMPT, ENV_JOB_ID
    from healer.supervising.spawn import LaunchSpec, build_argv, discard, release, spawn_blender

    scene = scene_copy(frames=1, samples=1)
    env = healer_env(tmp_path / "home")
    say = ["--python-expr", f"import os; print('GATE-SET', os.environ.get({ENV_JOB_ID!r}), "
                            f"os.environ.get({ENV_ATTEMPT!r}), flush=True)"]

    def start(name: str) -> tuple[subprocess.Popen, Path]:
        argv = build_argv(LaunchSpec(blender=blender34, scene=str(scene), frames=[1], user_args=say,
                                     output=str(tmp_path / name / "f_####")))
        return spawn_blender(argv, env=env), tmp_path / name / "f_0001.png"

    held, frame = start("held")
    _until_loaded(held)
    time.sleep(2.0)                         # far longer than a supervisor takes
    assert held.poll() is None and not frame.exists(), "Blender went on before it was let go"
    release(held, {ENV_JOB_ID: "gate-job", ENV_ATTEMPT: "3"})
    out = held.stdout.read().decode(errors="replace")
    assert held.wait(timeout=120) == 0, out[-2000:]
    assert frame.exists()
    assert "GATE-SET gate-job 3" in out, out[-2000:]

    unused, frame = start("unused")
    _until_loaded(unused)
    discard(unused)
    assert unused.returncode == -9 and not frame.exists()

    orphan, frame = start("orphan")
    _until_loaded(orphan)
    orphan.stdin.close()                    # what its supervisor's death looks like from Blender
    out = orphan.stdout.read().decode(errors="replace")
    assert orphan.wait(timeout=60) == 1 and not frame.exists()
    assert "not started: the supervisor did not confirm" in out and "GATE-SET" not in out
