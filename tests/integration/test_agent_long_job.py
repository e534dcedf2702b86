"""A 10,000-frame job through a real agent to a real OTLP receiver: every frame counted, the trace
under Tempo's per-trace limit (the request bytes the SDK's exporter sent, as Tempo counts them), the
slow and the failed frame still spans of their own with their phases, /api/v1/jobs bounded.

The time this takes is measured in bench/bench_agent.py, not here."""

from __future__ import annotations

import json
import urllib.request

from agent.app import run_in_thread
from tests.support.agent import JobStream, OtlpReceiver, agent_config, attrs, ndjson, post
from tests.support.fakes import NoNvml

FRAMES = 10_000
SLOW, FAILED = 9_500, 7_777
TEMPO_MAX_BYTES_PER_TRACE = 5_000_000
TEMPO_MAX_ATTRIBUTE_BYTES = 2048


def _events() -> list[bytes]:
    s = JobStream("long-job", session="10ng5e55")
    bodies, evs = [], [s.start(1, FRAMES)]
    for n in range(1, FRAMES + 1):
        evs += s.frame(n, seconds=5.0 if n == SLOW else 0.01, saved=n != FAILED)
        if len(evs) >= 2000:
            bodies.append(ndjson(evs))
            evs = []
    evs.append(s.end())
    bodies.append(ndjson(evs))
    # The healer's second attempt renders the failed frame again; the job is then whole.
    retry = JobStream("long-job", session="10ng5e56", t=s.t)
    bodies.append(ndjson([retry.start(FAILED, FAILED, attempt=2), *retry.frame(FAILED, seconds=0.01), retry.end()]))
    return bodies


def test_a_10000_frame_job_fits_tempo_and_keeps_what_a_user_looks_for(tmp_path):
    with OtlpReceiver() as rx:
        cfg = agent_config(tmp_path, otlp_endpoint=rx.url + "/v1/traces", otlp_protocol="http/protobuf")
        handle = run_in_thread(cfg, nvml=NoNvml())
        try:
            for body in _events():
                assert post(handle.url, body)[0] == 200
            with urllib.request.urlopen(handle.url + "/api/v1/jobs", timeout=10) as r:
                raw = r.read()
            spans = rx.wait_for(lambda s: any(sp.name == "render.job" for sp in s), timeout=60)
        finally:
            handle.stop()
        job = json.loads(raw)["jobs"][0]
        assert job["frames_total"] == FRAMES and job["frames_done"] == FRAMES and job["status"] == "complete"
        assert job["attempts"] == 2
        assert len(raw) < 4096                          # no per-frame detail in the job list

        sent = sum(req.ByteSize() for req in rx.requests)
        assert sent < TEMPO_MAX_BYTES_PER_TRACE, f"the trace is {sent} bytes"
        assert len({sp.trace_id for sp in spans}) == 1
        for sp in spans:
            for kv in sp.attributes:
                assert kv.value.ByteSize() <= TEMPO_MAX_ATTRIBUTE_BYTES + 8

        # Every frame is in the trace once: a render.frame span of its own or a render.frames summary.
        own = [attrs(sp)["render.frame"] for sp in spans if sp.name == "render.frame" and attrs(sp)["render.saved"]]
        batches = [attrs(sp) for sp in spans if sp.name == "render.frames"]
        covered = set(own)
        for b in batches:
            covered |= set(range(b["render.frames.first"], b["render.frames.last"] + 1))
        assert covered == set(range(1, FRAMES + 1))
        assert sum(b["render.frames.count"] for b in batches) + len(own) >= FRAMES
        assert sum(b["render.frames.count"] - b["render.frames.saved"] for b in batches) <= 1
        assert [attrs(sp)["render.attempt"] for sp in spans if sp.name == "render.frame"
                and attrs(sp)["render.frame"] == FAILED] in ([1, 2], [2, 1])   # the failed attempt and the retry

        by_frame = {attrs(sp)["render.frame"]: sp for sp in spans if sp.name == "render.frame"
                    and attrs(sp)["render.attempt"] == 1}
        for frame, why in ((SLOW, "slow"), (FAILED, "failed")):
            sp = by_frame[frame]
            assert attrs(sp)["render.frame.detail"] == why
            phases = [p for p in spans if p.name.startswith("render.phase.") and p.parent_span_id == sp.span_id]
            assert {p.name for p in phases} == {"render.phase.sync", "render.phase.sampling"}
        assert by_frame[FAILED].status.code == 2                     # ERROR: the frame was not saved
        slow_batch = next(b for b in batches if b["render.frames.first"] <= SLOW <= b["render.frames.last"])
        assert slow_batch["render.frames.slowest"] == SLOW and slow_batch["render.frame.seconds.max"] == 5.0
        # A routine frame keeps its phases as attributes.
        routine = next(sp for f, sp in by_frame.items() if "render.frame.detail" not in attrs(sp))
        assert attrs(routine)["render.phase.sampling.seconds"] >= 0
        root = next(sp for sp in spans if sp.name == "render.job")
        assert attrs(root)["render.trace.frames_summarised"] == sum(b["render.frames.count"] for b in batches)
