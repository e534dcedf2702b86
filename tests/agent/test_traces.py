"""agent.traces + agent.exporters: deterministic ids, span shapes, the OTLP-JSON file, the export mark."""

from __future__ import annotations

import json
import time

from google.protobuf.json_format import ParseDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent.exporters import JsonLinesSpanExporter
from agent.journal import ExportMark
from agent.state import State
from agent.traces import RenderTracer, job_ids
from tests.support.agent import JobStream, agent_config


def run_job(tracer: RenderTracer, events: list[dict], first_pos: int = 1) -> None:
    st = State()
    for pos, ev in enumerate(events, start=first_pos):
        if st.accept(ev):
            eff = st.apply(ev)
            if eff is not None:
                tracer.emit(eff, pos)


def test_job_ids_are_deterministic():
    assert job_ids("job-1") == job_ids("job-1")
    assert job_ids("job-1") != job_ids("job-2")
    tid, sid = job_ids("x")
    assert 0 < tid < 1 << 128 and 0 < sid < 1 << 64


def test_spans_of_a_job(tmp_path):
    mem = InMemorySpanExporter()
    tracer = RenderTracer(agent_config(tmp_path), ExportMark(tmp_path), exporter=mem)
    s = JobStream("job-42")
    run_job(tracer, s.whole(frames=3, phases=("sync", "bvh", "sampling")))
    tracer.force_flush()
    spans = mem.get_finished_spans()
    tid, rid = job_ids("job-42")
    assert {sp.context.trace_id for sp in spans} == {tid}
    root = [sp for sp in spans if sp.name == "render.job"]
    frames = [sp for sp in spans if sp.name == "render.frame"]
    phases = [sp for sp in spans if sp.name.startswith("render.phase.")]
    assert len(root) == 1 and root[0].context.span_id == rid and root[0].parent is None
    assert sorted(sp.attributes["render.frame"] for sp in frames) == [1, 2, 3]
    assert all(sp.parent.span_id == rid for sp in frames)
    assert len(phases) == 9
    frame_ids = {sp.context.span_id for sp in frames}
    assert all(sp.parent.span_id in frame_ids for sp in phases)
    f1 = next(sp for sp in frames if sp.attributes["render.frame"] == 1)
    a = f1.attributes
    assert a["render.frame.seconds"] == 0.5 and a["render.memory.peak.blender"] == 150_000_000
    assert a["render.memory.peak.rss"] == 300_000_000 and a["render.samples"] == 8
    assert a["render.resolution"] == "64x36" and a["render.engine"] == "CYCLES" and a["render.device"] == "CPU"
    assert a["render.output_path"] == "/shots/frames/f_0001.png" and a["render.attempt"] == 1
    assert 0.5e9 <= f1.end_time - f1.start_time <= 0.6e9      # frame_start .. frame_end
    assert root[0].start_time <= min(sp.start_time for sp in frames)
    assert root[0].attributes["render.frames.done"] == 3 and root[0].attributes["render.status"] == "complete"
    p_names = [sp.name for sp in sorted(phases, key=lambda sp: sp.start_time)][:3]
    assert p_names == ["render.phase.sync", "render.phase.bvh", "render.phase.sampling"]
    # Re-emitting the same journal positions gives the same ids (a restart re-sends, never forks).
    mem.clear()
    run_job(tracer, JobStream("job-42", t=s.t).whole(frames=3, phases=("sync", "bvh", "sampling")))
    tracer.force_flush()
    again = mem.get_finished_spans()
    assert {sp.context.span_id for sp in again} == {sp.context.span_id for sp in spans}
    tracer.shutdown()


def test_mark_advances_only_after_successful_export(tmp_path):
    class Flaky(InMemorySpanExporter):
        ok = False

        def export(self, spans):
            return super().export(spans) if self.ok else SpanExportResult.FAILURE

    inner = Flaky()
    mark = ExportMark(tmp_path)
    tracer = RenderTracer(agent_config(tmp_path), mark, exporter=inner)
    s = JobStream("j")
    run_job(tracer, [s.start(1, 2)] + s.frame(1))
    tracer.force_flush()
    assert mark.value == 0 and tracer.exporter.failures >= 1
    inner.ok = True
    run_job(tracer, s.frame(2), first_pos=10)
    tracer.force_flush()
    assert ExportMark(tmp_path).value >= 10
    tracer.shutdown()


def test_jsonl_file_is_otlp_json(tmp_path):
    cfg = agent_config(tmp_path)
    tracer = RenderTracer(cfg, ExportMark(tmp_path))          # no endpoint: the embedded file
    run_job(tracer, JobStream("job-9").whole(frames=2))
    tracer.shutdown()
    files = list(cfg.traces_dir.glob("spans-*.jsonl"))
    assert len(files) == 1 and files[0].name.startswith("spans-2")
    names, trace_ids = [], set()
    for line in files[0].read_text().splitlines():
        doc = json.loads(line)
        for rs in doc["resourceSpans"]:
            res = {kv["key"]: kv["value"] for kv in rs["resource"]["attributes"]}
            assert res["service.name"] == {"stringValue": "renderwatch-agent"}
            for ss in rs["scopeSpans"]:
                for sp in ss["spans"]:
                    names.append(sp["name"])
                    trace_ids.add(sp["traceId"])
                    assert len(sp["traceId"]) == 32 and len(sp["spanId"]) == 16
                    int(sp["traceId"], 16)
        # Proves it is the protobuf JSON mapping (with OTLP's hex ids): it parses back.
        for rs in doc["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for sp in ss["spans"]:
                    for k in ("traceId", "spanId", "parentSpanId"):
                        if k in sp:
                            import base64
                            sp[k] = base64.b64encode(bytes.fromhex(sp[k])).decode()
        ParseDict(doc, ExportTraceServiceRequest())
    assert trace_ids == {f"{job_ids('job-9')[0]:032x}"}
    assert names.count("render.job") == 1 and names.count("render.frame") == 2


def test_jsonl_rotation_is_size_bounded(tmp_path):
    mem = InMemorySpanExporter()
    tracer = RenderTracer(agent_config(tmp_path), ExportMark(tmp_path), exporter=mem)
    run_job(tracer, JobStream("j").whole(frames=2))
    tracer.force_flush()
    spans = mem.get_finished_spans()
    out = JsonLinesSpanExporter(tmp_path / "t", max_bytes=40_000)
    for _ in range(200):
        assert out.export(spans) is SpanExportResult.SUCCESS
    files = list((tmp_path / "t").glob("spans-*.jsonl"))
    assert len(files) > 1
    assert sum(f.stat().st_size for f in files) <= 40_000 + 10_000
    out.shutdown()
    assert out.export(spans) is SpanExportResult.FAILURE
    tracer.shutdown()


def test_span_files_stay_bounded_across_days(tmp_path):
    """A node writing a few spans a day for months: one small file a day, never big enough to rotate,
    must still stay under the size bound, and files past the age limit go."""
    mem = InMemorySpanExporter()
    tracer = RenderTracer(agent_config(tmp_path), ExportMark(tmp_path), exporter=mem)
    run_job(tracer, JobStream("j").whole(frames=2))
    tracer.force_flush()
    spans = mem.get_finished_spans()
    day = [1_700_000_000.0]
    out = JsonLinesSpanExporter(tmp_path / "t", max_bytes=40_000, clock=lambda: day[0], max_age_days=10_000)
    for _ in range(90):
        assert out.export(spans) is SpanExportResult.SUCCESS
        day[0] += 86400
    files = list((tmp_path / "t").glob("spans-*.jsonl"))
    assert sum(f.stat().st_size for f in files) <= 40_000
    aged = JsonLinesSpanExporter(tmp_path / "t", max_bytes=40_000, max_age_days=7)
    assert aged.prune(time.time() + 8 * 86400) == len(files)      # all older than 7 days now
    tracer.shutdown()


def test_unwritable_trace_dir_is_counted_not_raised(tmp_path):
    (tmp_path / "file").write_text("x")
    out = JsonLinesSpanExporter(tmp_path / "file" / "traces")
    mem = InMemorySpanExporter()
    tracer = RenderTracer(agent_config(tmp_path), ExportMark(tmp_path), exporter=mem)
    run_job(tracer, JobStream("j").whole(frames=1))
    tracer.force_flush()
    assert out.export(mem.get_finished_spans()) is SpanExportResult.FAILURE and out.failures == 1
    tracer.shutdown()


def _farm_job(tracer, job: str, session: str, **farm) -> None:
    s = JobStream(job, session=session)
    run_job(tracer, [s.start(1, 1, **farm), *s.frame(1), s.end()])


def test_a_farm_job_is_one_trace_across_its_tasks_and_nodes(tmp_path):
    """Two tasks of one Deadline job (two renderwatch jobs, maybe two hosts): one trace, each task's
    render.job span under the farm job's context, with the farm's ids as attributes."""
    mem = InMemorySpanExporter()
    tracer = RenderTracer(agent_config(tmp_path), ExportMark(tmp_path), exporter=mem)
    farm = {"farm_engine": "deadline", "farm_job": "job-8f2c"}
    _farm_job(tracer, "task-1-of-job", "aaaa1111", farm_task="render/1", **farm)
    _farm_job(tracer, "task-2-of-job", "bbbb2222", farm_task="render/2", **farm)
    _farm_job(tracer, "unrelated", "cccc3333")
    tracer.force_flush()
    spans = mem.get_finished_spans()
    roots = {sp.attributes["render.job.id"]: sp for sp in spans if sp.name == "render.job"}
    a, b, other = roots["task-1-of-job"], roots["task-2-of-job"], roots["unrelated"]
    assert a.context.trace_id == b.context.trace_id != other.context.trace_id
    assert a.parent is not None and a.parent.is_remote and a.parent == b.parent and other.parent is None
    assert a.attributes["render.farm.job"] == "job-8f2c" and a.attributes["render.farm.task"] == "render/1"
    frames = [sp for sp in spans if sp.name == "render.frame" and sp.attributes["render.job.id"] == "task-2-of-job"]
    assert frames[0].context.trace_id == a.context.trace_id and frames[0].attributes["render.farm.engine"] == "deadline"


def test_a_traceparent_from_the_farm_is_joined(tmp_path):
    mem = InMemorySpanExporter()
    tracer = RenderTracer(agent_config(tmp_path), ExportMark(tmp_path), exporter=mem)
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    _farm_job(tracer, "j", "dddd4444", farm_engine="otel", traceparent=tp)
    _farm_job(tracer, "bad", "eeee5555", farm_engine="otel", traceparent="not-a-traceparent")
    tracer.force_flush()
    roots = {sp.attributes["render.job.id"]: sp for sp in mem.get_finished_spans() if sp.name == "render.job"}
    assert roots["j"].context.trace_id == 0x4bf92f3577b34da6a3ce929d0e0e4736
    assert roots["j"].parent.span_id == 0x00f067aa0ba902b7
    assert roots["bad"].parent is None and roots["bad"].context.trace_id == job_ids("bad")[0]


def test_a_suspect_frame_is_a_check_span_under_its_frame_span(tmp_path):
    from opentelemetry.trace import StatusCode

    from blender_hooks.events import make_event

    mem = InMemorySpanExporter()
    tracer = RenderTracer(agent_config(tmp_path), ExportMark(tmp_path), exporter=mem)
    s = JobStream("job-sus")
    evs = [s.start(1, 2, device_asked="GPU:OPTIX"), *s.frame(1, device_type="CPU", device_asked="GPU:OPTIX"),
           *s.frame(2), make_event("frame_check", session="hea1e7", seq=1, job="job-sus", host="h", pid=1,
                                   frame=2, reason="blank", detail="every pixel is one value", rendered=1), s.end()]
    run_job(tracer, evs)
    tracer.force_flush()
    spans = mem.get_finished_spans()
    frames = {sp.attributes["render.frame"]: sp for sp in spans if sp.name == "render.frame"}
    (check,) = [sp for sp in spans if sp.name == "render.frame.check"]
    assert check.parent.span_id == frames[2].context.span_id
    assert check.attributes["render.frame.suspect"] == "blank" and check.status.status_code == StatusCode.ERROR
    assert frames[1].attributes["render.frame.suspect"] == "cpu_fallback"
    assert frames[1].attributes["render.device.asked"] == "GPU:OPTIX" and frames[1].attributes["render.device"] == "CPU"
    assert "render.frame.suspect" not in frames[2].attributes
