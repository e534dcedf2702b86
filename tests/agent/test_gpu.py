"""agent.gpu through a FAKE NVML: there is no NVIDIA GPU on the CI machines, so these tests replay
recorded readings (an RTX A4000-class card under a Cycles render) through an object shaped like
the `pynvml` module, raising pynvml's real exception classes. The real NVML is exercised on a lent
GPU machine (tests/integration/test_agent_gpu_real.py) and, without a GPU, the real `pynvml` is
used to check that the agent reports renderwatch_gpu_available 0 and keeps working.
"""

from __future__ import annotations

import logging

import pynvml
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agent.gpu import GpuSampler, decode_throttle
from kernel.nvml import Nvml
from tests.support.agent import sample_value
from tests.support.fakes import GIB, FakeNvml


def scrape(sampler: GpuSampler) -> str:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(sampler)
    return generate_latest(reg).decode()


L = {"gpu": "0", "uuid": "GPU-8f1c2b3a-0000-1111-2222-333344445555", "name": "NVIDIA RTX A4000"}


def test_recorded_readings_become_metrics():
    g = GpuSampler(nvml=FakeNvml())
    assert g.available
    pids = {4242: "job-1"}
    g.sample(pids)
    text = scrape(g)
    assert sample_value(text, "renderwatch_gpu_available") == 1
    assert sample_value(text, "renderwatch_gpu_utilization_ratio", L) == pytest.approx(0.03)
    assert sample_value(text, "renderwatch_gpu_throttle_reason", {**L, "reason": "gpu_idle"}) == 1
    g.frame_started("job-1")
    g.sample(pids)
    g.sample(pids)
    text = scrape(g)
    assert sample_value(text, "renderwatch_gpu_utilization_ratio", L) == pytest.approx(0.99)
    assert sample_value(text, "renderwatch_gpu_memory_used_bytes", L) == int(7.9 * GIB)
    assert sample_value(text, "renderwatch_gpu_memory_total_bytes", L) == 16 * GIB
    assert sample_value(text, "renderwatch_gpu_temperature_celsius", L) == 83
    assert sample_value(text, "renderwatch_gpu_power_watts", L) == pytest.approx(140.0)
    assert sample_value(text, "renderwatch_gpu_throttle_reason", {**L, "reason": "sw_power_cap"}) == 1
    assert sample_value(text, "renderwatch_gpu_throttle_reason", {**L, "reason": "sw_thermal_slowdown"}) == 1
    assert sample_value(text, "renderwatch_gpu_throttle_reason", {**L, "reason": "gpu_idle"}) == 0
    assert sample_value(text, "renderwatch_job_vram_bytes", {"job": "job-1"}) == int(7.3 * GIB)
    g.sample(pids)                       # VRAM went down: the frame's peak stays
    assert g.frame_peak("job-1") == int(7.3 * GIB)
    assert g.job_vram == {"job-1": int(5.5 * GIB)}     # pid 999 belongs to no job
    g.frame_started("job-1")
    assert g.frame_peak("job-1") == int(5.5 * GIB)


def test_gpu_lost_mid_sampling_logs_the_transition_once(caplog):
    caplog.set_level(logging.INFO, logger="agent.gpu")
    g = GpuSampler(nvml=FakeNvml(lost_at={1, 2, 3}))
    for _ in range(6):
        g.sample({})
        scrape(g)
    lost = [r for r in caplog.records if "stopped answering" in r.message]
    back = [r for r in caplog.records if "answering NVML again" in r.message]
    assert len(lost) == 1 and len(back) == 1
    text = scrape(g)
    assert sample_value(text, "renderwatch_gpu_available") == 1


def test_gpu_lost_reports_unavailable_while_lost():
    g = GpuSampler(nvml=FakeNvml(lost_at={0}))
    g.sample({})
    text = scrape(g)
    assert sample_value(text, "renderwatch_gpu_available") == 0
    assert sample_value(text, "renderwatch_gpu_utilization_ratio", L) is None


def test_unsupported_fields_are_skipped():
    g = GpuSampler(nvml=FakeNvml(no_power=True))
    g.sample({})
    text = scrape(g)
    assert sample_value(text, "renderwatch_gpu_power_watts", L) is None
    assert sample_value(text, "renderwatch_gpu_temperature_celsius", L) == 41


def test_without_nvml_available_is_zero_and_one_line_logged(caplog):
    """The real pynvml on a machine without the NVIDIA driver (skipped where a GPU exists)."""
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("this machine has a working NVML")
    except pynvml.NVMLError:
        pass
    caplog.set_level(logging.INFO)
    # the default (no driver here: pynvml is not even loaded) and the real pynvml's failing nvmlInit
    for nvml in (None, Nvml(driver_present=lambda: True)):
        caplog.clear()
        g = GpuSampler(nvml)
        for _ in range(3):
            g.sample({1: "j"})
        text = scrape(g)
        assert sample_value(text, "renderwatch_gpu_available") == 0
        assert "renderwatch_gpu_utilization_ratio{" not in text
        assert len([r for r in caplog.records if r.name in ("agent.gpu", "kernel.nvml")]) == 1


def test_decode_throttle():
    assert decode_throttle(0) == []
    assert decode_throttle(pynvml.nvmlClocksEventReasonSwPowerCap | pynvml.nvmlClocksEventReasonHwSlowdown) == [
        "sw_power_cap", "hw_slowdown"]
    assert decode_throttle(0x1FF) == list(decode_throttle(0x1FF))
    assert len(decode_throttle(0x1FF)) == 9
