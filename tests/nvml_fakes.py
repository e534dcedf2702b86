"""pynvml-shaped stand-ins for GPU placement tests: no GPU here (the real NVML path runs on a GPU
machine: tests/integration/test_agent_gpu_real.py). Only the calls healer.service.gpus makes."""

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


class NoDriver:
    def nvmlInit(self):
        raise OSError("NVML Shared Library Not Found")
