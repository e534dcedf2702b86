"""Property tests: no input crashes the parsers and receivers that face the outside world.

Every target gets generated input (hypothesis) and mutated real input (the Blender logs and the
crash file in ../shared/fixtures, a PNG rendered by the real Blender 3.4): the event decoder,
the agent's HTTP ingest (a real agent on 127.0.0.1), the classifier, the crash-file parser, the
frame ledger's output verification and the Alertmanager receiver. A rejection must carry a clear
reason. Example counts here are modest (the whole file runs in well under a minute); the
benchmark `python -m bench robustness` runs >= 100,000 inputs per target.

Tests marked `xfail(strict=True)` are bugs found here in code owned by other areas: each names
the failing input and the fix; when the fix lands the test XPASSes and fails, so remove the mark.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blender_hooks.events import MAX_EVENT_BYTES, EventError, decode, encode, make_event
from fuzz import oracle
from fuzz.mutations import mutate_bytes
from healer.diagnosis.classify import LogScanner, classify
from healer.diagnosis.crashfile import parse_crash_file
from healer.diagnosis.errors import RenderError
from healer.diagnosis.logformat import parse_line
from healer.images.verify import verify_image
from tests.support.healer import RecordingActions

SHARED_LOGS = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "blender-logs"
FAST = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# JSON values (bounded integers: see test_event_huge_integers_rejected for the unbounded case).
json_scalars = (st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=40)
                | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c,
                                                                                           max_size=4), max_leaves=12)


def valid_event(type_: str = "frame_end", seq: int = 1, **kw: object) -> dict:
    fields: dict[str, dict] = {
        "job_start": dict(blend_file="/s.blend", scene="s", frame_start=1, frame_end=3, engine="CYCLES",
                          device_type="CPU", blender_version="3.4.1"),
        "frame_start": dict(frame=1), "phase": dict(frame=1, name="sampling"),
        "frame_end": dict(frame=1, seconds=1.5, saved=True), "job_end": dict(status="complete"),
    }
    ev = make_event(type_, session="abcdef12", seq=seq, job="j1", host="h", pid=42, ts=1.7e9, **fields[type_])
    ev.update(kw)
    return ev


# small ints only for frame fields: an unbounded frame range is a known DoS (test_job_start_frame_range_bounded)
mutations = st.tuples(
    st.sampled_from(["job_start", "frame_start", "phase", "frame_end", "job_end"]),
    st.sampled_from(["v", "type", "session", "seq", "ts", "job", "host", "pid", "frame", "seconds", "saved",
                     "name", "status", "frame_start", "frame_end", "frame_step", "engine", "attempt", "extra"]),
    st.none() | st.booleans() | st.integers(-1000, 100_000) | st.text(max_size=30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.lists(st.integers(0, 3), max_size=3),
    st.booleans(),
)


def mutate(m: tuple) -> dict:
    type_, key, value, delete = m
    ev = valid_event(type_)
    if delete:
        ev.pop(key, None)
    else:
        ev[key] = value
    return ev


def check_decode(data: bytes | str) -> None:
    oracle.event(data)


# -- the event decoder --------------------------------------------------------------------------------------------
@FAST
@given(st.binary(max_size=512))
def test_decode_random_bytes(data: bytes) -> None:
    check_decode(data)


@FAST
@given(json_values)
def test_decode_random_json(value: object) -> None:
    check_decode(json.dumps(value))


@FAST
@given(mutations)
def test_decode_mutated_events(m: tuple) -> None:
    check_decode(json.dumps(mutate(m)))


def test_decode_valid_roundtrip_and_limits() -> None:
    ev = valid_event()
    assert decode(encode(ev)) == json.loads(encode(ev))
    for data, reason in [(b"\xff\xfe", "invalid_utf8"), (b"[" * 100_000, "too_large"),
                         (b"[" * 10_000, "malformed_json"), (b'"x"', "not_object"),
                         (b"1" * 5000, "malformed_json"), (b" " * (MAX_EVENT_BYTES + 1), "too_large")]:
        with pytest.raises(EventError) as ei:
            decode(data)
        assert ei.value.reason == reason, (data[:10], ei.value)


@pytest.mark.parametrize("field", ["ts", "seconds", "frame", "pid", "seq"])
def test_event_huge_integers_rejected(field: str) -> None:
    with pytest.raises(EventError) as ei:
        decode(json.dumps(valid_event(**{field: 10**400})))
    assert ei.value.reason == "out_of_range"


@pytest.mark.parametrize("value", [[], {}, [1, 2]])
def test_event_unhashable_type_rejected(value: object) -> None:
    with pytest.raises(EventError) as ei:
        decode(json.dumps({"v": 1, "type": value}))
    assert ei.value.reason == "unknown_type"


def test_job_start_frame_range_bounded() -> None:
    with pytest.raises(EventError) as ei:
        decode(json.dumps(valid_event("job_start", frame_start=0, frame_end=2**40)))
    assert ei.value.reason == "out_of_range"


# -- the agent's HTTP ingest (a real agent on 127.0.0.1) ----------------------------------------------------------
TOKEN = "robustness-token-0123456789"


@pytest.fixture(scope="module")
def agent_url(tmp_path_factory):
    from agent.app import run_in_thread
    from agent.config import AgentConfig

    d = tmp_path_factory.mktemp("agent")
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    h = run_in_thread(AgentConfig(host="127.0.0.1", port=0, token=TOKEN, data_dir=d / "data", spool_dir=d / "spool",
                                  traces_enabled=False, max_body_bytes=64 * 1024))
    yield h.url
    h.stop()


def request(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    host, port = url.split("//")[1].rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}
CTYPES = st.sampled_from(["application/json", "application/x-ndjson", "text/plain", ""])


def post_events(url: str, body: bytes, ctype: str = "application/x-ndjson") -> int:
    status, raw = request(url, "POST", "/api/v1/events", body, {**AUTH, "Content-Type": ctype} if ctype else AUTH)
    oracle.ingest_reply(status, json.loads(raw))
    return status


@FAST
@given(body=st.binary(max_size=2048), ctype=CTYPES)
def test_ingest_random_bodies(agent_url: str, body: bytes, ctype: str) -> None:
    post_events(agent_url, body, ctype)


@FAST
@given(values=st.lists(json_values | mutations.map(mutate), max_size=5), ndjson=st.booleans(), ctype=CTYPES)
def test_ingest_random_json_batches(agent_url: str, values: list, ndjson: bool, ctype: str) -> None:
    body = b"\n".join(json.dumps(v).encode() for v in values) if ndjson else json.dumps(values).encode()
    post_events(agent_url, body, ctype)


def test_ingest_limits_auth_and_still_serving(agent_url: str) -> None:
    assert post_events(agent_url, b"x" * (64 * 1024 + 1)) == 413
    assert request(agent_url, "POST", "/api/v1/events", b"{}", {"Authorization": "Bearer wrong"})[0] == 401
    assert request(agent_url, "POST", "/api/v1/events", b"{}")[0] == 401
    assert post_events(agent_url, b"[" * 60_000, "application/json") == 400
    ev = valid_event("frame_start", seq=random.randint(1, 10**9))
    ev["session"] = "feedc0de"
    assert post_events(agent_url, encode(ev)) == 200
    status, raw = request(agent_url, "GET", "/healthz")
    assert status == 200 and json.loads(raw)["status"] == "ok"
    status, raw = request(agent_url, "GET", "/metrics", headers=AUTH)
    assert status == 200 and b"renderwatch_events_ingested_total" in raw


def test_ingest_huge_integer_is_not_500(agent_url: str) -> None:
    ev = valid_event("frame_start", seq=random.randint(1, 10**9), ts=10**400)
    ev["session"] = "0ddba11"
    post_events(agent_url, encode(ev))


def test_ingest_unhashable_type_is_not_500(agent_url: str) -> None:
    post_events(agent_url, b'{"v": 1, "type": []}')


def test_ingest_non_utf8_authorization_is_401(agent_url: str) -> None:
    import socket

    host, port = agent_url.split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n"
                  b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        status_line = s.recv(100).split(b"\r\n")[0]
    assert b" 401 " in status_line, status_line


# -- the classifier -----------------------------------------------------------------------------------------------
def fixture_logs() -> list[bytes]:
    logs = [p.read_bytes() for p in sorted(SHARED_LOGS.glob("*.log"))] if SHARED_LOGS.is_dir() else []
    if not logs:      # not a pass over no input: a skip that says why (pytest -rs)
        pytest.skip(f"no real Blender logs (*.log) in {SHARED_LOGS}: ../shared is not beside the repository")
    return logs




def check_classified(err: RenderError) -> None:
    oracle.classification(err)


line_text = st.text(max_size=200) | st.sampled_from([
    "Fra:", "Fra: ", "Fra:-1", "Fra:1 Mem:", "Fra:1 Mem:1M (Peak ", "Saved: ", "Saved: '", "Time: (Saving: )",
    "Traceback (most recent call last):", '  File "", line 1, in ', "Writing: .crash.txt", "Current thread 0x",
    "00:00.1 x |", "99:99:99.99 render | ERROR ", "Error in bpy.app.handlers.render_pre[0]:", "Out of memory in ",
]).flatmap(lambda p: st.text(max_size=60).map(lambda s: p + s))


@FAST
@given(lines=st.lists(line_text, max_size=30), exit_code=st.none() | st.integers(-70, 300) | st.integers(),
       crash=st.none() | st.binary(max_size=300), stalled=st.booleans())
def test_classifier_random_lines(lines: list[str], exit_code: int | None, crash: bytes | None, stalled: bool) -> None:
    scanner = LogScanner()
    for line in lines:
        scanner.feed(line)
        parse_line(line)
    check_classified(scanner.finish(exit_code, crash_text=crash, stalled=stalled))


@FAST
@given(st.binary(max_size=2000), st.none() | st.integers(-70, 300))
def test_classify_random_bytes(data: bytes, exit_code: int | None) -> None:
    check_classified(classify(data, exit_code=exit_code))


@settings(max_examples=60, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_classify_mutated_real_logs(seed: int) -> None:
    rnd = random.Random(seed)
    for log in fixture_logs():
        data = mutate_bytes(log, rnd, rnd.randrange(1, 40))
        check_classified(classify(data, exit_code=rnd.choice([None, 0, 1, 134, 137, 139, -9, -11])))


@pytest.mark.parametrize("text", [
    'Traceback (most recent call last):\n  File "a.py", line ' + "1" * 5000 + ", in f\nValueError: x\n",
    "Fra:" + "1" * 5000 + " Mem:1M (Peak 2M) | Time:00:01.00 | Sample 1/2\n",
    "Fra:1 Mem:1M (Peak 2M) | Time:00:01.00 | Sample " + "1" * 5000 + "/2\n",
])
def test_classifier_huge_numbers(text: str) -> None:
    for line in text.splitlines():
        parse_line(line)
    check_classified(classify(text, exit_code=1))


# -- the crash-file parser ----------------------------------------------------------------------------------------
@FAST
@given(st.binary(max_size=2000) | st.text(max_size=500).map(lambda s: "# Blender 3.4.1\n# backtrace\n# Python backtrace\n" + s))
def test_crash_file_random(data: bytes | str) -> None:
    oracle.crash_report(parse_crash_file(data))


@settings(max_examples=100, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_crash_file_mutated_real(seed: int) -> None:
    real = SHARED_LOGS / "segfault_3.4.crash.txt"
    if not real.exists():
        pytest.skip("no real crash file in ../shared")
    rnd = random.Random(seed)
    oracle.crash_report(parse_crash_file(mutate_bytes(real.read_bytes(), rnd, rnd.randrange(1, 30))))


def test_crash_file_real_is_complete() -> None:
    real = SHARED_LOGS / "segfault_3.4.crash.txt"
    if not real.exists():
        pytest.skip("no real crash file in ../shared")
    rep = parse_crash_file(real.read_bytes())
    assert rep.blender_version and rep.blender_version.startswith("3.4") and not rep.partial


def test_crash_file_huge_line_number() -> None:
    oracle.crash_report(parse_crash_file('# Blender 3.4.1\n# backtrace\n# Python backtrace\n  File "a.py", line ' + "9" * 5000 + " in f\n"))


# -- the ledger's output verification ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_png(tmp_path_factory, scene_factory, blender34) -> bytes:
    """One frame rendered by the real Blender 3.4."""
    out = tmp_path_factory.mktemp("png")
    subprocess.run([blender34, "-b", str(scene_factory(frames=2, samples=4)), "-o", str(out / "f_####"), "-F", "PNG",
                    "-f", "1"], capture_output=True, timeout=120, check=True)
    return (out / "f_0001.png").read_bytes()


@FAST
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".png", ".jpg", ".exr", ".tif", ""]),
       magic=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"\x76\x2f\x31\x01\x02\x00\x00\x00"]))
def test_verify_random_bytes(tmp_path_factory, data: bytes, suffix: str, magic: bytes) -> None:
    p = tmp_path_factory.mktemp("v", numbered=True) / f"f{suffix}"
    p.write_bytes(magic + data)
    oracle.verification(verify_image(p))


def exr_bytes(attrs: list[tuple[bytes, bytes, bytes]], tail: bytes = b"\0" * 64) -> bytes:
    b = b"\x76\x2f\x31\x01" + struct.pack("<I", 2)
    for name, typ, value in attrs:
        b += name + b"\0" + typ + b"\0" + struct.pack("<i", len(value)) + value
    return b + b"\0" + tail


@FAST
@given(chunk_count=st.integers(0, 64), window=st.tuples(*[st.integers(-64, 64)] * 4).filter(lambda w: w[3] >= w[1]),
       compression=st.integers(0, 255), tail=st.binary(max_size=300))
def test_verify_random_exr_headers(tmp_path_factory, chunk_count: int, window: tuple, compression: int,
                                   tail: bytes) -> None:
    p = tmp_path_factory.mktemp("exr", numbered=True) / "f.exr"
    attrs = [(b"compression", b"compression", bytes([compression])), (b"dataWindow", b"box2i", struct.pack("<4i", *window))]
    if chunk_count:
        attrs.append((b"chunkCount", b"int", struct.pack("<i", chunk_count)))
    p.write_bytes(exr_bytes(attrs, tail))
    oracle.verification(verify_image(p))


@pytest.mark.parametrize("attrs", [
    [(b"chunkCount", b"int", struct.pack("<i", -3))],
    [(b"dataWindow", b"box2i", struct.pack("<4i", 0, 100, 10, 0))],
])
def test_verify_hostile_exr_chunk_count(tmp_path: Path, attrs: list) -> None:
    p = tmp_path / "f.exr"
    p.write_bytes(exr_bytes(attrs))
    v = verify_image(p)
    assert not v.ok and v.partial and v.reason


def test_truncated_real_png_is_incomplete(tmp_path: Path, real_png: bytes) -> None:
    p = tmp_path / "f_0001.png"
    p.write_bytes(real_png)
    assert verify_image(p).ok
    rnd = random.Random(6)
    cuts = sorted({1, 8, 16, 33, len(real_png) - 1, len(real_png) - 12, *(rnd.randrange(1, len(real_png)) for _ in range(40))})
    for cut in cuts:
        p.write_bytes(real_png[:cut])
        v = verify_image(p)
        assert not v.ok and v.partial and v.reason, (cut, v)


def test_ledger_removes_truncated_png(tmp_path: Path, real_png: bytes) -> None:
    from healer.supervising.ledger import Ledger

    led = Ledger.open_or_create(tmp_path / "job", job="j", scene=str(tmp_path / "s.blend"), frames=[1])
    out = tmp_path / "f_0001.png"
    out.write_bytes(real_png[: len(real_png) // 2])
    ok, why = led.verify_frame(1, str(out))
    assert not ok and "removed" in why and not out.exists() and 1 not in led.frames
    out.write_bytes(real_png)
    assert led.verify_frame(1, str(out)) == (True, "") and led.frames[1].size == len(real_png)


# -- the Alertmanager receiver ------------------------------------------------------------------------------------
alert_like = st.fixed_dictionaries({
    "version": st.sampled_from(["4", "3", 4, None]), "status": st.sampled_from(["firing", "resolved", "x", None]),
    "receiver": st.text(max_size=10) | st.integers(),
    "alerts": st.lists(st.fixed_dictionaries({
        "status": st.sampled_from(["firing", "resolved", "bogus"]),
        "labels": st.dictionaries(st.sampled_from(["alertname", "job", "uuid", "gpu", "severity"]),
                                  st.sampled_from(["RenderStalled", "GPUOverheating", "j1", "GPU-1", "critical"])
                                  | st.text(max_size=10) | st.integers()),
        "startsAt": st.text(max_size=5) | st.none(), "fingerprint": st.text(max_size=5),
    }), max_size=4) | json_values,
})


@FAST
@given(st.one_of(json_values, alert_like))
def test_alert_payload_random(obj: object) -> None:
    oracle.alert_payload(obj)


@pytest.fixture(scope="module")
def alert_url():
    """The receiver mounted on a real aiohttp server in a thread (as the healer mounts it)."""
    import asyncio
    import threading

    from aiohttp import web

    from healer.service.alerts import add_alertmanager_routes

    box: dict = {}
    ready = threading.Event()

    def main() -> None:
        loop = asyncio.new_event_loop()

        async def run() -> None:
            app = web.Application()
            add_alertmanager_routes(app, token=TOKEN, actions=RecordingActions())
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            box["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
            box["stop"] = stop = asyncio.Event()
            box["loop"] = loop
            ready.set()
            await stop.wait()
            await runner.cleanup()

        loop.run_until_complete(run())

    t = threading.Thread(target=main, daemon=True)
    t.start()
    ready.wait(10)
    yield box["url"]
    box["loop"].call_soon_threadsafe(box["stop"].set)
    t.join(5)


@FAST
@given(body=st.one_of(st.binary(max_size=300), alert_like.map(lambda o: json.dumps(o).encode())))
def test_alert_route_random_bodies(alert_url: str, body: bytes) -> None:
    status, raw = request(alert_url, "POST", "/api/v1/alertmanager", body, AUTH)
    oracle.alert_reply(status, json.loads(raw))


def test_alert_route_non_utf8_authorization_is_401(alert_url: str) -> None:
    import socket

    host, port = alert_url.split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /api/v1/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n"
                  b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
        status_line = s.recv(100).split(b"\r\n")[0]
    assert b" 401 " in status_line, status_line
