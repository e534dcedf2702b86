"""The supervisor: runs Blender for a job until every requested frame has a verified output, healing
crashes, kills and stalls, or gives up with a typed reason.

One attempt = one Blender process for the frames still missing. While it runs, every output line
feeds the classifier's scanner and the progress parser; a `Saved:` line verifies that frame on disk
and records it in the ledger (fsynced), so nothing verified is ever rendered again. When Blender
exits (or is killed for a stall) the attempt is classified, recorded, and `policy.plan` decides the
next step; the supervisor only executes it.

Healer restarts: the ledger names the attempt in progress and its Blender pid. A new supervisor for
the same job takes the lock (refused while the old healer lives), and if that Blender still runs
(an orphan: its output has nobody to read it, so it can be neither classified nor stall-checked) it
is stopped deliberately (SIGTERM to its process group, SIGKILL after the grace period). Frames it
saved meanwhile are found on disk and kept; only its frame in flight is rendered again.

Usage::

    sup = Supervisor(RenderRequest(scene="/shot/a.blend", frames=(1, 2, 3)))
    result = await sup.run()      # result.exit_code: 0 iff every frame is verified
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from healer.diagnosis import errors
from healer.diagnosis.classify import LogScanner
from healer.supervising.assets import BlendReadError, SceneInfo, check_assets, read_scene_info
from healer.supervising.launch import (
    BlenderProcess,
    LaunchSpec,
    attempt_env,
    build_argv,
    check_user_args,
    exit_status,
    split_user_args,
    stop_group,
)
from healer.supervising.ledger import JobLocked, Ledger, SupervisorLock, job_dir, process_alive
from healer.supervising.outputs import MOVIE_FORMATS, OutputPattern, verify_image
from healer.supervising.policy import REPORT_TYPES, Action, JobState, Outcome, Policy, plan
from healer.supervising.probes import ProbeSnapshot, ResourceSampler, evaluate
from healer.supervising.progress import ProgressDisplay, parse_line

log = logging.getLogger(__name__)

# Exit statuses of `renderwatch render` / `exec` (README: "Exit codes").
EXIT_OK = 0             # every requested frame has a verified output
EXIT_FAILED = 1         # gave up: restarts exhausted or an error that restarting cannot fix
EXIT_USAGE = 2          # bad arguments or configuration
EXIT_INPUT = 3          # fail-fast input error: missing .blend/library, unreadable .blend, output, engine
EXIT_STRICT = 4         # --strict: frames rendered, but a reported error (python_error, missing texture)
EXIT_LOCKED = 5         # another live healer supervises this job
EXIT_CANCELLED = 130    # cancelled (Ctrl-C, SIGTERM, API cancel)
FAIL_FAST_TYPES = frozenset({"missing_file", "blend_invalid", "output_error", "denoiser_unavailable",
                             "engine_unavailable"})


class RequestError(ValueError):
    """A render request that cannot start (bad arguments); exit status 2."""


@dataclass(frozen=True)
class RenderRequest:
    scene: str
    frames: tuple[int, ...] | None = None     # None: the scene's own frame range
    output: str | None = None
    blender: str = "blender"
    blender_args: tuple[str, ...] = ()
    stall_timeout: float | None = None
    strict: bool = False
    job: str | None = None
    origin: str = "cli"                        # "service": the healer service resumes it after a restart


@dataclass
class RenderResult:
    status: str                       # complete | failed | cancelled
    exit_code: int
    ledger: Ledger
    error: dict | None = None


def _no_space(path: str, min_free: int = 1 << 20) -> str | None:
    """The directory of `path` if its filesystem has less than `min_free` bytes available, else None."""
    d = os.path.dirname(os.path.abspath(path))
    try:
        st = os.statvfs(d)
    except OSError:
        return None
    return d if st.f_bavail * st.f_frsize < min_free else None


def job_id_for(scene: str, frames: Sequence[int], output: str | None, args: Sequence[str]) -> str:
    """The same command line gives the same job id, so running it again resumes the job."""
    h = hashlib.sha256(repr((os.path.abspath(scene), list(frames), output, list(args))).encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.splitext(os.path.basename(scene))[0]).lstrip("._-")[:40] or "job"
    return f"{stem}-{h}"


def _arg_value(args: Sequence[str], *names: str) -> str | None:
    value = None
    for i, a in enumerate(args[:-1]):
        if a in names:
            value = args[i + 1]
    return value


def _classify(scanner: Any, crash_file: str | None, exit_code: int | None, exit_signal: int | None, *,
              stalled: bool = False, oom_killed: bool = False, frame: int | None = None) -> errors.RenderError:
    """The classifier's verdict on the attempt (the crash file is read here: classify does no I/O)."""
    crash_text = None
    if crash_file:
        try:
            with open(crash_file, "rb") as f:
                crash_text = f.read(1 << 20).decode("utf-8", errors="replace")
        except OSError:
            crash_text = None
    return scanner.finish(exit_code, exit_signal, crash_file=crash_file, crash_text=crash_text, stalled=stalled,
                          oom_killed=oom_killed, frame=frame)


def _oom_kills() -> int | None:
    """The cgroup's OOM-kill count (memory.events), to tell a kernel OOM kill from a plain SIGKILL."""
    try:
        with open("/sys/fs/cgroup/memory.events") as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        pass
    return None


@dataclass
class _AttemptState:
    current_frame: int | None = None
    frame_started_at: float | None = None
    crash_file: str | None = None
    last_progress_at: float = field(default_factory=time.monotonic)
    last_progress_text: str = ""
    stalled: str | None = None
    stalled_latency: float | None = None
    disk_full: str | None = None          # output directory found full after a failed verification


class Supervisor:
    def __init__(self, request: RenderRequest, *, policy: Policy | None = None, incidents: Any = None,
                 metrics: Any = None, display: ProgressDisplay | None = None,
                 env: Mapping[str, str] | None = None, kill_grace_s: float = 5.0,
                 probe_interval_s: float = 0.25, sampler: ResourceSampler | None = None,
                 job_root: str | None = None):
        self.req = request
        self.policy = (policy or Policy.default()).with_overrides(strict=request.strict)
        self.incidents = incidents if incidents is not None else _noop_incidents()
        self.metrics = metrics
        self.display = display
        self.env = dict(os.environ if env is None else env)
        self.kill_grace_s = kill_grace_s
        self.probe_interval_s = probe_interval_s
        self.sampler = sampler
        self.ledger: Ledger | None = None
        self.job = request.job
        self.frame_times: list[float] = []
        self._cancel = asyncio.Event()
        self._proc: BlenderProcess | None = None
        self._attempt_state = _AttemptState()
        self._scanner = LogScanner()
        self._session_first_attempt = 0
        self._lock: SupervisorLock | None = None
        self._kick_task: asyncio.Task | None = None
        self.started_at = time.time()

    # ------------------------------------------------------------------ public
    def cancel(self) -> None:
        self._cancel.set()

    def kick(self, reason: str) -> bool:
        """Stop the running Blender as stalled (e.g. Alertmanager's RenderStalled): the policy restarts it."""
        if self._proc is None or self._attempt_state.stalled:
            return False
        self._attempt_state.stalled = reason
        self._say(f"stall: {reason}: stopping Blender (pid {self._proc.pid})")
        self._kick_task = asyncio.get_running_loop().create_task(self._proc.stop(self.kill_grace_s))
        return True

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def status(self) -> dict:
        led = self.ledger
        if led is None:
            return {"job": self.job, "status": "pending", "scene": self.req.scene}
        return {"job": led.job, "status": led.status, "scene": led.scene,
                "frames_requested": len(led.frames_requested), "frames_completed": len(led.completed()),
                "restarts": led.restarts, "pid": self._proc.pid if self._proc else None,
                "frame_in_flight": self._attempt_state.current_frame if self._proc else None, "error": led.error}

    async def run(self) -> RenderResult:
        try:
            return await self._run()
        finally:
            if self._lock:
                self._lock.release()

    # ------------------------------------------------------------------ preparation
    def _fail_early(self, etype: str, message: str, exit_code: int, frames: Sequence[int] = ()) -> RenderResult:
        """A failure before any Blender ran: an unsaved ledger carries it to the report."""
        job = self.job or job_id_for(self.req.scene, frames, self.req.output, self.req.blender_args)
        led = Ledger(job=job, scene=os.path.abspath(self.req.scene), frames_requested=sorted(frames),
                     path=job_dir(job, self.env) / "ledger.json")
        led.status = "failed"
        led.error = {"type": etype, "message": message}
        self.ledger = led
        err = errors.error_class(etype)(summary=message)
        self.incidents.emit("render.gave_up", self._info(message=message), err)
        return RenderResult("failed", exit_code, led, led.error)

    async def _run(self) -> RenderResult:
        req = self.req
        scene = os.path.abspath(req.scene)
        frames = list(req.frames or ())
        try:
            check_user_args(req.blender_args)
        except ValueError as e:
            raise RequestError(str(e)) from None
        if shutil.which(req.blender) is None:
            raise RequestError(f"Blender executable {req.blender!r} not found: install Blender, pass --blender "
                               "or set RENDERWATCH_BLENDER")
        if not os.path.isfile(scene):
            return self._fail_early("missing_file", f"the .blend file does not exist: {scene}", EXIT_INPUT, frames)
        info: SceneInfo | None = None
        try:
            info = read_scene_info(scene)
        except BlendReadError as e:
            if "not a blend file" in str(e).lower():
                return self._fail_early("blend_invalid", f"not a .blend file: {scene}", EXIT_INPUT, frames)
            log.warning("cannot read render settings from %s (%s): relying on Blender's output", scene, e)
        if not frames:
            if info is None:
                raise RequestError(f"cannot read the frame range of {scene}: pass --frames")
            frames = list(range(info.frame_start, info.frame_end + 1, info.frame_step))
        before, _ = split_user_args(req.blender_args)
        fmt = _arg_value(before, "-F", "--render-format") or (info.file_format if info else None)
        if fmt in MOVIE_FORMATS:
            return self._fail_early("output_error", f"the scene writes a movie ({fmt}): a movie cannot be resumed "
                                    "frame by frame; choose an image format (-- -F PNG or OPEN_EXR)", EXIT_INPUT, frames)
        use_ext = _arg_value(before, "-x", "--use-extension")
        pattern_src = req.output or (info.output if info else None)
        pattern = (OutputPattern.from_blender(pattern_src, os.path.dirname(scene), fmt,
                                              use_ext != "0" if use_ext is not None else (info.use_extension if info else True))
                   if pattern_src else None)

        self.job = self.job or job_id_for(scene, frames, req.output, req.blender_args)
        directory = job_dir(self.job, self.env)
        self._lock = SupervisorLock(directory)
        try:
            self._lock.acquire()
        except JobLocked as e:
            raise RequestError(str(e)) from e
        try:
            self.ledger = led = Ledger.open_or_create(
                directory, job=self.job, scene=scene, frames=frames, output=pattern,
                spec={"blender": req.blender, "output": req.output, "blender_args": list(req.blender_args),
                      "strict": req.strict, "stall_timeout": req.stall_timeout, "origin": req.origin})
        except ValueError as e:
            raise RequestError(str(e)) from e
        self._session_first_attempt = len(led.attempts)
        # A job an earlier healer already completed (and announced) is not announced again.
        self._announced_complete = led.status == "complete"
        if self.display:
            self.display.total = len(frames)
        if self.metrics:
            self.metrics.frames_requested.labels(self.job).set(len(frames))
        await self._adopt_orphan(led)
        for note in led.reverify():
            self._say(note)
        led.save()
        self._update_metrics()
        if hasattr(self.incidents, "job_started"):
            self.incidents.job_started(self._info())

        action: Action = Action("launch", frames=tuple(led.missing()),
                                reason="resume" if led.attempts else "initial")
        early = self._check_assets(scene, led)       # a few ms: before any Blender (or GPU) time
        if early is not None:
            return early
        if not led.missing():
            action = plan(JobState((), self._warning_types()), None, self.policy, [], now=time.time())
        return await self._loop(led, action)

    def _check_assets(self, scene: str, led: Ledger) -> RenderResult | None:
        rep = check_assets(scene)
        if rep.fatal:
            listing = "; ".join(f"{m.kind} {m.path}" for m in rep.fatal)
            return self._finish_failed(led, "missing_file", f"missing linked files: {listing}; restore them or fix "
                                       "the paths in the .blend", EXIT_INPUT)
        soft = [m for m in rep.missing if not m.fatal]
        for m in soft:
            self._warn("missing_file", f"missing {m.kind} {m.path} (used by {m.block})")
        if soft and self.req.strict:
            listing = "; ".join(f"{m.kind} {m.path}" for m in soft)
            return self._finish_failed(led, "missing_file", f"--strict: missing files: {listing}", EXIT_STRICT)
        if rep.simulations and led.completed() and led.missing():
            self._warn("simulation", "resuming mid-range in a scene with unbaked simulations; frames rendered after "
                       f"the restart may differ: {', '.join(rep.simulations)}", incident=False)
        return None

    async def _adopt_orphan(self, led: Ledger) -> None:
        """The previous healer died with an attempt in progress: stop its Blender, credit its frames."""
        att = led.running_attempt()
        if att is None:
            return
        alive = process_alive(att.pid, att.pid_create_time)
        if alive and att.pid:
            self._say(f"stopping Blender pid {att.pid}, left running unsupervised by a healer that died")
            pid, ctime = att.pid, att.pid_create_time
            await stop_group(pid, self.kill_grace_s, lambda: not process_alive(pid, ctime))
            att.error_summary = f"healer restarted: stopped its orphaned Blender (pid {att.pid})"
        else:
            att.error_summary = "healer restarted: Blender had already exited (status not seen)"
        att.error_type = "interrupted"
        att.ended_at = time.time()
        for f in att.frames_planned:
            ok, _ = led.verify_frame(f)
            if ok and f not in att.frames_rendered:
                att.frames_rendered.append(f)
                led.frame_render_counts[f] = max(1, led.frame_render_counts.get(f, 0))

    # ------------------------------------------------------------------ the healing loop
    async def _loop(self, led: Ledger, action: Action) -> RenderResult:
        while True:
            if self.cancelled:
                return self._finish_cancelled(led)
            if action.kind == "complete":
                return self._finish_complete(led)
            if action.kind == "give_up":
                etype = action.error_type or "unknown"
                code = EXIT_STRICT if action.reason.startswith("--strict") else (
                    EXIT_INPUT if etype in FAIL_FAST_TYPES else EXIT_FAILED)
                return self._finish_failed(led, etype, action.reason, code)
            if action.restart:
                self._say(f"restart: {action.reason}" + (f" (in {action.delay_s:.1f} s)" if action.delay_s else ""))
                if self.metrics:
                    self.metrics.restarts.labels(led.job, action.error_type or "unknown").inc()
                self.incidents.emit("render.restarted", self._info(message=action.reason))
            if action.delay_s > 0:
                try:
                    await asyncio.wait_for(self._cancel.wait(), action.delay_s)
                    continue
                except TimeoutError:
                    pass
            frames = [f for f in action.frames if f not in led.frames]
            if not frames:
                frames = led.missing()
            error = await self._attempt(led, frames, action)
            if self.cancelled:
                return self._finish_cancelled(led)
            history = [self._outcome(a) for a in led.attempts[self._session_first_attempt:]
                       if a.pid is not None and a.ended_at is not None]
            action = plan(JobState(tuple(led.missing()), self._warning_types()), error, self.policy, history,
                          now=time.time(), cpu_count=os.cpu_count() or 1)
            if action.kind == "complete" and any(o.error_type not in (None, "ok") for o in history):
                self.incidents.emit("render.recovered", self._info(message="every frame rendered after restarts"))

    @staticmethod
    def _outcome(a) -> Outcome:
        return Outcome(ended_at=a.ended_at or 0.0, error_type=None if a.error_type in (None, "ok") else a.error_type,
                       frame=a.frame_in_flight, frames_planned=tuple(a.frames_planned),
                       frames_rendered=tuple(a.frames_rendered), device=a.device, threads=a.threads)

    async def _attempt(self, led: Ledger, frames: list[int], action: Action) -> errors.RenderError:
        req = self.req
        att = led.new_attempt(frames, action.reason)
        att.device, att.threads = action.device, action.threads
        out = self._output_arg()
        argv = build_argv(LaunchSpec(blender=req.blender, scene=led.scene, frames=frames, output=out,
                                     user_args=req.blender_args, device=action.device, threads=action.threads))
        att.argv = argv
        self._attempt_state = st = _AttemptState()
        self._scanner = LogScanner()
        oom_before = _oom_kills()
        try:
            proc = await BlenderProcess.start(argv, env=attempt_env(led.job, att.attempt, self.env),
                                              on_line=lambda line, now: self._on_line(led, att, line, now))
        except OSError as e:
            att.ended_at = time.time()
            att.error_type = "engine_unavailable"
            att.error_summary = f"cannot start Blender {req.blender!r}: {e}"
            led.save()
            return errors.EngineUnavailable(summary=att.error_summary)
        self._proc = proc
        att.pid = proc.pid
        try:
            att.pid_create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            att.pid_create_time = None
        att.started_at = time.time()
        led.status = "running"
        led.save()
        watcher = asyncio.create_task(self._watch(led, proc, st))
        try:
            rc = await proc.wait()
        finally:
            watcher.cancel()
            self._proc = None
        exit_code, exit_signal = exit_status(rc)
        in_flight = att.frame_in_flight
        oom_after = _oom_kills()
        error = _classify(self._scanner, st.crash_file or self._scanner.crash_file, exit_code, exit_signal,
                          stalled=bool(st.stalled), frame=in_flight,
                          oom_killed=exit_signal == 9 and oom_before is not None and (oom_after or 0) > oom_before)
        if st.stalled and error.type == "stall":
            error = dataclasses.replace(error, summary=f"{st.stalled}; {error.summary}" if error.summary else st.stalled)
        if self.cancelled:
            error = errors.Interrupted(summary="cancelled", exit_code=exit_code, exit_signal=exit_signal)
        if error.frame is None and in_flight is not None:
            error = dataclasses.replace(error, frame=in_flight)
        if st.disk_full and not self.cancelled and error.type in ("ok", "unknown", "output_error"):
            # Blender prints `Saved:` and exits 0 even when the write hit a full disk: trust the disk.
            error = errors.OutputError(summary=f"no space left on {st.disk_full}: Blender reported frames saved "
                                               "but the files are empty or incomplete; free space there and run "
                                               "the same command again", exit_code=exit_code,
                                       exit_signal=exit_signal, frame=in_flight, findings=error.findings)
        # Frames Blender saved but whose line we missed, and partial files left by the crash.
        for f in frames:
            ok, why = led.verify_frame(f)
            if ok and f not in att.frames_rendered:
                att.frames_rendered.append(f)
            elif not ok and "removed" in why:
                att.frames_rendered[:] = [x for x in att.frames_rendered if x != f]
                self._say(why)
        att.frame_in_flight = in_flight if in_flight not in led.frames else None
        att.exit_code, att.exit_signal = exit_code, exit_signal
        att.error_type = error.type
        att.error_summary = error.summary or None
        att.ended_at = time.time()
        self._record_warnings(error)
        led.save()
        self._update_metrics()
        if self.metrics:
            self.metrics.attempts.labels(error.type).inc()
        if error.type != "ok" and error.fatal and not self.cancelled:
            kind = "render.stalled" if error.type == "stall" else "render.crashed"
            self.incidents.emit(kind, self._info(frame=error.frame, log_tail=list(proc.tail), crash_file=st.crash_file,
                                                 message=error.summary), error)
        return error

    def _output_arg(self) -> str | None:
        out = self.req.output
        if out and not out.startswith("//"):
            out = os.path.abspath(os.path.expanduser(out)) + ("/" if out.endswith("/") else "")
        return out

    # ------------------------------------------------------------------ live output
    def _on_line(self, led: Ledger, att, line: str, now: float) -> None:
        self._scanner.feed(line)
        ev = parse_line(line)
        st = self._attempt_state
        if ev.kind == "progress":
            if ev.text != st.last_progress_text or ev.frame != st.current_frame:
                st.last_progress_at = now
                st.last_progress_text = ev.text
            if st.current_frame is None:
                st.current_frame = ev.frame
        elif ev.kind == "frame_start" and ev.frame is not None:
            st.current_frame, st.frame_started_at, st.last_progress_at = ev.frame, now, now
            if ev.path:
                led.expected_paths[ev.frame] = ev.path
            if ev.frame in led.frame_render_counts and self.metrics:
                self.metrics.frames_rerendered.labels(led.job).inc()
            led.frame_started(ev.frame, att)
            led.save()
            self._show()
        elif ev.kind == "saved" and ev.path:
            st.last_progress_at = now
            frame = self._frame_for(led, att, ev.path, st.current_frame)
            if frame is None:
                return
            v = verify_image(ev.path)
            if not v.ok:
                full = _no_space(ev.path)
                if full:
                    st.disk_full = full
            if v.ok:
                led.frame_verified(frame, ev.path, v.size, att)
                if st.frame_started_at is not None:
                    self.frame_times.append(now - st.frame_started_at)
                st.frame_started_at = None
                led.save()
                self._update_metrics()
                self._show()
        elif ev.kind == "crash_file":
            st.crash_file = ev.path

    def _frame_for(self, led: Ledger, att, path: str, current: int | None) -> int | None:
        apath = os.path.abspath(path)
        if current is not None and current in led.frames_requested:
            expected = led.expected_paths.get(current)
            if expected is None or os.path.abspath(expected) == apath:
                return current
        for f in att.frames_planned:
            p = led.path_for(f)
            if p and os.path.abspath(p) == apath:
                return f
        return None

    async def _watch(self, led: Ledger, proc: BlenderProcess, st: _AttemptState) -> None:
        """Probe loop: metrics every tick, kill the process group on a stall or a cancel."""
        last_sample, res = 0.0, {}
        while proc.returncode() is None:
            await asyncio.sleep(self.probe_interval_s)
            if self.cancelled:
                await proc.stop(self.kill_grace_s)
                return
            now = time.monotonic()
            if self.sampler is not None and now - last_sample >= 1.0:
                res, last_sample = self.sampler.sample(proc.pid), now
            try:
                status: str | None = psutil.Process(proc.pid).status()
            except psutil.Error:
                status = None
            snap = ProbeSnapshot(now=now, started_at=st.last_progress_at, status=status,
                                 last_output_at=proc.last_output_at, last_progress_at=st.last_progress_at,
                                 frame_times=self.frame_times, stall_timeout=self.req.stall_timeout, **res)
            findings = evaluate(snap)
            if self.metrics:
                for f in findings:
                    self.metrics.probe_healthy.labels(led.job, f.probe).set(1 if f.healthy else 0)
            stall = next((f for f in findings if f.action == "kill_stall"), None)
            if stall is not None and proc.returncode() is None and not st.stalled:
                frame = st.current_frame
                st.stalled = f"{stall.detail}" + (f" at frame {frame}" if frame is not None else "")
                self._say(f"stall: {st.stalled}: stopping Blender (pid {proc.pid})")
                await proc.stop(self.kill_grace_s)
                return

    # ------------------------------------------------------------------ endings
    def _finish_complete(self, led: Ledger) -> RenderResult:
        led.status, led.error = "complete", None
        led.save()
        self._update_metrics()
        if not getattr(self, "_announced_complete", False):
            self.incidents.emit("render.completed", self._info(message="every requested frame has a verified output"))
        return RenderResult("complete", EXIT_OK, led)

    def _finish_failed(self, led: Ledger, etype: str, message: str, code: int) -> RenderResult:
        led.status, led.error = "failed", {"type": etype, "message": message}
        led.save()
        self._update_metrics()
        err = errors.error_class(etype)(summary=message) if etype in errors.ERROR_TYPES else errors.Unknown(summary=message)
        if self.metrics:
            self.metrics.gave_up.labels(led.job, etype).inc()
        self.incidents.emit("render.gave_up", self._info(message=message), err)
        return RenderResult("failed", code, led, led.error)

    def _finish_cancelled(self, led: Ledger) -> RenderResult:
        led.status, led.error = "cancelled", {"type": "interrupted", "message": "cancelled"}
        led.save()
        self._update_metrics()
        return RenderResult("cancelled", EXIT_CANCELLED, led, led.error)

    # ------------------------------------------------------------------ helpers
    def _warning_types(self) -> tuple[str, ...]:
        led = self.ledger
        return tuple(sorted({w["type"] for w in led.warnings if w.get("type") in REPORT_TYPES})) if led else ()

    def _record_warnings(self, error: errors.RenderError) -> None:
        seen = []
        if error.type in REPORT_TYPES and not error.fatal:
            seen.append((error.type, error.summary))
        for f in error.findings:
            if f.type in REPORT_TYPES and (f.type, f.text) not in seen:
                seen.append((f.type, f.text))
        for etype, text in seen:
            self._warn(etype, text, error=error)

    def _warn(self, etype: str, message: str, *, error: errors.RenderError | None = None, incident: bool = True) -> None:
        led = self.ledger
        if led is None or any(w["type"] == etype and w["message"] == message for w in led.warnings):
            return
        led.warnings.append({"type": etype, "message": message, "at": time.time()})
        self._say(f"warning: {etype}: {message}")
        if incident:
            if error is None and etype in errors.ERROR_TYPES:
                error = errors.error_class(etype)(summary=message, fatal=False)
            self.incidents.emit("render.warning", self._info(message=message), error)

    def _say(self, text: str) -> None:
        if self.display:
            self.display.message(text)
        else:
            log.info("%s: %s", self.job, text)

    def _show(self) -> None:
        led = self.ledger
        if self.display and led:
            self.display.update(len(led.completed()), led.restarts, self._attempt_state.current_frame)

    def _update_metrics(self) -> None:
        led = self.ledger
        if self.metrics and led:
            self.metrics.frames_completed.labels(led.job).set(len(led.completed()))

    def _info(self, **extra: Any) -> dict:
        led = self.ledger
        info: dict[str, Any] = {"job": self.job, "scene": os.path.abspath(self.req.scene)}
        if led is not None:
            fr = led.frames_requested
            info.update(frames=[fr[0], fr[-1]] if fr else [], frames_total=len(fr),
                        frames_completed=len(led.completed()), restarts=led.restarts,
                        attempt=led.attempts[-1].attempt if led.attempts else 0,
                        duration_s=time.time() - self.started_at)
        info.update({k: v for k, v in extra.items() if v is not None})
        return info


class _NoopIncidents:
    """Incidents that go nowhere (healer.incidents.Incidents.noop() without importing its exporters)."""

    def emit(self, kind: str, info: Any = None, error: errors.RenderError | None = None) -> None:
        pass

    def job_started(self, info: Any) -> None:
        pass


def _noop_incidents() -> Any:
    return _NoopIncidents()
