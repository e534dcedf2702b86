"""The incident journal: every incident is on disk before `Incidents.emit()` returns, so before the healer acts.

`emit()` used to put an incident on an in-memory queue; a healer killed in the milliseconds before the
worker thread wrote it to the webhook outbox (or handed it to Sentry) lost it. Now `emit()` first writes
one file per incident (``home()/healer/incidents/<created ns>-<id>.json``, 0600, atomic, fsynced) naming
the exporters it is for; the worker marks each exporter done once the incident is safe there (the
webhook outbox holds it; Sentry's transport has sent it), and removes the file when all are done. The
next healer to start on the host replays what a dead healer left, to the exporters not done yet. A
replay never doubles a notification: the webhook outbox and Sentry both key on the incident's id
(the outbox file name and the delivery id; Sentry's event_id, which Sentry de-duplicates).

Usage::

    journal = Journal(home() / "healer" / "incidents")
    journal.write(incident, ["webhooks", "sentry"])    # before acting on it
    journal.done(incident.id, "webhooks")              # the exporter has it; the file goes when all have
    for incident, left in journal.orphans():           # what a killed healer did not hand over
        ...
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil

from healer.diagnosis.errors import Finding, RenderError, error_class
from healer.incidents.model import Incident
from kernel.files import remove_stale_temps, sync_dir, write_atomic
from kernel.paths import ensure_private_dir

log = logging.getLogger(__name__)

VERSION = 1


class Journal:
    """One file per incident not yet safe with every exporter (see module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        ensure_private_dir(self.path)
        self._files: dict[str, tuple[Path, dict[str, Any]]] = {}   # id → (file, record) written by this process
        self._me = _process_identity(os.getpid())
        remove_stale_temps(self.path)          # what a healer killed mid-write left
        self._lock = threading.Lock()          # done() runs on the worker and on close()

    def write(self, incident: Incident, exporters: Iterable[str]) -> Path:
        """Put the incident on disk (fsynced) for these exporters. Raises OSError when it cannot."""
        rec = {"v": VERSION, "id": incident.id, "kind": incident.kind, "time": incident.time,
               "info": _json_safe(incident.info), "error": error_to_dict(incident.error),
               "exporters": sorted(set(exporters)), "done": [], "writer": self._me}
        path = self.path / f"{int(incident.time * 1e9):020d}-{incident.id}.json"
        write_atomic(path, json.dumps(rec, separators=(",", ":"), default=str).encode())
        sync_dir(self.path)
        self._files[incident.id] = (path, rec)
        return path

    def done(self, incident_id: str, exporter: str) -> None:
        """The exporter holds the incident safely; the file goes once every exporter does."""
        with self._lock:
            entry = self._files.get(incident_id)
            if entry is None:
                return
            path, rec = entry
            if exporter not in rec["done"]:
                rec["done"].append(exporter)
            try:
                if set(rec["done"]) >= set(rec["exporters"]):
                    self._files.pop(incident_id, None)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                else:
                    write_atomic(path, json.dumps(rec, separators=(",", ":"), default=str).encode(), sync=False)
            except OSError as e:
                log.warning("incident journal: could not update %s (%s); a later start may replay it", path, e)

    def orphans(self) -> Iterator[tuple[Incident, set[str]]]:
        """Incidents a healer that is no longer running left behind, oldest first, with the exporters
        still owed; this process adopts each one (its next `done()` calls settle it). An unreadable file
        is moved aside to ``bad/`` and logged."""
        try:
            names = sorted(e.name for e in os.scandir(self.path)
                           if e.is_file() and e.name.endswith(".json") and not e.name.startswith("."))
        except FileNotFoundError:
            return
        for name in names:
            path = self.path / name
            try:
                rec = json.loads(path.read_bytes())
                if not isinstance(rec, dict) or rec.get("v") != VERSION:
                    raise ValueError(f"not a version-{VERSION} journal record")
                if _alive(rec.get("writer")):
                    continue                    # another healer on this host is still handing it over
                incident = Incident(kind=str(rec["kind"]), info=dict(rec.get("info") or {}),
                                    error=error_from_dict(rec.get("error")), id=str(rec["id"]),
                                    time=float(rec["time"]))
                left = set(rec.get("exporters") or ()) - set(rec.get("done") or ())
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError) as e:
                bad = self.path / "bad"
                bad.mkdir(exist_ok=True, mode=0o700)
                with contextlib.suppress(OSError):
                    os.replace(path, bad / name)
                log.warning("incident journal: %s is unreadable (%s): moved to %s; nothing else is affected",
                            path, e, bad)
                continue
            if not left:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            rec["writer"] = self._me
            self._files[incident.id] = (path, rec)
            yield incident, left


# -- records ---------------------------------------------------------------------------------------------------
def error_to_dict(error: RenderError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    d = error.to_dict()
    d["native_frames"] = list(error.native_frames)
    return d


def error_from_dict(d: Any) -> RenderError | None:
    """The typed error back from `error_to_dict` (an unknown type becomes `unknown`)."""
    if not isinstance(d, Mapping):
        return None
    try:
        cls = error_class(str(d.get("type")))
    except KeyError:
        cls = error_class("unknown")

    def opt_int(v: Any) -> int | None:
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    findings = tuple(Finding(str(f.get("type", "")), int(f.get("line", 0) or 0), str(f.get("text", "")))
                     for f in d.get("findings") or () if isinstance(f, Mapping))
    frames = tuple((str(f[0]), int(f[1]), str(f[2])) for f in d.get("python_frames") or ()
                   if isinstance(f, list | tuple) and len(f) == 3)
    return cls(summary=str(d.get("summary") or ""), findings=findings, fatal=bool(d.get("fatal", True)),
               frame=opt_int(d.get("frame")), exit_code=opt_int(d.get("exit_code")),
               exit_signal=opt_int(d.get("exit_signal")),
               crash_file=str(d["crash_file"]) if d.get("crash_file") else None,
               python_frames=frames, native_frames=tuple(str(x) for x in d.get("native_frames") or ()))


def _json_safe(info: Mapping[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(dict(info), default=str))
    return out if isinstance(out, dict) else {}


def _process_identity(pid: int) -> dict[str, Any]:
    try:
        return {"pid": pid, "start": psutil.Process(pid).create_time()}
    except psutil.Error:
        return {"pid": pid, "start": None}


def _alive(writer: Any) -> bool:
    """Whether the process that wrote a record still runs (the same process: its start time matches)."""
    if not isinstance(writer, Mapping) or not isinstance(writer.get("pid"), int):
        return False
    try:
        p = psutil.Process(writer["pid"])
        start = writer.get("start")
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return start is None or abs(p.create_time() - float(start)) < 1.0
    except (psutil.Error, ValueError, TypeError):
        return False


__all__ = ["Journal", "error_from_dict", "error_to_dict"]
