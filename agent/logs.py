"""Blender's lines at the agent: ingest from the log spool stream, the per-job store, the API, metrics.

The spool scanner (agent.spool.SpoolScanner, the same one that reads the hooks' events) reads
`<spool>/logs/` into `LogIngestor.ingest_lines`; each record is stored per job (agent.logstore) with
the trace id of its job and, where the agent knows it, the span id of its frame, then handed to the
OTLP shipper (agent.logexport). `GET /api/v1/jobs/{job}/log` reads them back (docs/agent.md).

Usage::

    ingestor = LogIngestor(store, spans)
    SpoolScanner(spool_dir / "logs", ingestor).scan_once()
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.logstore import LogStore
from kernel.logrecords import CUT_MARK, LEVEL_RANK, decode_record

CUT_PREFIX = CUT_MARK.split("{", 1)[0]
LIMIT, LIMIT_MAX = 1000, 10000
KEEPALIVE_S = 15.0
SPAN_SLACK_S = 2.0          # a line printed just after its frame's span ended still belongs to it


@dataclass
class LogStats:
    """What the log ingest counted; `spool_*` are set by the spool scanner of the logs stream."""

    received: int = 0
    malformed: int = 0
    folded: int = 0              # progress/info lines the capture folded into the records stored
    cut: int = 0                 # over-long lines cut by the capture
    capture_dropped: int = 0     # lines the capture could not spool (the node's disk full)
    spool_segments: int = 0
    spool_pending_bytes: int = 0
    spool_evicted: Callable[[], int] = field(default=lambda: 0)


class FrameSpans:
    """The span of each frame the tracer exported, so a log line gets its frame's span id."""

    def __init__(self) -> None:
        self.frames: dict[tuple[str, int], list[tuple[float, float, int]]] = {}
        self.trace: Callable[[str], int] | None = None     # job id -> trace id (the tracer's root)

    def note(self, job: str, frame: int, start: float, end: float, sid: int) -> None:
        spans = self.frames.setdefault((job, frame), [])
        spans.append((start, end, sid))
        del spans[:-8]                                       # the recent attempts of a frame

    def lookup(self, job: str, frame: int | None, ts: float) -> int | None:
        if frame is None:
            return None
        for start, end, sid in reversed(self.frames.get((job, frame), ())):
            if start - SPAN_SLACK_S <= ts <= end + SPAN_SLACK_S:
                return sid
        return None

    def forget(self, jobs: Iterable[str]) -> None:
        gone = set(jobs)
        for key in [k for k in self.frames if k[0] in gone]:
            del self.frames[key]

    def fill(self, rec: dict[str, Any]) -> None:
        """Set the record's span_id (hex) from a frame span known now."""
        sid = self.lookup(rec["job"], rec.get("frame"), rec["ts"])
        if sid is not None:
            rec["span_id"] = f"{sid:016x}"


class LogIngestor:
    """Duck-typed for agent.spool.SpoolScanner: `ingest_lines(lines).accepted` and `stats`."""

    @dataclass
    class Result:
        accepted: int = 0

    def __init__(self, store: LogStore, spans: FrameSpans, stats: LogStats | None = None):
        self.store, self.spans = store, spans
        self.stats = stats or LogStats()

    def ingest_lines(self, lines: Iterable[bytes]) -> LogIngestor.Result:
        st, trace, lookup = self.stats, self.spans.trace, self.spans.lookup
        recs = []
        for raw in lines:
            if not raw.strip():
                continue
            rec = decode_record(raw)
            st.received += 1
            if rec is None:
                st.malformed += 1
                continue
            if rec.get("folded"):
                st.folded += int(rec["folded"])
            if rec.get("dropped"):
                st.capture_dropped += int(rec["dropped"])
            text = rec["text"]
            if text.endswith(" bytes]") and CUT_PREFIX in text:
                st.cut += 1
            tid = trace(rec["job"]) if trace is not None else None
            rec["trace_id"] = f"{tid:032x}" if tid else None
            sid = lookup(rec["job"], rec.get("frame"), rec["ts"])
            rec["span_id"] = f"{sid:016x}" if sid else None
            recs.append(rec)
        return LogIngestor.Result(self.store.append_batch(recs))


class LogCollector(Collector):
    """renderwatch_log_* metrics of the agent."""

    def __init__(self, store: LogStore, stats: LogStats, shipper: Any = None):
        self.store, self.stats, self.shipper = store, stats, shipper

    def collect(self) -> Iterator[Any]:
        s, st = self.store.stats, self.stats
        c = CounterMetricFamily("renderwatch_log_records_stored", "Log records stored per job on this node, by level.",
                                labels=["level"])
        for level, n in s.stored.items():
            c.add_metric([level], n)
        yield c
        d = CounterMetricFamily("renderwatch_log_records_dropped",
                                "Log records or lines not kept, by reason (job_bound: past the job's bound, only "
                                "warnings and errors are kept; capture_spool: the node's spool could not be written; "
                                "spool_evicted: the log spool's bound evicted them; malformed; duplicate).",
                                labels=["reason"])
        for reason, n in sorted({**s.dropped, "capture_spool": st.capture_dropped, "malformed": st.malformed,
                                 "duplicate": s.duplicate, "spool_evicted": st.spool_evicted()}.items()):
            d.add_metric([reason], n)
        yield d
        yield CounterMetricFamily("renderwatch_log_lines_folded", "Progress and info lines folded into the records "
                                  "kept (first, last and a sample a second are kept).", value=st.folded)
        yield CounterMetricFamily("renderwatch_log_lines_cut", "Over-long lines cut to 16 KiB with a marker.",
                                  value=st.cut)
        yield CounterMetricFamily("renderwatch_log_store_write_errors", "Writes the log store's disk refused (the "
                                  "records wait in the spool).", value=s.write_errors)
        yield GaugeMetricFamily("renderwatch_log_store_writable", "1 when the log store's last write succeeded.",
                                value=1 if s.writable else 0)
        yield CounterMetricFamily("renderwatch_log_jobs_pruned", "Jobs' logs deleted by retention or the store's bound.",
                                  value=s.pruned_jobs)
        yield GaugeMetricFamily("renderwatch_log_spool_pending_bytes", "Bytes of log records in the spool not yet "
                                "stored.", value=st.spool_pending_bytes)
        if self.shipper is not None:
            e = CounterMetricFamily("renderwatch_log_records_exported", "Log records handed to the OTLP exporter, "
                                    "by outcome.", labels=["outcome"])
            for outcome, n in self.shipper.counts().items():
                e.add_metric([outcome], n)
            yield e


# -- the API ----------------------------------------------------------------------------------------
def _bad(detail: str) -> web.Response:
    return web.json_response({"error": "bad_request", "detail": detail}, status=400)


def parse_query(q: Any) -> dict[str, Any] | str:
    """The filters of GET /api/v1/jobs/{job}/log, or an error message."""
    out: dict[str, Any] = {}
    try:
        for key in ("frame", "attempt"):
            if q.get(key) not in (None, ""):
                out[key] = int(q[key])
        out["after"] = int(q.get("after") or 0)
        out["limit"] = int(q.get("limit") or LIMIT)
    except ValueError:
        return "frame, attempt, after and limit are integers"
    if not 1 <= out["limit"] <= LIMIT_MAX:
        return f"limit must be 1..{LIMIT_MAX}"
    level = (q.get("level") or "").strip().lower() or None
    if level == "warn":
        level = "warning"
    if level is not None and level not in LEVEL_RANK:
        return f"level must be one of {', '.join(LEVEL_RANK)}"
    out["level"] = level
    out["follow"] = (q.get("follow") or "").lower() in ("1", "true", "yes")
    return out


async def handle_log(request: web.Request, store: LogStore, spans: FrameSpans, job_known: Callable[[str], bool]) -> web.StreamResponse:
    job = request.match_info["job"]
    f = parse_query(request.query)
    if isinstance(f, str):
        return _bad(f)
    if not store.known(job) and not job_known(job):
        return web.json_response({"error": "not_found", "detail": f"no job {job!r} on this node"}, status=404)
    follow = f.pop("follow")
    if not follow:
        records, truncated = await asyncio.to_thread(store.read, job, span=spans.fill, **f)
        nxt = records[-1]["seq"] if records else f["after"]
        return web.json_response({"job": job, "records": records, "next": nxt, "truncated": truncated},
                                 dumps=lambda o: json.dumps(o, ensure_ascii=False))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    after = f.pop("after")
    f["limit"] = LIMIT_MAX
    while True:
        changed = store.changed(job)           # taken before reading: nothing stored in between is missed
        records, _ = await asyncio.to_thread(store.read, job, after=after, span=spans.fill, **f)
        for rec in records:
            await resp.write(b"event: log\ndata: " + json.dumps(rec, ensure_ascii=False).encode() + b"\n\n")
            after = rec["seq"]
        if records:
            continue                           # there may be more than one page
        try:
            await asyncio.wait_for(changed.wait(), KEEPALIVE_S)
        except TimeoutError:
            await resp.write(b": keepalive\n\n")
