"""pynvml-shaped stand-ins for GPU placement and probe tests: no GPU here (the real NVML path runs on a
GPU machine: tests/integration/test_agent_gpu_real.py). Only the calls healer.service.gpus and the
supervisor's ResourceSampler make."""

from __future__ import annotations


class TwoGpus:
    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-{h}000".encode()

    def nvmlDeviceGetUtilizationRates(self, h):
        class Rates:
            gpu = 37 if h == 0 else 12
        return Rates()


class NoDriver:
    def nvmlInit(self):
        raise OSError("NVML Shared Library Not Found")


class _Sample:
    def __init__(self, pid: int, sm: int, ts: int):
        self.pid, self.smUtil, self.memUtil, self.encUtil, self.decUtil, self.timeStamp = pid, sm, 0, 0, 0, ts


class NVMLError_NotFound(Exception):     # noqa: N801 (pynvml's name: the sampler matches it by name)
    pass


class ProcessGpus(TwoGpus):
    """Per-process utilisation samples (nvmlDeviceGetProcessUtilization): `busy` maps pid -> SM % on GPU 0;
    NVML raises NotFound when no sample is newer than the timestamp asked for."""

    def __init__(self, busy: dict[int, int]):
        self.busy = busy
        self.ts = 0
        self.asked: list[int] = []

    def nvmlDeviceGetProcessUtilization(self, h, last_seen):
        self.asked.append(last_seen)
        if h != 0 or not self.busy:
            raise NVMLError_NotFound()
        self.ts += 1000
        return [_Sample(pid, sm, self.ts) for pid, sm in self.busy.items()]


class ContextOnly(TwoGpus):
    """A driver without per-process samples: the sampler falls back to the device's utilisation where
    one of Blender's processes holds a compute context (`pids` on GPU 1)."""

    def __init__(self, pids: list[int]):
        self.pids = pids

    def nvmlDeviceGetProcessUtilization(self, h, last_seen):
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        class Proc:
            def __init__(self, pid):
                self.pid = pid
        return [Proc(p) for p in self.pids] if h == 1 else []
