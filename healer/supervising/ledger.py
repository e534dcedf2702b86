"""The frame ledger: what a render job asked for, which frames have a verified output, every attempt.

Per job, in `<home>/healer/jobs/<job>/` (0700, files 0600): `ledger.json`, a whole snapshot written
atomically (temp file, fsync, rename), and `ledger.journal`, one line per save since that snapshot
with what the save changed (ledger_journal.py; fdatasynced at most once a second), so a frame's save
costs the same at frame 10 and frame 10,000, and a healer killed at any point leaves the previous or
the new state, never a torn one (a torn last line is ignored). The journal is compacted into a new snapshot once it
outgrows it, and whenever the job's status changes: a job at rest is whole in `ledger.json`. A lock
file beside it (`supervisor.lock`) names the healer supervising the job; the ledger names the
Blender process of the attempt in progress.

Usage::

    led = Ledger.open_or_create(job_dir(job), job=job, scene=..., frames=[1, 2, 3], output=pattern)
    led.frame_started(2); led.frame_verified(2, path, size); led.save()
    led.missing()  # frames still to render
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psutil

from healer.images.verify import verify_image
from healer.supervising.ledger_journal import (
    COMPACT_MIN_BYTES,
    SYNC_INTERVAL_S,
    FrameList,
    TrackedMap,
    append_line,
    journal_path,
    read_journal,
)
from healer.supervising.outputs import OutputPattern, remove_partial
from kernel.files import write_atomic
from kernel.paths import check_job_id, ensure_private_dir, home

LEDGER_VERSION = 1


def jobs_dir(env: Mapping[str, str] | None = None) -> Path:
    return home(env) / "healer" / "jobs"


def job_dir(job: str, env: Mapping[str, str] | None = None) -> Path:
    """The job's folder; ConfigError (a ValueError) for an id that cannot name one."""
    return jobs_dir(env) / check_job_id(job, "job id")


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

    def __setattr__(self, name: str, value: object) -> None:
        # the frame lists: O(1) `in`, and the journal writes only what was appended (ledger_journal)
        if name in _FRAME_LISTS and not isinstance(value, FrameList):
            value = FrameList(value)  # type: ignore[arg-type]
        object.__setattr__(self, name, value)

    REPORT_KEYS = ("attempt", "pid", "frames_planned", "frames_rendered", "exit_code", "exit_signal",
                   "error_type", "error_summary", "started_at", "ended_at")

    def report(self) -> dict:
        return {k: list(v) if isinstance(v, list) else v for k in self.REPORT_KEYS for v in [getattr(self, k)]}

    def to_dict(self) -> dict:
        """Every field, lists copied (dataclasses.asdict deep-copies field by field: 5x slower, and the
        ledger is saved at every frame's start and end)."""
        return {k: list(v) if isinstance(v, list) else v for k, v in vars(self).items()}

    @property
    def running(self) -> bool:
        return self.ended_at is None


_FRAME_LISTS = ("frames_planned", "frames_rendered")
_MAPS = ("frames", "frame_render_counts", "expected_paths", "suspects")
_HEADER = ("job", "scene", "output", "status", "error", "created_at", "spec", "fingerprint", "delivered", "run_from")


@dataclass
class _Journal:
    """What this process last wrote: the journal's tag, size and inode, and what its records hold."""

    gen: int
    size: int
    ino: int
    snapshot_bytes: int
    header: str
    requested: tuple[int, int]              # id and length of frames_requested
    attempts: tuple[int, list[dict]]        # id of the attempts list, each attempt's fields as written
    warnings: tuple[int, int]               # id and length of the warnings list
    synced_at: float = 0.0                  # monotonic time of the journal's last fdatasync


@dataclass(frozen=True)
class FrameCheck:
    """One frame's output checked on disk (Ledger.check_frame)."""

    ok: bool                  # a whole file: recorded as verified
    reason: str = ""          # why not
    removed: bool = False     # a partial file, removed: the frame renders again


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

    # not fields: what this process wrote to the journal, the highest generation seen, the frame set
    _journal: ClassVar[_Journal | None]
    _seen_gen: ClassVar[int]
    _requested: ClassVar[frozenset[int]]
    # what a save that fails with OSError (a full or read-only state disk mid-render) does instead of
    # raising: the supervisor's says so once and the render goes on (the next save retries the change)
    _on_save_error: ClassVar[Any]          # Callable[[OSError], None] | None (a ClassVar callable reads as a method)
    # the wall clock (epoch seconds) of every time the ledger records: the supervisor's injected one (use_clock)
    _wall: ClassVar[Any]                   # Callable[[], float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_on_save_error", None)
        object.__setattr__(self, "_wall", time.time)
        object.__setattr__(self, "_journal", None)
        object.__setattr__(self, "_seen_gen", 0)
        object.__setattr__(self, "_requested", frozenset(self.frames_requested))
        self.frames.count_members(self._requested)  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: object) -> None:
        if name in _MAPS and not isinstance(value, TrackedMap):
            value = TrackedMap(value, mutable_values=name == "suspects")  # type: ignore[call-overload]
            value.reset, value.dirty = True, set(value)
        object.__setattr__(self, name, value)
        if name in ("frames", "frames_requested") and "_requested" in self.__dict__:    # after __init__
            if name == "frames_requested":
                object.__setattr__(self, "_requested", frozenset(self.frames_requested))
            self.frames.count_members(self._requested)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ persistence
    @classmethod
    def open_or_create(cls, directory: Path, *, job: str, scene: str, frames: list[int],
                       output: OutputPattern | None = None, spec: dict | None = None,
                       wall: Callable[[], float] = time.time) -> Ledger:
        """Load the job's ledger if it exists (resume), else create it. A different scene or frame
        set under the same job id is refused: that is a different job. `wall`: the clock of the times
        it records (epoch seconds)."""
        path = Path(directory) / "ledger.json"
        if path.exists():
            led = cls.load(path)
            led.use_clock(wall)
            if os.path.abspath(led.scene) != os.path.abspath(scene) or led.frames_requested != sorted(frames):
                raise ValueError(f"job {job!r} already exists for {led.scene} frames "
                                 f"{led.frames_requested[:3]}...; use another job id or delete {path.parent}")
            if output is not None:
                led.output = output.to_dict()
            return led
        ensure_private_dir(Path(directory))
        now = wall()
        led = cls(job=job, scene=os.path.abspath(scene), frames_requested=sorted(frames), path=path,
                  output=output.to_dict() if output else None, spec=dict(spec or {}), created_at=now, updated_at=now)
        led.use_clock(wall)
        led.save()
        return led

    @classmethod
    def load(cls, path: Path) -> Ledger:
        """The snapshot and the journal's whole records after it (a ledger.json of any earlier
        version, which had no journal, loads as it is)."""
        for _ in range(3):
            raw = json.loads(Path(path).read_text())
            gen = int(raw.get("journal", 0))
            jgen, records = read_journal(Path(path))
            if jgen is None or jgen <= gen:
                break               # else compacted between the two reads: read the new snapshot
        led = cls._from_snapshot(raw, Path(path))
        if jgen == gen and gen > 0:
            for rec in records:
                led._replay(rec)
        object.__setattr__(led, "_seen_gen", max(gen, jgen or 0))
        return led

    @classmethod
    def _from_snapshot(cls, raw: dict, path: Path) -> Ledger:
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
        """Make the ledger's state durable: what changed since the last save appended to the journal
        (fdatasynced at most once a second); the journal compacted into a new snapshot when due
        (ledger_journal.py says what survives a killed healer and a power loss). An OSError goes to
        `when_unwritable`'s handler when one is set, else it is raised; either way the previous state stays on disk."""
        try:
            self._save()
        except OSError as e:
            handler = self._on_save_error
            if handler is None:
                raise
            handler(e)

    def use_clock(self, wall: Callable[[], float]) -> None:
        """Record times (updated, verified, attempt started) from this clock (epoch seconds)."""
        object.__setattr__(self, "_wall", wall)

    def when_unwritable(self, handler: Callable[[OSError], None] | None) -> None:
        """What save() does with an OSError instead of raising it (None: raise)."""
        object.__setattr__(self, "_on_save_error", handler)

    def _save(self) -> None:
        self.updated_at = self._wall()
        j: _Journal | None = self._journal
        if j is not None:
            rec = self._delta(j)
            if rec is not None:
                line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
                if j.size + len(line) <= max(COMPACT_MIN_BYTES, j.snapshot_bytes):
                    now = time.monotonic()
                    sync = now - j.synced_at >= SYNC_INTERVAL_S
                    try:
                        written = append_line(journal_path(self.path), line, j.size, j.ino, sync=sync)
                    except FileNotFoundError:
                        written = False
                    if written:
                        if sync:
                            j.synced_at = now
                        j.size += len(line)
                        self._written(j)
                        return
        self._compact()

    def _compact(self) -> None:
        """A whole snapshot tagged with the next generation, then a fresh journal with that tag: a
        crash between the two renames leaves a stale journal that load() ignores."""
        ensure_private_dir(self.path.parent)
        prev = self._journal
        gen = max(self._seen_gen, prev.gen if prev else 0) + 1
        doc = self.to_dict()
        doc["journal"] = gen
        data = json.dumps(doc, separators=(",", ":")).encode()
        write_atomic(self.path, data)
        object.__setattr__(self, "_journal", None)     # the old journal is stale from here
        object.__setattr__(self, "_seen_gen", gen)
        head = (json.dumps({"journal": gen, "job": self.job}) + "\n").encode()
        jpath = journal_path(self.path)
        write_atomic(jpath, head)
        j = _Journal(gen=gen, size=len(head), ino=os.stat(jpath).st_ino, snapshot_bytes=len(data), header="",
                     requested=(0, 0), attempts=(0, []), warnings=(0, 0), synced_at=time.monotonic())
        for m in self._maps():
            m.clean()
        j.attempts = (id(self.attempts), [])
        self._written(j)
        object.__setattr__(self, "_journal", j)

    def _maps(self) -> tuple[TrackedMap, ...]:
        return (self.frames, self.frame_render_counts, self.expected_paths, self.suspects)  # type: ignore[return-value]

    def _header(self) -> str:
        return json.dumps({k: getattr(self, k) for k in _HEADER}, sort_keys=True, default=str)

    def _delta(self, j: _Journal) -> dict | None:
        """The journal record of what changed since the last write; None: compact instead (the
        header changed, or a list was replaced or cut)."""
        if (self._header() != j.header or (id(self.frames_requested), len(self.frames_requested)) != j.requested
                or id(self.attempts) != j.attempts[0] or len(self.attempts) < len(j.attempts[1])
                or id(self.warnings) != j.warnings[0] or len(self.warnings) < j.warnings[1]):
            return None
        rec: dict = {"u": self.updated_at}
        for key, m, enc in zip("fnxs", self._maps(), (_enc_frame, None, None, None), strict=True):
            if m.reset:
                rec[key + "0"] = 1
            if m.dirty:
                rec[key] = {str(k): None if k not in m else (enc(dict.get(m, k)) if enc else dict.get(m, k))  # type: ignore[arg-type]
                            for k in m.dirty}
        if len(self.warnings) > j.warnings[1]:
            rec["w"] = [j.warnings[1], self.warnings[j.warnings[1]:]]
        changed = []
        for i, a in enumerate(self.attempts):
            d = _attempt_delta(a, j.attempts[1][i] if i < len(j.attempts[1]) else None)
            if d:
                changed.append([i, d])
        if changed:
            rec["a"] = changed
        return rec

    def _written(self, j: _Journal) -> None:
        """What the journal holds now: nothing of this ledger is pending."""
        for m in self._maps():
            m.clean()
        j.header = self._header()
        j.requested = (id(self.frames_requested), len(self.frames_requested))
        j.warnings = (id(self.warnings), len(self.warnings))
        seen = j.attempts[1]
        for i, a in enumerate(self.attempts):
            fields = {k: (list(v) if isinstance(v, list) and not isinstance(v, FrameList) else
                          (id(v) if isinstance(v, FrameList) else v)) for k, v in vars(a).items()}
            for k in _FRAME_LISTS:
                getattr(a, k).clean()
            if i < len(seen):
                seen[i] = fields
            else:
                seen.append(fields)

    def _replay(self, rec: dict) -> None:
        """Apply one journal record (load)."""
        for key, m, dec in zip("fnxs", self._maps(), (_dec_frame, int, None, dict), strict=True):
            if rec.get(key + "0"):
                m.clear()
            for k, v in (rec.get(key) or {}).items():
                if v is None:
                    m.pop(int(k), None)
                else:
                    m[int(k)] = dec(v) if dec else v
        if "w" in rec:
            start, items = rec["w"]
            self.warnings[start:] = items
        for i, d in rec.get("a", []):
            if i >= len(self.attempts):
                self.attempts.append(Attempt(**{k: v for k, v in d.items() if not k.endswith("@")}))
                continue
            a = self.attempts[i]
            for k, v in d.items():
                if k.endswith("@"):
                    start, items = v
                    setattr(a, k[:-1], [*getattr(a, k[:-1])[:start], *items])
                else:
                    setattr(a, k, v)
        self.updated_at = rec.get("u", self.updated_at)

    # ------------------------------------------------------------------ frames
    @property
    def pattern(self) -> OutputPattern | None:
        return OutputPattern(**self.output) if self.output else None

    def completed(self) -> list[int]:
        frames = self.frames
        if self.completed_count() == len(frames):
            return sorted(frames)
        return sorted(f for f in frames if f in self._requested)

    def completed_count(self) -> int:
        """len(completed()), in O(1): what each frame's progress line and metric need."""
        return self.frames.n_members  # type: ignore[attr-defined]

    def requested(self, frame: int) -> bool:
        """Whether the job asked for this frame (O(1))."""
        return frame in self._requested

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
        self.frames[frame] = FrameRecord(path=os.path.abspath(path), size=size, verified_at=self._wall())
        if attempt is not None:
            if frame not in attempt.frames_rendered:
                attempt.frames_rendered.append(frame)
            if attempt.frame_in_flight == frame:
                attempt.frame_in_flight = None

    def verify_frame(self, frame: int, path: str | None = None) -> tuple[bool, str]:
        """Check one frame's output on disk; record it if complete, remove it if partial: (ok, why not)."""
        c = self.check_frame(frame, path)
        return c.ok, c.reason

    def check_frame(self, frame: int, path: str | None = None) -> FrameCheck:
        """Check one frame's output on disk; record it if complete, remove it if partial."""
        path = path or self.path_for(frame)
        if not path:
            return FrameCheck(False, "no known output path")
        v = verify_image(path)
        if v.ok:
            rec = self.frames.get(frame)
            if rec is None or rec.path != os.path.abspath(path) or rec.size != v.size:
                self.frames[frame] = FrameRecord(path=os.path.abspath(path), size=v.size, verified_at=self._wall())
            return FrameCheck(True)
        self.frames.pop(frame, None)
        if v.partial:
            remove_partial(path)
            return FrameCheck(False, f"{path}: {v.reason} (removed, will render again)", removed=True)
        return FrameCheck(False, v.reason)

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
                self.frames[frame] = FrameRecord(path=os.path.abspath(path), size=v.size, verified_at=self._wall())
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
            c = self.check_frame(frame)
            if c.removed:
                notes.append(c.reason)
        return notes

    # ------------------------------------------------------------------ attempts
    def new_attempt(self, frames: list[int], action: str) -> Attempt:
        a = Attempt(attempt=len(self.attempts) + 1, frames_planned=list(frames), action=action,
                    started_at=self._wall())
        self.attempts.append(a)
        return a

    @property
    def restarts(self) -> int:
        """Blender launches after the first, since the verified frames were last forgotten (a retry
        that resumes counts the failed run's; a requeue, --fresh or a changed scene starts from 0)."""
        return max(0, len([a for a in self.attempts[self.run_from:] if a.pid is not None]) - 1)

    def running_attempt(self) -> Attempt | None:
        return next((a for a in reversed(self.attempts) if a.running and a.pid is not None), None)


def _enc_frame(r: FrameRecord) -> list:
    return [r.path, r.size, r.verified_at]


def _dec_frame(v: list) -> FrameRecord:
    return FrameRecord(path=v[0], size=int(v[1]), verified_at=float(v[2]))


def _attempt_delta(a: Attempt, seen: dict | None) -> dict:
    """The fields of an attempt the journal does not hold yet: all of a new one, else the changed
    ones, and of a frame list only the frames appended since (`name@: [start, frames]`)."""
    if seen is None:
        return a.to_dict()
    d: dict = {}
    for k, v in vars(a).items():
        if isinstance(v, FrameList):
            if v.rewritten or id(v) != seen.get(k):
                d[k] = list(v)
            elif len(v) > v.written:
                d[k + "@"] = [v.written, v[v.written:]]
        elif k not in seen or seen[k] != v:
            d[k] = list(v) if isinstance(v, list) else v
    return d


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
