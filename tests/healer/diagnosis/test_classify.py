"""healer.classify over real Blender output (../shared 3.4 captures, our captures of 3.4 and of every bpy
wheel of the version matrix) and
reference strings for what can't be produced here (GPU faults, Windows crashes)."""

import io
import json
import random
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healer.diagnosis import errors
from healer.diagnosis.classify import _COMPILED, _GATE, FINDINGS_KEPT, FRAME_MARKER, LogScanner, classify
from healer.diagnosis.logformat import iter_lines, split_prefix
from renderwatch.classify import main as classify_main
from renderwatch.matrix import MATRIX

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _finding(err, line, type_id, text):
    """A finding of that type with that text, on that line (None: on any line)."""
    return any(line in (None, f.line) and f.type == type_id and text in f.text for f in err.findings)


# --- ../shared/fixtures/blender-logs (Blender 3.4.1, real) ------------------------------------------
SHARED = [
    # file, exit status, type, fatal, (line, finding type, text)
    ("ok_3.4.log", 0, "ok", False, None),
    ("segfault_3.4.log", 139, "segfault", True, (90, "segfault", "Writing: /tmp/monkey.crash.txt")),
    ("abort_3.4.log", 134, "abort", True, None),
    ("kill_3.4.log", 137, "killed", True, None),
    ("pyerr_handler_3.4.log", 0, "python_error", False, (51, "python_error", "RuntimeError: pipeline hook failed")),
    ("pyerr_script_exitcode_3.4.log", 3, "python_error", True, (9, "python_error", "script failed, file: 'pyerr_top.py'")),
    ("missing_blend_3.4.log", 1, "missing_file", True, (2, "missing_file", "Cannot read file '/srv/projects/shot010")),
    ("missing_texture_3.4.log", 0, "missing_file", False, (4, "missing_file", "Cannot read '/srv/textures/missing_albedo")),
    ("outdir_3.4.log", 1, "output_error", True, (46, "output_error", "Render error (Invalid argument) cannot save")),
    ("denoise_3.4.log", 1, "denoiser_unavailable", True, (38, "denoiser_unavailable", "Build without OpenImageDenoiser")),
]


@pytest.mark.parametrize("name, code, type_id, fatal, key", SHARED, ids=[s[0] for s in SHARED])
def test_shared_34_fixtures(blender_logs, name, code, type_id, fatal, key):
    kw = {}
    if name == "segfault_3.4.log":
        kw["crash_text"] = (blender_logs / "segfault_3.4.crash.txt").read_text()
    err = classify((blender_logs / name).read_bytes(), exit_code=code, **kw)
    assert (err.type, err.fatal) == (type_id, fatal), err.summary
    assert isinstance(err, errors.error_class(type_id))
    if key:
        assert _finding(err, *key), err.findings
    assert err.summary and err.summary.endswith(".")


def test_shared_segfault_names_the_user_frame_and_the_frame_after(blender_logs):
    err = classify((blender_logs / "segfault_3.4.log").read_text(), exit_code=139,
                   crash_file="/tmp/monkey.crash.txt", crash_text=(blender_logs / "segfault_3.4.crash.txt").read_text())
    assert err.python_frames[-1] == ("/usr/lib/python3.11/ctypes/__init__.py", 519, "string_at")
    assert err.python_frames[0] == ("/mnt/pipeline/hooks/seg.py", 3, "pre")
    assert "SIGSEGV" in err.summary and "seg.py line 3, pre()" in err.summary and "after frame 2" in err.summary
    assert err.exit_signal == 11 and err.crash_file == "/tmp/monkey.crash.txt"


def test_shared_summaries_say_what_to_fix(blender_logs):
    s = {name: classify((blender_logs / name).read_bytes(), exit_code=code).summary for name, code, *_ in SHARED}
    assert "lighting_v012.blend" in s["missing_blend_3.4.log"]
    assert "/srv/textures/missing_albedo.png" in s["missing_texture_3.4.log"] and "went on" in s["missing_texture_3.4.log"]
    assert "/proc/renders/f_0001.png" in s["outdir_3.4.log"] and "at frame 1" in s["outdir_3.4.log"]
    assert "use_denoising = False" in s["denoise_3.4.log"]
    assert "KeyError" in s["pyerr_script_exitcode_3.4.log"] and "pyerr_top.py line 2" in s["pyerr_script_exitcode_3.4.log"]
    assert "after frame 1 was saved" in s["pyerr_handler_3.4.log"] and "pyerr.py line 3, pre()" in s["pyerr_handler_3.4.log"]
    assert s["ok_3.4.log"] == "Render finished: 3 frames saved."


def test_severity_follows_fatal(blender_logs):
    tex = classify((blender_logs / "missing_texture_3.4.log").read_bytes(), exit_code=0)
    assert tex.severity == "warning" and tex.to_dict()["severity"] == "warning"
    assert classify((blender_logs / "ok_3.4.log").read_bytes(), exit_code=0).severity == "info"
    assert classify((blender_logs / "outdir_3.4.log").read_bytes(), exit_code=1).severity == "error"


# --- our captures: Blender 5.0 (bpy wheel) and more 3.4 runs, real ------------------------------------
CAPTURES = {
    # name: (type, fatal, (line, finding type, text) or None)
    "ok_5.0": ("ok", False, None),
    "pyerr_handler_5.0": ("python_error", False, (3, "python_error", "Error in bpy.app.handlers.render_pre[0]:")),
    "pyerr_script_5.0": ("python_error", True, (11, "python_error", "KeyError: 'bpy_prop_collection")),
    "missing_texture_5.0": ("missing_file", False, (2, "missing_file", "Failed to open dir")),
    "missing_texture_uncaught_5.0": ("missing_file", True, (12, "missing_file", "Cannot read '/srv/textures")),
    "outdir_5.0": ("output_error", True, (2, "output_error", "ERROR Couldn't create directory")),
    "missing_blend_5.0": ("missing_file", True, (1, "missing_file", 'Cannot read file "/srv/projects')),
    "blend_invalid_5.0": ("blend_invalid", True, (1, "blend_invalid", "File format is not supported")),
    "blend_truncated_5.0": ("blend_invalid", True, (2, "blend_invalid", "Missing DNA block")),
    "segfault_5.0": ("segfault", True, None),
    "segfault_faulthandler_5.0": ("segfault", True, (4, "segfault", "Fatal Python error: Segmentation fault")),
    "abort_5.0": ("abort", True, None),
    "kill_5.0": ("killed", True, None),
    "stall_5.0": ("killed", True, None),           # without stalled=True it is only a SIGKILL
    "sigterm_5.0": ("interrupted", True, None),
    "sigint_5.0": ("interrupted", False, (9, "interrupted", "KeyboardInterrupt")),
    "eevee_5.0": ("ok", False, None),
    "render_stats_5.0": ("ok", False, None),
    "host_oom_malloc_3.4": ("host_oom", True, (41, "host_oom", "Malloc returns null: len=151585344")),
    "host_oom_tile_3.4": ("host_oom", True, (144, "host_oom", "std::bad_alloc")),
    "segfault_ulimit_3.4": ("segfault", True, (23, "segfault", "Writing: /tmp/monkey.crash.txt")),
    "sigint_3.4": ("interrupted", True, (131, "interrupted", "Sent an internal break event")),
    "sigint_twice_3.4": ("interrupted", True, (133, "interrupted", "Blender killed")),
    "sigterm_3.4": ("interrupted", True, None),
    "engine_not_found_3.4": ("engine_unavailable", True, (4, "engine_unavailable", "engine not found 'NOPE'")),
    "blend_invalid_3.4": ("blend_invalid", True, (2, "blend_invalid", "File format is not supported")),
    "blend_truncated_3.4": ("blend_invalid", True, (3, "blend_invalid", "Failed to read blend file")),
    "skip_existing_3.4": ("ok", False, None),
    "segfault_3.4": ("segfault", True, (None, "segfault", "crash.txt")),
    "pyerr_script_3.4": ("python_error", True, (9, "python_error", "script failed, file: '/mnt/pipeline/hooks/pyerr_top.py'")),
    "missing_texture_3.4": ("missing_file", False, (4, "missing_file", "Cannot read '/srv/textures/missing_albedo.png'")),
    "eevee_3.4": ("ok", False, None),
}


# The later rows of the version matrix, captured through renderwatch-blender (the way the healer
# and the farms run a wheel): the same runs on every line, so one expectation per kind of run.
# kind: (types allowed, fatal, (finding type, text) or None)
WHEEL_LINES = ("4.2", "4.5", "5.2", "5.3")
WHEEL_KINDS = {
    "ok": (("ok",), False, None),
    "pyerr_handler": (("python_error",), False, ("python_error", "Error in bpy.app.handlers.render_pre[0]:")),
    "pyerr_script": (("python_error",), True, ("python_error", "KeyError: 'bpy_prop_collection")),
    "missing_texture": (("missing_file",), False, ("missing_file", "Cannot read '/srv/textures/missing_albedo.png'")),
    # --python-exit-code: Blender says "script failed", the exception says why: the missing file
    "missing_texture_uncaught": (("missing_file",), True, ("missing_file", "Cannot read '/srv/textures")),
    "outdir": (("output_error",), True, None),
    "missing_blend": (("missing_file",), True, ("missing_file", 'Cannot read file "/srv/projects/shot010')),
    "blend_invalid": (("blend_invalid",), True, None),
    "blend_truncated": (("blend_invalid",), True, None),
    "segfault": (("segfault",), True, None),
    "segfault_faulthandler": (("segfault",), True, ("segfault", "Fatal Python error: Segmentation fault")),
    "abort": (("abort",), True, None),
    "kill": (("killed",), True, None),
    "stall": (("killed",), True, None),           # without stalled=True it is only a SIGKILL
    "sigterm": (("interrupted",), True, None),
    # A wheel swallows SIGINT inside Cycles: at most the frame in flight is broken, the render goes on
    "sigint": (("ok", "interrupted"), False, None),
    "eevee": (("ok",), False, None),
    "render_stats": (("ok",), False, None),
}


# A missing texture on every row (capture_blender_logs.py textures): what each Blender says of it.
# 3.4 and 4.x say nothing at all (Cycles logs it only at a verbose level): the check of the .blend
# before the render finds it there. 5.x's Cycles logs it per frame, in two forms.
TEXTURE_KINDS = ("missing_texture_scene", "script_error")
SCRIPT_ERROR = "Error: texture 'albedo.png' not found at '/srv/farm/textures/albedo.png'"


def _texture_expected(kind, line):
    five = line.startswith("5.")
    if kind == "missing_texture_scene":
        if not five:
            return ("ok",), False, None
        return ("missing_file",), False, (None, "missing_file", "/mnt/projects/shot010/textures/albedo.png")
    if not five:
        return ("python_error",), False, (3, "python_error", SCRIPT_ERROR)
    return ("missing_file",), False, (3, "python_error", SCRIPT_ERROR)


def _expected(name):
    """(types, fatal, (line or None, finding type, text) or None) for one capture."""
    if name in CAPTURES:
        type_id, fatal, key = CAPTURES[name]
        return (type_id,), fatal, key
    kind, _, line = name.rpartition("_")
    if kind in TEXTURE_KINDS:
        return _texture_expected(kind, line)
    kind, _, line = name.rpartition("_")
    assert line in WHEEL_LINES and kind in WHEEL_KINDS, f"{name}: add its expected type to CAPTURES"
    types, fatal, key = WHEEL_KINDS[kind]
    return types, fatal, (None, *key) if key else None


def _captures():
    out = []
    for d in sorted(FIXTURES.glob("blender-logs-*")):
        for name, entry in json.loads((d / "captures.json").read_text()).items():
            out.append(pytest.param(d, name, entry, id=name))
    return out


@pytest.mark.parametrize("folder, name, entry", _captures())
def test_captures(folder, name, entry):
    types, fatal, key = _expected(name)
    kw = {}
    if entry.get("crash_file"):
        kw["crash_text"] = (folder / entry["crash_file"]).read_text()
    err = classify((folder / f"{name}.log").read_bytes(), exit_code=entry["exit_code"], **kw)
    assert err.type in types and err.fatal == fatal, err.summary
    if key:
        assert _finding(err, *key), err.findings
    for f in err.findings:
        assert f.type in errors.ERROR_TYPES


def test_every_capture_is_checked():
    names = {p.values[1] for p in _captures()}
    assert set(CAPTURES) <= names
    assert sum(n.endswith("_5.0") for n in names) >= 10
    for line in WHEEL_LINES:   # every kind of run captured on every later row of the matrix
        assert {n for n in names if n.endswith(f"_{line}")} == {f"{k}_{line}" for k in (*WHEEL_KINDS, *TEXTURE_KINDS)}, line
    for row in MATRIX:
        assert {f"{k}_{row.line}" for k in TEXTURE_KINDS} <= names, row.line


@pytest.mark.matrix("capture")
@pytest.mark.parametrize("row", [pytest.param(v, id=v.line) for v in MATRIX])
def test_each_version_has_its_failures_captured(row):
    """Every Blender of the matrix: a crash, a Python error and a missing texture captured for real,
    its log format read (the frames saved are counted), each classified as expected (test_captures)."""
    folder = FIXTURES / f"blender-logs-{row.line}"
    entries = json.loads((folder / "captures.json").read_text())
    for kind in ("segfault", "pyerr_script", "missing_texture"):
        assert f"{kind}_{row.line}" in entries, f"Blender {row.label}: no {kind} capture in {folder.name}"
    if row.binary:   # Blender as a module writes no crash file
        assert entries[f"segfault_{row.line}"].get("crash_file"), "the binary's segfault left a crash file"
    scanner = LogScanner()   # its log format is read: the one frame the missing-texture run saved
    scanner.feed_text((folder / f"missing_texture_{row.line}.log").read_text())
    assert scanner.frames_saved == 1
    err = classify((folder / f"segfault_{row.line}.log").read_bytes(), exit_code=-11)
    assert err.type == "segfault"


@pytest.mark.matrix("capture")
@pytest.mark.parametrize("row", [pytest.param(v, id=v.line) for v in MATRIX])
def test_missing_texture_is_a_warning_with_its_path_on_each_version(row):
    """Real captures of a .blend whose texture is missing and of a pipeline script that relinks it to a
    folder where it is not, printing `Error:` and carrying on. Every frame is rendered and Blender exits 0:
    the warning (never `ok` with an `unknown` finding) names the file, or quotes the script's line."""
    folder = FIXTURES / f"blender-logs-{row.line}"
    scene = classify((folder / f"missing_texture_scene_{row.line}.log").read_text(), exit_code=0)
    script = classify((folder / f"script_error_{row.line}.log").read_text(), exit_code=0)
    assert not scene.fatal and not script.fatal
    assert not [f for f in (*scene.findings, *script.findings) if f.type == "unknown" and "Error" not in f.text]
    assert SCRIPT_ERROR in script.summary or _finding(script, None, "python_error", SCRIPT_ERROR)
    if row.line.startswith("5."):
        assert scene.type == "missing_file" and "'/mnt/projects/shot010/textures/albedo.png'" in scene.summary
        assert "went on without it" in scene.summary and scene.frame in (1, None)
        assert script.type == "missing_file" and "'/srv/farm/textures/albedo.png'" in script.summary
        per_frame = [f for f in script.findings if f.type == "missing_file" and "does not exist" in f.text]
        assert len(per_frame) == 2                     # said on each of the two frames
    else:   # Blender says nothing of the texture: the script's own line is all there is
        assert scene.type == "ok"
        assert script.type == "python_error" and script.summary.startswith("A script reported an error")
        assert SCRIPT_ERROR in script.summary


def test_50_captures_details():
    d = FIXTURES / "blender-logs-5.0"
    seg = classify((d / "segfault_faulthandler_5.0.log").read_text(), exit_code=-11)
    assert seg.python_frames[-1][2] == "string_at" and seg.python_frames[0][0] == "/mnt/pipeline/render_wheel.py"
    assert "seg.py line 3, pre()" in seg.summary and "after 2 frames were saved" in seg.summary
    plain = classify((d / "segfault_5.0.log").read_text(), exit_code=-11)
    assert plain.python_frames == () and plain.exit_signal == 11     # a module writes no crash file
    stall = classify((d / "stall_5.0.log").read_text(), exit_code=-9, stalled=True)
    assert stall.type == "stall" and stall.fatal
    oom = classify((d / "kill_5.0.log").read_text(), exit_code=-9, oom_killed=True)
    assert oom.type == "host_oom" and "OOM killer" in oom.summary
    tex = classify((d / "missing_texture_uncaught_5.0.log").read_text(), exit_code=1)
    assert tex.python_frames[-1] == ("/mnt/pipeline/hooks/tex.py", 4, "<module>") and "tex.py line 4" in tex.summary
    handler = classify((d / "pyerr_handler_5.0.log").read_text(), exit_code=0)
    assert "render_pre handler" in handler.summary and "after 1 frame was saved" in handler.summary
    sigint = classify((d / "sigint_5.0.log").read_text(), exit_code=0)
    assert "incomplete" in sigint.summary


def test_50_outdir_without_exit_status_is_still_output_error():
    err = classify((FIXTURES / "blender-logs-5.0" / "outdir_5.0.log").read_text())
    assert err.type == "output_error" and "/proc/renders/f_0001.png" in err.summary


# --- reference strings: GPU, Windows, memory (no GPU or Windows here) ----------------------------------
def _progress(frame, status="Sample 8/128"):
    return f"Fra:{frame} Mem:812.40M (Peak 1207.11M) | Time:00:12.40 | Mem:5120.00M, Peak:5120.00M | Scene, ViewLayer | {status}"


def _log(*lines):
    return "\n".join(lines) + "\n"


FRAME_11_DONE = [_progress(11, "Sample 128/128"), "Saved: '/shot/f_0011.exr'", " Time: 00:40.12 (Saving: 00:00.30)", ""]


def test_gpu_oom_cuda_queue_exit_0_without_saved():
    """Reference strings (Cycles CUDA queue format): Blender logs the error, cancels and exits 0."""
    log = _log(*FRAME_11_DONE, _progress(12), _progress(12, "Sample 16/128"),
               "Out of memory in CUDA queue enqueue (integrator_shade_surface)",
               "Refer to the Cycles GPU rendering documentation for possible solutions:",
               "https://docs.blender.org/manual/en/latest/render/cycles/gpu_rendering.html",
               _progress(12, "Cancel | Out of memory in CUDA queue enqueue (integrator_shade_surface)"),
               "", "Blender quit")
    err = classify(log, exit_code=0)
    assert (err.type, err.fatal, err.frame) == ("gpu_oom", True, 12)
    assert err.summary.startswith("GPU out of memory in CUDA queue enqueue (integrator_shade_surface) at frame 12:")
    assert "CPU" in err.summary
    assert _finding(err, 7, "gpu_oom", "Out of memory in CUDA queue enqueue") and _finding(err, 8, "gpu_error", "Refer to")


def test_gpu_oom_then_segfault_is_gpu_oom():
    log = _log(*FRAME_11_DONE, _progress(12),
               "Out of memory in hipDrvMemcpy2DUnaligned(&param) (intern/cycles/device/hip/device_impl.cpp:789)",
               "Writing: /tmp/shot.crash.txt")
    err = classify(log, exit_code=139, crash_text="# Blender 4.2.0, Commit date: 2024-07-16 06:20, Hash a51f293548ad\n"
                                                  "# backtrace\n./blender(+0x1c2a5d6) [0x55d1e0c2a5d6]\n")
    assert err.type == "gpu_oom" and "hipDrvMemcpy2DUnaligned(&param) at frame 12" in err.summary
    assert err.native_frames == ("./blender(+0x1c2a5d6) [0x55d1e0c2a5d6]",)
    assert any(f.type == "segfault" and f.line == 0 for f in err.findings)      # the symptom stays in the evidence


GPU_OOM_LINES = [
    "CUDA error: Out of memory in cuLaunchKernel(cuPathTrace, xblocks, yblocks, 1, xthreads, ythreads, 1, 0, 0, args, 0)",
    "CUDA error at cuCtxCreate: Out of memory",
    "System is out of GPU memory",
    "System is out of GPU and shared host memory",
    "Failed to retain CUDA context (Out of memory)",
    "Out of memory in cuMemAlloc(&device_pointer, size) (intern/cycles/device/cuda/device_impl.cpp:626)",
]


@pytest.mark.parametrize("line", GPU_OOM_LINES)
def test_gpu_oom_formats(line):
    assert classify(_log(_progress(3), line), exit_code=0).type == "gpu_oom"


GPU_ERROR_LINES = [
    "Illegal address in CUDA queue synchronize (integrator_intersect_closest)",
    "Launch failed in cuCtxSynchronize() (intern/cycles/device/cuda/queue.cpp:92)",
    "Launch exceeded timeout in CUDA queue synchronize (integrator_shade_surface)",
    "OptiX error OPTIX_ERROR_INVALID_VALUE in optixAccelBuild(context, stream, &options, &build_input, 1, temp_mem, "
    "sizes.tempSizeInBytes, out_data, sizes.outputSizeInBytes, &handle, nullptr, 0), line 1224",
    "OptiX CUDA error CUDA_ERROR_ILLEGAL_ADDRESS in cuMemcpyDtoH, line 310",
    "Failed loading OptiX kernel /usr/share/blender/4.2/scripts/addons/cycles/lib/kernel_optix.ptx.zst.",
    "CUDA kernel compilation failed, see console for details.",
    "CUDA device supported only with compute capability 3.0 or up, found 2.1.",
]


@pytest.mark.parametrize("line", GPU_ERROR_LINES)
def test_gpu_error_formats_are_fatal_even_with_saved_and_exit_0(line):
    err = classify(_log(_progress(5), line, "Saved: '/shot/f_0005.exr'", "Blender quit"), exit_code=0)
    assert (err.type, err.fatal, err.frame) == ("gpu_error", True, 5), err.summary
    assert line[:40] in err.summary


def test_windows_access_violation_console_and_exit_codes():
    """Reference strings: Blender's Windows console output on a crash, exit code 0xC0000005."""
    log = _log(*FRAME_11_DONE, _progress(12), "Error   : EXCEPTION_ACCESS_VIOLATION", "Address : 0x00007FF6A1B2C3D4",
               "Module  : blender.exe", "Thread  : 00003b64", "Writing: C:\\Users\\r\\AppData\\Local\\Temp\\shot.crash.txt")
    for code in (3221225477, -1073741819):
        err = classify(log.replace("\n", "\r\n"), exit_code=code)
        assert (err.type, err.frame) == ("segfault", 12)
        assert "EXCEPTION_ACCESS_VIOLATION" in err.summary
    scanner = LogScanner()
    scanner.feed_text(log)
    assert scanner.crash_file == "C:\\Users\\r\\AppData\\Local\\Temp\\shot.crash.txt"
    assert classify(_log("Error   : EXCEPTION_STACK_OVERFLOW"), exit_code=0xC00000FD).type == "segfault"
    assert classify(log).type == "segfault"                        # no exit status: the log is enough


HOST_OOM_CASES = [
    (["terminate called after throwing an instance of 'std::bad_alloc'", "  what():  std::bad_alloc"], 134),
    (["Malloc returns null: len=3221225472 in Cycles Aligned Alloc, total 12884901888"], 134),
    (["Calloc returns null: len=1073741824 in BLI_array, total 9663676416"], -6),
    (["Malloc array aborted due to integer overflow: len=18446744073709551615x8 in imb_alloc_pixels"], -6),
]


@pytest.mark.parametrize("lines, code", HOST_OOM_CASES)
def test_host_oom_over_abort(lines, code):
    err = classify(_log(_progress(7), *lines), exit_code=code)
    assert (err.type, err.frame) == ("host_oom", 7) and "fewer threads" in err.summary


DENOISER_LINES = [
    "Build without OpenImageDenoiser", "Failed to denoise, build has no OpenImageDenoise support",
    "OpenImageDenoiser is not supported on this CPU: missing SSE 4.1 support",
    "OpenImageDenoise error: SSE4.1 support is required at minimum", "No device available to denoise on",
]


@pytest.mark.parametrize("line", DENOISER_LINES)
def test_denoiser_strings(line):
    assert classify(_log(_progress(1), line), exit_code=1).type == "denoiser_unavailable"


ENGINE_LINES = [
    "Engine 'CYCLES' not available for scene Scene (an add-on may need to be installed or enabled)",
    "Warning: Cycles is not enabled!", "Unable to open a display",
]
OTHER_REFERENCE_LINES = [
    "Error   : EXCEPTION_ACCESS_VIOLATION", "EXCEPTION_STACK_OVERFLOW", "Segmentation fault (core dumped)",
    "Aborted (core dumped)", "Killed", "BLI_assert failed: source/blender/x.cc:12, f(), at 'a'",
    "Error: Render error (No space left on device) cannot save: '/o/f.png'", "Render error: cannot save /o/f.png",
    "imb_savepng: Cannot open file for writing: '/o/f.png'", "Warning: Unable to open '/srv/tex.png'",
    "Warning: Path '/srv/cache/fluid' not found", "terminate called after throwing an instance of "
    "'boost::filesystem::filesystem_error'", "Fatal Python error: Py_Initialize: unable to load the file system codec",
    "Out of memory: Killed process 4242 (blender) total-vm:81234567kB", "Error: File written by newer Blender binary",
    "Info: Read library: '/lib/props.blend'", "Error: Cannot find lib '/lib/props.blend'",
]


@pytest.mark.parametrize("line", ENGINE_LINES)
def test_engine_strings(line):
    assert classify(_log(line, "Blender quit"), exit_code=0).type == "engine_unavailable"


def test_precedence_table():
    oom, err, host = "Out of memory in CUDA queue enqueue (k)", "Illegal address in CUDA queue synchronize (k)", \
        "Malloc returns null: len=1 in x, total 2"
    den, out, miss = "Build without OpenImageDenoiser", "Error: Render error (No space left on device) cannot save: '/o/f.png'", \
        "Error: Cannot read '/srv/tex.png': No such file or directory"
    assert classify(_log(err, oom, host), exit_code=134).type == "gpu_oom"
    assert classify(_log(host, err), exit_code=134).type == "gpu_error"
    assert classify(_log(den, host), exit_code=1).type == "host_oom"
    assert classify(_log(out, den), exit_code=1).type == "denoiser_unavailable"
    assert classify(_log(miss, out), exit_code=1).type == "output_error"
    assert classify(_log(miss, "Writing: /tmp/x.crash.txt"), exit_code=139).type == "segfault"   # a warning never wins
    assert classify(_log(miss), exit_code=-9, stalled=True).type == "stall"
    assert classify(_log(err), exit_code=-9, stalled=True).type == "gpu_error"
    assert classify(_log(_progress(3)), exit_code=-11, stalled=True).type == "segfault"
    assert classify(_log("Sent an internal break event. Press ^C again to kill Blender"), exit_code=-9).type == "interrupted"
    assert classify(_log(_progress(3)), signal=15).type == "interrupted"
    assert classify(_log(_progress(3)), exit_code=130).type == "interrupted"
    assert classify(_log(_progress(3)), exit_code=-7).type == "segfault"      # SIGBUS: a crash too
    assert classify(_log(_progress(3), "BLI_assert failed: source/blender/x.cc:12, f(), at 'a'")).type == "abort"


def test_python_errors():
    fatal_interp = classify(_log("Fatal Python error: init_import_site: Failed to import the site module"), exit_code=1)
    assert (fatal_interp.type, fatal_interp.fatal) == ("python_error", True)
    tb = ["Traceback (most recent call last):", '  File "/pipe/hook.py", line 9, in pre', "    boom()",
          '  File "/pipe/lib.py", line 2, in boom', "    raise pipeline.AssetError('down')",
          "pipeline.AssetError: down"]
    warn = classify(_log(_progress(4), *tb, "Saved: '/o/f_0004.png'", "Blender quit"), exit_code=0)
    assert (warn.type, warn.fatal, warn.frame) == ("python_error", False, 4)
    assert warn.python_frames == (("/pipe/hook.py", 9, "pre"), ("/pipe/lib.py", 2, "boom"))
    assert "pipeline.AssetError: down" in warn.summary and "lib.py line 2, boom()" in warn.summary
    dead = classify(_log(*tb), exit_code=1)
    assert (dead.type, dead.fatal) == ("python_error", True)
    mem = classify(_log(*tb[:-1], "MemoryError"), exit_code=1)
    assert mem.type == "host_oom"


def test_unknown_and_ok_without_evidence():
    err = classify(_log("Read blend: /x.blend", "Error: Something only this build says"), exit_code=1)
    assert err.type == "unknown" and "Something only this build says" in err.summary
    assert classify(_log("Blender quit", "Error: Not freed memory blocks: 30, total unfreed memory 0.03 MB"),
                    exit_code=0).type == "ok"
    assert classify(_log("Read blend: /x.blend"), exit_code=1).type == "unknown"
    stopped = classify(_log("Saved: '/o/f_0001.png'", _progress(2)))          # no exit status, stops mid-frame
    assert stopped.type == "unknown" and "at frame 2" in stopped.summary
    assert classify(_log(_progress(1), "Saved: '/o/f_0001.png'")).type == "ok"
    assert classify("").type == "ok" and classify(b"", exit_code=0).type == "ok"


def test_the_gate_passes_every_line_a_rule_matches(blender_logs):
    """The one-regex keyword gate must let through every line that some rule matches."""
    lines = GPU_OOM_LINES + GPU_ERROR_LINES + DENOISER_LINES + ENGINE_LINES + OTHER_REFERENCE_LINES
    lines += [line for lines_, _ in HOST_OOM_CASES for line in lines_]
    for log in list(blender_logs.glob("*.log")) + list(FIXTURES.glob("blender-logs-*/*.log")):
        lines += log.read_text(errors="replace").splitlines()
    matched = 0
    for line in lines:
        msg = split_prefix(line)[0]
        for probe in (line, msg, "ERROR " + msg):
            if any(rx.search(probe) for _, rx, _ in _COMPILED):
                matched += 1
                assert _GATE.search(probe), probe
    assert matched > 100


@pytest.mark.parametrize("line, type_id", [
    ("Segmentation fault (core dumped)", "segfault"), ("Aborted (core dumped)", "abort"), ("Killed", "killed"),
    ("Render error: cannot save /o/f.png", "output_error"), ("Warning: Unable to open '/srv/tex.png'", "missing_file"),
    ("Warning: Path '/srv/cache/fluid' not found", "missing_file"),
    ("terminate called after throwing an instance of 'boost::filesystem::filesystem_error'", "output_error"),
    ("Error: File written by newer Blender binary", "blend_invalid"),
    ("Out of memory: Killed process 4242 (blender) total-vm:81234567kB", "host_oom"),
])
def test_more_reference_lines(line, type_id):
    assert classify(_log(_progress(2), line)).type == type_id


# --- streaming, frames, tails, bad bytes -------------------------------------------------------------
def test_frame_in_flight_and_the_supervisor_marker():
    s = LogScanner()
    s.feed(_progress(3))
    assert s.frame_in_flight == 3
    s.feed("Saved: '/o/f_0003.png'")
    assert s.frame_in_flight is None and s.last_saved_frame == 3 and s.frames_saved == 1
    s.feed(f"{FRAME_MARKER}4 /o/f_0004.png")
    assert s.frame_in_flight == 4
    s.feed("00:00.500  render           | Fra: 5 | Mem: 2M | Sample 1/16")
    assert s.frame_in_flight == 5
    assert classify(_log(f"{FRAME_MARKER}9 /o/f_0009.png"), exit_code=-11).frame == 9
    assert classify(_log(_progress(2)), exit_code=-11, frame=7).frame == 7


def test_frame_marker_is_the_supervisors():
    spawn = pytest.importorskip("healer.supervising.spawn")
    assert spawn.MARKER == FRAME_MARKER


def test_streaming_equals_whole_text(blender_logs):
    text = (blender_logs / "segfault_3.4.log").read_text()
    crash = (blender_logs / "segfault_3.4.crash.txt").read_text()
    whole = classify(text, exit_code=139, crash_text=crash)
    s = LogScanner()
    for line in text.splitlines(keepends=True):
        s.feed(line)
    assert s.finish(139, crash_text=crash) == whole
    assert classify(text.splitlines(), exit_code=139, crash_text=crash) == whole
    # finish() can be called again, and the scanner goes on
    assert s.finish(139, crash_text=crash) == whole


def test_tail_beginning_mid_line(blender_logs):
    data = (blender_logs / "segfault_3.4.log").read_bytes()
    for cut in (1, 17, len(data) // 2 + 7, len(data) - 40):
        tail = data[cut:]
        err = classify(tail, exit_code=139)
        assert err.type == "segfault"
        writing = [f for f in err.findings if f.text.startswith("Writing:")][0]
        assert writing.line == tail.count(b"\n")             # numbered within the tail
    s = LogScanner(first_line=81)
    s.feed_text(data.split(b"\n", 80)[-1].decode())
    assert s.finish(139).findings[0].line == 90


def test_invalid_utf8_and_crlf(blender_logs):
    data = (blender_logs / "outdir_3.4.log").read_bytes().replace(b"\n", b"\r\n")
    data = data.replace(b"Saved", b"\xff\xfeSaved").replace(b"Render error", b"Render\xc3 error")
    err = classify(data, exit_code=1)
    assert err.type == "output_error" and not any("\r" in f.text for f in err.findings)


def test_a_50_mb_log_in_bounded_memory(tmp_path):
    """A generated 50 MB log (real 3.4 progress lines, a GPU error line every 500 lines) streamed from
    disk: memory stays bounded (findings capped per type, a short tail) and the verdict is right."""
    progress = [_progress(f, f"Sample {i}/128") for f in (1,) for i in range(128)]
    path = tmp_path / "big.log"
    size, frame, errs = 0, 1, 0
    with open(path, "w") as f:
        while size < 50 << 20:
            frame += 1
            for i, p in enumerate(progress):
                line = p.replace("Fra:1 ", f"Fra:{frame} ") + "\n"
                if i == 64 and frame % 4 == 0:
                    line += "Illegal address in CUDA queue synchronize (integrator_shade_surface)\n"
                    errs += 1
                f.write(line)
                size += len(line)
            f.write(f"Saved: '/o/f_{frame:04d}.exr'\n Time: 00:40.12 (Saving: 00:00.30)\n\n")
    s = LogScanner()
    tracemalloc.start()
    with open(path, "rb") as f:
        for line in iter_lines(f):
            s.feed(line)
    err = s.finish(0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 << 20, peak
    assert err.type == "gpu_error" and s.count("gpu_error") == errs > 2 * FINDINGS_KEPT
    assert len([f for f in err.findings if f.type == "gpu_error"]) == 2 * FINDINGS_KEPT
    assert len(s.tail) <= 20 and s.frames_saved == frame - 1


def test_huge_numbers_never_raise():
    tb = 'Traceback (most recent call last):\n  File "a.py", line ' + "1" * 5000 + ", in f\nValueError: x\n"
    assert classify(tb, exit_code=1).type == "python_error"
    assert classify(f"{FRAME_MARKER}{'9' * 5000} /o/f.png\n", exit_code=-11).frame is None


# --- never crash ------------------------------------------------------------------------------------
_PIECES = ["Fra:", "Fra: ", "7", " Mem:1.0M (Peak 2.0M)", " | ", "Saved: '", "'", "Traceback (most recent call last):",
           '  File "x.py", line 3, in f', "    code", "KeyError: 'k'", "Error in bpy.app.handlers.render_pre[0]:",
           "Out of memory in CUDA queue enqueue (k)", "Writing: /tmp/x.crash.txt", "Blender quit", "Current thread 0x1 "
           "(most recent call first):", "Fatal Python error: Segmentation fault", "00:00.327  render  | ",
           "ERROR ", "\ufffd", "\r", "| Cancel | ", "Sent an internal break event", FRAME_MARKER, "\x00", ""]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_PIECES), max_size=6).map("".join), max_size=40),
       st.one_of(st.none(), st.integers(min_value=-2**33, max_value=2**33)),
       st.one_of(st.none(), st.integers(min_value=0, max_value=70)), st.booleans(), st.booleans(),
       st.one_of(st.none(), st.text(max_size=300), st.binary(max_size=300)))
def test_feed_and_finish_never_raise(lines, code, sig, stalled, oom, crash):
    s = LogScanner()
    for line in lines:
        s.feed(line)
    err = s.finish(code, sig, crash_text=crash, stalled=stalled, oom_killed=oom)
    assert err.type in errors.ERROR_TYPES and err.summary
    json.dumps(err.to_dict())


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=4000))
def test_random_bytes_never_raise(data):
    err = classify(data, exit_code=random.choice([None, 0, 1, 139, -9]))
    assert err.type in errors.ERROR_TYPES


# --- CLI ---------------------------------------------------------------------------------------------
def _cli(argv, stdin=b""):
    import sys
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr = out, err
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        rc = classify_main(argv)
    finally:
        sys.stdout, sys.stderr, sys.stdin = old
    return rc, out.getvalue(), err.getvalue()


def test_cli_json(blender_logs):
    rc, out, _ = _cli([str(blender_logs / "pyerr_handler_3.4.log"), "--exit-code", "0", "--json"])
    d = json.loads(out)
    assert rc == 0 and d["type"] == "python_error" and d["fatal"] is False and d["summary"]
    assert {"type": "python_error", "line": 51, "text": "RuntimeError: pipeline hook failed: asset server unreachable"} \
        in d["findings"]


def test_cli_human_stdin_and_crash_file_from_the_writing_line(tmp_path, blender_logs):
    crash = tmp_path / "monkey.crash.txt"
    crash.write_bytes((blender_logs / "segfault_3.4.crash.txt").read_bytes())
    log = (blender_logs / "segfault_3.4.log").read_bytes().replace(b"/tmp/monkey.crash.txt", str(crash).encode())
    rc, out, _ = _cli(["-", "--signal", "11"], stdin=log)
    assert rc == 1 and out.startswith("segfault (fatal, error): Blender crashed (SIGSEGV)")
    assert "seg.py:3 in pre" in out and str(crash) in out
    rc, out, _ = _cli(["-", "--exit-code", "139", "--json"], stdin=log)
    assert json.loads(out)["crash_file"] == str(crash) and json.loads(out)["python_frames"][0][2] == "pre"


@pytest.mark.parametrize("log, argv, code", [
    ("ok_3.4.log", ["--exit-code", "0"], 0),
    ("pyerr_handler_3.4.log", ["--exit-code", "0"], 0),       # a handler's traceback: not fatal
    ("missing_texture_3.4.log", ["--exit-code", "0"], 0),
    ("segfault_3.4.log", ["--exit-code", "139"], 1),
    ("missing_blend_3.4.log", ["--exit-code", "1"], 1),
    ("kill_3.4.log", ["--signal", "9", "--json"], 1),
])
def test_cli_exit_status_says_whether_the_run_failed(blender_logs, log, argv, code):
    """A script can branch on the exit status: 1 for a fatal classification (it was 0 whatever the type)."""
    rc, out, _ = _cli([str(blender_logs / log), *argv])
    assert rc == code, out


def test_cli_unreadable_input(tmp_path):
    rc, out, err = _cli([str(tmp_path / "missing.log")])
    assert rc == 2 and "cannot read" in err and not out
    rc, _, err = _cli([str(tmp_path)])
    assert rc == 2
    (tmp_path / "x.log").write_text("Blender quit\n")
    rc, _, err = _cli([str(tmp_path / "x.log"), "--crash-file", str(tmp_path / "none.crash.txt")])
    assert rc == 2 and "crash file" in err


def test_cli_is_registered_in_the_renderwatch_command(blender_logs):
    cli = pytest.importorskip("renderwatch.cli")
    args = cli.build_parser().parse_args(["classify", str(blender_logs / "ok_3.4.log"), "--exit-code", "0"])
    assert args.func.__module__ == "renderwatch.classify"
