"""The healer as a per-host service: create_app(config) -> aiohttp Application.

Routes::

    POST /api/v1/jobs                {scene, frames?, output?, blender?, args?, strict?, stall_timeout?, job?}
    GET  /api/v1/jobs                every job this service knows
    GET  /api/v1/jobs/{id}           one job, with its report (--report shape)
    POST /api/v1/jobs/{id}/cancel    stop its Blender, mark it cancelled
    POST /api/v1/jobs/{id}/restart   run a finished/failed/cancelled job again (resumes from its ledger)
    GET  /metrics                    Prometheus text (probe states, restarts, frames)
    GET  /healthz
    GET  /openapi.json               the OpenAPI document of these routes (healer.openapi)
    POST /api/v1/alertmanager        Alertmanager webhook (when RENDERWATCH_ALERTMANAGER_TOKEN is set):
                                     RenderStalled -> stop that job's Blender as stalled; the policy restarts it

At most `concurrency` renders run at once; the rest queue. A bearer token is required for every route but
/healthz and /openapi.json (healer.service.auth): the operator's RENDERWATCH_HEALER_TOKEN, or one that
`renderwatch healer` makes for its own account; the service refuses to listen off loopback without the
operator's (it starts Blender with caller-chosen scripts: only the operator may submit). On
start, jobs this service had submitted and that were still running when it died are resumed, and
the ones that had ended are listed again from their ledgers (show, restart).

Usage::

    app = create_app(load_config())      # web.run_app(app, host=..., port=...)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from healer.config import ConfigError, HealerConfig, check_range
from healer.diagnosis.catalog import EXIT_CANCELLED, EXIT_OK, exit_status
from healer.service.alerts import ENV_ALERTMANAGER_TOKEN, add_alertmanager_routes
from healer.service.auth import auth_middleware
from healer.service.gpus import GpuPlacer
from healer.service.metrics import HealerMetrics
from healer.service.openapi import JOB_ID_PATTERN, spec
from healer.supervising.frames import MAX_FRAME, MAX_FRAMES_PER_JOB, MIN_FRAME, FrameSpecError, parse_frames
from healer.supervising.launch import check_user_args
from healer.supervising.ledger import Ledger, jobs_dir
from healer.supervising.report import build_report
from healer.supervising.supervisor import RenderRequest, RequestError, Supervisor
from kernel.listen import is_loopback
from kernel.listen import parse_listen as _parse_listen
from kernel.openapi import add_openapi_route
from kernel.paths import DEFAULT_HEALER_LISTEN

log = logging.getLogger("renderwatch.healer")

STATES = ("queued", "running", "complete", "failed", "cancelled")
MAX_PATH = 4096          # scene, output: PATH_MAX
MAX_TEXT = 4096          # one Blender argument, a frame spec
MAX_ARGS = 256           # Blender arguments in one submission


def _text(name: str, value: str, limit: int) -> str:
    """A string field as the OS and the ledger can take it: bounded, no NUL, valid Unicode (no lone
    surrogates: JSON's "\\ud800" is a str that no file name or UTF-8 log line can hold)."""
    if len(value) > limit:
        raise ValueError(f"{name}: longer than {limit} characters")
    if "\x00" in value:
        raise ValueError(f"{name}: contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name}: not valid Unicode (a lone surrogate)") from None
    return value


async def read_json(request: web.Request) -> Any:
    """The request's body as JSON, or ValueError saying why not (never a 500): not UTF-8, not JSON, or
    nested too deeply. Python's json takes NaN and Infinity: each field's check refuses them, by name."""
    try:
        raw = await request.read()         # bounded by the app's client_max_size
    except web.HTTPRequestEntityTooLarge:
        raise web.HTTPRequestEntityTooLarge(max_size=request.client_max_size, actual_size=request.content_length or 0,
                                            text=json.dumps({"error": f"body: over {request.client_max_size} bytes"}),
                                            content_type="application/json") from None
    try:
        return json.loads(raw)
    except UnicodeDecodeError as e:
        raise ValueError(f"body: not UTF-8 (byte {e.start})") from None
    except RecursionError:
        raise ValueError("body: JSON nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"body: not JSON: {str(e)[:200]}") from None


@dataclass
class Job:
    id: str
    request: RenderRequest
    state: str = "queued"
    supervisor: Supervisor | None = None
    task: asyncio.Task | None = None
    exit_code: int | None = None
    error: str | None = None
    submitted_at: float = field(default_factory=time.time)
    gpu: str | None = None            # the GPU (UUID) the placer gave it, when there are GPUs
    ledger: Ledger | None = None      # a job an earlier run of this service finished: its ledger on disk

    @property
    def current_ledger(self) -> Ledger | None:
        return self.supervisor.ledger if self.supervisor else self.ledger

    def view(self) -> dict:
        sup = self.supervisor.status() if self.supervisor else ledger_status(self.ledger) if self.ledger else {}
        return {"id": self.id, "state": self.state, "scene": self.request.scene, "exit_code": self.exit_code,
                "submitted_at": self.submitted_at, "error": self.error or sup.get("error"), "gpu": self.gpu,
                **{k: sup.get(k) for k in ("frames_requested", "frames_completed", "restarts", "pid",
                                           "frame_in_flight")}}


class JobManager:
    """The service's jobs; runs each in a task under a concurrency semaphore."""

    def __init__(self, cfg: HealerConfig, metrics: HealerMetrics, incidents: Any = None, nvml: Any = None):
        self.cfg = cfg
        self.metrics = metrics
        self.incidents = incidents
        self.placer = GpuPlacer(nvml)
        self.agent: Any = None            # AgentEvents for the host's own events (a GPU paused), made when needed
        self.policy = cfg.policy()
        self.jobs: dict[str, Job] = {}
        self.slots = asyncio.Semaphore(cfg.concurrency)

    def request_from(self, body: Any) -> RenderRequest:
        """Validate a submission into a RenderRequest; ValueError names the field that is wrong."""
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        unknown = set(body) - {"scene", "frames", "output", "blender", "args", "strict", "stall_timeout", "job"}
        if unknown:
            names = ", ".join(sorted(k[:64].encode("utf-8", "backslashreplace").decode() for k in unknown))
            raise ValueError(f"unknown field(s): {names[:300]}")
        scene = body.get("scene")
        if not isinstance(scene, str) or not scene:
            raise ValueError("scene: a path to a .blend is required")
        scene = _text("scene", scene, MAX_PATH)
        if not os.path.isabs(scene):
            raise ValueError("scene: must be an absolute path (the service's working directory is not yours)")
        frames = body.get("frames")
        try:
            if isinstance(frames, str):
                frames = tuple(parse_frames(_text("frames", frames, MAX_TEXT)))
            elif isinstance(frames, list) and all(type(f) is int and MIN_FRAME <= f <= MAX_FRAME for f in frames):
                if len(frames) > MAX_FRAMES_PER_JOB:
                    raise ValueError(f"frames: more than {MAX_FRAMES_PER_JOB} frames in one job")
                frames = tuple(sorted(set(frames))) or None
            elif frames is not None:
                raise ValueError(f"frames: a spec like '1-240' or a list of integers {MIN_FRAME}..{MAX_FRAME}")
        except FrameSpecError as e:
            raise ValueError(f"frames: {e}") from None
        allowed = set(self.cfg.allowed_blenders) | {self.cfg.blender}
        blender = body.get("blender") or self.cfg.blender
        if not isinstance(blender, str) or blender not in allowed:
            shown = repr(blender)[:100] if isinstance(blender, str) else f"a JSON {type(blender).__name__}"
            raise ValueError(f"blender: {shown} is not allowed here; allowed: {', '.join(sorted(allowed))}")
        args = body.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError("args: a list of strings")
        if len(args) > MAX_ARGS:
            raise ValueError(f"args: more than {MAX_ARGS} arguments")
        args = [_text(f"args[{i}]", a, MAX_TEXT) for i, a in enumerate(args)]
        try:
            check_user_args(args)        # -o, -f, -a, -s, -e, -j: the supervisor owns them (frames, output)
        except ValueError as e:
            raise ValueError(f"args: {e}") from None
        output = body.get("output")
        if output is not None and not isinstance(output, str):
            raise ValueError("output: a string pattern")
        if output is not None:
            output = _text("output", output, MAX_PATH)
        stall = body.get("stall_timeout", self.cfg.stall_timeout)
        if stall is not None:
            if isinstance(stall, bool) or not isinstance(stall, int | float):
                raise ValueError("stall_timeout: a number of seconds")
            try:
                stall = check_range("stall_timeout", stall)
            except ValueError as e:
                raise ValueError(f"stall_timeout: {e}") from None
        job = body.get("job")
        if job is not None and not (isinstance(job, str) and re.fullmatch(JOB_ID_PATTERN, job)):
            raise ValueError("job: letters, digits, '.', '_' and '-' (at most 128), starting with a letter or digit")
        strict = body.get("strict", False)
        if not isinstance(strict, bool):
            raise ValueError("strict: true or false")
        return RenderRequest(scene=scene, frames=frames, output=output, blender=blender, blender_args=tuple(args),
                             stall_timeout=stall, strict=strict, job=job)

    def submit(self, req: RenderRequest) -> Job:
        from healer.supervising.preflight import job_id_for

        job_id = req.job or job_id_for(req.scene, req.frames or (), req.output, req.blender_args)
        existing = self.jobs.get(job_id)
        if existing and existing.state in ("queued", "running"):
            raise RequestError(f"job {job_id} is already {existing.state}")
        job = Job(id=job_id, request=dataclasses.replace(req, job=job_id, origin="service"))
        self.jobs[job_id] = job
        self._start(job)
        return job

    def _start(self, job: Job) -> None:
        job.state, job.exit_code, job.error, job.gpu, job.ledger = "queued", None, None, None, None
        job.supervisor = Supervisor(job.request, policy=self.policy, incidents=self.incidents, metrics=self.metrics,
                                    env=self.cfg.env,
                                    kill_grace_s=self.cfg.kill_grace_s, probe_interval_s=self.cfg.probe_interval_s)
        job.task = asyncio.create_task(self._run(job))
        self._count()

    async def _run(self, job: Job) -> None:
        sup = job.supervisor
        assert sup is not None
        try:
            async with self.slots:
                if sup.cancelled:
                    job.state, job.exit_code = "cancelled", 130
                    return
                gpu = None
                if self.placer.wants_placement(self.cfg.env):
                    gpu = await self.placer.acquire(job.id)     # waits while every GPU is busy or paused
                    if sup.cancelled:                           # cancelled while it waited
                        self.placer.release(job.id)
                        job.state, job.exit_code = "cancelled", 130
                        return
                    sup.place_on(gpu.index)
                job.state = "running"
                job.gpu = gpu.uuid if gpu else None
                self._count()
                try:
                    result = await sup.run()
                finally:
                    self.placer.release(job.id)
            job.state = result.status
            job.exit_code = result.exit_code
            if result.exit_code == 0:
                sup.delivered()      # answered as complete: submitting it again renders it again
        except RequestError as e:
            job.state, job.exit_code, job.error = "failed", 2, str(e)
        except asyncio.CancelledError:
            self.placer.release(job.id)
            job.state, job.exit_code = "cancelled", 130
            if not sup.cancelled:
                raise               # the service is shutting down (a user's cancel ends here)
        except Exception as e:   # one broken job must not take the service down
            log.exception("job %s crashed the supervisor", job.id)
            job.state, job.exit_code, job.error = "failed", 1, f"{type(e).__name__}: {e}"
        finally:
            self._count()

    def cancel(self, job: Job) -> None:
        if job.supervisor:
            job.supervisor.cancel()
        if job.state == "queued" and job.task and not job.task.done():
            job.task.cancel()           # waiting for a slot or a GPU: nothing to stop, end the wait

    # Alertmanager actions (healer.alerts.AlertActions)
    def restart_job(self, job_id: str) -> str | bool:
        """RenderStalled fired for this job: stop its running Blender as stalled (the policy restarts it).

        Nothing else: an alert never revives a job that ended. A cancel is final unless a person
        restarts the job (POST .../restart), and a failed job failed by the policy's own verdict; the
        alert about either is late (the metrics it fires on lag the job's end by the scrape and the
        rule's `for:`). False: no such job here."""
        job = self.jobs.get(job_id)
        if job is None:
            return False            # not a job of this healer (the receiver answers "no_target")
        sup = job.supervisor
        if job.state == "running" and sup is not None and not sup.cancelled:
            return "kicked" if sup.kick("Alertmanager: RenderStalled") else "nothing"
        log.info("alertmanager: RenderStalled for job %s, which is %s: left as it is", job_id,
                 "being cancelled" if sup is not None and sup.cancelled else job.state)
        return "nothing"

    def pause_gpu(self, uuid: str) -> str | bool:
        if not self.placer.pause(uuid):
            return False                                # no such GPU here, nothing held
        self._tell_agent(uuid, True)
        return "paused"

    def resume_gpu(self, uuid: str) -> str:
        if not self.placer.resume(uuid):
            return "was not paused"
        self._tell_agent(uuid, False)
        return "resumed"

    def _tell_agent(self, uuid: str, paused: bool) -> None:
        """The node's agent shows the pause on its page (an event on the healer's own spool session)."""
        from blender_hooks.events import HOST_JOB
        from healer.supervising.telemetry import AgentEvents

        if self.agent is None:
            self.agent = AgentEvents(self.cfg.env)
        self.agent.send("gpu_pause", job=HOST_JOB, uuid=uuid, paused=paused,
                        reason="Alertmanager: GPUOverheating" if paused else None)

    def restart(self, job: Job) -> None:
        if job.state in ("queued", "running"):
            raise RequestError(f"job {job.id} is {job.state}: cancel it first")
        self._start(job)

    def resume_interrupted(self) -> list[str]:
        """The jobs this service submitted, from their ledgers: those still running when it died start
        again; those that ended are listed as they ended (show, restart), as before the restart."""
        resumed = []
        root = jobs_dir(self.cfg.env)
        for path in sorted(root.glob("*/ledger.json")) if root.is_dir() else []:
            try:
                led = Ledger.load(path)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            spec = led.spec or {}
            if spec.get("origin") != "service" or led.job in self.jobs:
                continue
            req = RenderRequest(scene=led.scene, frames=tuple(led.frames_requested), output=spec.get("output"),
                                blender=spec.get("blender") or self.cfg.blender,
                                blender_args=tuple(spec.get("blender_args") or ()), strict=bool(spec.get("strict")),
                                stall_timeout=spec.get("stall_timeout"), job=led.job)
            if led.status in ("complete", "failed", "cancelled"):
                self.jobs[led.job] = Job(id=led.job, request=dataclasses.replace(req, origin="service"),
                                         state=led.status, exit_code=ledger_exit_code(led),
                                         submitted_at=led.created_at, ledger=led)
                continue
            try:
                self.submit(req)
                resumed.append(led.job)
            except RequestError:
                pass
        self._count()
        return resumed

    async def close(self) -> None:
        if self.agent is not None:
            await asyncio.to_thread(self.agent.close)
        for job in self.jobs.values():
            self.cancel(job)
        tasks = [j.task for j in self.jobs.values() if j.task and not j.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.cfg.kill_grace_s + 5)

    def _count(self) -> None:
        for s in STATES:
            self.metrics.jobs.labels(s).set(sum(1 for j in self.jobs.values() if j.state == s))


def ledger_status(led: Ledger) -> dict:
    """What Supervisor.status() says of a job, from its ledger alone (no supervisor in this process)."""
    return {"job": led.job, "status": led.status, "scene": led.scene, "frames_requested": len(led.frames_requested),
            "frames_completed": len(led.completed()), "restarts": led.restarts, "pid": None,
            "frame_in_flight": None, "error": led.error}


def ledger_exit_code(led: Ledger) -> int | None:
    """The exit status the job ended with, as its ending gave it (healer.supervising.endings)."""
    if led.status == "complete":
        return EXIT_OK
    if led.status == "cancelled":
        return EXIT_CANCELLED
    if led.status == "failed":
        err = led.error or {}
        code = err.get("exit_code")       # the status the ending gave (a --strict give-up: EXIT_STRICT)
        return code if isinstance(code, int) and not isinstance(code, bool) else exit_status(err.get("type") or "")
    return None


# ---------------------------------------------------------------------- app wiring
CONFIG = web.AppKey("config", HealerConfig)
MANAGER = web.AppKey("manager", JobManager)
METRICS = web.AppKey("metrics", HealerMetrics)


def parse_listen(cfg: HealerConfig) -> tuple[str, int]:
    try:
        host, port = _parse_listen(cfg.listen, "listen", DEFAULT_HEALER_LISTEN)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not is_loopback(host) and not cfg.token:
        raise ConfigError(f"listen = {cfg.listen!r} is not loopback: set RENDERWATCH_HEALER_TOKEN (the API starts "
                          "Blender with caller-chosen scripts)")
    return host, port


def create_app(cfg: HealerConfig, *, registry: CollectorRegistry | None = None, incidents: Any = None,
               nvml: Any = None, token_file: Path | None = None) -> web.Application:
    """The healer service. Seams: incidents= (a sink), nvml= (a `kernel.nvml.Gpus` or a pynvml-shaped module,
    for GPU placement).
    `token_file`: cfg.token was generated there (healer.service.auth.ensure_token; loopback only)."""
    host, _ = parse_listen(cfg)
    if token_file is not None and not is_loopback(host):
        raise ConfigError(f"listen = {cfg.listen!r} is not loopback: a generated token is for this host only; "
                          "set RENDERWATCH_HEALER_TOKEN")
    app = web.Application(middlewares=[auth_middleware(cfg.token, token_file)])
    metrics = HealerMetrics(registry if registry is not None else CollectorRegistry())
    app[CONFIG] = cfg
    app[METRICS] = metrics
    app.cleanup_ctx.append(_manager_ctx(incidents, nvml))
    am_token = cfg.env.get(ENV_ALERTMANAGER_TOKEN)
    if am_token:
        add_alertmanager_routes(app, token=am_token, rules=cfg.alert_rules, actions=_LazyActions(app),
                                registry=metrics.registry)
    app.router.add_post("/api/v1/jobs", submit_job)
    app.router.add_get("/api/v1/jobs", list_jobs)
    app.router.add_get("/api/v1/jobs/{id}", get_job)
    app.router.add_post("/api/v1/jobs/{id}/cancel", cancel_job)
    app.router.add_post("/api/v1/jobs/{id}/restart", restart_job)
    # prometheus_client's own handler: text or OpenMetrics, as the scraper's Accept header asks
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    app.router.add_get("/healthz", healthz)
    add_openapi_route(app, spec(alertmanager=bool(am_token)))
    return app


def _manager_ctx(incidents: Any, nvml: Any = None):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        inc = incidents
        owned = False
        if inc is None:
            try:
                from healer.incidents.dispatch import Incidents
                cfg = app[CONFIG]
                inc, owned = Incidents.from_config(cfg.incidents, env=cfg.env, counter=app[METRICS].incidents), True
            except Exception as e:
                log.warning("incidents disabled: %s", e)
        mgr = JobManager(app[CONFIG], app[METRICS], inc, nvml)
        app[MANAGER] = mgr
        resumed = mgr.resume_interrupted()
        if resumed:
            log.info("resumed %d interrupted job(s): %s", len(resumed), ", ".join(resumed))
        yield
        await mgr.close()
        if owned and inc is not None:
            with contextlib.suppress(Exception):
                inc.close(timeout=5)
    return ctx


class _LazyActions:
    """The Alertmanager receiver is mounted before the job manager exists (it is made at startup)."""

    def __init__(self, app: web.Application):
        self.app = app

    def __getattr__(self, name: str):
        return getattr(self.app[MANAGER], name)


def _job_or_404(request: web.Request) -> Job:
    job = request.app[MANAGER].jobs.get(request.match_info["id"])
    if job is None:
        raise web.HTTPNotFound(text='{"error": "no such job"}', content_type="application/json")
    return job


async def submit_job(request: web.Request) -> web.Response:
    mgr = request.app[MANAGER]
    try:
        req = mgr.request_from(await read_json(request))
        job = mgr.submit(req)
    except (ValueError, RequestError) as e:
        status = 409 if isinstance(e, RequestError) else 400
        return web.json_response({"error": str(e)}, status=status)
    return web.json_response(job.view(), status=201, headers={"Location": f"/api/v1/jobs/{job.id}"})


async def list_jobs(request: web.Request) -> web.Response:
    return web.json_response({"jobs": [j.view() for j in request.app[MANAGER].jobs.values()]})


async def get_job(request: web.Request) -> web.Response:
    job = _job_or_404(request)
    view = job.view()
    led = job.current_ledger
    if led is not None:
        view["report"] = build_report(led, job.exit_code)
    return web.json_response(view)


async def cancel_job(request: web.Request) -> web.Response:
    job = _job_or_404(request)
    request.app[MANAGER].cancel(job)
    return web.json_response(job.view(), status=202)


async def restart_job(request: web.Request) -> web.Response:
    job = _job_or_404(request)
    try:
        request.app[MANAGER].restart(job)
    except RequestError as e:
        return web.json_response({"error": str(e)}, status=409)
    return web.json_response(job.view(), status=202)


async def healthz(request: web.Request) -> web.Response:
    mgr = request.app[MANAGER]
    running = sum(1 for j in mgr.jobs.values() if j.state == "running")
    return web.json_response({"status": "ok", "running": running, "concurrency": mgr.cfg.concurrency})
