"""The supervisor's pure parts: blender argv for an attempt, `exec` argv parsing, job ids, config,
progress lines and the report document."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from healer.config import ConfigError, load_config
from healer.supervising.blender_argv import BlenderArgvError, parse_blender_argv
from healer.supervising.launch import check_user_args
from healer.supervising.ledger import Ledger
from healer.supervising.preflight import job_id_for
from healer.supervising.progress import ProgressDisplay, own_line, parse_line
from healer.supervising.report import build_report, summary
from healer.supervising.spawn import CPU_EXPR, GATE_EXPR, MARKER_EXPR, LaunchSpec, build_argv


def test_attempt_argv_order_scripts_before_render_args():
    argv = build_argv(LaunchSpec(blender="blender", scene="/s.blend", frames=[1, 2, 3, 7], output="/o/f_####",
                                 user_args=["--python", "fault.py", "-E", "CYCLES", "--", "script-arg"],
                                 device="CPU", threads=4, hooks="/h/startup.py"))
    # the gate first (nothing renders before the supervisor lets it), then the marker, then the hooks
    assert argv[:7] == ["blender", "-b", "/s.blend", "--python-expr", GATE_EXPR, "--python-expr", MARKER_EXPR]
    assert argv[7:9] == ["--python", "/h/startup.py"]
    i_fault, i_anim = argv.index("fault.py"), argv.index("-a")
    assert i_fault < argv.index("-o") < argv.index("-t") < argv.index(CPU_EXPR) < i_anim
    assert argv[-5:] == ["-a", "-f", "7", "--", "script-arg"]


def test_user_args_may_not_choose_frames():
    with pytest.raises(ValueError, match="--frames"):
        check_user_args(["--python", "x.py", "-a"])
    check_user_args(["--", "-a"])          # script arguments after -- are not Blender's


def test_exec_parses_a_blender_command_line():
    p = parse_blender_argv(["/opt/blender", "-b", "shot.blend", "--python", "hook.py", "-E", "CYCLES",
                            "-o", "//out/f_", "-s", "3", "-e", "5", "-a", "-f", "9,11..12", "--", "x"])
    assert (p.blender, p.scene, p.output) == ("/opt/blender", "shot.blend", "//out/f_")
    assert p.frames == (3, 4, 5, 9, 11, 12)
    assert p.passthrough == ["--python", "hook.py", "-E", "CYCLES"] and p.after == ["--", "x"]
    assert parse_blender_argv(["blender", "-b", "s.blend", "-a"]).frames is None     # the scene's range


def test_exec_keeps_blenders_argument_order_and_open_ranges():
    """What came after the render runs after it (it was moved before it); -s N -a alone renders N to
    the scene's end (it was refused)."""
    p = parse_blender_argv(["blender", "-b", "s.blend", "--python", "pre.py", "-a", "--python", "post.py",
                            "--", "x"])
    assert p.passthrough == ["--python", "pre.py"] and p.after == ["--python", "post.py", "--", "x"]
    argv = build_argv(LaunchSpec(blender="blender", scene="s.blend", frames=[1, 2], user_args=p.passthrough,
                                 after_render=p.after, hooks=None))
    assert argv[argv.index("pre.py") + 1:argv.index("post.py") - 1][-1] == "-a"
    assert argv[-3:] == ["post.py", "--", "x"]
    start = parse_blender_argv(["blender", "-b", "s.blend", "-s", "7", "-a"])
    assert (start.frames, start.range_start, start.range_end) == (None, 7, None)
    end = parse_blender_argv(["blender", "-b", "s.blend", "-e", "4", "-j", "2", "-a"])
    assert (end.frames, end.range_start, end.range_end, end.range_step) == (None, None, 4, 2)


@pytest.mark.parametrize("argv, words", [
    (["blender", "-b", "-a"], "no .blend"),
    (["blender", "-b", "s.blend"], "nothing to render"),
    (["blender", "-b", "s.blend", "-s", "1", "-e", "200000", "-a"], "more than 100000 frames"),
    (["blender", "-b", "s.blend", "-s", "1", "-e", "2000000", "-a"], "beyond Blender's last frame"),
    (["blender", "-b", "s.blend", "-s", "1", "-e", "60000", "-a", "-s", "1", "-e", "60000", "-a"],
     "more than 100000 frames"),
    (["blender", "-b", "s.blend", "-f", "1", "--python", "x.py", "-f", "2"], "between two render actions"),
    (["blender", "-b", "s.blend", "-s"], "needs a value"),
    (["blender", "-b", "s.blend", "-s", "5", "-e", "2", "-a"], "-s 5 -e 2: the start is after the end"),
])
def test_exec_refuses_what_it_cannot_supervise(argv, words):
    with pytest.raises(BlenderArgvError, match=words):
        parse_blender_argv(argv)


@pytest.mark.parametrize("argv, relative", [
    (["blender", "-b", "s.blend", "-f", "-1"], "-f -1"),
    (["blender", "-b", "s.blend", "-s", "-5", "-e", "1", "-a"], "-s -5"),
    (["blender", "-b", "s.blend", "-s", "1", "-e", "+3", "-a"], "-e +3"),
    (["blender", "-b", "s.blend", "--render-frame", "1,-2"], "--render-frame 1,-2"),
])
def test_relative_frames_are_left_to_blender(argv, relative):
    """`-s -5` is 5 frames before the scene's start in Blender (a leading +/- is relative), never the
    absolute frame -5 (passed on as `-f -5`, Blender rendered its frame 'last - 4' again and again)."""
    p = parse_blender_argv(argv)
    assert p.relative == relative and p.frames is None
    assert parse_blender_argv(["blender", "-b", "s.blend", "-s", "1", "-e", "3", "-a"]).relative is None


def test_job_id_is_stable_per_command():
    a = job_id_for("/shots/sh010 v2.blend", [1, 2], None, ["--python", "x.py"])
    assert a == job_id_for("/shots/sh010 v2.blend", [1, 2], None, ["--python", "x.py"])
    assert a != job_id_for("/shots/sh010 v2.blend", [1, 2, 3], None, ["--python", "x.py"])
    assert a.startswith("sh010_v2-")


def test_config_layers_and_errors_name_the_key(tmp_path: Path):
    toml = tmp_path / "rw.toml"
    toml.write_text('[healer]\nconcurrency = 3\n[healer.policy.segfault]\nmax_restarts = 1\n'
                    '[incidents]\nqueue_size = 10\n')
    cfg = load_config(str(toml), env={"RENDERWATCH_HEALER_BACKOFF_S": "0.5"}, overrides={"stall_timeout": 9})
    assert (cfg.concurrency, cfg.stall_timeout, cfg.incidents) == (3, 9.0, {"queue_size": 10})
    pol = cfg.policy()
    assert pol.rules["segfault"].max_restarts == 1 and pol.rules["stall"].backoff_base_s == 0.5
    with pytest.raises(ConfigError, match="RENDERWATCH_HEALER_CONCURRENCY"):
        load_config(env={"RENDERWATCH_HEALER_CONCURRENCY": "zero"})
    toml.write_text("[healer]\nconcurency = 3\n")
    with pytest.raises(ConfigError, match="healer.concurency: unknown key"):
        load_config(str(toml), env={})
    toml.write_text("[healer.policy.segfault]\nmax_restarts = -1\n")
    with pytest.raises(ConfigError, match="policy.segfault"):
        load_config(str(toml), env={})


def test_an_unknown_table_is_an_error_naming_the_table_and_the_file(tmp_path: Path):
    """[healr] was silently ignored (the healer ran on defaults) while an unknown key was an error."""
    toml = tmp_path / "rw.toml"
    toml.write_text("[healr]\nconcurrency = 3\n")
    with pytest.raises(ConfigError, match=r"rw.toml: unknown table \[healr\]"):
        load_config(str(toml), env={})
    toml.write_text('[[incident.webhooks]]\nurl = "https://x"\n')
    with pytest.raises(ConfigError, match=r"unknown table \[incident\]"):
        load_config(str(toml), env={})
    toml.write_text('[agent]\nlisten = "127.0.0.1:1"\n[healer]\nconcurrency = 3\n')   # a shared renderwatch.toml
    assert load_config(str(toml), env={}).concurrency == 3


def test_every_table_is_validated_at_load(tmp_path: Path):
    """A bad [incidents] table or alert rule stops the healer at start; it used to switch incidents off."""
    toml = tmp_path / "rw.toml"
    toml.write_text('[incidents]\nqueue_size = -1\n')
    with pytest.raises(ConfigError, match="incidents.queue_size"):
        load_config(str(toml), env={})
    toml.write_text('[[incidents.webhooks]]\nurl = "ftp://x"\n')
    with pytest.raises(ConfigError, match=r"incidents.webhooks\[0\]"):
        load_config(str(toml), env={})
    toml.write_text('[[healer.alert_rules]]\nalertname = "RenderStalled"\naction = "reboot"\nlabels = ["job"]\n')
    with pytest.raises(ConfigError, match=r"healer.alert_rules\[0\].action"):
        load_config(str(toml), env={})
    toml.write_text('[[healer.alert_rules]]\nalertname = "RenderStalled"\naction = "restart_job"\nlabels = ["job"]\n'
                    "matchers = ['severity=\"page\"']\n")
    rules = load_config(str(toml), env={}).alert_rules
    assert [(r.alertname, r.action, r.labels) for r in rules] == [("RenderStalled", "restart_job", ("job",))]


def test_one_config_error_and_one_set_of_setting_names():
    import agent.config
    import healer.config
    from blender_hooks import settings

    assert agent.config.ConfigError is healer.config.ConfigError is settings.ConfigError
    names = [v for k, v in vars(settings).items() if k.startswith("ENV_")]
    assert len(names) == len(set(names)), "a variable named twice"


def test_renderwatchs_own_lines_are_not_blenders_output():
    """What the healer injects prints inside Blender; only Blender's (and the user's) lines pass to stdout."""
    def own(line):
        return own_line(line, parse_line(line))

    assert own("[renderwatch] frame_start 3 /s/f_0003.png") == ""                 # read by the healer only
    assert own('[renderwatch] render settings {"engine":"CYCLES"}') == ""
    assert own("[renderwatch] device forced to CPU") == "device forced to CPU"   # said on stderr
    for line in ("Saved: '/s/f_0001.png'", "Fra:1 Mem:8.00M | Rendering 1 / 8 samples", "print from [renderwatch] x",
                 "00:00.327  render           | Saved: '/s/f_0002.exr'", ""):
        assert own(line) is None, line


def test_parse_line_both_formats_and_the_marker():
    assert parse_line("Saved: '/s/f_0001.png'").path == "/s/f_0001.png"
    five = parse_line("00:00.327  render           | Saved: '/s/f_0002.exr'")
    assert (five.kind, five.path) == ("saved", "/s/f_0002.exr")
    ev = parse_line("[renderwatch] frame_start 12 /s/frames/f_0012.png")
    assert (ev.kind, ev.frame, ev.path) == ("frame_start", 12, "/s/frames/f_0012.png")
    prog = parse_line("Fra:3 Mem:10.9M (Peak 11.0M) | Time:00:00.06 | Mem:1.4M, Peak:1.4M | Scene, ViewLayer | Sample 8/8")
    assert (prog.kind, prog.frame, prog.text) == ("progress", 3, "Sample 8/8")
    assert parse_line("Writing: /tmp/scene.crash.txt").kind == "crash_file"


def test_progress_display_tty_and_plain():
    clock = iter(range(100)).__next__
    tty = io.StringIO()
    d = ProgressDisplay(total=4, stream=tty, tty=True, clock=lambda: float(clock()))
    d.update(0)
    d.update(2, restarts=1, frame=3)
    assert "\r\x1b[2K" in tty.getvalue() and "frame 2/4" in tty.getvalue() and "restarts 1" in tty.getvalue()
    plain = io.StringIO()
    d = ProgressDisplay(total=4, stream=plain, tty=False, interval_s=1000, clock=lambda: 2000.0)
    d.update(1)
    d.update(2)                                   # throttled
    d.update(4)                                   # the last frame is always shown
    d.finish("done")
    lines = plain.getvalue().splitlines()
    assert lines[0].startswith("renderwatch: frame 1/4") and "frame 4/4" in lines[1] and lines[-1] == "done"
    assert "\x1b" not in plain.getvalue()


def test_the_first_plain_line_shows_right_after_boot():
    """time.monotonic() counts from boot: below interval_s the first line was suppressed."""
    plain = io.StringIO()
    d = ProgressDisplay(total=4, stream=plain, tty=False, interval_s=10, clock=lambda: 5.0)
    d.update(1)
    d.update(2)                                   # throttled: 0 s since the first
    assert plain.getvalue().splitlines() == ["renderwatch: " + d.line(1)]


def test_report_shape(tmp_path):
    led = Ledger.open_or_create(tmp_path, job="j", scene="/s.blend", frames=[1, 2])
    a = led.new_attempt([1, 2], "initial")
    a.pid, a.exit_signal, a.error_type = 10, 11, "segfault"
    led.frame_started(1, a)
    led.frame_verified(1, "/o/f_0001.png", 10, a)
    led.status = "failed"
    led.error = {"type": "segfault", "message": "gave up"}
    doc = build_report(led, exit_code=1)
    assert {"status", "scene", "frames_requested", "frames_completed", "frame_render_counts", "restarts",
            "attempts"} <= set(doc)
    assert doc["status"] == "failed" and doc["frame_render_counts"] == {"1": 1, "2": 0}
    assert set(doc["attempts"][0]) == {"attempt", "pid", "frames_planned", "frames_rendered", "exit_code",
                                       "exit_signal", "error_type", "error_summary", "started_at", "ended_at"}
    assert doc["error"]["type"] == "segfault"


def test_the_summary_names_frames_rendered_again_as_ranges_on_one_line(tmp_path):
    """A requeued 3,000-frame job printed every frame number (14 KB on one line): ranges, cut to a line."""
    led = Ledger.open_or_create(tmp_path, job="j", scene="/s.blend", frames=list(range(1, 3001)))
    led.status = "complete"
    led.frame_render_counts = {f: 2 for f in range(1, 3001)}
    assert summary(led).splitlines()[0] == "renderwatch: complete: 0/3000 frames, 0 restarts, rendered again: 1-3000"
    led.frame_render_counts = {f: 2 if f % 2 else 1 for f in range(1, 3001)}        # every odd frame
    first = summary(led).splitlines()[0]
    assert len(first) < 250 and first.startswith("renderwatch: complete: 0/3000 frames, 0 restarts, rendered again: 1,3,5,")
    assert first.endswith(" more in the report)") and "(1500 frames, " in first
    shown = first.split("rendered again: ")[1].split(",...")[0].split(",")
    assert first.endswith(f"(1500 frames, {1500 - len(shown)} more in the report)")


def test_the_scene_is_read_once_per_version_and_its_files_checked_every_time(tmp_path, monkeypatch):
    import json
    import os
    import shutil

    from healer.supervising import assets
    from tests.support.fake_blender import SCENE as TINY_SCENE

    scene = tmp_path / "tiny.blend"
    shutil.copy(TINY_SCENE, scene)
    cache = tmp_path / "cache"
    info, why, rep = assets.scan_scene(scene, cache)
    assert why is None and (info.frame_start, info.frame_end) == (1, 3) and not rep.missing
    (entry,) = list(cache.iterdir())
    doc = json.loads(entry.read_text())
    doc["deps"].append({"path": str(tmp_path / "gone.png"), "kind": "image", "block": "albedo"})
    entry.write_text(json.dumps(doc))

    def no_reading(*_a, **_k):
        raise AssertionError("the .blend was read again")
    monkeypatch.setattr(assets, "read_scene_info", no_reading)
    info2, _why, rep2 = assets.scan_scene(scene, cache)
    assert info2 == info and [m.path for m in rep2.missing] == [str(tmp_path / "gone.png")]   # checked again
    os.utime(scene, None)                                   # saved again: read again
    with pytest.raises(AssertionError, match="read again"):
        assets.scan_scene(scene, cache)


# A stand-in for the Blender binary (this test needs none): it runs each --python-expr in order, as
# Blender does, so the real gate runs, then says what it would render and with which job.
GATED_STANDIN = """#!{python}
import os, sys
args = sys.argv[1:]
for i, a in enumerate(args):
    if a == "--python-expr":
        exec(args[i + 1], {{}})
print("RENDER", os.environ.get("RENDERWATCH_JOB_ID"), os.environ.get("RENDERWATCH_ATTEMPT"), " ".join(args[-2:]),
      flush=True)
"""


def _standin(tmp_path):
    import stat
    import sys

    exe = tmp_path / "blender"
    exe.write_text(GATED_STANDIN.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


def test_the_prestarted_blender_is_taken_by_the_attempt_it_matches_and_killed_at_the_gate_otherwise(tmp_path):
    from healer.supervising.launch import ProcessLauncher
    from healer.supervising.spawn import LaunchSpec, attempt_env, build_argv, prestart, split_gate_env

    exe = _standin(tmp_path)
    spec = dict(blender=exe, scene="/s.blend", output="/o/f_####", hooks=None)
    env = {"PATH": "/usr/bin:/bin", "KEEP": "1"}

    pre = prestart(LaunchSpec(frames=[1, 2], **spec), env)          # the first attempt, as the CLI guesses it
    assert pre is not None and pre.child.poll() is None              # started, waiting at the gate
    launcher = ProcessLauncher(pre)
    start, gate = split_gate_env(attempt_env("job-a", 1, env))
    child = launcher.spawn(build_argv(LaunchSpec(frames=[1, 2], **spec)), env=start)
    assert child is pre.child                                        # taken: no second process
    launcher.release(child, gate)
    out = child.stdout.read().decode()
    assert child.wait(timeout=30) == 0 and out.split() == ["RENDER", "job-a", "1", "1", "-a"]   # -j 1 -a

    # a resumed job renders frame 2 only: the guess was wrong, and the guessed Blender renders nothing
    pre = prestart(LaunchSpec(frames=[1, 2], **spec), env)
    launcher = ProcessLauncher(pre)
    start, gate = split_gate_env(attempt_env("job-a", 2, env))
    child = launcher.spawn(build_argv(LaunchSpec(frames=[2], **spec)), env=start)
    assert child is not pre.child and pre.child.returncode == -9
    launcher.release(child, gate)
    out = child.stdout.read().decode()
    assert child.wait(timeout=30) == 0 and out.split() == ["RENDER", "job-a", "2", "-f", "2"]
    assert pre.child.stdout.closed

    # started with another environment (say CUDA_VISIBLE_DEVICES): not that Blender either
    pre = prestart(LaunchSpec(frames=[1], **spec), env)
    child = ProcessLauncher(pre).spawn(build_argv(LaunchSpec(frames=[1], **spec)), env={**start, "KEEP": "2"})
    assert child is not pre.child and pre.child.returncode == -9
    child.kill()
    child.wait()

    # never launched (a refused request, a finished job): discarded, nothing rendered
    pre = prestart(LaunchSpec(frames=[1], **spec), env)
    ProcessLauncher(pre).discard_prestarted()
    assert pre.child.returncode == -9


def test_a_blender_that_cannot_start_is_not_prestarted(tmp_path):
    from healer.supervising.spawn import LaunchSpec, prestart

    assert prestart(LaunchSpec(blender=str(tmp_path / "no-such-blender"), scene="/s.blend", frames=[1], hooks=None),
                    {"PATH": ""}) is None


def test_the_output_folder_is_checked_without_creating_anything(tmp_path: Path):
    import os

    from healer.supervising.preflight import output_folder_problem

    assert output_folder_problem(str(tmp_path / "shot" / "frames")) is None     # Blender creates it
    assert os.listdir(tmp_path) == []
    (tmp_path / "plate").write_text("a file")
    assert "is not a folder" in (output_folder_problem(str(tmp_path / "plate" / "frames")) or "")
    if os.geteuid() != 0:                       # root writes anywhere: the read-only mount test covers it
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        assert "not writable" in (output_folder_problem(str(locked / "frames")) or "")


@pytest.mark.parametrize("source,where", [
    ({"env": {"RENDERWATCH_HEALER_STALL_TIMEOUT": "nan"}}, "RENDERWATCH_HEALER_STALL_TIMEOUT"),
    ({"overrides": {"stall_timeout": float("nan")}}, "--stall-timeout"),      # `renderwatch render --stall-timeout nan`
    ({"overrides": {"stall_timeout": float("inf")}}, "--stall-timeout"),
    ({"toml": "[healer]\nstall_timeout = nan\n"}, "stall_timeout"),
    ({"toml": "[healer]\nkill_grace_s = inf\n"}, "kill_grace_s"),
    ({"toml": "[healer]\nbackoff_base_s = nan\n"}, "backoff_base_s"),
    ({"toml": "[healer]\nprobe_interval_s = 0\n"}, "probe_interval_s"),
    ({"env": {"RENDERWATCH_HEALER_CONCURRENCY": "1000000000"}}, "RENDERWATCH_HEALER_CONCURRENCY"),
    ({"env": {"RENDERWATCH_HEALER_MAX_RESTARTS": "1e400"}}, "RENDERWATCH_HEALER_MAX_RESTARTS"),
    ({"toml": "[healer]\nconcurrency = 2.5\n"}, "concurrency"),
    ({"toml": "[healer.policy.segfault]\nbackoff_base_s = nan\n"}, "policy.segfault"),
    ({"toml": "[healer.policy.segfault]\nwindow_s = inf\n"}, "policy.segfault"),
])
def test_every_number_is_finite_and_in_range(tmp_path: Path, source, where):
    """A NaN stall timeout was taken and turned stall detection off (every comparison with NaN is false);
    an infinite grace or a billion concurrent renders were taken too. Each is refused, naming its key."""
    path = None
    if "toml" in source:
        path = tmp_path / "rw.toml"
        path.write_text(source["toml"])
    with pytest.raises(ConfigError, match=re.escape(where)):
        load_config(str(path) if path else None, env=source.get("env", {}), overrides=source.get("overrides"))
