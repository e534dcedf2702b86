"""Log records to the central tier as OTLP logs, through the OpenTelemetry SDK's own log pipeline.

LoggerProvider + BatchLogRecordProcessor + the exporter the OTEL_* settings name (OTLP/HTTP or
gRPC at the traces' endpoint with /v1/logs, OTEL_EXPORTER_OTLP_LOGS_ENDPOINT to override; with no
endpoint, OTLP-JSON lines in `<data>/logs-otlp/logs-YYYYMMDD.jsonl`). Each record carries the trace
id of its job and the span id of its frame's span (agent.traces), the job, frame, attempt and farm
ids as attributes, and the traces' resource (service.name, host.name, OTEL_RESOURCE_ATTRIBUTES).

A frame's span exists once the frame ends, so a frame's records wait here (bounded) until the
tracer tells its span; records of a frame that never got one (a crash, a frame summarised in a
render.frames span) go out with the job's root span when a later frame's span starts after them,
when the job ends, or after HOLD_S.

Usage::

    shipper = LogShipper(cfg, spans, job_info=lambda jid: {...})
    shipper.add(record); shipper.frame_span(job, frame, start, end, sid); shipper.tick(now)
    shipper.shutdown()
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import TraceFlags

from agent.config import AgentConfig
from agent.exporters import JsonLinesSpanExporter, _hex_ids
from agent.logs import SPAN_SLACK_S, FrameSpans
from agent.traces import job_ids

log = logging.getLogger(__name__)
SCOPE = "renderwatch.agent.logs"
HOLD_S = 900.0              # a frame's records wait at most this long for its span
MAX_PENDING = 5_000         # records waiting for spans, all jobs together (~0.5 KB each)
QUEUE_SIZE = 4096           # records emitted and not yet exported (~1.3 KB each in the SDK's queue);
                            # past it a record is not emitted, counted as dropped_queue_full
# Both bound the agent under a flood (a million lines: bench/bench_logs.py): at 50,000 and 65,536 the
# waiting records alone took ~80 MB, the agent's whole budget. What a flood leaves out of OTLP stays in
# the node's store (GET /api/v1/jobs/{job}/log); records past MAX_PENDING go out with the job's root span.
SEVERITY = {"progress": (SeverityNumber.DEBUG, "DEBUG"), "info": (SeverityNumber.INFO, "INFO"),
            "warning": (SeverityNumber.WARN, "WARN"), "error": (SeverityNumber.ERROR, "ERROR")}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class JsonLinesLogExporter(JsonLinesSpanExporter):
    """The embedded exporter for log records: ExportLogsServiceRequest as OTLP-JSON lines."""

    PREFIX = "logs"

    def encode(self, batch: Sequence) -> bytes:  # type: ignore[override]
        import json

        doc = MessageToDict(encode_logs(batch), use_integers_for_enums=True)
        for rl in doc.get("resourceLogs", []):
            for sl in rl.get("scopeLogs", []):
                for rec in sl.get("logRecords", []):
                    _hex_ids(rec)
        return (json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8", "replace")


class CountingExporter(LogRecordExporter):
    """Counts records by outcome around the real exporter (failures never raise into the SDK)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.exported = 0
        self.failed = 0

    def export(self, batch: Sequence) -> LogRecordExportResult:
        try:
            res = self.inner.export(batch)
        except Exception as e:
            log.warning("log export failed: %s", e)
            res = LogRecordExportResult.FAILURE
        if res == LogRecordExportResult.SUCCESS or getattr(res, "name", "") == "SUCCESS":
            self.exported += len(batch)
        else:
            self.failed += len(batch)
        return res

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))

    def shutdown(self) -> None:
        self.inner.shutdown()


def create_log_exporter(cfg: AgentConfig) -> Any:
    if cfg.logs_otlp_endpoint is None:
        return JsonLinesLogExporter(cfg.data_dir / "logs-otlp", cfg.trace_file_max_bytes,
                                    max_age_days=cfg.trace_file_max_age_days)
    if cfg.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
        return GrpcLogExporter(endpoint=cfg.logs_otlp_endpoint)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
    return HttpLogExporter(endpoint=cfg.logs_otlp_endpoint)


class LogShipper:
    def __init__(self, cfg: AgentConfig, spans: FrameSpans, *, exporter: Any = None,
                 job_info: Callable[[str], dict[str, Any]] | None = None, clock: Callable[[], float] = time.time):
        resource = Resource.create({"service.name": cfg.service_name, "host.name": socket.gethostname()})
        self.exporter = CountingExporter(exporter or create_log_exporter(cfg))
        self.processor = BatchLogRecordProcessor(self.exporter, schedule_delay_millis=cfg.bsp_schedule_delay_ms,
                                                 max_queue_size=QUEUE_SIZE + 512, max_export_batch_size=512)
        self.provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_log_record_processor(self.processor)
        self.logger = self.provider.get_logger(SCOPE)
        self.spans = spans
        self.job_info = job_info or (lambda _jid: {})
        self.clock = clock
        self.pending: dict[str, list[tuple[float, dict[str, Any]]]] = {}    # job -> (received, record)
        self.npending = 0
        self.emitted = 0
        self.overflow = 0
        self.queue_full = 0

    def counts(self) -> dict[str, int]:
        return {"exported": self.exporter.exported, "failed": self.exporter.failed,
                "waiting": self.npending, "released_unspanned": self.overflow,
                "dropped_queue_full": self.queue_full}

    def in_flight(self) -> int:
        """Records emitted to the SDK and not yet through the exporter."""
        return self.emitted - self.exporter.exported - self.exporter.failed

    # -- records in -----------------------------------------------------------------------------
    def add(self, rec: dict[str, Any]) -> None:
        if rec.get("span_id") or rec.get("frame") is None:
            self._emit(rec, int(rec["span_id"], 16) if rec.get("span_id") else None)
            return
        if self.npending >= MAX_PENDING:
            self.overflow += 1
            self._emit(rec, None)
            return
        self.pending.setdefault(rec["job"], []).append((self.clock(), rec))
        self.npending += 1

    def frame_span(self, job: str, frame: int, start: float, end: float, sid: int) -> None:
        """A frame's span is known: its records go out with it; earlier ones that never got one, with the root."""
        waiting = self.pending.get(job)
        if not waiting:
            return
        keep = []
        for item in waiting:
            rec = item[1]
            ts = rec["ts"]
            if rec.get("frame") == frame and start - SPAN_SLACK_S <= ts <= end + SPAN_SLACK_S:
                self._emit(rec, sid)
            elif ts < start - SPAN_SLACK_S:
                self._emit(rec, None)
            else:
                keep.append(item)
        self.npending -= len(waiting) - len(keep)
        if keep:
            self.pending[job] = keep
        else:
            del self.pending[job]

    def job_ended(self, job: str) -> None:
        for _t, rec in self.pending.pop(job, []):
            self.npending -= 1
            self._emit(rec, None)

    def tick(self, now: float | None = None) -> None:
        """Release records that waited HOLD_S for a span."""
        now = self.clock() if now is None else now
        for job in list(self.pending):
            waiting = self.pending[job]
            while waiting and now - waiting[0][0] >= HOLD_S:
                self._emit(waiting.pop(0)[1], None)
                self.npending -= 1
            if not waiting:
                del self.pending[job]

    # -- out ------------------------------------------------------------------------------------
    def _emit(self, rec: dict[str, Any], sid: int | None) -> None:
        if self.in_flight() >= QUEUE_SIZE:       # counted here: the SDK's own queue drops silently
            self.queue_full += 1
            return
        job = rec["job"]
        tid, root = job_ids(job)
        if rec.get("trace_id"):
            tid = int(rec["trace_id"], 16)
        sev, sev_text = SEVERITY[rec["level"]]
        attrs: dict[str, Any] = {"render.job.id": job, "render.log.level": rec["level"]}
        if rec.get("seq") is not None:
            attrs["render.log.seq"] = rec["seq"]
        for key, name in (("frame", "render.frame"), ("attempt", "render.attempt"), ("phase", "render.phase"),
                          ("folded", "render.log.folded")):
            if rec.get(key) is not None:
                attrs[name] = rec[key]
        attrs.update(self.job_info(job))
        ts = int(rec["ts"] * 1e9)
        self.logger.emit(LogRecord(timestamp=ts, observed_timestamp=ts, trace_id=tid, span_id=sid or root,
                                   trace_flags=_SAMPLED, severity_number=sev, severity_text=sev_text,
                                   body=rec["text"], attributes=attrs))
        self.emitted += 1

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.processor.force_flush(timeout_millis))

    def shutdown(self) -> None:
        for job in list(self.pending):
            self.job_ended(job)
        self.provider.shutdown()
