"""Workflow: `renderwatch demo` on a render node whose agent is down, as a new user tries it.

A render's events wait in the host's spool while the node's agent is down; the user runs the demo
(which starts an agent of its own); then the node's agent comes back and must show that render.
And a second `renderwatch agent` started on the same host state refuses, saying which agent reads
the spool. Real Blender 3.4, the real `renderwatch render`, `demo` and `agent` processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blender_hooks import spoolfile
from tests.support.agent import AgentProcess, get, wait_until
from tests.support.healer import render
from tests.support.net import free_port

pytestmark = [pytest.mark.blender, pytest.mark.slow]

JOB = "wf-node-render"


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RENDERWATCH_", "SENTRY_", "OTEL_"))}
    env.update(RENDERWATCH_HOME=str(home), **extra)
    return env


def _spooled_jobs(spool_dir: Path) -> set[str]:
    jobs = set()
    for session, indices in spoolfile.list_segments(spool_dir).items():
        for i in indices:
            for line in (spool_dir / f"{session}.{i:06d}.ndjson").read_bytes().splitlines():
                jobs.add(json.loads(line)["job"])
    return jobs


def _agent_jobs(url: str) -> dict[str, dict]:
    status, body, _ = get(url, "/api/v1/jobs", timeout=2)
    return {j["job"]: j for j in json.loads(body)["jobs"]} if status == 200 else {}


def test_the_demo_leaves_the_node_agents_events_to_it(tmp_path, scene_copy, blender34):
    home = tmp_path / "node"                 # the host's state: the node agent's spool and data
    node = AgentProcess(home)                # not started: the node's agent is down
    scene = scene_copy(frames=2)

    # A render while the agent is down: the hooks (and the healer) spool, nothing is delivered.
    code, doc, out = render([str(scene), "--frames", "1-2", "--job", JOB, "--blender", blender34,
                             "--output", str(tmp_path / "out" / "f_####")], home, tmp_path / "report.json",
                            RENDERWATCH_AGENT=node.url, RENDERWATCH_SPOOL_DIR=str(home / "spool"))
    assert code == 0, out
    assert JOB in _spooled_jobs(home / "spool")

    # The demo, on the same host state (RENDERWATCH_HOME), with its own agent.
    demo = subprocess.run(
        [sys.executable, "-m", "renderwatch", "demo", "--frames", "2", "--no-crash", "--dir", str(tmp_path / "demo"),
         "--listen", "127.0.0.1:0", "--blender", blender34],
        env=_clean_env(home), capture_output=True, text=True, timeout=240)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "report: complete, 2/2 frames" in demo.stdout
    run_dir = next((tmp_path / "demo").glob("run-*"))
    journal = b"".join(p.read_bytes() for p in (run_dir / "agent").rglob("*") if p.is_file())
    assert JOB.encode() not in journal, "the demo's agent took the node's events"
    assert JOB in _spooled_jobs(home / "spool"), "the node's events left its spool"

    # The node's agent comes back: the render is there, complete, every frame counted.
    node.start()
    try:
        assert wait_until(lambda: _agent_jobs(node.url).get(JOB, {}).get("status") == "complete", timeout=30), \
            _agent_jobs(node.url)
        job = _agent_jobs(node.url)[JOB]
        assert (job["frames_done"], job["frames_total"]) == (2, 2)
        assert not spoolfile.list_segments(home / "spool"), "the node's agent left events in its spool"
    finally:
        node.stop()


def test_a_second_agent_on_the_same_spool_refuses_and_names_the_first(tmp_path):
    home = tmp_path / "node"
    node = AgentProcess(home).start()
    try:
        # Another agent on this host's state: another port and data folder, the same spool.
        second = subprocess.run(
            [sys.executable, "-m", "renderwatch", "agent", "--listen", f"127.0.0.1:{free_port()}",
             "--data-dir", str(tmp_path / "other-data")],
            env=_clean_env(home), capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stdout + second.stderr
        assert node.proc is not None
        msg = second.stderr
        assert f"the spool {home / 'spool'} is read by the agent pid {node.proc.pid}" in msg, msg
        assert f"listen 127.0.0.1:{node.port}" in msg and "RENDERWATCH_HOME" in msg and "--spool-dir" in msg, msg
        assert "Traceback" not in msg
        assert node.proc.poll() is None, "the first agent must keep running"

        # Its own spool: it starts beside the node's agent.
        own = AgentProcess(tmp_path / "own").start()
        own.stop()
    finally:
        node.stop()
    # The node agent gone, its lock is gone with it: a new agent takes the spool.
    again = AgentProcess(home).start()
    again.stop()
