"""The one NVML adapter: every reading renderwatch takes of NVIDIA GPUs goes through `Nvml`.

It wraps nvidia-ml-py's `pynvml` (or a pynvml-shaped stand-in, `NvmlModule`, which is how tests without
a GPU feed it), opens NVML once, on first use, and when there is no NVML (no driver, no GPU, no
pynvml) says so once in the log and yields nothing, like prometheus_client's ProcessCollector
without /proc. Callers are typed against `Gpus` and take it injected (`nvml=`): the agent's
GpuSampler (per-device readings, VRAM of Blender's processes), the healer's GPU placement (which GPUs
there are) and the supervisor's probes (GPU busy, whether Blender's own processes keep one busy).

Usage::

    gpus = open_nvml()                        # or open_nvml(pynvml_shaped_fake)
    for dev in gpus.devices():                # [] without NVML
        reading = gpus.read(dev)              # raises GpuLost when the GPU stops answering
    gpus.busiest_percent()                    # None without NVML
    gpus.processes_active({4242})             # None without NVML
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

# What an NVIDIA driver that NVML can talk to leaves on a host: the kernel driver's /proc entry and
# control device (also mounted into containers by the NVIDIA container toolkit), or WSL2's GPU device.
NVIDIA_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg")
NVML_TEMPERATURE_GPU = 0          # pynvml.NVML_TEMPERATURE_GPU
_UNSUPPORTED = ("NVMLError_NotSupported", "NVMLError_FunctionNotFound")


def nvidia_driver_present() -> bool:
    """Whether NVML can be there at all: without it, importing pynvml and failing nvmlInit costs
    ~10 ms of CPU on a CPU-only node (off Linux, NVML is simply tried)."""
    return not sys.platform.startswith("linux") or any(os.path.exists(p) for p in NVIDIA_DRIVER_PATHS)


class NvmlModule(Protocol):
    """The part of `pynvml` the adapter calls (a stand-in need only have the calls its test reaches)."""

    def nvmlInit(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...
    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int: ...
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]: ...
    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: Any) -> list[Any]: ...
    def nvmlDeviceGetProcessUtilization(self, handle: Any, last_seen: int) -> list[Any]: ...


class GpuLost(Exception):
    """A GPU that answered NVML stopped answering (fallen off the bus, driver reset)."""


@dataclass(frozen=True)
class Device:
    index: int
    uuid: str
    name: str
    handle: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class DeviceReading:
    """One reading of one GPU; a field the GPU does not support is None."""

    utilization_percent: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    throttle_mask: int | None = None
    process_memory_bytes: dict[int, float] = field(default_factory=dict)   # pid -> GPU memory it holds


@runtime_checkable
class Gpus(Protocol):
    """What renderwatch reads of the host's GPUs (the `Nvml` adapter, or a test's stand-in)."""

    def devices(self) -> list[Device]: ...
    def read(self, device: Device) -> DeviceReading: ...
    def busiest_percent(self) -> float | None: ...
    def processes_active(self, pids: set[int]) -> bool | None: ...


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


class Nvml:
    """The adapter over a pynvml-shaped module (`module=None`: the real pynvml, tried only where an
    NVIDIA driver is present). `log_level`: how loudly "no NVML" is said (once)."""

    def __init__(self, module: NvmlModule | None = None, *, driver_present: Callable[[], bool] | None = None,
                 log_level: int = logging.INFO):
        self._module: Any = module
        self._driver_present = driver_present or nvidia_driver_present
        self._log_level = log_level
        self._devices: list[Device] | None = None
        self._seen_ts: dict[int, int] = {}     # per GPU: the newest per-process sample already read

    @property
    def available(self) -> bool:
        return bool(self.devices())

    def devices(self) -> list[Device]:
        """The GPUs NVML sees, opened once ([] without NVML, said once in the log)."""
        if self._devices is None:
            self._devices = self._open()
        return self._devices

    def _open(self) -> list[Device]:
        nv = self._module
        try:
            if nv is None:
                if not self._driver_present():
                    log.log(self._log_level, "NVML not available (no NVIDIA driver on this host): no GPU readings")
                    return []
                import pynvml
                nv = self._module = pynvml
            nv.nvmlInit()
            out = []
            for i in range(nv.nvmlDeviceGetCount()):
                h = nv.nvmlDeviceGetHandleByIndex(i)
                name = _text(nv.nvmlDeviceGetName(h)) if hasattr(nv, "nvmlDeviceGetName") else ""
                out.append(Device(i, _text(nv.nvmlDeviceGetUUID(h)), name, h))
        except Exception as e:        # no pynvml, no driver, no GPU: nothing to read
            log.log(self._log_level, "NVML not available (%s: %s): no GPU readings", type(e).__name__, e)
            return []
        log.log(self._log_level, "NVML: %d GPU(s): %s", len(out), ", ".join(d.name or d.uuid for d in out) or "none")
        return out

    def _error(self) -> type[BaseException]:
        err = getattr(self._module, "NVMLError", Exception)
        return err if isinstance(err, type) and issubclass(err, BaseException) else Exception

    def _field(self, fn: str, *args: Any) -> Any:
        """One NVML call; a field the GPU does not support reads as None (other errors propagate)."""
        try:
            return getattr(self._module, fn)(*args)
        except self._error() as e:
            unsupported = tuple(getattr(self._module, n) for n in _UNSUPPORTED if hasattr(self._module, n))
            if isinstance(e, unsupported):
                return None
            raise

    def read(self, device: Device) -> DeviceReading:
        """Utilization, memory, temperature, power, throttle reasons and the per-process GPU memory of
        one GPU. Raises GpuLost when it does not answer."""
        nv, h = self._module, device.handle
        try:
            util = self._field("nvmlDeviceGetUtilizationRates", h)
            mem = self._field("nvmlDeviceGetMemoryInfo", h)
            temp = self._field("nvmlDeviceGetTemperature", h, getattr(nv, "NVML_TEMPERATURE_GPU", NVML_TEMPERATURE_GPU))
            power = self._field("nvmlDeviceGetPowerUsage", h)
            mask = self._field("nvmlDeviceGetCurrentClocksEventReasons", h)
            procs: dict[int, float] = {}
            for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                for p in self._field(fn, h) or ():
                    if p.usedGpuMemory:
                        procs[p.pid] = procs.get(p.pid, 0.0) + float(p.usedGpuMemory)
        except self._error() as e:
            raise GpuLost(str(e)) from e
        return DeviceReading(
            utilization_percent=float(util.gpu) if util is not None else None,
            memory_used_bytes=float(mem.used) if mem is not None else None,
            memory_total_bytes=float(mem.total) if mem is not None else None,
            temperature_celsius=float(temp) if temp is not None else None,
            power_watts=power / 1000.0 if power is not None else None,
            throttle_mask=mask, process_memory_bytes=procs)

    def busiest_percent(self) -> float | None:
        """The utilization of the busiest GPU (None: no NVML, or it did not answer)."""
        devs = self.devices()
        if not devs:
            return None
        try:
            return float(max(self._module.nvmlDeviceGetUtilizationRates(d.handle).gpu for d in devs))
        except Exception:
            return None

    def processes_active(self, pids: set[int]) -> bool | None:
        """Whether one of `pids` used a GPU since the last call (None: no NVML). NVML's per-process
        samples where the driver keeps them; else a busy GPU on which one of them holds a context."""
        devs = self.devices()
        if not devs:
            return None
        nv, busy = self._module, False
        for d in devs:
            try:
                samples = nv.nvmlDeviceGetProcessUtilization(d.handle, self._seen_ts.get(d.index, 0))
            except Exception as e:
                if type(e).__name__ == "NVMLError_NotFound":   # no sample since the last read: idle
                    continue
                samples = None
            if samples is not None:
                for smp in samples:
                    self._seen_ts[d.index] = max(self._seen_ts.get(d.index, 0), smp.timeStamp)
                    if smp.pid in pids and (smp.smUtil > 0 or smp.memUtil > 0):
                        busy = True
                continue
            try:
                mine = any(p.pid in pids for p in nv.nvmlDeviceGetComputeRunningProcesses(d.handle))
                if mine and nv.nvmlDeviceGetUtilizationRates(d.handle).gpu > 0:
                    busy = True
            except Exception:
                continue
        return busy


def open_nvml(nvml: Gpus | NvmlModule | None = None, *, driver_present: Callable[[], bool] | None = None,
              log_level: int = logging.INFO) -> Gpus:
    """The `Gpus` a caller reads: `nvml` itself when it is one already (shared, opened once), else the
    adapter over the pynvml-shaped module given (None: the real pynvml)."""
    if isinstance(nvml, Gpus):
        return nvml
    return Nvml(nvml, driver_present=driver_present, log_level=log_level)

