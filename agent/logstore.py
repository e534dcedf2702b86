"""Each job's log records on the node's disk: appended, numbered, bounded, rotated, read back.

Layout (directory 0700, files 0600)::

    <data>/logs/<job key>/<first seq:012d>.ndjson   segments of stored records, rotated at 1 MiB
    <data>/logs/<job key>/meta.json                 {"job", "next", "bytes", "sessions": {session: n}}

A record gets the job's next `seq` (gap-free in what is stored) as it is stored. Records are
deduplicated by (capture session, n): the spool scanner may read a line twice after a crash. Bounds:

- per job (`RENDERWATCH_LOG_JOB_MAX_BYTES`): past it only warnings and errors are stored, the rest
  counted as dropped (reason `job_bound`);
- the whole store (`RENDERWATCH_LOG_MAX_BYTES`) and its age (`RENDERWATCH_LOG_RETENTION_DAYS`):
  `prune()` deletes whole jobs, those written longest ago first (a job's log is never cut in the middle).

A write that fails (a full disk) raises StoreFull after counting it: the scanner keeps the records
in the spool and tries again (nothing acknowledged, nothing lost while the spool holds them).

Usage::

    store = LogStore(data_dir / "logs", job_max_bytes=64 << 20)
    store.append_batch([rec, ...])               # records from kernel.logrecords.decode_record
    page = store.read("j1", after=0, limit=100, level="warning", frame=3)
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from kernel.logrecords import LEVEL_RANK

log = logging.getLogger(__name__)

SEGMENT_BYTES = 1 << 20
_SEGMENT = re.compile(r"^(\d{12})\.ndjson$")
_SAFE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$")
_WARNING = LEVEL_RANK["warning"]


class StoreFull(OSError):
    """The store could not write (a full disk, permissions): the records stay in the spool."""


def job_key(job: str) -> str:
    """The job's folder name: the id itself when it is a plain name, else a digest of it."""
    return job if _SAFE.match(job) and job not in (".", "..") else "h-" + hashlib.sha256(job.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass
class JobLog:
    job: str
    path: Path
    next: int = 1
    bytes: int = 0
    sessions: dict[str, int] = field(default_factory=dict)
    segments: list[int] = field(default_factory=list)     # first seq of each segment, ascending
    seg_bytes: int = 0                                     # size of the last segment
    changed: asyncio.Event | None = None                   # set when records are added (follow)


@dataclass
class StoreStats:
    stored: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEVEL_RANK, 0))
    duplicate: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> records not stored
    write_errors: int = 0
    pruned_jobs: int = 0
    writable: bool = True

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n


class LogStore:
    def __init__(self, root: Path, *, job_max_bytes: int = 64 << 20, max_bytes: int = 1 << 30,
                 retention_days: float = 7.0, clock: Callable[[], float] = time.time):
        self.root = Path(root)
        self.job_max_bytes = job_max_bytes
        self.max_bytes = max_bytes
        self.retention_s = retention_days * 86400
        self.clock = clock
        self.stats = StoreStats()
        self.jobs: dict[str, JobLog] = {}
        # Called with each record as stored (the OTLP shipper, span ids); set by the agent.
        self.on_stored: Callable[[dict[str, Any]], None] | None = None

    # -- writing --------------------------------------------------------------------------------
    def _job(self, job: str, create: bool) -> JobLog | None:
        jl = self.jobs.get(job)
        if jl is not None:
            return jl
        path = self.root / job_key(job)
        if not path.is_dir():
            if not create:
                return None
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            path.mkdir(mode=0o700, exist_ok=True)
        jl = JobLog(job, path)
        self._load(jl)
        self.jobs[job] = jl
        return jl

    def _load(self, jl: JobLog) -> None:
        try:
            meta = json.loads((jl.path / "meta.json").read_text())
            jl.next, jl.bytes = int(meta["next"]), int(meta["bytes"])
            jl.sessions = {str(k): int(v) for k, v in meta["sessions"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        try:
            names = os.listdir(jl.path)
        except OSError:
            names = []
        jl.segments = sorted(int(m.group(1)) for n in names if (m := _SEGMENT.match(n)))
        if not jl.segments:
            return
        last = jl.path / f"{jl.segments[-1]:012d}.ndjson"
        try:
            data = last.read_bytes()
        except OSError:
            return
        jl.seg_bytes = len(data)
        # The meta is written after each batch: a batch stored just before a crash is read back here.
        for line in data.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("seq"), int) and rec["seq"] >= jl.next:
                jl.next = rec["seq"] + 1
                jl.bytes += len(line) + 1
                if isinstance(rec.get("s"), str) and isinstance(rec.get("n"), int):
                    jl.sessions[rec["s"]] = max(jl.sessions.get(rec["s"], 0), rec["n"])

    def append_batch(self, records: Iterable[dict[str, Any]]) -> int:
        """Store records (decoded spool records) per job; returns how many were stored. StoreFull when
        the disk refuses (those not yet stored are stored when the scanner tries again)."""
        by_job: dict[str, list[bytes]] = {}
        stored: list[tuple[JobLog, dict[str, Any]]] = []
        try:
            for rec in records:
                try:
                    jl = self._job(rec["job"], True)
                except OSError as e:
                    self._failed(e)
                assert jl is not None
                s, n = rec["s"], rec["n"]
                if n <= jl.sessions.get(s, 0):
                    self.stats.duplicate += 1
                    continue
                if jl.bytes >= self.job_max_bytes and LEVEL_RANK[rec["level"]] < _WARNING:
                    jl.sessions[s] = n
                    self.stats.drop("job_bound")
                    continue
                out = {"seq": jl.next, "ts": rec["ts"], "job": rec["job"], "attempt": rec.get("attempt"),
                       "frame": rec.get("frame"), "phase": rec.get("phase"), "level": rec["level"],
                       "text": rec["text"]}
                if rec.get("folded"):
                    out["folded"] = rec["folded"]
                out["trace_id"], out["span_id"] = rec.get("trace_id"), rec.get("span_id")
                out["s"], out["n"] = s, n
                line = json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace") + b"\n"
                if jl.seg_bytes + len(line) > SEGMENT_BYTES and jl.seg_bytes and not by_job.get(jl.job):
                    jl.segments.append(jl.next)
                    jl.seg_bytes = 0
                if not jl.segments:
                    jl.segments.append(jl.next)
                self._write(jl, line)
                jl.next += 1
                jl.bytes += len(line)
                jl.seg_bytes += len(line)
                jl.sessions[s] = n
                by_job.setdefault(jl.job, []).append(line)
                self.stats.stored[rec["level"]] += 1
                stored.append((jl, out))
        finally:
            for job in by_job:
                self._save_meta(self.jobs[job])
            for _jl, out in stored:
                if self.on_stored is not None:
                    self.on_stored(out)
            for job in by_job:
                ev = self.jobs[job].changed
                if ev is not None:
                    ev.set()
                    self.jobs[job].changed = None
        if not self.stats.writable and by_job:
            self.stats.writable = True
            log.warning("log store %s writable again", self.root)
        return len(stored)

    def _write(self, jl: JobLog, line: bytes) -> None:
        path = jl.path / f"{jl.segments[-1]:012d}.ndjson"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                n = os.write(fd, line)
                if n < len(line):
                    os.ftruncate(fd, jl.seg_bytes)
                    raise OSError(errno.ENOSPC, "short write")
            finally:
                os.close(fd)
        except OSError as e:
            self._failed(e)

    def _failed(self, e: OSError) -> NoReturn:
        self.stats.write_errors += 1
        if self.stats.writable:
            self.stats.writable = False
            log.warning("log store %s not writable (%s): records wait in the spool", self.root, e)
        raise StoreFull(e.errno or errno.EIO, str(e)) from None

    def _save_meta(self, jl: JobLog) -> None:
        tmp = jl.path / "meta.json.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump({"job": jl.job, "next": jl.next, "bytes": jl.bytes, "sessions": jl.sessions}, f)
            os.replace(tmp, jl.path / "meta.json")
        except OSError:
            pass          # rebuilt from the last segment at the next start

    # -- reading --------------------------------------------------------------------------------
    def known(self, job: str) -> bool:
        return self._job(job, False) is not None

    def changed(self, job: str) -> asyncio.Event:
        """An event set when the job's next records are stored (follow)."""
        jl = self._job(job, True)
        assert jl is not None
        if jl.changed is None:
            jl.changed = asyncio.Event()
        return jl.changed

    def read(self, job: str, *, after: int = 0, limit: int = 1000, level: str | None = None,
             frame: int | None = None, attempt: int | None = None,
             span: Callable[[dict[str, Any]], None] | None = None) -> tuple[list[dict[str, Any]], bool]:
        """(records with seq > after matching the filters, oldest first, at most `limit`; truncated)."""
        jl = self._job(job, False)
        if jl is None:
            return [], False
        floor = LEVEL_RANK[level] if level else 0
        segs = jl.segments
        start = 0
        for i, first in enumerate(segs):
            if first <= after + 1:
                start = i
        out: list[dict[str, Any]] = []
        for first in segs[start:]:
            try:
                data = (jl.path / f"{first:012d}.ndjson").read_bytes()
            except OSError:
                continue
            for line in data.split(b"\n"):
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec["seq"] <= after or LEVEL_RANK.get(rec["level"], 0) < floor:
                    continue
                if (frame is not None and rec.get("frame") != frame) or (attempt is not None and rec.get("attempt") != attempt):
                    continue
                if len(out) >= limit:
                    return out, True
                rec.pop("s", None)
                rec.pop("n", None)
                if rec.get("span_id") is None and span is not None:
                    span(rec)
                out.append(rec)
        return out, False

    # -- bounds ---------------------------------------------------------------------------------
    def prune(self, active: set[str] = frozenset()) -> int:  # type: ignore[assignment]
        """Delete jobs past the retention age, then the oldest until the store fits max_bytes."""
        try:
            names = os.listdir(self.root)
        except OSError:
            return 0
        now, entries, total = self.clock(), [], 0
        for name in names:
            p = self.root / name
            try:
                meta = json.loads((p / "meta.json").read_text())
                job, size = str(meta["job"]), int(meta["bytes"])
                mtime = os.stat(p / "meta.json").st_mtime
            except (OSError, ValueError, KeyError, TypeError):
                continue
            total += size
            entries.append((mtime, job, size, p))
        gone = 0
        for mtime, job, size, p in sorted(entries):
            if job in active:
                continue
            if now - mtime <= self.retention_s and total <= self.max_bytes:
                break
            shutil.rmtree(p, ignore_errors=True)
            self.jobs.pop(job, None)
            total -= size
            gone += 1
        self.stats.pruned_jobs += gone
        return gone
