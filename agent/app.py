"""The agent service: create_app(config) -> aiohttp Application, and ways to run it.

Routes: POST /api/v1/events, GET /metrics (Prometheus text, OpenMetrics when the Accept header
asks), GET /healthz, GET /api/v1/jobs, GET /openapi.json (agent.openapi; no token, like /healthz).
Background loops (each an app.cleanup_ctx): the spool's reader lock (one agent per spool: a second
one fails to start with SpoolBusy), the core (journal replay at start, tracer flush at stop), the
spool scanner, the samplers, and expiry with journal compaction.

Usage::

    app = create_app(load_config())                     # then web.run_app / AppRunner
    handle = run_in_thread(cfg); handle.url; handle.stop()   # in-process, for the demo and tests
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from agent.config import AgentConfig
from agent.gpu import GpuSampler
from agent.ingest import Ingestor, check_token, handle_events
from agent.journal import ExportMark, Journal
from agent.logs import FrameSpans, LogCollector, LogIngestor, LogStats, handle_log
from agent.logstore import LogStore
from agent.metrics import IngestCollector, IngestStats, StateCollector
from agent.openapi import SPEC
from agent.page import add_page_routes, check_read, unauthorized
from agent.process import ProcessSampler
from agent.spool import SpoolScanner, claim_spool
from agent.state import State
from agent.traces import RenderTracer, farm_attributes, farm_parent, job_ids
from blender_hooks.spoolfile import read_evicted
from kernel.openapi import add_openapi_route
from kernel.version import __version__

log = logging.getLogger("renderwatch.agent")

CATCHUP_SECONDS = 5.0       # events older than this are catch-up: the samplers know nothing of that time
DEAD_PROCESS_STALE_SECONDS = 60.0   # a running job whose Blender is gone this long is stale
EXPIRY_INTERVAL = 5.0
JOBS_LIMIT, JOBS_LIMIT_MAX = 100, 1000
LOG_SCAN_INTERVAL = 0.25    # the log spool stream is read this often
LOG_PRUNE_INTERVAL = 60.0    # /api/v1/jobs: a bounded answer however many jobs a node runs


@dataclass
class Agent:
    """Everything one running agent holds (one per app; no module-level state)."""

    config: AgentConfig
    state: State
    stats: IngestStats
    journal: Journal
    mark: ExportMark
    registry: CollectorRegistry
    procs: ProcessSampler
    gpus: GpuSampler
    clock: Callable[[], float]
    ingestor: Ingestor | None = None
    tracer: RenderTracer | None = None
    started: float = 0.0
    hostname: str = ""
    metrics_handler: Any = None       # prometheus_client's aiohttp handler over `registry`
    logstore: LogStore | None = None  # Blender's lines per job (agent.logs)
    logspans: FrameSpans | None = None
    logstats: LogStats | None = None
    shipper: Any = None               # agent.logexport.LogShipper, when log export is on

    def span_counts(self) -> tuple[int, int]:
        """(spans exported, span export batches failed); (0, 0) while traces are off."""
        t = self.tracer
        return (t.exporter.exported, t.exporter.failures) if t is not None else (0, 0)


AGENT = web.AppKey("agent", Agent)


def create_app(config: AgentConfig, *, nvml: Any = None, proc: Any = None, exporter: Any = None,
               log_exporter: Any = None, clock: Callable[[], float] = time.time) -> web.Application:
    """The agent as an aiohttp app. Seams: nvml= and proc= for the samplers, exporter= for spans,
    log_exporter= for log records."""
    state, stats = State(), IngestStats()
    agent = Agent(config=config, state=state, stats=stats, journal=Journal(config.data_dir),
                  mark=ExportMark(config.data_dir), registry=CollectorRegistry(auto_describe=False),
                  procs=ProcessSampler(proc) if proc is not None else ProcessSampler(),
                  gpus=GpuSampler(nvml), clock=clock, hostname=socket.gethostname())
    agent.registry.register(StateCollector(state, config.job_grace_seconds, clock))
    agent.registry.register(IngestCollector(stats, journal=agent.journal, spans=agent.span_counts,
                                            spool_evicted=lambda: read_evicted(config.spool_dir)))
    agent.registry.register(agent.procs)
    agent.registry.register(agent.gpus)
    agent.logstore = LogStore(config.logs_dir, job_max_bytes=config.log_job_max_bytes, max_bytes=config.log_max_bytes,
                              retention_days=config.log_retention_days, clock=clock)
    agent.logspans = FrameSpans()
    agent.logstats = LogStats(spool_evicted=lambda: read_evicted(config.log_spool_dir))
    agent.registry.register(LogCollector(agent.logstore, agent.logstats, _ShipperView(agent)))
    agent.metrics_handler = make_aiohttp_handler(agent.registry)
    app = web.Application(client_max_size=config.max_body_bytes)
    app[AGENT] = agent
    app.cleanup_ctx.extend([_spool_claim, _core(exporter, log_exporter), _loop(_spool_loop), _loop(_log_spool_loop),
                            _loop(_sample_loop), _loop(_expiry_loop), _loop(_log_loop)])
    app.router.add_post("/api/v1/events", _events)
    app.router.add_get("/api/v1/jobs", _jobs)
    app.router.add_get("/api/v1/jobs/{job}/log", _log)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    add_openapi_route(app, SPEC)
    add_page_routes(app, AGENT)
    return app


async def _spool_claim(app: web.Application) -> AsyncIterator[None]:
    """Hold the spool's reader lock for the agent's life (before anything reads it)."""
    cfg = app[AGENT].config
    claim = claim_spool(cfg.spool_dir, listen=cfg.listen, data_dir=cfg.data_dir)
    try:
        yield
    finally:
        claim.release()


def _core(exporter: Any, log_exporter: Any) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        a = app[AGENT]
        a.started = a.clock()
        if a.config.traces_enabled:
            a.tracer = RenderTracer(a.config, a.mark, exporter)
        _start_logs(a, log_exporter)
        mark = a.mark.value
        tracer = a.tracer

        def on_effect(effect: Any, pos: int) -> None:
            if tracer is not None:      # spans exported before the restart are only accounted for
                tracer.emit(effect, pos, export=pos > mark)

        n = a.journal.replay(a.state, on_effect)
        if n:
            log.info("journal: replayed %d events, %d jobs", n, len(a.state.jobs))
        a.ingestor = Ingestor(a.state, a.journal, a.stats, a.tracer, frame_hook=_frame_hook(a))
        log.info("agent %s listening on %s; data in %s; spans to %s", __version__, a.config.listen,
                 a.config.data_dir, a.config.otlp_endpoint or a.config.traces_dir)
        try:
            yield
        finally:
            if a.tracer is not None:
                await asyncio.get_running_loop().run_in_executor(None, a.tracer.shutdown)
            if a.shipper is not None:
                await asyncio.get_running_loop().run_in_executor(None, a.shipper.shutdown)
            a.journal.close()
    return ctx


def _loop(body: Callable[[Agent], Any]) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(body(app[AGENT]))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return ctx


async def _spool_loop(a: Agent) -> None:
    assert a.ingestor is not None
    await SpoolScanner(a.config.spool_dir, a.ingestor).run(1.0)


# -- Blender's lines (agent.logs, agent.logstore, agent.logexport) ----------------------------------
class _ShipperView:
    """The shipper's counts for /metrics (the shipper starts with the core, after registration)."""

    def __init__(self, a: Agent):
        self.a = a

    def counts(self) -> dict[str, int]:
        return self.a.shipper.counts() if self.a.shipper is not None else {}


def _start_logs(a: Agent, log_exporter: Any) -> None:
    """Trace ids for the records, frame spans for their span ids, and the OTLP shipper."""
    spans, store = a.logspans, a.logstore
    assert spans is not None and store is not None

    def trace_of(jid: str) -> int:
        job = a.state.jobs.get(jid)
        parent = farm_parent(job) if job is not None else None
        return parent.trace_id if parent is not None else job_ids(jid)[0]

    def job_info(jid: str) -> dict[str, Any]:
        job = a.state.jobs.get(jid)
        return farm_attributes(job) if job is not None else {}

    spans.trace = trace_of
    if a.config.logs_export_enabled:
        from agent.logexport import LogShipper

        a.shipper = LogShipper(a.config, spans, exporter=log_exporter, job_info=job_info, clock=a.clock)
    shipper = a.shipper

    def on_stored(rec: dict[str, Any]) -> None:
        # the page's per-frame warning and error counts (counted from the agent's start)
        job = a.state.jobs.get(rec["job"])
        if job is not None and rec.get("frame") is not None:
            job.frames.note(rec["frame"], rec["level"])
        if shipper is not None:
            shipper.add(rec)
    store.on_stored = on_stored

    def on_frame_span(job: str, frame: int, start: float, end: float, sid: int) -> None:
        spans.note(job, frame, start, end, sid)
        if shipper is not None:
            shipper.frame_span(job, frame, start, end, sid)

    if a.tracer is not None:
        a.tracer.on_frame_span = on_frame_span


async def _log_spool_loop(a: Agent) -> None:
    assert a.logstore is not None and a.logspans is not None
    ingestor = LogIngestor(a.logstore, a.logspans, a.logstats)
    # Every quarter second: the records' lag from Blender's print to the API is a goal (<= 1 s at p99)
    await SpoolScanner(a.config.log_spool_dir, ingestor).run(LOG_SCAN_INTERVAL)


async def _log_loop(a: Agent) -> None:
    """The shipper's held records released (their frame never got a span), the store pruned."""
    last_prune = 0.0
    while True:
        await asyncio.sleep(1.0)
        try:
            now = a.clock()
            if a.shipper is not None:
                for jid in list(a.shipper.pending):
                    job = a.state.jobs.get(jid)
                    if job is None or not job.active:
                        a.shipper.job_ended(jid)
                a.shipper.tick(now)
            if now - last_prune >= LOG_PRUNE_INTERVAL and a.logstore is not None:
                last_prune = now
                active = {j.id for j in a.state.jobs.values() if j.active}
                await asyncio.to_thread(a.logstore.prune, active)
        except Exception:
            log.exception("log upkeep failed")


async def _log(request: web.Request) -> web.StreamResponse:
    a = request.app[AGENT]
    if not check_read(request, a.config.token):
        return unauthorized()
    assert a.logstore is not None and a.logspans is not None
    return await handle_log(request, a.logstore, a.logspans, lambda jid: jid in a.state.jobs)


def _frame_hook(a: Agent) -> Callable[[dict], bool]:
    """Reset the per-frame peaks at frame_start; add the sampled peaks to a live frame_end."""
    def hook(ev: dict) -> bool:
        if a.clock() - ev["ts"] > CATCHUP_SECONDS:
            return False
        jid = ev["job"]
        if ev["type"] == "frame_start":
            a.procs.frame_started(jid)
            a.gpus.frame_started(jid)
            return False
        changed = False
        if not ev.get("max_rss_bytes"):
            rss = a.procs.frame_peak(jid)
            if rss:
                ev["max_rss_bytes"] = int(rss)
                changed = True
        vram = a.gpus.frame_peak(jid)
        if vram and not ev.get("peak_vram_bytes"):
            ev["peak_vram_bytes"] = int(vram)
            changed = True
        return changed
    return hook


def sample_once(a: Agent) -> None:
    """One tick of the samplers, plus the stale-job check that depends on them."""
    now = a.clock()
    running = {j.id: j for j in a.state.jobs.values() if j.active}
    a.procs.sync({jid: j.pid for jid, j in running.items() if j.host == a.hostname and j.pid > 0})
    a.procs.sample()
    a.gpus.sample(a.procs.pid_map())
    for jid, j in running.items():
        for kind, peak in (("rss", a.procs.job_peak(jid)), ("vram", a.gpus.job_vram.get(jid))):
            if peak and peak > j.peaks.get(kind, 0):
                j.peaks[kind] = peak
        dead = a.procs.alive(jid) is False and now - j.last_event_ts > DEAD_PROCESS_STALE_SECONDS
        if dead or now - j.last_event_ts > a.config.stale_after_seconds:
            mark_stale(a, jid, now)


def record(a: Agent, ev: dict) -> None:
    """Journal and apply an internal record (`_stale`, `_expire`), so a restart replays the decision."""
    pos = a.journal.append([json.dumps(ev, separators=(",", ":")).encode()])
    effect = a.state.apply(ev)
    if effect is not None and a.tracer is not None:
        a.tracer.emit(effect, pos)


def mark_stale(a: Agent, job_id: str, now: float) -> None:
    record(a, {"type": "_stale", "job": job_id, "ts": now})
    log.warning("job %s stopped reporting: marked stale", job_id)


async def _sample_loop(a: Agent) -> None:
    while True:
        try:
            sample_once(a)
        except Exception:                 # a sampler bug must not stop the agent
            log.exception("sampling failed")
        await asyncio.sleep(a.config.sample_interval_seconds)


def expire_once(a: Agent) -> list[str]:
    """Forget the jobs whose grace period is over (emitting any root span still due), then compact."""
    now = a.clock()
    gone = a.state.expired(now, a.config.job_grace_seconds)
    for jid in gone:
        record(a, {"type": "_expire", "job": jid, "ts": now})
    dropped = 0
    if gone or a.journal.waiting:        # reading the journal costs: only when there is work
        a.gpus.forget(set(a.state.jobs))
        dropped = a.journal.compact(a.state, a.mark.value, a.config.journal_max_bytes)
    if gone or dropped:
        log.info("expired %d job(s); journal compacted (%d records dropped)", len(gone), dropped)
    return gone


async def _expiry_loop(a: Agent) -> None:
    while True:
        await asyncio.sleep(min(EXPIRY_INTERVAL, max(0.5, a.config.job_grace_seconds / 4)))
        try:
            expire_once(a)
        except Exception:
            log.exception("expiry failed")


def _unauthorized() -> web.Response:
    return web.json_response({"error": "unauthorized", "detail": "send 'Authorization: Bearer <RENDERWATCH_TOKEN>'"},
                             status=401)


async def _events(request: web.Request) -> web.Response:
    a = request.app[AGENT]
    assert a.ingestor is not None
    return await handle_events(request, a.ingestor, a.config.max_body_bytes, a.config.token)


async def _metrics(request: web.Request) -> web.Response:
    a = request.app[AGENT]
    if not check_token(request, a.config.token):
        return _unauthorized()
    return await a.metrics_handler(request)


async def _healthz(request: web.Request) -> web.Response:
    a = request.app[AGENT]
    return web.json_response({"status": "ok", "version": __version__, "uptime_seconds": a.clock() - a.started,
                              "jobs": len(a.state.jobs)})


async def _jobs(request: web.Request) -> web.Response:
    a = request.app[AGENT]
    if not check_read(request, a.config.token):
        return unauthorized()
    try:
        limit = int(request.query.get("limit", JOBS_LIMIT))
        if not 1 <= limit <= JOBS_LIMIT_MAX:
            raise ValueError
    except ValueError:
        return web.json_response({"error": "bad_request", "detail": f"limit must be 1..{JOBS_LIMIT_MAX}"}, status=400)
    visible = a.state.visible(a.clock(), a.config.job_grace_seconds)
    # Running jobs first (newest first), then the most recently ended: what a person looks for.
    shown = heapq.nsmallest(limit, visible, key=lambda j: (j.ended_at is not None, -(j.ended_at or j.started_at)))
    jobs = []
    for j in shown:
        d = j.to_dict()
        t = a.procs.jobs.get(j.id)
        d["cpu_ratio"] = t.cpu_ratio if t and t.alive else None
        d["rss_bytes"] = t.rss if t and t.alive else None
        d["vram_bytes"] = a.gpus.job_vram.get(j.id)
        # the latest classified end that was not ok (the healer's attempt_end): the page's node view
        err = next((e for _, e in sorted(j.attempt_log.items(), reverse=True) if e["error_type"] not in (None, "ok")),
                   None)
        d["last_error"] = {k: err[k] for k in ("attempt", "error_type", "summary")} if err else None
        jobs.append(d)
    gpus = [{"gpu": g.index, "uuid": g.uuid, "name": g.name, "ok": g.ok, "utilization_ratio": g.utilization,
             "memory_used_bytes": g.memory_used, "memory_total_bytes": g.memory_total,
             "temperature_celsius": g.temperature, "power_watts": g.power, "throttle": g.throttle,
             "paused": a.state.gpu_pauses.get(g.uuid)}
            for g in a.gpus.gpus]
    exported, failed = a.span_counts()
    health = {"version": __version__, "uptime_seconds": a.clock() - a.started,
              "spool_pending_bytes": a.stats.spool_pending_bytes, "spool_segments": a.stats.spool_segments,
              "spans_exported": exported, "span_export_failures": failed, "journal_errors": a.journal.errors,
              "events_rejected": sum(a.stats.rejected.values())}
    return web.json_response({"host": a.hostname, "jobs": jobs, "jobs_total": len(visible), "gpus": gpus,
                              "gpu_available": a.gpus.available, "agent": health})


# -- running it -------------------------------------------------------------------------------------

async def start_site(app: web.Application, cfg: AgentConfig) -> tuple[web.AppRunner, str]:
    """Start serving; returns the runner and the base URL (with the real port when port was 0)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else cfg.port
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    return runner, f"http://{host}:{port}"


async def serve(cfg: AgentConfig, stop: asyncio.Event | None = None, **seams: Any) -> None:
    """Run the agent until `stop` is set (or SIGINT/SIGTERM when called from the CLI)."""
    stop = stop or asyncio.Event()
    runner, url = await start_site(create_app(cfg, **seams), cfg)
    log.info("renderwatch agent ready at %s", url)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


@dataclass
class AgentHandle:
    """An agent running in a background thread: `.url`, `.app`, `.stop()`."""

    url: str
    app: web.Application
    thread: threading.Thread
    _loop: asyncio.AbstractEventLoop
    _stop: asyncio.Event

    def stop(self, timeout: float = 10.0) -> None:
        if self.thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self.thread.join(timeout)


def run_in_thread(cfg: AgentConfig, **seams: Any) -> AgentHandle:
    """Start an agent in a daemon thread with its own event loop; returns once it serves."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    def main() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)

        async def run() -> None:
            stop = asyncio.Event()
            app = create_app(cfg, **seams)
            try:
                runner, url = await start_site(app, cfg)
            except BaseException as e:
                box["error"] = e
                ready.set()
                return
            box.update(url=url, app=app, loop=loop, stop=stop)
            ready.set()
            try:
                await stop.wait()
            finally:
                await runner.cleanup()

        try:
            loop.run_until_complete(run())
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="renderwatch-agent", daemon=True)
    thread.start()
    ready.wait()
    if "error" in box:
        raise box["error"]
    return AgentHandle(box["url"], box["app"], thread, box["loop"], box["stop"])
