"""Retention of the healer's state on a node that renders for months: job folders and the scene cache.

Run at every job's start (supervisor), so a node that renders prunes as it goes and an idle one keeps
what it has. A job folder's age is that of its newest file (the ledger is written at every frame);
a folder whose supervisor lock names a live process is never touched.

- a delivered job (complete, exited 0): kept `keep_complete_days` (default 7): a requeue within that
  time renders it again anyway, the folder is only its history;
- any other job (failed, cancelled, interrupted): kept `keep_incomplete_days` (default 30), so a
  retry resumes from its verified frames;
- a scene-cache entry not read or written for `scene_cache_days` (default 30) goes (it is rebuilt
  from the .blend on the next job of that scene).

Usage::

    policy = RetentionPolicy.from_env(os.environ)
    prune_jobs(jobs_dir(), policy, keep={"this-job"}); prune_scene_cache(scenes_dir, policy)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Container, Mapping
from dataclasses import dataclass
from pathlib import Path

from blender_hooks.settings import (  # noqa: F401 (names read from here)
    ENV_HEALER_KEEP_COMPLETE,
    ENV_HEALER_KEEP_INCOMPLETE,
    ENV_HEALER_SCENE_CACHE_DAYS,
    ConfigError,
)

log = logging.getLogger(__name__)
DAY = 86400.0


@dataclass(frozen=True)
class RetentionPolicy:
    keep_complete_days: float = 7.0
    keep_incomplete_days: float = 30.0
    scene_cache_days: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RetentionPolicy:
        vals = {}
        for name, var in (("keep_complete_days", ENV_HEALER_KEEP_COMPLETE),
                          ("keep_incomplete_days", ENV_HEALER_KEEP_INCOMPLETE),
                          ("scene_cache_days", ENV_HEALER_SCENE_CACHE_DAYS)):
            raw = env.get(var)
            if raw:
                try:
                    vals[name] = float(raw)
                    if not vals[name] > 0:
                        raise ValueError
                except ValueError:
                    raise ConfigError(f"{var}: {raw!r} is not a number of days > 0") from None
        return cls(**vals)


def _newest_mtime(directory: Path) -> float:
    newest = 0.0
    for entry in os.scandir(directory):
        try:
            newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
        except FileNotFoundError:
            continue
    return newest or directory.stat().st_mtime


def _delivered(directory: Path) -> bool:
    """The job's run ended complete and said so (the ledger's `delivered`); unreadable: not delivered."""
    from healer.supervising.ledger import Ledger

    try:
        led = Ledger.load(directory / "ledger.json")
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return led.status == "complete" and led.delivered


def _locked_by_live_process(directory: Path) -> bool:
    from healer.supervising.ledger import process_alive

    try:
        owner = json.loads((directory / "supervisor.lock").read_text() or "null")
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True                     # unreadable: leave it to whoever holds it
    return bool(owner) and process_alive(owner.get("pid"), owner.get("create_time"))


def prune_jobs(root: Path, policy: RetentionPolicy, keep: Container[str] = (), now: float | None = None) -> list[str]:
    """Delete job folders past their retention; returns the job ids removed."""
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name in keep or not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        try:
            age = now - _newest_mtime(path)
            if age <= min(policy.keep_complete_days, policy.keep_incomplete_days) * DAY:
                continue                # young: not even its ledger is read
            limit = policy.keep_complete_days if _delivered(path) else policy.keep_incomplete_days
            if age <= limit * DAY or _locked_by_live_process(path):
                continue
            shutil.rmtree(path)
            removed.append(entry.name)
        except OSError as e:
            log.warning("retention: cannot prune job folder %s: %s", path, e)
    if removed:
        log.info("retention: removed %d job folder(s) past retention", len(removed))
    return removed


def prune_scene_cache(directory: Path, policy: RetentionPolicy, now: float | None = None) -> int:
    """Delete scene-cache entries not used for `scene_cache_days`; returns how many."""
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
            if entry.is_file(follow_symlinks=False) and now - max(st.st_mtime, st.st_atime) > policy.scene_cache_days * DAY:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


def prune_at_start(env: Mapping[str, str], job: str) -> None:
    """What a job's start prunes (never the starting job's own folder). Errors are logged, never raised:
    retention must not stop a render."""
    from healer.supervising.ledger import jobs_dir
    from kernel.paths import home

    try:
        policy = RetentionPolicy.from_env(env)
    except ConfigError as e:
        log.error("retention not applied: %s", e)
        return
    try:
        prune_jobs(jobs_dir(env), policy, keep={job})
        prune_scene_cache(home(env) / "healer" / "scenes", policy)
    except Exception:           # a retention bug must not fail the job
        log.exception("retention failed")
