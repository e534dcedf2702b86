"""The job model: a pure fold of validated events into jobs, dedupe cursors and frame totals.

No I/O and no clock: every time comes from the events (or is passed in), so replaying the
journal after a restart rebuilds exactly the same state.

Usage::

    st = State()
    if st.accept(ev):                 # False: a duplicate (seq not above the session's cursor)
        effect = st.apply(ev)         # FrameDone / JobDone for the tracer, or None
    st.jobs["j1"].progress, st.jobs["j1"].eta_seconds
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agent.aggregates import FrameTotals
from agent.frames import FrameTable
from agent.frameset import FrameSet

RECENT_FRAMES = 10          # ETA = mean of this many recent frame times x frames remaining
CURSOR_LIMIT = 100_000      # bounded dedupe memory: oldest sessions forgotten first
# Jobs held at once. A node renders a handful; ingest is open to every local account, and 10,000 made-up
# job ids took /metrics to 6 MB and the agent to 188 MB. Past the bound the job that ended longest ago
# (else the one quiet for longest) is forgotten to make room, and counted.
JOB_LIMIT = 1_000
GPU_PAUSES_KEPT = 64        # a node has a few GPUs: pauses for more uuids than this are not kept
ATTEMPTS_KEPT = 50          # a job's attempt timeline (the page): the most recent ones


@dataclass
class Job:
    """One render job (all attempts and sessions that reported the same job id)."""

    id: str
    scene: str = ""
    engine: str = ""
    device_type: str = ""
    blend_file: str = ""
    host: str = ""
    pid: int = 0
    blender_version: str = ""
    output_path: str = ""
    samples: int | None = None
    resolution: str = ""
    status: str = "running"              # running | complete | cancelled | failed | stale
    error_type: str | None = None        # why a failed job failed (the healer's verdict)
    final_ts: float | None = None        # when the healer said how the whole job ended
    started_at: float = 0.0
    ended_at: float | None = None
    last_event_ts: float = 0.0
    last_progress_ts: float = 0.0
    expected: FrameSet = field(default_factory=FrameSet)
    done: FrameSet = field(default_factory=FrameSet)
    done_expected: int = 0               # len(done & expected), kept as frames arrive (O(1) per event)
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_FRAMES))
    last_frame_seconds: float | None = None
    peaks: dict[str, float] = field(default_factory=dict)
    sessions: list[str] = field(default_factory=list)
    attempt_hint: int = 0
    root_emitted: bool = False
    frames_rendered: int = 0
    current_frame: int | None = None
    frame_started: dict[int, float] = field(default_factory=dict)
    phases: dict[int, list[tuple[str, float, str]]] = field(default_factory=dict)
    farm_engine: str = ""
    farm_job: str = ""
    farm_task: str = ""
    traceparent: str = ""
    suspects: dict[str, int] = field(default_factory=dict)    # frames found suspect, by reason
    verified_only: FrameSet = field(default_factory=FrameSet)  # counted from the healer's frame_verified
    trace_budget: Any = None             # agent.traces' per-trace bookkeeping (it lives and goes with the job)
    frames: FrameTable = field(default_factory=FrameTable)    # per-frame detail for the page (agent.frames)
    attempt_log: dict[int, dict[str, Any]] = field(default_factory=dict)   # attempt -> its story (page)

    @property
    def attempts(self) -> int:
        return max(len(self.sessions), self.attempt_hint, 1)

    @property
    def labels(self) -> tuple[str, str, str]:
        return (self.scene, self.engine, self.device_type)

    @property
    def frames_total(self) -> int:
        return len(self.expected)

    @property
    def frames_done(self) -> int:
        return self.done_expected if self.expected else len(self.done)

    @property
    def progress(self) -> float:
        if self.status == "complete":
            return 1.0
        return min(1.0, self.frames_done / self.frames_total) if self.frames_total else 0.0

    @property
    def eta_seconds(self) -> float | None:
        if self.status != "running" or not self.recent or not self.frames_total:
            return None
        remaining = max(0, self.frames_total - self.frames_done)
        return sum(self.recent) / len(self.recent) * remaining

    def attempt_of(self, ev: dict) -> int:
        """The attempt an event belongs to: the healer's number, else the Blender session's place."""
        if ev.get("attempt"):
            return int(ev["attempt"])
        try:
            return self.sessions.index(ev["session"]) + 1
        except ValueError:
            return self.attempts

    def attempt_entry(self, n: int, ts: float) -> dict[str, Any]:
        entry = self.attempt_log.get(n)
        if entry is None:
            entry = self.attempt_log[n] = {"attempt": n, "started_at": ts, "ended_at": None, "error_type": None,
                                           "summary": None, "evidence": None, "advice": None, "frame": None}
            while len(self.attempt_log) > ATTEMPTS_KEPT:
                del self.attempt_log[min(self.attempt_log)]
        return entry

    def mark_done(self, frame: int) -> None:
        if self.done.add(frame) and frame in self.expected:
            self.done_expected += 1

    @property
    def active(self) -> bool:
        return self.status == "running"

    def to_dict(self) -> dict[str, Any]:
        """The /api/v1/jobs shape."""
        return {
            "job": self.id, "scene": self.scene, "status": self.status, "frames_done": self.frames_done,
            "frames_total": self.frames_total, "progress": round(self.progress, 6),
            "eta_seconds": self.eta_seconds, "last_frame_seconds": self.last_frame_seconds,
            "peaks": dict(self.peaks), "attempts": self.attempts, "host": self.host, "pid": self.pid,
            "blender_version": self.blender_version, "engine": self.engine,
            "device_type": self.device_type, "blend_file": self.blend_file, "current_frame": self.current_frame,
            "started_at": self.started_at, "ended_at": self.ended_at, "last_progress_ts": self.last_progress_ts,
            "error_type": self.error_type,
        }


@dataclass(frozen=True)
class FrameDone:
    """A frame finished: what the tracer needs for the render.frame span and its phase spans."""

    job: Job
    session: str
    frame: int
    start: float
    end: float
    event: dict
    phases: tuple[tuple[str, float, str], ...]


@dataclass(frozen=True)
class JobDone:
    """A job reached a final status: emit its render.job root span."""

    job: Job


@dataclass(frozen=True)
class FrameCheck:
    """The healer found a saved frame suspect: a render.frame.check span under the frame's span."""

    job: Job
    frame: int
    reason: str
    detail: str
    ts: float
    event: dict


Effect = FrameDone | JobDone | FrameCheck


class State:
    """Jobs by id, per-session dedupe cursors and cumulative frame totals."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.cursors: dict[str, int] = {}     # session -> highest seq accepted (insertion-ordered)
        self.totals = FrameTotals()
        self.jobs_evicted = 0                 # jobs forgotten to keep at most JOB_LIMIT (never during a replay
                                              # that stays under it: the same events evict the same jobs)
        self.tables = 0                       # frame tables made (each starts its versions apart)
        self.gpu_pauses: dict[str, str] = {}  # GPU uuid -> why the healer service paused it (an alert)

    def accept(self, ev: dict) -> bool:
        """Advance the session's cursor; False when `seq` is not above it (a duplicate)."""
        session, seq = ev["session"], ev["seq"]
        last = self.cursors.get(session)
        if last is not None:
            if seq <= last:
                return False
            del self.cursors[session]          # re-insert: keeps the dict ordered by last activity
        elif len(self.cursors) >= CURSOR_LIMIT:
            del self.cursors[next(iter(self.cursors))]
        self.cursors[session] = seq
        return True

    def job_for(self, ev: dict) -> Job:
        job = self.jobs.get(ev["job"])
        if job is None:
            if len(self.jobs) >= JOB_LIMIT:
                self._evict_one()
            self.tables += 1
            job = self.jobs[ev["job"]] = Job(id=ev["job"], started_at=ev["ts"], frames=FrameTable(self.tables << 40))
        job.last_event_ts = max(job.last_event_ts, ev["ts"])
        for name in ("scene", "engine", "device_type"):
            if ev.get(name) and not getattr(job, name):
                setattr(job, name, ev[name])
        if ev.get("attempt"):
            job.attempt_hint = max(job.attempt_hint, ev["attempt"])
        job.host = ev["host"]
        job.pid = ev["pid"]
        return job

    def _evict_one(self) -> None:
        """Make room for one job: the one that ended longest ago, else the one quiet for longest (a scan,
        but only at the bound, which a node's own renders never reach)."""
        ended = [j for j in self.jobs.values() if j.ended_at is not None]
        victim = min(ended or self.jobs.values(),
                     key=(lambda j: j.ended_at or 0.0) if ended else (lambda j: j.last_event_ts))
        del self.jobs[victim.id]
        self.jobs_evicted += 1

    def apply(self, ev: dict) -> Effect | None:
        """Fold one accepted event into the state; return what the tracer should emit, if anything."""
        handler = _HANDLERS.get(ev["type"])
        return handler(self, ev) if handler else None

    def _job_start(self, ev: dict) -> None:
        job = self.job_for(ev)
        if ev["session"] not in job.sessions:
            job.sessions.append(ev["session"])
        for name in ("scene", "engine", "device_type", "blend_file", "blender_version", "output_path",
                     "farm_engine", "farm_job", "farm_task", "traceparent"):
            if ev.get(name):
                setattr(job, name, ev[name])
        if ev.get("samples") is not None:
            job.samples = ev["samples"]
        if ev.get("resolution_x") and ev.get("resolution_y"):
            pct = ev.get("resolution_percentage") or 100
            job.resolution = f"{ev['resolution_x'] * pct // 100}x{ev['resolution_y'] * pct // 100}"
        step = ev.get("frame_step") or 1
        if ev["frame_end"] >= ev["frame_start"] and step > 0:
            # Union: `-f 1 -f 5` and restarted attempts each announce their frames.
            new = job.expected.update(range(ev["frame_start"], ev["frame_end"] + 1, step))
            job.done_expected += sum(1 for f in new if f in job.done)
            if new:
                job.frames.expect(new)
        job.attempt_entry(job.attempt_of(ev), ev["ts"])
        if job.status != "running" and not _settled(job, ev):
            job.status, job.ended_at, job.error_type, job.final_ts = "running", None, None, None
        job.last_progress_ts = max(job.last_progress_ts, ev["ts"])

    def _frame_start(self, ev: dict) -> None:
        job = self.job_for(ev)
        job.current_frame = ev["frame"]
        job.frame_started[ev["frame"]] = ev["ts"]
        job.frames.started(ev["frame"], job.attempt_of(ev), ev.get("device_type") or job.device_type)
        job.phases.pop(ev["frame"], None)
        job.last_progress_ts = max(job.last_progress_ts, ev["ts"])

    def _phase(self, ev: dict) -> None:
        job = self.job_for(ev)
        job.phases.setdefault(ev["frame"], []).append((ev["name"], ev["ts"], ev.get("detail") or ""))
        job.last_progress_ts = max(job.last_progress_ts, ev["ts"])

    def _frame_end(self, ev: dict) -> FrameDone | None:
        job = self.job_for(ev)
        frame, seconds, end = ev["frame"], float(ev["seconds"]), ev["ts"]
        if ev["saved"] and frame in job.verified_only:
            # The healer's frame_verified came first (another spool session) and counted this very
            # render: keep its time and memory, count it and trace it no second time.
            job.verified_only.discard(frame)
            job.frame_started.pop(frame, None)
            job.phases.pop(frame, None)
            job.recent.append(seconds)
            job.last_frame_seconds = seconds
            peaks = frame_peaks(ev)
            for kind, value in peaks.items():
                if value > job.peaks.get(kind, 0):
                    job.peaks[kind] = value
            job.frames.ended(frame, True, seconds, peaks, job.attempt_of(ev), ev.get("device_type"))
            self.totals.record(job.labels, seconds, peaks, counted=True)
            if is_cpu_fallback(ev):
                self.totals.suspect("cpu_fallback")
                job.suspects["cpu_fallback"] = job.suspects.get("cpu_fallback", 0) + 1
            return None
        start = job.frame_started.pop(frame, end - seconds)
        phases = tuple(job.phases.pop(frame, ()))
        if ev["saved"]:
            job.mark_done(frame)
        job.frames_rendered += 1
        job.recent.append(seconds)
        job.last_frame_seconds = seconds
        job.last_progress_ts = max(job.last_progress_ts, end)
        if job.current_frame == frame:
            job.current_frame = None
        peaks = frame_peaks(ev)
        for kind, value in peaks.items():
            if value > job.peaks.get(kind, 0):
                job.peaks[kind] = value
        if ev.get("output_path"):
            job.output_path = ev["output_path"]
        job.frames.ended(frame, ev["saved"], seconds, peaks, job.attempt_of(ev), ev.get("device_type"))
        if ev["saved"]:      # an unsaved frame_end is a frame cut short (cancel, crash, write error)
            self.totals.record(job.labels, seconds, peaks)
            if is_cpu_fallback(ev):
                self.totals.suspect("cpu_fallback")
                job.suspects["cpu_fallback"] = job.suspects.get("cpu_fallback", 0) + 1
        return FrameDone(job, ev["session"], frame, min(start, end), end, ev, phases)

    def _frame_verified(self, ev: dict) -> FrameDone | None:
        """The healer verified a frame on disk that Blender may have died before reporting. Counted and
        traced only when no frame_end did (the healer never renders a verified frame again, so a
        frame_end for it, before or after, is the same render)."""
        job = self.job_for(ev)
        frame, end = ev["frame"], ev["ts"]
        if frame in job.done:
            return None
        start = job.frame_started.pop(frame, end)
        phases = tuple(job.phases.pop(frame, ()))
        job.mark_done(frame)
        job.verified_only.add(frame)
        job.frames.ended(frame, True, None, {}, job.attempt_of(ev), None)
        job.frames_rendered += 1
        job.last_progress_ts = max(job.last_progress_ts, end)
        if job.current_frame == frame:
            job.current_frame = None
        if ev.get("output_path"):
            job.output_path = ev["output_path"]
        self.totals.count(job.labels)
        span_ev = {**ev, "seconds": max(0.0, end - start), "saved": True}
        return FrameDone(job, ev["session"], frame, min(start, end), end, span_ev, phases)

    def _frame_check(self, ev: dict) -> FrameCheck:
        """The healer found a saved frame that looks wrong (blank, wrong size, too fast...)."""
        job = self.job_for(ev)
        self.totals.suspect(ev["reason"])
        job.suspects[ev["reason"]] = job.suspects.get(ev["reason"], 0) + 1
        job.frames.suspect(ev["frame"])
        return FrameCheck(job, ev["frame"], ev["reason"], ev.get("detail") or "", ev["ts"], ev)

    def _job_end(self, ev: dict) -> JobDone | None:
        job = self.job_for(ev)
        job.current_frame = None
        for frame in job.frame_started:          # cut short: no frame_end came
            job.frames.failed(frame)
        entry = job.attempt_log.get(job.attempt_of(ev))
        if entry is not None and entry["ended_at"] is None:
            entry["ended_at"] = ev["ts"]
            if ev.get("error_type") and not entry["error_type"]:
                entry["error_type"] = ev["error_type"]
        if _settled(job, ev):
            return None                   # one Blender's own end, older than the healer's verdict on the job
        job.status = _END_STATUS.get(ev["status"], "cancelled")
        job.error_type = (ev.get("error_type") or "unknown") if job.status == "failed" else None
        job.ended_at = ev["ts"]
        if ev.get("final"):
            job.final_ts = ev["ts"]
        if ev.get("started_at"):
            job.started_at = min(job.started_at, ev["started_at"])
        # The root span goes out once: now when every frame is done, else when the job expires
        # (a cancel may be followed by a restarted attempt, a `-f` list by its next render).
        return self._root(job) if job.status == "complete" and job.frames_done >= job.frames_total else None

    def _root(self, job: Job) -> JobDone | None:
        if job.root_emitted:
            return None
        job.root_emitted = True
        return JobDone(job)

    def _gpu_pause(self, ev: dict) -> None:
        """The healer service paused (or resumed) a GPU on an alert: the page's GPU table shows it."""
        if not ev["paused"]:
            self.gpu_pauses.pop(ev["uuid"], None)
        elif ev["uuid"] in self.gpu_pauses or len(self.gpu_pauses) < GPU_PAUSES_KEPT:
            self.gpu_pauses[ev["uuid"]] = ev.get("reason") or "paused by an alert"

    def _attempt_end(self, ev: dict) -> None:
        """The healer classified how one attempt ended: the page's attempt timeline."""
        job = self.job_for(ev)
        entry = job.attempt_entry(ev["attempt"], ev.get("started_at") or ev["ts"])
        if ev.get("started_at"):
            entry["started_at"] = min(entry["started_at"], ev["started_at"])
        entry["ended_at"] = ev["ts"]
        for name in ("error_type", "summary", "evidence", "advice", "frame"):
            if ev.get(name) is not None:
                entry[name] = ev[name]
        if ev.get("frame") is not None and ev["error_type"] != "ok":
            job.frames.failed(ev["frame"])

    def _stale(self, ev: dict) -> None:
        """Internal `_stale` record (journaled by the agent): a running job that stopped reporting."""
        job = self.jobs.get(ev["job"])
        if job is not None and job.status == "running":
            job.status, job.ended_at, job.current_frame = "stale", ev["ts"], None
            for frame in job.frame_started:
                job.frames.failed(frame)

    def _expire(self, ev: dict) -> JobDone | None:
        """Internal `_expire` record: forget the job (its grace period is over); emit its root if due."""
        job = self.jobs.pop(ev["job"], None)
        return self._root(job) if job is not None else None

    def expired(self, now: float, grace: float) -> list[str]:
        """Ids of the jobs that ended more than `grace` seconds before `now` (to `_expire`)."""
        return [j.id for j in self.jobs.values() if j.ended_at is not None and j.ended_at + grace < now]

    def visible(self, now: float, grace: float) -> list[Job]:
        """Jobs whose per-job series are still exported: running, or ended less than `grace` ago."""
        return [j for j in self.jobs.values() if j.ended_at is None or j.ended_at + grace >= now]


_END_STATUS = {"complete": "complete", "cancel": "cancelled", "failed": "failed"}


def _settled(job: Job, ev: dict) -> bool:
    """The healer has said how the whole job ended, after this event of one of its Blenders happened
    (the healer's events come on a spool session of their own: they may arrive first). Only what
    happens later (a person's restart: a new job_start) changes the job's status again."""
    return job.final_ts is not None and not ev.get("final") and ev["ts"] <= job.final_ts


def is_cpu_fallback(ev: dict) -> bool:
    """Cycles asked for a GPU rendered on the CPU (the hooks read both from the scene and preferences)."""
    return str(ev.get("device_asked", "")).startswith("GPU") and ev.get("device_type") == "CPU"


def frame_peaks(ev: dict) -> dict[str, float]:
    """Peak memory per kind carried by a frame_end event (the agent adds the sampled ones)."""
    peaks: dict[str, float] = {}
    for kind, key in (("blender", "peak_memory_blender_bytes"), ("rss", "max_rss_bytes"),
                      ("vram", "peak_vram_bytes")):
        v = ev.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
            peaks[kind] = float(v)
    return peaks


_HANDLERS = {
    "job_start": State._job_start, "frame_start": State._frame_start, "phase": State._phase,
    "frame_end": State._frame_end, "job_end": State._job_end, "frame_check": State._frame_check,
    "frame_verified": State._frame_verified, "attempt_end": State._attempt_end,
    "gpu_pause": State._gpu_pause, "_stale": State._stale,
    "_expire": State._expire,
}
