"""The agent's page over HTTP (no browser): the frames table, its endpoint, the live stream, the token
cookie and the headers. The page in a real Chromium is tests/integration/test_page_browser.py."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from agent.app import run_in_thread
from agent.frames import MAX_ROWS, STATES, FrameTable
from agent.page import COOKIE, CSP, session_value
from agent.state import State
from tests.support.agent import JobStream, agent_config, get, ndjson, post
from tests.support.fakes import NoNvml


def _state(events: list[dict]) -> State:
    st = State()
    for ev in events:
        assert st.accept(ev)
        st.apply(ev)
    return st


def _frames(st: State, job: str) -> dict[int, str]:
    cols = st.jobs[job].frames.to_columns()
    return {f: STATES[s] for f, s in zip(cols["frame"], cols["state"], strict=True)}


def test_frame_states_follow_the_events():
    s = JobStream("j1")
    evs = [s.start(1, 6)]
    evs += s.frame(1, seconds=2.0, peak_memory_blender_bytes=100e6, max_rss_bytes=200e6, peak_vram_bytes=3e9)
    evs += s.frame(2, saved=False)                          # cut short
    evs.append(s.ev("frame_start", frame=3))                # in flight
    evs += s.frame(4)
    evs.append(s.ev("frame_check", frame=4, reason="blank", detail="all black"))
    st = _state(evs)
    assert _frames(st, "j1") == {1: "done", 2: "failed", 3: "rendering", 4: "suspect", 5: "waiting", 6: "waiting"}
    row = st.jobs["j1"].frames.row(1)
    assert row[:5] == [1, "done", 2.0, 100_000_000, 200_000_000] and row[6:] == ["CPU", 1, 0, 0]
    assert abs(row[5] - 3e9) / 3e9 < 1e-6                  # float32 storage: ~7 digits


def test_crashed_frame_rendered_again_by_the_next_attempt():
    a1 = JobStream("j2", session="aaaa0001")
    evs = [a1.start(1, 3, attempt=1), *a1.frame(1, attempt=1), a1.ev("frame_start", frame=2, attempt=1)]
    healer = JobStream("j2", session="bbbb0002")
    evs.append(healer.ev("attempt_end", attempt=1, error_type="segfault", summary="Blender crashed (SIGSEGV)",
                         evidence="Segmentation fault", advice="retry", frame=2, started_at=a1.t - 1))
    crashed = len(evs)
    a2 = JobStream("j2", session="cccc0003", t=a1.t + 1)
    evs += [a2.start(1, 3, attempt=2), *a2.frame(2, attempt=2), *a2.frame(3, attempt=2)]
    st = _state(evs[:crashed])
    assert _frames(st, "j2")[2] == "failed"
    st = _state(evs)
    job = st.jobs["j2"]
    assert _frames(st, "j2") == {1: "done", 2: "rerendered", 3: "done"}
    assert job.frames.row(2)[7] == 2 and job.frames.row(1)[7] == 1
    att = [job.attempt_log[n] for n in sorted(job.attempt_log)]
    assert [a["attempt"] for a in att] == [1, 2]
    assert att[0]["error_type"] == "segfault" and att[0]["evidence"] == "Segmentation fault" and att[0]["frame"] == 2


def test_table_is_compact_and_bounded():
    t = FrameTable()
    t.expect(range(1, 10_001))
    assert t.nbytes < 30 * 10_000                          # 25 bytes a frame
    t.started(10 ** 7, 1, "CPU")                            # far outside the window: counted, not stored
    assert t.dropped == 1 and t.rows == 10_000
    t2 = FrameTable()
    t2.expect([0])
    t2.started(MAX_ROWS + 5, 1, "CPU")
    assert t2.rows == 1 and t2.dropped == 1


def test_changes_ring_tells_a_far_behind_follower_to_reload():
    t = FrameTable()
    t.expect(range(1, 10_001))
    v = t.version
    t.started(5, 1, "CPU")
    t.ended(5, True, 1.0, {}, 1, "CPU")
    assert t.changed_since(v) == [5]
    assert t.changed_since(t.version) == []
    for f in range(1, 5000):
        t.started(f, 1, "CPU")
    assert t.changed_since(v) is None                      # the ring no longer reaches back that far


@pytest.fixture
def agent(tmp_path):
    handle = run_in_thread(agent_config(tmp_path), nvml=NoNvml())
    yield handle
    handle.stop()


def test_frames_endpoint_columns_and_attempts(agent):
    s = JobStream("shot/010 <b>", scene="<img src=x onerror=alert(1)>")
    evs = [s.start(1, 4), *s.frame(1, seconds=1.5), *s.frame(2, seconds=2.5)]
    assert post(agent.url, ndjson(evs))[0] == 200
    status, body, ctype = get(agent.url, "/api/v1/jobs/" + urllib.parse.quote(s.job, safe="") + "/frames")
    assert status == 200 and ctype.startswith("application/json")
    doc = json.loads(body)
    assert doc["frames"]["frame"] == [1, 2, 3, 4]
    assert [doc["states"][i] for i in doc["frames"]["state"]] == ["done", "done", "waiting", "waiting"]
    assert doc["frames"]["seconds"][:2] == [1.5, 2.5]
    assert doc["devices"] == ["CPU"] and doc["frames"]["device"] == [1, 1, 0, 0]
    assert doc["summary"]["scene"] == "<img src=x onerror=alert(1)>"
    assert doc["attempts"][0]["attempt"] == 1 and len(doc["trace_id"]) == 32
    assert get(agent.url, "/api/v1/jobs/nope/frames")[0] == 404
    healer = JobStream(s.job, session="beefbeef01")
    assert post(agent.url, ndjson([healer.ev("attempt_end", attempt=1, error_type="gpu_oom",
                                             summary="out of <b>memory</b>")]))[0] == 200
    jobs = json.loads(get(agent.url, "/api/v1/jobs")[1])["jobs"]
    assert jobs[0]["last_error"] == {"attempt": 1, "error_type": "gpu_oom", "summary": "out of <b>memory</b>"}


def test_frames_of_a_10000_frame_job_stay_small(agent):
    s = JobStream("big")
    evs = [s.start(1, 10_000)]
    for n in range(1, 2001):
        evs += s.frame(n, phases=())
    assert post(agent.url, ndjson(evs[:3000]))[0] == 200
    assert post(agent.url, ndjson(evs[3000:]))[0] == 200
    conn = http.client.HTTPConnection(agent.url.removeprefix("http://"), timeout=10)
    conn.request("GET", "/api/v1/jobs/big/frames", headers={"Accept-Encoding": "gzip"})
    r = conn.getresponse()
    raw = r.read()
    assert r.status == 200 and r.getheader("Content-Encoding") == "gzip"
    assert len(raw) < 60_000, len(raw)                      # 10,000 frames, compressed


def _sse_events(url: str, path: str, until: float) -> list[tuple[str, dict]]:
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)
    conn.request("GET", path)
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/event-stream")
    out, event = [], None
    while time.monotonic() < until:
        line = r.fp.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            out.append((event, json.loads(line[6:])))
            if event == "frames":
                break
    conn.close()
    return out


def test_stream_sends_a_saved_frame_within_a_second(agent):
    s = JobStream("live")
    assert post(agent.url, ndjson([s.start(1, 10)]))[0] == 200
    doc = json.loads(get(agent.url, "/api/v1/jobs/live/frames")[1])
    import threading
    sent = {}

    def later():
        time.sleep(0.5)
        sent["t"] = time.monotonic()
        post(agent.url, ndjson(s.frame(3)))
    threading.Thread(target=later).start()
    evs = _sse_events(agent.url, f"/api/v1/jobs/live/stream?version={doc['version']}&epoch={doc['epoch']}", time.monotonic() + 10)
    got = time.monotonic()
    frames = [d for e, d in evs if e == "frames"]
    assert frames and [r[:2] for r in frames[-1]["rows"]][-1] == [3, "done"]
    assert got - sent["t"] < 1.0


@pytest.mark.parametrize("query", ["", "?version={version}&epoch=0123456789ab"])
def test_stream_tells_a_page_without_a_version_or_from_another_run_to_reload(agent, query):
    s = JobStream("rl")
    assert post(agent.url, ndjson([s.start(1, 3)]))[0] == 200
    doc = json.loads(get(agent.url, "/api/v1/jobs/rl/frames")[1])
    conn = http.client.HTTPConnection(agent.url.removeprefix("http://"), timeout=5)
    conn.request("GET", "/api/v1/jobs/rl/stream" + query.format(version=doc["version"]))
    r = conn.getresponse()
    lines = [r.fp.readline() for _ in range(8)]     # chunked: sizes and lines
    assert b"event: reload\n" in lines
    conn.close()


def test_a_job_gone_and_back_starts_its_versions_past_the_old_ones():
    st = State()
    s = JobStream("again")
    for ev in [s.start(1, 3), *s.frame(1)]:
        st.accept(ev)
        st.apply(ev)
    old = st.jobs["again"].frames.version
    st.apply({"type": "_expire", "job": "again", "ts": s.t})
    s2 = JobStream("again", session="0badf00d02")
    for ev in [s2.start(1, 3)]:
        st.accept(ev)
        st.apply(ev)
    assert st.jobs["again"].frames.changed_since(old) is None


def test_page_and_headers(agent):
    status, body, ctype = get(agent.url, "/")
    assert status == 200 and ctype.startswith("text/html")
    assert b"<script" in body and b"<script>" not in body and b"style=" not in body   # nothing inline
    req = urllib.request.Request(agent.url + "/")
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req) as r:
        assert r.headers["Content-Security-Policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "connect-src 'self'" in CSP
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    for name in ("page.js", "page.css", "favicon.svg"):
        assert get(agent.url, "/static/" + name)[0] == 200
    assert get(agent.url, "/static/..%2fpage.py")[0] == 404
    assert get(agent.url, "/static/app.py")[0] == 404


def _no_redirect() -> urllib.request.OpenerDirector:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **kw):
            return None
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())


def test_token_cookie_for_the_page(tmp_path):
    handle = run_in_thread(agent_config(tmp_path, token="s3cret-token"), nvml=NoNvml())
    try:
        url = handle.url
        assert get(url, "/")[0] == 200                                      # the page itself: no data
        assert get(url, "/api/v1/jobs")[0] == 401
        op = _no_redirect()

        def login(token: str, origin: str | None = None) -> tuple[int, str]:
            hdr = {"Content-Type": "application/x-www-form-urlencoded"}
            if origin:
                hdr["Origin"] = origin
            req = urllib.request.Request(url + "/login", data=urllib.parse.urlencode({"token": token}).encode(),
                                         method="POST", headers=hdr)
            try:
                with op.open(req) as r:
                    return r.status, r.headers.get("Set-Cookie", "")
            except urllib.error.HTTPError as e:
                return e.code, e.headers.get("Set-Cookie", "") or e.headers.get("Location", "")

        code, cookie = login("wrong")
        assert code == 303 and COOKIE not in cookie
        code, cookie = login("s3cret-token", origin="http://evil.example")
        assert code == 403
        code, cookie = login("s3cret-token", origin=url)
        assert code == 303 and f"{COOKIE}={session_value('s3cret-token')}" in cookie
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "s3cret-token" not in cookie
        jar = {"Cookie": f"{COOKIE}={session_value('s3cret-token')}"}
        assert get(url, "/api/v1/jobs", headers=jar)[0] == 200
        assert get(url, "/api/v1/jobs", headers={"Cookie": f"{COOKIE}=forged"})[0] == 401
        # the cookie never authorises a write
        s = JobStream("j")
        req = urllib.request.Request(url + "/api/v1/events", data=ndjson([s.start(1, 2)]), method="POST",
                                     headers={"Content-Type": "application/x-ndjson", **jar})
        try:
            op.open(req)
            raise AssertionError("accepted")
        except urllib.error.HTTPError as e:
            assert e.code == 401
    finally:
        handle.stop()


def test_link_templates(tmp_path):
    from agent.config import ConfigError, load_config
    cfg = load_config(env={"RENDERWATCH_HOME": str(tmp_path),
                           "RENDERWATCH_TRACE_URL": "http://grafana:3000/explore?trace={trace_id}",
                           "RENDERWATCH_LOGS_URL": "https://grafana/logs?job={job}"})
    assert cfg.trace_url and cfg.logs_url and cfg.dashboard_url is None
    from agent.page import links
    st = _state([JobStream("a b/c").start(1, 2)])
    got = links(cfg, st.jobs["a b/c"])
    assert got["logs"] == "https://grafana/logs?job=a%20b%2Fc" and len(got["trace"].rsplit("=", 1)[1]) == 32
    for bad in ("javascript:alert(1)", "grafana:3000/x", "http://g/\"><script>"):
        with pytest.raises(ConfigError, match="RENDERWATCH_TRACE_URL"):
            load_config(env={"RENDERWATCH_HOME": str(tmp_path), "RENDERWATCH_TRACE_URL": bad})


@pytest.mark.parametrize("ctype, body", [
    ("multipart/form-data", b"token=x"),                  # no boundary: aiohttp's form reader raised (500)
    ("application/json", b'{"token": "x"}'),
    ("application/x-www-form-urlencoded", b"token=" + b"x" * 5000),
])
def test_sign_in_refuses_what_is_not_its_form(agent, ctype, body):
    req = urllib.request.Request(agent.url + "/login", data=body, method="POST", headers={"Content-Type": ctype})
    try:
        _no_redirect().open(req)
        raise AssertionError("accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 400


def test_a_gpu_the_healer_paused_shows_as_paused(tmp_path):
    """The healer service pauses a GPU on Alertmanager's GPUOverheating and says so on its own spool
    session (healer.service.app.JobManager.pause_gpu); the agent's GPU table (the page's node view)
    shows it until the resume. NVML is the recorded fake of tests/agent/test_gpu.py (no GPU here)."""
    import asyncio

    from healer.config import load_config
    from healer.service.app import JobManager
    from healer.service.metrics import HealerMetrics
    from tests.support.fakes import FakeNvml, OneGpu

    spool = tmp_path / "spool"
    uuid = FakeNvml().nvmlDeviceGetUUID(None)
    env = {"RENDERWATCH_HOME": str(tmp_path / "home"), "RENDERWATCH_SPOOL_DIR": str(spool),
           "RENDERWATCH_AGENT": "off"}

    async def alert(paused: bool) -> None:
        mgr = JobManager(load_config(env=env), HealerMetrics(), nvml=OneGpu(uuid))
        if paused:
            assert mgr.pause_gpu(uuid) == "paused"
        else:
            mgr.placer.pause(uuid)
            assert mgr.resume_gpu(uuid) == "resumed"
        await mgr.close()

    h = run_in_thread(agent_config(tmp_path, spool_dir=spool), nvml=FakeNvml())
    try:
        def gpus() -> list[dict]:
            return json.loads(get(h.url, "/api/v1/jobs")[1])["gpus"]

        asyncio.run(alert(True))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (gpus() and gpus()[0].get("paused")):
            time.sleep(0.2)
        assert gpus()[0]["paused"] == "Alertmanager: GPUOverheating"
        asyncio.run(alert(False))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and gpus()[0].get("paused"):
            time.sleep(0.2)
        assert gpus()[0]["paused"] is None
    finally:
        h.stop()


def test_any_valid_event_fits_the_frame_table():
    """Whatever numbers a validated event carries (a frame of -225714, an attempt of -574: schemathesis
    found the OverflowError of the table's unsigned columns), the job's frame table takes it."""
    from hypothesis import given, settings
    from hypothesis import strategies as hs

    from blender_hooks.events import make_event, validate

    ints = hs.integers(min_value=-(2**63) + 1, max_value=2**63 - 1)

    @settings(max_examples=300, deadline=None)
    @given(frame=ints, attempt=ints, typ=hs.sampled_from(["frame_start", "frame_end", "frame_verified",
                                                           "attempt_end", "frame_check"]))
    def run(frame: int, attempt: int, typ: str) -> None:
        st = State()
        extra = {"frame_end": dict(seconds=1.0, saved=True), "attempt_end": dict(attempt=attempt, error_type="segfault"),
                 "frame_check": dict(reason="blank")}.get(typ, {})
        for ev in [
            make_event("job_start", session="s1234567", seq=1, job="j", host="h", pid=1, ts=1.7e9,
                       blend_file="/b", scene="s", frame_start=1, frame_end=3, engine="CYCLES",
                       device_type="CPU", blender_version="4.2"),
            make_event(typ, session="s1234567", seq=2, job="j", host="h", pid=1, ts=1.7e9 + 1, frame=frame,
                       **({"attempt": attempt} | extra))]:
            st.accept(ev)
            st.apply(validate(ev))
        cols = st.jobs["j"].frames.to_columns()
        assert all(len(col) == len(cols["frame"]) for col in cols.values()), cols

    run()
