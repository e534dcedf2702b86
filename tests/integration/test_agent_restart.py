"""The real `renderwatch agent` process killed with SIGKILL mid-render and restarted: every frame is
counted exactly once in /metrics and arrives exactly once as a span at a real OTLP receiver.

The Blender side is simulated the way the hooks behave (spool first, then a best-effort POST), in
the contract's spool format; the lead's end-to-end test does the same with real Blender.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.agent import (
    AgentProcess,
    JobStream,
    OtlpReceiver,
    SessionLock,
    attrs,
    get,
    ndjson,
    post,
    sample_value,
    wait_until,
    write_segment,
)

pytestmark = pytest.mark.slow
FRAMES = 30


class FakeBlender:
    """Emits like the hooks: append to the spool segment, then POST (failures wait in the spool)."""

    def __init__(self, spool: Path, agent_url: str):
        self.spool = spool
        self.url = agent_url
        self.stream = JobStream("shot-kill", session="kill0000001")
        self.lock = SessionLock(spool, self.stream.session)
        self.created = False

    def emit(self, events: list[dict]) -> None:
        write_segment(self.spool, self.stream.session, 1, events, append=self.created)
        self.created = True
        try:
            post(self.url, ndjson(events), timeout=2)
        except OSError:
            pass


def test_sigkill_mid_render_counts_every_frame_once(tmp_path):
    with OtlpReceiver() as rx:
        agent = AgentProcess(tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.url, "OTEL_BSP_SCHEDULE_DELAY": "300"})
        agent.start()
        blender = FakeBlender(tmp_path / "spool", agent.url)
        s = blender.stream
        try:
            blender.emit([s.start(1, FRAMES)])
            for n in range(1, FRAMES + 1):
                blender.emit(s.frame(n, seconds=0.2))
                if n == 8:
                    agent.kill()                 # right after a POST: spans still in the batch queue
                if n == 14:
                    agent.start()                # catches up frames 9-14 from the spool
                if n == 20:
                    wait_until(lambda: bool(rx.spans()), 10)
                    agent.kill()
                    agent.start()
            blender.emit([s.end()])
            blender.lock.release()

            def done() -> bool:
                code, body, _ = get(agent.url, "/metrics")
                return sample_value(body.decode(), "renderwatch_job_progress_ratio", {"job": "shot-kill"}) == 1.0
            assert wait_until(done, 20), agent.log.read_text()
            text = get(agent.url, "/metrics")[1].decode()
            labels = {"scene": "Scene", "engine": "CYCLES", "device_type": "CPU"}
            assert sample_value(text, "renderwatch_frames_rendered_total", labels) == FRAMES
            assert sample_value(text, "renderwatch_frame_render_seconds_count", labels) == FRAMES
            assert sample_value(text, "renderwatch_job_frames_done", {"job": "shot-kill"}) == FRAMES

            spans = rx.wait_for(lambda sp: any(x.name == "render.job" for x in sp), 20)
            rx.wait_for(lambda sp: False, 1.5)      # give a duplicate time to show up, if any
            spans = rx.spans()
        finally:
            agent.stop()
    # Every frame has one span identity. The second kill can land in the few milliseconds between
    # the receiver taking a batch and the agent recording the export; the restarted agent then
    # sends that batch again with the same ids (backends deduplicate): at most one batch, never a
    # new identity, never a frame missing.
    frame_spans = [sp for sp in spans if sp.name == "render.frame"]
    identities = {f: {sp.span_id for sp in frame_spans if attrs(sp)["render.frame"] == f} for f in range(1, FRAMES + 1)}
    assert all(len(v) == 1 for v in identities.values()), f"frame span identities: {identities}"
    assert len({sp.span_id for sp in spans if sp.name == "render.job"}) == 1
    # A broken export mark would re-send every frame journaled before the kill (20); only frames
    # ingested since the previous restart (15-20) can be in the batch in flight.
    resent = len(frame_spans) - FRAMES
    assert resent <= 20 - 14, f"{resent} frame spans re-sent: more than the batch in flight at the kill"
    assert "replayed" in agent.log.read_text()
