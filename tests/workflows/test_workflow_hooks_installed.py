"""Workflow: a pipeline TD installs the hooks (the README's first operations step), starts the node's
agent, then renders with `renderwatch render`, and Blender crashes once and is healed.

As a user would: `renderwatch hooks install` into a private Blender user config (HOME and Blender's
own BLENDER_USER_* variables point into tmp_path), a real `renderwatch agent`, a real `renderwatch
render` on real Blender with a real SIGSEGV injected by a --python script (tests/faults/segfault.py).
The installed copy registers the hooks when Blender starts, before the healer's start gate gives
the job id and attempt; the job must still reach the agent as the healer's one job, both attempts.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from agent.status import fetch_jobs
from tests.support.agent import AgentProcess
from tests.support.blender_matrix import BlenderCmd
from tests.support.healer import RENDERWATCH, REPO, fault, render

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def private_blender(tmp_path: Path) -> dict[str, str]:
    """A user's own Blender config, in tmp_path: where `hooks install` puts the add-on or extension."""
    home = tmp_path / "user"
    return {"HOME": str(home), "BLENDER_USER_CONFIG": str(home / "config"),
            "BLENDER_USER_SCRIPTS": str(home / "scripts"), "BLENDER_USER_EXTENSIONS": str(home / "extensions")}


def hooks_cli(*args: str, env: dict[str, str]) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RENDERWATCH_")}
    p = subprocess.run([*RENDERWATCH, "hooks", *args], env={**base, **env}, capture_output=True, text=True,
                       timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout + p.stderr


def agent_jobs(agent: AgentProcess, until, timeout: float = 30.0) -> list[dict]:
    """The agent's jobs once `until(jobs)` holds (or as they are after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = fetch_jobs(agent.url)["jobs"]
        if until(jobs) or time.monotonic() > deadline:
            return jobs
        time.sleep(0.3)


STUDIO_STARTUP = """\
# A studio's own startup module: Blender imports <user scripts>/startup/*.py when it starts and calls
# register(), so the pipeline's copy of renderwatch's hooks registers before any --python runs.
import sys
sys.path.insert(0, {repo!r})
import blender_hooks


def register():
    blender_hooks.register()


def unregister():
    blender_hooks.unregister()
"""


def heal_a_crash_and_read_the_agent(exe: str, scene: Path, tmp_path: Path, user: dict[str, str]) -> tuple[str, list]:
    """`renderwatch render` frames 1-4, Blender killed by SIGSEGV at frame 3 once, with a real agent; the
    healer's job id and the agent's jobs once that job is complete (or 30 s on)."""
    home = tmp_path / "rwhome"
    agent = AgentProcess(home).start()
    try:
        rc, doc, out = render([str(scene), "--frames", "1-4", "--blender", exe, "--", "--python", fault("segfault")],
                              home, tmp_path / "r.json", RENDERWATCH_AGENT=agent.url, FAULT_FRAME="3",
                              FAULT_MARKER=str(tmp_path / "fired"), **user)
        assert rc == 0, out
        assert [a["error_type"] for a in doc["attempts"]] == ["segfault", "ok"], out
        job = doc["job"]
        return job, agent_jobs(agent, lambda js: any(j["job"] == job and j["status"] == "complete" for j in js))
    finally:
        agent.stop()


def assert_one_job(job: str, jobs: list[dict]) -> None:
    host = os.uname().nodename
    fragments = [j["job"] for j in jobs if re.fullmatch(rf"{re.escape(host)}-\d+-\d+", j["job"])]
    assert not fragments, f"the render split into per-process jobs {fragments}: {jobs}"
    assert [j["job"] for j in jobs] == [job], jobs
    (mine,) = jobs
    assert mine["status"] == "complete" and mine["attempts"] == 2, mine
    assert mine["frames_done"] == 4 and mine["frames_total"] == 4, mine


def test_installed_hooks_then_a_healed_crash_is_one_job_at_the_agent(matrix_blender: BlenderCmd, scene_copy,
                                                                      tmp_path):
    """Debian's 3.4 gets the legacy add-on, the 4.2+ wheels the extension (renderwatch-blender reads
    the user preferences at start as Blender does): both load before the gate."""
    assert len(matrix_blender) == 1, "the healer takes one executable"
    user = private_blender(tmp_path)
    out = hooks_cli("install", "--blender", matrix_blender[0], env={**user, "RENDERWATCH_HOME": str(tmp_path / "rwhome")})
    assert ("extension" if matrix_blender.has_extensions else "add-on") in out, out
    job, jobs = heal_a_crash_and_read_the_agent(matrix_blender[0], scene_copy(frames=4), tmp_path, user)
    assert_one_job(job, jobs)


def test_studio_startup_script_then_a_healed_crash_is_one_job_at_the_agent(blender34, scene_copy, tmp_path):
    """A studio that loads the hooks from its own startup script (no `hooks install`)."""
    user = private_blender(tmp_path)
    startup = Path(user["BLENDER_USER_SCRIPTS"]) / "startup" / "studio_pipeline.py"
    startup.parent.mkdir(parents=True)
    startup.write_text(STUDIO_STARTUP.format(repo=str(REPO)))
    job, jobs = heal_a_crash_and_read_the_agent(blender34, scene_copy(frames=4), tmp_path, user)
    assert_one_job(job, jobs)
