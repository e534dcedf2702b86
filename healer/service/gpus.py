"""GPU placement for the healer service: each render gets a GPU of its own, never a paused one.

The GPUs come from NVML through `kernel.nvml` (index and UUID; none without a driver: then nothing is
placed and renders use what Blender's preferences say). A render placed on GPU i runs with CUDA_VISIBLE_DEVICES=i and
Cycles told to use that device (`spawn.GPU_EXPR`). A farm's own assignment wins: a job whose
environment already names its GPUs (CUDA_VISIBLE_DEVICES, or OpenCue's CUE_GPU_CORES) is not placed.
Alertmanager's GPUOverheating pauses a GPU (`pause`): no new render goes there until the alert
resolves (`resume`); renders already on it finish.

Usage::

    placer = GpuPlacer(nvml=kernel.nvml.open_nvml())     # or a pynvml-shaped module
    gpu = await placer.acquire("job-1")        # waits while every GPU is busy or paused
    ...
    placer.release("job-1")
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from kernel.nvml import Gpus, NvmlModule, open_nvml

log = logging.getLogger(__name__)
FARM_GPU_VARS = ("CUDA_VISIBLE_DEVICES", "CUE_GPU_CORES")


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str


class GpuPlacer:
    def __init__(self, nvml: Gpus | NvmlModule | None = None):
        self.gpus: list[Gpu] = [Gpu(d.index, d.uuid) for d in open_nvml(nvml).devices()]
        self.paused: set[str] = set()
        self.placed: dict[str, Gpu] = {}            # job -> its GPU
        self._changed = asyncio.Condition()

    @property
    def available(self) -> bool:
        return bool(self.gpus)

    def wants_placement(self, env: Mapping[str, str]) -> bool:
        """Place only when there are GPUs and the farm did not assign any itself."""
        return self.available and not any(env.get(k) for k in FARM_GPU_VARS)

    def _free(self) -> Gpu | None:
        busy = {g.uuid for g in self.placed.values()}
        return next((g for g in self.gpus if g.uuid not in self.paused and g.uuid not in busy), None)

    async def acquire(self, job: str) -> Gpu:
        async with self._changed:
            while (gpu := self._free()) is None:
                await self._changed.wait()
            self.placed[job] = gpu
            return gpu

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def release(self, job: str) -> None:
        if self.placed.pop(job, None) is not None:
            asyncio.get_running_loop().create_task(self._notify())

    def pause(self, uuid: str) -> bool:
        """Stop placing renders on this GPU (False if no such GPU here)."""
        if not any(g.uuid == uuid for g in self.gpus):
            return False
        if uuid not in self.paused:
            self.paused.add(uuid)
            log.warning("GPU %s paused (alert): no new renders on it until the alert resolves", uuid)
        return True

    def resume(self, uuid: str) -> bool:
        if uuid in self.paused:
            self.paused.discard(uuid)
            log.info("GPU %s resumed: renders are placed on it again", uuid)
            asyncio.get_running_loop().create_task(self._notify())
            return True
        return False

