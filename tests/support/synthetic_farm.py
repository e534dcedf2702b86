"""A synthetic render farm for tests of the central tier: render nodes whose agent and healer
`/metrics` look like the real ones (same families, label names and bucket layouts), with values
that move like a farm's (frames finishing, one crash and restart, GPUs warming up).

The real agent and healer are tested against real Blender elsewhere; this exists so the
dashboards' and rules' queries can be evaluated against a real Prometheus with several hosts,
GPUs, scenes and a day of history, which one test machine cannot render.

Usage::

    farm = SyntheticFarm(["127.0.0.1", "127.0.0.2"])
    with serve_farm(farm) as targets:          # {"renderwatch-agent": [...], "renderwatch-healer": [...]}
        ...                                    # scrape them
    text = farm.history_openmetrics(hours=26, step=300)   # for promtool tsdb create-blocks-from
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# The agent's and healer's bucket layouts (agent/aggregates.py).
SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
                   3600.0, 7200.0)
MEMORY_BUCKETS = tuple(float(1 << p) for p in range(26, 39))
MEMORY_KINDS = ("blender", "rss", "vram")
THROTTLE_REASONS = ("gpu_idle", "applications_clocks_setting", "sw_power_cap", "hw_slowdown", "sync_boost",
                    "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown",
                    "display_clock_setting")
PROBES = ("alive", "progress", "heartbeat", "stall", "memory", "gpu")
SUSPECT_REASONS = ("blank", "transparent", "partial", "resolution", "channels", "too_fast", "cpu_fallback")
REJECT_REASONS = ("invalid_utf8", "malformed_json", "not_object", "too_large", "unsupported_version",
                  "unknown_type", "missing_field", "wrong_type", "out_of_range")
GPU_MODELS = ("NVIDIA GeForce RTX 4090", "NVIDIA L40S")

# What the farm renders: scene -> (engine, device_type, typical frame seconds).
SCENES = {"sh010_lighting": ("CYCLES", "OPTIX", 42.0), "sh020_fx": ("CYCLES", "CUDA", 95.0),
          "sh030_layout": ("BLENDER_EEVEE_NEXT", "GPU", 6.0)}


@dataclass
class _Job:
    id: str
    scene: str
    frames_total: int
    frames_done: int = 0
    attempts: int = 1
    started: float = 0.0
    last_progress: float = 0.0
    last_frame_seconds: float = 0.0
    peaks: dict[str, float] = field(default_factory=dict)


class SyntheticNode:
    """One render node: an agent registry and a healer registry, advanced in simulated time.

    Each call to `advance(now)` finishes the frames due since the last call (a few per second, so
    1 s scrapes see counters move); `crash_after` seconds in, the node's first job crashes once
    and the healer restarts it (its labelled counters are born at 1, as prometheus_client's are).
    """

    def __init__(self, host: str, index: int, start: float, frames_per_second: float = 2.0,
                 seed: int = 0, crash_after: float = 8.0) -> None:
        self.host = host
        self.start = start
        self.crash_after = crash_after
        self.rng = random.Random(seed * 7919 + index)
        self.fps = frames_per_second
        self.clock = start
        self.carry = 0.0
        self.agent = CollectorRegistry()
        self.healer = CollectorRegistry()
        self._build_agent()
        self._build_healer()
        scenes = list(SCENES)
        self.jobs = [_Job(f"{scenes[(index + i) % len(scenes)]}-{host.replace('.', '-')}-{i}",
                          scenes[(index + i) % len(scenes)], frames_total=240, started=start, last_progress=start)
                     for i in range(2)]
        self.gpus = [(str(g), f"GPU-{index:02d}{g:02d}-5e1f-4c7d-9a21-0c6b{index:04d}{g:04d}",
                      GPU_MODELS[index % len(GPU_MODELS)]) for g in range(2)]
        self.crashed = False
        self.turn = 0                      # jobs take turns finishing frames
        self._set_static()

    # -- registries shaped like agent/metrics.py, agent/gpu.py, agent/process.py, healer/service/metrics.py
    def _build_agent(self) -> None:
        r = self.agent
        fl = ["scene", "engine", "device_type"]
        self.frames = Counter("renderwatch_frames_rendered", "Frames rendered", fl, registry=r)
        self.frame_seconds = Histogram("renderwatch_frame_render_seconds", "Wall time per frame", fl,
                                       buckets=SECONDS_BUCKETS, registry=r)
        self.frame_memory = Histogram("renderwatch_frame_peak_memory_bytes", "Peak memory per frame",
                                      [*fl, "kind"], buckets=MEMORY_BUCKETS, registry=r)
        self.jobs_active = Gauge("renderwatch_jobs_active", "Render jobs running now", registry=r)
        self.job = {name: Gauge(f"renderwatch_job_{name}", name, ["job"], registry=r) for name in (
            "progress_ratio", "frames_done", "frames_expected", "eta_seconds", "last_frame_seconds", "attempts",
            "last_progress_timestamp_seconds", "cpu_ratio", "rss_bytes", "vram_bytes")}
        self.job_peak = Gauge("renderwatch_job_peak_memory_bytes", "Peak memory per job", ["job", "kind"], registry=r)
        self.job_info = Gauge("renderwatch_job_info", "Job description", ["job", "scene", "engine", "device_type",
                                                                          "host", "blender_version", "status"],
                              registry=r)
        gl = ["gpu", "uuid", "name"]
        self.gpu_available = Gauge("renderwatch_gpu_available", "NVML answers", registry=r)
        self.gpu = {name: Gauge(f"renderwatch_gpu_{name}", name, gl, registry=r) for name in (
            "utilization_ratio", "memory_used_bytes", "memory_total_bytes", "temperature_celsius", "power_watts")}
        self.gpu_throttle = Gauge("renderwatch_gpu_throttle_reason", "throttle reason", [*gl, "reason"], registry=r)
        self.host_memory = Gauge("renderwatch_host_memory_used_ratio", "Host memory in use", registry=r)
        self.ingested = Counter("renderwatch_events_ingested", "Hook events accepted", registry=r)
        self.duplicate = Counter("renderwatch_events_duplicate", "Hook events already seen", registry=r)
        self.rejected = Counter("renderwatch_events_rejected", "Hook events rejected", ["reason"], registry=r)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        self.spool_pending = Gauge("renderwatch_spool_pending_bytes", "Spool bytes not yet ingested", registry=r)
        self.spans = Counter("renderwatch_spans_exported", "Spans exported", registry=r)
        self.suspect = Counter("renderwatch_frames_suspect", "Saved frames that look wrong", ["reason"], registry=r)
        for reason in SUSPECT_REASONS:          # the agent exports every reason from 0
            self.suspect.labels(reason)

    def _build_healer(self) -> None:
        r = self.healer
        self.probe = Gauge("renderwatch_healer_probe_healthy", "probe passes", ["job", "probe"], registry=r)
        self.restarts = Counter("renderwatch_healer_restarts", "restarts", ["job", "error_type"], registry=r)
        self.attempts = Counter("renderwatch_healer_attempts", "attempts by outcome", ["error_type"], registry=r)
        self.gave_up = Counter("renderwatch_healer_gave_up", "jobs given up", ["job", "error_type"], registry=r)
        self.frames_requested = Gauge("renderwatch_healer_frames_requested", "frames asked", ["job"], registry=r)
        self.frames_completed = Gauge("renderwatch_healer_frames_completed", "frames verified", ["job"], registry=r)
        self.rerendered = Counter("renderwatch_healer_frames_rerendered", "frames rendered again", ["job"],
                                  registry=r)
        self.healer_jobs = Gauge("renderwatch_healer_jobs", "jobs by status", ["status"], registry=r)
        self.incidents = Counter("renderwatch_healer_incidents", "incidents", ["kind", "target", "outcome"],
                                 registry=r)
        self.alerts = Counter("renderwatch_healer_alerts", "alerts received", ["action", "status", "outcome"],
                              registry=r)

    def _set_static(self) -> None:
        self.gpu_available.set(1)
        self.jobs_active.set(len(self.jobs))
        for gpu, uuid, name in self.gpus:
            self.gpu["memory_total_bytes"].labels(gpu, uuid, name).set(24 * 2**30 if "4090" in name else 48 * 2**30)
        for j in self.jobs:
            engine, device, _ = SCENES[j.scene]
            self.job_info.labels(j.id, j.scene, engine, device, self.host, "5.0.1", "running").set(1)
            self.job["frames_expected"].labels(j.id).set(j.frames_total)
            self.frames_requested.labels(j.id).set(j.frames_total)
            for probe in PROBES:
                self.probe.labels(j.id, probe).set(1)
        self.healer_jobs.labels("running").set(len(self.jobs))
        self.healer_jobs.labels("complete").set(3)
        self.healer_jobs.labels("failed").set(0)

    def _frame(self, job: _Job, now: float) -> None:
        engine, device, typical = SCENES[job.scene]
        seconds = max(0.05, self.rng.lognormvariate(0, 0.25) * typical)
        self.frames.labels(job.scene, engine, device).inc()
        self.frame_seconds.labels(job.scene, engine, device).observe(seconds)
        peaks = {"blender": 3.1e9 * self.rng.uniform(0.9, 1.1), "rss": 4.4e9 * self.rng.uniform(0.9, 1.1),
                 "vram": 9.5e9 * self.rng.uniform(0.9, 1.1)}
        for kind, v in peaks.items():
            self.frame_memory.labels(job.scene, engine, device, kind).observe(v)
            job.peaks[kind] = max(job.peaks.get(kind, 0.0), v)
        job.frames_done = min(job.frames_total, job.frames_done + 1)
        job.last_frame_seconds = seconds
        job.last_progress = now
        self.ingested.inc(3 + self.rng.randint(0, 4))      # frame_start, phases, frame_end
        self.spans.inc(4)
        self.attempts.labels("ok").inc(0)

    def _crash_and_restart(self, job: _Job) -> None:
        """The first job's Blender segfaults once; the healer restarts it and it goes on."""
        self.crashed = True
        job.attempts += 1
        self.attempts.labels("segfault").inc()
        self.restarts.labels(job.id, "segfault").inc()
        self.rerendered.labels(job.id).inc()
        self.incidents.labels("render.crashed", "webhook", "delivered").inc()
        self.incidents.labels("render.restarted", "webhook", "delivered").inc()
        self.probe.labels(job.id, "alive").set(0)
        # A job on another host once ran out of retries on a missing texture library.
        self.gave_up.labels(f"{job.scene}-retake", "missing_file").inc()
        self.suspect.labels("blank").inc()       # the restart's first frame came out black once
        self.incidents.labels("render.gave_up", "sentry", "delivered").inc()
        self.alerts.labels("restart_job", "firing", "acted").inc()

    def advance(self, now: float) -> None:
        """Simulate up to `now`: frames due, a crash after the first frames, GPU and host readings."""
        if now <= self.clock:
            return
        due = (now - self.clock) * self.fps + self.carry
        n, self.carry = int(due), due - int(due)
        for i in range(n):
            job = self.jobs[self.turn % len(self.jobs)]
            self.turn += 1
            t = self.clock + (i + 1) / max(self.fps, 1e-9)
            self._frame(job, t)
            if not self.crashed and job is self.jobs[0] and t - self.start >= self.crash_after:
                self._crash_and_restart(job)
            elif self.crashed:
                self.probe.labels(self.jobs[0].id, "alive").set(1)
        self.clock = now
        busy = 0.6 + 0.35 * self.rng.random()
        for g, (gpu, uuid, name) in enumerate(self.gpus):
            total = 24 * 2**30 if "4090" in name else 48 * 2**30
            self.gpu["utilization_ratio"].labels(gpu, uuid, name).set(busy)
            self.gpu["memory_used_bytes"].labels(gpu, uuid, name).set(total * (0.55 + 0.05 * g))
            self.gpu["temperature_celsius"].labels(gpu, uuid, name).set(68 + 6 * busy + g)
            self.gpu["power_watts"].labels(gpu, uuid, name).set(120 + 300 * busy)
            for reason in THROTTLE_REASONS:
                on = reason == "sw_power_cap" and busy > 0.8
                self.gpu_throttle.labels(gpu, uuid, name, reason).set(1 if on else 0)
        self.host_memory.set(0.62 + 0.1 * self.rng.random())
        self.spool_pending.set(0)
        for j in self.jobs:
            remaining = j.frames_total - j.frames_done
            self.job["progress_ratio"].labels(j.id).set(j.frames_done / j.frames_total)
            self.job["frames_done"].labels(j.id).set(j.frames_done)
            self.job["eta_seconds"].labels(j.id).set(remaining * SCENES[j.scene][2])
            self.job["last_frame_seconds"].labels(j.id).set(j.last_frame_seconds)
            self.job["attempts"].labels(j.id).set(j.attempts)
            self.job["last_progress_timestamp_seconds"].labels(j.id).set(j.last_progress)
            self.job["cpu_ratio"].labels(j.id).set(7.5 * busy)
            self.job["rss_bytes"].labels(j.id).set(j.peaks.get("rss", 0.0) * 0.9)
            self.job["vram_bytes"].labels(j.id).set(j.peaks.get("vram", 0.0) * 0.9)
            for kind, v in j.peaks.items():
                self.job_peak.labels(j.id, kind).set(v)
            self.frames_completed.labels(j.id).set(j.frames_done)


class SyntheticFarm:
    """Several SyntheticNodes sharing one clock (wall time unless `clock` is given)."""

    def __init__(self, hosts: list[str], clock: Callable[[], float] = time.time, seed: int = 0) -> None:
        self.clock = clock
        start = clock()
        self.nodes = {h: SyntheticNode(h, i, start, seed=seed) for i, h in enumerate(hosts)}
        self._lock = threading.Lock()

    def exposition(self, host: str, role: str) -> bytes:
        """The Prometheus text of one node's agent ("agent") or healer ("healer")."""
        node = self.nodes[host]
        with self._lock:
            node.advance(self.clock())
            return generate_latest(node.agent if role == "agent" else node.healer)

    def history_openmetrics(self, hours: float = 26.0, step: float = 300.0, end_before: float = 3600.0) -> str:
        """OpenMetrics text of the agents' frame counters and histograms over past `hours`, ending
        `end_before` seconds ago, one sample per `step`: input for `promtool tsdb
        create-blocks-from openmetrics`. Labels are those a scrape adds (instance, job)."""
        now = self.clock()
        t0, t1 = now - hours * 3600, now - end_before
        lines_by_family: dict[str, list[str]] = {}
        types = {"renderwatch_frames_rendered": "counter", "renderwatch_frame_render_seconds": "histogram"}
        past = {h: SyntheticNode(h, i, t0, frames_per_second=1 / 60, seed=1) for i, h in enumerate(self.nodes)}
        t = t0
        while t <= t1:
            for host, node in past.items():
                node.advance(t)
                for metric in node.agent.collect():
                    if metric.name not in types:
                        continue
                    out = lines_by_family.setdefault(metric.name, [])
                    for s in metric.samples:
                        if s.name.endswith("_created"):
                            continue
                        labels = {**s.labels, "instance": host, "job": "renderwatch-agent"}
                        body = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
                        out.append(f"{s.name}{{{body}}} {s.value} {t:.3f}")
            t += step
        text = []
        for name, lines in lines_by_family.items():
            text.append(f"# TYPE {name} {types[name]}")
            text.extend(lines)
        text.append("# EOF")
        return "\n".join(text) + "\n"


def create_app(farm: SyntheticFarm, host: str, role: str) -> web.Application:
    """An aiohttp app serving one node's agent or healer `/metrics`."""

    async def metrics(_request: web.Request) -> web.Response:
        body = farm.exposition(host, role)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


@contextlib.contextmanager
def serve_farm(farm: SyntheticFarm) -> Iterator[dict[str, list[str]]]:
    """Serve every node's agent and healer on its own host address (127.0.0.x), free ports, in a
    background thread; yield {"renderwatch-agent": [host:port...], "renderwatch-healer": [...]}."""
    loop = asyncio.new_event_loop()
    runners: list[web.AppRunner] = []
    targets: dict[str, list[str]] = {"renderwatch-agent": [], "renderwatch-healer": []}

    async def start() -> None:
        for host in farm.nodes:
            for role in ("agent", "healer"):
                runner = web.AppRunner(create_app(farm, host, role), access_log=None)
                await runner.setup()
                site = web.TCPSite(runner, host, 0)
                await site.start()
                runners.append(runner)
                port = runner.addresses[0][1]
                targets[f"renderwatch-{role}"].append(f"{host}:{port}")

    thread = threading.Thread(target=loop.run_forever, name="synthetic-farm", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield targets
    finally:
        async def stop() -> None:
            for r in runners:
                await r.cleanup()
        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
