"""The OpenAPI documents of the agent and the healer: every route described, served at /openapi.json,
and schemathesis against both services running for real on 127.0.0.1.

schemathesis generates valid and invalid requests for every operation from the documents the
services serve and checks: no 5xx, every status code documented, every response body matching its
schema. RENDERWATCH_SCHEMATHESIS_EXAMPLES sets examples per operation (default 30; the README's
figure used 500). The healer's submissions name scenes that do not exist, so every job fails
before any Blender starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from agent.app import create_app as create_agent_app
from agent.app import run_in_thread
from agent.openapi import SPEC as AGENT_SPEC
from healer.config import load_config
from healer.service.app import create_app as create_healer_app
from healer.service.openapi import spec as healer_spec
from tests.support.agent import agent_config
from tests.support.fakes import NoNvml
from tests.support.healer import RENDERWATCH, healer_env
from tests.support.net import free_port

EXAMPLES = int(os.environ.get("RENDERWATCH_SCHEMATHESIS_EXAMPLES", "30"))
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
AGENT_TOKEN, HEALER_TOKEN, AM_TOKEN = "agent-token", "healer-token", "am-token"
SEEN: Counter[tuple[str, int]] = Counter()     # ("agent POST /api/v1/events", status) -> requests


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    """The agent's NDJSON body: one JSON document per line (an array's items; anything else as one line)."""
    items = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(v).encode() + b"\n" for v in items)


def _operations(spec: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


def _routes(app: web.Application) -> set[tuple[str, str]]:
    # aiohttp adds HEAD for every GET: it is not a route of ours
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"
            and r.resource is not None}


# -- the documents ----------------------------------------------------------------------------------
def test_agent_document_describes_every_route_and_nothing_else(tmp_path):
    app = create_agent_app(agent_config(tmp_path), nvml=NoNvml())
    assert _routes(app) == _operations(AGENT_SPEC)


@pytest.mark.parametrize("am_token", [AM_TOKEN, None])
def test_healer_document_describes_every_route_and_nothing_else(tmp_path, am_token):
    env = healer_env(tmp_path / "home")
    if am_token:
        env["RENDERWATCH_ALERTMANAGER_TOKEN"] = am_token
    app = create_healer_app(load_config(env=env))
    assert _routes(app) == _operations(healer_spec(alertmanager=bool(am_token)))
    assert ("POST", "/api/v1/alertmanager") in _operations(healer_spec()) and \
        ("POST", "/api/v1/alertmanager") not in _operations(healer_spec(alertmanager=False))


@pytest.mark.parametrize("doc", [AGENT_SPEC, healer_spec()], ids=["agent", "healer"])
def test_documents_are_valid_openapi(doc):
    schema = schemathesis.openapi.from_dict(json.loads(json.dumps(doc)))
    ops = [op.ok() for op in schema.get_all_operations()]     # raises on an invalid operation
    assert len(ops) == len(_operations(doc))
    for op in ops:
        assert op.definition.raw.get("responses"), op.label
        if op.definition.raw.get("security") != []:          # open: /healthz, the document, the page
            assert "401" in op.definition.raw["responses"], f"{op.label}: secured routes document 401"


# -- bugs schemathesis found (regression tests that need no fuzzer) -------------------------------------
@pytest.mark.parametrize("field,value,message", [
    ("blender", {"a": 1}, "blender:"),          # was a 500: unhashable dict in the allowed-set check
    ("blender", ["blender"], "blender:"),
    ("job", "../etc", "job:"),                  # was 201, then the job crashed the supervisor (ValueError)
    ("job", "abc\n", "job:"),
    ("strict", {"a": 1}, "strict:"),            # was taken as true
    ("frames", [10**30], "frames:"),            # was accepted: frames beyond Blender's MAXFRAME
    ("frames", [-1], "frames:"),
    # issue 28: each was accepted (201), and the job failed later with exit 2 (or stalled unwatched)
    ("args", ["-o", "/tmp/x_####"], "args:"),
    ("args", ["--python", "x.py", "-f", "3"], "args:"),
    ("args", ["-a"], "args:"),
    ("args", ["-s", "1", "-e", "9"], "args:"),
    ("args", ["--render-output", "/tmp/x"], "args:"),
    ("args", ["x"] * 257, "args:"),
    ("args", ["a\x00b"], "args[0]:"),
    ("stall_timeout", float("nan"), "stall_timeout:"),      # turned stall detection off
    ("stall_timeout", float("inf"), "stall_timeout:"),
    ("stall_timeout", 1e12, "stall_timeout:"),
    ("output", "/tmp/\ud800_####", "output:"),               # a lone surrogate: no file name holds it
    ("output", "/tmp/x\x00_####", "output:"),
    ("scene", "/" + "a" * 5000, "scene:"),
])
async def test_healer_rejects_a_bad_submission_with_400(tmp_path, field, value, message):
    from aiohttp.test_utils import TestClient, TestServer

    app = create_healer_app(load_config(env=healer_env(tmp_path / "home")))
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/api/v1/jobs", json={"scene": str(tmp_path / "none.blend"), field: value})
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"].startswith(message)
        assert (await (await client.get("/api/v1/jobs")).json())["jobs"] == []


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,           # was a 500 (RecursionError) with a valid token
    b'{"scene": ' + b"[" * 50_000,
    b"\xff\xfe{}",
    b"",
])
async def test_healer_answers_a_body_that_is_not_json_with_400(tmp_path, body):
    from aiohttp.test_utils import TestClient, TestServer

    app = create_healer_app(load_config(env=healer_env(tmp_path / "home")))
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/api/v1/jobs", data=body, headers={"Content-Type": "application/json"})
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"].startswith("body:")
        resp = await client.post("/api/v1/jobs", data=b" " * (2 << 20), headers={"Content-Type": "application/json"})
        assert resp.status == 413 and "body" in (await resp.json())["error"]


async def test_healer_alerts_for_gpus_and_jobs_it_does_not_have_hold_nothing(tmp_path):
    """Alerts naming GPUs or jobs this host does not have are acknowledged as `no_target` (a RenderStalled
    for an unknown job was a logged traceback each; the receiver held every made-up GPU, unbounded)."""
    from aiohttp.test_utils import TestClient, TestServer

    from healer.service.alert_rules import AlertRule
    env = healer_env(tmp_path / "home", RENDERWATCH_ALERTMANAGER_TOKEN=AM_TOKEN)
    cfg = load_config(env=env)
    cfg = dataclasses.replace(cfg, alert_rules=(*cfg.alert_rules, AlertRule("GPUOverheating", "pause_gpu", ("uuid",))))
    app = create_healer_app(cfg)
    alerts = [{"status": "firing", "labels": {"alertname": "GPUOverheating", "uuid": f"GPU-{i}"}, "startsAt": "t"}
              for i in range(50)] + [{"status": "firing", "labels": {"alertname": "RenderStalled", "job": "nope"}}]
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/api/v1/alertmanager", json={"version": "4", "alerts": alerts},
                                 headers={"Authorization": f"Bearer {AM_TOKEN}"})
        assert resp.status == 200, await resp.text()
        assert {r["outcome"] for r in (await resp.json())["results"]} == {"no_target"}


# -- the services, for real -------------------------------------------------------------------------
def _get(url: str, **headers: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def agent_url(tmp_path_factory):
    handle = run_in_thread(agent_config(tmp_path_factory.mktemp("agent"), token=AGENT_TOKEN), nvml=NoNvml())
    yield handle.url
    handle.stop()


@pytest.fixture(scope="module")
def healer_url(tmp_path_factory):
    home = tmp_path_factory.mktemp("healer")
    port = free_port()
    env = healer_env(home, RENDERWATCH_HEALER_TOKEN=HEALER_TOKEN, RENDERWATCH_ALERTMANAGER_TOKEN=AM_TOKEN,
                     RENDERWATCH_HEALER_LISTEN=f"127.0.0.1:{port}", RENDERWATCH_HEALER_CONCURRENCY="2")
    log_file = open(home / "healer.log", "wb")  # closed after the process ends
    proc = subprocess.Popen([*RENDERWATCH, "healer"], env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if _get(f"{url}/healthz")[0] == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None, (home / "healer.log").read_text()
        assert time.monotonic() < deadline, "the healer did not start"
        time.sleep(0.1)
    yield url
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log_file.close()
    log = (home / "healer.log").read_text()
    assert "Traceback" not in log, log


@pytest.mark.parametrize("service,expected", [("agent", AGENT_SPEC), ("healer", healer_spec())])
def test_document_is_served_without_a_token(service, expected, request):
    url = request.getfixturevalue(f"{service}_url")
    status, body = _get(f"{url}/openapi.json")
    assert status == 200
    assert json.loads(body) == json.loads(json.dumps(expected))
    assert _get(f"{url}/api/v1/jobs")[0] == 401          # while the API itself still needs the token


# The documents the services serve (equal to these: test_document_is_served_without_a_token). Loaded
# eagerly: schemathesis.pytest.from_fixture sets Item._nodeid, which pytest 9 no longer has.
agent_schema = schemathesis.openapi.from_dict(json.loads(json.dumps(AGENT_SPEC)))
healer_schema = schemathesis.openapi.from_dict(json.loads(json.dumps(healer_spec())))
_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))


@agent_schema.parametrize()
@_SETTINGS
def test_agent_api_conforms(case, agent_url):
    resp = case.call_and_validate(base_url=agent_url, headers={"Authorization": f"Bearer {AGENT_TOKEN}"},
                                  checks=CHECKS)
    SEEN[f"agent {case.method.upper()} {case.path}", resp.status_code] += 1


@healer_schema.parametrize()
@_SETTINGS
def test_healer_api_conforms(case, healer_url):
    token = AM_TOKEN if case.path == "/api/v1/alertmanager" else HEALER_TOKEN
    resp = case.call_and_validate(base_url=healer_url, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
    SEEN[f"healer {case.method.upper()} {case.path}", resp.status_code] += 1


@healer_schema.parametrize()
@settings(max_examples=max(5, EXAMPLES // 5), deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_healer_api_without_a_token_is_401(case, healer_url):
    """The same generated requests with no token: 401 everywhere a token is required, never a 5xx."""
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    resp = case.call(base_url=healer_url)
    assert resp.status_code < 500, (case.method, case.path, resp.status_code)
    if case.method.lower() not in healer_spec()["paths"][case.path]:
        return          # schemathesis also tries undocumented methods (405 where no token is needed)
    secured = case.path not in ("/healthz", "/openapi.json")
    assert (resp.status_code == 401) == secured, (case.method, case.path, resp.status_code)


def test_the_fuzzer_reached_past_validation():
    """Not only rejections: generated events were ingested, jobs submitted, alerts acted on."""
    if not SEEN:
        pytest.skip("the schemathesis tests did not run in this session")
    documented = {k: n for k, n in SEEN.items() if k[1] != 405}
    print(f"\nschemathesis: {sum(SEEN.values())} requests, {sum(documented.values())} to documented operations:",
          dict(sorted(documented.items())))
    for op, wanted in {"agent POST /api/v1/events": {200, 400}, "agent GET /api/v1/jobs": {200},
                       "healer POST /api/v1/jobs": {201, 400}, "healer POST /api/v1/alertmanager": {200, 400},
                       "healer GET /api/v1/jobs/{id}": {404}}.items():
        assert wanted <= {status for (o, status) in SEEN if o == op}, op


def test_healer_jobs_submitted_by_the_fuzzer_failed_without_starting_blender(healer_url):
    status, body = _get(f"{healer_url}/api/v1/jobs", Authorization=f"Bearer {HEALER_TOKEN}")
    assert status == 200
    jobs = json.loads(body)["jobs"]
    assert all(j["pid"] is None for j in jobs), [j for j in jobs if j["pid"] is not None]
    deadline = time.monotonic() + 10
    while any(j["state"] in ("queued", "running") for j in jobs) and time.monotonic() < deadline:
        time.sleep(0.2)
        jobs = json.loads(_get(f"{healer_url}/api/v1/jobs", Authorization=f"Bearer {HEALER_TOKEN}")[1])["jobs"]
    assert all(j["state"] in ("failed", "cancelled") for j in jobs), jobs

