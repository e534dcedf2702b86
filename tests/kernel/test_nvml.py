"""kernel.nvml, the one NVML adapter, through pynvml-shaped FAKES (tests/support/fakes.py): there is no
NVIDIA GPU on the CI machines; the real NVML runs on a lent GPU machine
(tests/integration/test_agent_gpu_real.py)."""

from __future__ import annotations

import logging

from agent.gpu import GpuSampler
from healer.service.gpus import GpuPlacer
from healer.supervising.probes import ResourceSampler
from kernel.nvml import Gpus, Nvml, open_nvml
from tests.support.fakes import NoDriver, TwoGpus


class CountingGpus(TwoGpus):
    def __init__(self):
        self.inits = 0

    def nvmlInit(self):
        self.inits += 1


def test_nvml_is_opened_once_for_every_caller_it_is_shared_with():
    fake = CountingGpus()
    gpus = open_nvml(fake)
    assert isinstance(gpus, Gpus) and open_nvml(gpus) is gpus
    GpuPlacer(nvml=gpus)
    GpuSampler(nvml=gpus)
    sampler = ResourceSampler(nvml=gpus)
    sampler.sample(None)
    sampler.sample(None)
    assert gpus.busiest_percent() == 37.0
    assert [(d.index, d.uuid) for d in gpus.devices()] == [(0, "GPU-0000"), (1, "GPU-1000")]
    assert fake.inits == 1


def test_without_nvml_it_yields_nothing_and_says_so_once(caplog):
    caplog.set_level(logging.DEBUG, logger="kernel.nvml")
    for nvml in (Nvml(NoDriver()), Nvml(driver_present=lambda: False)):
        caplog.clear()
        assert nvml.devices() == [] and not nvml.available
        assert nvml.busiest_percent() is None
        assert nvml.processes_active({1, 2}) is None
        assert nvml.devices() == []
        assert len([r for r in caplog.records if r.name == "kernel.nvml"]) == 1
    assert GpuPlacer(nvml=NoDriver()).gpus == []
