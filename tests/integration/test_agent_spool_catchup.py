"""Spool catch-up on a real agent: segments written while it was down are ingested at start and
acknowledged; the same events arriving again over HTTP are duplicates, never counted twice."""

from __future__ import annotations

from agent.app import run_in_thread
from tests.support.agent import (
    JobStream,
    SessionLock,
    agent_config,
    get,
    ndjson,
    post,
    read_ack,
    sample_value,
    wait_until,
    write_segment,
)
from tests.support.fakes import NoNvml

LABELS = {"scene": "Scene", "engine": "CYCLES", "device_type": "CPU"}


def test_catch_up_at_start_then_live(tmp_path):
    spool = tmp_path / "spool"
    dead = JobStream("crashed-job", session="deadsess01")           # Blender that died while the agent was down
    dead_events = [dead.start(1, 6)] + dead.frame(1) + dead.frame(2) + dead.frame(3)[:2]
    write_segment(spool, dead.session, 1, dead_events)
    live = JobStream("live-job", session="livesess01")
    lock = SessionLock(spool, live.session)                           # still rendering
    live_events = [live.start(1, 4)] + live.frame(1) + live.frame(2)
    seg = write_segment(spool, live.session, 1, live_events)

    handle = run_in_thread(agent_config(tmp_path), nvml=NoNvml())
    try:
        def metric(name, labels):
            return sample_value(get(handle.url, "/metrics")[1].decode(), name, labels)
        # Caught up at start: both sessions' events are in.
        assert wait_until(lambda: metric("renderwatch_frames_rendered_total", LABELS) == 4)
        assert metric("renderwatch_job_frames_done", {"job": "crashed-job"}) == 2
        assert metric("renderwatch_job_frames_done", {"job": "live-job"}) == 2
        assert read_ack(spool, live.session) == (1, seg.stat().st_size)
        assert not list(spool.glob(f"{dead.session}.*"))               # dead writer, all acked: gone
        assert seg.exists()                                             # live writer: kept

        # The hooks' sender now delivers the same events by HTTP (it had not seen the ack): duplicates.
        status, resp = post(handle.url, ndjson(live_events))
        assert status == 200 and b'"duplicate": %d' % len(live_events) in resp
        # New events arrive both ways; each is counted once.
        more = live.frame(3)
        write_segment(spool, live.session, 1, more, append=True)
        post(handle.url, ndjson(more))
        assert wait_until(lambda: read_ack(spool, live.session) == (1, seg.stat().st_size), 5)
        assert metric("renderwatch_frames_rendered_total", LABELS) == 5
        assert metric("renderwatch_events_ingested_total", None) == len(dead_events) + len(live_events) + len(more)

        end = [live.frame(4)[-1], live.end()]
        write_segment(spool, live.session, 1, end, append=True)
        lock.release()                                                  # Blender exits
        assert wait_until(lambda: not list(spool.glob(f"{live.session}.*")), 5)
        assert metric("renderwatch_job_progress_ratio", {"job": "live-job"}) == 1.0
        assert metric("renderwatch_spool_segments", None) == 0
    finally:
        handle.stop()
