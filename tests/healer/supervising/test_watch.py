"""healer.supervising.watch: one Blender's output read the same way for the supervisor's attempt and
for supervise-only: lines passed through, classified, the exit classified with the crash file it named.
Real Blender 3.4 output from ../shared/fixtures/blender-logs."""

from __future__ import annotations

from healer.diagnosis.classify import LogScanner
from healer.supervising.watch import OutputWatch


def _watch(lines):
    echoed, said = [], []
    out = OutputWatch(LogScanner(), echo=echoed.append, say=said.append)
    kinds = [out.feed(line).kind for line in lines]
    return out, echoed, said, kinds


def test_blenders_lines_pass_through_and_its_crash_is_classified_with_its_crash_file(blender_logs, tmp_path):
    lines = (blender_logs / "segfault_3.4.log").read_text().splitlines()
    crash = tmp_path / "monkey.crash.txt"
    crash.write_text((blender_logs / "segfault_3.4.crash.txt").read_text())
    out, echoed, said, kinds = _watch(lines)
    assert echoed == lines and said == []           # every line is Blender's: passed through unchanged
    assert "saved" in kinds
    err = out.classify(-11, str(crash))
    assert err.type == "segfault" and err.exit_signal == 11 and err.crash_file == str(crash)
    assert err.python_frames[0] == ("/mnt/pipeline/hooks/seg.py", 3, "pre")     # read from the crash file


def test_a_crash_file_named_in_the_output_is_read_when_none_is_given(blender_logs):
    out, *_ = _watch((blender_logs / "segfault_3.4.log").read_text().splitlines())
    err = out.classify(-11)
    assert err.crash_file == "/tmp/monkey.crash.txt"       # the one Blender printed (gone here: not read)


def test_a_clean_exit_is_ok(blender_logs):
    out, *_ = _watch((blender_logs / "ok_3.4.log").read_text().splitlines())
    assert out.classify(0).type == "ok"
