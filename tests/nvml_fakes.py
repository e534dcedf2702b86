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
