"""agent.spool: catch-up from spool segments written in the contract's on-disk format."""

from __future__ import annotations

from agent.ingest import Ingestor
from agent.journal import Journal
from agent.metrics import IngestStats
from agent.spool import SpoolScanner
from agent.state import State
from blender_hooks.spoolfile import advance_ack
from tests.support.agent import JobStream, SessionLock, ndjson, read_ack, write_segment


def make(tmp_path):
    st, stats = State(), IngestStats()
    ing = Ingestor(st, Journal(tmp_path / "agent"), stats)
    return st, stats, ing, SpoolScanner(tmp_path / "spool", ing)


def test_segments_of_a_dead_writer_are_ingested_acked_and_deleted(tmp_path):
    st, stats, ing, scanner = make(tmp_path)
    spool = tmp_path / "spool"
    s = JobStream("j1", session="deadbeef01")
    evs = s.whole(frames=6)
    write_segment(spool, s.session, 1, evs[:10])
    write_segment(spool, s.session, 2, evs[10:])
    (spool / f"{s.session}.lock").touch()          # left behind, nobody holds it
    assert scanner.scan_once() == len(evs)
    assert st.jobs["j1"].frames_done == 6 and st.jobs["j1"].status == "complete"
    assert list(spool.iterdir()) == []              # segments, ack and lock all cleaned up
    assert scanner.scan_once() == 0


def test_live_writer_keeps_its_segment_and_partial_lines_wait(tmp_path):
    st, stats, ing, scanner = make(tmp_path)
    spool = tmp_path / "spool"
    s = JobStream("j1", session="alive00001")
    lock = SessionLock(spool, s.session)
    first = [s.start(1, 3)] + s.frame(1)
    path = write_segment(spool, s.session, 1, first)
    nxt = s.frame(2)
    line = ndjson(nxt[:1])
    with open(path, "ab") as f:
        f.write(line[:10])                          # the writer is mid-line
    assert scanner.scan_once() == len(first)
    assert read_ack(spool, s.session) == (1, path.stat().st_size - 10)
    assert path.exists() and stats.spool_segments == 1 and stats.spool_pending_bytes == 10
    with open(path, "ab") as f:
        f.write(line[10:] + ndjson(nxt[1:]))
    assert scanner.scan_once() == len(nxt)
    assert st.jobs["j1"].frames_done == 2 and path.exists()
    lock.release()                                  # Blender exits
    scanner.scan_once()
    assert not path.exists() and not (spool / f"{s.session}.ack").exists()


def test_a_newer_segment_finishes_the_older_one(tmp_path):
    st, stats, ing, scanner = make(tmp_path)
    spool = tmp_path / "spool"
    s = JobStream("j1", session="rotating01")
    lock = SessionLock(spool, s.session)
    evs = s.whole(frames=2)
    p1 = write_segment(spool, s.session, 1, evs[:5])
    p2 = write_segment(spool, s.session, 2, evs[5:])
    scanner.scan_once()
    assert not p1.exists() and p2.exists()
    assert read_ack(spool, s.session) == (2, p2.stat().st_size)
    lock.release()


def test_spool_and_http_together_never_double_count(tmp_path):
    """The hooks' sender posts what the scanner also reads: every event is applied once."""
    st, stats, ing, scanner = make(tmp_path)
    spool = tmp_path / "spool"
    s = JobStream("j1", session="both000001")
    evs = s.whole(frames=5)
    write_segment(spool, s.session, 1, evs)
    ing.ingest_lines(ndjson(evs[:12]).split(b"\n"))     # the sender got the first part over HTTP
    scanner.scan_once()
    ing.ingest_lines(ndjson(evs).split(b"\n"))          # and retries everything
    assert stats.ingested == len(evs) and stats.duplicate == 12 + len(evs)
    assert st.totals.frames[("Scene", "CYCLES", "CPU")] == 5
    assert st.jobs["j1"].frames_done == 5


def test_ack_only_moves_forward(tmp_path):
    st, stats, ing, scanner = make(tmp_path)
    spool = tmp_path / "spool"
    s = JobStream("j1", session="acked00001")
    lock = SessionLock(spool, s.session)
    evs = s.whole(frames=3)
    path = write_segment(spool, s.session, 1, evs)
    size = path.stat().st_size
    advance_ack(spool, s.session, 1, size)            # the hooks' sender delivered it all already
    assert scanner.scan_once() == 0 and stats.ingested == 0
    advance_ack(spool, s.session, 1, 10)              # an older ack never replaces a newer one
    assert read_ack(spool, s.session) == (1, size)
    lock.release()


def test_torn_tail_of_a_dead_writer_and_bad_lines_are_counted(tmp_path):
    st, stats, ing, scanner = make(tmp_path)
    spool = tmp_path / "spool"
    s = JobStream("j1", session="torn000001")
    path = write_segment(spool, s.session, 1, [s.start(1, 2)])
    with open(path, "ab") as f:
        f.write(b"\xff\xfe not json\n" + b'{"v":1,"type":"frame_')
    scanner.scan_once()
    assert stats.ingested == 1
    assert stats.rejected["invalid_utf8"] == 1 and stats.rejected["malformed_json"] == 1
    assert not path.exists()


def test_unreadable_names_are_ignored(tmp_path):
    st, stats, ing, scanner = make(tmp_path)
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "notes.txt").write_text("hello")
    (spool / "bad name.000001.ndjson").write_text("{}\n")
    (spool / "evicted_events").write_text("3\n")
    assert scanner.scan_once() == 0 and stats.spool_segments == 0
    assert (spool / "notes.txt").exists()
    SpoolScanner(tmp_path / "missing", ing).scan_once()    # no spool directory at all: fine


# -- the ack is validated: a bad one never stops the catch-up, never deletes unread events ----------------

def _two_dead_sessions(spool):
    a, b = JobStream("ja", session="sessiona01"), JobStream("jb", session="sessionb01")
    ea, eb = a.whole(frames=2), b.whole(frames=3)
    write_segment(spool, a.session, 1, ea)
    write_segment(spool, b.session, 1, eb)
    return a, b, ea, eb


def test_a_malformed_ack_is_dropped_and_no_session_is_left_behind(tmp_path, caplog):
    """`1 -50` in one session's ack made every scan abort (seek to a negative offset), so no session's
    events were ever caught up: the ack is ignored and removed (with a warning), that session is read from
    its start, the other one is read too."""
    st, stats, ing, scanner = make(tmp_path)
    spool = tmp_path / "spool"
    a, b, ea, eb = _two_dead_sessions(spool)
    (spool / f"{a.session}.ack").write_text("1 -50\n")
    assert scanner.scan_once() == len(ea) + len(eb)
    assert st.jobs["ja"].frames_done == 2 and st.jobs["jb"].frames_done == 3
    assert list(spool.iterdir()) == []
    assert any("ignored and removed the ack" in r.message for r in caplog.records)


def test_an_ack_past_every_segment_deletes_nothing_unread(tmp_path):
    """`999999 0` said every segment was delivered: the scanner deleted them all, unread and silently."""
    st, stats, ing, scanner = make(tmp_path)
    spool = tmp_path / "spool"
    a, b, ea, eb = _two_dead_sessions(spool)
    (spool / f"{a.session}.ack").write_text("999999 0\n")
    (spool / f"{b.session}.ack").write_text("1 99999999\n")       # past the end of segment 1
    assert scanner.scan_once() == len(ea) + len(eb)
    assert st.jobs["ja"].frames_done == 2 and st.jobs["jb"].frames_done == 3


def test_a_folder_named_like_a_segment_does_not_stop_the_scan(tmp_path):
    st, stats, ing, scanner = make(tmp_path)
    spool = tmp_path / "spool"
    a, b, ea, eb = _two_dead_sessions(spool)
    (spool / "sessionc01.000001.ndjson").mkdir()
    (spool / f"{a.session}.000002.ndjson").mkdir()                 # beside a real segment of a session
    assert scanner.scan_once() == len(ea) + len(eb)
    assert st.jobs["ja"].frames_done == 2 and st.jobs["jb"].frames_done == 3


def test_a_session_whose_ack_cannot_be_written_does_not_stop_the_others(tmp_path):
    """The ack a folder (the rename over it fails): that session waits, the other is caught up."""
    st, stats, ing, scanner = make(tmp_path)
    spool = tmp_path / "spool"
    a, b, ea, eb = _two_dead_sessions(spool)
    (spool / f"{a.session}.ack").mkdir()
    (spool / f"{a.session}.ack" / "keep").touch()                   # not empty: cannot be removed either
    scanner.scan_once()
    assert st.jobs["jb"].frames_done == 3 and scanner.session_errors >= 1
