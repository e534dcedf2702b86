"""The incident journal: an incident is on disk before emit() returns, and a killed healer's incidents are
replayed by the next one, exactly once per exporter.

The kill test SIGKILLs a real child process that has emitted an incident whose worker had not reached the
webhook outbox yet (the export is held, as a busy worker or slow disk would), then a real WebhookNotifier in
this process delivers it to a local receiver. Without the journal that incident was lost.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from healer.diagnosis.errors import Finding, SegfaultError, StallError
from healer.incidents.dispatch import Incidents
from healer.incidents.journal import Journal, error_from_dict, error_to_dict
from healer.incidents.model import RENDER_COMPLETED, RENDER_CRASHED
from tests.support.fakes import RecordingExporter

ROOT = Path(__file__).resolve().parents[3]


def files(path: Path) -> list[Path]:
    return sorted(p for p in path.glob("*.json"))


def test_the_incident_is_on_disk_before_emit_returns_and_goes_once_handed_over(tmp_path):
    rec = RecordingExporter()
    rec.gate.clear()                               # the worker has not reached the exporter yet
    inc = Incidents([rec], journal=Journal(tmp_path / "j"))
    inc.emit(RENDER_CRASHED, {"job": "j1", "scene": "/s/a.blend", "frame": 5}, SegfaultError(summary="boom", frame=5))
    [f] = files(tmp_path / "j")
    rec_ = json.loads(f.read_text())
    assert (rec_["kind"], rec_["info"]["frame"], rec_["error"]["type"], rec_["exporters"]) == \
        (RENDER_CRASHED, 5, "segfault", ["rec"])
    assert oct(f.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "j").stat().st_mode & 0o777) == "0o700"
    rec.gate.set()
    assert inc.close(5)
    assert files(tmp_path / "j") == []
    assert [i.id for i in rec.got] == [rec_["id"]]


def test_an_exporter_that_only_queues_is_settled_when_a_flush_says_sent(tmp_path):
    webhooks, sentry = RecordingExporter("webhooks"), RecordingExporter("sentry", durable=False, flush_ok=False)
    inc = Incidents([webhooks, sentry], journal=Journal(tmp_path / "j"), flush_timeout_s=0.01)
    inc.emit(RENDER_CRASHED, {"job": "j1"}, SegfaultError())
    assert not inc.force_flush(2)                  # Sentry's transport could not send
    [f] = files(tmp_path / "j")
    assert json.loads(f.read_text())["done"] == ["webhooks"]
    sentry.flush_ok = True
    assert inc.close(2)
    assert files(tmp_path / "j") == []


def test_a_new_healer_replays_only_to_the_exporters_still_owed(tmp_path):
    path = tmp_path / "j"
    dead = {"pid": 2 ** 22 + 12345, "start": 1.0}             # a pid that does not run
    err = SegfaultError(summary="Segmentation fault", frame=7, findings=(Finding("segfault", 12, "Segmentation fault"),))
    path.mkdir()
    for i, done in enumerate(([], ["webhooks"], ["webhooks", "sentry"])):
        (path / f"{i:020d}-{i:032x}.json").write_text(json.dumps({
            "v": 1, "id": f"{i:032x}", "kind": RENDER_CRASHED, "time": 1000.0 + i, "info": {"job": f"j{i}"},
            "error": error_to_dict(err), "exporters": ["sentry", "webhooks"], "done": done, "writer": dead}))
    webhooks, sentry = RecordingExporter("webhooks"), RecordingExporter("sentry")
    reg = CollectorRegistry()
    inc = Incidents([webhooks, sentry], journal=Journal(path), registry=reg)
    assert inc.close(5)
    assert [i.info["job"] for i in webhooks.got] == ["j0"]
    assert [i.info["job"] for i in sentry.got] == ["j0", "j1"]
    assert sentry.got[0].id == f"{0:032x}" and sentry.got[0].error == err   # same id: Sentry keeps one event
    assert files(path) == []
    assert reg.get_sample_value("renderwatch_healer_incidents_total",
                                {"kind": RENDER_CRASHED, "target": "journal", "outcome": "replayed"}) == 2


def test_a_running_healers_incidents_are_not_taken_over(tmp_path):
    path = tmp_path / "j"
    held = RecordingExporter()
    held.gate.clear()
    first = Incidents([held], journal=Journal(path))
    first.emit(RENDER_CRASHED, {"job": "mine"}, SegfaultError())
    other = RecordingExporter()
    second = Incidents([other], journal=Journal(path))        # same host, same home, a second job
    assert second.close(2) and other.got == []
    held.gate.set()
    assert first.close(5) and [i.info["job"] for i in held.got] == ["mine"]


def test_an_unreadable_journal_file_is_moved_aside_and_the_rest_replayed(tmp_path, caplog):
    path = tmp_path / "j"
    path.mkdir()
    (path / "00000000000000000001-bad.json").write_text("{half a record")
    (path / "00000000000000000002-good.json").write_text(json.dumps({
        "v": 1, "id": "good", "kind": RENDER_COMPLETED, "time": 2.0, "info": {"job": "ok"}, "error": None,
        "exporters": ["rec"], "done": [], "writer": None}))
    rec = RecordingExporter()
    with caplog.at_level(logging.WARNING, "healer.incidents.journal"):
        inc = Incidents([rec], journal=Journal(path))
        assert inc.close(5)
    assert [i.info["job"] for i in rec.got] == ["ok"]
    assert (path / "bad" / "00000000000000000001-bad.json").exists()
    assert "unreadable" in caplog.text and "moved to" in caplog.text


def test_a_journal_that_cannot_be_written_keeps_the_incident_in_memory_and_counts(tmp_path, caplog):
    journal = Journal(tmp_path / "j")
    os.rmdir(journal.path)
    journal.path.write_text("not a directory")               # every write now fails (even as root)
    rec, reg = RecordingExporter(), CollectorRegistry()
    inc = Incidents([rec], journal=journal, registry=reg)
    with caplog.at_level(logging.WARNING, "healer.incidents.dispatch"):
        inc.emit(RENDER_CRASHED, {"job": "j"}, SegfaultError())
        assert inc.close(5)
    assert len(rec.got) == 1
    assert reg.get_sample_value("renderwatch_healer_incidents_total",
                                {"kind": RENDER_CRASHED, "target": "journal", "outcome": "error"}) == 1
    assert "kept in memory only" in caplog.text


def test_typed_errors_round_trip_through_the_journal():
    err = StallError(summary="no progress for 60 s", frame=3, exit_signal=9, crash_file="/tmp/x.crash.txt",
                     findings=(Finding("stall", 0, "no output"),), python_frames=(("a.py", 3, "f"),),
                     native_frames=("#0 blender(+0x1)",), fatal=True)
    assert error_from_dict(json.loads(json.dumps(error_to_dict(err)))) == err
    assert error_from_dict({"type": "no-such-type", "summary": "x"}).type == "unknown"
    assert error_from_dict(None) is None


CHILD = r"""
import os, signal, sys, time
from healer.diagnosis.errors import SegfaultError
from healer.incidents import notify
from healer.incidents.dispatch import Incidents
notify.WebhookNotifier.export = lambda self, batch: time.sleep(3600)   # the worker never gets there
inc = Incidents.from_config({"webhooks": [{"url": sys.argv[1]}]}, env=dict(os.environ))
inc.emit("render.crashed", {"job": "killed-job", "scene": "/s/a.blend", "frame": 4}, SegfaultError(summary="boom"))
print("emitted", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


class _Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.got: list[dict] = []
        owner = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                owner.got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a) -> None:
                pass

        super().__init__(("127.0.0.1", 0), H)


@pytest.fixture
def receiver():
    rx = _Receiver()
    threading.Thread(target=rx.serve_forever, daemon=True).start()
    yield rx
    rx.shutdown()


def test_an_incident_survives_a_healer_killed_the_moment_after_it_was_emitted(tmp_path, receiver):
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("RENDERWATCH_", "SENTRY_"))},
           "RENDERWATCH_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    child = subprocess.run([sys.executable, "-c", CHILD, url], env=env, capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL and "emitted" in child.stdout, child.stderr
    assert receiver.got == []
    inc = Incidents.from_config({"webhooks": [{"url": url}]}, env=env)    # the next healer on the host
    assert inc.close(10)
    assert [(d["kind"], d["job"]["id"], d["error"]["type"]) for d in receiver.got] == \
        [(RENDER_CRASHED, "killed-job", "segfault")]
    again = Incidents.from_config({"webhooks": [{"url": url}]}, env=env)  # and never twice
    assert again.close(5) and len(receiver.got) == 1
    assert list((tmp_path / "home" / "healer" / "incidents").glob("*.json")) == []


def test_half_written_files_of_a_killed_healer_are_removed_and_a_live_writers_kept(tmp_path):
    """Found by the chaos kill at the incident's moment: a healer killed inside the outbox's atomic
    write left `.tmp-*.json` behind for ever. The writer's pid is in the name now."""
    from healer.incidents.notify import Outbox
    from kernel.files import write_atomic

    dead = 2 ** 22 + 4321
    outbox, journal = tmp_path / "outbox", tmp_path / "journal"
    for d in (outbox, journal):
        d.mkdir()
    (outbox / f".w.1-aa.json.{dead}.abc_12.tmp").write_text("{half")
    (outbox / f".w.2-bb.json.{os.getpid()}.def_34.tmp").write_text("{being written")
    (journal / f".0001-aa.json.{dead}.xyz.tmp").write_text("{half")
    (journal / f".0002-bb.json.{os.getpid()}.uvw.tmp").write_text("{being written")
    Outbox(outbox)
    Journal(journal)
    assert sorted(p.name for p in outbox.iterdir() if p.is_file()) == [f".w.2-bb.json.{os.getpid()}.def_34.tmp"]
    assert sorted(p.name for p in journal.iterdir()) == [f".0002-bb.json.{os.getpid()}.uvw.tmp"]
    write_atomic(journal / "x.json", b"{}")          # the writer's own temp files carry its pid, and go
    assert sorted(p.name for p in journal.iterdir()) == [f".0002-bb.json.{os.getpid()}.uvw.tmp", "x.json"]


def test_a_replay_after_the_outbox_already_delivered_it_is_not_sent_again(tmp_path, receiver, monkeypatch):
    """A healer killed after its outbox file was written but before the journal was settled leaves both;
    the next healer's notifier may deliver the outbox file before the journal is replayed. The replayed
    incident has the same id: it must find the delivery done (found by the chaos test, seed 175226858)."""
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    env = {"RENDERWATCH_HOME": str(tmp_path / "home")}
    monkeypatch.setattr(Journal, "done", lambda self, incident_id, exporter: None)   # killed before settling
    first = Incidents.from_config({"webhooks": [{"url": url}]}, env=env)
    first.emit("render.crashed", {"job": "j", "scene": "/s/a.blend", "frame": 4}, SegfaultError(summary="boom"))
    assert first.close(10) and len(receiver.got) == 1          # delivered, outbox file gone
    monkeypatch.undo()
    journal = tmp_path / "home" / "healer" / "incidents"
    (left,) = journal.glob("*.json")
    rec = json.loads(left.read_text())
    rec["writer"] = {"pid": 2 ** 22 + 12345, "start": 1.0}    # as a killed healer leaves it
    left.write_text(json.dumps(rec))
    again = Incidents.from_config({"webhooks": [{"url": url}]}, env=env)
    assert again.close(10)
    assert len(receiver.got) == 1, [d["kind"] for d in receiver.got]
    assert list(journal.glob("*.json")) == []                  # and the journal is settled
