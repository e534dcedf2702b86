"""The Sentry event built from a typed error (pure layer): stack frames, fingerprint, level, tags."""

from __future__ import annotations

import pytest

from healer.diagnosis.classify import last_traceback
from healer.diagnosis.errors import GpuOomError, MissingFileError, OkError, PythonError, SegfaultError
from healer.incidents.config import load_incidents_config
from healer.incidents.model import Incident
from healer.incidents.scrub import Scrubber
from healer.incidents.sentry import (
    SentryReporter,
    build_event,
    level_for,
    monitor_slug,
    native_frame,
    parse_crash_file,
    stack_frames,
    top_in_app_frame,
)

SCRUB = Scrubber(include_env=False)


def test_crash_file_frames_outermost_first(blender_logs):
    py, native = parse_crash_file((blender_logs / "segfault_3.4.crash.txt").read_text())
    assert py == [("/mnt/pipeline/hooks/seg.py", 3, "pre"), ("/usr/lib/python3.11/ctypes/__init__.py", 519, "string_at")]
    assert native == []


def test_native_frames_and_order():
    crash = "\n".join([
        "# Blender 4.1.0, Commit date: 2024-03-25 20:42, Hash e1743a0317bc",
        "# backtrace",
        "/opt/blender/blender(BLI_system_backtrace+0x1d) [0x55d1e0c2a5d6]",
        "./blender(+0x1c2a5d6) [0x55d1e0c2a5d7]",
        "/lib/x86_64-linux-gnu/libc.so.6(__libc_start_main+0xf3) [0x7f0000000001]",
        "",
        "# Python backtrace",
        '  File "/studio/tools/bake.py", line 40 in run',
        '  File "/studio/tools/main.py", line 7 in <module>',
    ])
    frames = stack_frames(None, crash, [])
    assert [f["function"] for f in frames] == ["__libc_start_main", "blender+0x1c2a5d6", "BLI_system_backtrace",
                                                "<module>", "run"]
    assert frames[0]["instruction_addr"] == "0x7f0000000001" and frames[0]["platform"] == "native"
    assert not any(f["in_app"] for f in frames[:3]) and all(f["in_app"] for f in frames[3:])
    assert top_in_app_frame(frames) == "bake.py:run"
    assert native_frame("garbage")["function"] == "garbage"


def test_python_traceback_from_a_real_log(blender_logs):
    frames, exc = last_traceback((blender_logs / "pyerr_handler_3.4.log").read_text())
    assert frames == [("/mnt/pipeline/hooks/pyerr.py", 3, "pre")]
    assert exc == "RuntimeError: pipeline hook failed: asset server unreachable"


def test_python_traceback_blender5_prefix_and_last_wins():
    log = [
        "Traceback (most recent call last):", '  File "/a.py", line 1, in f', "ValueError: first",
        "00:00.120  python           | Traceback (most recent call last):",
        '00:00.120  python           |   File "/b.py", line 2, in g',
        '  File "/usr/lib/python3.11/json/__init__.py", line 346, in loads',
        "KeyError: 'x'",
    ]
    frames, exc = last_traceback(log)
    assert frames == [("/b.py", 2, "g"), ("/usr/lib/python3.11/json/__init__.py", 346, "loads")]
    assert exc == "KeyError: 'x'"
    assert last_traceback("no traceback here") == ([], None)


def _crash(blender_logs, **info):
    base = {"job": "j1", "scene": "/mnt/a/shot010/monkey.blend", "host": "node-1", "attempt": 1, "frame": 3}
    base.update(info)
    return Incident(kind="render.crashed", info=base,
                    error=SegfaultError(summary="SIGSEGV", frame=base["frame"],
                                   crash_file=str(blender_logs / "segfault_3.4.crash.txt")))


def test_fingerprint_groups_across_hosts_retries_frames_and_mounts(blender_logs):
    a = build_event(_crash(blender_logs), SCRUB).event
    b = build_event(_crash(blender_logs, host="node-9", attempt=3, frame=7, scene="/net/b/monkey.blend"), SCRUB).event
    assert a["fingerprint"] == b["fingerprint"] == ["SegfaultError", "monkey.blend", "seg.py:pre"]
    other_scene = build_event(_crash(blender_logs, scene="/mnt/a/forest.blend"), SCRUB).event
    assert other_scene["fingerprint"] != a["fingerprint"]
    oom = Incident(kind="render.crashed", info={"scene": "/mnt/a/monkey.blend"}, error=GpuOomError(summary="oom"))
    assert build_event(oom, SCRUB).event["fingerprint"] == ["GpuOomError", "monkey.blend", "<no stack>"]


def test_event_parts(blender_logs):
    inc = _crash(blender_logs, gpu_name="RTX 4090", gpu_uuid="GPU-1", memory={"rss_peak_bytes": 5},
                 log_tail="line1\nline2", render_settings={"engine": "CYCLES"})
    parts = build_event(inc, SCRUB)
    ev = parts.event
    assert ev["exception"]["values"][0]["type"] == "SegfaultError"
    assert ev["tags"]["error_type"] == "segfault" and ev["tags"]["frame"] == "3" and ev["tags"]["job"] == "j1"
    assert ev["contexts"]["gpu"] == {"type": "gpu", "name": "RTX 4090", "id": "GPU-1"}
    assert ev["contexts"]["memory"] == {"rss_peak_bytes": 5}
    assert [a[0] for a in parts.attachments] == ["segfault_3.4.crash.txt", "blender-output.log",
                                                  "render-settings.json"]
    lines = [f"line {i}" for i in range(900)]
    tail = build_event(_crash(blender_logs, log_tail=lines), SCRUB).attachments[1][1].decode().splitlines()
    assert len(tail) == 500 and tail[-1] == "line 899"


def test_log_tail_from_file(tmp_path, blender_logs):
    log = tmp_path / "blender.log"
    log.write_text("\n".join(f"l{i}" for i in range(1000)))
    parts = build_event(_crash(blender_logs, log_path=str(log)), SCRUB)
    text = dict((n, b) for n, b, _ in parts.attachments)["blender-output.log"].decode()
    assert text.splitlines()[0] == "l500"


@pytest.mark.parametrize("kind, error, level", [
    ("render.crashed", SegfaultError(), "error"),
    ("render.warning", PythonError(fatal=False), "warning"),
    ("render.warning", MissingFileError(fatal=False, summary="texture missing"), "warning"),
    ("render.gave_up", SegfaultError(), "fatal"),
    ("render.completed", OkError(), "info"),
])
def test_levels(kind, error, level):
    assert level_for(kind, error) == level


def test_monitor_slug():
    assert monitor_slug("/mnt/x/Shot 010_Lighting.v2.blend") == "render-shot-010_lighting-v2"
    assert monitor_slug("", None) == "render-job"
    assert monitor_slug("/x/a.blend", "nightly") == "nightly"
    assert len(monitor_slug("/x/" + "a" * 200 + ".blend")) == 50


def test_sentry_needs_a_dsn():
    assert load_incidents_config({}, env={}).sentry is None
    cfg = load_incidents_config({}, env={"SENTRY_DSN": "http://k@127.0.0.1:1/1", "SENTRY_RELEASE": "r1",
                                         "SENTRY_ENVIRONMENT": "farm"})
    assert cfg.sentry is not None and cfg.sentry.enabled and cfg.sentry.release == "r1"
    assert cfg.sentry.environment == "farm"
    with pytest.raises(ValueError, match="DSN"):
        SentryReporter(load_incidents_config({"sentry": {"release": "x"}}, env={}).sentry)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="incidents.sentry.in_app_include"):
        load_incidents_config({"sentry": {"in_app_include": "/studio"}}, env={})


def test_the_farm_job_is_named_in_the_event_and_the_webhook():
    from healer.incidents.notify import build_payload
    from healer.incidents.sentry import build_event

    farm = {"engine": "deadline", "job": "job-8f2c", "task": "render/7", "farm_id": "farm-1"}
    inc = Incident(kind="render.crashed", info={"job": "j1", "scene": "/mnt/a/s.blend", "farm": farm},
                   error=SegfaultError(summary="SIGSEGV", frame=7))
    event = build_event(inc, Scrubber()).event
    assert event["tags"]["farm.job"] == "job-8f2c" and event["tags"]["farm.engine"] == "deadline"
    assert event["contexts"]["job"]["farm"]["task"] == "render/7"
    assert build_payload(inc)["job"]["farm"]["job"] == "job-8f2c"
