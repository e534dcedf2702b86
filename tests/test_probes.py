"""healer.probes: the pure evaluate(snapshot) over probe inputs."""

from __future__ import annotations

from healer.supervising.probes import STALL_FIRST_FRAME_S, ProbeSnapshot, evaluate, stall_timeout


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


class _NoNVML:
    def __getattr__(self, name):
        raise AssertionError(f"pynvml.{name} used on a host without an NVIDIA driver")


def test_nvml_is_not_loaded_without_an_nvidia_driver_and_asked_with_one(monkeypatch):
    import os
    import sys

    from nvml_fakes import TwoGpus

    from healer.supervising.probes import ResourceSampler

    monkeypatch.setitem(sys.modules, "pynvml", _NoNVML())
    assert ResourceSampler(driver_present=lambda: False).sample(os.getpid())["gpu_util_percent"] is None
    monkeypatch.setitem(sys.modules, "pynvml", TwoGpus())
    assert ResourceSampler(driver_present=lambda: True).sample(os.getpid())["gpu_util_percent"] == 37.0  # the busiest
