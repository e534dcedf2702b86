"""The supervisor's restart and failure paths, driven by a Blender that replays real recorded runs
(tests/support/fake_blender.py; recorded from Debian's Blender 3.4 by tests/fixtures/record_runs.py). The real
launcher is faked here because these paths are about decisions and bookkeeping, not processes: the same
paths run against real Blender in tests/integration/test_render_faults.py."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from healer.diagnosis.catalog import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, EXIT_STRICT
from healer.service.metrics import HealerMetrics
from healer.supervising.policy import Policy
from healer.supervising.supervisor import RenderRequest, Supervisor
from tests.support.fake_blender import ReplayLauncher, ReplayProbes, load_run
from tests.support.fakes import IncidentRecorder


def supervise(scene: Path, tmp_path: Path, runs, *, frames=(1, 2, 3), policy=None, oom_kills=None, **req):
    launcher = ReplayLauncher(runs)
    sink = IncidentRecorder()
    metrics = HealerMetrics(CollectorRegistry())
    sup = Supervisor(RenderRequest(scene=str(scene), frames=tuple(frames), blender=shutil.which("true") or "true",
                                   **req),
                     policy=policy or Policy.default().with_overrides(backoff_base_s=0.0),
                     incidents=sink, metrics=metrics, env={"RENDERWATCH_HOME": str(tmp_path / "home")},
                     launcher=launcher, probes=ReplayProbes(launcher, oom_kills=oom_kills),
                     probe_interval_s=0.01, kill_grace_s=0.1)
    return sup, launcher, sink, metrics


def value(metrics: HealerMetrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_segfault_restarts_for_the_missing_frames_only(scene, tmp_path):
    sup, launcher, sink, metrics = supervise(scene, tmp_path, ["segfault_at_2", "ok_2-3"])
    t0 = time.monotonic()
    result = await sup.run()
    assert time.monotonic() - t0 < 5
    assert result.exit_code == EXIT_OK and result.status == "complete"
    led = result.ledger
    assert sorted(led.completed()) == [1, 2, 3]
    assert led.frame_render_counts == {1: 1, 2: 2, 3: 1}        # only the frame in flight twice
    first, second = led.attempts
    assert first.error_type == "segfault" and first.exit_signal == 11 and first.frames_rendered == [1]
    assert first.frame_in_flight == 2
    assert second.frames_planned == [2, 3] and second.error_type == "ok"
    assert sink.kinds == ["render.started", "render.crashed", "render.restarted", "render.recovered",
                          "render.completed"]
    crash = sink.errors[1]
    assert crash.type == "segfault" and crash.frame == 2
    assert any("segfault.py" in f[0] for f in crash.python_frames)   # read from the replayed crash file
    assert value(metrics, "renderwatch_healer_restarts_total", job=led.job, error_type="segfault") == 1
    assert value(metrics, "renderwatch_healer_frames_completed", job=led.job) == 3
    assert [e["RENDERWATCH_ATTEMPT"] for e in launcher.envs] == ["1", "2"]


async def test_a_crash_that_keeps_coming_back_gives_up_with_its_type(scene, tmp_path):
    policy = Policy.default().with_overrides({"segfault": {"max_restarts": 1}}, backoff_base_s=0.0)
    sup, launcher, sink, metrics = supervise(scene, tmp_path, ["segfault_at_2", "segfault_at_3", "segfault_at_3"],
                                             policy=policy)
    seg3 = load_run("segfault_at_3")
    launcher.runs[2] = dict(seg3, frames=[3], lines=[x for x in seg3["lines"] if "frame_start 2" not in x[1]])
    result = await sup.run()
    assert result.exit_code == EXIT_FAILED and result.error["type"] == "segfault"
    assert "gave up after 1 restarts" in result.error["message"]
    assert sink.kinds[-1] == "render.gave_up" and sink.errors[-1].type == "segfault"
    assert value(metrics, "renderwatch_healer_gave_up_total", job=result.ledger.job, error_type="segfault") == 1
    assert sorted(result.ledger.completed()) == [1, 2]


async def test_a_stall_is_stopped_observed_and_restarted(scene, tmp_path):
    sup, launcher, sink, metrics = supervise(scene, tmp_path, ["stall_at_2", "ok_2-3"], stall_timeout=0.3)
    result = await sup.run()
    assert result.exit_code == EXIT_OK
    first = result.ledger.attempts[0]
    assert first.error_type == "stall" and first.exit_signal == 15
    assert "render.stalled" in sink.kinds
    assert value(metrics, "renderwatch_healer_stall_detect_seconds_count") == 1
    assert value(metrics, "renderwatch_healer_stall_detect_seconds_sum") < 0.5   # noticed within a few ticks


async def test_a_handler_error_is_a_warning_and_fails_only_under_strict(scene, tmp_path):
    sup, _l, sink, _m = supervise(scene, tmp_path, ["pyerr_at_2"])
    result = await sup.run()
    assert result.exit_code == EXIT_OK
    assert {w["type"] for w in result.ledger.warnings} == {"python_error"}
    assert "render.warning" in sink.kinds
    shutil.rmtree(scene.parent / "frames")
    sup, _l, sink, _m = supervise(scene, tmp_path / "strict", ["pyerr_at_2"], strict=True)
    result = await sup.run()
    assert result.exit_code == EXIT_STRICT and result.error["type"] == "python_error"
    # the healer service reports a finished job's status from its ledger: the field, not the message
    from healer.service.app import ledger_exit_code

    assert ledger_exit_code(result.ledger) == EXIT_STRICT
    result.ledger.error = {**result.ledger.error, "message": "reworded: every frame rendered but ..."}
    assert ledger_exit_code(result.ledger) == EXIT_STRICT
    result.ledger.error = {"type": "python_error", "message": "--strict in a message of another ending",
                           "exit_code": 1}
    assert ledger_exit_code(result.ledger) == 1


async def test_a_kernel_oom_kill_restarts_with_fewer_threads(scene, tmp_path):
    # The cgroup's oom_kill count rises across the attempt: that SIGKILL was the kernel's OOM killer.
    sup, launcher, _s, _m = supervise(scene, tmp_path, ["sigkill_at_2", "ok_2-3"], oom_kills=[0, 1])
    result = await sup.run()
    assert result.exit_code == EXIT_OK
    assert result.ledger.attempts[0].error_type == "host_oom"
    second = launcher.argvs[1]
    assert "-t" in second and int(second[second.index("-t") + 1]) >= 1


async def test_a_plain_sigkill_and_an_abort_are_restarted(scene, tmp_path):
    for i, run in enumerate(("sigkill_at_2", "abort_at_2")):
        own = tmp_path / str(i) / "tiny.blend"          # its own folder: frames on disk would be reused
        own.parent.mkdir()
        shutil.copy(scene, own)
        sup, _l, _s, _m = supervise(own, tmp_path / str(i), [run, "ok_2-3"])
        result = await sup.run()
        assert result.exit_code == EXIT_OK
        assert result.ledger.attempts[0].error_type == {"sigkill_at_2": "killed", "abort_at_2": "abort"}[run]


async def test_interrupted_from_outside_is_not_restarted_and_ends_as_cancelled(scene, tmp_path):
    """Someone else's SIGTERM (a farm's cancel): one answer everywhere, exit 130 like a cancel."""
    outside = dict(load_run("stall_at_2"), hang=False)       # the same real output, ended by SIGTERM
    sup, launcher, sink, _m = supervise(scene, tmp_path, [outside])
    result = await sup.run()
    assert result.exit_code == EXIT_CANCELLED and result.error["type"] == "interrupted"
    assert len(launcher.argvs) == 1 and sink.kinds[-1] == "render.gave_up"


async def test_cancel_stops_blender_and_ends_cancelled(scene, tmp_path):
    import asyncio

    sup, launcher, _s, _m = supervise(scene, tmp_path, ["stall_at_2"])
    task = asyncio.create_task(sup.run())
    while launcher.current is None or launcher.current.returncode() is not None and not launcher.current.tail:
        await asyncio.sleep(0.01)
    while not any("frame_start 2" in x for x in launcher.current.tail):
        await asyncio.sleep(0.01)
    sup.cancel()
    result = await asyncio.wait_for(task, 5)
    assert result.exit_code == EXIT_CANCELLED and result.status == "cancelled"


async def test_gpu_oom_twice_on_a_frame_renders_it_on_the_cpu(scene, tmp_path):
    """No GPU here: the run is a real recorded one with Cycles' CUDA out-of-memory line (a reference
    string from Cycles' sources) in place of the crash, ending with exit 0 and frame 2 unsaved, as a
    GPU OOM does."""
    base = load_run("segfault_at_2")
    lines = [x for x in base["lines"] if not x[1].startswith("Writing:")]
    lines.append([lines[-1][0] + 0.01, "Out of memory in CUDA queue enqueue (integrator_shade_surface)"])
    oom = dict(base, lines=lines, exit=0, crash_file=None)
    oom2 = dict(oom, frames=[2, 3], lines=[x for x in lines if "frame_start 1" not in x[1] and "f_0001" not in x[1]])
    cpu = load_run("ok_2-3")
    sup, launcher, _s, _m = supervise(scene, tmp_path, [oom, oom2, dict(cpu, frames=[2])])
    cpu_run = launcher.runs[2]
    cpu_run["lines"] = [x for x in cpu["lines"] if "frame_start 3" not in x[1] and "f_0003" not in x[1]]
    launcher.runs.append(load_run("ok_3"))
    result = await sup.run()
    assert result.exit_code == EXIT_OK
    types = [a.error_type for a in result.ledger.attempts]
    assert types[:2] == ["gpu_oom", "gpu_oom"]
    assert result.ledger.attempts[2].device == "CPU" and result.ledger.attempts[2].frames_planned == [2]
    assert "[renderwatch] device forced to CPU" not in " ".join(launcher.argvs[1])
    assert any("cycles.device = 'CPU'" in a for a in launcher.argvs[2])


async def test_a_run_for_other_frames_is_refused(scene, tmp_path):
    sup, _l, _s, _m = supervise(scene, tmp_path, ["ok_2-3"])
    with pytest.raises(AssertionError, match="the run recorded"):
        await sup.run()


# -- when verified frames are reused (farm requeue, retry, a changed scene, --fresh) -------------------

async def _complete(scene, tmp_path, **req):
    sup, launcher, sink, _m = supervise(scene, tmp_path, ["ok_1-3"], **req)
    result = await sup.run()
    assert result.exit_code == EXIT_OK
    return sup, launcher, sink


async def test_a_requeue_of_a_finished_task_renders_again_a_retry_resumes(scene, tmp_path):
    sup, _l, _s = await _complete(scene, tmp_path)
    # Not reported yet (the healer was killed before exit 0): the farm's retry resumes, renders nothing.
    sup, launcher, sink, _m = supervise(scene, tmp_path, [])
    result = await sup.run()
    assert result.exit_code == EXIT_OK and launcher.argvs == [] and "render.completed" not in sink.kinds
    sup.delivered()                                   # now it was: exit 0 reached the farm
    sup, launcher, sink, _m = supervise(scene, tmp_path, ["ok_1-3"])
    result = await sup.run()                          # the farm requeued the finished task
    assert result.exit_code == EXIT_OK and len(launcher.argvs) == 1
    assert result.ledger.frame_render_counts == {1: 2, 2: 2, 3: 2}
    assert result.ledger.restarts == 0                # a requeue is not a restart of the run before it
    sup.delivered()
    sup, launcher, _s, _m = supervise(scene, tmp_path, ["ok_1-3"])
    assert (await sup.run()).ledger.restarts == 0     # nor is a second one (it said "1 restarts")


async def test_a_changed_scene_invalidates_verified_frames(scene, tmp_path):
    await _complete(scene, tmp_path)
    scene.touch()                                     # saved again
    sup, launcher, _s, _m = supervise(scene, tmp_path, ["ok_1-3"])
    result = await sup.run()
    assert len(launcher.argvs) == 1 and sorted(result.ledger.completed()) == [1, 2, 3]


async def test_fresh_renders_everything_again(scene, tmp_path):
    await _complete(scene, tmp_path)
    sup, launcher, _s, _m = supervise(scene, tmp_path, ["ok_1-3"], fresh=True)
    assert (await sup.run()).exit_code == EXIT_OK and len(launcher.argvs) == 1


async def test_frames_of_another_run_are_rendered_again_where_the_scene_overwrites(scene, tmp_path, caplog):
    """Blender's rule (the scene's default, Output > Overwrite on): a file already there is rendered over.
    Frames kept under use_overwrite off: tests/healer/supervising/test_reuse.py."""
    await _complete(scene, tmp_path / "other-home")   # another job (its own ledger) rendered them
    caplog.set_level("INFO", logger="healer.supervising.supervisor")
    sup, launcher, _s, _m = supervise(scene, tmp_path, ["ok_1-3"])
    result = await sup.run()
    assert result.exit_code == EXIT_OK and len(launcher.argvs) == 1
    assert result.ledger.frame_render_counts == {1: 1, 2: 1, 3: 1}
    assert "3 frame(s) already on disk from another run: rendering them again" in caplog.text


def test_farm_jobs_never_share_a_ledger_a_retry_of_a_task_does():
    from blender_hooks.farm import farm_identity
    from healer.supervising.preflight import job_id_for

    def jid(**env):
        return job_id_for("/shots/a.blend", [1, 2], None, [], farm_identity(env))

    a = jid(DEADLINE_JOB_ID="job-a", DEADLINE_STEP_ID="s", DEADLINE_TASK_ID="t1", DEADLINE_SESSIONACTION_ID="x1")
    retry = jid(DEADLINE_JOB_ID="job-a", DEADLINE_STEP_ID="s", DEADLINE_TASK_ID="t1", DEADLINE_SESSIONACTION_ID="x2")
    b = jid(DEADLINE_JOB_ID="job-b", DEADLINE_STEP_ID="s", DEADLINE_TASK_ID="t1")
    cue = jid(CUE_JOB="show-shot-lighting", CUE_JOB_ID="9f1c", CUE_LAYER="render", CUE_FRAME="0001-render")
    assert a == retry and len({a, b, cue, jid()}) == 4


def _seg_again():
    """segfault_at_2 relaunched for the missing frames: frame 1 is verified, it crashes at 2 again."""
    seg = load_run("segfault_at_2")
    return dict(seg, frames=[2, 3], lines=[x for x in seg["lines"] if "frame_start 1" not in x[1] and "f_0001" not in x[1]])


async def test_the_same_crash_at_the_same_frame_three_times_fails_fast(scene, tmp_path):
    sup, launcher, sink, _m = supervise(scene, tmp_path, ["segfault_at_2", _seg_again(), _seg_again()])
    result = await sup.run()
    assert result.exit_code == EXIT_FAILED and len(launcher.argvs) == 3          # not 6 launches
    assert "segfault at frame 2 on 3 attempts in a row" in result.error["message"]


async def test_a_farm_retry_of_a_deterministic_crash_fails_after_one_attempt(scene, tmp_path):
    sup, launcher, _s, _m = supervise(scene, tmp_path, ["segfault_at_2", _seg_again(), _seg_again()])
    assert (await sup.run()).exit_code == EXIT_FAILED and len(launcher.argvs) == 3  # the farm's first try
    sup, launcher, _s, _m = supervise(scene, tmp_path, [_seg_again()])
    result = await sup.run()                                                       # the farm's retry
    assert len(launcher.argvs) == 1 and "on 4 attempts in a row" in result.error["message"]
