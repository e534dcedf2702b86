"""Cumulative per-(scene, engine, device_type) frame totals: plain values, so they can be journaled.

prometheus_client's Histogram cannot be restored after a restart; these can (to_dict/from_dict),
and agent.metrics turns them into metric families at scrape time.

Usage::

    totals = FrameTotals()
    totals.record(("shot", "CYCLES", "CPU"), seconds=2.5, peaks={"blender": 3e8, "rss": 4e8})
    totals.frames[("shot", "CYCLES", "CPU")]     # 1
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from prometheus_client.utils import floatToGoString

# ~0.1 s .. 2 h, roughly x2.5 per step (a frame takes from a fraction of a second to hours).
SECONDS_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                                      600.0, 1200.0, 1800.0, 3600.0, 7200.0)
# Powers of two from 64 MiB to 256 GiB.
MEMORY_BUCKETS: tuple[float, ...] = tuple(float(1 << p) for p in range(26, 39))
MEMORY_KINDS = ("blender", "rss", "vram")

Labels = tuple[str, str, str]          # scene, engine, device_type


@dataclass
class Hist:
    """Bucket counts (non-cumulative, one per upper bound plus +Inf), sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """[(le, cumulative count)] in prometheus_client's HistogramMetricFamily shape."""
        out, acc = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            acc += n
            out.append((floatToGoString(bound), float(acc)))
        return out


# Totals never expire (they are counters), so the label sets they keep are capped: a host renders a few
# dozen scenes, not thousands, and a local account inventing scene names through the ingest must not grow
# /metrics without bound. Frames of label sets past the cap are counted under OTHER (and the folding too).
MAX_LABEL_SETS = 500
OTHER: Labels = ("other", "other", "other")


@dataclass
class FrameTotals:
    """frames rendered, frame seconds and peak memory per kind, by (scene, engine, device_type)."""

    frames: dict[Labels, int] = field(default_factory=dict)
    seconds: dict[Labels, Hist] = field(default_factory=dict)
    memory: dict[tuple[Labels, str], Hist] = field(default_factory=dict)
    suspects: dict[str, int] = field(default_factory=dict)    # frames that look wrong, by reason
    folded: int = 0                                           # frames counted under OTHER (the cap)
    max_label_sets: int = MAX_LABEL_SETS

    def suspect(self, reason: str) -> None:
        self.suspects[reason] = self.suspects.get(reason, 0) + 1

    def admit(self, labels: Labels) -> Labels:
        """The label set a frame is counted under: its own, or OTHER once the cap is reached."""
        if labels in self.frames or len(self.frames) < self.max_label_sets:
            return labels
        self.folded += 1
        return OTHER

    def count(self, labels: Labels) -> None:
        """A frame rendered whose time and memory are not known (yet): the healer verified it."""
        labels = self.admit(labels)
        self.frames[labels] = self.frames.get(labels, 0) + 1

    def record(self, labels: Labels, seconds: float, peaks: dict[str, float], *, counted: bool = False) -> None:
        """A rendered frame's time and peaks; `counted`: the frame itself was counted already (count())."""
        if counted:
            labels = labels if labels in self.frames else OTHER if OTHER in self.frames else labels
        else:
            labels = self.admit(labels)
            self.frames[labels] = self.frames.get(labels, 0) + 1
        h = self.seconds.get(labels)
        if h is None:
            h = self.seconds[labels] = Hist(SECONDS_BUCKETS)
        h.observe(seconds)
        for kind, value in peaks.items():
            if value and value > 0:
                m = self.memory.get((labels, kind))
                if m is None:
                    m = self.memory[(labels, kind)] = Hist(MEMORY_BUCKETS)
                m.observe(value)

    def to_dict(self) -> dict:
        return {
            "frames": [[list(k), v] for k, v in self.frames.items()],
            "seconds": [[list(k), h.counts, h.sum] for k, h in self.seconds.items()],
            "memory": [[list(k), kind, h.counts, h.sum] for (k, kind), h in self.memory.items()],
            "suspects": dict(self.suspects),
            "folded": self.folded,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FrameTotals:
        t = cls()
        for k, v in d.get("frames", []):
            t.frames[_labels(k)] = int(v)
        for k, counts, total in d.get("seconds", []):
            if len(counts) == len(SECONDS_BUCKETS) + 1:
                t.seconds[_labels(k)] = Hist(SECONDS_BUCKETS, list(counts), float(total))
        for k, kind, counts, total in d.get("memory", []):
            if len(counts) == len(MEMORY_BUCKETS) + 1:
                t.memory[(_labels(k), kind)] = Hist(MEMORY_BUCKETS, list(counts), float(total))
        t.suspects = {str(k): int(v) for k, v in d.get("suspects", {}).items()}
        t.folded = int(d.get("folded", 0))
        return t


def _labels(k: list) -> Labels:
    return (str(k[0]), str(k[1]), str(k[2]))
