"""Incidents: emit() never blocks or raises, fan-out to exporters, counters, config loading."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from healer.diagnosis.errors import SegfaultError
from healer.incidents.config import load_incidents_config
from healer.incidents.dispatch import Incidents, incidents_counter
from healer.incidents.model import KINDS, RENDER_COMPLETED, RENDER_CRASHED, RENDER_STARTED
from tests.support.fakes import RecordingExporter


def sample(reg: CollectorRegistry, kind: str, target: str, outcome: str) -> float:
    return reg.get_sample_value("renderwatch_healer_incidents_total",
                                {"kind": kind, "target": target, "outcome": outcome}) or 0.0


def test_emit_returns_at_once_while_the_exporter_is_slow():
    rec = RecordingExporter(delay=0.2)
    inc = Incidents([rec])
    t0 = time.perf_counter()
    for i in range(20):
        inc.emit(RENDER_CRASHED, {"job": f"j{i}"}, SegfaultError())
    assert time.perf_counter() - t0 < 0.5    # vs 4 s if emit() waited for the exporter
    inc.close(timeout=0.1)


def test_info_is_snapshotted_at_emit_time():
    rec = RecordingExporter()
    rec.gate.clear()
    inc = Incidents([rec])
    state = {"job": "j", "frames_completed": 1}
    inc.emit(RENDER_CRASHED, state)
    state["frames_completed"] = 99
    rec.gate.set()
    assert inc.close(2)
    assert rec.got[0].info["frames_completed"] == 1


def test_dataclass_info_and_normalized_job_view():
    @dataclass
    class Job:
        job: str
        scene: str
        frames: list
        frames_completed: list

    rec = RecordingExporter()
    with Incidents([rec]) as inc:
        inc.emit(RENDER_CRASHED, Job("j", "/x/shot.blend", [1, 2, 3, 4, 8], [1, 2]), SegfaultError(frame=3))
    job = rec.got[0].job()
    assert job["frame_start"] == 1 and job["frame_end"] == 8 and job["frames_total"] == 5
    assert job["frames_completed"] == 2 and job["progress"] == 0.4 and job["frame"] == 3
    assert rec.got[0].scene_name == "shot.blend"


def test_close_drains_and_counts(tmp_path):
    reg = CollectorRegistry()
    rec = RecordingExporter(delay=0.01)
    inc = Incidents([rec], registry=reg)
    for _ in range(10):
        inc.emit(RENDER_CRASHED, {}, SegfaultError())
    assert inc.close(timeout=5)
    assert len(rec.got) == 10 and rec.flushed >= 1 and rec.shut == 1
    assert sample(reg, RENDER_CRASHED, "rec", "sent") == 10
    inc.emit(RENDER_CRASHED, {}, SegfaultError())        # after close: ignored, no error
    assert inc.close() is True


def test_full_queue_drops_and_counts_instead_of_blocking():
    reg = CollectorRegistry()
    rec = RecordingExporter()
    rec.gate.clear()
    inc = Incidents([rec], registry=reg, queue_size=2)
    for _ in range(10):
        inc.emit(RENDER_CRASHED, {})
    assert sample(reg, RENDER_CRASHED, "queue", "dropped") >= 7
    rec.gate.set()
    inc.close(2)


def test_a_failing_exporter_does_not_stop_the_others():
    reg = CollectorRegistry()
    bad, good = RecordingExporter(fail=True), RecordingExporter()
    bad.name = "bad"
    with Incidents([bad, good], registry=reg) as inc:
        inc.emit(RENDER_CRASHED, {}, SegfaultError())
    assert len(good.got) == 1
    assert sample(reg, RENDER_CRASHED, "bad", "error") == 1


def test_noop_and_job_started():
    Incidents.noop().emit(RENDER_CRASHED, {}, SegfaultError())
    rec = RecordingExporter()
    with Incidents([rec]) as inc:
        inc.job_started({"job": "j"})
        inc.emit(RENDER_COMPLETED, {"job": "j"})
    assert [i.kind for i in rec.got] == [RENDER_STARTED, RENDER_COMPLETED]


def test_same_registry_reused_after_restart():
    reg = CollectorRegistry()
    counter = incidents_counter(reg)          # the registry's owner keeps it (healer.service.metrics)
    Incidents([RecordingExporter()], counter=counter).close()
    second = Incidents([RecordingExporter()], counter=counter)
    second.emit(RENDER_CRASHED, {})
    second.close()
    assert sample(reg, RENDER_CRASHED, "rec", "sent") == 1


def test_config_loader(tmp_path):
    cfg = load_incidents_config({
        "outbox": str(tmp_path / "box"), "path_rewrites": {"/mnt/p/": "p/"},
        "webhooks": [{"url": "https://hooks.example/a", "name": "ops", "kinds": ["render.gave_up"]},
                     {"url": "https://hooks.slack.example/b", "format": "slack", "secret_env": "S"}],
    }, env={"S": "sekret", "RENDERWATCH_WEBHOOK_URL": "http://127.0.0.1:1/x"})
    assert [t.name for t in cfg.webhooks][0] == "ops" and cfg.webhooks[1].secret == "sekret"
    assert cfg.webhooks[2].name == "env" and cfg.sentry is None
    assert cfg.path_rewrites == (("/mnt/p/", "p/"),)
    with pytest.raises(ValueError, match="incidents.webhooks"):
        load_incidents_config({"webhooks": {"url": "x"}}, env={})
    with pytest.raises(ValueError, match="unique"):
        load_incidents_config({"webhooks": [{"url": "http://a/", "name": "x"}, {"url": "http://b/", "name": "x"}]},
                              env={})
    with pytest.raises(ValueError, match="incidents.retry_base_s"):
        load_incidents_config({"retry_base_s": -1}, env={})
    with pytest.raises(ValueError, match="incidents.path_rewrites"):
        load_incidents_config({"path_rewrites": "x"}, env={})


def test_from_config_accepts_an_app_config_object(tmp_path):
    @dataclass(frozen=True)
    class AppConfig:
        incidents: dict

    inc = Incidents.from_config(AppConfig({"webhooks": [{"url": "http://127.0.0.1:9/x"}],
                                           "outbox": str(tmp_path / "o")}), env={})
    assert [e.name for e in inc._exporters] == ["webhooks"]
    inc.close(0.1)
    assert Incidents.from_config(None, env={})._exporters == []


def test_kinds_are_stable():
    assert set(KINDS) >= {"render.crashed", "render.stalled", "render.restarted", "render.recovered",
                          "render.gave_up", "render.completed"}


def test_incident_kinds_are_spelled_only_in_the_model():
    """Every emitter names a kind by its constant in healer.incidents.model (docstrings aside), so a
    renamed kind cannot leave one emitter behind."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    model = root / "healer" / "incidents" / "model.py"
    found = []
    for pkg in ("healer", "agent", "renderwatch", "kernel", "blender_hooks"):
        for path in sorted((root / pkg).rglob("*.py")):
            if path == model:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
            found += [f"{path.relative_to(root)}:{n.lineno} {n.value!r}" for n in ast.walk(tree)
                      if isinstance(n, ast.Constant) and n.value in KINDS and id(n) not in docs]
    assert found == []
