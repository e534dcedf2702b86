"""`renderwatch hooks check`: the self-check a user runs against their own Blender, on every Blender
of the matrix, with and without a real agent; and its verdict on a Blender that hangs on exit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_support import AgentProcess

pytestmark = [pytest.mark.blender]

CLI = [sys.executable, "-m", "renderwatch", "hooks", "check"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENDERWATCH_")}
    env.update({"RENDERWATCH_HOME": str(tmp_path / "rwhome"), **extra})
    return env


def _check(blender: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "--blender", blender, *args], env=env, capture_output=True, text=True,
                          timeout=240)


@pytest.mark.matrix("check")
def test_check_passes_on_each_blender_without_an_agent(matrix_blender, tmp_path):
    p = _check(matrix_blender[0], _env(tmp_path, RENDERWATCH_AGENT="off"))
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert f"Blender {matrix_blender.row.version}" in out
    assert "one frame rendered with the hooks loaded" in out and "exits by itself" in out
    assert "event(s) of the test job in the spool" in out
    assert out.rstrip().splitlines()[-1].startswith("verdict: PASS:"), out


def test_check_sees_the_event_at_a_real_agent(blender34, tmp_path):
    agent = AgentProcess(tmp_path / "rwhome").start()
    try:
        p = _check(blender34, _env(tmp_path, RENDERWATCH_AGENT=agent.url))
    finally:
        agent.stop()
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert f"the agent at {agent.url} counted the test job (1 frame" in out, out
    assert "verdict: PASS:" in out


def test_check_warns_when_the_agent_is_down_and_the_events_wait(blender34, tmp_path):
    from agent_support import free_port

    p = _check(blender34, _env(tmp_path, RENDERWATCH_AGENT=f"http://127.0.0.1:{free_port()}"))
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "is unreachable" in out and "wait in the spool" in out and "verdict: PASS with a warning" in out


HANGS_ON_EXIT = r'''#!{python}
"""A stand-in for a Blender that renders, prints "Blender quit" and never exits (bpy 4.5 with a
thread left alive did exactly this). Answers the version query like Blender."""
import json, sys, time
args = sys.argv[1:]
expr = args[args.index("--python-expr") + 1] if "--python-expr" in args else ""
if "RENDERWATCH_HOOKS_RESULT" in expr:
    print("RENDERWATCH_HOOKS_RESULT " + json.dumps({{"version": [4, 5, 15], "version_string": "4.5.15 LTS",
                                                  "scripts": "/nonexistent"}}), flush=True)
    sys.exit(0)
print("Saved: '/tmp/x.png'", flush=True)
print("\nBlender quit", flush=True)
time.sleep(120)
'''


def test_check_fails_fast_on_a_blender_that_hangs_after_quit(tmp_path):
    """A fake Blender (the hang cannot be made on demand with a real one once it is fixed)."""
    exe = tmp_path / "blender"
    exe.write_text(HANGS_ON_EXIT.format(python=sys.executable))
    exe.chmod(0o755)
    t0 = time.monotonic()
    p = _check(str(exe), _env(tmp_path, RENDERWATCH_AGENT="off"))
    elapsed = time.monotonic() - t0
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "printed 'Blender quit' and did not exit" in out and "verdict: FAIL" in out
    assert elapsed < 30, f"the check waited {elapsed:.0f} s for a hung Blender"


def test_check_names_a_blender_that_does_not_run(tmp_path):
    p = _check(str(tmp_path / "nope"), _env(tmp_path, RENDERWATCH_AGENT="off"))
    assert p.returncode == 1 and "no Blender found" in p.stderr
