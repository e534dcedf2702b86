"""Alertmanager → healer: payload validation, rules, actions, auth; random JSON never crashes it.

The actions are a recording implementation of the supervisor's `AlertActions` (a stand-in for the
supervisor, not for any external part); Alertmanager itself is exercised in
tests/integration/test_alertmanager.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from fuzz import oracle
from healer.service.alerts import (
    DEFAULT_RULES,
    AlertmanagerReceiver,
    AlertRule,
    Matcher,
    PayloadError,
    add_alertmanager_routes,
    decide,
    load_alert_rules,
    parse_notification,
)
from tests.support.healer import RecordingActions

TOKEN = "am-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class AsyncActions(RecordingActions):
    async def pause_gpu(self, uuid: str) -> None:     # async actions are awaited
        self.calls.append(("pause_gpu", uuid))


def alert(name: str, status: str = "firing", starts: str = "2026-01-01T00:00:00Z", **labels: str) -> dict:
    return {"status": status, "labels": {"alertname": name, **labels}, "annotations": {"summary": "x"},
            "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": ""}


def payload(*alerts: dict, status: str = "firing") -> dict:
    return {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": status, "receiver": "healer",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
            "alerts": list(alerts)}


@pytest.fixture
async def client():
    actions = AsyncActions()
    app = web.Application()
    registry = CollectorRegistry()
    rules = (*DEFAULT_RULES, AlertRule("GPUOverheating", "pause_gpu", ("uuid", "gpu")))   # the mechanism
    add_alertmanager_routes(app, token=TOKEN, rules=rules, actions=actions, registry=registry)
    async with TestClient(TestServer(app)) as c:
        c.actions = actions
        c.registry = registry
        yield c


# -- pure ---------------------------------------------------------------------------------------------------
def test_parse_reasons():
    with pytest.raises(PayloadError, match="version"):
        parse_notification({"version": "3", "alerts": []})
    with pytest.raises(PayloadError, match="alerts: expected a list"):
        parse_notification({"version": "4"})
    with pytest.raises(PayloadError, match=r"alerts\[0\]\.status"):
        parse_notification({"version": "4", "alerts": [{"status": "on"}]})
    with pytest.raises(PayloadError, match=r"alerts\[0\]\.labels\.job"):
        parse_notification({"version": "4", "alerts": [{"status": "firing", "labels": {"job": 3}}]})
    with pytest.raises(PayloadError, match="payload"):
        parse_notification([1])
    note = parse_notification(payload(alert("RenderStalled", job="j1")))
    assert note.alerts[0].alertname == "RenderStalled" and note.alerts[0].labels["job"] == "j1"


def test_rules_and_matchers():
    rules = load_alert_rules([
        {"alertname": "GPUOverheating", "action": "pause_gpu", "labels": ["uuid", "gpu"],
         "matchers": ['severity=~"critical|page"', 'host!="spare"']},
        {"alertname": "RenderStalled", "action": "restart_job", "label": "render_job"},
    ])
    note = parse_notification(payload(
        alert("GPUOverheating", gpu="GPU-1", severity="page"),
        alert("GPUOverheating", uuid="GPU-2", severity="warning"),
        alert("GPUOverheating", uuid="GPU-3", severity="critical", host="spare"),
        alert("RenderStalled", render_job="j9"),
        alert("RenderStalled"),
        alert("RenderStalled", status="resolved", render_job="j9"),
    ))
    got = [(d.outcome, d.call, d.target) for d in decide(note, rules)]
    assert got == [("act", "pause_gpu", "GPU-1"), ("unknown", None, None), ("unknown", None, None),
                   ("act", "restart_job", "j9"), ("no_label", None, None), ("nothing", None, "j9")]
    assert load_alert_rules(None) == DEFAULT_RULES
    for bad, key in [([{"alertname": "", "action": "restart_job", "labels": ["job"]}], "alertname"),
                     ([{"alertname": "A", "action": "reboot", "labels": ["job"]}], "action"),
                     ([{"alertname": "A", "action": "restart_job"}], "labels"),
                     ([{"alertname": "A", "action": "restart_job", "labels": ["j"], "matchers": ["x~y"]}], "matchers"),
                     ({"alertname": "A"}, "alert_rules")]:
        with pytest.raises(ValueError, match=key):
            load_alert_rules(bad)
    assert Matcher.parse('a!~"x.*"').matches({"a": "y"}) and not Matcher.parse('a!~"x.*"').matches({"a": "xy"})


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=20))
def test_parse_and_decide_never_raise_anything_but_payload_error(obj):
    for candidate in (obj, {"version": "4", "alerts": obj}, {"version": "4", "alerts": [obj]}):
        oracle.alert_payload(candidate)     # a PayloadError with a message, or one sound decision per alert


# -- over HTTP -----------------------------------------------------------------------------------------------
async def test_auth(client):
    body = payload(alert("RenderStalled", job="j1"))
    assert (await client.post("/api/v1/alertmanager", json=body)).status == 401
    r = await client.post("/api/v1/alertmanager", json=body, headers={"Authorization": "Bearer nope"})
    assert r.status == 401 and "Bearer" in r.headers["WWW-Authenticate"]
    r = await client.post("/api/v1/alertmanager", json=body, headers={"Authorization": TOKEN})
    assert r.status == 401
    assert client.actions.calls == []


async def test_malformed_gets_400_with_reason(client):
    r = await client.post("/api/v1/alertmanager", data=b"{not json", headers=AUTH)
    assert r.status == 400 and "not JSON" in (await r.json())["error"]
    r = await client.post("/api/v1/alertmanager", json={"version": "4", "alerts": "x"}, headers=AUTH)
    assert r.status == 400 and (await r.json())["error"] == "alerts: expected a list"
    r = await client.post("/api/v1/alertmanager", data=b"\xff\xfe", headers=AUTH)
    assert r.status == 400


async def test_render_stalled_restarts_the_job_once(client):
    body = payload(alert("RenderStalled", job="job-42"), alert("DiskFull", instance="n1"))
    r = await client.post("/api/v1/alertmanager", json=body, headers=AUTH)
    assert r.status == 200
    results = (await r.json())["results"]
    assert [x["outcome"] for x in results] == ["done", "unknown"]
    r = await client.post("/api/v1/alertmanager", json=body, headers=AUTH)   # Alertmanager re-sends
    assert [x["outcome"] for x in (await r.json())["results"]] == ["duplicate", "unknown"]
    assert client.actions.calls == [("restart_job", "job-42")]
    later = payload(alert("RenderStalled", starts="2026-01-01T01:00:00Z", job="job-42"))
    await client.post("/api/v1/alertmanager", json=later, headers=AUTH)     # a new stall episode
    assert client.actions.calls == [("restart_job", "job-42")] * 2
    assert client.registry.get_sample_value("renderwatch_healer_alerts_total",
                                            {"action": "none", "status": "firing", "outcome": "unknown"}) == 2


async def test_failed_action_is_retried_on_resend(client):
    body = payload(alert("RenderStalled", job="job-1"))
    client.actions.fail_next = True
    r = await client.post("/api/v1/alertmanager", json=body, headers=AUTH)
    assert r.status == 200 and (await r.json())["results"][0]["outcome"] == "failed"
    await client.post("/api/v1/alertmanager", json=body, headers=AUTH)
    assert client.actions.calls == [("restart_job", "job-1")]


async def test_gpu_paused_until_every_alert_on_it_resolves(client):
    hot = alert("GPUOverheating", uuid="GPU-7", sensor="core")
    hot2 = alert("GPUOverheating", uuid="GPU-7", sensor="memory")
    await client.post("/api/v1/alertmanager", json=payload(hot, hot2), headers=AUTH)
    assert client.actions.calls == [("pause_gpu", "GPU-7"), ("pause_gpu", "GPU-7")]
    r = await client.post("/api/v1/alertmanager", json=payload({**hot, "status": "resolved"}), headers=AUTH)
    assert (await r.json())["results"][0]["outcome"] == "held"
    await client.post("/api/v1/alertmanager", json=payload({**hot2, "status": "resolved"}, status="resolved"),
                      headers=AUTH)
    assert client.actions.calls[-1] == ("resume_gpu", "GPU-7") and len(client.actions.calls) == 3


async def test_holds_are_bounded_and_a_missing_target_holds_nothing():
    """90,000 distinct GPUOverheating alerts grew the receiver's holds without bound (issue 28): they are
    bounded by `memory`, oldest first, and an alert for a GPU this host does not have holds nothing."""
    class Host(RecordingActions):
        def pause_gpu(self, uuid: str) -> bool | None:
            super().pause_gpu(uuid)
            return None if uuid.startswith("GPU-real") else False     # False: no such GPU here

    actions = Host()
    receiver = AlertmanagerReceiver(token=TOKEN, rules=(AlertRule("GPUOverheating", "pause_gpu", ("uuid",)),),
                                    actions=actions, memory=100)
    app = web.Application()
    app.router.add_post("/am", receiver.handle)
    async with TestClient(TestServer(app)) as c:
        for batch in range(6):
            alerts = [alert("GPUOverheating", starts=f"t{batch}", uuid=f"GPU-{batch}-{i}") for i in range(500)]
            r = await c.post("/am", json=payload(*alerts), headers=AUTH)
            assert {x["outcome"] for x in (await r.json())["results"]} == {"no_target"}
        assert len(receiver._holds) == 0
        real = [alert("GPUOverheating", starts=f"t{i}", uuid=f"GPU-real-{i % 4}") for i in range(1000)]
        r = await c.post("/am", json=payload(*real), headers=AUTH)
        assert {x["outcome"] for x in (await r.json())["results"]} == {"done"}
        assert len(receiver._holds) <= 100 and len(receiver._acted) <= 100
        # the newest holds are kept: resolving one of two alerts on a GPU still holds it
        r = await c.post("/am", json=payload({**real[-1], "status": "resolved"}), headers=AUTH)
        assert (await r.json())["results"][0]["outcome"] == "held"


def test_token_is_required():
    with pytest.raises(ValueError, match="token"):
        add_alertmanager_routes(web.Application(), token="", actions=AsyncActions())
    assert isinstance(DEFAULT_RULES[0], AlertRule)


# -- random JSON over HTTP -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served_url():
    """The routes served from a thread (Hypothesis drives a plain function, one request per example)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict = {}

    async def start() -> None:
        app = web.Application()
        add_alertmanager_routes(app, token=TOKEN, actions=AsyncActions())
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["runner"], box["port"] = runner, runner.addresses[0][1]
        ready.set()

    t = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    t.start()
    assert ready.wait(10)
    yield f"http://127.0.0.1:{box['port']}/api/v1/alertmanager"
    asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=5), max_leaves=25)
alertish = st.fixed_dictionaries({"version": st.sampled_from(["4", "3", 4]), "status": json_values,
                                  "alerts": st.lists(st.fixed_dictionaries(
                                      {"status": st.sampled_from(["firing", "resolved", "x"]),
                                       "labels": st.dictionaries(st.sampled_from(["alertname", "job", "uuid", "gpu"]),
                                                                 st.sampled_from(["RenderStalled", "GPUOverheating",
                                                                                  "j1", "GPU-1"]) | json_values)}),
                                      max_size=3) | json_values})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(json_values, alertish))
def test_random_json_never_crashes_the_receiver(served_url, doc):
    req = urllib.request.Request(served_url, data=json.dumps(doc).encode(), headers={**AUTH,
                                 "Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            status = r.status
            assert json.loads(r.read())["status"] == "ok"
    except urllib.error.HTTPError as e:
        status = e.code
        assert "error" in json.loads(e.read())
    assert status in (200, 400)
