"""Hostile events at a real agent: what any local account may post can never break `/metrics`, the jobs
API or `renderwatch status`, during the agent's life or after a restart that replays its journal
(docs/threat-model.md: "ingest cannot break exposition")."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.app import run_in_thread
from agent.config import AgentConfig
from agent.status import render_frame
from blender_hooks.events import EventError, decode, encode, make_event, valid_text
from tests.support.agent import get, post

REPO = Path(__file__).resolve().parents[2]


def _agent(d: Path):
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    return run_in_thread(AgentConfig(host="127.0.0.1", port=0, data_dir=d / "data", spool_dir=d / "spool",
                                     traces_enabled=False))


def _ev(type_: str, seq: int, job: str = "j1", **kw) -> dict:
    return make_event(type_, session="hostile01", seq=seq, job=job, host="h", pid=7, ts=kw.pop("ts", 1.7e9), **kw)


def _raw(events: list[dict]) -> bytes:
    # json.dumps writes a lone surrogate as the escape "\ud800": exactly what a hostile client sends
    return b"\n".join(json.dumps(e).encode() for e in events)


def _metrics_ok(url: str) -> str:
    status, body, _ = get(url, "/metrics")
    assert status == 200, body[:300]
    return body.decode("utf-8")          # strict: the exposition is valid UTF-8


def _status_text(url: str) -> str:
    """`renderwatch status --once` as a user runs it, against the live agent."""
    p = subprocess.run([sys.executable, "-m", "renderwatch", "status", "--once", "--agent", url],
                       capture_output=True, timeout=60, cwd=REPO)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    assert b"Traceback" not in p.stderr
    return p.stdout.decode("utf-8")


def test_lone_surrogate_job_keeps_metrics_and_status_working_across_a_restart(tmp_path: Path) -> None:
    h = _agent(tmp_path)
    try:
        start = _ev("job_start", 1, job="\ud800evil", blend_file="/s.blend", scene="s\udfff", frame_start=1,
                    frame_end=3, engine="CYCLES", device_type="CPU", blender_version="3.4.1")
        code, _ = post(h.url, _raw([start, _ev("frame_start", 2, job="\ud800evil", frame=1)]))
        assert code == 200
        text = _metrics_ok(h.url)
        assert 'job="\ufffdevil"' in text
        assert "\ufffdevil" in _status_text(h.url)
    finally:
        h.stop()
    h = _agent(tmp_path)                 # the journal replays the event
    try:
        assert 'job="\ufffdevil"' in _metrics_ok(h.url)
        _status_text(h.url)
    finally:
        h.stop()


@pytest.mark.parametrize("field,value", [("seconds", 1.7e308), ("seconds", 1e9), ("ts", 1e300), ("ts", -1.0),
                                         ("peak_memory_blender_bytes", 1e300)])
def test_absurd_numbers_are_refused_with_their_field(field: str, value: float) -> None:
    ev = _ev("frame_end", 1, frame=1, seconds=1.0, saved=True)
    ev[field] = value
    with pytest.raises(EventError) as ei:
        decode(json.dumps(ev))
    assert ei.value.reason == "out_of_range" and field in ei.value.detail


def test_a_journal_record_an_older_agent_accepted_is_skipped_and_counted(tmp_path: Path) -> None:
    h = _agent(tmp_path)
    try:
        assert post(h.url, _raw([_ev("frame_start", 1, frame=1)]))[0] == 200
    finally:
        h.stop()
    journal = next((tmp_path / "data").rglob("journal*"))
    # what the agent before this check wrote: a frame of 1.7e308 seconds, which overflowed `status`
    bad = _ev("frame_end", 2, frame=1, seconds=1.7e308, saved=True)
    with open(journal, "ab") as f:
        f.write(b"999\t" + json.dumps(bad).encode() + b"\n")
    h = _agent(tmp_path)
    try:
        text = _metrics_ok(h.url)
        assert "renderwatch_journal_replay_skipped_total 1.0" in text
        assert "j1" in _status_text(h.url)
    finally:
        h.stop()


def test_status_view_shows_hostile_text_as_text() -> None:
    doc = {"host": "node\x1b]0;pwned\x07", "jobs": [{
        "job": "\x1b[2Jjob", "scene": "s\x9bc", "status": "running", "frames_done": 1, "frames_total": 2,
        "progress": math.nan, "eta_seconds": math.inf, "last_frame_seconds": "x",
        "peaks": {"blender": 1e308, "rss": -5}}],
        "gpus": [{"ok": True, "gpu": 0, "name": "\x1b[31mGPU", "utilization_ratio": math.inf,
                  "temperature_celsius": math.nan, "throttle": ["\x1b[0m"]}]}
    out = render_frame(doc)
    assert "\x1b" not in out and "\x9b" not in out and "\x07" not in out
    assert "\ufffd[2Jjob" in out and ">1024P" in out


text_fields = st.text(alphabet=st.characters(codec=None, categories=None), max_size=40)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job=text_fields, scene=text_fields, seconds=st.floats(allow_nan=True, allow_infinity=True))
def test_any_accepted_event_encodes_as_utf8_and_renders(job: str, scene: str, seconds: float) -> None:
    """Every event the decoder accepts carries only text that encodes as UTF-8 and finite numbers, so
    exposition and the status view can never raise on it."""
    ev = _ev("frame_end", 1, job=job, frame=1, seconds=seconds, saved=True, scene=scene)
    try:
        got = decode(json.dumps(ev))
    except EventError:
        return
    for v in got.values():
        if isinstance(v, str):
            v.encode("utf-8")
        elif isinstance(v, float):
            assert math.isfinite(v)
    encode(got).decode("ascii")
    render_frame({"jobs": [{"job": got["job"], "scene": got["scene"], "last_frame_seconds": got["seconds"]}]})


def test_valid_text_keeps_valid_text_and_replaces_only_lone_surrogates() -> None:
    assert valid_text("café 🎬") == "café 🎬"
    assert valid_text("a\ud800b\udfffc") == "a\ufffdb\ufffdc"


def test_made_up_job_ids_cannot_grow_the_agent_without_bound(tmp_path: Path) -> None:
    """One local account posting 3,000 distinct job ids: the agent holds at most JOB_LIMIT jobs, /metrics
    stays bounded, the forgotten ones are counted, and a real job that keeps reporting is kept."""
    from agent import state as state_mod

    h = _agent(tmp_path)
    old_limit = state_mod.JOB_LIMIT
    state_mod.JOB_LIMIT = 200              # the same code path as 1,000, a quarter of the events
    try:
        seq = 1
        real = _ev("job_start", seq, job="real-job", blend_file="/s.blend", scene="s", frame_start=1,
                   frame_end=3, engine="CYCLES", device_type="CPU", blender_version="3.4.1")
        assert post(h.url, _raw([real]))[0] == 200
        for batch in range(6):
            events = []
            for i in range(100):
                seq += 1
                events.append(make_event("frame_start", session="flood001", seq=seq, job=f"junk-{batch}-{i}",
                                         host="h", pid=9, ts=1.7e9 + seq, frame=1))
            assert post(h.url, _raw(events))[0] == 200
            # the real job reports between the floods: it is never the quietest
            assert post(h.url, _raw([_ev("frame_start", batch + 2, job="real-job", frame=1,
                                         ts=1.7e9 + seq + 1)]))[0] == 200
        text = _metrics_ok(h.url)
        assert text.count('renderwatch_job_frames_done{job="') <= 200
        assert 'job="real-job"' in text
        assert "renderwatch_jobs_evicted_total 401.0" in text
    finally:
        state_mod.JOB_LIMIT = old_limit
        h.stop()
