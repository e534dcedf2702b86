"""ProcessSampler: CPU and RSS of each live job's Blender process tree, and host memory, via psutil.

The peak RSS of the frame in flight is updated on every sample, so when Blender dies mid-frame
(OOM kill, crash) its last peak is already recorded. The agent adds the frame's sampled peak to a
frame_end event that carries no max RSS of its own.

Usage::

    sampler = ProcessSampler(proc=psutil)
    sampler.sync({"job1": 4242})      # running jobs on this host -> Blender pid
    sampler.frame_started("job1")
    sampler.sample()                  # once a second, from the agent's sampling loop
    sampler.frame_peak("job1")        # peak RSS bytes of the process tree since frame_started
    list(sampler.collect())           # metric families
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
TREE_REFRESH_TICKS = 5        # re-walk the children every N samples (walking /proc is the costly part)


@dataclass
class _Tracked:
    pid: int
    procs: dict[int, Any] = field(default_factory=dict)     # pid -> psutil.Process (keeps cpu_percent state)
    ticks: int = 0
    cpu_ratio: float = 0.0
    rss: float = 0.0
    frame_peak: float = 0.0
    job_peak: float = 0.0
    alive: bool = True


class ProcessSampler(Collector):
    """Samples the process tree of each tracked job; one instance per agent."""

    def __init__(self, proc: Any = psutil):
        self.proc = proc
        self.jobs: dict[str, _Tracked] = {}
        self.host_memory_ratio: float | None = None

    def sync(self, pids: dict[str, int]) -> None:
        """Track exactly these jobs (job id -> Blender pid); a new pid for a job restarts its tree."""
        for jid in [j for j in self.jobs if j not in pids]:
            del self.jobs[jid]
        for jid, pid in pids.items():
            t = self.jobs.get(jid)
            if t is None or t.pid != pid:
                self.jobs[jid] = _Tracked(pid=pid, job_peak=t.job_peak if t else 0.0)

    def frame_started(self, job_id: str) -> None:
        t = self.jobs.get(job_id)
        if t is not None:
            t.frame_peak = t.rss

    def frame_peak(self, job_id: str) -> float | None:
        t = self.jobs.get(job_id)
        return t.frame_peak if t is not None and t.frame_peak > 0 else None

    def job_peak(self, job_id: str) -> float | None:
        t = self.jobs.get(job_id)
        return t.job_peak if t is not None and t.job_peak > 0 else None

    def alive(self, job_id: str) -> bool | None:
        """False once the job's Blender process is gone; None when it is not tracked."""
        t = self.jobs.get(job_id)
        return None if t is None else t.alive

    def pid_map(self) -> dict[int, str]:
        """Every pid of every tracked tree -> job id (the GPU sampler maps VRAM with it)."""
        return {pid: jid for jid, t in self.jobs.items() for pid in (t.procs or {t.pid: None})}

    def _refresh_tree(self, t: _Tracked) -> None:
        try:
            root = t.procs.get(t.pid) or self.proc.Process(t.pid)
            members = [root, *root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            t.procs.clear()
            t.alive = False
            return
        t.procs = {p.pid: t.procs.get(p.pid, p) for p in members}

    def sample(self) -> None:
        """Take one reading of every tracked tree and of host memory."""
        try:
            self.host_memory_ratio = self.proc.virtual_memory().percent / 100.0
        except (OSError, AttributeError):
            self.host_memory_ratio = None
        for t in self.jobs.values():
            if not t.alive:
                continue
            if t.ticks % TREE_REFRESH_TICKS == 0 or not t.procs:
                self._refresh_tree(t)
            t.ticks += 1
            cpu = rss = 0.0
            for pid, p in list(t.procs.items()):
                try:
                    with p.oneshot():
                        cpu += p.cpu_percent(None)
                        rss += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.ZombieProcess):
                    del t.procs[pid]
                except (psutil.AccessDenied, OSError):
                    continue
            if t.pid not in t.procs:
                t.alive = False
                continue                 # keep the last readings and peaks of a process that died
            t.cpu_ratio, t.rss = cpu / 100.0, rss
            t.frame_peak = max(t.frame_peak, rss)
            t.job_peak = max(t.job_peak, rss)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        cpu = GaugeMetricFamily("renderwatch_job_cpu_ratio",
                                "CPU time of the job's Blender process tree, in cores (1.0 = one core busy)",
                                labels=["job"])
        rss = GaugeMetricFamily("renderwatch_job_rss_bytes", "Resident memory of the job's Blender process tree",
                                labels=["job"])
        for jid, t in self.jobs.items():
            if t.alive:
                cpu.add_metric([jid], t.cpu_ratio)
                rss.add_metric([jid], t.rss)
        yield cpu
        yield rss
        if self.host_memory_ratio is not None:
            yield GaugeMetricFamily("renderwatch_host_memory_used_ratio", "Host memory in use (0-1)",
                                    value=self.host_memory_ratio)
