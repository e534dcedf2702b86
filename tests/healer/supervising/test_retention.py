"""healer.supervising.retention: job folders and scene-cache entries past retention go at a job's start;
what a resume needs (an unfinished job's folder within its days, a live job's folder) stays."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from blender_hooks.settings import ConfigError
from healer.supervising.ledger import Ledger, jobs_dir
from healer.supervising.retention import DAY, RetentionPolicy, prune_at_start, prune_jobs, prune_scene_cache


def _job(root: Path, job: str, *, age_days: float, status: str, delivered: bool = False) -> Path:
    d = root / job
    led = Ledger.open_or_create(d, job=job, scene="/shots/a.blend", frames=[1, 2, 3])
    led.status, led.delivered = status, delivered
    led.save()
    then = time.time() - age_days * DAY
    for p in [d, *d.iterdir()]:
        os.utime(p, (then, then))
    return d


def test_old_job_folders_go_and_what_a_resume_needs_stays(tmp_path):
    root = tmp_path / "jobs"
    _job(root, "done-old", age_days=10, status="complete", delivered=True)
    _job(root, "done-new", age_days=2, status="complete", delivered=True)
    _job(root, "failed-resumable", age_days=10, status="failed")
    _job(root, "failed-old", age_days=40, status="failed")
    _job(root, "interrupted-old", age_days=40, status="running")
    live = _job(root, "live-old", age_days=40, status="running")
    me = psutil.Process()
    (live / "supervisor.lock").write_text(f'{{"pid": {me.pid}, "create_time": {me.create_time()}}}')
    os.utime(live / "supervisor.lock", (time.time() - 40 * DAY,) * 2)
    _job(root, "starting-now", age_days=40, status="failed")
    removed = prune_jobs(root, RetentionPolicy(), keep={"starting-now"})
    assert sorted(removed) == ["done-old", "failed-old", "interrupted-old"]
    assert sorted(p.name for p in root.iterdir()) == ["done-new", "failed-resumable", "live-old", "starting-now"]
    # The kept unfinished job still resumes: its ledger loads with its frames.
    assert Ledger.load(root / "failed-resumable" / "ledger.json").frames_requested == [1, 2, 3]


def test_scene_cache_entries_not_used_for_their_days_go(tmp_path):
    cache = tmp_path / "scenes"
    cache.mkdir()
    old, new = cache / "a.json", cache / "b.json"
    old.write_text("{}")
    new.write_text("{}")
    then = time.time() - 31 * DAY
    os.utime(old, (then, then))
    assert prune_scene_cache(cache, RetentionPolicy()) == 1
    assert [p.name for p in cache.iterdir()] == ["b.json"]


def test_settings_from_the_environment_and_a_job_start(tmp_path):
    env = {"RENDERWATCH_HOME": str(tmp_path), "RENDERWATCH_HEALER_KEEP_INCOMPLETE_DAYS": "5"}
    assert RetentionPolicy.from_env(env).keep_incomplete_days == 5
    with pytest.raises(ConfigError, match="RENDERWATCH_HEALER_KEEP_COMPLETE_DAYS"):
        RetentionPolicy.from_env({"RENDERWATCH_HEALER_KEEP_COMPLETE_DAYS": "soon"})
    _job(jobs_dir(env), "failed-6-days", age_days=6, status="failed")
    _job(jobs_dir(env), "other", age_days=6, status="failed")
    prune_at_start(env, "other")
    assert [p.name for p in jobs_dir(env).iterdir()] == ["other"]
