"""OTLP traces through the OpenTelemetry SDK: one trace per render job, a span per frame and phase.

Ids are deterministic (derived from the job id, session and event seq), so attempts and agent
restarts land in the same trace and a re-emitted span carries the same id. Spans are created with
explicit start/end times from the events. The exporter is chosen from the OTEL_* settings; with no
endpoint the embedded JsonLinesSpanExporter writes OTLP-JSON lines under the data directory.

Usage::

    tracer = RenderTracer(cfg, mark)          # mark: journal.ExportMark
    tracer.emit(effect, pos)                  # a state.FrameDone or state.JobDone at journal position pos
    tracer.shutdown()
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
from collections.abc import Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from agent.config import AgentConfig
from agent.exporters import JsonLinesSpanExporter
from agent.journal import ExportMark
from agent.state import Effect, FrameCheck, FrameDone, Job, JobDone, is_cpu_fallback

log = logging.getLogger(__name__)
SCOPE = "renderwatch.agent"
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)


def _h(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8", "surrogatepass")).digest()


def job_ids(job_id: str) -> tuple[int, int]:
    """(trace id, root span id) of a job: the same on every agent, attempt and restart."""
    d = _h("renderwatch/job", job_id)
    return int.from_bytes(d[:16], "big") or 1, int.from_bytes(d[16:24], "big") or 1


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def farm_parent(job: Job) -> SpanContext | None:
    """The context a job's root span joins: the farm's TRACEPARENT when it gave one, else one trace per
    farm job (the same trace id on every node and task of it), else None (a trace of its own)."""
    m = _TRACEPARENT.match(job.traceparent.strip().lower()) if job.traceparent else None
    if m and int(m.group(1), 16) and int(m.group(2), 16):
        return SpanContext(int(m.group(1), 16), int(m.group(2), 16), is_remote=True, trace_flags=_SAMPLED)
    if job.farm_job:
        d = _h("renderwatch/farm-job", job.farm_engine, job.farm_job)
        return SpanContext(int.from_bytes(d[:16], "big") or 1, int.from_bytes(d[16:24], "big") or 1,
                           is_remote=True, trace_flags=_SAMPLED)
    return None


def farm_attributes(job: Job) -> dict[str, str]:
    return {k: v for k, v in (("render.farm.engine", job.farm_engine), ("render.farm.job", job.farm_job),
                              ("render.farm.task", job.farm_task)) if v}


def span_id(*parts: object) -> int:
    return int.from_bytes(_h("renderwatch/span", *parts)[:8], "big") or 1


class TrackingExporter(SpanExporter):
    """Wraps the real exporter; after a successful export, persists the highest journal position
    whose spans were exported, so a restarted agent re-emits only the spans not yet exported."""

    def __init__(self, inner: SpanExporter, mark: ExportMark):
        self.inner = inner
        self.mark = mark
        self.positions: dict[int, int] = {}      # span id -> journal position (until exported)
        self.failures = 0
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:                         # an exporter must never take the agent down
            log.exception("span export failed")
            result = SpanExportResult.FAILURE
        top = 0
        for s in spans:
            if s.context is not None:
                top = max(top, self.positions.pop(s.context.span_id, 0))
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
            if top:
                try:
                    self.mark.advance(top)
                except OSError as e:
                    log.warning("cannot persist the exported-span mark: %s", e)
        else:
            self.failures += 1
        return result

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.inner.shutdown()


def create_exporter(cfg: AgentConfig) -> SpanExporter:
    """The exporter named by the config: OTLP/HTTP, OTLP/gRPC, or the embedded JSON-lines file."""
    if cfg.otlp_endpoint is None:
        return JsonLinesSpanExporter(cfg.traces_dir, cfg.trace_file_max_bytes)
    if cfg.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        return GrpcExporter(endpoint=cfg.otlp_endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    return HttpExporter(endpoint=cfg.otlp_endpoint)


class RenderTracer:
    """Turns state effects into spans: render.job (root), render.frame, render.phase.<name>."""

    def __init__(self, cfg: AgentConfig, mark: ExportMark, exporter: SpanExporter | None = None):
        resource = Resource.create({"service.name": cfg.service_name, "host.name": socket.gethostname()})
        self.exporter = TrackingExporter(exporter or create_exporter(cfg), mark)
        self.processor = BatchSpanProcessor(self.exporter, max_queue_size=65536,
                                            schedule_delay_millis=cfg.bsp_schedule_delay_ms,
                                            max_export_batch_size=512)
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(self.processor)
        self.scope = InstrumentationScope(SCOPE)
        self.emitted = 0

    def _span(self, name: str, parent: SpanContext | None, trace_id: int, sid: int, start: float,
              end: float, attrs: dict, pos: int, status: Status = _UNSET) -> SpanContext:
        # The spans describe the past (times come from the events), so they are built finished:
        # a ReadableSpan handed to the provider's processor, as Tracer.start_span + end would do
        # minus the sampler, the locks and the live-span bookkeeping (a third of ingest time).
        ctx = SpanContext(trace_id, sid, is_remote=False, trace_flags=_SAMPLED)
        span = ReadableSpan(name, context=ctx, parent=parent, resource=self.provider.resource, attributes=attrs,
                            kind=SpanKind.INTERNAL, status=status, start_time=int(start * 1e9),
                            end_time=int(max(end, start) * 1e9), instrumentation_scope=self.scope)
        self.exporter.positions[sid] = pos
        self.processor.on_end(span)
        self.emitted += 1
        return ctx

    def emit(self, effect: Effect, pos: int) -> None:
        """Create the spans for one effect, tagged with its journal position."""
        try:
            if isinstance(effect, FrameDone):
                self._frame(effect, pos)
            elif isinstance(effect, JobDone):
                self._job(effect.job, pos)
            elif isinstance(effect, FrameCheck):
                self._check(effect, pos)
        except Exception:                 # tracing must never break ingest
            log.exception("could not create spans for %s", type(effect).__name__)

    def _root(self, job: Job) -> tuple[int, SpanContext]:
        tid, rid = job_ids(job.id)
        farm = farm_parent(job)
        if farm is not None:
            tid = farm.trace_id
        return tid, SpanContext(tid, rid, is_remote=False, trace_flags=_SAMPLED)

    def _frame(self, fd: FrameDone, pos: int) -> None:
        job, ev = fd.job, fd.event
        tid, root = self._root(job)
        attempt = job.sessions.index(fd.session) + 1 if fd.session in job.sessions else job.attempts
        attrs: dict = {"render.job.id": job.id, "render.frame": fd.frame, "render.frame.seconds": float(ev["seconds"]),
                       "render.saved": bool(ev["saved"]), "render.attempt": attempt, "render.scene": job.scene,
                       "render.engine": job.engine, "render.device": job.device_type, **farm_attributes(job)}
        for kind, key in (("blender", "peak_memory_blender_bytes"), ("rss", "max_rss_bytes"),
                          ("vram", "peak_vram_bytes")):
            if ev.get(key):
                attrs[f"render.memory.peak.{kind}"] = int(ev[key])
        samples = ev.get("samples", job.samples)
        if samples is not None:
            attrs["render.samples"] = samples
        if ev.get("resolution_x") and ev.get("resolution_y"):
            attrs["render.resolution"] = f"{ev['resolution_x']}x{ev['resolution_y']}"
        elif job.resolution:
            attrs["render.resolution"] = job.resolution
        out = ev.get("output_path") or job.output_path
        if out:
            attrs["render.output_path"] = out
        if ev.get("device_asked"):
            attrs["render.device.asked"] = ev["device_asked"]
            if is_cpu_fallback(ev):
                attrs["render.frame.suspect"] = "cpu_fallback"
        seq = ev["seq"]
        frame_ctx = self._span("render.frame", root, tid, span_id(job.id, fd.session, seq), fd.start, fd.end, attrs, pos)
        for i, (name, ts, detail) in enumerate(fd.phases):
            end = fd.phases[i + 1][1] if i + 1 < len(fd.phases) else fd.end
            pattrs: dict = {"render.frame": fd.frame, "render.phase": name}
            if detail:
                pattrs["render.phase.detail"] = detail
            self._span(f"render.phase.{name}", frame_ctx, tid, span_id(job.id, fd.session, seq, i),
                       max(ts, fd.start), min(max(end, ts), fd.end), pattrs, pos)

    def _check(self, fc: FrameCheck, pos: int) -> None:
        """A zero-length render.frame.check span, a child of the frame's span where the agent saw it
        (the check ends after the frame's span went out, and a finished span cannot change)."""
        tid, root = self._root(fc.job)
        parent = root
        if fc.frame_span is not None:
            parent = SpanContext(tid, span_id(fc.job.id, *fc.frame_span), is_remote=False, trace_flags=_SAMPLED)
        attrs: dict = {"render.job.id": fc.job.id, "render.frame": fc.frame, "render.frame.suspect": fc.reason,
                       **farm_attributes(fc.job)}
        if fc.detail:
            attrs["render.frame.suspect.detail"] = fc.detail
        if fc.event.get("rendered"):
            attrs["render.frame.renders"] = int(fc.event["rendered"])
        self._span("render.frame.check", parent, tid, span_id(fc.job.id, fc.event["session"], fc.event["seq"]),
                   fc.ts, fc.ts, attrs, pos, Status(StatusCode.ERROR, f"suspect frame: {fc.reason}"))

    def _job(self, job: Job, pos: int) -> None:
        tid, root = self._root(job)
        rid = root.span_id
        attrs = {"render.job.id": job.id, "render.scene": job.scene, "render.engine": job.engine,
                 "render.device": job.device_type, "render.blend_file": job.blend_file,
                 "render.status": job.status, "render.frames.done": job.frames_done,
                 "render.frames.total": job.frames_total, "render.attempts": job.attempts,
                 "render.blender_version": job.blender_version, "host.name": job.host, "process.pid": job.pid}
        if job.samples is not None:
            attrs["render.samples"] = job.samples
        if job.resolution:
            attrs["render.resolution"] = job.resolution
        status = {"complete": Status(StatusCode.OK),
                  "failed": Status(StatusCode.ERROR, f"the healer gave up: {job.error_type}"),
                  "stale": Status(StatusCode.ERROR, "the render stopped reporting")}.get(job.status, _UNSET)
        if job.error_type:
            attrs["error.type"] = job.error_type
        attrs.update(farm_attributes(job))
        end = job.ended_at if job.ended_at is not None else job.last_event_ts
        self._span("render.job", farm_parent(job), tid, rid, job.started_at, end, attrs, pos, status)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.processor.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.provider.shutdown()
