"""POST /api/v1/events and the other routes, through aiohttp's test server (a real HTTP socket).

Malformed, oversized, wrongly-typed and invalid-UTF-8 bodies get 400/413 with a reason, are
counted, and the agent keeps serving.
"""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent.app import AGENT, create_app
from blender_hooks.events import encode
from tests.support.agent import JobStream, agent_config, ndjson, sample_value
from tests.support.fakes import NoNvml


@pytest.fixture
async def client(tmp_path):
    app = create_app(agent_config(tmp_path), nvml=NoNvml())
    async with TestClient(TestServer(app)) as c:
        yield c


async def metrics(client) -> str:
    r = await client.get("/metrics")
    assert r.status == 200
    return await r.text()


async def test_ndjson_batch_is_ingested(client):
    s = JobStream("j1")
    evs = s.whole(frames=3)
    r = await client.post("/api/v1/events", data=ndjson(evs), headers={"Content-Type": "application/x-ndjson"})
    assert r.status == 200
    assert await r.json() == {"accepted": len(evs), "duplicate": 0, "rejected": 0, "errors": []}
    text = await metrics(client)
    labels = {"scene": "Scene", "engine": "CYCLES", "device_type": "CPU"}
    assert sample_value(text, "renderwatch_frames_rendered_total", labels) == 3
    assert sample_value(text, "renderwatch_frame_render_seconds_count", labels) == 3
    assert sample_value(text, "renderwatch_frame_peak_memory_bytes_count", {**labels, "kind": "blender"}) == 3
    assert sample_value(text, "renderwatch_events_ingested_total") == len(evs)
    assert sample_value(text, "renderwatch_job_progress_ratio", {"job": "j1"}) == 1.0
    assert sample_value(text, "renderwatch_jobs_active") == 0

    # The same batch again (a sender retry): all duplicates, nothing counted twice.
    r = await client.post("/api/v1/events", data=ndjson(evs))
    assert (await r.json())["duplicate"] == len(evs)
    text = await metrics(client)
    assert sample_value(text, "renderwatch_frames_rendered_total", labels) == 3
    assert sample_value(text, "renderwatch_events_duplicate_total") == len(evs)


async def test_json_array_and_single_object(client):
    s = JobStream("j2")
    evs = [s.start(1, 2)] + s.frame(1)
    r = await client.post("/api/v1/events", data=json.dumps(evs), headers={"Content-Type": "application/json"})
    assert r.status == 200 and (await r.json())["accepted"] == len(evs)
    one = s.frame(2)[0]
    r = await client.post("/api/v1/events", data=json.dumps(one, indent=2), headers={"Content-Type": "application/json"})
    assert r.status == 200 and (await r.json())["accepted"] == 1
    r = await client.get("/api/v1/jobs")
    jobs = (await r.json())["jobs"]
    assert jobs[0]["job"] == "j2" and jobs[0]["frames_done"] == 1 and jobs[0]["current_frame"] == 2


@pytest.mark.parametrize("mutate,reason", [
    (lambda e: {**e, "frame": "seven"}, "wrong_type"),
    (lambda e: {**e, "saved": 1}, "wrong_type"),
    (lambda e: {k: v for k, v in e.items() if k != "seconds"}, "missing_field"),
    (lambda e: {**e, "type": "frame_middle"}, "unknown_type"),
    (lambda e: {**e, "v": 99}, "unsupported_version"),
    (lambda e: {**e, "seconds": -1}, "out_of_range"),
    (lambda e: {**e, "output_path": "x" * 20000}, "too_large"),
])
async def test_bad_events_are_rejected_with_a_reason(client, mutate, reason):
    s = JobStream("j3")
    good = [s.start(1, 2)]
    bad = mutate(s.frame(1)[-1])
    r = await client.post("/api/v1/events", data=ndjson(good) + encode(bad))
    assert r.status == 400
    body = await r.json()
    assert body["accepted"] == 1 and body["rejected"] == 1
    assert body["errors"][0]["reason"] == reason and body["errors"][0]["index"] == 1
    text = await metrics(client)
    assert sample_value(text, "renderwatch_events_rejected_total", {"reason": reason}) == 1
    assert (await client.get("/healthz")).status == 200


@pytest.mark.parametrize("body,ctype,reason", [
    (b"{not json}\n", "application/x-ndjson", "malformed_json"),
    (b"[1, 2", "application/json", "malformed_json"),
    (b"[3]", "application/json", "not_object"),
    (b'"just a string"\n', "application/x-ndjson", "not_object"),
    (b'{"v":1,"type":"phase","name":"\xff\xfe"}\n', "application/x-ndjson", "invalid_utf8"),
    (b'[{"v":1,"job":"\xc3\x28"}]', "application/json", "invalid_utf8"),
    (b"\x00\x01\x02\n", "application/octet-stream", "malformed_json"),
    (b"[" * 5000 + b"]" * 5000 + b"\n", "application/x-ndjson", "malformed_json"),   # too deep
    (b'{"a":' * 5000 + b"\n", "application/x-ndjson", "too_large"),
])
async def test_malformed_bodies(client, body, ctype, reason):
    r = await client.post("/api/v1/events", data=body, headers={"Content-Type": ctype})
    assert r.status == 400
    doc = await r.json()
    got = doc["errors"][0]["reason"] if "errors" in doc else doc["error"]
    assert got == reason
    text = await metrics(client)
    assert sample_value(text, "renderwatch_events_rejected_total", {"reason": reason}) >= 1
    assert (await client.get("/healthz")).status == 200


async def test_oversized_body_is_413(tmp_path):
    app = create_app(agent_config(tmp_path, max_body_bytes=4096), nvml=NoNvml())
    async with TestClient(TestServer(app)) as c:
        big = ndjson(JobStream("j").whole(frames=20))
        assert len(big) > 4096
        r = await c.post("/api/v1/events", data=big)
        assert r.status == 413 and (await r.json())["error"] == "too_large"

        async def chunks():                  # no Content-Length: the limit is enforced while reading
            for i in range(0, len(big), 1000):
                yield big[i:i + 1000]
        r = await c.post("/api/v1/events", data=chunks())
        assert r.status == 413
        text = await (await c.get("/metrics")).text()
        assert sample_value(text, "renderwatch_events_rejected_total", {"reason": "too_large"}) == 2
        r = await c.post("/api/v1/events", data=ndjson(JobStream("k").whole(frames=1)))
        assert r.status == 200


async def test_token(tmp_path):
    app = create_app(agent_config(tmp_path, token="s3cret"), nvml=NoNvml())
    async with TestClient(TestServer(app)) as c:
        body = ndjson([JobStream("j").start()])
        assert (await c.post("/api/v1/events", data=body)).status == 401
        r = await c.post("/api/v1/events", data=body, headers={"Authorization": "Bearer nope"})
        assert r.status == 401 and (await r.json())["error"] == "unauthorized"
        r = await c.post("/api/v1/events", data=body, headers={"Authorization": "Bearer s3cret"})
        assert r.status == 200
        assert (await c.get("/metrics")).status == 401
        assert (await c.get("/api/v1/jobs")).status == 401
        assert (await c.get("/metrics", headers={"Authorization": "Bearer s3cret"})).status == 200
        assert (await c.get("/healthz")).status == 200
        # Invalid UTF-8 in a header never crashes anything.
        r = await c.post("/api/v1/events", data=body, headers={"Authorization": b"Bearer \xff\xfe".decode("latin-1")})
        assert r.status == 401


async def test_openmetrics_when_asked(client):
    await client.post("/api/v1/events", data=ndjson(JobStream("j").whole(frames=1)))
    r = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/openmetrics-text")
    text = await r.text()
    assert text.rstrip().endswith("# EOF") and "renderwatch_frames_rendered_total" in text
    r = await client.get("/metrics")
    assert r.headers["Content-Type"].startswith("text/plain")


async def test_per_job_series_vanish_after_grace(tmp_path):
    now = [1_000_000.0]
    app = create_app(agent_config(tmp_path, job_grace_seconds=30), nvml=NoNvml(), clock=lambda: now[0])
    async with TestClient(TestServer(app)) as c:
        s = JobStream("gone", t=now[0] - 2)
        await c.post("/api/v1/events", data=ndjson(s.whole(frames=2)))
        text = await (await c.get("/metrics")).text()
        assert sample_value(text, "renderwatch_job_progress_ratio", {"job": "gone"}) == 1.0
        now[0] += 25
        text = await (await c.get("/metrics")).text()
        assert sample_value(text, "renderwatch_job_frames_done", {"job": "gone"}) == 2
        now[0] += 10
        text = await (await c.get("/metrics")).text()
        assert 'job="gone"' not in text
        # The cumulative frame totals stay: they are not per job.
        labels = {"scene": "Scene", "engine": "CYCLES", "device_type": "CPU"}
        assert sample_value(text, "renderwatch_frames_rendered_total", labels) == 2
        assert (await (await c.get("/api/v1/jobs")).json())["jobs"] == []
        from agent.app import expire_once
        assert expire_once(app[AGENT]) == ["gone"]


async def test_healthz_and_jobs_shape(client):
    s = JobStream("shape")
    await client.post("/api/v1/events", data=ndjson([s.start(1, 10)] + s.frame(1, seconds=2.0)))
    h = await (await client.get("/healthz")).json()
    assert h["status"] == "ok" and h["jobs"] == 1
    doc = await (await client.get("/api/v1/jobs")).json()
    j = doc["jobs"][0]
    for key in ("job", "scene", "status", "frames_done", "frames_total", "progress", "eta_seconds",
                "last_frame_seconds", "peaks", "attempts", "host", "pid", "blender_version"):
        assert key in j
    assert (j["frames_done"], j["frames_total"], j["progress"]) == (1, 10, 0.1)
    assert j["eta_seconds"] == pytest.approx(18.0) and doc["gpu_available"] is False and doc["gpus"] == []


async def test_a_body_of_mostly_junk_is_refused_whole(client):
    """Past MAX_REJECTED_PER_BODY rejected lines the agent stops decoding and applies nothing of the body
    (it used to decode every line of a MiB of junk on its event loop); below it, the valid ones count."""
    from agent.ingest import MAX_REJECTED_PER_BODY

    good = ndjson(JobStream("kept").whole(frames=1))
    r = await client.post("/api/v1/events", data=good + b"junk\n" * MAX_REJECTED_PER_BODY)
    assert r.status == 400
    doc = await r.json()
    assert doc["accepted"] > 0 and doc["rejected"] == MAX_REJECTED_PER_BODY and "error" not in doc
    bad = ndjson(JobStream("dropped").whole(frames=1)) + b"junk\n" * (100 * MAX_REJECTED_PER_BODY)
    r = await client.post("/api/v1/events", data=bad)
    doc = await r.json()
    assert r.status == 400 and doc["error"] == "too_many_rejected" and doc["accepted"] == 0, doc
    assert doc["rejected"] == MAX_REJECTED_PER_BODY + 1        # decoding stopped there
    jobs = {j["job"] for j in (await (await client.get("/api/v1/jobs")).json())["jobs"]}
    assert jobs == {"kept"}


def test_junk_posts_do_not_hold_the_event_loop(tmp_path):
    """Four clients posting 1 MiB of invalid NDJSON each held the agent's event loop ~2 s per request
    (/healthz took 2.5-4.5 s, issue 28). Decoding now runs in a worker thread and stops after
    MAX_REJECTED_PER_BODY rejections: /healthz answers while they post."""
    import http.client
    import threading
    import time
    from urllib.parse import urlsplit

    from agent.app import run_in_thread

    handle = run_in_thread(agent_config(tmp_path), nvml=NoNvml())
    port = urlsplit(handle.url).port
    junk = b"x\n" * (1 << 19)                                     # 1 MiB, 524,288 invalid lines
    statuses: list[int] = []
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("POST", "/api/v1/events", body=junk, headers={"Content-Type": "application/x-ndjson"})
            statuses.append(c.getresponse().status)
            c.close()

    clients = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
    try:
        for t in clients:
            t.start()
        latencies = []
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", "/healthz")
            assert c.getresponse().status == 200
            c.close()
            latencies.append(time.monotonic() - t0)
            time.sleep(0.05)
    finally:
        stop.set()
        for t in clients:
            t.join(60)
        handle.stop()
    assert statuses and set(statuses) == {400}
    assert max(latencies) < 1.0, f"/healthz took up to {max(latencies):.2f} s while junk was posted"


def test_the_ingest_collector_reads_the_journal_and_the_span_exporter_it_is_built_with():
    """IngestStats holds counters only: the journal's error counts and the exporter's span counts are
    read from what the collector is constructed with, not from functions patched in afterwards."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, generate_latest

    from agent.metrics import IngestCollector, IngestStats

    reg = CollectorRegistry(auto_describe=False)
    reg.register(IngestCollector(IngestStats(), journal=SimpleNamespace(errors=2, replay_errors=3), spans=lambda: (5, 1)))
    text = generate_latest(reg).decode()
    assert sample_value(text, "renderwatch_journal_write_errors_total") == 2
    assert sample_value(text, "renderwatch_journal_replay_skipped_total") == 3
    assert sample_value(text, "renderwatch_spans_exported_total") == 5
    assert sample_value(text, "renderwatch_span_export_failures_total") == 1


async def test_events_the_hooks_spool_evicted_unsent_are_exported(tmp_path):
    """The hooks' spool adds the events it evicts unsent to spool/evicted_events (blender_hooks.spoolfile);
    /metrics says how many (docs/agent.md promised it, nothing exported it)."""
    from blender_hooks.spoolfile import EVICTED_FILE

    cfg = agent_config(tmp_path)
    async with TestClient(TestServer(create_app(cfg, nvml=NoNvml()))) as c:
        assert sample_value(await metrics(c), "renderwatch_spool_evicted_events_total") == 0
        cfg.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (cfg.spool_dir / EVICTED_FILE).write_text("7\n")
        assert sample_value(await metrics(c), "renderwatch_spool_evicted_events_total") == 7
