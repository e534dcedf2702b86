"""The hooks inside real Blender: every row of the version matrix (Debian's 3.4 binary, the bpy wheels of
4.2 LTS, 4.5 LTS, 5.0, 5.2 LTS and 5.3 through renderwatch-blender).

Every test renders (or registers) in a real Blender subprocess; the agent is either absent (the
events must land in the spool) or a small aiohttp receiver standing in for POST /api/v1/events.
Each test gets its own RENDERWATCH_HOME, so spools never mix.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web

from blender_hooks.events import decode
from renderwatch.hooks import STARTUP
from tests.support.blender_matrix import BlenderCmd
from tests.support.healer import spooled_events
from tests.support.net import free_port

pytestmark = [pytest.mark.blender, pytest.mark.slow]

def wheel_blender(bpy_py: str) -> list[str]:
    exe = shutil.which("renderwatch-blender", path=str(Path(bpy_py).parent))
    return [exe] if exe else [bpy_py, "-m", "blender_hooks.wheel_cli"]


@pytest.fixture
def blender(matrix_blender: BlenderCmd) -> BlenderCmd:
    """argv prefix of a Blender of the matrix (a list), with its row."""
    return matrix_blender


def hooks_env(tmp_path: Path, agent: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENDERWATCH_") or k == "RENDERWATCH_BLENDER"}
    env.update({"RENDERWATCH_HOME": str(tmp_path / "rwhome"), "RENDERWATCH_AGENT": agent, **extra})
    return env


def spooled(tmp_path: Path) -> list[dict]:
    return spooled_events(tmp_path / "rwhome" / "spool")


def render_argv(blender: list[str], scene: Path, *args: str, hooks: bool = True) -> list[str]:
    return [*blender, "-b", str(scene), *(["--python", str(STARTUP)] if hooks else []),
            "-o", str(scene.parent / "frames" / "f_"), *args]


def check_job(evs: list[dict], frames: list[int], blender: BlenderCmd, samples: int = 8) -> None:
    """The events of one rendered job, whatever Blender version produced them."""
    seqs = [(e["session"], e["seq"]) for e in evs]
    assert len(seqs) == len(set(seqs)), "duplicate seq"
    types = [e["type"] for e in evs]
    assert types[0] == "job_start" and types[-1] == "job_end"
    start = evs[0]
    assert start["engine"] == "CYCLES" and start["device_type"] == "CPU" and start["samples"] == samples
    assert start["blender_version"].startswith(blender.row.line + ".")
    assert start["blend_file"].endswith("scene.blend") and start["pid"] > 0 and start["host"]
    assert [e["frame"] for e in evs if e["type"] == "frame_start"] == frames
    ends = [e for e in evs if e["type"] == "frame_end"]
    assert [e["frame"] for e in ends] == frames
    for e in ends:
        assert e["saved"] is True and e["seconds"] > 0 and e["max_rss_bytes"] > 0
        assert Path(e["output_path"]).exists(), e["output_path"]
        assert e["peak_memory_blender_bytes"] > 0
    assert evs[-1]["status"] == "complete" and evs[-1]["frames_done"] == len(frames)
    phases = {(e["frame"], e["name"]) for e in evs if e["type"] == "phase"}
    if blender.stats_to_handler:  # every wheel hands the stats string to the handler; 3.4 passes None
        for f in frames:
            assert {(f, "sync"), (f, "sampling")} <= phases
    else:
        assert not phases


class Receiver:
    """A stand-in for the agent: accepts NDJSON on POST /api/v1/events, validating every line."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.auth: list[str | None] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.auth.append(request.headers.get("Authorization"))
        body = await request.read()
        self.events += [decode(line) for line in body.splitlines() if line]
        return web.json_response({"accepted": body.count(b"\n")})

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/api/v1/events", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def ordered(self) -> list[dict]:
        return sorted(self.events, key=lambda e: (e["session"], e["seq"]))


async def run_async(argv: list[str], env: dict[str, str], timeout: float = 240) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(errors="replace")


def run(argv: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, capture_output=True, text=True, errors="replace", timeout=timeout)


# -- rendering with the hooks ---------------------------------------------------------------------

def test_agent_down_events_land_in_the_spool(blender, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    env = hooks_env(tmp_path, f"http://127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    p = run(render_argv(blender, scene, "-s", "1", "-e", "3", "-a"), env)
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Blender quit" in p.stdout
    assert "agent unreachable" in p.stderr  # said once, not per event
    assert p.stderr.count("agent unreachable") == 1
    evs = spooled(tmp_path)
    check_job(evs, [1, 2, 3], blender)
    assert elapsed < 60
    d = tmp_path / "rwhome" / "spool"
    assert oct(d.stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in d.iterdir())


async def test_events_reach_the_agent(blender, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    async with Receiver() as rx:
        env = hooks_env(tmp_path, rx.url, RENDERWATCH_TOKEN="tok-1", RENDERWATCH_JOB_ID="shot010-lighting",
                        RENDERWATCH_ATTEMPT="2")
        rc, out = await run_async(render_argv(blender, scene, "-s", "1", "-e", "3", "-a"), env)
        assert rc == 0, out
    evs = rx.ordered()
    check_job(evs, [1, 2, 3], blender)
    assert {e["job"] for e in evs} == {"shot010-lighting"} and {e["attempt"] for e in evs} == {2}
    assert set(rx.auth) == {"Bearer tok-1"}
    # Everything delivered before Blender exited: the spool is empty again.
    assert not list((tmp_path / "rwhome" / "spool").glob("*.ndjson"))


async def test_agent_restarted_mid_render_loses_nothing(blender, scene_factory, tmp_path):
    """The agent goes away after the first frame and comes back on the same port 0.5 s later:
    every event still arrives (the sender resumes from the spool's ack), none is missing."""
    scene = tmp_path / "shot" / "scene.blend"
    scene.parent.mkdir()
    shutil.copy(scene_factory(frames=10, samples=128, width=160, height=90), scene)  # ~0.3-0.5 s a frame
    port = free_port()
    got: list[dict] = []

    async def handle(request: web.Request) -> web.Response:
        got.extend(decode(line) for line in (await request.read()).splitlines() if line)
        return web.json_response({})

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/api/v1/events", handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    runner = await serve()
    proc = await asyncio.create_subprocess_exec(
        *render_argv(blender, scene, "-s", "1", "-e", "10", "-a"), env=hooks_env(tmp_path, f"http://127.0.0.1:{port}"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out = b""
    try:
        deadline = time.monotonic() + 120
        while not any(e["type"] == "frame_end" for e in got):
            assert time.monotonic() < deadline and proc.returncode is None, "no frame arrived"
            await asyncio.sleep(0.02)
        await runner.cleanup()                 # the agent goes away mid-render
        down_at = len(got)
        await asyncio.sleep(0.5)
        runner = await serve()                 # ... and comes back
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
    finally:
        await runner.cleanup()
    assert proc.returncode == 0, out.decode(errors="replace")
    assert down_at < len(got)
    evs = sorted({(e["session"], e["seq"]): e for e in got}.values(), key=lambda e: e["seq"])
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))        # nothing missing
    check_job(evs, list(range(1, 11)), blender, samples=128)


async def test_a_hung_agent_does_not_hold_blender(blender, scene_copy, tmp_path):
    """The agent accepts connections and never answers: Blender renders, and exits within the
    0.5 s flush bound after its last frame (measured within the run: robust to a busy machine)."""
    scene = scene_copy(frames=4)
    hung = asyncio.Event()
    posts = []

    async def never(request):
        posts.append(1)
        await hung.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/api/v1/events", never)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        proc = await asyncio.create_subprocess_exec(
            *render_argv(blender, scene, "-s", "1", "-e", "3", "-a"), env=hooks_env(tmp_path, f"http://127.0.0.1:{port}"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        assert proc.stdout is not None
        last_saved = 0.0
        text = []
        while line := await asyncio.wait_for(proc.stdout.readline(), 240):
            text.append(line.decode(errors="replace"))
            if b"Saved:" in line:
                last_saved = time.monotonic()
        rc = await proc.wait()
        exit_delay = time.monotonic() - last_saved
    finally:
        hung.set()
        await runner.cleanup()
    assert rc == 0 and last_saved, "".join(text)
    assert posts, "the agent was never contacted"
    assert exit_delay < 2.0, exit_delay       # flush bounded to 0.5 s, plus Blender's own exit
    check_job(spooled(tmp_path), [1, 2, 3], blender)  # kept for the agent's catch-up


def test_frame_list_is_one_job(blender, scene_copy, tmp_path):
    """`-f 1,3` renders twice (render_init/complete per frame) under one job id."""
    scene = scene_copy(frames=4)
    p = run(render_argv(blender, scene, "-f", "1,3"), hooks_env(tmp_path, "off"))
    assert p.returncode == 0, p.stdout + p.stderr
    evs = sorted(spooled(tmp_path), key=lambda e: e["seq"])
    assert [e["type"] for e in evs if e["type"] != "phase"] == ["job_start", "frame_start", "frame_end", "job_end"] * 2
    assert len({e["job"] for e in evs}) == 1
    starts = [e for e in evs if e["type"] == "job_start"]
    assert all((s["frame_start"], s["frame_end"], s["frame_step"]) == (1, 3, 2) for s in starts)
    assert [e["frame"] for e in evs if e["type"] == "frame_end"] == [1, 3]
    assert (scene.parent / "frames" / "f_0001.png").exists() and (scene.parent / "frames" / "f_0003.png").exists()


def test_a_frame_rendered_but_not_written_ends_unsaved(blender, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    expr = "import bpy; bpy.context.scene.frame_set(2); bpy.ops.render.render()"
    p = run([*blender, "-b", str(scene), "--python", str(STARTUP), "--python-expr", expr],
            hooks_env(tmp_path, "off"))
    assert p.returncode == 0, p.stdout + p.stderr
    evs = sorted(spooled(tmp_path), key=lambda e: e["seq"])
    end = [e for e in evs if e["type"] == "frame_end"]
    assert len(end) == 1 and end[0]["frame"] == 2 and end[0]["saved"] is False and end[0]["seconds"] > 0
    assert "output_path" not in end[0]
    assert evs[-1]["type"] == "job_end" and evs[-1]["frames_done"] == 0


# -- registration and the guard -------------------------------------------------------------------

REGISTER_CHECK = r"""
import sys, bpy
from bpy.app import handlers as H
sys.path.insert(0, {root!r})
from blender_hooks import addon
NAMES = [n for n, _ in addon.HANDLERS]
def ours(): return {{n: sum(1 for h in getattr(H, n) if getattr(h, addon.MARK, None)) for n in NAMES}}
others = {{n: len(getattr(H, n)) for n in NAMES}}
addon.register(); addon.register()
exec(open({startup!r}).read(), {{"__file__": {startup!r}, "__name__": "__main__"}})
assert ours() == {{n: 1 for n in NAMES}}, ours()
for n, fn in addon.HANDLERS:
    assert hasattr(fn, "_bpy_persistent"), n
addon.unregister()
assert ours() == {{n: 0 for n in NAMES}}, ours()
assert {{n: len(getattr(H, n)) for n in NAMES}} == others
addon.unregister()  # twice is harmless
addon.register()
assert ours() == {{n: 1 for n in NAMES}}, ours()
import importlib
fresh = importlib.reload(addon)  # a script reload: the same module name, new functions
fresh.register()
assert ours() == {{n: 1 for n in NAMES}}, ours()
assert all(fn in getattr(H, n) for n, fn in fresh.HANDLERS)
print("REGISTER-OK")
"""


def test_register_twice_no_duplicates_unregister_removes_all(blender, tmp_path):
    root = str(Path(__file__).resolve().parents[2])
    expr = REGISTER_CHECK.format(root=root, startup=str(STARTUP))
    p = run([*blender, "-b", "--factory-startup", "--python-exit-code", "3", "--python-expr", expr],
            hooks_env(tmp_path, "off"))
    assert p.returncode == 0 and "REGISTER-OK" in p.stdout, p.stdout + p.stderr


GUARD_CHECK = r"""
import bpy
from blender_hooks import addon
def boom(*a, **k): raise RuntimeError("injected hook failure")
hooks = addon.state()
hooks.frame_start = boom
hooks.stats = boom
hooks.frame_end = boom
# Called directly, a failing body never raises either.
assert addon.rw_render_pre(bpy.context.scene) is None and addon.rw_render_stats("Mem: 1M | Sample 1/8") is None
"""


def test_a_failing_hook_never_reaches_blender(blender, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    p = run([*blender, "-b", str(scene), "--python", str(STARTUP), "--python-exit-code", "3",
             "--python-expr", GUARD_CHECK, "-o", str(scene.parent / "frames" / "f_"), "-s", "1", "-e", "2", "-a"],
            hooks_env(tmp_path, "off"))
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert (scene.parent / "frames" / "f_0002.png").exists()
    assert "Error in bpy.app.handlers" not in out                  # Blender never saw an exception
    assert "injected hook failure" in out and "(ignored)" in out  # the guard logged it
    assert out.count("injected hook failure") <= 5                 # ... a bounded number of times
    evs = spooled(tmp_path)
    assert [e["type"] for e in evs].count("job_end") == 1          # the other handlers kept working


DEVICE_CHECK = r"""
import bpy
from blender_hooks import addon
scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.device = "CPU"
assert addon.device_type(scene) == "CPU"
scene.cycles.device = "GPU"
prefs = bpy.context.preferences.addons["cycles"].preferences
prefs.compute_device_type = "NONE"
assert addon.device_type(scene) == "CPU", "GPU asked for, but no backend: Cycles renders on the CPU"
prefs.compute_device_type = "CUDA"
assert addon.device_type(scene) == "GPU:CUDA", addon.device_type(scene)
scene.render.engine = "BLENDER_WORKBENCH"
assert addon.device_type(scene) == "GPU" and addon.render_samples(scene) is None
print("DEVICE-OK")
"""


def test_device_type_from_cycles_preferences(blender, tmp_path):
    p = run([*blender, "-b", "--factory-startup", "--python", str(STARTUP), "--python-exit-code", "3",
             "--python-expr", DEVICE_CHECK], hooks_env(tmp_path, "off"))
    assert p.returncode == 0 and "DEVICE-OK" in p.stdout, p.stdout + p.stderr


# -- install / uninstall --------------------------------------------------------------------------

def isolated_blender_env(tmp_path: Path, agent: str) -> dict[str, str]:
    home = tmp_path / "home"
    env = hooks_env(tmp_path, agent)
    env.update({"HOME": str(home), "BLENDER_USER_CONFIG": str(home / "config"),
                "BLENDER_USER_SCRIPTS": str(home / "scripts"), "BLENDER_USER_EXTENSIONS": str(home / "extensions")})
    return env


@pytest.mark.matrix("install")
async def test_install_then_every_launch_reports_then_uninstall(blender, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    cli = [sys.executable, "-m", "renderwatch", "hooks"]
    async with Receiver() as rx:
        env = isolated_blender_env(tmp_path, rx.url)
        rc, out = await run_async([*cli, "install", "--blender", blender[0]], env)
        assert rc == 0, out
        ext = blender.has_extensions
        where = Path(env["BLENDER_USER_EXTENSIONS"]) / "user_default" / "renderwatch_hooks" if ext else \
            Path(env["BLENDER_USER_SCRIPTS"]) / "addons" / "renderwatch_hooks"
        assert (where / "addon.py").exists() and ("extension" if ext else "add-on") in out
        assert not (where / "cli.py").exists() and not (where / "wheel_cli.py").exists()
        assert (Path(env["BLENDER_USER_CONFIG"]) / "userpref.blend").exists()

        # A plain render, no --python: the installed hooks report.
        rc, out = await run_async(render_argv(blender, scene, "-s", "1", "-e", "2", "-a", hooks=False), env)
        assert rc == 0, out
        check_job(rx.ordered(), [1, 2], blender)

        rc, out = await run_async([*cli, "uninstall", "--blender", blender[0]], env)
        assert rc == 0 and "removed" in out, out
        assert not where.exists()
        n = len(rx.events)
        rc, out = await run_async(render_argv(blender, scene, "-s", "1", "-e", "1", "-a", hooks=False), env)
        assert rc == 0, out
        assert len(rx.events) == n and not spooled(tmp_path)
        rc, out = await run_async([*cli, "uninstall", "--blender", blender[0]], env)
        assert rc == 0 and "not installed" in out


# -- renderwatch-blender behaves like a Blender binary --------------------------------------------

@pytest.fixture
def b5(bpy_py) -> list[str]:
    return wheel_blender(bpy_py)


def test_wheel_cli_missing_blend_exits_1(b5, tmp_path):
    p = run([*b5, "-b", str(tmp_path / "nope.blend"), "-a"], hooks_env(tmp_path, "off"))
    assert p.returncode == 1
    assert f'Error: Cannot read file "{tmp_path / "nope.blend"}"' in p.stdout + p.stderr
    assert "Blender quit" in p.stdout


def test_wheel_cli_python_exit_code_and_passthrough(b5, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    script = tmp_path / "args.py"
    script.write_text("import sys, bpy\nprint('ARGS', sys.argv[sys.argv.index('--') + 1:], "
                      "bpy.context.scene.frame_start, bpy.context.scene.render.engine)\n")
    p = run([*b5, "-b", str(scene), "-E", "BLENDER_WORKBENCH", "-s", "2", "--python", str(script), "--",
             "-a", "x"], hooks_env(tmp_path, "off"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ARGS ['-a', 'x'] 2 BLENDER_WORKBENCH" in p.stdout
    assert not (scene.parent / "frames").exists()  # `-a` after `--` belongs to the script
    p = run([*b5, "-b", str(scene), "--python-expr", "raise KeyError(2)", "--python-expr", "print('after')"],
            hooks_env(tmp_path, "off"))
    assert p.returncode == 0 and "Error: Python: Traceback" in p.stdout and "after" in p.stdout
    p = run([*b5, "-b", str(scene), "--python-exit-code", "4", "--python-expr", "raise KeyError(2)", "-a"],
            hooks_env(tmp_path, "off"))
    assert p.returncode == 4 and "Error: script failed, expr: 'raise KeyError(2)', exiting." in p.stdout


def test_wheel_cli_frames_format_and_extension(b5, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    out = tmp_path / "o" / "img_"
    p = run([*b5, "-b", str(scene), "-o", str(out), "-F", "JPEG", "-x", "1", "-t", "2", "-f", "2..3,1"],
            hooks_env(tmp_path, "off"))
    assert p.returncode == 0, p.stdout + p.stderr
    assert sorted(x.name for x in out.parent.iterdir()) == ["img_0001.jpg", "img_0002.jpg", "img_0003.jpg"]
    assert p.stdout.count("Saved:") == 3 and p.stdout.rstrip().endswith("Blender quit")
    p = run([*b5, "-b", str(scene), "-o", str(out) + "noext_", "-x", "0", "-f", "1"], hooks_env(tmp_path, "off"))
    assert p.returncode == 0 and (out.parent / "img_noext_0001").exists()


def test_wheel_cli_render_error_exits_1(b5, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    p = run([*b5, "-b", str(scene), "-o", "/proc/renders/f_", "-f", "1"], hooks_env(tmp_path, "off"))
    assert p.returncode == 1
    assert "cannot save" in p.stdout + p.stderr and "Blender quit" in p.stdout


def test_wheel_cli_unknown_engine_and_format(b5, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    p = run([*b5, "-b", str(scene), "-E", "NOPE", "-f", "1"], hooks_env(tmp_path, "off"))
    assert p.returncode == 1 and "Error: engine not found 'NOPE'" in p.stdout
    p = run([*b5, "-b", str(scene), "-F", "NOPE", "-o", str(tmp_path / "o" / "f_"), "-f", "1"],
            hooks_env(tmp_path, "off"))
    assert p.returncode == 0 and "not known or not compiled" in p.stdout and (tmp_path / "o" / "f_0001.png").exists()


def test_wheel_cli_version(matrix_wheel, tmp_path):
    p = run([*matrix_wheel, "--version"], hooks_env(tmp_path, "off"))
    assert p.returncode == 0 and p.stdout.startswith(f"Blender {matrix_wheel.row.version}"), p.stdout


def test_spool_events_are_schema_valid_json(blender, scene_copy, tmp_path):
    """Raw check of the on-disk lines: one compact JSON object per line, ASCII only."""
    scene = scene_copy(frames=4)
    p = run(render_argv(blender, scene, "-s", "1", "-e", "1", "-a"), hooks_env(tmp_path, "off"))
    assert p.returncode == 0
    d = tmp_path / "rwhome" / "spool"
    raw = b"".join(x.read_bytes() for x in d.glob("*.ndjson"))
    assert raw.endswith(b"\n") and raw.isascii()
    for line in raw.splitlines():
        assert json.loads(line)["v"] == 1 and decode(line)


def test_the_farms_identity_rides_on_job_start(blender, scene_copy, tmp_path):
    """Blender run by OpenCue's RQD (its CUE_* variables): the hooks name the farm job and task, with
    or without a healer in between."""
    scene = scene_copy(frames=4)
    env = hooks_env(tmp_path, "off", CUE_JOB="show-shot-lighting", CUE_JOB_ID="9f1c2", CUE_LAYER="render",
                    CUE_FRAME="0001-render", TRACEPARENT="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    p = run(render_argv(blender, scene, "-f", "1"), env)
    assert p.returncode == 0, p.stdout + p.stderr
    start = next(e for e in spooled(tmp_path) if e["type"] == "job_start")
    assert (start["farm_engine"], start["farm_job"], start["farm_task"]) == ("opencue", "9f1c2", "render/0001-render")
    assert start["traceparent"].startswith("00-4bf92f35")


SET_IDENTITY = r"""
import os
os.environ.update({"RENDERWATCH_JOB_ID": "shot020-fx", "RENDERWATCH_ATTEMPT": "3", "CUE_JOB_ID": "7a2",
                   "CUE_LAYER": "fx", "CUE_FRAME": "0003-fx"})
"""


def test_the_identity_given_after_the_hooks_registered_is_the_jobs(blender, scene_copy, tmp_path):
    """The hooks register first (as an installed copy or a studio's startup script does); the job id,
    attempt and farm ids are set in os.environ afterwards (as the healer's start gate does): every
    event carries them, and `-f 1,3` stays that one job."""
    scene = scene_copy(frames=4)
    p = run([*blender, "-b", str(scene), "--python", str(STARTUP), "--python-expr", SET_IDENTITY,
             "-o", str(scene.parent / "frames" / "f_"), "-f", "1,3"], hooks_env(tmp_path, "off"))
    assert p.returncode == 0, p.stdout + p.stderr
    evs = spooled(tmp_path)
    assert {e["job"] for e in evs} == {"shot020-fx"} and {e.get("attempt") for e in evs} == {3}
    starts = [e for e in evs if e["type"] == "job_start"]
    assert len(starts) == 2
    assert {(s["farm_engine"], s["farm_job"], s["farm_task"]) for s in starts} == {("opencue", "7a2", "fx/0003-fx")}
