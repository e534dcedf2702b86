"""GpuSampler: utilization, VRAM, per-process VRAM, temperature, power and throttle reasons via NVML.

NVML is read through the one adapter, `kernel.nvml` (injected: `nvml=` takes a `kernel.nvml.Gpus` or a
pynvml-shaped module; default the real `pynvml` from nvidia-ml-py), so tests feed recorded readings.
Without NVML (no driver, no GPU) it reports renderwatch_gpu_available 0, the adapter logs one line,
and it keeps working. A GPU that stops answering (lost, driver reset) is logged once
when it goes and once when it comes back.

Usage::

    gpus = GpuSampler()                 # nvml=kernel.nvml.open_nvml()
    gpus.sample(pid_to_job={4242: "job1"})
    gpus.frame_started("job1"); gpus.frame_peak("job1")    # VRAM peak of the frame in flight
    list(gpus.collect())
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kernel.nvml import GpuLost, Gpus, NvmlModule, open_nvml

log = logging.getLogger(__name__)

# NVML clock event ("throttle") reason bits -> the names we export.
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}
_LABELS = ["gpu", "uuid", "name"]


def decode_throttle(mask: int) -> list[str]:
    """Names of the reasons set in an NVML clocks-event bitmask."""
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


@dataclass
class GpuReading:
    index: int
    uuid: str
    name: str
    ok: bool = False
    lost: bool = False
    utilization: float | None = None
    memory_used: float | None = None
    memory_total: float | None = None
    temperature: float | None = None
    power: float | None = None
    throttle: list[str] = field(default_factory=list)


class GpuSampler(Collector):
    """One reading of every NVIDIA GPU per sample(); metric families from the last reading."""

    def __init__(self, nvml: Gpus | NvmlModule | None = None):
        self.nvml = open_nvml(nvml)
        self.devices = self.nvml.devices()
        self.available = bool(self.devices)
        self.gpus: list[GpuReading] = [GpuReading(d.index, d.uuid, d.name) for d in self.devices]
        self.job_vram: dict[str, float] = {}      # job -> VRAM in use now (all GPUs)
        self._frame_peak: dict[str, float] = {}

    def sample(self, pid_to_job: dict[int, str] | None = None) -> None:
        if not self.devices:
            return
        vram: dict[str, float] = {}
        for d, g in zip(self.devices, self.gpus, strict=True):
            try:
                r = self.nvml.read(d)
            except GpuLost as e:
                if not g.lost:          # log the transition, not every failed poll
                    log.warning("GPU %d (%s) stopped answering NVML: %s", g.index, g.name, e)
                g.ok, g.lost = False, True
                g.utilization = g.memory_used = g.temperature = g.power = None
                g.throttle = []
                continue
            g.utilization = r.utilization_percent / 100.0 if r.utilization_percent is not None else None
            g.memory_used, g.memory_total = r.memory_used_bytes, r.memory_total_bytes
            g.temperature, g.power = r.temperature_celsius, r.power_watts
            g.throttle = decode_throttle(r.throttle_mask) if r.throttle_mask is not None else []
            for pid, used in r.process_memory_bytes.items():
                job = (pid_to_job or {}).get(pid)
                if job is not None:
                    vram[job] = vram.get(job, 0.0) + used
            g.ok = True
            if g.lost:
                log.info("GPU %d (%s) answering NVML again", g.index, g.name)
                g.lost = False
        self.job_vram = vram
        for job, used in vram.items():
            if used > self._frame_peak.get(job, 0.0):
                self._frame_peak[job] = used

    def frame_started(self, job_id: str) -> None:
        self._frame_peak[job_id] = self.job_vram.get(job_id, 0.0)

    def frame_peak(self, job_id: str) -> float | None:
        v = self._frame_peak.get(job_id)
        return v if v else None

    def forget(self, job_ids: set[str]) -> None:
        for jid in [j for j in self._frame_peak if j not in job_ids]:
            del self._frame_peak[jid]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = any(g.ok for g in self.gpus)
        yield GaugeMetricFamily("renderwatch_gpu_available", "1 when NVML answers for at least one GPU",
                                value=1.0 if up else 0.0)
        fams = {
            "utilization": GaugeMetricFamily("renderwatch_gpu_utilization_ratio", "GPU busy time (0-1)", labels=_LABELS),
            "memory_used": GaugeMetricFamily("renderwatch_gpu_memory_used_bytes", "GPU memory in use", labels=_LABELS),
            "memory_total": GaugeMetricFamily("renderwatch_gpu_memory_total_bytes", "GPU memory size", labels=_LABELS),
            "temperature": GaugeMetricFamily("renderwatch_gpu_temperature_celsius", "GPU temperature", labels=_LABELS),
            "power": GaugeMetricFamily("renderwatch_gpu_power_watts", "GPU power draw", labels=_LABELS),
        }
        throttle = GaugeMetricFamily("renderwatch_gpu_throttle_reason",
                                     "1 while NVML reports this clock throttle reason", labels=[*_LABELS, "reason"])
        for g in self.gpus:
            if not g.ok:
                continue
            lv = [str(g.index), g.uuid, g.name]
            for attr, fam in fams.items():
                v = getattr(g, attr)
                if v is not None:
                    fam.add_metric(lv, float(v))
            for reason in THROTTLE_REASONS.values():
                throttle.add_metric([*lv, reason], 1.0 if reason in g.throttle else 0.0)
        yield from fams.values()
        yield throttle
        vram = GaugeMetricFamily("renderwatch_job_vram_bytes", "GPU memory used by the job's Blender processes",
                                 labels=["job"])
        for job, used in self.job_vram.items():
            vram.add_metric([job], used)
        yield vram
