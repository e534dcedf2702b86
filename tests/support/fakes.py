"""The tests' fakes, one of each: only what cannot run here (a GPU) or what a test must observe (where
incidents go, what an exporter is handed), each behind one of the seams' Protocols. mypy checks this
module (pyproject's [tool.mypy]): `_conforms` below assigns each fake to the Protocol it stands in for,
so a fake that drifts from its seam fails `mypy`, not a test run on another machine.

NVML: pynvml-shaped stand-ins (no NVIDIA GPU on these machines; the real NVML path runs on a GPU machine:
tests/integration/test_agent_gpu_real.py). Each makes only the calls its consumer makes: agent.gpu's
GpuSampler (FakeNvml, NoNvml), healer.service.gpus's placer (TwoGpus, OneGpu, NoDriver) and the
supervisor's ResourceSampler (ProcessGpus, ContextOnly, ForbiddenNvml)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pynvml

if TYPE_CHECKING:
    from healer.diagnosis.errors import RenderError
    from healer.incidents.model import Incident

GIB = 1 << 30


# -- NVML ---------------------------------------------------------------------------------------------


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


class OneGpu:
    """The placer's view of one GPU (its NVML calls only), by its UUID."""

    def __init__(self, uuid: str) -> None:
        self.uuid = uuid

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUUID(self, h: int) -> bytes:
        return self.uuid.encode()


class ForbiddenNvml:
    """A pynvml module that must not be touched (a host without an NVIDIA driver): any use fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"pynvml.{name} used on a host without an NVIDIA driver")


class NoNvml:
    """A fake NVML shaped like a machine without the NVIDIA driver, so a test does not depend on
    whether its host has a GPU (the real no-GPU path is tested in tests/agent/test_gpu.py)."""

    class NVMLError(Exception):
        pass

    NVMLError_NotSupported = NVMLError

    def nvmlInit(self) -> None:
        raise self.NVMLError("NVML Shared Library Not Found")


# Recorded readings, one dict per sample: utilization %, memory used, temperature, power mW,
# clocks-event reasons bitmask, compute processes (pid, used bytes).
RECORDED = [
    dict(util=3, used=0.4 * GIB, temp=41, power=18_500, reasons=0x1, procs=[]),
    dict(util=97, used=5.2 * GIB, temp=71, power=138_000, reasons=0x0, procs=[(4242, 4.6 * GIB)]),
    dict(util=99, used=7.9 * GIB, temp=83, power=140_000, reasons=0x4 | 0x20, procs=[(4242, 7.3 * GIB)]),
    dict(util=98, used=6.1 * GIB, temp=84, power=139_500, reasons=0x4, procs=[(4242, 5.5 * GIB), (999, 0.2 * GIB)]),
]


class FakeNvml:
    """pynvml-shaped fake: one GPU replaying RECORDED; `lost_at` makes samples raise GpuIsLost."""

    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVMLError_GpuIsLost = pynvml.NVMLError_GpuIsLost
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, readings=RECORDED, lost_at=(), no_power=False):
        self.readings = list(readings)
        self.i = -1
        self.lost_at = set(lost_at)
        self.no_power = no_power

    def _r(self) -> dict:
        if self.i in self.lost_at:
            raise pynvml.NVMLError_GpuIsLost()
        return self.readings[min(self.i, len(self.readings) - 1)]

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("handle", i)

    def nvmlDeviceGetUUID(self, h):
        return "GPU-8f1c2b3a-0000-1111-2222-333344445555"

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA RTX A4000"

    def nvmlDeviceGetUtilizationRates(self, h):
        self.i += 1                     # first call of a sample: advance the recording
        return SimpleNamespace(gpu=self._r()["util"], memory=0)

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=int(self._r()["used"]), total=16 * GIB, free=0)

    def nvmlDeviceGetTemperature(self, h, sensor):
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._r()["temp"]

    def nvmlDeviceGetPowerUsage(self, h):
        if self.no_power:
            raise pynvml.NVMLError_NotSupported()
        return self._r()["power"]

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return self._r()["reasons"]

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=p, usedGpuMemory=int(b)) for p, b in self._r()["procs"]]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h):
        return []

    def nvmlDeviceGetProcessUtilization(self, h, last_seen):
        # the recording has no per-process samples (NVML's "not found" for a card without them)
        raise NVMLError_NotFound()


# -- incidents ----------------------------------------------------------------------------------------

class IncidentRecorder:
    """An IncidentSink (healer.supervising.seams) that records what the supervisor tells it, in order.
    `job_started` is recorded as the kind the real sink emits for it (render.started), as
    healer.incidents.dispatch.Incidents does. `got` holds (kind, info, error); `kinds`, `infos` and
    `errors` are its columns."""

    def __init__(self) -> None:
        self.got: list[tuple[str, Any, RenderError | None]] = []
        self.kinds: list[str] = []
        self.infos: list[Any] = []
        self.errors: list[RenderError | None] = []

    def emit(self, kind: str, info: Any = None, error: RenderError | None = None) -> None:
        self.got.append((kind, info, error))
        self.kinds.append(kind)
        self.infos.append(info)
        self.errors.append(error)

    def job_started(self, info: Any) -> None:
        from healer.incidents.model import RENDER_STARTED

        self.emit(RENDER_STARTED, info)


class RecordingExporter:
    """An IncidentExporter (healer.incidents.model) that records the incidents it is handed: `delay`
    slows each export, `fail` makes it raise, `durable=False` is an exporter whose export() settles
    only on flush (sentry's), `flush_ok=False` a flush that does not finish. `gate` cleared holds
    the worker in export() (at most 10 s)."""

    def __init__(self, name: str = "rec", *, delay: float = 0.0, fail: bool = False, durable: bool = True,
                 flush_ok: bool = True) -> None:
        self.name, self.delay, self.fail, self.durable, self.flush_ok = name, delay, fail, durable, flush_ok
        self.got: list[Incident] = []
        self.gate = threading.Event()
        self.gate.set()
        self.flushed = self.shut = 0

    def export(self, batch: Sequence[Incident]) -> object:
        self.gate.wait(10)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("exporter bug")
        self.got.extend(batch)
        return {self.name: "sent"}

    def force_flush(self, timeout: float) -> bool:
        self.flushed += 1
        return self.flush_ok

    def shutdown(self) -> None:
        self.shut += 1


# -- conformance: each fake against the Protocol of its seam (checked by mypy, never called) -------------

if TYPE_CHECKING:
    from healer.incidents.model import IncidentExporter
    from healer.service.alerts import AlertActions
    from healer.supervising.seams import HostProbes, IncidentSink, Launcher, RunningBlender, Spawned
    from kernel.nvml import NvmlModule
    from tests.support.fake_blender import ReplayedBlender, ReplayLauncher, ReplayProbes, ReplaySpawned
    from tests.support.healer import RecordingActions


def _conforms(launcher: ReplayLauncher, probes: ReplayProbes, spawned: ReplaySpawned, blender: ReplayedBlender,
              sink: IncidentRecorder, exporter: RecordingExporter, actions: RecordingActions,
              nvml: FakeNvml) -> None:
    # the whole pynvml surface kernel.nvml calls (the other NVML stand-ins make only their consumer's calls)
    _nvml: NvmlModule = nvml
    _launcher: Launcher = launcher
    _probes: HostProbes = probes
    _spawned: Spawned = spawned
    _blender: RunningBlender = blender
    _sink: IncidentSink = sink
    _exporter: IncidentExporter = exporter
    _actions: AlertActions = actions
