"""The embedded span exporter: OTLP-JSON lines in files, so a lone agent needs no collector.

Each export appends one line: an ExportTraceServiceRequest built by the OpenTelemetry encoder and
rendered by protobuf's json_format, with trace and span ids as hex strings (the OTLP/JSON rule
that differs from plain protobuf JSON). Files are `spans-YYYYMMDD.jsonl` (UTC); a file that
reaches a quarter of the budget is rotated aside, and the oldest files are deleted so all of them
together stay under `max_bytes`.

Usage::

    exporter = JsonLinesSpanExporter(Path("~/.local/state/renderwatch/agent/traces"), max_bytes=64 << 20)
    BatchSpanProcessor(exporter)
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from blender_hooks.statedir import private_dir

log = logging.getLogger(__name__)
_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(obj: dict) -> None:
    for key in _ID_KEYS:
        if obj.get(key):
            obj[key] = base64.b64decode(obj[key]).hex()


def otlp_json_line(spans: Sequence[ReadableSpan]) -> bytes:
    """One ExportTraceServiceRequest as a single OTLP-JSON line (ending in a newline)."""
    doc = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                _hex_ids(span)
                for link in span.get("links", []):
                    _hex_ids(link)
    return (json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8", "replace")


class JsonLinesSpanExporter(SpanExporter):
    """Appends OTLP-JSON lines to <dir>/spans-YYYYMMDD.jsonl with size-bounded rotation."""

    PREFIX = "spans"                                  # agent.logexport's log records use "logs"

    def __init__(self, directory: Path, max_bytes: int = 64 << 20, clock=time.time, max_age_days: float = 7.0):
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.max_age = max_age_days * 86400
        self.clock = clock
        self._current: Path | None = None
        self._lock = threading.Lock()
        self._shutdown = False
        self.failures = 0

    def path_for(self, now: float) -> Path:
        return self.dir / time.strftime(f"{self.PREFIX}-%Y%m%d.jsonl", time.gmtime(now))

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown or not spans:
            return SpanExportResult.FAILURE if self._shutdown else SpanExportResult.SUCCESS
        try:
            line = self.encode(spans)
            with self._lock:
                private_dir(self.dir)
                now = self.clock()
                path = self.path_for(now)
                if path != self._current:     # a new day's file (or the first write): bound the others
                    self._current = path
                    self.prune(now)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line)
                    size = os.fstat(fd).st_size
                finally:
                    os.close(fd)
                if size >= self.max_bytes // 4:
                    self._rotate(path)
            return SpanExportResult.SUCCESS
        except Exception as e:          # counted and logged, never raised into the SDK's worker
            self.failures += 1
            log.warning("cannot write spans to %s: %s", self.dir, e)
            return SpanExportResult.FAILURE

    def _rotate(self, path: Path) -> None:
        n = 1
        while path.with_suffix(f".{n}.jsonl").exists():
            n += 1
        os.replace(path, path.with_suffix(f".{n}.jsonl"))
        self.prune(self.clock())

    def prune(self, now: float) -> int:
        """Delete span files older than the age limit, then the oldest until they fit three quarters of
        `max_bytes` (the file being written takes the last quarter before it is rotated). Every day
        starts a file, so this runs when one starts, not only when one is rotated."""
        files = []
        for p in self.dir.glob(f"{self.PREFIX}-*.jsonl"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, p))
        files.sort()
        total = sum(size for _, size, _ in files)
        limit = self.max_bytes - self.max_bytes // 4
        removed = 0
        for mtime, size, p in files:
            if total <= limit and now - mtime <= self.max_age:
                continue
            if p == self._current and now - mtime <= self.max_age:
                continue
            total -= size
            p.unlink(missing_ok=True)
            removed += 1
        return removed

    def encode(self, spans: Sequence) -> bytes:
        return otlp_json_line(spans)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        self._shutdown = True
