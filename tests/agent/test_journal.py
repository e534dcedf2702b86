"""agent.journal: replay rebuilds state, cursors and totals; compaction keeps them; a torn line is skipped."""

from __future__ import annotations

import json
import os
import stat

from agent.journal import ExportMark, Journal
from agent.state import State
from blender_hooks.events import encode
from tests.support.agent import JobStream


def journal_events(j: Journal, st: State, events: list[dict]) -> list:
    """What the ingest path does: accept, journal the batch, apply."""
    batch = [e for e in events if st.accept(e)]
    pos = j.append([encode(e).rstrip(b"\n") for e in batch])
    effects = []
    for e in batch:
        eff = st.apply(e)
        if eff is not None:
            effects.append((eff, pos))
        pos += 1
    return effects


def test_replay_rebuilds_everything(tmp_path):
    j, st = Journal(tmp_path), State()
    a = JobStream("j1")
    journal_events(j, st, [a.start(1, 5)] + a.frame(1) + a.frame(2))
    j.close()
    assert stat.S_IMODE(os.stat(j.path).st_mode) == 0o600

    st2, seen = State(), []
    n = Journal(tmp_path).replay(st2, lambda eff, pos: seen.append((type(eff).__name__, pos)))
    assert n == 1 + 4 + 4
    assert st2.jobs["j1"].frames_done == 2 and st2.cursors == st.cursors
    assert st2.totals.to_dict() == st.totals.to_dict()
    assert seen == [("FrameDone", 5), ("FrameDone", 9)]
    # The events already seen stay duplicates after the restart; the next ones are accepted.
    more = a.frame(3)
    assert not st2.accept(dict(more[0], seq=3))
    assert st2.accept(more[0])


def test_positions_continue_after_restart(tmp_path):
    j, st = Journal(tmp_path), State()
    s = JobStream("j1")
    journal_events(j, st, [s.start()] + s.frame(1))
    j.close()
    j2 = Journal(tmp_path)
    j2.replay(State())
    assert j2.append([b'{"x":1}']) == 6


def test_torn_last_line_is_skipped(tmp_path):
    j, st = Journal(tmp_path), State()
    s = JobStream("j1")
    journal_events(j, st, [s.start()] + s.frame(1))
    j.close()
    with open(j.path, "ab") as f:
        f.write(b'6\t{"v":1,"type":"frame_st')     # SIGKILL in the middle of a write
    st2 = State()
    assert Journal(tmp_path).replay(st2) == 5
    assert st2.jobs["j1"].frames_done == 1


def test_compaction_keeps_totals_cursors_and_live_jobs(tmp_path):
    j, st = Journal(tmp_path), State()
    old, live = JobStream("old", session="sessold01"), JobStream("live", session="sesslive1")
    journal_events(j, st, old.whole(frames=3))
    journal_events(j, st, [live.start(1, 9)] + live.frame(1))
    before_totals = st.totals.to_dict()
    end = st.jobs["old"].ended_at
    assert st.expired(end + 400, grace=300) == ["old"]
    expire = {"type": "_expire", "job": "old", "ts": end + 400}
    expire_pos = j.append([json.dumps(expire).encode()])
    st.apply(expire)

    # Spans not exported yet (the `_expire` record's included): nothing of the job may be dropped.
    assert j.compact(st, exported=0) == 0
    assert j.compact(st, exported=expire_pos - 1) == 0
    dropped = j.compact(st, exported=expire_pos)
    assert dropped == 1 + 3 * 4 + 1 + 1
    assert j.path.read_bytes().startswith(b"H\t")
    # More events after the compaction land in the same file.
    journal_events(j, st, live.frame(2))
    j.close()

    st2 = State()
    Journal(tmp_path).replay(st2)
    assert set(st2.jobs) == {"live"} and st2.jobs["live"].frames_done == 2
    assert st2.cursors == st.cursors
    assert st2.totals.frames == st.totals.frames
    assert st2.totals.frames[("Scene", "CYCLES", "CPU")] == 5
    assert before_totals["frames"][0][1] == 4
    # The expired job's events are still duplicates (its cursor survived the compaction).
    assert not st2.accept(old.whole(frames=1)[0] | {"seq": 2})


def test_export_mark_persists(tmp_path):
    m = ExportMark(tmp_path)
    assert m.value == 0
    m.advance(7)
    m.advance(3)
    assert ExportMark(tmp_path).value == 7
    assert stat.S_IMODE(os.stat(m.path).st_mode) == 0o600


def test_unwritable_journal_keeps_serving(tmp_path, caplog):
    j = Journal(tmp_path)
    j._open()
    os.close(j._fd)          # simulate a broken descriptor (disk gone)
    first = j.append([b'{"a":1}'])
    second = j.append([b'{"a":2}'])
    assert (first, second) == (1, 2) and j.errors == 2
    assert sum("cannot write" in r.message for r in caplog.records) == 1
    j._fd = None


def test_an_exporter_down_for_good_does_not_grow_the_journal_without_bound(tmp_path):
    """Ended jobs whose spans never get out (a collector gone for days) wait in the journal, but only
    up to its size bound: then they are compacted away like exported ones, their frames kept in the
    totals, the live job's records kept."""
    j, st = Journal(tmp_path), State()
    live = JobStream("live", session="sesslive1")
    journal_events(j, st, [live.start(1, 9)] + live.frame(1))
    for n in range(30):
        s = JobStream(f"old-{n}", session=f"sessold{n:03d}")
        journal_events(j, st, s.whole(frames=3))
        end = st.jobs[s.job].ended_at
        expire = {"type": "_expire", "job": s.job, "ts": end + 400}
        j.append([json.dumps(expire).encode()])
        st.apply(expire)
    size = j.path.stat().st_size
    assert j.compact(st, exported=0, max_bytes=size + 1) == 0 and j.waiting == 30    # under the bound: wait
    assert j.compact(st, exported=0, max_bytes=size // 2) > 0
    assert j.spans_given_up == 30 and j.waiting == 0
    assert j.path.stat().st_size < size // 10
    j.close()
    st2 = State()
    Journal(tmp_path).replay(st2)
    assert set(st2.jobs) == {"live"} and st2.totals.frames[("Scene", "CYCLES", "CPU")] == 91
