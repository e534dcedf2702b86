"""agent.process: CPU and RSS of a real process tree, per-frame peaks kept after the process dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
from prometheus_client import CollectorRegistry, generate_latest

from agent.process import ProcessSampler
from tests.support.agent import sample_value, wait_until

CHILD = r"""
import sys, time, subprocess
kid = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(60 << 20); time.sleep(60)"])
blob = bytearray(int(sys.argv[1]) << 20)
for i in range(0, len(blob), 4096):
    blob[i] = 1
print("ready", flush=True)
t = time.time()
while time.time() - t < 0.3:
    pass                       # burn some CPU
time.sleep(60)
"""


def scrape(s: ProcessSampler) -> str:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(s)
    return generate_latest(reg).decode()


def test_real_process_tree_peak_survives_death():
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "150"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        s = ProcessSampler()
        s.sync({"job-1": proc.pid})
        s.frame_started("job-1")
        assert wait_until(lambda: len(psutil.Process(proc.pid).children()) == 1, 10)
        s.sample()
        time.sleep(0.3)
        s.sample()
        tracked = s.jobs["job-1"]
        assert len(tracked.procs) == 2                     # Blender and its child
        assert tracked.rss > 200 << 20                     # 150 MiB + the child's 60 MiB
        assert tracked.cpu_ratio > 0
        peak = s.frame_peak("job-1")
        assert peak >= tracked.rss and s.job_peak("job-1") == peak
        text = scrape(s)
        assert sample_value(text, "renderwatch_job_rss_bytes", {"job": "job-1"}) == tracked.rss
        assert 0 < sample_value(text, "renderwatch_host_memory_used_ratio") < 1
        assert set(s.pid_map()) == set(tracked.procs) and set(s.pid_map().values()) == {"job-1"}

        os.kill(proc.pid, signal.SIGKILL)                  # an OOM kill mid-frame
        proc.wait(10)
        s.sample()
        assert s.alive("job-1") is False
        assert s.frame_peak("job-1") == peak               # the last peak is still there
        assert 'renderwatch_job_rss_bytes{job="job-1"}' not in scrape(s)
    finally:
        for p in psutil.Process(proc.pid).children(recursive=True) if psutil.pid_exists(proc.pid) else []:
            p.kill()
        proc.kill()
        proc.wait()


def test_untracked_jobs_are_forgotten_and_unknown_pids_are_dead():
    s = ProcessSampler()
    s.sync({"a": os.getpid(), "b": 2 ** 22 + 12345})
    s.sample()
    assert s.alive("a") is True and s.alive("b") is False and s.alive("c") is None
    s.sync({"a": os.getpid()})
    assert set(s.jobs) == {"a"}


class FakePsutil:
    """The `proc=` seam: a process whose RSS follows a recording, then vanishes."""

    def __init__(self, rss_series):
        self.series = list(rss_series)

    def virtual_memory(self):
        return type("VM", (), {"percent": 42.0})()

    def Process(self, pid):
        fake = self

        class P:
            def __init__(self):
                self.pid = pid

            def children(self, recursive=False):
                return []

            def oneshot(self):
                import contextlib
                return contextlib.nullcontext()

            def cpu_percent(self, interval=None):
                return 150.0

            def memory_info(self):
                if not fake.series:
                    raise psutil.NoSuchProcess(pid)
                return type("M", (), {"rss": fake.series.pop(0)})()
        return P()


def test_frame_peaks_with_recorded_rss():
    s = ProcessSampler(proc=FakePsutil([100, 300, 200, 50, 80]))
    s.sync({"j": 7})
    s.sample()
    s.frame_started("j")               # frame 1 starts at 100
    s.sample()
    s.sample()
    assert s.frame_peak("j") == 300
    s.frame_started("j")               # frame 2 starts at 200
    s.sample()
    s.sample()
    assert s.frame_peak("j") == 200 and s.job_peak("j") == 300
    assert s.jobs["j"].cpu_ratio == 1.5 and s.host_memory_ratio == 0.42
    s.sample()                          # gone
    assert s.alive("j") is False and s.frame_peak("j") == 200
