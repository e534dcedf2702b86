"""The real NVML (nvidia-ml-py) on a machine with an NVIDIA GPU; skipped where there is none
(the fake-NVML tests in tests/agent/test_gpu.py cover the logic everywhere)."""

from __future__ import annotations

import pynvml
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agent.gpu import GpuSampler
from tests.support.agent import sample_value


@pytest.fixture(scope="module")
def real_nvml():
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        pytest.skip(f"no NVIDIA GPU here ({e})")
    yield pynvml
    pynvml.nvmlShutdown()


def test_real_gpu_readings(real_nvml):
    g = GpuSampler()
    assert g.available and g.gpus
    g.sample({})
    reg = CollectorRegistry(auto_describe=False)
    reg.register(g)
    text = generate_latest(reg).decode()
    assert sample_value(text, "renderwatch_gpu_available") == 1
    for gpu in g.gpus:
        labels = {"gpu": str(gpu.index), "uuid": gpu.uuid, "name": gpu.name}
        assert gpu.uuid.startswith("GPU-") and gpu.name
        total = sample_value(text, "renderwatch_gpu_memory_total_bytes", labels)
        used = sample_value(text, "renderwatch_gpu_memory_used_bytes", labels)
        assert total > 1 << 30 and 0 <= used <= total
        assert 0 <= sample_value(text, "renderwatch_gpu_utilization_ratio", labels) <= 1
        assert 0 < sample_value(text, "renderwatch_gpu_temperature_celsius", labels) < 120
        power = sample_value(text, "renderwatch_gpu_power_watts", labels)
        assert power is None or 0 < power < 2000
        reasons = [r for r in ("gpu_idle", "sw_power_cap", "hw_slowdown")
                   if sample_value(text, "renderwatch_gpu_throttle_reason", {**labels, "reason": r}) is not None]
        assert reasons == ["gpu_idle", "sw_power_cap", "hw_slowdown"]
