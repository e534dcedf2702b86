"""Health probes over one running Blender: a pure `evaluate(snapshot) -> list[Finding]`.

Probes: `alive` (process exists, not a zombie), `progress` (samples/tiles/frames moving),
`heartbeat` (any output or hook event), `stall` (no progress for the stall timeout: the supervisor
kills and restarts), `memory` (host memory low, Blender's RSS near its limit), `gpu` (NVML: GPU
idle while Blender makes no progress, a hang hint).

Stall timeout: `--stall-timeout S` when given; otherwise adaptive: 600 s until the first frame of
the job is saved (scene load, BVH build and kernel compilation print little), then
max(60 s, 4 x the slowest frame seen so far). Progress lines arrive many times per frame, so a
healthy render never goes a whole frame time without one: 4x leaves room for a slow frame.

Usage::

    snap = ProbeSnapshot(now=t, started_at=t0, status="running", last_progress_at=t1, ...)
    for f in evaluate(snap): metrics.probe_healthy(job, f.probe).set(f.healthy)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PROBES = ("alive", "progress", "heartbeat", "stall", "memory", "gpu")
STALL_FLOOR_S = 60.0
STALL_FACTOR = 4.0
STALL_FIRST_FRAME_S = 600.0
HOST_MEM_LOW_FRACTION = 0.05
RSS_NEAR_LIMIT_FRACTION = 0.9


@dataclass(frozen=True)
class ProbeSnapshot:
    now: float
    started_at: float
    status: str | None = "running"            # psutil status; None: the process is gone
    last_output_at: float | None = None       # any stdout line
    last_progress_at: float | None = None     # a sample/tile/frame counter moved
    last_event_at: float | None = None        # a hook event (None: no event source)
    frame_times: Sequence[float] = ()         # seconds per completed frame (this job)
    stall_timeout: float | None = None        # explicit --stall-timeout
    rss_bytes: int | None = None              # Blender's process-group RSS
    rss_limit_bytes: int | None = None        # cgroup memory.max or host total
    host_available_bytes: int | None = None
    host_total_bytes: int | None = None
    gpu_util_percent: float | None = None     # None: no NVML / no GPU


@dataclass(frozen=True)
class Finding:
    probe: str
    healthy: bool
    detail: str = ""
    action: str | None = None                 # "kill_stall": the supervisor stops Blender


def stall_timeout(explicit: float | None, frame_times: Sequence[float]) -> float:
    """The stall timeout in effect (see the module docstring)."""
    if explicit is not None and explicit > 0:
        return float(explicit)
    if not frame_times:
        return STALL_FIRST_FRAME_S
    return max(STALL_FLOOR_S, STALL_FACTOR * max(frame_times))


def evaluate(s: ProbeSnapshot) -> list[Finding]:
    """One finding per probe that applies (a probe without a data source is left out)."""
    out: list[Finding] = []
    alive = s.status is not None and s.status != "zombie"
    out.append(Finding("alive", alive, "" if alive else ("zombie" if s.status == "zombie" else "process gone")))
    timeout = stall_timeout(s.stall_timeout, s.frame_times)
    since_progress = s.now - (s.last_progress_at if s.last_progress_at is not None else s.started_at)
    out.append(Finding("progress", since_progress <= timeout / 2,
                       f"no progress for {since_progress:.1f} s" if since_progress > timeout / 2 else ""))
    beats = [t for t in (s.last_output_at, s.last_event_at) if t is not None]
    if beats:
        since_beat = s.now - max(beats)
        out.append(Finding("heartbeat", since_beat <= timeout,
                           f"silent for {since_beat:.1f} s" if since_beat > timeout else ""))
    stalled = alive and since_progress >= timeout
    out.append(Finding("stall", not stalled,
                       f"no progress for {since_progress:.1f} s (stall timeout {timeout:g} s)" if stalled else "",
                       "kill_stall" if stalled else None))
    mem_problems = []
    if s.host_available_bytes is not None and s.host_total_bytes:
        if s.host_available_bytes < HOST_MEM_LOW_FRACTION * s.host_total_bytes:
            mem_problems.append(f"host memory low: {s.host_available_bytes / 2**20:.0f} MiB available")
    if s.rss_bytes is not None and s.rss_limit_bytes:
        if s.rss_bytes > RSS_NEAR_LIMIT_FRACTION * s.rss_limit_bytes:
            mem_problems.append(f"Blender RSS {s.rss_bytes / 2**20:.0f} MiB near its limit "
                                f"{s.rss_limit_bytes / 2**20:.0f} MiB")
    if s.host_available_bytes is not None or s.rss_bytes is not None:
        out.append(Finding("memory", not mem_problems, "; ".join(mem_problems)))
    if s.gpu_util_percent is not None:
        hang = alive and since_progress > timeout / 2 and s.gpu_util_percent <= 0.0
        out.append(Finding("gpu", not hang, f"GPU idle for a render without progress for {since_progress:.0f} s: "
                           "possible GPU hang" if hang else ""))
    return out


# What an NVIDIA driver that NVML can talk to leaves on a host: the kernel driver's /proc entry and
# control device (also mounted into containers by the NVIDIA container toolkit), or WSL2's GPU device.
NVIDIA_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg")


def nvidia_driver_present() -> bool:
    """Whether NVML can be there at all: without it, importing pynvml and failing nvmlInit costs every
    task ~10 ms of CPU on a CPU-only node (off Linux, NVML is simply tried)."""
    import os
    import sys

    return not sys.platform.startswith("linux") or any(os.path.exists(p) for p in NVIDIA_DRIVER_PATHS)


class ResourceSampler:
    """Reads what the probes need from the host: Blender's RSS (whole process group), host memory,
    the cgroup memory limit, GPU utilisation through NVML. Each source that is missing yields None
    and is logged once."""

    def __init__(self, psutil_mod=None, nvml=None, driver_present=None):
        import logging

        import psutil as _psutil

        self.psutil = psutil_mod or _psutil
        self.log = logging.getLogger(__name__)
        self._nvml = nvml
        self._nvml_tried = nvml is not None
        self._handles: list = []
        self._driver_present = driver_present or nvidia_driver_present
        self.limit = _cgroup_memory_limit()

    def _gpu(self) -> float | None:
        if not self._nvml_tried:
            self._nvml_tried = True
            if not self._driver_present():
                self.log.debug("no NVIDIA driver on this host: no GPU hang hint")
                return None
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
                self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            except Exception as e:      # no driver / no GPU: the gpu probe is left out
                self.log.debug("NVML unavailable (%s): no GPU hang hint", type(e).__name__)
                self._nvml = None
        if self._nvml is None or not self._handles:
            return None
        try:
            return float(max(self._nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self._handles))
        except Exception:
            return None

    def sample(self, pid: int | None) -> dict:
        ps = self.psutil
        vm = ps.virtual_memory()
        rss = None
        if pid:
            try:
                p = ps.Process(pid)
                rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
            except (ps.NoSuchProcess, ps.AccessDenied):
                rss = None
        return {"rss_bytes": rss, "rss_limit_bytes": self.limit or vm.total,
                "host_available_bytes": vm.available, "host_total_bytes": vm.total,
                "gpu_util_percent": self._gpu()}


def _cgroup_memory_limit() -> int | None:
    try:
        raw = open("/sys/fs/cgroup/memory.max").read().strip()
        return None if raw == "max" else int(raw)
    except (OSError, ValueError):
        return None


class SystemProbes:
    """The real `seams.HostProbes`: psutil, the cgroup's memory.events, statvfs, a ResourceSampler."""

    def __init__(self, sampler: ResourceSampler | None = None, cgroup: str = "/sys/fs/cgroup"):
        import psutil

        self._psutil = psutil
        self.sampler = sampler
        self.cgroup = cgroup

    def process_status(self, pid: int) -> str | None:
        try:
            return str(self._psutil.Process(pid).status())
        except self._psutil.Error:
            return None

    def process_create_time(self, pid: int) -> float | None:
        try:
            return float(self._psutil.Process(pid).create_time())
        except self._psutil.Error:
            return None

    def oom_kills(self) -> int | None:
        """The cgroup's OOM-kill count, to tell a kernel OOM kill from a plain SIGKILL."""
        try:
            with open(f"{self.cgroup}/memory.events") as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            pass
        return None

    def full_disk(self, path: str, min_free: int = 1 << 20) -> str | None:
        """The directory of `path` if its filesystem has less than `min_free` bytes available."""
        import os

        d = os.path.dirname(os.path.abspath(path))
        try:
            st = os.statvfs(d)
        except OSError:
            return None
        return d if st.f_bavail * st.f_frsize < min_free else None

    def resources(self, pid: int) -> dict:
        return self.sampler.sample(pid) if self.sampler is not None else {}

    def gl_driver(self, pid: int) -> tuple[str, str] | None:
        return gl_driver(pid)


# -- which OpenGL/Vulkan driver a raster render (EEVEE, Workbench) runs on --------------------------
# Blender does not say, and asking it (gpu.platform) from a handler in background mode crashes it, so
# the healer looks at what the running Blender has loaded and opened, as `lsof` would.
SOFTWARE_DRIVERS = ("swrast_dri", "kms_swrast_dri", "llvmpipe", "softpipe", "libvulkan_lvp", "swiftshader",
                    "libGLESv2_swiftshader", "vk_swiftshader")
HARDWARE_DRIVERS = ("libnvidia-eglcore", "libnvidia-glcore", "libnvidia-glvkspirv", "radeonsi_dri", "iris_dri",
                    "i965_dri", "crocus_dri", "nouveau_dri", "r600_dri", "amdgpu_dri", "libvulkan_radeon",
                    "libvulkan_intel", "libvulkan_nouveau", "libamdvlk", "zink_dri")
GPU_DEVICE_FILES = ("/dev/dri/renderD", "/dev/dri/card", "/dev/nvidia", "/dev/kfd")


def gl_driver(pid: int, proc: str = "/proc") -> tuple[str, str] | None:
    """("software" | "hardware", evidence) for the GPU API driver process `pid` renders with; None while
    it has loaded none (no context yet) or where /proc cannot be read. Software: Mesa's swrast/llvmpipe
    or lavapipe, SwiftShader, or Mesa's one-file driver (libgallium, Mesa 24+) with no GPU device file
    open; hardware: a vendor driver, or a GPU device file (/dev/dri/renderD*, /dev/nvidia*) open."""
    import os

    try:
        with open(f"{proc}/{pid}/maps", encoding="utf-8", errors="replace") as f:
            libs = {line.rsplit("/", 1)[-1].strip() for line in f if "/" in line}
    except OSError:
        return None
    devices = set()
    try:
        for fd in os.listdir(f"{proc}/{pid}/fd"):
            try:
                target = os.readlink(f"{proc}/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(GPU_DEVICE_FILES):
                devices.add(target)
    except OSError:
        pass
    hardware = sorted(lib for lib in libs if lib.startswith(HARDWARE_DRIVERS))
    if hardware or devices:
        return "hardware", ", ".join(hardware + sorted(devices))
    software = sorted(lib for lib in libs if any(name in lib for name in SOFTWARE_DRIVERS))
    if software:
        return "software", ", ".join(software) + " loaded, no GPU device open"
    gallium = sorted(lib for lib in libs if lib.startswith("libgallium"))
    if gallium:
        return "software", ", ".join(gallium) + " loaded with no GPU device open (llvmpipe)"
    return None
