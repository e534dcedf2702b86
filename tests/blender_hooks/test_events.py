"""The event schema shared by the hooks and the agent: every rejection names its reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blender_hooks import events as E


def _ev(type_="frame_end", **kw):
    base = dict(frame=3, seconds=1.25, saved=True) if type_ == "frame_end" else {}
    base.update(kw)
    return E.make_event(type_, session="abcd1234", seq=1, job="job-1", host="node7", pid=4242, **base)


def test_round_trip_every_type():
    samples = {
        "job_start": dict(blend_file="/p/s.blend", scene="Scene", frame_start=1, frame_end=10, engine="CYCLES",
                          device_type="CPU", blender_version="3.4.1"),
        "frame_start": dict(frame=1),
        "phase": dict(frame=1, name="bvh"),
        "frame_end": dict(frame=1, seconds=0.5, saved=True, peak_memory_blender_bytes=1.5e7),
        "job_end": dict(status="complete", frames_done=10),
    }
    for typ, fields in samples.items():
        ev = E.make_event(typ, session="abcd1234", seq=2, job="j", host="h", pid=1, **fields)
        line = E.encode(ev)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert E.decode(line) == json.loads(line)


@pytest.mark.parametrize("data,reason", [
    (b"\xff\xfe{", "invalid_utf8"),
    (b"{not json", "malformed_json"),
    (b"[1,2]", "not_object"),
    (b"x" * (E.MAX_EVENT_BYTES + 1), "too_large"),
])
def test_bytes_level_rejections(data, reason):
    with pytest.raises(E.EventError) as ei:
        E.decode(data)
    assert ei.value.reason == reason


@pytest.mark.parametrize("mutate,reason,detail", [
    (lambda e: e.update(v=2), "unsupported_version", "'v'"),
    (lambda e: e.update(v=True), "unsupported_version", "'v'"),
    (lambda e: e.update(type="frame_middle"), "unknown_type", "frame_middle"),
    (lambda e: e.pop("frame"), "missing_field", "'frame'"),
    (lambda e: e.pop("session"), "missing_field", "'session'"),
    (lambda e: e.update(frame="3"), "wrong_type", "'frame' must be int"),
    (lambda e: e.update(frame=True), "wrong_type", "'frame'"),
    (lambda e: e.update(saved=1), "wrong_type", "'saved' must be bool"),
    (lambda e: e.update(seconds=float("nan")), "out_of_range", "finite"),
    (lambda e: e.update(seconds=-1), "out_of_range", "seconds"),
    (lambda e: e.update(seq=0), "out_of_range", "seq"),
    (lambda e: e.update(scene="s" * (E.MAX_STR + 1)), "too_large", "scene"),
])
def test_field_level_rejections_name_the_field(mutate, reason, detail):
    ev = _ev()
    mutate(ev)
    with pytest.raises(E.EventError) as ei:
        E.validate(json.loads(json.dumps(ev)))
    assert ei.value.reason == reason
    assert detail in str(ei.value)
    assert ei.value.reason in E.REASONS


def test_phase_and_status_are_enumerated():
    with pytest.raises(E.EventError, match="phase 'name'"):
        E.validate(_ev("phase", frame=1, name="warp"))
    with pytest.raises(E.EventError, match="status"):
        E.validate(_ev("job_end", status="exploded"))


def test_encode_never_raises_on_odd_values():
    ev = _ev(output_path="/tmp/\udcff-bad-surrogate", extra=object())
    line = E.encode(ev)
    assert E.decode(line)["frame"] == 3


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash(data):
    try:
        E.decode(data)
    except E.EventError as e:
        assert e.reason in E.REASONS


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "type", "session", "seq", "ts", "job", "host", "pid", "frame",
                                        "seconds", "saved", "name", "status"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                                 st.lists(st.integers(), max_size=2))))
def test_arbitrary_objects_never_crash(obj):
    try:
        E.validate(obj)
    except E.EventError as e:
        assert e.reason in E.REASONS
