"""Health probes over one running Blender: a pure `evaluate(snapshot) -> list[Finding]`.

Probes: `alive` (process exists, not a zombie), `progress` (samples/tiles/frames moving),
`heartbeat` (any output or hook event), `stall` (no sign of life for the stall timeout: the supervisor
kills and restarts), `memory` (host memory low, Blender's RSS near its limit), `gpu` (NVML: GPU
idle while Blender makes no progress, a hang hint).

A frame is stalled only when every sign of life is flat for the stall timeout: progress lines, any
output line, the hooks' heartbeat (a file they touch from the render handlers, render_stats included,
which does not depend on how Blender's stdout is buffered), CPU time of Blender's process tree, and
GPU activity of Blender's processes where NVML is. Progress lines alone are not enough: a long frame
can sample for minutes between two of them (a Cycles time limit, a heavy scene, a Blender built as a
module whose stdout a pipe buffers). A handler asleep, a Blender stopped by SIGSTOP or a read blocked
on a dead mount is flat on all of them; a handler spinning in a loop uses CPU, and is not a stall.

Stall timeout: `--stall-timeout S` when given; otherwise adaptive: 600 s until the first frame of
the job is saved (scene load, BVH build and kernel compilation print little), then
max(60 s, 4 x the slowest frame seen so far).

Usage::

    snap = ProbeSnapshot(now=t, started_at=t0, status="running", last_progress_at=t1, last_cpu_at=t2, ...)
    for f in evaluate(snap): metrics.probe_healthy(job, f.probe).set(f.healthy)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kernel.nvml import Gpus, NvmlModule, open_nvml

PROBES = ("alive", "progress", "heartbeat", "stall", "memory", "gpu")
STALL_FLOOR_S = 60.0
STALL_FACTOR = 4.0
STALL_FIRST_FRAME_S = 600.0
HOST_MEM_LOW_FRACTION = 0.05
RSS_NEAR_LIMIT_FRACTION = 0.9
# CPU time counts as a sign of life when Blender's process tree used at least this share of one core
# since the last sample, and at least one clock tick: a Blender whose main thread sleeps or waits
# uses none (measured: 0.00 s in 5 s on 3.4 and the 4.5 wheel, hooks' threads included), a rendering
# one at least a sizeable share of a core even on a host that is busy.
CPU_ACTIVE_FRACTION = 0.02
CPU_TICK_S = 0.01
CGROUP = "/sys/fs/cgroup"          # the cgroup v2 of this process (memory.max, memory.events)


@dataclass(frozen=True)
class ProbeSnapshot:
    now: float
    started_at: float
    status: str | None = "running"            # psutil status; None: the process is gone
    last_output_at: float | None = None       # any stdout line
    last_progress_at: float | None = None     # a sample/tile/frame counter moved
    last_event_at: float | None = None        # the hooks' heartbeat (None: none seen)
    last_cpu_at: float | None = None          # Blender's process tree last used CPU (cpu_active)
    last_gpu_at: float | None = None          # one of Blender's processes last busy on a GPU (NVML)
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


def cpu_active(before: float | None, after: float | None, seconds: float) -> bool:
    """Whether CPU time of Blender's tree going from `before` to `after` in `seconds` is a sign of life."""
    if before is None or after is None or seconds <= 0:
        return False
    return after - before >= max(CPU_TICK_S, CPU_ACTIVE_FRACTION * seconds)


SIGNS_OF_LIFE = (("last_progress_at", "progress"), ("last_output_at", "output"),
                 ("last_event_at", "hook heartbeat"), ("last_cpu_at", "CPU time"), ("last_gpu_at", "GPU activity"))


def last_sign_of_life(s: ProbeSnapshot) -> float:
    """When Blender last showed any sign of life (its start if none yet)."""
    return max([s.started_at, *(t for t in (getattr(s, k) for k, _ in SIGNS_OF_LIFE) if t is not None)])


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
    since_life = s.now - last_sign_of_life(s)
    stalled = alive and since_life >= timeout
    out.append(Finding("stall", not stalled,
                       f"no sign of life for {since_life:.1f} s: no progress, output, hook heartbeat, CPU time "
                       f"or GPU activity (stall timeout {timeout:g} s)" if stalled else "",
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


class SignsOfLife:
    """Turns successive readings (CPU seconds of Blender's tree, GPU busy, the heartbeat file's mtime)
    into the clock times the snapshot wants: when each last moved. The watch loop feeds it at most
    once a second; the decision stays in `evaluate`.

        life = SignsOfLife(); life.observe(now, cpu_seconds=12.3, gpu_busy=None, heartbeat_mtime_ns=...)
        ProbeSnapshot(..., last_cpu_at=life.last_cpu_at, last_event_at=life.last_event_at, ...)
    """

    def __init__(self) -> None:
        self.last_cpu_at: float | None = None
        self.last_gpu_at: float | None = None
        self.last_event_at: float | None = None
        self._cpu: tuple[float, float] | None = None         # (clock, CPU seconds) of the last reading
        self._mtime: int | None = None

    def observe(self, now: float, *, cpu_seconds: float | None = None, gpu_busy: bool | None = None,
                heartbeat_mtime_ns: int | None = None) -> None:
        if cpu_seconds is not None:
            if self._cpu is not None and cpu_active(self._cpu[1], cpu_seconds, now - self._cpu[0]):
                self.last_cpu_at = now
            if self._cpu is None or now - self._cpu[0] > 0:
                self._cpu = (now, cpu_seconds)
        if gpu_busy:
            self.last_gpu_at = now
        if heartbeat_mtime_ns is not None:
            if self._mtime is not None and heartbeat_mtime_ns != self._mtime:
                self.last_event_at = now
            self._mtime = heartbeat_mtime_ns


class ResourceSampler:
    """Reads what the probes need from the host: Blender's RSS and CPU time (its whole process tree),
    host memory, the cgroup memory limit, GPU utilisation and whether Blender's own processes keep a
    GPU busy, through NVML. Each source that is missing yields None and is logged once."""

    def __init__(self, psutil_mod=None, nvml: Gpus | NvmlModule | None = None, driver_present=None,
                 cgroup: str = CGROUP):
        import logging

        import psutil as _psutil

        self.psutil = psutil_mod or _psutil
        # NVML is opened on the first sample, and only where a driver is (`driver_present`)
        self.gpus = open_nvml(nvml, driver_present=driver_present, log_level=logging.DEBUG)
        self.limit = cgroup_memory_limit(cgroup)

    def sample(self, pid: int | None) -> dict:
        vm = self.psutil.virtual_memory()
        pids, rss, cpu = process_tree(pid, self.psutil)
        gpu = self.gpus.busiest_percent()
        return {"rss_bytes": rss, "rss_limit_bytes": self.limit or vm.total,
                "host_available_bytes": vm.available, "host_total_bytes": vm.total,
                "gpu_util_percent": gpu, "cpu_seconds": cpu, "gpu_busy": self.gpus.processes_active(pids) if pids else None}


def process_tree(pid: int | None, ps=None) -> tuple[set[int], int | None, float | None]:
    """(pids, RSS bytes, CPU seconds) of `pid` and its descendants; (set(), None, None) when it is gone.
    CPU time includes what its finished children used (psutil's children_*), so it only grows."""
    if ps is None:
        import psutil as ps
    if not pid:
        return set(), None, None
    try:
        p = ps.Process(pid)
        tree = [p, *p.children(recursive=True)]
    except (ps.NoSuchProcess, ps.AccessDenied):
        return set(), None, None
    rss, cpu = 0, 0.0
    for q in tree:
        try:
            rss += q.memory_info().rss
            cpu += sum(q.cpu_times()[:4])         # user, system and the reaped children's of each
        except (ps.NoSuchProcess, ps.AccessDenied):   # a child ended meanwhile: its time is its parent's now
            if q is p:
                return set(), None, None
    return {q.pid for q in tree}, rss, cpu


def cgroup_memory_limit(cgroup: str = CGROUP) -> int | None:
    """The cgroup's memory.max in bytes (None: no limit, or no cgroup v2 here)."""
    try:
        with open(f"{cgroup}/memory.max") as f:
            raw = f.read().strip()
        return None if raw == "max" else int(raw)
    except (OSError, ValueError):
        return None


class SystemProbes:
    """The real `seams.HostProbes`: psutil, the cgroup's memory.events, statvfs, a ResourceSampler."""

    def __init__(self, sampler: ResourceSampler | None = None, cgroup: str = CGROUP):
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
        """The sampler's readings; without one, CPU time alone (the stall probe's sign of life)."""
        if self.sampler is not None:
            return self.sampler.sample(pid)
        return {"cpu_seconds": process_tree(pid, self._psutil)[2]}

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
