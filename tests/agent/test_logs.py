"""Blender's lines as log records: capture (classifier's level, folding, cuts, UTF-8), the log spool
stream, the agent's per-job store, GET /api/v1/jobs/{job}/log and the OTLP log pipeline.

Real parts: real Blender output (tests/fixtures/blender-logs-*), the real spool writer and scanner,
the agent app over a real socket, the SDK's OTLP/HTTP log exporter to a local receiver that decodes
ExportLogsServiceRequest.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from agent.app import AGENT, create_app
from agent.logs import FrameSpans, LogIngestor
from agent.logstore import LogStore
from agent.spool import SpoolScanner
from healer.diagnosis.classify import LogScanner
from healer.supervising import logcapture
from healer.supervising.logcapture import LogCapture
from kernel.logrecords import LEVEL_RANK, clean_text
from tests.support.agent import ServerThread, agent_config, sample_value, wait_until
from tests.support.fakes import NoNvml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
VERSIONS = sorted(p.name.removeprefix("blender-logs-") for p in FIXTURES.glob("blender-logs-*"))


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def capture_lines(lines: list[str], spool: Path, job: str = "j1", clock=None, frame_of=None) -> LogCapture:
    """Feed lines through the classifier and the capture, as attempt.py does."""
    scanner = LogScanner()
    cap = LogCapture(job, {"RENDERWATCH_SPOOL_DIR": str(spool.parent)}, directory=spool,
                     clock=clock or Clock())
    for line in lines:
        scanner.feed(line)
        frame = frame_of(line) if frame_of else scanner.frame
        cap.feed(line, scanner.line_level, frame, 1, scanner.frame_in_flight is not None)
    cap.close()
    return cap


def store_spool(spool: Path, root: Path, **kw) -> tuple[LogStore, LogIngestor]:
    store = LogStore(root, **kw)
    ing = LogIngestor(store, FrameSpans())
    SpoolScanner(spool, ing).scan_once()
    return store, ing


@pytest.mark.parametrize("version", VERSIONS)
def test_real_blender_output_every_warning_and_error_kept_progress_folded(tmp_path, version):
    logs = sorted((FIXTURES / f"blender-logs-{version}").glob("*.log"))
    assert logs
    for path in logs:
        lines = path.read_bytes().decode("utf-8", "surrogateescape").splitlines()
        spool = tmp_path / path.stem / "logs"
        clock = Clock()
        scanner = LogScanner()
        levels = []
        for line in lines:
            scanner.feed(line)
            levels.append(scanner.line_level)
        cap = capture_lines(lines, spool, clock=clock)
        store, _ = store_spool(spool, tmp_path / path.stem / "store")
        recs, truncated = store.read("j1", limit=10000)
        assert not truncated
        # nothing folded but progress; every warning and error line is there, in order
        want = [clean_text(line)[0] for line, lv in zip(lines, levels, strict=True) if lv in ("warning", "error")]
        assert [r["text"] for r in recs if r["level"] in ("warning", "error")] == want, path.name
        n_progress = levels.count("progress")
        kept = [r for r in recs if r["level"] == "progress"]
        assert sum(1 + r.get("folded", 0) for r in kept) == n_progress, path.name
        assert cap.counts["folded"] == n_progress - len(kept)
        assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    # the classifier's own reading: a script's traceback is error lines, a missing texture a warning
    seg = FIXTURES / f"blender-logs-{version}"
    for name, level in ((f"script_error_{version}.log", "error"), (f"missing_texture_{version}.log", "warning")):
        if (seg / name).exists():
            s = LogScanner()
            lv = []
            for line in (seg / name).read_text(errors="replace").splitlines():
                s.feed(line)
                lv.append(s.line_level)
            assert level in lv, name


def test_folding_keeps_first_a_sample_a_second_and_last_with_counts(tmp_path):
    clock = Clock()
    spool = tmp_path / "logs"
    cap = LogCapture("j1", {}, directory=spool, clock=clock)
    for i in range(100_000):                                 # a flood: 100,000 lines in 10 s
        clock.t += 0.0001
        cap.feed(f"Fra:1 Mem:1M | Sample {i}/100000", "progress", 1, 1, True)
    cap.feed("Saved: '/tmp/f_0001.png'", "info", 1, 1, True)
    cap.close()
    store, ing = store_spool(spool, tmp_path / "store")
    recs, _ = store.read("j1")
    prog = [r for r in recs if r["level"] == "progress"]
    assert prog[0]["text"].endswith("Sample 0/100000") and prog[-1]["text"].endswith("Sample 99999/100000")
    assert 10 <= len(prog) <= 13                            # first, ~1 a second, last
    assert sum(1 + r.get("folded", 0) for r in prog) == 100_000
    assert recs[-1]["text"].startswith("Saved:")
    assert ing.stats.folded == 100_000 - len(prog)


def test_long_line_cut_binary_junk_replaced_and_counted(tmp_path):
    spool = tmp_path / "logs"
    junk = bytes(range(256)).decode("utf-8", "surrogateescape")
    huge = "x" * (10 << 20)
    capture_lines([huge, junk, "caf\udce9.png \x1b[31mred"], spool)
    store, ing = store_spool(spool, tmp_path / "store")
    recs, _ = store.read("j1")
    assert recs[0]["text"].endswith(f" …[cut {(10 << 20) - 16384} bytes]")
    assert len(recs[0]["text"].encode()) < 16384 + 40
    for r in recs:
        r["text"].encode("utf-8")                          # valid UTF-8: raises otherwise
        assert "\x1b" not in r["text"] and "\x00" not in r["text"]
    assert recs[2]["text"] == "caf\ufffd.png \ufffd[31mred"
    assert ing.stats.cut == 1


def test_nothing_at_all_leaves_nothing(tmp_path):
    spool = tmp_path / "logs"
    capture_lines([], spool)
    assert not spool.exists() or not any(spool.glob("*.ndjson"))


def test_spool_unwritable_drops_are_counted_and_told_to_the_agent(tmp_path, monkeypatch):
    spool = tmp_path / "logs"
    cap = LogCapture("j1", {}, directory=spool, clock=Clock())
    cap.feed("Error: first", "error", 1, 1, True)
    real_write = os.write
    failing = {"on": True}

    def write(fd, data):
        if failing["on"] and b'"job":"j1"' in data:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    cap.writer_retry = 0
    cap.feed("Error: lost to a full disk", "error", 1, 1, True)
    failing["on"] = False
    cap._writer._retry_at = 0  # type: ignore[union-attr]   # the writer retries after a second
    cap.feed("Error: after", "error", 1, 1, True)
    cap.close()
    assert cap.counts["dropped"] == 1
    store, ing = store_spool(spool, tmp_path / "store")
    assert [r["text"] for r in store.read("j1")[0]] == ["Error: first", "Error: after"]
    assert ing.stats.capture_dropped == 1


def spooled(spool: Path) -> list[dict]:
    from kernel.logrecords import decode_record

    return [r for p in sorted(spool.glob("*.ndjson")) for line in p.read_bytes().splitlines()
            if (r := decode_record(line)) is not None]


def test_writes_are_batched_but_a_warning_or_error_is_on_disk_at_once_with_all_before_it(tmp_path, monkeypatch):
    """One os.write per record cost ~2.5 % of a core at 1,000 written lines a second (bench/bench_logs.py):
    records are batched (at most FLUSH_S), except that a warning or an error goes out at once."""
    spool = tmp_path / "logs"
    writes = []
    real_write = os.write

    def write(fd, data):
        if b'"job":"j1"' in data:
            writes.append(data.count(b"\n"))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(logcapture, "FLUSH_S", 30.0)          # no timed flush during the test
    cap = LogCapture("j1", {}, directory=spool, clock=Clock())
    for i in range(200):                                        # ~30 KB: under BATCH_BYTES
        cap.feed(f"Object {i} synced", "info", 1, 1, True)
    assert spooled(spool) == []                                # waiting in the batch
    assert cap.frame_tail(1)[-1] == "[info] Object 199 synced"  # an incident still sees the frame's last lines
    cap.feed("Warning: unable to open texture", "warning", 1, 1, True)
    on_disk = spooled(spool)                                   # at once, with everything before it
    assert [r["text"] for r in on_disk] == [f"Object {i} synced" for i in range(200)] + ["Warning: unable to open texture"]
    assert [r["n"] for r in on_disk] == list(range(1, 202))
    cap.feed("Saved: 'f_0001.png'", "info", 1, 1, True)
    cap.close()
    assert spooled(spool)[-1]["text"] == "Saved: 'f_0001.png'"  # close writes the rest
    assert writes == [201, 1]
    assert cap.counts["records"] == 202


def test_a_batched_line_reaches_the_spool_within_the_flush_interval_without_more_lines(tmp_path):
    spool = tmp_path / "logs"
    cap = LogCapture("j1", {}, directory=spool, clock=Clock())
    t0 = time.monotonic()
    cap.feed("Read blend: scene.blend", "info", None, 1, False)
    assert wait_until(lambda: len(spooled(spool)) == 1, timeout=5)
    assert time.monotonic() - t0 < 1.0                        # the lag goal: well within a second
    cap.close()


def test_a_batch_the_disk_refuses_is_dropped_whole_counted_and_told(tmp_path, monkeypatch):
    spool = tmp_path / "logs"
    monkeypatch.setattr(logcapture, "FLUSH_S", 30.0)
    cap = LogCapture("j1", {}, directory=spool, clock=Clock())
    cap.feed("Error: first", "error", 1, 1, True)
    real_write = os.write
    failing = {"on": True}

    def write(fd, data):
        if failing["on"] and b'"job":"j1"' in data:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    for i in range(10):
        cap.feed(f"info {i}", "info", 1, 1, True)
    cap.flush()                                                # the batch of 10 meets the full disk
    assert cap.counts["dropped"] == 10
    failing["on"] = False
    cap._writer._retry_at = 0  # type: ignore[union-attr]
    cap.feed("info after", "info", 1, 1, True)
    cap.close()
    recs = spooled(spool)
    assert [r["text"] for r in recs] == ["Error: first", "info after"]
    assert [r["n"] for r in recs] == [1, 2] and recs[1]["dropped"] == 10
    store, ing = store_spool(spool, tmp_path / "store")
    assert ing.stats.capture_dropped == 10


def test_store_disk_full_keeps_records_in_the_spool_and_dedupes_the_retry(tmp_path):
    spool = tmp_path / "logs"
    capture_lines(["line 0"], spool)
    store = LogStore(tmp_path / "store")
    ing = LogIngestor(store, FrameSpans())
    scanner = SpoolScanner(spool, ing)
    scanner.scan_once()
    seg = next((tmp_path / "store" / "j1").glob("*.ndjson"))
    kept = seg.read_bytes()
    seg.unlink()
    seg.symlink_to("/dev/full")                            # a full disk: every write is ENOSPC
    cap = LogCapture("j1", {}, directory=spool, clock=Clock())
    for i in range(1, 5):
        cap.feed(f"line {i}", "info", 1, 1, True)
    cap.close()
    scanner.scan_once()              # the scanner skips the session this pass (StoreFull), the others go on
    assert store.stats.write_errors == 1 and not store.stats.writable
    assert any(spool.glob("*.ndjson"))                     # kept in the spool for the next try
    seg.unlink()
    seg.write_bytes(kept)                                  # space again
    scanner.scan_once()
    assert [r["text"] for r in store.read("j1")[0]] == [f"line {i}" for i in range(5)]
    assert store.stats.writable


def test_job_bound_keeps_only_warnings_and_errors_and_restart_continues_seq(tmp_path):
    spool = tmp_path / "logs"
    lines = [("info", f"info {i} " + "y" * 200) for i in range(600)] + [("error", "Error: kept")]
    cap = LogCapture("j1", {}, directory=spool, clock=Clock())
    for lv, text in lines:
        cap.feed(text, lv, 1, 1, True)
    cap.close()
    store, _ = store_spool(spool, tmp_path / "store", job_max_bytes=64 << 10)
    recs, _ = store.read("j1", limit=10000)
    assert recs[-1]["text"] == "Error: kept"
    assert store.stats.dropped["job_bound"] == 601 - len(recs)
    again = LogStore(tmp_path / "store")                  # an agent restart
    assert again.read("j1", after=len(recs) - 1)[0][0]["text"] == "Error: kept"
    assert again._job("j1", False).next == len(recs) + 1  # type: ignore[union-attr]


def test_prune_deletes_oldest_jobs_past_retention(tmp_path):
    clock = Clock(time.time())
    store = LogStore(tmp_path / "store", retention_days=1, clock=clock)
    for job in ("old", "new"):
        store.append_batch([{"job": job, "s": "s", "n": 1, "ts": clock.t, "level": "info", "text": "x"}])
    os.utime(tmp_path / "store" / "old" / "meta.json", (clock.t - 2 * 86400, clock.t - 2 * 86400))
    assert store.prune() == 1
    assert not store.known("old") and store.known("new")


# -- the API ----------------------------------------------------------------------------------------
@pytest.fixture
async def client(tmp_path):
    app = create_app(agent_config(tmp_path, traces_enabled=False), nvml=NoNvml())
    async with TestClient(TestServer(app)) as c:
        yield c


def _spool_frames(spool: Path, job: str) -> None:
    clock = Clock()
    cap = LogCapture(job, {}, directory=spool, clock=clock)
    for attempt in (1, 2):
        for frame in (1, 2):
            for i in range(3):
                clock.t += 0.5
                cap.feed(f"Fra:{frame} Sample {i}", "progress", frame, attempt, True)
            cap.feed(f"Warning: frame {frame} attempt {attempt}", "warning", frame, attempt, True)
            cap.feed(f"Saved: f{frame}", "info", frame, attempt, True)
    cap.close()


async def test_api_filters_pages_404_and_follow(client, tmp_path):
    spool = tmp_path / "spool" / "logs"
    _spool_frames(spool, "j1")
    a = client.server.app[AGENT]
    assert await asyncio.wait_for(_until(lambda: a.logstore.known("j1")), 5)
    await _until(lambda: a.logstore.jobs["j1"].next > 1)
    r = await client.get("/api/v1/jobs/j1/log", params={"frame": 2, "attempt": 2, "level": "warning"})
    doc = await r.json()
    assert r.status == 200
    assert [x["text"] for x in doc["records"]] == ["Warning: frame 2 attempt 2"]
    rec = doc["records"][0]
    assert set(rec) >= {"seq", "ts", "job", "attempt", "frame", "phase", "level", "text", "trace_id", "span_id"}
    assert rec["phase"] == "render" and doc["next"] == rec["seq"] and doc["truncated"] is False
    r = await client.get("/api/v1/jobs/j1/log", params={"limit": 2})
    doc = await r.json()
    assert len(doc["records"]) == 2 and doc["truncated"] is True and doc["next"] == 2
    r = await client.get("/api/v1/jobs/j1/log", params={"after": 2, "limit": 10000})
    assert (await r.json())["records"][0]["seq"] == 3
    assert (await client.get("/api/v1/jobs/nope/log")).status == 404
    assert (await client.get("/api/v1/jobs/j1/log", params={"level": "loud"})).status == 400
    assert (await client.get("/api/v1/jobs/j1/log", params={"limit": 0})).status == 400
    # follow: what is stored after the request comes as server-sent events
    last = (await (await client.get("/api/v1/jobs/j1/log", params={"limit": 10000})).json())["next"]
    resp = await client.get("/api/v1/jobs/j1/log", params={"follow": 1, "after": last, "level": "error"})
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    cap = LogCapture("j1", {}, directory=spool, clock=Clock(1_900_000_000.0))
    cap.feed("Error: late", "error", 3, 2, True)
    cap.close()
    head = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
    assert head.startswith(b"event: log\ndata: ")
    assert json.loads(head.split(b"data: ", 1)[1])["text"] == "Error: late"
    resp.close()
    text = await (await client.get("/metrics")).text()
    assert sample_value(text, "renderwatch_log_records_stored_total", {"level": "warning"}) == 4
    assert sample_value(text, "renderwatch_log_lines_folded_total") is not None


async def _until(pred, timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if pred():
            return True
        await asyncio.sleep(0.05)
    return pred()


# -- OTLP -------------------------------------------------------------------------------------------
class OtlpLogReceiver(ServerThread):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[ExportLogsServiceRequest] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/logs", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        req = ExportLogsServiceRequest()
        req.ParseFromString(await request.read())
        with self.lock:
            self.requests.append(req)
        return web.Response(body=ExportLogsServiceResponse().SerializeToString(), content_type="application/x-protobuf")

    def records(self) -> list:
        with self.lock:
            return [(rl.resource, r) for q in self.requests for rl in q.resource_logs for sl in rl.scope_logs
                    for r in sl.log_records]


def _attrs(kvs) -> dict:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}


def test_otlp_records_carry_the_frame_span_job_ids_and_resource(tmp_path):
    from agent.logexport import LogShipper
    from agent.traces import job_ids

    with OtlpLogReceiver() as rx:
        cfg = agent_config(tmp_path, logs_otlp_endpoint=rx.url + "/v1/logs", service_name="rw-test")
        spans = FrameSpans()
        shipper = LogShipper(cfg, spans, job_info=lambda jid: {"render.farm.job": "farm-7"})
        base = {"job": "j1", "attempt": 1, "phase": "render", "trace_id": None, "span_id": None}
        shipper.add({**base, "seq": 1, "ts": 100.0, "frame": 3, "level": "warning", "text": "Warning: a"})
        shipper.add({**base, "seq": 2, "ts": 101.0, "frame": 4, "level": "error", "text": "Error: crash"})
        shipper.add({**base, "seq": 3, "ts": 99.0, "frame": None, "level": "info", "text": "Read blend"})
        assert shipper.npending == 2
        shipper.frame_span("j1", 3, 99.5, 100.5, 0xABC)      # frame 3's span: its line goes with it
        shipper.job_ended("j1")                               # frame 4 crashed: no span, the job's root
        shipper.force_flush()
        assert wait_until(lambda: len(rx.records()) == 3)
        shipper.shutdown()
    tid, root = job_ids("j1")
    got = {r.body.string_value: (res, r) for res, r in rx.records()}
    res, w = got["Warning: a"]
    assert int.from_bytes(w.trace_id, "big") == tid and int.from_bytes(w.span_id, "big") == 0xABC
    assert w.severity_text == "WARN" and w.time_unix_nano == 100 * 10**9
    a = _attrs(w.attributes)
    assert a["render.job.id"] == "j1" and a["render.frame"] == 3 and a["render.attempt"] == 1
    assert a["render.farm.job"] == "farm-7"
    assert _attrs(res.attributes)["service.name"] == "rw-test" and "host.name" in _attrs(res.attributes)
    assert int.from_bytes(got["Error: crash"][1].span_id, "big") == root
    assert int.from_bytes(got["Read blend"][1].span_id, "big") == root


def test_a_flood_of_records_without_spans_keeps_the_shipper_bounded(tmp_path):
    """A million lines with no frame span yet (a flood): the records waiting for spans and the SDK's
    queue are bounded, so the agent stays in its 80 MB (at 50,000 + 65,536 they took ~80 MB alone)."""
    import threading
    import tracemalloc

    from agent.logexport import MAX_PENDING, LogShipper

    stuck = threading.Event()

    class Slow:                                       # an exporter that never catches up: held until the
        def export(self, batch):                      # flood is in (a sleep made it a race with a busy host)
            stuck.wait(60)
            from opentelemetry.sdk._logs.export import LogRecordExportResult
            return LogRecordExportResult.SUCCESS

        def force_flush(self, timeout_millis=0):
            return True

        def shutdown(self):
            pass

    shipper = LogShipper(agent_config(tmp_path), FrameSpans(), exporter=Slow())
    tracemalloc.start()
    try:
        for i in range(60_000):
            shipper.add({"seq": i + 1, "ts": 1.8e9 + i / 1000, "job": "flood", "attempt": 1, "frame": 1 + i // 1000,
                         "phase": "render", "level": "info", "text": f"Object {i} synced: Mesh.{i:05d}",
                         "trace_id": None, "span_id": None})
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        stuck.set()
        shipper.shutdown()
    assert shipper.npending <= MAX_PENDING
    counts = shipper.counts()
    assert counts["dropped_queue_full"] > 0                  # counted, not dropped silently by the SDK
    assert shipper.emitted + counts["dropped_queue_full"] + shipper.npending == 60_000
    assert peak < 20e6, f"{peak / 1e6:.0f} MB held for 60,000 records"


def test_embedded_otlp_json_file_when_no_endpoint(tmp_path):
    from agent.logexport import LogShipper

    cfg = agent_config(tmp_path)
    shipper = LogShipper(cfg, FrameSpans())
    shipper.add({"job": "j1", "seq": 1, "ts": 5.0, "frame": None, "attempt": 1, "phase": "startup",
                 "level": "info", "text": "hello", "trace_id": None, "span_id": None})
    shipper.shutdown()
    files = list((tmp_path / "agent" / "logs-otlp").glob("logs-*.jsonl"))
    doc = json.loads(files[0].read_text().splitlines()[0])
    rec = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert rec["body"]["stringValue"] == "hello" and len(rec["traceId"]) == 32


def test_level_order():
    assert LEVEL_RANK["progress"] < LEVEL_RANK["info"] < LEVEL_RANK["warning"] < LEVEL_RANK["error"]
    assert logcapture.SAMPLE_S == 1.0


def test_failed_attempt_incident_carries_the_frames_last_lines_scrubbed_and_bounded(tmp_path):
    from healer.diagnosis.errors import SegfaultError
    from healer.incidents.model import Incident
    from healer.incidents.notify import build_payload
    from healer.incidents.scrub import Scrubber
    from healer.incidents.sentry import build_event

    cap = LogCapture("j1", {}, directory=tmp_path / "logs", clock=Clock())
    for i in range(100):
        cap.feed(f"Fra:3 Sample {i}", "progress", 3, 1, True)
        cap.feed(f"info {i} /home/bob/shots/a.png", "info", 3, 1, True)
    cap.feed("Writing: /home/bob/monkey.crash.txt", "error", 3, 1, True)
    cap.feed("other frame", "info", 4, 1, True)
    lines = cap.frame_tail(3)
    cap.close()
    assert len(lines) == 30 and lines[-1] == "[error] Writing: /home/bob/monkey.crash.txt"
    inc = Incident(kind="render.crashed", info={"job": "j1", "scene": "/s/a.blend", "frame": 3, "frame_log": lines},
                   error=SegfaultError(summary="segfault at frame 3", frame=3))
    scrub = Scrubber(include_env=False)
    hook = build_payload(inc, scrub)
    assert hook["frame_log"][-1] == "[error] Writing: ~/monkey.crash.txt"
    assert "bob" not in json.dumps(hook["frame_log"])
    event = build_event(inc, scrub).event
    assert event["extra"]["frame_log"][-1] == "[error] Writing: ~/monkey.crash.txt"
    assert "bob" not in json.dumps(event["extra"]["frame_log"])
