"""Workflow: the healer service is restarted (a node reboot, an upgrade) and the wrangler looks up a
job it ran before with `renderwatch jobs show ID`.

Real parts: `renderwatch healer` as a process (its own generated token), `renderwatch jobs` as the
client, real Blender 3.4.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agent import get, wait_until
from tests.support.healer import healer_env
from tests.support.net import free_port

pytestmark = [pytest.mark.blender, pytest.mark.slow]

RENDERWATCH = [sys.executable, "-m", "renderwatch"]


class HealerService:
    def __init__(self, home: Path, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log = home / "healer.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> HealerService:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*RENDERWATCH, "healer", "--listen", f"127.0.0.1:{self.port}"],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT)
        assert wait_until(self._healthy, timeout=30), self.log.read_text()[-3000:]
        return self

    def _healthy(self) -> bool:
        try:
            return get(self.url, "/healthz", timeout=1)[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)

    def jobs(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*RENDERWATCH, "jobs", "--url", self.url, *args], env=self.env,
                              capture_output=True, text=True, timeout=30)

    def show(self, job: str) -> dict:
        out = self.jobs("show", job)
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)


def test_jobs_show_finds_a_job_after_the_service_restarts(tmp_path, scene_copy, blender34):
    home = tmp_path / "home"
    env = healer_env(home, RENDERWATCH_BLENDER=blender34)
    scene = scene_copy(frames=2)
    service = HealerService(home, env).start()
    try:
        sub = service.jobs("submit", str(scene), "--frames", "1-2", "--output", str(tmp_path / "out" / "f_####"))
        assert sub.returncode == 0, sub.stdout + sub.stderr
        job = sub.stdout.strip()
        assert wait_until(lambda: service.show(job)["state"] in ("complete", "failed"), timeout=120, interval=0.5)
        before = service.show(job)
        assert before["state"] == "complete", before
    finally:
        service.stop()
    assert (home / "healer" / "jobs" / job / "ledger.json").is_file()

    service = HealerService(home, env).start()      # the same node, the same state root
    try:
        after = service.show(job)
        assert (after["id"], after["state"], after["exit_code"]) == (job, "complete", 0)
        assert (after["frames_requested"], after["frames_completed"], after["restarts"]) == (2, 2, 0)
        assert after["report"]["frames_completed"] == [1, 2]
        assert after["report"]["attempts"] == before["report"]["attempts"]
        listing = service.jobs()
        assert listing.returncode == 0 and f"{job}\tcomplete\t2/2\t{scene}" in listing.stdout, listing.stdout
        assert service.jobs("show", "no-such-job").returncode == 1
    finally:
        service.stop()
