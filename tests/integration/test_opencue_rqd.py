"""OpenCue's real render-node daemon, RQD (opencue-rqd), run standalone, launching `renderwatch exec
blender ...` as Cuebot would, with Debian's Blender 3.4: a launch, a kill, a healed crash and RQD's
memory accounting of the frame.

Real: RQD (its own venv, .venvs/rqd, set up by ./bootstrap test), its frame launch (the command in a
file run with `/usr/bin/time` in a new session), its kill (`killpg(pid, 9)`), its per-session memory
sums and its task log. Stood in for (tests/support/rqd_harness.py): Cuebot's server side, which cannot run
here; the harness records RQD's reports and calls RQD with opencue-proto's own stub."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.support.healer import FAULTS, healer_env, spooled_events

pytestmark = [pytest.mark.blender, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
RQD_PYTHON = REPO / ".venvs" / "rqd" / "bin" / "python"
BIN = Path(sys.executable).parent


class Rqd:
    """RQD plus the Cuebot stand-in, spoken to in JSON lines."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([str(RQD_PYTHON), str(REPO / "tests" / "support" / "rqd_harness.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self._read()
        assert self.ready.get("ready"), self.ready

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, "the RQD harness ended"
        return json.loads(line)

    def call(self, op: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        doc = self._read()
        assert "error" not in doc, doc
        return doc

    def completion(self, frame_id: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [c for c in self.call("completions")["completions"] if c["frame"]["frameId"] == frame_id]
            if done:
                return done[0]
            time.sleep(0.2)
        raise AssertionError(f"RQD reported no completion of {frame_id} in {timeout} s")

    def close(self) -> None:
        try:
            self.call("quit")
        finally:
            self.proc.wait(30)


@pytest.fixture(scope="module")
def rqd():
    if not RQD_PYTHON.exists():
        if os.environ.get("RENDERWATCH_MATRIX_REQUIRED") == "1":
            pytest.fail(f"{RQD_PYTHON} is missing: ./bootstrap test sets up the RQD venv")
        pytest.skip(f"{RQD_PYTHON} is missing: run ./bootstrap test (it sets up opencue-rqd in its own venv)")
    r = Rqd()
    yield r
    r.close()


def _launch(rqd: Rqd, tmp_path: Path, scene: Path, frame_id: str, frames: str, *pre: str, **env: str) -> Path:
    """Launch a frame as Cuebot does: a shell command line and the layer's environment (CUE_* included)."""
    argv = [str(BIN / "renderwatch"), "exec", "blender", "-b", str(scene), *pre,
            "-o", str(scene.parent / "frames" / "f_####"), "-F", "PNG", *frames.split()]
    full = healer_env(tmp_path / "home", **env)
    layer_env = {k: v for k, v in full.items() if k.startswith(("RENDERWATCH_", "FAULT_"))}
    layer_env.update({"CUE_JOB": "show-shot-lighting", "CUE_JOB_ID": f"job-{frame_id}", "CUE_LAYER": "render",
                      "CUE_FRAME": "0001-render", "CUE_FRAME_ID": frame_id, "CUE_SHOW": "show", "CUE_SHOT": "shot",
                      "CUE_THREADS": "1", "CUE_GPUS": "0"})
    log_dir = tmp_path / "logs"
    log_dir.mkdir(exist_ok=True)
    rqd.call("launch", frame_id=frame_id, command=shlex.join(argv), env=layer_env, log_dir=str(log_dir),
             job="show-shot-lighting", frame_name="0001-render")
    return log_dir / "show-shot-lighting.0001-render.rqlog"


def _blender_of(scene: Path, timeout: float = 60) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in psutil.process_iter(["name", "cmdline"]):
            cmd = p.info["cmdline"] or []
            if str(scene) in cmd and "renderwatch" not in " ".join(cmd[:2]) and p.info["name"].startswith("blender"):
                return p
        time.sleep(0.1)
    raise AssertionError("no Blender started under RQD")


def test_rqd_launches_a_frame_through_renderwatch(rqd, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    log = _launch(rqd, tmp_path, scene, "frame-launch", "-f 1")
    done = rqd.completion("frame-launch")
    text = log.read_text()
    assert done.get("exitStatus", 0) == 0 and done.get("exitSignal", 0) == 0, text[-3000:]
    assert (scene.parent / "frames" / "f_0001.png").exists()
    assert "Saved:" in text and "renderwatch: complete: 1/1 frames" in text     # Blender's lines and ours
    start = next(e for e in spooled_events(tmp_path / "home" / "spool") if e["type"] == "job_start")
    assert (start["farm_engine"], start["farm_job"], start["farm_task"]) == ("opencue", "job-frame-launch",
                                                                             "render/0001-render")


def test_rqd_memory_accounting_sees_blender(rqd, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    _launch(rqd, tmp_path, scene, "frame-memory", "-f 1", "--python", str(FAULTS / "slow.py"), FAULT_SLEEP="6")
    blender = _blender_of(scene)
    deadline, info, seen = time.monotonic() + 30, None, False
    while time.monotonic() < deadline and not seen:     # RQD samples every 1 s, Blender grows as it loads
        time.sleep(1.0)
        info = rqd.call("status", frame_id="frame-memory")["info"] or {}
        pids = {int(c["stat"]["pid"]) for c in info.get("children", {}).get("children", [])}
        blender_kb = blender.memory_info().rss // 1024
        seen = blender.pid in pids and int(info.get("rss", 0)) >= 0.8 * blender_kb
    assert seen, f"RQD's accounting of the frame never counted Blender ({blender_kb} KB): {info}"
    assert int(info["maxRss"]) > 100 * 1024                 # Blender's, not renderwatch's ~35 MB alone
    assert rqd.completion("frame-memory").get("exitStatus", 0) == 0


def test_rqd_kill_ends_blender(rqd, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    _launch(rqd, tmp_path, scene, "frame-kill", "-f 1", "--python", str(FAULTS / "slow.py"), FAULT_SLEEP="60")
    blender = _blender_of(scene)
    time.sleep(1.0)                                        # inside the slow frame
    rqd.call("kill", frame_id="frame-kill")               # RQD: os.killpg(pid, 9)
    done = rqd.completion("frame-kill", timeout=30)
    assert done.get("exitSignal") == 9, done
    blender.wait(5)                                        # psutil.TimeoutExpired if it outlived the kill
    assert not (scene.parent / "frames" / "f_0001.png").exists()


def test_rqd_frame_with_a_crash_is_healed(rqd, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    log = _launch(rqd, tmp_path, scene, "frame-crash", "-f 1..3", "--python", str(FAULTS / "segfault.py"),
                  FAULT_FRAME="2", FAULT_MARKER=str(tmp_path / "fired"))
    done = rqd.completion("frame-crash")
    text = log.read_text()
    assert done.get("exitStatus", 0) == 0, text[-3000:]
    assert "attempt 1 ended: segfault" in text and "renderwatch: complete: 3/3 frames, 1 restarts" in text
    assert sorted(x.name for x in (scene.parent / "frames").iterdir()) == ["f_0001.png", "f_0002.png", "f_0003.png"]
