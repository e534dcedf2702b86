"""Shared test fixtures: real Blender (3.4 binary and every bpy wheel of the matrix), generated scenes, ../shared."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from renderwatch.scenes import bpy_python, create_demo_scene, find_blender
from tests.support.blender_matrix import BlenderCmd, Recorder, command_for, params

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures" / "blender-logs"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not beside the repository")
    return SHARED


@pytest.fixture(scope="session")
def blender_logs(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "blender-logs"


@pytest.fixture(scope="session")
def blender34() -> str:
    """Path of Debian's Blender 3.4 binary (required: CI installs it)."""
    exe = find_blender()
    assert exe, "Debian's blender is required for the tests: ./bootstrap test installs it"
    return exe


@pytest.fixture(scope="session")
def bpy_py() -> str:
    """A Python that can import bpy (Blender 5.0 as a module)."""
    py = bpy_python()
    assert py, "the bpy==5.0.1 wheel is required for the tests: ./bootstrap test installs it"
    return py


@pytest.fixture(scope="session")
def scene_factory(tmp_path_factory, blender34):
    """Create (and cache per session) small animated scenes: scene_factory(frames=4, samples=8)."""
    cache: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("scenes")

    def make(frames: int = 4, samples: int = 8, width: int = 64, height: int = 36) -> Path:
        key = (frames, samples, width, height)
        if key not in cache:
            cache[key] = create_demo_scene(root / f"scene_{frames}_{samples}_{width}x{height}.blend",
                                           frames=frames, samples=samples, width=width, height=height,
                                           blender=blender34)
        return cache[key]

    return make


@pytest.fixture
def scene_copy(tmp_path, scene_factory):
    """A private copy of a small scene in tmp_path (renders write //frames/ beside it)."""
    def make(frames: int = 4, **kw) -> Path:
        dst = tmp_path / "shot" / "scene.blend"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(scene_factory(frames=frames, **kw), dst)
        return dst
    return make


@pytest.fixture
def scene(tmp_path) -> Path:
    """The replayed runs' scene (tests/support/fake_blender.py) in tmp_path/shot: frames land in shot/frames/."""
    from tests.support.fake_blender import SCENE

    dst = tmp_path / "shot" / "tiny.blend"
    dst.parent.mkdir()
    shutil.copy(SCENE, dst)
    return dst


# -- the Blender version matrix (tests/support/blender_matrix.py) -----------------------------------------

_recorder = Recorder()


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "matrix(check, ...): a per-version check of the README's support table")


@pytest.fixture(params=params())
def matrix_blender(request) -> BlenderCmd:
    """Each Blender of the matrix in turn (Debian's 3.4 binary, every bpy wheel set up here)."""
    return command_for(request.param)


@pytest.fixture(params=params(wheels_only=True))
def matrix_wheel(request) -> BlenderCmd:
    """Each bpy wheel of the matrix, through renderwatch-blender."""
    return command_for(request.param)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        _recorder.record(item, "skip" if rep.skipped else "pass" if rep.passed else "fail")


def pytest_sessionfinish(session, exitstatus) -> None:
    _recorder.save()
