"""healer.policy: the policy table and the pure plan() decision."""

from __future__ import annotations

import pytest

from healer.diagnosis import errors
from healer.supervising.policy import DEFAULT_RULES, JobState, Outcome, Policy, Rule, backoff, plan

NOW = 10_000.0


def _err(type_id: str, fatal: bool = True, frame: int | None = None) -> errors.RenderError:
    return errors.error_class(type_id)(summary=f"{type_id} happened", fatal=fatal, frame=frame)


def _fail(type_id: str, at: float = NOW, frame: int | None = None, rendered=(), **kw) -> Outcome:
    return Outcome(ended_at=at, error_type=type_id, frame=frame, frames_planned=(1, 2, 3),
                   frames_rendered=tuple(rendered), **kw)


def _plan(error, history, missing=(2, 3), policy=None, **kw):
    return plan(JobState(tuple(missing)), error, policy or Policy.default(), history, now=NOW,
                rand=lambda: 0.5, **kw)


@pytest.mark.parametrize("type_id, kind", [
    ("segfault", "launch"), ("abort", "launch"), ("killed", "launch"), ("stall", "launch"), ("unknown", "launch"),
    ("host_oom", "launch"), ("gpu_oom", "launch"), ("gpu_error", "launch"),
    ("missing_file", "give_up"), ("blend_invalid", "give_up"), ("output_error", "give_up"),
    ("denoiser_unavailable", "give_up"), ("engine_unavailable", "give_up"), ("interrupted", "give_up"),
    ("python_error", "give_up"),      # a Python error that *stopped* the render (frames missing)
])
def test_default_table(type_id, kind):
    act = _plan(_err(type_id), [_fail(type_id)], cpu_count=8)
    assert act.kind == kind
    if kind == "give_up":
        assert type_id in act.reason and act.error_type == type_id


def test_fail_fast_message_says_what_to_fix():
    act = _plan(_err("denoiser_unavailable"), [_fail("denoiser_unavailable")])
    assert "turn denoising off" in act.reason


def test_complete_when_nothing_is_missing_even_after_a_warning():
    act = _plan(_err("python_error", fatal=False), [_fail("python_error")], missing=())
    assert act.kind == "complete"


@pytest.mark.parametrize("type_id", ["python_error", "missing_file"])
def test_strict_fails_a_complete_render_with_reported_errors(type_id):
    act = _plan(_err(type_id, fatal=False), [], missing=(), policy=Policy(strict=True))
    assert act.kind == "give_up" and act.reason.startswith("--strict") and act.error_type == type_id
    assert act.strict       # the exit status (EXIT_STRICT) reads this field, not the reason's text
    warned = plan(JobState((), (type_id,)), None, Policy(strict=True), [], now=NOW)
    assert warned.kind == "give_up" and warned.strict


def test_a_give_up_for_a_fatal_error_is_not_strict():
    assert not _plan(_err("missing_file"), [_fail("missing_file")], policy=Policy(strict=True)).strict


def test_restart_backoff_grows_and_resets_after_progress():
    hist = [_fail("segfault", NOW - 30), _fail("segfault", NOW - 20), _fail("segfault", NOW - 10)]
    delays = [_plan(_err("segfault"), hist[: i + 1]).delay_s for i in range(3)]
    assert delays == [1.0, 2.0, 4.0]                       # rand=0.5: no jitter
    progressed = hist[:2] + [_fail("segfault", NOW, rendered=(2,))]
    assert _plan(_err("segfault"), progressed).delay_s == 1.0


def test_backoff_is_capped_and_jittered():
    rule = Rule(backoff_base_s=1, backoff_max_s=8, jitter=0.25)
    assert backoff(rule, 20, rand=lambda: 0.5) == 8
    assert backoff(rule, 1, rand=lambda: 0.0) == 0.75
    assert backoff(rule, 1, rand=lambda: 1.0) == 1.25
    assert backoff(rule, 0) == 0


def test_gives_up_after_max_restarts_in_the_window():
    pol = Policy.default().with_overrides({"segfault": {"max_restarts": 2, "window_s": 600}})
    hist = [_fail("segfault", NOW - 30), _fail("segfault", NOW - 20)]
    assert _plan(_err("segfault"), hist, policy=pol).kind == "launch"
    hist.append(_fail("segfault", NOW - 10))
    act = _plan(_err("segfault"), hist, policy=pol)
    assert act.kind == "give_up" and "gave up after 2 restarts in 10 min" in act.reason
    # failures older than the window no longer count
    old = [_fail("segfault", NOW - 4000), _fail("segfault", NOW - 3900), _fail("segfault", NOW - 10)]
    assert _plan(_err("segfault"), old, policy=pol).kind == "launch"


def test_max_restarts_flag_overrides_every_restarting_rule():
    pol = Policy.default().with_overrides(max_restarts=0)
    assert _plan(_err("stall"), [_fail("stall")], policy=pol).kind == "give_up"
    assert pol.rules["missing_file"] == DEFAULT_RULES["missing_file"]


def test_gpu_oom_retries_on_gpu_once_then_renders_that_frame_on_cpu():
    first = _plan(_err("gpu_oom", frame=2), [_fail("gpu_oom", frame=2)])
    assert first.kind == "launch" and first.device is None and first.frames == (2, 3)
    second = _plan(_err("gpu_oom", frame=2), [_fail("gpu_oom", NOW - 5, frame=2), _fail("gpu_oom", frame=2)])
    assert second.device == "CPU" and second.frames == (2,)
    # the CPU attempt did its one frame: carry on with the rest on the GPU, not a restart
    done = Outcome(ended_at=NOW, error_type=None, frames_planned=(2,), frames_rendered=(2,), device="CPU")
    cont = _plan(None, [_fail("gpu_oom", NOW - 9, frame=2), _fail("gpu_oom", NOW - 5, frame=2), done], missing=(3,))
    assert cont.kind == "launch" and cont.device is None and cont.frames == (3,) and not cont.restart


def test_host_oom_halves_threads_until_one():
    act = _plan(_err("host_oom"), [_fail("host_oom")], cpu_count=8)
    assert act.threads == 4
    act = _plan(_err("host_oom"), [_fail("host_oom", threads=2)], cpu_count=8)
    assert act.threads == 1
    act = _plan(_err("host_oom"), [_fail("host_oom", threads=1)], cpu_count=8)
    assert act.kind == "give_up"


def test_clean_exit_with_frames_missing_is_an_unexplained_failure():
    act = _plan(errors.OkError(summary="fine", fatal=False), [_fail("ok")])
    assert act.kind == "launch" and act.error_type == "unknown"


def test_clean_exits_that_render_nothing_count_against_max_restarts():
    # Blender on a full disk prints Saved:, exits 0 and leaves nothing verifiable: this must end.
    pol = Policy.default().with_overrides({"unknown": {"max_restarts": 2, "window_s": 600}})
    hist = [Outcome(ended_at=NOW - i, error_type=None, frames_planned=(2, 3), frames_rendered=()) for i in (3, 2, 1)]
    act = _plan(errors.OkError(summary="fine", fatal=False), hist, policy=pol)
    assert act.kind == "give_up" and "gave up after 2 restarts" in act.reason


def test_non_fatal_finding_with_frames_missing_restarts():
    act = _plan(_err("missing_file", fatal=False), [_fail("missing_file")])
    assert act.kind == "launch" and act.error_type == "unknown"


@pytest.mark.parametrize("overrides, words", [
    ({"segfalt": {"max_restarts": 1}}, "policy.segfalt: unknown error type"),
    ({"segfault": {"max_restart": 1}}, "policy.segfault.max_restart: unknown setting"),
    ({"segfault": {"kind": "reboot"}}, "policy.segfault: kind 'reboot'"),
    ({"segfault": {"jitter": 3}}, "jitter"),
])
def test_overrides_name_the_bad_key(overrides, words):
    with pytest.raises(ValueError, match=words):
        Policy.default().with_overrides(overrides)


def test_policy_table_is_data():
    table = {row["type"]: row for row in Policy.default().table()}
    assert table["gpu_oom"]["kind"] == "retry_gpu_then_cpu"
    assert table["host_oom"]["kind"] == "restart_fewer_threads"
    assert table["python_error"]["kind"] == "report_only"


def test_the_same_crash_at_the_same_point_of_a_frame_fails_fast_a_signal_from_outside_does_not():
    three = [_fail("segfault", frame=1, frame_age_s=a) for a in (0.02, 0.03, 0.02)]
    assert _plan(_err("segfault", frame=1), three, missing=(1, 2)).kind == "give_up"
    assert "on 3 attempts in a row" in _plan(_err("segfault", frame=1), three, missing=(1, 2)).reason
    # chaos: two SIGSEGVs sent from outside, both during frame 1 but a second apart into it (it gave up)
    outside = [_fail("segfault", frame=1, frame_age_s=a) for a in (0.02, 1.45, 0.44)]
    assert _plan(_err("segfault", frame=1), outside, missing=(1, 2)).kind == "launch"
    unknown = [_fail("segfault", frame=1) for _ in range(3)]                      # no marker seen: as before
    assert _plan(_err("segfault", frame=1), unknown, missing=(1, 2)).kind == "give_up"


def test_two_crashes_at_the_same_point_of_a_short_frame_are_not_yet_deterministic():
    # chaos seed 861119098 round 13: two SIGSEGVs from outside both landed early in a 0.45 s frame
    # (every point of a short frame is "the same point"): two in a row are retried, a third is not.
    two = [_fail("segfault", frame=4, frame_age_s=0.21), _fail("segfault", frame=4, frame_age_s=0.12)]
    assert _plan(_err("segfault", frame=4), two, missing=(4, 5, 6)).kind == "launch"
    three = [*two, _fail("segfault", frame=4, frame_age_s=0.15)]
    assert _plan(_err("segfault", frame=4), three, missing=(4, 5, 6)).kind == "give_up"
