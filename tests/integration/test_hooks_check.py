"""`renderwatch hooks check`: the self-check a user runs against their own Blender, on every Blender
of the matrix, with and without a real agent; and its verdict on a Blender that hangs on exit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.agent import AgentProcess

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
    from tests.support.net import free_port

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


# -- the job's identity, given as the healer gives it ---------------------------------------------

def _private_blender(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The user's Blender config in tmp_path (where `hooks install` puts the add-on or extension)."""
    home = tmp_path / "user"
    return _env(tmp_path, HOME=str(home), BLENDER_USER_CONFIG=str(home / "config"),
                BLENDER_USER_SCRIPTS=str(home / "scripts"), BLENDER_USER_EXTENSIONS=str(home / "extensions"), **extra)


def _install(blender: str, env: dict[str, str]) -> Path:
    p = subprocess.run([sys.executable, "-m", "renderwatch", "hooks", "install", "--blender", blender], env=env,
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    return Path(p.stdout.rsplit(" at ", 1)[1].split(" (enabled)")[0])


def test_check_passes_with_the_hooks_installed(matrix_blender, tmp_path):
    """The installed copy (3.4's add-on, the 4.2+ wheels' extension) registers before the gate and
    is the one that reports: the check says which, and finds the job id and attempt at the agent."""
    agent = AgentProcess(tmp_path / "rwhome").start()
    try:
        env = _private_blender(tmp_path, RENDERWATCH_AGENT=agent.url)
        _install(matrix_blender[0], env)
        p = _check(matrix_blender[0], env)
    finally:
        agent.stop()
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    copy = "bl_ext.user_default.renderwatch_hooks" if matrix_blender.has_extensions else "renderwatch_hooks"
    assert f"the hooks that ran: {copy}.addon" in out, out
    assert f"the agent at {agent.url} counted the test job (1 frame, attempt 2" in out, out
    assert "verdict: PASS:" in out


# An add-on as an older renderwatch installed it: it read the job id, attempt and farm ids once, when it
# registered at Blender's start (before the healer's start gate gives them), and its handlers do not
# say they read them per job. Made from the current package so it runs on any Blender of the matrix.
OLDER_RENDERWATCH = '''

def register():
    import os

    from . import addon

    frozen = addon.job_identity(os.environ)
    addon.job_identity = lambda _environ: frozen
    for _name, fn in addon.HANDLERS:
        if hasattr(fn, addon.IDENTITY_PER_JOB):
            delattr(fn, addon.IDENTITY_PER_JOB)
    addon.register()
'''


@pytest.mark.parametrize("agent_on", [True, False], ids=["agent", "spool"])
def test_check_fails_when_the_job_identity_does_not_reach_the_hooks(blender34, tmp_path, agent_on):
    agent = AgentProcess(tmp_path / "rwhome").start() if agent_on else None
    try:
        env = _private_blender(tmp_path, RENDERWATCH_AGENT=agent.url if agent else "off")
        where = _install(blender34, env)
        with open(where / "__init__.py", "a") as f:
            f.write(OLDER_RENDERWATCH)
        p = _check(blender34, env)
    finally:
        if agent:
            agent.stop()
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    host = os.uname().nodename
    if agent:
        assert f"the agent at {agent.url} counted the test frame as job {host}-" in out, out
        assert ", not as the job hooks-check-" in out and "attempt 2, given at the healer's start gate" in out
    else:
        assert "the test frame's events in the spool" in out and f"are job {host}-" in out, out
        assert ", not the job hooks-check-" in out
    assert "the hooks that ran, renderwatch_hooks.addon, are an older renderwatch's" in out, out
    assert "`renderwatch hooks install --blender EXE` again" in out
    assert out.rstrip().splitlines()[-1].startswith("verdict: FAIL"), out
