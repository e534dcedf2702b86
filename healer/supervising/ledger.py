"""The frame ledger: what a render job asked for, which frames have a verified output, every attempt.

One JSON file per job at `<home>/healer/jobs/<job>/ledger.json`, written atomically (temp file,
fsync, rename) with mode 0600, so a healer killed at any point leaves the previous or the new
state, never a torn one. A lock file beside it (`supervisor.lock`) names the healer supervising the
job; the ledger names the Blender process of the attempt in progress.

Usage::

    led = Ledger.open_or_create(job_dir(job), job=job, scene=..., frames=[1, 2, 3], output=pattern)
    led.frame_started(2); led.frame_verified(2, path, size); led.save()
    led.missing()  # frames still to render
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from healer.supervising.outputs import OutputPattern, remove_partial, verify_image
from renderwatch.files import write_atomic
from renderwatch.paths import ensure_private_dir, home

LEDGER_VERSION = 1
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def jobs_dir(env: Mapping[str, str] | None = None) -> Path:
    return home(env) / "healer" / "jobs"


def job_dir(job: str, env: Mapping[str, str] | None = None) -> Path:
    if not _JOB_ID.fullmatch(job):
        raise ValueError(f"job id {job!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    return jobs_dir(env) / job


@dataclass
class Attempt:
    attempt: int
    pid: int | None = None
    frames_planned: list[int] = field(default_factory=list)
    frames_rendered: list[int] = field(default_factory=list)
    exit_code: int | None = None
    exit_signal: int | None = None
    error_type: str | None = None
    error_summary: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    # extras (not in the report contract, kept for resume and diagnosis)
    pid_create_time: float | None = None
    argv: list[str] = field(default_factory=list)
    action: str | None = None          # why this attempt was launched ("initial", "restart: segfault", ...)
    frame_in_flight: int | None = None
    device: str | None = None          # "CPU" when the policy forced a CPU render
    threads: int | None = None         # -t N when the policy reduced threads
    frame_age_s: float | None = None   # how far into the frame in flight it ended (from its start marker)

    REPORT_KEYS = ("attempt", "pid", "frames_planned", "frames_rendered", "exit_code", "exit_signal",
                   "error_type", "error_summary", "started_at", "ended_at")

    def report(self) -> dict:
        return {k: getattr(self, k) for k in self.REPORT_KEYS}

    def to_dict(self) -> dict:
        """Every field, lists copied (dataclasses.asdict deep-copies field by field: 5x slower, and the
        ledger is saved at every frame's start and end)."""
        return {k: list(v) if isinstance(v, list) else v for k, v in vars(self).items()}

    @property
    def running(self) -> bool:
        return self.ended_at is None


@dataclass
class FrameRecord:
    path: str
    size: int
    verified_at: float


@dataclass
class Ledger:
    job: str
    scene: str
    frames_requested: list[int]
    path: Path                                  # the ledger.json file
    output: dict | None = None                  # OutputPattern.to_dict()
    frames: dict[int, FrameRecord] = field(default_factory=dict)
    frame_render_counts: dict[int, int] = field(default_factory=dict)
    expected_paths: dict[int, str] = field(default_factory=dict)   # from Blender's frame_path()
    attempts: list[Attempt] = field(default_factory=list)
    status: str = "pending"       # pending | running | complete | failed | cancelled
    error: dict | None = None     # the reason a failed job gave up
    warnings: list[dict] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    spec: dict = field(default_factory=dict)    # what was asked (blender, args, strict...) for resume
    fingerprint: dict = field(default_factory=dict)   # the scene file and render settings the frames were made with
    delivered: bool = False       # a run ended complete and said so (exit 0): running it again is a requeue
    run_from: int = 0             # first attempt of this rendering (attempts before it made frames since forgotten)
    # frames whose saved file looked wrong: {"reasons", "detail", "renders", "final", "cleared"} (suspects.py)
    suspects: dict[int, dict] = field(default_factory=dict)

    # ------------------------------------------------------------------ persistence
    @classmethod
    def open_or_create(cls, directory: Path, *, job: str, scene: str, frames: list[int],
                       output: OutputPattern | None = None, spec: dict | None = None) -> Ledger:
        """Load the job's ledger if it exists (resume), else create it. A different scene or frame
        set under the same job id is refused: that is a different job."""
        path = Path(directory) / "ledger.json"
        if path.exists():
            led = cls.load(path)
            if os.path.abspath(led.scene) != os.path.abspath(scene) or led.frames_requested != sorted(frames):
                raise ValueError(f"job {job!r} already exists for {led.scene} frames "
                                 f"{led.frames_requested[:3]}...; use another job id or delete {path.parent}")
            if output is not None:
                led.output = output.to_dict()
            return led
        ensure_private_dir(Path(directory))
        led = cls(job=job, scene=os.path.abspath(scene), frames_requested=sorted(frames), path=path,
                  output=output.to_dict() if output else None, spec=dict(spec or {}))
        led.save()
        return led

    @classmethod
    def load(cls, path: Path) -> Ledger:
        raw = json.loads(Path(path).read_text())
        if raw.get("version") != LEDGER_VERSION:
            raise ValueError(f"{path}: ledger version {raw.get('version')!r}, expected {LEDGER_VERSION}")
        return cls(
            job=raw["job"], scene=raw["scene"], frames_requested=[int(f) for f in raw["frames_requested"]],
            path=Path(path), output=raw.get("output"),
            frames={int(k): FrameRecord(**v) for k, v in raw.get("frames", {}).items()},
            frame_render_counts={int(k): int(v) for k, v in raw.get("frame_render_counts", {}).items()},
            expected_paths={int(k): v for k, v in raw.get("expected_paths", {}).items()},
            attempts=[Attempt(**a) for a in raw.get("attempts", [])],
            status=raw.get("status", "pending"), error=raw.get("error"), warnings=raw.get("warnings", []),
            created_at=raw.get("created_at", time.time()), updated_at=raw.get("updated_at", time.time()),
            spec=raw.get("spec", {}), fingerprint=raw.get("fingerprint", {}),
            delivered=bool(raw.get("delivered", False)), run_from=int(raw.get("run_from", 0)),
            suspects={int(k): dict(v) for k, v in raw.get("suspects", {}).items()},
        )

    def to_dict(self) -> dict:
        return {
            "version": LEDGER_VERSION, "job": self.job, "scene": self.scene,
            "frames_requested": self.frames_requested, "output": self.output,
            "frames": {str(k): {"path": v.path, "size": v.size, "verified_at": v.verified_at}
                       for k, v in sorted(self.frames.items())},
            "frame_render_counts": {str(k): v for k, v in sorted(self.frame_render_counts.items())},
            "expected_paths": {str(k): v for k, v in sorted(self.expected_paths.items())},
            "attempts": [a.to_dict() for a in self.attempts], "status": self.status, "error": self.error,
            "warnings": self.warnings, "created_at": self.created_at, "updated_at": self.updated_at,
            "spec": self.spec, "fingerprint": self.fingerprint, "delivered": self.delivered,
            "run_from": self.run_from,
            "suspects": {str(k): v for k, v in sorted(self.suspects.items())},
        }

    def save(self) -> None:
        """Atomic write: temp file in the same folder (0600), fsync, rename over the old one."""
        self.updated_at = time.time()
        ensure_private_dir(self.path.parent)
        data = json.dumps(self.to_dict(), separators=(",", ":")).encode()
        write_atomic(self.path, data)

    # ------------------------------------------------------------------ frames
    @property
    def pattern(self) -> OutputPattern | None:
        return OutputPattern(**self.output) if self.output else None

    def completed(self) -> list[int]:
        return sorted(f for f in self.frames if f in set(self.frames_requested))

    def missing(self) -> list[int]:
        done = self.frames
        return [f for f in self.frames_requested if f not in done]

    def path_for(self, frame: int) -> str | None:
        if frame in self.frames:
            return self.frames[frame].path
        if frame in self.expected_paths:
            return self.expected_paths[frame]
        pat = self.pattern
        return pat.path_for(frame) if pat else None

    def frame_started(self, frame: int, attempt: Attempt | None = None) -> None:
        self.frame_render_counts[frame] = self.frame_render_counts.get(frame, 0) + 1
        if attempt is not None:
            attempt.frame_in_flight = frame

    def frame_verified(self, frame: int, path: str, size: int, attempt: Attempt | None = None) -> None:
        self.frames[frame] = FrameRecord(path=os.path.abspath(path), size=size, verified_at=time.time())
        if attempt is not None:
            if frame not in attempt.frames_rendered:
                attempt.frames_rendered.append(frame)
            if attempt.frame_in_flight == frame:
                attempt.frame_in_flight = None

    def verify_frame(self, frame: int, path: str | None = None) -> tuple[bool, str]:
        """Check one frame's output on disk; record it if complete, remove it if partial."""
        path = path or self.path_for(frame)
        if not path:
            return False, "no known output path"
        v = verify_image(path)
        if v.ok:
            rec = self.frames.get(frame)
            if rec is None or rec.path != os.path.abspath(path) or rec.size != v.size:
                self.frames[frame] = FrameRecord(path=os.path.abspath(path), size=v.size, verified_at=time.time())
            return True, ""
        self.frames.pop(frame, None)
        if v.partial:
            remove_partial(path)
            return False, f"{path}: {v.reason} (removed, will render again)"
        return False, v.reason

    def renew(self, fingerprint: dict, *, fresh: bool = False) -> str | None:
        """Forget the verified frames that may no longer be right; returns why, or None.

        They are forgotten when asked (`fresh`), when the run that completed the job said so (the farm
        requeued a finished task: render it again; a retry after a failure resumes), and when the
        scene file or the render settings changed since they were made.
        """
        why = None
        if fresh:
            why = "--fresh: rendering every frame again"
        elif self.status == "complete" and self.delivered:
            why = "the job finished before (a requeue): rendering every frame again"
        elif self.fingerprint and self.fingerprint != fingerprint:
            changed = sorted(k for k in set(fingerprint) | set(self.fingerprint)
                             if fingerprint.get(k) != self.fingerprint.get(k))
            why = f"{' and '.join(changed)} changed since the frames were verified: rendering them again"
        self.fingerprint = dict(fingerprint)
        if why is None:
            return None
        self.frames.clear()
        self.suspects.clear()
        self.status, self.error, self.delivered = "pending", None, False
        self.run_from = len(self.attempts)          # a requeue is not a restart of the run before it
        return why

    def adopt_existing(self, newer_than: float, refusal: Callable[[str], str | None]
                       ) -> tuple[list[int], dict[int, str], list[str]]:
        """Frames already on disk that no run of this job verified: each complete file written after
        `newer_than` (the scene file's last save: an older file was rendered from an older scene) is
        kept where `refusal(path)` finds nothing wrong with it (reuse.py says when). Returns (frames
        kept, {frame: why it is rendered again}, notes on partial files removed)."""
        kept: list[int] = []
        refused: dict[int, str] = {}
        notes: list[str] = []
        for frame in self.missing():
            path = self.path_for(frame)
            try:
                if not path or os.stat(path).st_mtime <= newer_than:
                    if path and os.path.exists(path):
                        refused[frame] = "written before the scene was last saved"
                    continue
            except OSError:
                continue
            v = verify_image(path)
            why = v.reason if not v.ok else refusal(path)
            if why is None:
                self.frames[frame] = FrameRecord(path=os.path.abspath(path), size=v.size, verified_at=time.time())
                kept.append(frame)
            elif v.partial:
                remove_partial(path)
                notes.append(f"{path}: {v.reason} (removed, will render again)")
            else:
                refused[frame] = why
        return kept, refused, notes

    def in_the_way(self, frames: list[int]) -> list[str]:
        """The files on disk of `frames` that this job has not verified (Blender skips them where the
        scene's use_overwrite is off)."""
        out = []
        for frame in frames:
            path = None if frame in self.frames else self.path_for(frame)
            if path and os.path.lexists(path):
                out.append(path)
        return out

    def reverify(self, frames: list[int] | None = None) -> list[str]:
        """Re-check recorded and expected outputs (at launch and after an exit); returns notes on removals."""
        notes = []
        for frame in (self.frames_requested if frames is None else frames):
            ok, why = self.verify_frame(frame)
            if not ok and "removed" in why:
                notes.append(why)
        return notes

    # ------------------------------------------------------------------ attempts
    def new_attempt(self, frames: list[int], action: str) -> Attempt:
        a = Attempt(attempt=len(self.attempts) + 1, frames_planned=list(frames), action=action,
                    started_at=time.time())
        self.attempts.append(a)
        return a

    @property
    def restarts(self) -> int:
        """Blender launches after the first, since the verified frames were last forgotten (a retry
        that resumes counts the failed run's; a requeue, --fresh or a changed scene starts from 0)."""
        return max(0, len([a for a in self.attempts[self.run_from:] if a.pid is not None]) - 1)

    def running_attempt(self) -> Attempt | None:
        return next((a for a in reversed(self.attempts) if a.running and a.pid is not None), None)


# ---------------------------------------------------------------------- supervisor lock
class JobLocked(RuntimeError):
    """Another live healer process supervises this job."""


class SupervisorLock:
    """`supervisor.lock` beside the ledger: the pid (and start time) of the healer owning the job.

    A lock left by a dead process (killed healer) is taken over; a live owner is refused, so one
    job is never supervised, or its Blender launched, twice.
    """

    def __init__(self, directory: Path):
        self.path = Path(directory) / "supervisor.lock"
        self.held = False

    def acquire(self) -> None:
        ensure_private_dir(self.path.parent)
        me = {"pid": os.getpid(), "create_time": psutil.Process().create_time()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                owner = self._owner()
                if owner and owner.get("pid") != os.getpid() and process_alive(owner.get("pid"),
                                                                                owner.get("create_time")):
                    raise JobLocked(f"job is supervised by live process {owner['pid']} ({self.path})") from None
                try:
                    os.unlink(self.path)        # stale: its owner is gone
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise JobLocked(f"could not take {self.path}")

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner and owner.get("pid") == os.getpid():
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
            self.held = False


def process_alive(pid: int | None, create_time: float | None = None) -> bool:
    """True if `pid` runs and is not a zombie (and, when given, started at `create_time`: no pid reuse)."""
    if not pid:
        return False
    try:
        p = psutil.Process(int(pid))
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        if create_time is not None and abs(p.create_time() - float(create_time)) > 1.0:
            return False
        return True
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False
