"""GPU placement (healer.service.gpus) behind the NVML seam: no GPU here, so a pynvml-shaped fake with
two GPUs stands in (the real NVML path runs on a GPU machine: tests/integration/test_agent_gpu_real.py)."""

from __future__ import annotations

import asyncio

import pytest

from healer.service.gpus import GpuPlacer
from healer.supervising.spawn import GPU_EXPR, LaunchSpec, attempt_env, build_argv
from tests.support.fakes import NoDriver, TwoGpus


async def test_each_render_gets_its_own_gpu_and_waits_for_a_free_one():
    p = GpuPlacer(TwoGpus())
    a, b = await p.acquire("a"), await p.acquire("b")
    assert {a.index, b.index} == {0, 1}
    c = asyncio.create_task(p.acquire("c"))
    await asyncio.sleep(0.01)
    assert not c.done()                                  # both busy: the third waits
    p.release("a")
    assert (await asyncio.wait_for(c, 1)).index == a.index


async def test_a_paused_gpu_gets_no_new_render_until_resumed():
    p = GpuPlacer(TwoGpus())
    assert p.pause("GPU-1000") and not p.pause("GPU-9")
    first = await p.acquire("a")
    assert first.uuid == "GPU-0000"
    waiting = asyncio.create_task(p.acquire("b"))
    await asyncio.sleep(0.01)
    assert not waiting.done()                            # GPU-1000 is free but paused
    assert p.resume("GPU-1000")
    assert (await asyncio.wait_for(waiting, 1)).uuid == "GPU-1000"


def test_a_farms_assignment_wins_and_no_driver_places_nothing():
    p = GpuPlacer(TwoGpus())
    assert p.wants_placement({}) and not p.wants_placement({"CUE_GPU_CORES": "1"})
    assert not p.wants_placement({"CUDA_VISIBLE_DEVICES": "0"})
    assert not GpuPlacer(NoDriver()).wants_placement({})


def test_the_placed_gpu_reaches_blender():
    env = attempt_env("j", 1, {}, gpu=1)
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    argv = build_argv(LaunchSpec(blender="blender", scene="s.blend", frames=[1], gpu=1, hooks=None))
    assert GPU_EXPR in argv and argv.index(GPU_EXPR) < argv.index("-f")
    cpu = build_argv(LaunchSpec(blender="blender", scene="s.blend", frames=[1], gpu=1, device="CPU", hooks=None))
    assert GPU_EXPR not in cpu                                        # the CPU fallback wins
    # OpenCue's RQD reserved GPUs for the frame: Blender sees those (renderwatch exec under RQD)
    assert attempt_env("j", 1, {"CUE_GPU_CORES": "2,3"})["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert attempt_env("j", 1, {"CUE_GPU_CORES": "2", "CUDA_VISIBLE_DEVICES": "0"})["CUDA_VISIBLE_DEVICES"] == "0"


@pytest.mark.blender
def test_the_cycles_device_expression_runs_in_real_blender(blender34, tmp_path):
    """No GPU here: the expression must still run (no device found) and say what it chose."""
    import subprocess

    p = subprocess.run([blender34, "-b", "--factory-startup", "--python-exit-code", "3", "--python-expr", GPU_EXPR],
                       capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert p.returncode == 0 and "[renderwatch] GPU placement:" in p.stdout, p.stdout + p.stderr
