"""Workflow: a shot whose texture is missing, rendered with `renderwatch render` on every Blender of the
matrix, as a wrangler would: the render finishes (Blender renders the frames magenta and exits 0), the
report carries a `missing_file` warning that names the file, and `--strict` fails the job (exit 4).

Two ways a texture goes missing: the .blend names a file that is not there (the check of the .blend
before the render sees it on every version; 5.x's Cycles also logs it per frame), and a pipeline script
relinks the textures at render time to a farm folder where they are not, printing `Error: ...` and
carrying on (the .blend on disk is fine, so only Blender's output can tell). One version also follows
the warning to the healer's metrics, Sentry and a webhook, wired as the healer service wires them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from renderwatch.matrix import MATRIX
from tests.support.agent import ServerThread
from tests.support.chaos import WebhookReceiver
from tests.support.healer import FAULTS, assert_every_frame_once, fault, render

pytestmark = [pytest.mark.blender, pytest.mark.slow]

SCRIPT_ERROR = "Error: texture 'albedo.png' not found at"


@pytest.fixture
def textured(scene_factory, blender34, tmp_path) -> Path:
    """shot/textured.blend: a material with the image texture //textures/albedo.png (which exists)."""
    out = tmp_path / "shot" / "textured.blend"
    out.parent.mkdir()
    subprocess.run([blender34, "-b", str(scene_factory(frames=2, samples=2, width=32, height=18)), "--python",
                    str(FAULTS / "make_texture_scene.py"), "--", str(out)], check=True, capture_output=True,
                   timeout=120)
    return out


def _warnings(doc: dict, etype: str) -> list[str]:
    return [w["message"] for w in doc["warnings"] if w["type"] == etype]


@pytest.mark.matrix("missing texture")
def test_a_missing_texture_is_a_warning_and_strict_fails(matrix_blender, textured, tmp_path):
    exe = matrix_blender[0]
    five = matrix_blender.row.line.startswith("5.")
    (textured.parent / "textures" / "albedo.png").unlink()
    rc, doc, out = render([str(textured), "--frames", "1-2", "--blender", exe], tmp_path / "home",
                          tmp_path / "r.json")
    assert rc == 0, out
    assert_every_frame_once(doc, [1, 2])
    missing = _warnings(doc, "missing_file")
    assert any("textures/albedo.png" in m for m in missing), doc["warnings"]
    if five:   # Cycles says so on every frame: the attempt itself is classified, not `ok`
        assert doc["attempts"][0]["error_type"] == "missing_file", doc["attempts"]
        assert any("does not exist" in m for m in missing), missing

    rc, doc, out = render([str(textured), "--frames", "1-2", "--blender", exe, "--strict",
                           "--output", str(tmp_path / "strict" / "f_")], tmp_path / "home", tmp_path / "r2.json")
    assert rc == 4, out
    assert doc["status"] == "failed" and doc["error"]["type"] == "missing_file"


@pytest.mark.matrix("missing texture")
def test_a_texture_relinked_to_nowhere_by_a_pipeline_script_is_a_warning_and_strict_fails(
        matrix_blender, textured, tmp_path):
    exe = matrix_blender[0]
    five = matrix_blender.row.line.startswith("5.")
    farm = tmp_path / "farm" / "textures"          # never created
    args = [str(textured), "--frames", "1-2", "--blender", exe, "--", "--python", fault("relink_textures")]
    rc, doc, out = render(args, tmp_path / "home", tmp_path / "r.json", TEXTURE_ROOT=str(farm))
    assert rc == 0, out
    assert_every_frame_once(doc, [1, 2])
    script = _warnings(doc, "python_error")
    assert any(SCRIPT_ERROR in m and str(farm / "albedo.png") in m for m in script), doc["warnings"]
    if five:
        assert any(str(farm / "albedo.png") in m for m in _warnings(doc, "missing_file")), doc["warnings"]
        assert doc["attempts"][0]["error_type"] == "missing_file"
    else:      # 3.4 and 4.x say nothing of the texture itself: the script's own line is the evidence
        assert doc["attempts"][0]["error_type"] == "python_error"

    strict = [*args[:5], "--strict", "--output", str(tmp_path / "strict" / "f_"), *args[5:]]
    rc, doc, out = render(strict, tmp_path / "home", tmp_path / "r2.json", TEXTURE_ROOT=str(farm))
    assert rc == 4, out
    assert doc["status"] == "failed" and doc["error"]["type"] in ("missing_file", "python_error")
    assert doc["frames_completed"] == [1, 2]


# -- one version: the warning reaches metrics, Sentry and a webhook --------------------------------------------
class SentryReceiver(ServerThread):
    """Sentry's envelope endpoint in a thread: the events it was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/1/envelope/", self._envelope)

    async def _envelope(self, request: web.Request) -> web.Response:
        import gzip

        from sentry_sdk.envelope import Envelope
        body = await request.read()
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        env = Envelope.deserialize(body)
        with self.lock:
            self.events += [json.loads(i.payload.get_bytes()) for i in env.items if i.headers.get("type") == "event"]
        return web.json_response({"id": env.headers.get("event_id")})


def _newest_wheel():
    for row in reversed(MATRIX):
        if not row.binary and row.line.startswith("5.") and row.command():
            return row
    pytest.skip("no Blender 5.x wheel is set up here (python -m renderwatch.matrix setup)")


async def test_the_warning_reaches_metrics_sentry_and_a_webhook(textured, tmp_path):
    from healer.incidents.dispatch import Incidents
    from healer.service.metrics import HealerMetrics
    from healer.supervising.policy import Policy
    from healer.supervising.supervisor import RenderRequest, Supervisor

    row = _newest_wheel()
    (textured.parent / "textures" / "albedo.png").unlink()
    with SentryReceiver() as sentry, WebhookReceiver() as hook:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RENDERWATCH_", "SENTRY_", "FAULT_"))}
        env.update({"RENDERWATCH_HOME": str(tmp_path / "home"), "RENDERWATCH_AGENT": "off",
                    "RENDERWATCH_SPOOL_DIR": str(tmp_path / "home" / "spool"),
                    "SENTRY_DSN": sentry.url.replace("http://", "http://public@") + "/1",
                    "RENDERWATCH_WEBHOOK_URL": hook.url + "/tex", "RENDERWATCH_WEBHOOK_SECRET": hook.secret})
        metrics = HealerMetrics(CollectorRegistry())
        incidents = Incidents.from_config({}, registry=CollectorRegistry(), env=env)
        sup = Supervisor(RenderRequest(scene=str(textured), frames=(1, 2), blender=row.command()[0]),  # type: ignore[index]
                         policy=Policy.default(), incidents=incidents, metrics=metrics, env=env, kill_grace_s=2)
        result = await sup.run()
        incidents.close(10.0)
        assert result.exit_code == 0 and result.status == "complete"
        assert metrics.registry.get_sample_value("renderwatch_healer_attempts_total",
                                                 {"error_type": "missing_file"}) == 1
        assert not metrics.registry.get_sample_value("renderwatch_healer_attempts_total", {"error_type": "ok"})

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (sentry.events and hook.received("/tex")):
            time.sleep(0.05)
        warnings = [e for e in sentry.events if e.get("level") == "warning"]
        types = {v["type"] for e in warnings for v in e.get("exception", {}).get("values", [])}
        assert "MissingFileError" in types, sentry.events
        assert any("does not exist" in json.dumps(e) for e in warnings)
        kinds = [d.kind for d in hook.received("/tex")]
        assert "render.warning" in kinds, kinds
        tex = [d for d in hook.received("/tex") if d.kind == "render.warning" and "albedo.png" in json.dumps(d.body)]
        assert tex and all(d.signed for d in tex)
    shutil.rmtree(tmp_path / "home", ignore_errors=True)
