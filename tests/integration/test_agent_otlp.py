"""Spans from a real agent to a real OTLP receiver (OTLP/HTTP protobuf and gRPC), decoded with
opentelemetry-proto: one trace per job, a render.frame span per frame under the render.job root."""

from __future__ import annotations

from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from agent.app import run_in_thread
from agent.traces import job_ids
from tests.support.agent import JobStream, OtlpReceiver, agent_config, attrs, ndjson, post
from tests.support.fakes import NoNvml


def check_two_jobs(spans: list) -> None:
    by_trace: dict[bytes, list] = {}
    for sp in spans:
        by_trace.setdefault(sp.trace_id, []).append(sp)
    assert len(by_trace) == 2                                      # one trace per job
    for job, frames in (("job-a", 3), ("job-b", 5)):
        tid, rid = job_ids(job)
        group = by_trace[tid.to_bytes(16, "big")]
        roots = [sp for sp in group if sp.name == "render.job"]
        assert len(roots) == 1 and roots[0].span_id == rid.to_bytes(8, "big") and roots[0].parent_span_id == b""
        fr = [sp for sp in group if sp.name == "render.frame"]
        assert sorted(attrs(sp)["render.frame"] for sp in fr) == list(range(1, frames + 1))
        assert all(sp.parent_span_id == roots[0].span_id for sp in fr)
        phases = [sp for sp in group if sp.name.startswith("render.phase.")]
        assert len(phases) == 2 * frames
        fr_ids = {sp.span_id for sp in fr}
        assert all(sp.parent_span_id in fr_ids for sp in phases)
        a = attrs(fr[0])
        assert a["render.engine"] == "CYCLES" and a["render.memory.peak.blender"] == 150_000_000
        assert roots[0].start_time_unix_nano <= min(sp.start_time_unix_nano for sp in fr)
        assert roots[0].end_time_unix_nano >= max(sp.end_time_unix_nano for sp in fr)
        assert attrs(roots[0])["render.frames.done"] == frames


def feed_two_jobs(url: str) -> None:
    a, b = JobStream("job-a", session="sessiona01"), JobStream("job-b", session="sessionb01")
    assert post(url, ndjson(a.whole(frames=3)))[0] == 200
    assert post(url, ndjson(b.whole(frames=5)))[0] == 200


def test_otlp_http(tmp_path):
    with OtlpReceiver() as rx:
        cfg = agent_config(tmp_path, otlp_endpoint=rx.url + "/v1/traces", otlp_protocol="http/protobuf")
        handle = run_in_thread(cfg, nvml=NoNvml())
        try:
            feed_two_jobs(handle.url)
            spans = rx.wait_for(lambda s: sum(sp.name == "render.job" for sp in s) == 2 and len(s) >= 2 + 8 + 16)
        finally:
            handle.stop()
        check_two_jobs(spans)
        res = {kv.key: kv.value.string_value for kv in rx.requests[0].resource_spans[0].resource.attributes}
        assert res["service.name"] == "renderwatch-agent"
        assert not list((tmp_path / "agent" / "traces").glob("*.jsonl"))     # not the embedded file
        assert len(rx.spans()) == 2 + 8 + 16                                  # nothing twice


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list = []

    def Export(self, request, context):  # noqa: N802 (the gRPC method name)
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def test_otlp_grpc(tmp_path):
    servicer = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        cfg = agent_config(tmp_path, otlp_endpoint=f"http://127.0.0.1:{port}", otlp_protocol="grpc")
        handle = run_in_thread(cfg, nvml=NoNvml())
        try:
            feed_two_jobs(handle.url)
        finally:
            handle.stop()                     # shutdown flushes the batch processor
        spans = [s for r in servicer.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
        check_two_jobs(spans)
    finally:
        server.stop(0)


def test_service_name_and_resource_attributes_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=farm-7,site=lyon")
    with OtlpReceiver() as rx:
        cfg = agent_config(tmp_path, otlp_endpoint=rx.url + "/v1/traces", service_name="node-agent")
        handle = run_in_thread(cfg, nvml=NoNvml())
        try:
            post(handle.url, ndjson(JobStream("j").whole(frames=1)))
            rx.wait_for(lambda s: any(sp.name == "render.job" for sp in s))
        finally:
            handle.stop()
        res = {kv.key: kv.value.string_value for kv in rx.requests[0].resource_spans[0].resource.attributes}
        assert res["service.name"] == "node-agent"
        assert res["deployment.environment"] == "farm-7" and res["site"] == "lyon"
