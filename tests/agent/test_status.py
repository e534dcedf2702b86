"""`renderwatch status`: one frame of text from a real agent, piped (no ANSI)."""

from __future__ import annotations

import subprocess
import sys

from agent.app import run_in_thread
from agent.status import bar, render_frame
from tests.support.agent import JobStream, agent_config, ndjson, post
from tests.support.fakes import NoNvml


def test_status_once_against_a_real_agent(tmp_path):
    handle = run_in_thread(agent_config(tmp_path), nvml=NoNvml())
    try:
        s = JobStream("shot-010", scene="Shot010")
        evs = [s.start(1, 8)]
        for n in range(1, 5):
            evs += s.frame(n, seconds=3.0, peak_memory_blender_bytes=512 << 20, max_rss_bytes=1 << 30)
        assert post(handle.url, ndjson(evs))[0] == 200
        out = subprocess.run([sys.executable, "-m", "renderwatch", "status", "--agent", handle.url, "--once"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        text = out.stdout
        assert "\x1b[" not in text                               # piped: plain text
        line = next(ln for ln in text.splitlines() if ln.startswith("shot-010"))
        assert "4/8" in line and "[##########----------]" in line and "50%" in line
        assert "12.0s" in line                                   # ETA: 3 s x 4 frames left
        assert "3.0s" in line and "512M/1.0G/-" in line
        assert "GPU: none" in text
    finally:
        handle.stop()


def test_status_when_agent_is_down(tmp_path):
    out = subprocess.run([sys.executable, "-m", "renderwatch", "status", "--agent", "http://127.0.0.1:9", "--once"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "agent unreachable" in out.stdout


def test_render_frame_with_gpus():
    doc = {"host": "node7", "jobs": [], "gpus": [
        {"gpu": 0, "name": "NVIDIA H100", "ok": True, "utilization_ratio": 0.87, "memory_used_bytes": 12 << 30,
         "memory_total_bytes": 80 << 30, "temperature_celsius": 71, "power_watts": 402.5,
         "throttle": ["sw_power_cap"]},
        {"gpu": 1, "name": "NVIDIA H100", "ok": False}]}
    text = render_frame(doc, color=True)
    assert "no render jobs" in text and "\x1b[1m" in text
    assert "GPU 0 NVIDIA H100" in text and "87%" in text and "12.0G/80.0G" in text
    assert "71C" in text and "402W" in text and "throttle: sw_power_cap" in text
    assert "GPU 1 NVIDIA H100: not answering" in text
    assert bar(0.0, 4) == "[----]" and bar(1.5, 4) == "[####]"


def test_fifty_jobs_give_a_bounded_job_list_and_status_view(tmp_path):
    """50 jobs at once (and more ended): /api/v1/jobs answers at most `limit` jobs, running ones first,
    with the total; `renderwatch status` shows at most MAX_ROWS lines of jobs and counts the rest."""
    import json
    import urllib.request

    from agent.status import MAX_ROWS, fetch_jobs

    handle = run_in_thread(agent_config(tmp_path), nvml=NoNvml())
    try:
        body = []
        for n in range(60):
            s = JobStream(f"job-{n:02d}", session=f"sess{n:04d}")
            body += s.whole(frames=2) if n < 10 else [s.start(1, 100), *s.frame(1)]
        assert post(handle.url, ndjson(body))[0] == 200
        doc = fetch_jobs(handle.url)
        with urllib.request.urlopen(handle.url + "/api/v1/jobs?limit=30", timeout=10) as r:
            capped = json.loads(r.read())
        with urllib.request.urlopen(handle.url + "/api/v1/jobs", timeout=10) as r:
            default = json.loads(r.read())
        try:
            urllib.request.urlopen(handle.url + "/api/v1/jobs?limit=0", timeout=10)
            raise AssertionError("limit=0 accepted")
        except urllib.error.HTTPError as e:
            assert e.code == 400
    finally:
        handle.stop()
    assert capped["jobs_total"] == 60 and len(capped["jobs"]) == 30
    assert all(j["status"] == "running" for j in capped["jobs"])
    assert len(default["jobs"]) == 60
    assert len(doc["jobs"]) == MAX_ROWS and doc["jobs_total"] == 60
    text = render_frame(doc)
    assert sum(ln.startswith("job-") for ln in text.splitlines()) == MAX_ROWS
    assert f"and {60 - MAX_ROWS} more job(s)" in text
