"""Security: argv never a shell, loopback by default, tokens checked in constant time, private files.

Real parts: the `renderwatch render` CLI driving Debian's Blender 3.4 (a `--python` script records
the sys.argv Blender received), real agent and healer apps on 127.0.0.1, and the real writers of the
spool, the ledger, the agent journal and trace files and the webhook outbox, run into tmp dirs.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.support.healer import RENDERWATCH, healer_env
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]
NASTY = ["a b", "'single'", '"double"', "semi;colon", "$(touch PWNED)", "`touch PWNED`", "--leading-dash", "-x",
         "&& touch PWNED", "| touch PWNED > PWNED", "back\\slash", "new\nline", "*", "~", "$HOME"]


def canaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("PWNED") if p.is_file()]


# -- argv, never a shell ------------------------------------------------------------------------------------------
def test_no_shell_anywhere() -> None:
    """No module of the product starts a process through a shell."""
    for pkg in ("agent", "healer", "blender_hooks", "renderwatch"):
        for path in (REPO / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.keyword) and node.arg == "shell":
                    assert isinstance(node.value, ast.Constant) and node.value.value is False, f"{path}:{node.value.lineno}"
                if isinstance(node, ast.Attribute) and node.attr in ("system", "popen", "create_subprocess_shell"):
                    raise AssertionError(f"{path}:{node.lineno}: {node.attr}")


@pytest.mark.blender
def test_hostile_paths_and_args_reach_blender_literally(tmp_path: Path, scene_factory, blender34: str) -> None:
    weird = tmp_path / "sh ot; $(touch PWNED) `touch PWNED` 'q' \"dq\" & |"
    weird.mkdir()
    scene = weird / "scene -x $(touch PWNED).blend"
    shutil.copy(scene_factory(frames=2, samples=4), scene)
    record = weird / "rec ord;`touch PWNED`.py"
    argv_out = tmp_path / "argv.json"
    record.write_text("import json, os, sys\nopen(os.environ['RW_ARGV_OUT'], 'w').write(json.dumps(sys.argv))\n")
    output = str(weird / "out $(touch PWNED)" / "f_####")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    report = tmp_path / "report.json"
    env = healer_env(tmp_path / "home", RW_ARGV_OUT=str(argv_out), RENDERWATCH_BLENDER=blender34)
    proc = subprocess.run([*RENDERWATCH, "render", str(scene), "--frames", "1-2", "--output", output, "--quiet",
                           "--report", str(report), "--", "--python", str(record), "--", *NASTY],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    argv = json.loads(argv_out.read_text())
    assert argv[argv.index("-b") + 1] == str(scene)
    assert argv[argv.index("-o") + 1] == output
    assert str(record) in argv
    assert argv[argv.index("--") + 1:] == NASTY
    assert json.loads(report.read_text())["frames_completed"] == [1, 2]
    assert sorted(os.listdir(weird / "out $(touch PWNED)")) == ["f_0001.png", "f_0002.png"]
    assert canaries(tmp_path) == [] and canaries(Path.cwd()) == []


@pytest.mark.parametrize(("name", "stem"), [("-scene.blend", "scene"), (".hidden.blend", "hidden"), ("--.blend", "job")])
def test_leading_dash_scene_name_gets_a_valid_job_id(tmp_path: Path, name: str, stem: str) -> None:
    """docs/threat-model.md, known gaps fixed: a scene named like an option or a hidden file still gets a job
    id that starts with a letter or digit (no command that is handed it reads it as an option, it names no
    hidden folder), keeps the readable part of the name, and its folder is a direct child of the jobs root."""
    from healer.supervising.ledger import job_dir, jobs_dir
    from healer.supervising.preflight import job_id_for

    env = {"RENDERWATCH_HOME": str(tmp_path / "home")}
    job = job_id_for(f"/shots/{name}", [1], None, [])
    assert job[0].isalnum() and job.startswith(f"{stem}-"), job
    folder = job_dir(job, env)
    assert folder.parent == jobs_dir(env) and folder.name == job


@pytest.mark.parametrize("spec", ["1;touch PWNED", "$(touch PWNED)", "`touch PWNED`", "1-2 && touch PWNED", "-1",
                                  "1-2x0", "1-99999999"])
def test_hostile_frame_lists_are_refused(tmp_path: Path, spec: str) -> None:
    scene = tmp_path / "s.blend"
    scene.write_bytes(b"BLENDER-v304")
    proc = subprocess.run([*RENDERWATCH, "render", str(scene), f"--frames={spec}", "--quiet"],
                          env=healer_env(tmp_path / "home"), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--frames" in proc.stderr
    assert canaries(tmp_path) == []


def test_service_args_become_argv_items(tmp_path: Path) -> None:
    """The healer service API takes args as a JSON list: each item is one argv item, unparsed."""
    from healer.config import load_config
    from healer.service.app import JobManager
    from healer.service.metrics import HealerMetrics
    from healer.supervising.spawn import LaunchSpec, build_argv

    mgr = JobManager(load_config(env={"RENDERWATCH_HOME": str(tmp_path)}), HealerMetrics())
    scene = str(tmp_path / "a b;$(x).blend")
    req = mgr.request_from({"scene": scene, "frames": "1-3", "args": ["--python", "/p q.py", "--", *NASTY]})
    argv = build_argv(LaunchSpec(blender="blender", scene=req.scene, frames=list(req.frames or ()),
                                 user_args=req.blender_args, hooks=None))
    assert argv[2] == scene and argv[-len(NASTY) - 1:] == ["--", *NASTY]
    with pytest.raises(ValueError, match="args"):
        mgr.request_from({"scene": scene, "args": "--python x.py; touch PWNED"})
    with pytest.raises(ValueError, match="absolute"):
        mgr.request_from({"scene": "-x.blend"})
    with pytest.raises(ValueError, match="not allowed"):
        mgr.request_from({"scene": scene, "blender": "/bin/sh"})


# -- listeners: loopback by default, a token off loopback ----------------------------------------------------------
def test_agent_listens_on_loopback_and_needs_a_token_elsewhere(tmp_path: Path) -> None:
    from agent.config import ConfigError, load_config

    env = {"RENDERWATCH_HOME": str(tmp_path)}
    cfg = load_config(env=env)
    assert (cfg.host, cfg.port) == ("127.0.0.1", 9464)
    for listen in ("0.0.0.0:9464", "[::]:9464", "192.168.1.10:9464", "example.com:9464"):
        with pytest.raises(ConfigError, match="token"):
            load_config(env={**env, "RENDERWATCH_AGENT_LISTEN": listen})
        assert load_config(env={**env, "RENDERWATCH_AGENT_LISTEN": listen, "RENDERWATCH_TOKEN": "t0k"}).token == "t0k"
    for listen in ("127.0.0.1:0", "localhost:0", "[::1]:0", "127.0.0.2:0"):
        assert load_config(env={**env, "RENDERWATCH_AGENT_LISTEN": listen}).token is None


def test_healer_listens_on_loopback_and_needs_a_token_elsewhere(tmp_path: Path) -> None:
    from healer.config import ConfigError, load_config
    from healer.service.app import create_app, parse_listen

    env = {"RENDERWATCH_HOME": str(tmp_path)}
    cfg = load_config(env=env)
    assert parse_listen(cfg) == ("127.0.0.1", 9465)
    for listen in ("0.0.0.0:9465", "[::]:9465", "10.0.0.5:9465", "render01:9465"):
        bad = load_config(env={**env, "RENDERWATCH_HEALER_LISTEN": listen})
        with pytest.raises(ConfigError, match="RENDERWATCH_HEALER_TOKEN"):
            parse_listen(bad)
        with pytest.raises(ConfigError):
            create_app(bad)
        assert parse_listen(load_config(env={**env, "RENDERWATCH_HEALER_LISTEN": listen,
                                             "RENDERWATCH_HEALER_TOKEN": "t0k"}))[0] == listen.rsplit(":", 1)[0].strip("[]")


@pytest.mark.parametrize("cmd,listen_env", [(["agent", "--listen", "0.0.0.0:0"], {}),
                                            (["healer", "--listen", "0.0.0.0:0"], {})])
def test_services_refuse_to_start_off_loopback_without_token(tmp_path: Path, cmd: list[str], listen_env: dict) -> None:
    proc = subprocess.run([*RENDERWATCH, *cmd], env=healer_env(tmp_path, **listen_env), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "TOKEN" in proc.stderr


def test_token_comparison_is_constant_time() -> None:
    """Every token check goes through hmac.compare_digest (and never ==)."""
    from agent import ingest
    from healer.service import alerts, auth

    for fn in (ingest.check_token, auth.auth_middleware, alerts.AlertmanagerReceiver.handle):
        src = inspect.getsource(fn)
        assert "hmac.compare_digest(" in src, fn
        assert "== token" not in src and "token ==" not in src and "== self._expected" not in src, fn


TOKEN = "s3cret-token-0123456789abcdef"
WRONG = ["", "Bearer", "Bearer ", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN,
         f"Bearer {TOKEN.upper()}", "Bearer " + "A" * 4096]


async def test_agent_wrong_tokens_get_401(tmp_path: Path) -> None:
    from agent.app import create_app
    from agent.config import AgentConfig

    cfg = AgentConfig(host="127.0.0.1", port=0, token=TOKEN, data_dir=tmp_path / "a", spool_dir=tmp_path / "s",
                      traces_enabled=False)
    async with TestClient(TestServer(create_app(cfg))) as c:
        for auth in WRONG:
            h = {"Authorization": auth} if auth else {}
            for method, path in (("GET", "/metrics"), ("GET", "/api/v1/jobs"), ("POST", "/api/v1/events")):
                r = await c.request(method, path, headers=h, data=b"")
                assert r.status == 401, (auth[:20], path, r.status)
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert (await c.get("/metrics", headers=good)).status == 200
        assert (await c.get("/api/v1/jobs", headers=good)).status == 200
        assert (await c.get("/healthz")).status == 200          # liveness only: no job data


async def test_healer_and_alertmanager_wrong_tokens_get_401(tmp_path: Path) -> None:
    from healer.config import load_config
    from healer.service.app import create_app

    env = {"RENDERWATCH_HOME": str(tmp_path), "RENDERWATCH_HEALER_TOKEN": TOKEN,
           "RENDERWATCH_ALERTMANAGER_TOKEN": TOKEN + "-am"}
    async with TestClient(TestServer(create_app(load_config(env=env)))) as c:
        for auth in [*WRONG, f"Bearer {TOKEN}-am"]:
            h = {"Authorization": auth} if auth else {}
            for method, path in (("GET", "/metrics"), ("GET", "/api/v1/jobs"), ("POST", "/api/v1/jobs"),
                                 ("POST", "/api/v1/jobs/x/cancel")):
                r = await c.request(method, path, headers=h, json={})
                assert r.status == 401, (auth[:20], path, r.status)
        for auth in [*WRONG, f"Bearer {TOKEN}"]:          # the healer's token is not Alertmanager's
            h = {"Authorization": auth} if auth else {}
            r = await c.post("/api/v1/alertmanager", headers=h, json={"version": "4", "alerts": []})
            assert r.status == 401, (auth[:20], r.status)
        assert (await c.get("/api/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"})).status == 200
        r = await c.post("/api/v1/alertmanager", headers={"Authorization": f"Bearer {TOKEN}-am"},
                         json={"version": "4", "status": "firing", "alerts": []})
        assert r.status == 200


def test_alertmanager_route_exists_only_with_its_token(tmp_path: Path) -> None:
    from healer.config import load_config
    from healer.service.app import create_app

    app = create_app(load_config(env={"RENDERWATCH_HOME": str(tmp_path)}))
    assert "/api/v1/alertmanager" not in {r.resource.canonical for r in app.router.routes() if r.resource}


def test_healer_non_utf8_authorization_is_401(tmp_path: Path) -> None:
    port = free_port()
    env = healer_env(tmp_path, RENDERWATCH_HEALER_TOKEN=TOKEN)
    proc = subprocess.Popen([*RENDERWATCH, "healer", "--listen", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_port(port)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\nConnection: close\r\n\r\n")
            line = s.recv(100).split(b"\r\n")[0]
        assert b" 401 " in line, line
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_port(port: int, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


# -- file modes ---------------------------------------------------------------------------------------------------
@pytest.fixture
def umask_022():
    old = os.umask(0o022)        # the usual default: files 0644 unless the code asks for less
    yield
    os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def assert_private(root: Path, expect_files: int) -> None:
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) >= expect_files, files
    assert mode(root) == 0o700, root
    for p in root.rglob("*"):
        assert mode(p) == (0o700 if p.is_dir() else 0o600), f"{p}: {oct(mode(p))}"


def test_spool_files_are_private(tmp_path: Path, umask_022) -> None:
    from blender_hooks.events import encode, make_event
    from blender_hooks.spool import SpoolWriter
    from blender_hooks.spoolfile import add_evicted, advance_ack

    d = tmp_path / "spool"
    w = SpoolWriter(d, "abcdef12", max_bytes=1 << 30)
    assert w.append(encode(make_event("frame_start", session="abcdef12", seq=1, job="j", host="h", pid=1, frame=1)))
    advance_ack(d, "abcdef12", 1, 10)
    add_evicted(d, 3)
    w.close()
    assert_private(d, 3)


def test_ledger_files_are_private(tmp_path: Path, umask_022) -> None:
    from healer.supervising.ledger import Ledger, SupervisorLock, job_dir

    env = {"RENDERWATCH_HOME": str(tmp_path / "home")}
    d = job_dir("job-1", env)
    led = Ledger.open_or_create(d, job="job-1", scene="/s.blend", frames=[1, 2])
    led.frame_started(1)
    led.save()
    lock = SupervisorLock(d)
    lock.acquire()
    assert mode(d / "ledger.json") == 0o600 and mode(d / "ledger.journal") == 0o600
    assert mode(d / "supervisor.lock") == 0o600 and mode(d) == 0o700
    lock.release()
    assert_private(d, 1)


def test_agent_journal_and_traces_are_private(tmp_path: Path, umask_022) -> None:
    import urllib.request

    from agent.app import run_in_thread
    from agent.config import AgentConfig
    from blender_hooks.events import encode, make_event

    data = tmp_path / "agent"
    h = run_in_thread(AgentConfig(host="127.0.0.1", port=0, data_dir=data, spool_dir=tmp_path / "spool",
                                  bsp_schedule_delay_ms=10))
    try:
        common = dict(session="abcdef12", job="j1", host="h", pid=1)
        evs = [make_event("job_start", seq=1, blend_file="/s.blend", scene="s", frame_start=1, frame_end=1,
                          engine="CYCLES", device_type="CPU", blender_version="3.4.1", **common),
               make_event("frame_start", seq=2, frame=1, **common),
               make_event("frame_end", seq=3, frame=1, seconds=0.5, saved=True, **common),
               make_event("job_end", seq=4, status="complete", **common)]
        req = urllib.request.Request(h.url + "/api/v1/events", data=b"".join(encode(e) for e in evs),
                                     headers={"Content-Type": "application/x-ndjson"})
        assert urllib.request.urlopen(req, timeout=10).status == 200
    finally:
        h.stop()
    assert (data / "journal.log").exists() and list((data / "traces").glob("*")), list(data.rglob("*"))
    assert_private(data, 2)


def test_webhook_outbox_is_private(tmp_path: Path, umask_022) -> None:
    from healer.incidents.notify import Outbox

    box = Outbox(tmp_path / "outbox")
    name = box.put({"id": "i1", "target": "ops", "created": 1.0, "body": "{}"}).name
    box.put({"id": "i2", "target": "ops", "created": 2.0, "body": "{}"})
    box.fail(name)
    assert_private(tmp_path / "outbox", 2)


def test_incidents_outbox_from_config_is_private(tmp_path: Path, umask_022) -> None:
    """The healer's own wiring: a webhook target from the environment, its deliveries kept on disk."""
    from healer.diagnosis.errors import error_class
    from healer.incidents.dispatch import Incidents

    env = {"RENDERWATCH_HOME": str(tmp_path / "home"), "RENDERWATCH_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/h",
           "RENDERWATCH_WEBHOOK_SECRET": "k"}
    inc = Incidents.from_config(None, env=env)
    try:
        inc.emit("render.crashed", {"job": "j1", "host": "h", "frame": 3, "message": "boom"},
                 error_class("segfault")(summary="Blender crashed"))
    finally:
        inc.close(timeout=1)
    outbox = tmp_path / "home" / "healer" / "outbox"
    assert outbox.is_dir(), list((tmp_path / "home").rglob("*"))
    assert_private(outbox, 1)



def _creates_spool(home: Path) -> None:
    from blender_hooks.events import encode, make_event
    from blender_hooks.spool import SpoolWriter, spool_dir

    w = SpoolWriter(spool_dir({"RENDERWATCH_HOME": str(home)}), "abcdef12", max_bytes=1 << 30)
    w.append(encode(make_event("frame_start", session="abcdef12", seq=1, job="j", host="h", pid=1, frame=1)))
    w.close()


def _creates_agent_journal(home: Path) -> None:
    from agent.journal import Journal

    Journal(home / "agent")


def _creates_ledger(home: Path) -> None:
    from healer.supervising.ledger import Ledger, job_dir

    Ledger.open_or_create(job_dir("job-1", {"RENDERWATCH_HOME": str(home)}), job="job-1", scene="/s.blend",
                          frames=[1]).save()


def _creates_outbox(home: Path) -> None:
    from healer.incidents.notify import Outbox

    Outbox(home / "healer" / "outbox")


def _creates_token(home: Path) -> None:
    from healer.service.auth import ensure_token

    ensure_token({"RENDERWATCH_HOME": str(home)})


@pytest.mark.parametrize("create", [_creates_spool, _creates_agent_journal, _creates_ledger, _creates_outbox,
                                    _creates_token], ids=lambda f: f.__name__[9:])
def test_the_state_root_is_created_private(tmp_path: Path, umask_022, create) -> None:
    """The state root and every folder renderwatch makes under it are 0700: mkdir(parents=True, mode=0o700)
    made the missing parents with the umask's mode, so a fresh RENDERWATCH_HOME (and ~/.local/state/renderwatch)
    came out 0755 above its 0700 leaves."""
    home = tmp_path / "state" / "renderwatch"
    create(home)
    assert mode(tmp_path / "state") == 0o700 and mode(home) == 0o700
    for p in home.rglob("*"):
        if p.is_dir():
            assert mode(p) == 0o700, f"{p}: {oct(mode(p))}"


# -- the state root: this account's own, no planted link followed (blender_hooks.statedir) -------------------------
# Another local account is simulated as root with os.chown to nobody (uid 65534): the tests run as root,
# here and in CI.
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="simulating another account needs root (os.chown)")


def _attackers_folder(tmp_path: Path) -> Path:
    d = tmp_path / "attacker"
    d.mkdir()
    os.chmod(d, 0o755)
    os.chown(d, NOBODY, NOBODY)
    return d


def _plant(link: Path, target: Path) -> None:
    """What another account does in a folder it can write: a link of its own to a folder of its own."""
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)
    os.lchown(link, NOBODY, NOBODY)


@as_root
@pytest.mark.blender
def test_render_refuses_a_planted_job_folder(tmp_path: Path, scene_copy, blender34: str) -> None:
    """healer/jobs/<job> a link to another account's folder: the job was rendered with its ledger and lock
    written there (the folder chmodded 0700, exit 0, no word). Now: exit 2, the path, the owner and the fix."""
    scene = scene_copy(frames=1)
    home = tmp_path / "home"
    target = _attackers_folder(tmp_path)
    _plant(home / "healer" / "jobs" / "job-1", target)
    p = subprocess.run([*RENDERWATCH, "render", str(scene), "--frames", "1", "--job", "job-1", "--quiet"],
                       env=healer_env(home, RENDERWATCH_BLENDER=blender34), capture_output=True, text=True,
                       timeout=180)
    assert p.returncode == 2, p.stderr[-2000:]
    assert f"{home / 'healer' / 'jobs' / 'job-1'} is a symbolic link" in p.stderr and f"uid {NOBODY}" in p.stderr
    assert "remove the link" in p.stderr and "Traceback" not in p.stderr
    assert list(target.iterdir()) == [] and stat.S_IMODE(target.stat().st_mode) == 0o755


@as_root
@pytest.mark.blender
def test_exec_runs_bare_blender_beside_a_planted_job_folder(tmp_path: Path, scene_copy, blender34: str) -> None:
    """The farm wrapper never fails a task on its bookkeeping: it renders as bare Blender, says why, and
    writes nothing into the other account's folder."""
    scene = scene_copy(frames=1)
    home = tmp_path / "home"
    target = _attackers_folder(tmp_path)
    _plant(home / "healer" / "jobs" / "job-1", target)
    p = subprocess.run([*RENDERWATCH, "exec", "--job", "job-1", "--", blender34, "-b", str(scene), "-f", "1"],
                       env=healer_env(home), capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "WARNING: cannot keep state" in p.stderr and "symbolic link" in p.stderr and "Traceback" not in p.stderr
    assert (scene.parent / "frames" / "f_0001.png").exists()
    assert list(target.iterdir()) == []


@as_root
@pytest.mark.parametrize("plant", ["a link to another account's folder", "another account's folder"])
def test_exec_runs_bare_blender_when_healer_is_not_ours(tmp_path: Path, plant: str) -> None:
    """state_problem() runs the same checks as every open: exec becomes the bare command, render refuses."""
    home = tmp_path / "home"
    target = _attackers_folder(tmp_path)
    if plant.startswith("a link"):
        _plant(home / "healer", target)
    else:
        (home / "healer").mkdir(parents=True)
        os.chown(home / "healer", NOBODY, NOBODY)
    marker = tmp_path / "ran"
    p = subprocess.run([*RENDERWATCH, "exec", "--", "touch", str(marker)], env=healer_env(home),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and marker.exists(), p.stderr[-2000:]
    assert "WARNING: cannot keep state" in p.stderr and f"uid {NOBODY}" in p.stderr
    r = subprocess.run([*RENDERWATCH, "render", str(tmp_path / "x.blend"), "--frames", "1"], env=healer_env(home),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot keep state" in r.stderr and "Traceback" not in r.stderr
    assert list(target.iterdir()) == [] or plant == "another account's folder"


@as_root
def test_the_healer_token_is_never_written_through_a_planted_healer_folder(tmp_path: Path) -> None:
    """A symlinked healer/ received the generated API token (remote code execution for whoever reads it)."""
    from blender_hooks.statedir import UnsafeStateDir
    from healer.service.auth import ensure_token

    home = tmp_path / "home"
    target = _attackers_folder(tmp_path)
    _plant(home / "healer", target)
    with pytest.raises(UnsafeStateDir, match="symbolic link"):
        ensure_token({"RENDERWATCH_HOME": str(home)})
    assert list(target.iterdir()) == []
    p = subprocess.run([*RENDERWATCH, "healer", "--listen", "127.0.0.1:0"], env=healer_env(home),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "symbolic link" in p.stderr and "Traceback" not in p.stderr
    assert list(target.iterdir()) == []


@as_root
def test_the_hooks_and_the_agent_refuse_a_spool_of_another_account(tmp_path: Path) -> None:
    from blender_hooks.events import encode, make_event
    from blender_hooks.spool import SpoolWriter

    spool = _attackers_folder(tmp_path)
    w = SpoolWriter(spool, "abcdef12", max_bytes=1 << 30)
    assert not w.append(encode(make_event("frame_start", session="abcdef12", seq=1, job="j", host="h", pid=1,
                                          frame=1)))
    w.close()
    assert list(spool.iterdir()) == [] and w.dropped == 1
    p = subprocess.run([*RENDERWATCH, "agent", "--listen", "127.0.0.1:0", "--spool-dir", str(spool),
                        "--data-dir", str(tmp_path / "data")], env=healer_env(tmp_path / "home"),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and f"belongs to uid {NOBODY}" in p.stderr and "Traceback" not in p.stderr
    assert list(spool.iterdir()) == []
