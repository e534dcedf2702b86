"""Webhooks out: payloads, signatures, and deliveries to real HTTP receivers on 127.0.0.1 that are down,
come up, hang or refuse; the on-disk outbox across a healer restart."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from healer.diagnosis.errors import GpuOomError, SegfaultError
from healer.incidents.dispatch import Incidents
from healer.incidents.model import Incident
from healer.incidents.notify import (
    HEADER_DELIVERY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    Outbox,
    WebhookTarget,
    build_payload,
    render_body,
    sign,
    slack_payload,
    verify_signature,
)
from healer.incidents.scrub import Scrubber
from tests.support.net import free_port

SECRET = "whsec-test-0123456789"


class Receiver:
    """A webhook receiver (stdlib HTTP server in a thread) that records every request it answers."""

    def __init__(self, port: int, status: int = 200) -> None:
        self.port, self.status = port, status
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.server: ThreadingHTTPServer | None = None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.got.append(({k: v for k, v in self.headers.items()}, body))
                self.send_response(owner.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.handler = Handler

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def payloads(self) -> list[dict]:
        return [json.loads(b) for _, b in self.got]


class Hanging:
    """A target that accepts connections and never answers (the kernel completes the handshake)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def close(self) -> None:
        self.sock.close()


def wait_until(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def info(job: str = "job-1") -> dict:
    return {"job": job, "scene": "/home/bob/shots/monkey.blend", "host": "node-3", "frames": [1, 10],
            "frames_completed": [1, 2, 3], "frame": 4, "attempt": 1, "restarts": 0}


def make(tmp_path: Path, targets: list[dict], registry: CollectorRegistry | None = None) -> Incidents:
    cfg = {"webhooks": targets, "outbox": str(tmp_path / "outbox"), "retry_base_s": 0.05, "retry_max_s": 0.2}
    return Incidents.from_config(cfg, registry=registry or CollectorRegistry(), env={})


# -- pure ------------------------------------------------------------------------------------------------
def test_signature_verifies_and_rejects_tampering_and_old_timestamps():
    body = b'{"version":"1"}'
    now = 1_800_000_000
    sig = sign(SECRET, now, body)
    assert sig.startswith("v1=") and len(sig) == 3 + 64
    assert verify_signature(SECRET, str(now), body, sig, now=now + 10)
    assert verify_signature(SECRET, now, body.decode(), f"v0=abc, {sig}", now=now)   # rotated signatures
    assert not verify_signature(SECRET, now, body + b" ", sig, now=now)
    assert not verify_signature("other", now, body, sig, now=now)
    assert not verify_signature(SECRET, now, body, sig, now=now + 301)
    assert not verify_signature(SECRET, "nope", body, sig, now=now)
    assert not verify_signature(SECRET, now, body, None, now=now)


def test_payload_v1_is_documented_shape_and_scrubbed():
    err = GpuOomError(summary="Out of memory in CUDA queue enqueue (integrator_shade_surface)", frame=4)
    inc = Incident(kind="render.crashed", info=info(), error=err)
    p = build_payload(inc, Scrubber(include_env=False))
    assert p["version"] == "1" and p["id"] == inc.id and p["kind"] == "render.crashed"
    assert p["time"].endswith("Z") and "T" in p["time"]
    assert p["error"] == {"type": "gpu_oom", "class": "GpuOomError", "summary": err.summary, "fatal": True,
                          "severity": "error", "frame": 4, "exit_code": None, "exit_signal": None}
    assert p["job"]["id"] == "job-1" and p["job"]["scene"] == "~/shots/monkey.blend"
    assert p["job"]["frames_total"] == 10 and p["job"]["frames_completed"] == 3 and p["job"]["progress"] == 0.3
    assert "bob" not in json.dumps(p)
    assert "monkey.blend" in p["message"] and "GpuOomError" in p["message"]
    done = build_payload(Incident(kind="render.completed", info=info()))
    assert done["error"] is None


def test_slack_format_has_text_and_blocks():
    inc = Incident(kind="render.gave_up", info=info(), error=SegfaultError(summary="SIGSEGV at frame 4"))
    body = json.loads(render_body(inc, WebhookTarget(url="https://hooks.example/x", format="slack")))
    assert set(body) == {"text", "blocks"}
    assert body["blocks"][0]["type"] == "header"
    assert any("SegfaultError" in json.dumps(b) for b in body["blocks"])
    assert slack_payload(build_payload(inc))["text"] == body["text"]


@pytest.mark.parametrize("table, key", [
    ({"url": "ftp://x"}, "url"), ({"url": "http://x", "format": "xml"}, "format"),
    ({"url": "http://x", "kinds": ["render.exploded"]}, "kinds"), ({"url": "http://x", "name": "a b"}, "name"),
    ({"url": "http://x", "timeout_s": 0}, "timeout_s"), ({"url": "http://x", "secret": 5}, "secret"),
])
def test_bad_target_config_names_the_key(table, key):
    with pytest.raises(ValueError, match=rf"webhooks\[0\]\.{key}"):
        WebhookTarget.from_mapping(table, "incidents.webhooks[0]")


def test_target_secret_from_environment_and_kinds_filter():
    t = WebhookTarget.from_mapping({"url": "http://x/h", "secret_env": "HOOK_SECRET", "kinds": ["render.gave_up"]},
                                   "w", env={"HOOK_SECRET": "s3cret"})
    assert t.secret == "s3cret" and t.accepts("render.gave_up") and not t.accepts("render.crashed")
    assert WebhookTarget(url="http://x").accepts("render.crashed")
    assert not WebhookTarget(url="http://x").accepts("render.started")


def test_outbox_files_are_private_and_atomic(tmp_path):
    box = Outbox(tmp_path / "outbox")
    p = box.put({"id": "abc", "target": "t1", "created": 1.5, "body": "{}"})
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(box.path).st_mode) == 0o700
    assert box.names("t1") == [p.name] and box.names("t") == []
    assert not [n for n in os.listdir(box.path) if n.startswith(".tmp-")]


# -- deliveries over real HTTP -------------------------------------------------------------------------------
def test_receivers_down_then_up_get_each_delivery_exactly_once_signed(tmp_path):
    a, b = Receiver(free_port()), Receiver(free_port())
    reg = CollectorRegistry()
    inc = make(tmp_path, [{"name": "ops", "url": a.url, "secret": SECRET},
                          {"name": "chat", "url": b.url, "secret": SECRET, "format": "slack",
                           "kinds": ["render.crashed"]}], reg)
    try:
        inc.emit("render.crashed", info(), SegfaultError(summary="SIGSEGV"))
        inc.emit("render.restarted", {**info(), "attempt": 2, "restarts": 1})
        inc.emit("render.completed", {**info(), "frames_completed": list(range(1, 11))})
        assert wait_until(lambda: (reg.get_sample_value("renderwatch_healer_incidents_total",
                                                        {"kind": "render.crashed", "target": "ops",
                                                         "outcome": "retried"}) or 0) >= 2)
        a.start()
        b.start()
        assert wait_until(lambda: len(a.got) >= 3 and len(b.got) >= 1)
        time.sleep(0.5)   # further retries would show up here
        assert [p["kind"] for p in a.payloads()] == ["render.crashed", "render.restarted", "render.completed"]
        assert len({p["id"] for p in a.payloads()}) == 3
        assert len(b.got) == 1 and set(b.payloads()[0]) == {"text", "blocks"}
        for headers, body in a.got + b.got:
            assert verify_signature(SECRET, headers[HEADER_TIMESTAMP], body, headers[HEADER_SIGNATURE])
        assert a.got[0][0][HEADER_DELIVERY] == a.payloads()[0]["id"]
        assert inc.force_flush(2)
        assert not [n for n in os.listdir(tmp_path / "outbox") if n.endswith(".json")]
        assert reg.get_sample_value("renderwatch_healer_incidents_total",
                                    {"kind": "render.crashed", "target": "chat", "outcome": "delivered"}) == 1
    finally:
        inc.close(1)
        a.stop()
        b.stop()


def test_outbox_survives_a_healer_restart(tmp_path):
    r = Receiver(free_port())
    targets = [{"name": "ops", "url": r.url, "secret": SECRET}]
    first = make(tmp_path, targets)
    first.emit("render.crashed", info("j1"), SegfaultError(summary="SIGSEGV"))
    first.emit("render.gave_up", info("j1"), SegfaultError(summary="SIGSEGV"))
    assert first.close(timeout=0.3) is False            # target down: not delivered in time
    files = sorted(n for n in os.listdir(tmp_path / "outbox") if n.endswith(".json"))
    assert len(files) == 2
    ids = [json.loads((tmp_path / "outbox" / n).read_text())["id"] for n in files]

    r.start()
    second = make(tmp_path, targets)                     # the healer started again
    try:
        assert wait_until(lambda: len(r.got) >= 2)
        time.sleep(0.3)
        assert [p["id"] for p in r.payloads()] == ids    # same deliveries, in order, once each
        assert [p["kind"] for p in r.payloads()] == ["render.crashed", "render.gave_up"]
        assert second.force_flush(2)
    finally:
        second.close(1)
        r.stop()


def test_refused_delivery_moves_to_failed_without_retrying(tmp_path):
    r = Receiver(free_port(), status=404).start()
    reg = CollectorRegistry()
    inc = make(tmp_path, [{"name": "gone", "url": r.url}], reg)
    try:
        inc.emit("render.crashed", info(), SegfaultError(summary="x"))
        assert inc.force_flush(3)
        time.sleep(0.3)
        assert len(r.got) == 1
        assert len(os.listdir(tmp_path / "outbox" / "failed")) == 1
        assert reg.get_sample_value("renderwatch_healer_incidents_total",
                                    {"kind": "render.crashed", "target": "gone", "outcome": "failed"}) == 1
    finally:
        inc.close(1)
        r.stop()


def test_server_errors_are_retried_until_accepted(tmp_path):
    r = Receiver(free_port(), status=503).start()
    inc = make(tmp_path, [{"name": "flaky", "url": r.url}])
    try:
        inc.emit("render.stalled", info(), None)
        assert wait_until(lambda: len(r.got) >= 3)
        r.status = 200
        assert inc.force_flush(3)
        n = len(r.got)
        time.sleep(0.3)
        assert len(r.got) == n                                # nothing after the 2xx
        assert len({json.loads(b)["id"] for _, b in r.got}) == 1
    finally:
        inc.close(1)
        r.stop()


def test_a_hanging_target_delays_neither_emit_nor_a_healthy_target(tmp_path):
    hang, ok = Hanging(), Receiver(free_port()).start()
    inc = make(tmp_path, [{"name": "hang", "url": hang.url, "timeout_s": 30},
                          {"name": "ok", "url": ok.url}])
    try:
        inc.emit("render.crashed", info("warmup"), SegfaultError(summary="x"))
        assert wait_until(lambda: len(ok.got) == 1)
        t0 = time.perf_counter()
        inc.emit("render.crashed", info("j2"), SegfaultError(summary="y"))
        emit_s = time.perf_counter() - t0
        assert emit_s < 0.05   # a queue put; slack for GIL hand-offs on a loaded 2-core CI machine
        assert wait_until(lambda: len(ok.got) == 2, timeout=1.0)
    finally:
        inc.close(0.2)
        hang.close()
        ok.stop()
