"""The classifier on output produced now by real Blender: 5.0 (the bpy wheel, in a subprocess) and 3.4.

The captures in tests/fixtures pin the formats; these runs catch a Blender that prints something else.
"""

import subprocess
from pathlib import Path

import pytest

from healer.diagnosis.classify import classify
from healer.diagnosis.crashfile import read_crash_file
from renderwatch.classify import main as classify_main

pytestmark = pytest.mark.blender

HERE = Path(__file__).resolve().parent.parent
DRIVER = HERE / "fixtures" / "render_wheel.py"


def _wheel(bpy_py, tmp_path, blend, *args, fault=None):
    argv = [bpy_py, str(DRIVER), str(blend), *map(str, args)]
    if fault:
        argv.append(str(fault))
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=180, cwd=tmp_path)
    return proc.stdout, proc.returncode


@pytest.fixture
def faults(shared_dir):
    return shared_dir / "fixtures" / "blender-logs" / "faults"


def test_50_ok_handler_error_and_segfault(bpy_py, scene_copy, tmp_path, faults):
    scene = scene_copy(frames=3)
    out, code = _wheel(bpy_py, tmp_path, scene, 1, 3)
    err = classify(out, exit_code=code)
    assert (code, err.type) == (0, "ok") and err.summary == "Render finished: 3 frames saved."

    out, code = _wheel(bpy_py, tmp_path, scene, 1, 3, fault=faults / "pyerr.py")
    err = classify(out, exit_code=code)
    assert (code, err.type, err.fatal) == (0, "python_error", False)
    assert "render_pre handler" in err.summary and err.python_frames[-1][1:] == (3, "pre")

    out, code = _wheel(bpy_py, tmp_path, scene, 1, 3, fault=faults / "seg.py")
    err = classify(out, exit_code=code)
    assert (code, err.type, err.exit_signal) == (-11, "segfault", 11)
    assert "after 2 frames were saved" in err.summary


def test_50_configuration_errors(bpy_py, scene_copy, tmp_path, faults):
    scene = scene_copy(frames=1)
    out, code = _wheel(bpy_py, tmp_path, tmp_path / "nope" / "lighting.blend", 1, 1)
    err = classify(out, exit_code=code)
    assert (err.type, err.fatal) == ("missing_file", True) and "lighting.blend" in err.summary

    out, code = _wheel(bpy_py, tmp_path, scene, 1, 1, fault=faults / "outdir.py")
    assert classify(out, exit_code=code).type == "output_error"

    garbage = tmp_path / "garbage.blend"
    garbage.write_text("not a blend\n")
    out, code = _wheel(bpy_py, tmp_path, garbage, 1, 1)
    assert classify(out, exit_code=code).type == "blend_invalid"

    out, code = _wheel(bpy_py, tmp_path, scene, 1, 1, fault=faults / "tex.py")
    err = classify(out, exit_code=code)
    assert (code, err.type, err.fatal) == (0, "missing_file", False)


def test_34_segfault_with_its_real_crash_file(blender34, scene_copy, tmp_path, capsys):
    """Blender 3.4 writes a crash file from its SIGSEGV handler; the CLI finds it from `Writing:`."""
    scene = scene_copy(frames=3)
    fault = HERE / "faults" / "segfault.py"
    proc = subprocess.run([blender34, "-b", str(scene), "--python", str(fault), "-a"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=180, env={"FAULT_FRAME": "2", "TMPDIR": str(tmp_path),
                                                                      "PATH": "/usr/bin:/bin"})
    log = tmp_path / "render.log"
    log.write_bytes(proc.stdout)
    err = classify(proc.stdout, exit_code=proc.returncode)
    assert err.type == "segfault" and err.crash_file and Path(err.crash_file).exists()
    err = classify(proc.stdout, exit_code=proc.returncode, crash_text=read_crash_file(err.crash_file))
    assert err.python_frames[-1][2] == "string_at" and any(f[2] == "fault_pre" for f in err.python_frames)
    assert "segfault.py line" in err.summary and "after frame 1 was saved" in err.summary
    assert classify_main([str(log), "--exit-code", str(proc.returncode)]) == 1     # a fatal type: exit 1
    out = capsys.readouterr().out
    assert out.startswith("segfault (fatal, error)") and "fault_pre" in out
