"""healer.probes: the pure evaluate(snapshot) over probe inputs."""

from __future__ import annotations

from healer.supervising.probes import (
    STALL_FIRST_FRAME_S,
    ProbeSnapshot,
    SignsOfLife,
    cpu_active,
    evaluate,
    last_sign_of_life,
    process_tree,
    stall_timeout,
)


def _by_probe(snap: ProbeSnapshot) -> dict:
    return {f.probe: f for f in evaluate(snap)}


def test_stall_timeout_explicit_then_adaptive():
    assert stall_timeout(3, [100.0]) == 3
    assert stall_timeout(None, []) == STALL_FIRST_FRAME_S
    assert stall_timeout(None, [2.0, 5.0]) == 60.0           # floor
    assert stall_timeout(None, [30.0, 45.0]) == 180.0        # 4x the slowest frame


def test_healthy_render():
    f = _by_probe(ProbeSnapshot(now=100, started_at=0, status="running", last_output_at=99, last_progress_at=99,
                                frame_times=[10.0]))
    assert all(x.healthy for x in f.values())
    assert set(f) == {"alive", "progress", "heartbeat", "stall"}      # no memory/gpu sources given


def test_stall_fires_at_the_timeout_with_a_kill_action():
    snap = ProbeSnapshot(now=103.1, started_at=0, last_progress_at=100, last_output_at=100, stall_timeout=3)
    f = _by_probe(snap)
    assert not f["stall"].healthy and f["stall"].action == "kill_stall"
    assert not f["progress"].healthy and not f["heartbeat"].healthy
    assert _by_probe(ProbeSnapshot(now=102.9, started_at=0, last_progress_at=100, stall_timeout=3))["stall"].healthy


def test_no_progress_ever_counts_from_the_start():
    f = _by_probe(ProbeSnapshot(now=4, started_at=0, stall_timeout=3))
    assert f["stall"].action == "kill_stall"


def test_zombie_is_not_alive_and_not_killed_for_stalling():
    f = _by_probe(ProbeSnapshot(now=500, started_at=0, status="zombie", stall_timeout=3))
    assert not f["alive"].healthy and f["alive"].detail == "zombie"
    assert f["stall"].healthy


def test_memory_pressure():
    gib = 2**30
    ok = _by_probe(ProbeSnapshot(now=1, started_at=0, host_available_bytes=8 * gib, host_total_bytes=16 * gib,
                                 rss_bytes=gib, rss_limit_bytes=16 * gib))
    assert ok["memory"].healthy
    low = _by_probe(ProbeSnapshot(now=1, started_at=0, host_available_bytes=gib // 2, host_total_bytes=16 * gib,
                                  rss_bytes=15 * gib, rss_limit_bytes=16 * gib))
    assert not low["memory"].healthy
    assert "host memory low" in low["memory"].detail and "near its limit" in low["memory"].detail


def test_gpu_hang_hint_only_when_stalling_with_an_idle_gpu():
    busy = _by_probe(ProbeSnapshot(now=100, started_at=0, last_progress_at=0, stall_timeout=120, gpu_util_percent=95))
    assert busy["gpu"].healthy
    idle = _by_probe(ProbeSnapshot(now=100, started_at=0, last_progress_at=0, stall_timeout=120, gpu_util_percent=0))
    assert not idle["gpu"].healthy and "GPU hang" in idle["gpu"].detail
    fresh = _by_probe(ProbeSnapshot(now=100, started_at=0, last_progress_at=99, stall_timeout=120, gpu_util_percent=0))
    assert fresh["gpu"].healthy


def test_nvml_is_not_loaded_without_an_nvidia_driver_and_asked_with_one(monkeypatch):
    import os
    import sys

    from healer.supervising.probes import ResourceSampler
    from tests.support.fakes import ForbiddenNvml, TwoGpus

    monkeypatch.setitem(sys.modules, "pynvml", ForbiddenNvml())
    assert ResourceSampler(driver_present=lambda: False).sample(os.getpid())["gpu_util_percent"] is None
    monkeypatch.setitem(sys.modules, "pynvml", TwoGpus())
    assert ResourceSampler(driver_present=lambda: True).sample(os.getpid())["gpu_util_percent"] == 37.0  # the busiest


def test_the_memory_limit_is_read_from_the_cgroup_it_is_given(tmp_path):
    import os

    from healer.supervising.probes import ResourceSampler

    (tmp_path / "memory.max").write_text("1073741824\n")
    assert ResourceSampler(driver_present=lambda: False, cgroup=str(tmp_path)).sample(os.getpid())["rss_limit_bytes"] == 1 << 30
    (tmp_path / "memory.max").write_text("max\n")        # no limit: the host's memory
    import psutil

    assert ResourceSampler(driver_present=lambda: False, cgroup=str(tmp_path)).sample(os.getpid())["rss_limit_bytes"] == \
        psutil.virtual_memory().total


# -- stall: every sign of life flat for the timeout, not progress lines alone ------------------------

def test_a_silent_frame_with_cpu_time_growing_is_not_a_stall():
    # a wheel's block-buffered stdout, or a Cycles time limit: no line for 20 s, CPU busy all along
    silent = dict(now=120, started_at=0, last_progress_at=100, last_output_at=100, stall_timeout=8)
    assert _by_probe(ProbeSnapshot(**silent, last_cpu_at=119.5))["stall"].healthy
    assert _by_probe(ProbeSnapshot(**silent, last_event_at=117))["stall"].healthy      # the hooks' heartbeat
    assert _by_probe(ProbeSnapshot(**silent, last_gpu_at=115))["stall"].healthy        # GPU busy, CPU waiting
    f = _by_probe(ProbeSnapshot(**silent, last_cpu_at=111, last_event_at=110, last_gpu_at=109))
    assert not f["progress"].healthy                       # still reported: no progress line for 20 s
    assert not f["stall"].healthy and f["stall"].action == "kill_stall"
    assert "no sign of life for 9.0 s" in f["stall"].detail and "CPU time" in f["stall"].detail


def test_output_lines_are_a_sign_of_life_too():
    f = _by_probe(ProbeSnapshot(now=120, started_at=0, last_progress_at=100, last_output_at=118, stall_timeout=8))
    assert f["stall"].healthy


def test_last_sign_of_life_is_the_newest_signal_or_the_start():
    assert last_sign_of_life(ProbeSnapshot(now=9, started_at=2)) == 2
    assert last_sign_of_life(ProbeSnapshot(now=9, started_at=2, last_progress_at=3, last_cpu_at=7,
                                           last_event_at=5)) == 7


def test_cpu_activity_threshold():
    assert not cpu_active(10.0, 10.0, 5.0)          # a handler asleep, a SIGSTOPped Blender: no CPU at all
    assert not cpu_active(10.0, 10.01, 5.0)         # one clock tick in 5 s: a housekeeping thread
    assert cpu_active(10.0, 10.5, 1.0)              # half a core: rendering on a busy host
    assert cpu_active(10.0, 10.03, 1.0)
    assert not cpu_active(None, 10.0, 1.0) and not cpu_active(10.0, 11.0, 0.0)


def test_signs_of_life_from_successive_readings():
    life = SignsOfLife()
    life.observe(1.0, cpu_seconds=5.0, heartbeat_mtime_ns=0)
    assert (life.last_cpu_at, life.last_event_at, life.last_gpu_at) == (None, None, None)   # a first reading only
    life.observe(2.0, cpu_seconds=5.8, heartbeat_mtime_ns=0, gpu_busy=False)
    assert (life.last_cpu_at, life.last_event_at, life.last_gpu_at) == (2.0, None, None)
    life.observe(3.0, cpu_seconds=5.8, heartbeat_mtime_ns=1_000, gpu_busy=True)
    assert (life.last_cpu_at, life.last_event_at, life.last_gpu_at) == (2.0, 3.0, 3.0)
    life.observe(4.0, cpu_seconds=None, heartbeat_mtime_ns=1_000, gpu_busy=None)     # Blender gone meanwhile
    assert (life.last_cpu_at, life.last_event_at, life.last_gpu_at) == (2.0, 3.0, 3.0)


def test_process_tree_cpu_time_grows_while_working_and_not_while_asleep():
    import os
    import time

    pids, rss, before = process_tree(os.getpid())
    assert os.getpid() in pids and rss and before is not None
    t = time.process_time()
    while time.process_time() - t < 0.1:
        pass
    assert process_tree(os.getpid())[2] >= before + 0.09
    assert process_tree(2**22 + 12345) == (set(), None, None)      # no such process


def test_gpu_activity_counts_only_for_blenders_own_processes():
    import os

    from healer.supervising.probes import ResourceSampler
    from tests.support.fakes import ContextOnly, ProcessGpus

    me = os.getpid()
    nvml = ProcessGpus({me: 80})
    s = ResourceSampler(nvml=nvml, driver_present=lambda: True)
    assert s.sample(me)["gpu_busy"] is True
    assert s.sample(me)["gpu_busy"] is True and nvml.asked[-2] == 1000     # only samples newer than those read
    nvml.busy = {me + 1: 100}                              # another job keeps the GPU busy: not Blender's life
    assert s.sample(me)["gpu_busy"] is False
    nvml.busy = {}
    assert s.sample(me)["gpu_busy"] is False               # NVML: no sample since the last (NotFound)
    # no per-process samples on this driver: a busy GPU where Blender holds a context
    assert ResourceSampler(nvml=ContextOnly([me]), driver_present=lambda: True).sample(me)["gpu_busy"] is True
    assert ResourceSampler(nvml=ContextOnly([me + 1]), driver_present=lambda: True).sample(me)["gpu_busy"] is False
    assert ResourceSampler(driver_present=lambda: False).sample(me)["gpu_busy"] is None      # no NVML


def test_system_probes_without_a_sampler_still_read_cpu_time():
    import os

    from healer.supervising.probes import SystemProbes

    assert SystemProbes().resources(os.getpid())["cpu_seconds"] > 0
