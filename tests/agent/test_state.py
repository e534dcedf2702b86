"""agent.state: the pure job model (dedupe, merges, progress, ETA, peaks, attempts, expiry)."""

from __future__ import annotations

import pytest

from agent.state import FrameDone, JobDone, State
from tests.support.agent import JobStream


def feed(st: State, events: list[dict]) -> list:
    effects = []
    for ev in events:
        if st.accept(ev):
            eff = st.apply(ev)
            if eff is not None:
                effects.append(eff)
    return effects


def test_a_whole_job():
    st, s = State(), JobStream("j1")
    effects = feed(st, s.whole(frames=4, seconds=2.0))
    job = st.jobs["j1"]
    assert (job.status, job.frames_done, job.frames_total, job.progress) == ("complete", 4, 4, 1.0)
    assert job.last_frame_seconds == 2.0 and job.eta_seconds is None
    assert job.peaks == {"blender": 150e6, "rss": 300e6}
    assert [type(e) for e in effects] == [FrameDone] * 4 + [JobDone]
    assert [e.frame for e in effects[:4]] == [1, 2, 3, 4]
    assert [p[0] for p in effects[0].phases] == ["sync", "sampling"]
    assert st.totals.frames[("Scene", "CYCLES", "CPU")] == 4
    assert st.totals.seconds[("Scene", "CYCLES", "CPU")].count == 4


def test_progress_and_eta_mid_render():
    st, s = State(), JobStream("j1")
    feed(st, [s.start(1, 10)])
    for n, secs in zip(range(1, 4), (1.0, 2.0, 3.0), strict=True):
        feed(st, s.frame(n, seconds=secs))
    job = st.jobs["j1"]
    assert job.progress == pytest.approx(0.3)
    assert job.eta_seconds == pytest.approx(2.0 * 7)
    assert job.to_dict()["frames_done"] == 3 and job.to_dict()["eta_seconds"] == pytest.approx(14.0)


def test_duplicates_and_out_of_order_are_dropped():
    st, s = State(), JobStream("j1")
    evs = s.whole(frames=2)
    assert all(st.accept(e) for e in evs)
    assert not any(st.accept(e) for e in evs)           # the same events again
    older = dict(evs[1])
    assert not st.accept(older)                          # an older seq after a newer one
    other = dict(evs[1], session="another01")
    assert st.accept(other)                              # cursors are per session


def test_rerendered_frame_is_not_double_counted_in_progress():
    st = State()
    a = JobStream("j1", session="attempt0001")
    feed(st, [a.start(1, 3)] + a.frame(1) + a.frame(2)[:1])   # crashed during frame 2
    b = JobStream("j1", session="attempt0002", pid=5000)
    feed(st, [b.start(1, 3)] + b.frame(1) + b.frame(2) + b.frame(3) + [b.end()])
    job = st.jobs["j1"]
    assert job.frames_done == 3 and job.frames_total == 3 and job.attempts == 2
    assert job.frames_rendered == 4 and job.pid == 5000
    assert st.totals.frames[job.labels] == 4                  # the renders really happened


def test_frame_lists_merge():
    st = State()
    s = JobStream("j1")
    feed(st, [s.start(1, 1)] + s.frame(1) + [s.start(5, 5)] + s.frame(5) + [s.start(9, 9)])
    job = st.jobs["j1"]
    assert job.expected == {1, 5, 9} and job.frames_done == 2 and job.attempts == 1


def test_frame_step():
    st, s = State(), JobStream("j1")
    feed(st, [s.start(1, 10, frame_step=3)])
    assert st.jobs["j1"].expected == {1, 4, 7, 10}


def test_unsaved_frames_do_not_progress():
    st, s = State(), JobStream("j1")
    effects = feed(st, [s.start(1, 2)] + s.frame(1, saved=False))
    assert st.jobs["j1"].frames_done == 0 and st.jobs["j1"].frames_rendered == 1
    assert st.totals.frames == {}                       # a frame cut short is not a rendered frame
    assert isinstance(effects[0], FrameDone)            # but it still gets its span (render.saved=false)


def test_events_without_job_start_still_label():
    st, s = State(), JobStream("j1")
    ev = s.frame(7)[-1]
    ev.update(scene="Shot", engine="BLENDER_EEVEE", device_type="GPU")
    feed(st, [ev])
    assert st.jobs["j1"].labels == ("Shot", "BLENDER_EEVEE", "GPU")


def test_cancel_stale_and_revival():
    st, s = State(), JobStream("j1")
    effects = feed(st, [s.start(1, 4)] + s.frame(1) + [s.end("cancel")])
    assert st.jobs["j1"].status == "cancelled" and not st.jobs["j1"].active
    assert not any(isinstance(e, JobDone) for e in effects)      # the root waits: a restart may follow
    feed(st, [s.start(1, 4)])
    assert st.jobs["j1"].status == "running" and st.jobs["j1"].ended_at is None
    assert st.apply({"type": "_stale", "job": "j1", "ts": s.t + 100}) is None
    assert st.jobs["j1"].status == "stale"
    eff = st.apply({"type": "_expire", "job": "j1", "ts": s.t + 500})
    assert isinstance(eff, JobDone) and eff.job.status == "stale" and "j1" not in st.jobs


def test_root_once_for_frame_lists():
    """`blender -f 1 -f 3` renders twice under one job id: one root span, at the last frame."""
    st, s = State(), JobStream("j1")
    effects = feed(st, [s.start(1, 3, frame_step=2)] + s.frame(1) + [s.end()])
    assert not any(isinstance(e, JobDone) for e in effects)
    effects = feed(st, [s.start(1, 3, frame_step=2)] + s.frame(3) + [s.end()])
    assert [type(e) for e in effects] == [FrameDone, JobDone]
    assert st.apply({"type": "_expire", "job": "j1", "ts": s.t + 500}) is None     # already emitted


def test_expire_and_visible():
    st = State()
    a, b = JobStream("done"), JobStream("live", session="other0001")
    feed(st, a.whole(frames=1) + [b.start(1, 2)])
    end = st.jobs["done"].ended_at
    assert {j.id for j in st.visible(end + 10, grace=30)} == {"done", "live"}
    assert {j.id for j in st.visible(end + 31, grace=30)} == {"live"}
    assert st.expired(end + 10, grace=30) == []
    assert st.expired(end + 31, grace=30) == ["done"]
    st.apply({"type": "_expire", "job": "done", "ts": end + 31})
    assert set(st.jobs) == {"live"}


def test_peaks_keep_the_highest():
    st, s = State(), JobStream("j1")
    feed(st, [s.start(1, 3)] + s.frame(1, max_rss_bytes=5e8) + s.frame(2, max_rss_bytes=2e8, peak_vram_bytes=1e9))
    assert st.jobs["j1"].peaks == {"blender": 150e6, "rss": 5e8, "vram": 1e9}
    mem = st.totals.memory
    assert mem[(("Scene", "CYCLES", "CPU"), "rss")].count == 2
    assert mem[(("Scene", "CYCLES", "CPU"), "vram")].count == 1


def test_cursor_memory_is_bounded(monkeypatch):
    import agent.state as S
    monkeypatch.setattr(S, "CURSOR_LIMIT", 3)
    st = State()
    for i in range(5):
        assert st.accept({"session": f"s{i}", "seq": 1})
    assert list(st.cursors) == ["s2", "s3", "s4"]


def test_the_farm_job_is_a_metric_to_group_by():
    from prometheus_client import CollectorRegistry, generate_latest

    from agent.metrics import StateCollector

    st = State()
    s = JobStream("task-7")
    for ev in [s.start(1, 1, farm_engine="opencue", farm_job="show-shot-lighting", farm_task="render/0001"),
               *s.frame(1)]:
        st.apply(ev) if st.accept(ev) else None
    reg = CollectorRegistry()
    reg.register(StateCollector(st, 300.0, lambda: s.t))
    text = generate_latest(reg).decode()
    assert ('renderwatch_job_farm_info{farm_engine="opencue",farm_job="show-shot-lighting",'
            'farm_task="render/0001",job="task-7"} 1.0') in text


def _suspect_metric(st: State, now: float) -> dict[str, float]:
    from prometheus_client import CollectorRegistry

    from agent.metrics import StateCollector

    reg = CollectorRegistry()
    reg.register(StateCollector(st, 300.0, lambda: now))
    return {r: reg.get_sample_value("renderwatch_frames_suspect_total", {"reason": r}) for r in
            ("blank", "transparent", "resolution", "channels", "too_fast", "cpu_fallback")}


def test_suspect_frames_are_counted_by_reason_and_survive_a_journal_round_trip():
    from agent.aggregates import FrameTotals
    from blender_hooks.events import make_event

    st = State()
    s = JobStream("j-suspect", device="CPU")
    evs = [s.start(1, 3, device_asked="GPU:CUDA"), *s.frame(1, device_type="CPU", device_asked="GPU:CUDA"),
           *s.frame(2)]
    healer = [make_event("frame_check", session="hea1e7", seq=1, job="j-suspect", host="h", pid=1, frame=2,
                         reason="blank", detail="every pixel is one value (0, 0, 0, 1)", rendered=1)]
    effects = feed(st, evs + healer)
    assert _suspect_metric(st, s.t) == {"blank": 1.0, "transparent": 0.0, "resolution": 0.0, "channels": 0.0,
                                        "too_fast": 0.0, "cpu_fallback": 1.0}
    check = effects[-1]
    assert check.frame == 2 and check.reason == "blank"    # its parent span: the tracer knows (test_agent_traces)
    assert FrameTotals.from_dict(st.totals.to_dict()).suspects == {"cpu_fallback": 1, "blank": 1}


def test_a_frame_check_with_an_unknown_reason_is_rejected():
    from blender_hooks.events import EventError, make_event, validate

    ev = make_event("frame_check", session="hea1e7", seq=1, job="j", host="h", pid=1, frame=2, reason="ugly")
    with pytest.raises(EventError) as e:
        validate(ev)
    assert e.value.reason == "out_of_range" and "blank" in e.value.detail


def _verified(frame: int, seq: int = 1, job: str = "j-v") -> dict:
    from blender_hooks.events import make_event

    return make_event("frame_verified", session="hea1e7ab", seq=seq, job=job, host="h", pid=1, frame=frame,
                      output_path=f"/shots/frames/f_{frame:04d}.png", attempt=1)


@pytest.mark.parametrize("order", ["healer_first", "hooks_first", "hooks_never"])
def test_a_frame_the_healer_verified_is_counted_once_whoever_reports_it_first(order):
    """Blender killed between writing frame 2 and its render_write handler: the healer says
    frame_verified. The hooks' frame_end may come later (another spool session), earlier, or never."""
    st, s = State(), JobStream("j-v")
    head = [s.start(1, 3), *s.frame(1)]
    frame2 = s.frame(2, seconds=1.5, peak_memory_blender_bytes=400e6)
    frame2_start, frame2_end = frame2[:-1], frame2[-1:]
    healer = [_verified(2)]
    tail = s.frame(3)
    body = {"healer_first": frame2_start + healer + frame2_end, "hooks_first": frame2 + healer,
            "hooks_never": frame2_start + healer}[order]
    effects = feed(st, head + body + tail)
    job = st.jobs["j-v"]
    assert (job.frames_done, job.frames_rendered) == (3, 3)
    assert st.totals.frames[("Scene", "CYCLES", "CPU")] == 3
    assert sorted(e.frame for e in effects if isinstance(e, FrameDone)) == [1, 2, 3]   # one frame span each
    histogram = st.totals.seconds[("Scene", "CYCLES", "CPU")]
    assert histogram.count == (2 if order == "hooks_never" else 3)      # the time is known when the hooks said it
    if order != "hooks_never":
        assert histogram.sum == pytest.approx(0.5 + 1.5 + 0.5)
        assert job.peaks == {"blender": 400e6, "rss": 300e6}      # frame 2's memory is kept either way



def test_frame_totals_keep_a_bounded_number_of_label_sets_and_count_the_rest_as_other():
    """A local account inventing scene names through the open ingest cannot grow /metrics without bound."""
    from agent.aggregates import OTHER, FrameTotals

    st = State()
    st.totals.max_label_sets = 5
    for n in range(8):
        s = JobStream(f"j{n}", session=f"sess{n:06d}", scene=f"invented-{n}")
        feed(st, s.whole(frames=2))
    assert len(st.totals.frames) == 6                      # 5 real label sets + OTHER
    assert st.totals.frames[OTHER] == 6 and st.totals.folded == 6
    assert st.totals.seconds[OTHER].count == 6
    assert st.totals.frames[("invented-0", "CYCLES", "CPU")] == 2
    s = JobStream("j0b", session="sess0b0000", scene="invented-0")   # a known scene keeps its own series
    feed(st, s.whole(frames=1))
    assert st.totals.frames[("invented-0", "CYCLES", "CPU")] == 3 and st.totals.folded == 6
    assert FrameTotals.from_dict(st.totals.to_dict()).folded == 6


def test_the_healers_verdict_is_how_the_job_ends_whatever_its_blenders_said_and_when_it_arrives():
    """A denoiser failure: Blender cancels its own render (the hooks' job_end "cancel"), the healer
    gives up with the type. The healer's events come on a spool session of their own, so its verdict
    may arrive before or after the last Blender's events: either way the job ends `failed` with its
    type, and only a later job_start (a person's restart) reopens it."""
    for verdict_first in (False, True):
        st = State()
        blender, healer = JobStream("j1", session="b1000001"), JobStream("j1", session="ae000001", pid=7)
        feed(st, [blender.start(1, 3), *blender.frame(1)])
        own_end = blender.end("cancel")                  # the render the denoiser stopped
        healer.t = blender.t + 1.0                       # the healer decides after its Blender exited
        final = healer.ev("job_end", status="failed", final=True, error_type="denoiser")
        feed(st, [final, own_end] if verdict_first else [own_end, final])
        job = st.jobs["j1"]
        assert (job.status, job.error_type, job.ended_at) == ("failed", "denoiser", final["ts"]), verdict_first
        assert job.to_dict()["error_type"] == "denoiser"

        late = JobStream("j1", session="b1000002", t=final["ts"] + 5)   # a person restarts the job
        feed(st, [late.start(2, 3)])
        assert (job.status, job.error_type, job.ended_at) == ("running", None, None)
        feed(st, [*late.frame(2), *late.frame(3), late.end("complete")])
        assert job.status == "complete"


def test_a_healer_cancel_ends_a_job_whose_blender_was_killed_without_a_word():
    st = State()
    blender, healer = JobStream("j1", session="b1000001"), JobStream("j1", session="ae000001", pid=7)
    feed(st, [blender.start(1, 4), *blender.frame(1), blender.ev("frame_start", frame=2)])
    healer.t = blender.t + 1.0
    feed(st, [healer.ev("job_end", status="cancel", final=True)])
    job = st.jobs["j1"]
    assert (job.status, job.error_type, job.current_frame, job.active) == ("cancelled", None, None, False)
    st.apply({"type": "_stale", "job": "j1", "ts": healer.t + 900})
    assert job.status == "cancelled"
