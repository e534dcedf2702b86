"""Prometheus collectors over the agent's state: metric families are built at scrape time.

Per-job series come from the jobs still visible (running, or ended less than the grace period
ago), so they disappear on their own without .remove() bookkeeping. Frame totals are cumulative
values from agent.aggregates (rebuilt from the journal after a restart).

Usage::

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(state, grace_seconds=300))
    registry.register(IngestCollector(stats, journal=journal, spans=agent.span_counts))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.aggregates import MEMORY_KINDS
from agent.state import State
from blender_hooks.events import REASONS, SUSPECT_REASONS

FRAME_LABELS = ["scene", "engine", "device_type"]


@dataclass
class IngestStats:
    """Counters of the ingest path (plain ints: the hot path adds whole batches at once)."""

    ingested: int = 0
    duplicate: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    spool_segments: int = 0
    spool_pending_bytes: int = 0

    def reject(self, reason: str, n: int = 1) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + n


class JournalCounts(Protocol):
    errors: int               # writes that failed
    replay_errors: int        # records skipped at replay (unreadable, refused)


def _no_spans() -> tuple[int, int]:
    return 0, 0


def _none() -> int:
    return 0


class IngestCollector(Collector):
    """The ingest counters, the journal's error counts, the span exporter's (exported, failed batches) and
    the events the hooks' spool evicted unsent."""

    def __init__(self, stats: IngestStats, journal: JournalCounts | None = None,
                 spans: Callable[[], tuple[int, int]] = _no_spans, spool_evicted: Callable[[], int] = _none):
        self.stats, self.journal, self.spans, self.spool_evicted = stats, journal, spans, spool_evicted

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield CounterMetricFamily("renderwatch_events_ingested", "Hook events accepted (after dedupe)",
                                  value=s.ingested)
        yield CounterMetricFamily("renderwatch_events_duplicate", "Hook events dropped as already seen (session seq)",
                                  value=s.duplicate)
        rej = CounterMetricFamily("renderwatch_events_rejected", "Hook events rejected, by reason",
                                  labels=["reason"])
        for reason, n in sorted(s.rejected.items()):
            rej.add_metric([reason], n)
        yield rej
        yield GaugeMetricFamily("renderwatch_spool_segments", "Spool segment files on disk", value=s.spool_segments)
        yield GaugeMetricFamily("renderwatch_spool_pending_bytes", "Spool bytes not yet ingested",
                                value=s.spool_pending_bytes)
        yield CounterMetricFamily("renderwatch_spool_evicted_events",
                                  "Events the hooks' spool evicted unsent (over its size bound)", value=self.spool_evicted())
        yield CounterMetricFamily("renderwatch_journal_write_errors", "Journal writes that failed",
                                  value=self.journal.errors if self.journal else 0)
        yield CounterMetricFamily("renderwatch_journal_replay_skipped",
                                  "Journal records skipped at replay: unreadable, or refused by the event schema",
                                  value=self.journal.replay_errors if self.journal else 0)
        exported, failed = self.spans()
        yield CounterMetricFamily("renderwatch_spans_exported", "Spans handed to the exporter successfully",
                                  value=exported)
        yield CounterMetricFamily("renderwatch_span_export_failures", "Span export batches that failed",
                                  value=failed)


class StateCollector(Collector):
    """Jobs, progress and frame totals from agent.state.State."""

    def __init__(self, state: State, grace_seconds: float, clock: Callable[[], float] = time.time):
        self.state = state
        self.grace = grace_seconds
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        jobs = self.state.visible(self.clock(), self.grace)
        yield GaugeMetricFamily("renderwatch_jobs_active", "Render jobs running now",
                                value=sum(1 for j in jobs if j.active))
        yield CounterMetricFamily("renderwatch_jobs_evicted",
                                  "Jobs forgotten to keep the agent's bound on jobs held at once (agent.state.JOB_LIMIT)",
                                  value=self.state.jobs_evicted)
        g = {name: GaugeMetricFamily(f"renderwatch_job_{name}", doc, labels=["job"]) for name, doc in (
            ("progress_ratio", "Frames done / frames in the job (0-1)"),
            ("frames_done", "Distinct frames saved"),
            ("frames_expected", "Frames the job will render (a gauge: no _total suffix)"),
            ("eta_seconds", "Estimated seconds to finish (mean of recent frame times x frames left)"),
            ("last_frame_seconds", "Wall time of the last frame"),
            ("attempts", "Blender runs that reported this job (restarts by the healer count)"),
            ("last_progress_timestamp_seconds", "Unix time of the job's last progress event"),
        )}
        peak = GaugeMetricFamily("renderwatch_job_peak_memory_bytes", "Highest memory seen in the job, by kind",
                                 labels=["job", "kind"])
        info = GaugeMetricFamily("renderwatch_job_info", "Job description (value 1)",
                                 labels=["job", "scene", "engine", "device_type", "host", "blender_version", "status"])
        # Group by farm job with a join on `job` (one series per live job, gone with it: bounded).
        farm = GaugeMetricFamily("renderwatch_job_farm_info", "The farm manager's job and task of a job (value 1)",
                                 labels=["job", "farm_engine", "farm_job", "farm_task"])
        for j in jobs:
            if j.farm_engine:
                farm.add_metric([j.id, j.farm_engine, j.farm_job, j.farm_task], 1)
            g["progress_ratio"].add_metric([j.id], j.progress)
            g["frames_done"].add_metric([j.id], j.frames_done)
            g["frames_expected"].add_metric([j.id], j.frames_total)
            eta = j.eta_seconds
            if eta is not None:
                g["eta_seconds"].add_metric([j.id], eta)
            if j.last_frame_seconds is not None:
                g["last_frame_seconds"].add_metric([j.id], j.last_frame_seconds)
            g["attempts"].add_metric([j.id], j.attempts)
            g["last_progress_timestamp_seconds"].add_metric([j.id], j.last_progress_ts)
            for kind, v in sorted(j.peaks.items()):
                peak.add_metric([j.id, kind], v)
            info.add_metric([j.id, j.scene, j.engine, j.device_type, j.host, j.blender_version, j.status], 1)
        yield from g.values()
        yield peak
        yield info
        yield farm
        yield from self._totals()

    def _totals(self) -> Iterator[Metric]:
        t = self.state.totals
        frames = CounterMetricFamily("renderwatch_frames_rendered",
                                     "Frames rendered (frame_end events, and frames the healer verified "
                                     "after Blender died before reporting them)", labels=FRAME_LABELS)
        for labels, n in t.frames.items():
            frames.add_metric(list(labels), n)
        yield frames
        secs = HistogramMetricFamily("renderwatch_frame_render_seconds", "Wall time per frame",
                                     labels=FRAME_LABELS)
        for labels, h in t.seconds.items():
            secs.add_metric(list(labels), h.cumulative(), h.sum)
        yield secs
        mem = HistogramMetricFamily("renderwatch_frame_peak_memory_bytes",
                                    "Peak memory per frame: blender (Blender's own), rss (process tree), vram",
                                    labels=[*FRAME_LABELS, "kind"])
        for (labels, kind), h in t.memory.items():
            if kind in MEMORY_KINDS:
                mem.add_metric([*labels, kind], h.cumulative(), h.sum)
        yield mem
        suspect = CounterMetricFamily("renderwatch_frames_suspect",
                                      "Saved frames that look wrong: blank, transparent, wrong resolution or channels, "
                                      "too fast for the job, or rendered on the CPU when the scene asked for a GPU",
                                      labels=["reason"])
        for reason in SUSPECT_REASONS:        # every reason from the start: rate() and alerts see the first one
            suspect.add_metric([reason], t.suspects.get(reason, 0))
        yield suspect
        yield CounterMetricFamily("renderwatch_frames_label_folded",
                                  f"Frames counted under scene/engine/device \"other\": the agent keeps at most "
                                  f"{t.max_label_sets} label sets of frame totals", value=t.folded)
