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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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


# -- keeping a job's trace inside the backends' limits ----------------------------------------------
# Tempo refuses a trace's spans past max_bytes_per_trace (5,000,000 bytes by default) and truncates
# attributes over 2,048 bytes. The budget is the agent's share of that per job (trace); see docs/agent.md.
DEFAULT_TRACE_MAX_BYTES = 4_000_000
ATTRIBUTE_MAX_BYTES = 2048
ROUTINE_SHARE = 0.75       # routine frames get their own span while the trace is under 75 % of the budget
NOTABLE_SHARE = 0.9        # slow, failed, suspect, first and sampled frames: under 90 %; summaries: 100 %
# A farm job's trace is shared by all its tasks (each a job here): a task spends at most 2 % of the budget,
# 0.5 % on routine frames' spans (about 40), up to 1 % with notable ones, the rest on summaries.
SHARED_SHARE = 0.02
BATCH_FRAMES = 100         # past the routine share, a render.frames span per this many frames
FIRST_DETAILED = 10        # the first frames of a job keep their phase spans (the shape of a frame)
SAMPLE_EVERY = 100         # and one frame in this many
SLOW_FACTOR = 2.0          # a frame this many times the median of the recent ones is slow
SLOW_MIN_HISTORY = 5


def _clip(value: str, limit: int = ATTRIBUTE_MAX_BYTES) -> str:
    """A string attribute cut to fit `limit` UTF-8 bytes (Tempo would truncate it anyway)."""
    if len(value) * 4 <= limit:
        return value
    raw = value.encode("utf-8", "surrogatepass")
    return value if len(raw) <= limit else raw[:limit - 3].decode("utf-8", "ignore") + "..."


def _varint(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7) if n >= 0 else 10


def span_bytes(name: str, attrs: dict, status: Status) -> int:
    """The span's size in OTLP protobuf (what Tempo counts), computed from the fields: ids 36, times 18,
    kind 2, flags 5, name, each attribute as a KeyValue, the status; plus its framing and a share of the
    request's resource and scope (6 bytes: an export batch holds hundreds of spans)."""
    n = 36 + 18 + 2 + 5 + 2 + len(name) + (4 + len(status.description or "") if status.status_code != StatusCode.UNSET else 0)
    for k, v in attrs.items():
        if isinstance(v, str):
            val = 1 + _varint(len(v)) + len(v.encode("utf-8", "surrogatepass"))
        elif isinstance(v, bool):
            val = 2
        elif isinstance(v, int):
            val = 1 + _varint(v)
        else:
            val = 9
        kv = 1 + _varint(len(k)) + len(k) + 1 + _varint(val) + val
        n += 1 + _varint(kv) + kv
    return n + 1 + _varint(n) + 6


@dataclass
class FrameBatch:
    """Frames summarised in one render.frames span."""

    index: int
    first: int
    last: int
    start: float
    end: float
    seconds: list[float] = field(default_factory=list)
    saved: int = 0
    slowest: int = 0
    phases: dict[str, float] = field(default_factory=dict)


@dataclass
class TraceBudget:
    """One job's trace: the bytes it was given and spent, and the frames summarised or dropped.

    Its decisions depend on the events only (journal replay rebuilds it the same, spans exported
    before a restart included), so a restarted agent re-sends exactly the spans it sent before."""

    max_bytes: int
    shared: bool = False                   # a farm job's trace: many tasks (jobs) share it
    spent: int = 0
    frames_seen: int = 0
    summarised: int = 0
    dropped: int = 0
    batches: int = 0
    batch: FrameBatch | None = None
    spanned: dict[int, int] = field(default_factory=dict)   # frame -> span id of its render.frame span

    @property
    def limit(self) -> float:
        return self.max_bytes * (SHARED_SHARE if self.shared else 1.0)

    @property
    def routine_limit(self) -> float:
        return self.limit * ROUTINE_SHARE if not self.shared else self.limit / 4

    @property
    def notable_limit(self) -> float:
        return self.limit * NOTABLE_SHARE if not self.shared else self.limit / 2

    def spend(self, n: int) -> None:
        self.spent += n

    def place(self, notable: bool) -> tuple[bool, bool]:
        """(own span, summarised) for the next frame."""
        self.frames_seen += 1
        if self.spent < self.routine_limit:
            return True, False
        own = notable and self.spent < self.notable_limit
        if self.spent < self.limit:
            return own, True
        if not own:
            self.dropped += 1
        return own, False

    def add_to_batch(self, frame: int, start: float, end: float, seconds: float, saved: bool,
                     phases: dict[str, float]) -> FrameBatch | None:
        """Add a frame to the open batch; returns the batch when it is full (to emit)."""
        b = self.batch
        if b is None:
            b = self.batch = FrameBatch(self.batches, frame, frame, start, end, slowest=frame)
            self.batches += 1
        if not b.seconds or seconds > max(b.seconds):
            b.slowest = frame
        b.first, b.last = min(b.first, frame), max(b.last, frame)
        b.start, b.end = min(b.start, start), max(b.end, end)
        b.seconds.append(seconds)
        b.saved += saved
        for name, secs in phases.items():
            b.phases[name] = b.phases.get(name, 0.0) + secs
        self.summarised += 1
        if len(b.seconds) >= BATCH_FRAMES:
            self.batch = None
            return b
        return None

    def close_batch(self) -> FrameBatch | None:
        b, self.batch = self.batch, None
        return b


def phase_seconds(fd: FrameDone) -> dict[str, float]:
    """Seconds per phase of a frame (a phase lasts until the next one starts, the last until the end)."""
    out: dict[str, float] = {}
    for i, (name, ts, _detail) in enumerate(fd.phases):
        end = fd.phases[i + 1][1] if i + 1 < len(fd.phases) else fd.end
        out[name] = out.get(name, 0.0) + max(0.0, min(end, fd.end) - max(ts, fd.start))
    return out


def detail_reason(job: Job, fd: FrameDone, seconds: float, budget: TraceBudget) -> str | None:
    """Why this frame is worth its phase spans (and its own span past the routine budget), or None."""
    ev = fd.event
    if not ev["saved"]:
        return "failed"
    if is_cpu_fallback(ev):
        return "suspect"
    recent = job.recent
    if len(recent) >= SLOW_MIN_HISTORY:
        median = sorted(recent)[len(recent) // 2]
        if median > 0 and seconds > SLOW_FACTOR * median:
            return "slow"
    if budget.frames_seen < (1 if budget.shared else FIRST_DETAILED):    # a farm task: its first frame
        return "first"
    if not budget.shared and budget.frames_seen % SAMPLE_EVERY == 0:
        return "sampled"
    return None


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
        return JsonLinesSpanExporter(cfg.traces_dir, cfg.trace_file_max_bytes, max_age_days=cfg.trace_file_max_age_days)
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
        self.max_bytes = cfg.trace_max_bytes
        # Told (job, frame, start, end, span id) of each frame span: the frame's log records carry it.
        self.on_frame_span: Callable[[str, int, float, float, int], None] | None = None

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

    def emit(self, effect: Effect, pos: int, export: bool = True) -> None:
        """Create the spans for one effect, tagged with its journal position. export=False (journal
        replay of what was exported before a restart) only accounts for them in the job's budget."""
        try:
            if isinstance(effect, FrameDone):
                self._frame(effect, pos, export)
            elif isinstance(effect, JobDone):
                self._job(effect.job, pos, export)
            elif isinstance(effect, FrameCheck):
                self._check(effect, pos, export)
        except Exception:                 # tracing must never break ingest
            log.exception("could not create spans for %s", type(effect).__name__)

    def _root(self, job: Job) -> tuple[int, SpanContext]:
        tid, rid = job_ids(job.id)
        farm = farm_parent(job)
        if farm is not None:
            tid = farm.trace_id
        return tid, SpanContext(tid, rid, is_remote=False, trace_flags=_SAMPLED)

    def budget(self, job: Job) -> TraceBudget:
        if not isinstance(job.trace_budget, TraceBudget):
            job.trace_budget = TraceBudget(self.max_bytes, shared=farm_parent(job) is not None)
        return job.trace_budget

    def _frame(self, fd: FrameDone, pos: int, export: bool = True) -> None:
        job, ev = fd.job, fd.event
        budget = self.budget(job)
        seconds = float(ev["seconds"])
        why = detail_reason(job, fd, seconds, budget)
        phases = phase_seconds(fd)
        tid, root = self._root(job)
        own, summarised = budget.place(why is not None)
        if summarised:
            full = budget.add_to_batch(fd.frame, fd.start, fd.end, seconds, bool(ev["saved"]), phases)
            if full is not None:
                self._batch(job, full, tid, root, pos, export)
        if not own:
            return
        attempt = job.sessions.index(fd.session) + 1 if fd.session in job.sessions else job.attempts
        attrs: dict = {"render.job.id": job.id, "render.frame": fd.frame, "render.frame.seconds": seconds,
                       "render.saved": bool(ev["saved"]), "render.attempt": attempt}
        for kind, key in (("blender", "peak_memory_blender_bytes"), ("rss", "max_rss_bytes"),
                          ("vram", "peak_vram_bytes")):
            if ev.get(key):
                attrs[f"render.memory.peak.{kind}"] = int(ev[key])
        out = ev.get("output_path") or job.output_path
        if out:
            attrs["render.output_path"] = _clip(out)
        if ev.get("device_asked"):
            attrs["render.device.asked"] = ev["device_asked"]
            if is_cpu_fallback(ev):
                attrs["render.frame.suspect"] = "cpu_fallback"
        for name, secs in phases.items():
            attrs[f"render.phase.{name}.seconds"] = round(secs, 6)
        if why is not None:
            attrs["render.frame.detail"] = why
            # The job's own settings ride on its detailed frames too (the root comes at the job's end).
            attrs.update({"render.scene": job.scene, "render.engine": job.engine, "render.device": job.device_type})
            samples = ev.get("samples", job.samples)
            if samples is not None:
                attrs["render.samples"] = samples
            if ev.get("resolution_x") and ev.get("resolution_y"):
                attrs["render.resolution"] = f"{ev['resolution_x']}x{ev['resolution_y']}"
            elif job.resolution:
                attrs["render.resolution"] = job.resolution
            attrs.update(farm_attributes(job))
        status = _UNSET if ev["saved"] else Status(StatusCode.ERROR, "frame not saved")
        seq = ev["seq"]
        sid = span_id(job.id, fd.session, seq)
        budget.spanned[fd.frame] = sid
        if self.on_frame_span is not None:
            self.on_frame_span(job.id, fd.frame, fd.start, fd.end, sid)
        budget.spend(span_bytes("render.frame", attrs, status))
        if export:
            self._span("render.frame", root, tid, sid, fd.start, fd.end, attrs, pos, status)
        if why is None or budget.spent >= budget.notable_limit:
            return
        frame_ctx = SpanContext(tid, sid, is_remote=False, trace_flags=_SAMPLED)
        for i, (name, ts, detail) in enumerate(fd.phases):
            end = fd.phases[i + 1][1] if i + 1 < len(fd.phases) else fd.end
            pattrs: dict = {"render.frame": fd.frame, "render.phase": name}
            if detail:
                pattrs["render.phase.detail"] = _clip(detail)
            budget.spend(span_bytes(f"render.phase.{name}", pattrs, _UNSET))
            if export:
                self._span(f"render.phase.{name}", frame_ctx, tid, span_id(job.id, fd.session, seq, i),
                           max(ts, fd.start), min(max(end, ts), fd.end), pattrs, pos)

    def _batch(self, job: Job, b: FrameBatch, tid: int, root: SpanContext, pos: int, export: bool) -> None:
        """A render.frames span: N consecutive frames summarised (counts, min/median/max, the slowest)."""
        secs = sorted(b.seconds)
        attrs: dict = {"render.job.id": job.id, "render.frames.first": b.first, "render.frames.last": b.last,
                       "render.frames.count": len(secs), "render.frames.saved": b.saved,
                       "render.frame.seconds.min": secs[0], "render.frame.seconds.median": secs[len(secs) // 2],
                       "render.frame.seconds.max": secs[-1], "render.frames.slowest": b.slowest}
        for name, total in b.phases.items():
            attrs[f"render.phase.{name}.seconds.mean"] = round(total / len(secs), 6)
        status = _UNSET if b.saved == len(secs) else Status(StatusCode.ERROR, f"{len(secs) - b.saved} frame(s) not saved")
        self.budget(job).spend(span_bytes("render.frames", attrs, status))
        if export:
            self._span("render.frames", root, tid, span_id(job.id, "frames", b.index), b.start, b.end, attrs, pos,
                       status)

    def _check(self, fc: FrameCheck, pos: int, export: bool = True) -> None:
        """A zero-length render.frame.check span, a child of the frame's span where the agent saw it
        (the check ends after the frame's span went out, and a finished span cannot change)."""
        tid, root = self._root(fc.job)
        parent, budget = root, self.budget(fc.job)
        frame_sid = budget.spanned.get(fc.frame)
        if frame_sid is not None:         # a frame summarised in a render.frames span has no span of its own
            parent = SpanContext(tid, frame_sid, is_remote=False, trace_flags=_SAMPLED)
        attrs: dict = {"render.job.id": fc.job.id, "render.frame": fc.frame, "render.frame.suspect": fc.reason,
                       **farm_attributes(fc.job)}
        if fc.detail:
            attrs["render.frame.suspect.detail"] = fc.detail
        if fc.event.get("rendered"):
            attrs["render.frame.renders"] = int(fc.event["rendered"])
        status = Status(StatusCode.ERROR, f"suspect frame: {fc.reason}")
        budget.spend(span_bytes("render.frame.check", attrs, status))
        if export:
            self._span("render.frame.check", parent, tid, span_id(fc.job.id, fc.event["session"], fc.event["seq"]),
                       fc.ts, fc.ts, attrs, pos, status)

    def _job(self, job: Job, pos: int, export: bool = True) -> None:
        tid, root = self._root(job)
        rid = root.span_id
        budget = self.budget(job)
        last = budget.close_batch()
        if last is not None:
            self._batch(job, last, tid, root, pos, export)
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
        if budget.summarised or budget.dropped:
            attrs["render.trace.frames_summarised"] = budget.summarised
            attrs["render.trace.frames_dropped"] = budget.dropped
        end = job.ended_at if job.ended_at is not None else job.last_event_ts
        if export:
            self._span("render.job", farm_parent(job), tid, rid, job.started_at, end, attrs, pos, status)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.processor.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.provider.shutdown()
