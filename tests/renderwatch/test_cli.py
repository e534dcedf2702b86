"""The `renderwatch` command as a shell pipeline sees it: a reader that goes away (`renderwatch status |
head`) ends the command quietly, with no BrokenPipeError traceback, whatever the command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED_LOGS = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "blender-logs"


def _closed_pipe_run(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Run `renderwatch ARGV` with its stdout a pipe whose reader has already closed."""
    r, w = os.pipe()
    os.close(r)
    env = {**os.environ, "RENDERWATCH_HOME": str(tmp_path / "home"), "RENDERWATCH_AGENT": "http://127.0.0.1:9"}
    try:
        return subprocess.run([sys.executable, "-m", "renderwatch", *argv], stdout=w, stderr=subprocess.PIPE,
                              text=True, env=env, timeout=60)
    finally:
        os.close(w)


@pytest.mark.parametrize("argv, codes", [
    (["status", "--interval", "0.05"], {141}),        # refreshes until its reader is gone: 128+SIGPIPE
    (["status", "--once"], {1, 141}),                 # one frame (agent unreachable: 1)
    (["--help"], {0}),
    (["exec", "--help"], {0}),
])
def test_a_closed_stdout_ends_the_command_without_a_traceback(argv, codes, tmp_path):
    p = _closed_pipe_run(argv, tmp_path)
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
    assert p.returncode in codes, p.stderr


def test_a_long_classify_report_into_a_closed_pipe(tmp_path):
    if not SHARED_LOGS.is_dir():
        pytest.skip("../shared is not beside the repository")
    log = tmp_path / "big.log"
    log.write_bytes((SHARED_LOGS / "pyerr_handler_3.4.log").read_bytes() * 200)   # JSON far over a pipe's buffer
    p = _closed_pipe_run(["classify", str(log), "--exit-code", "0", "--json"], tmp_path)
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
    assert p.returncode == 141
