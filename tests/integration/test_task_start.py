"""The per-task start, in the real `renderwatch exec` process with Debian's Blender 3.4: Blender is spawned
before the event loop and the watcher are imported, so their import cost overlaps Blender's own start-up
instead of adding to it (a farm that launches one Blender per frame pays the start every frame).

An audit hook (sys.addaudithook, in a sitecustomize on the healer's PYTHONPATH only) records which of
these modules were loaded when the first `subprocess.Popen` of Blender happened; nothing is faked.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from healer_support import RENDERWATCH, healer_env

pytestmark = pytest.mark.blender

LATE = ("asyncio", "healer.supervising.process", "healer.supervising.attempt", "healer.supervising.telemetry")
SITECUSTOMIZE = f"""
import json, os, sys

def _hook(event, args):
    if event == "subprocess.Popen" and not os.path.exists(os.environ["RW_PROBE_OUT"]):
        argv = [str(a) for a in (args[1] or ())]
        if any(a.endswith(".blend") for a in argv):
            with open(os.environ["RW_PROBE_OUT"], "w") as f:
                json.dump(sorted(m for m in {LATE!r} if m in sys.modules), f)

sys.addaudithook(_hook)
"""


def test_blender_is_spawned_before_the_event_loop_is_imported(tmp_path: Path, scene_copy, blender34: str):
    scene = scene_copy(frames=1, samples=1)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    probe = tmp_path / "loaded-at-spawn.json"
    env = healer_env(tmp_path / "home", RW_PROBE_OUT=str(probe),
                     PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    p = subprocess.run([*RENDERWATCH, "exec", "--", blender34, "-b", str(scene), "-o", str(tmp_path / "f_####"),
                        "-f", "1"], env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert (tmp_path / "f_0001.png").exists()
    assert probe.exists(), "the audit hook never saw Blender spawned (sitecustomize not loaded?)"
    assert json.loads(probe.read_text()) == [], f"loaded before Blender was spawned: {probe.read_text()}"
