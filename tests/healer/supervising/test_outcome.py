"""healer.supervising.outcome: `settle`, the one decision of how an attempt ended, from values.

What the classifier said, what the frames on disk say and what the user asked go in; the error the
policy reads, the frames the ledger records and the incident to emit come out.
"""

from __future__ import annotations

import pytest

from healer.diagnosis import errors
from healer.diagnosis.errors import Finding
from healer.supervising.outcome import AttemptResult, FrameOnDisk, settle


def _said(type_id: str, *, fatal: bool = True, summary: str = "it happened", frame: int | None = None,
          **kw) -> errors.RenderError:
    return errors.error_class(type_id)(summary=summary, fatal=fatal, frame=frame, **kw)


# (case, what the attempt returned, error type, summary (None: any), frame, incident)
CASES = [
    ("a clean exit is ok", AttemptResult(_said("ok", fatal=False, summary=""), exit_code=0),
     "ok", "", None, None),
    ("a crash stays the classifier's, at the frame in flight",
     AttemptResult(_said("segfault"), exit_signal=11, frame_in_flight=3), "segfault", "it happened", 3,
     "render.crashed"),
    ("the classifier's frame is kept over the frame in flight",
     AttemptResult(_said("segfault", frame=2), exit_signal=11, frame_in_flight=3), "segfault", None, 2,
     "render.crashed"),
    ("a stall says what the probe saw first",
     AttemptResult(_said("stall", summary="no output"), exit_signal=15, stalled="no progress for 60 s at frame 4",
                   frame_in_flight=4), "stall", "no progress for 60 s at frame 4; no output", 4, "render.stalled"),
    ("a stall with no summary of its own is the probe's words",
     AttemptResult(_said("stall", summary=""), exit_signal=15, stalled="kicked"), "stall", "kicked", None,
     "render.stalled"),
    ("the probe's words are not put on another type",
     AttemptResult(_said("host_oom", summary="oom"), exit_signal=9, stalled="no progress"), "host_oom", "oom",
     None, "render.crashed"),
    ("a cancel wins over the classifier and is no incident",
     AttemptResult(_said("segfault"), exit_signal=15, cancelled=True, frame_in_flight=2), "interrupted",
     "cancelled", 2, None),
    ("a full disk turns a clean exit into an output error",
     AttemptResult(_said("ok", fatal=False, summary=""), exit_code=0, disk_full="/out", frame_in_flight=5),
     "output_error", None, 5, "render.crashed"),
    ("a full disk turns an unexplained exit into an output error",
     AttemptResult(_said("unknown"), exit_code=1, disk_full="/out"), "output_error", None, None, "render.crashed"),
    ("a full disk does not hide a crash",
     AttemptResult(_said("segfault"), exit_signal=11, disk_full="/out"), "segfault", "it happened", None,
     "render.crashed"),
    ("a full disk during a cancel is the cancel",
     AttemptResult(_said("ok", fatal=False, summary=""), exit_code=0, disk_full="/out", cancelled=True),
     "interrupted", "cancelled", None, None),
    ("a non-fatal finding on a clean exit is no incident",
     AttemptResult(_said("python_error", fatal=False), exit_code=0), "python_error", "it happened", None, None),
]


@pytest.mark.parametrize("result, etype, summary, frame, incident", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_settle_decides_the_error(result, etype, summary, frame, incident):
    out = settle(result)
    assert out.error.type == etype
    if summary is not None:
        assert out.error.summary == summary
    assert out.error.frame == frame
    assert out.incident == incident


def test_a_full_disk_keeps_the_exit_status_and_the_evidence():
    evidence = (Finding("output_error", 7, "Error: Write error"),)
    out = settle(AttemptResult(_said("unknown", findings=evidence), exit_code=1, disk_full="/out"))
    assert out.error.summary.startswith("no space left on /out") and out.error.exit_code == 1
    assert out.error.findings == evidence


# (case, frames saved from their lines, the checks on disk, frames rendered)
FRAMES = [
    ("saved frames stay", (1, 2), (), (1, 2)),
    ("a frame whose line was missed is added", (1,), (FrameOnDisk(1, True), FrameOnDisk(2, True)), (1, 2)),
    ("a partial file removed is taken out", (1, 2), (FrameOnDisk(2, False, removed=True),), (1,)),
    ("a missing file changes nothing", (1,), (FrameOnDisk(2, False),), (1,)),
    ("a frame checked whole again is not added twice", (1, 2), (FrameOnDisk(2, True),), (1, 2)),
]


@pytest.mark.parametrize("saved, on_disk, rendered", [c[1:] for c in FRAMES], ids=[c[0] for c in FRAMES])
def test_settle_decides_the_frames_rendered(saved, on_disk, rendered):
    out = settle(AttemptResult(_said("segfault"), exit_signal=11, frames_saved=saved, on_disk=on_disk))
    assert out.frames_rendered == rendered


def test_the_frame_in_flight_is_the_one_not_verified_after_the_attempt():
    died = AttemptResult(_said("segfault"), exit_signal=11, frame_in_flight=3, frame_age_s=1.25,
                         verified_after=frozenset({1, 2}))
    out = settle(died)
    assert (out.frame_in_flight, out.frame_age_s) == (3, 1.25)
    # it died after the frame was on disk (verified, e.g. its line missed): no frame was in flight
    whole = settle(AttemptResult(_said("segfault"), exit_signal=11, frame_in_flight=3, frame_age_s=1.25,
                                 verified_after=frozenset({1, 2, 3})))
    assert (whole.frame_in_flight, whole.frame_age_s) == (None, None)


def test_settle_reads_fields_not_words():
    """A reason that mentions `removed` does not remove a frame; only the field does."""
    out = settle(AttemptResult(_said("segfault", summary="file removed"), exit_signal=11, frames_saved=(1,),
                               on_disk=(FrameOnDisk(1, False),)))
    assert out.frames_rendered == (1,)
