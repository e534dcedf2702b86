"""Workflow: a render wrangler submits the shipped OpenJD templates (deploy/farms/openjd/) to a worker
whose PATH lacks renderwatch, as a Deadline Cloud job user's minimal environment does. Real `openjd run`
(openjd-cli), Debian's Blender 3.4 on the worker's PATH, renderwatch only at its install path.

Before, the templates ran `renderwatch` from PATH with no way to name it: such a worker failed every
task with `renderwatch: not found`. Now the `Renderwatch` job parameter names it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.healer import healer_env

pytestmark = [pytest.mark.blender, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "deploy" / "farms" / "openjd"
BIN = Path(sys.executable).parent            # where renderwatch is installed (the venv), not on the worker's PATH


def _worker_env(tmp_path: Path, blender: str) -> dict[str, str]:
    env = healer_env(tmp_path / "home")
    path = os.pathsep.join(dict.fromkeys([str(Path(blender).parent), "/usr/bin", "/bin"]))
    env["PATH"] = path
    assert shutil.which("renderwatch", path=path) is None, "the worker's PATH must lack renderwatch"
    return env


def _openjd(template: str, tmp_path: Path, env: dict[str, str], *params: str) -> subprocess.CompletedProcess:
    argv = [str(BIN / "openjd"), "run", str(TEMPLATES / template), *[x for p in params for x in ("-p", p)]]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def test_the_templates_name_renderwatch_by_a_job_parameter():
    for template in sorted(TEMPLATES.glob("*.yaml")):
        doc = yaml.safe_load(template.read_text())
        params = {p["name"]: p for p in doc["parameterDefinitions"]}
        assert params["Renderwatch"]["type"] == "STRING" and params["Renderwatch"]["default"] == "renderwatch"
        assert doc["steps"][0]["script"]["actions"]["onRun"]["command"] == "{{Param.Renderwatch}}", template.name


def test_a_worker_without_renderwatch_on_its_path_renders_with_the_parameter(blender34, scene_copy, tmp_path):
    scene = scene_copy(frames=4)
    env = _worker_env(tmp_path, blender34)
    renderwatch = str(BIN / "renderwatch")

    p = _openjd("blender-per-frame.yaml", tmp_path, env, f"SceneFile={scene}", "Frames=1")
    assert p.returncode != 0 and "renderwatch: not found" in p.stdout + p.stderr   # the default: renderwatch on PATH

    p = _openjd("blender-per-frame.yaml", tmp_path, env, f"SceneFile={scene}", "Frames=1-2",
                f"Renderwatch={renderwatch}")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert sorted(x.name for x in (scene.parent / "frames").iterdir()) == ["f_0001.png", "f_0002.png"]
    assert out.count("openjd_progress: 100.0") == 2 and out.count("Saved:") == 2
    assert "[renderwatch] frame_start" not in out          # Blender's output, not renderwatch's markers

    p = _openjd("blender-chunked.yaml", tmp_path, env, f"SceneFile={scene}", "Frames=3-4", "ChunkSize=2",
                f"Renderwatch={renderwatch}")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert "renderwatch: complete: 2/2 frames" in out
    assert len(list((scene.parent / "frames").iterdir())) == 4
