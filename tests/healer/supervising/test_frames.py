"""healer.frames: --frames specs and the Blender arguments that render a frame set."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healer.supervising.frames import FrameSpecError, format_frames, parse_frames, render_args


@pytest.mark.parametrize("spec, frames", [
    ("7", [7]),
    ("1-4", [1, 2, 3, 4]),
    ("1,5,9-12", [1, 5, 9, 10, 11, 12]),
    ("1-20x5", [1, 6, 11, 16]),
    ("3..5", [3, 4, 5]),
    (" 4 , 2-3 ,2", [2, 3, 4]),
    ("0", [0]),
])
def test_parse_frames(spec, frames):
    assert parse_frames(spec) == frames


@pytest.mark.parametrize("spec, words", [
    ("", "empty"),
    ("5-1", "ends before it starts"),
    ("1-x", "is not a frame"),
    ("1-10x0", "step"),
    ("-3", "is not a frame"),
    ("1,,2", "is not a frame"),
    ("1-99999999", "beyond"),
])
def test_parse_frames_errors_name_the_part(spec, words):
    with pytest.raises(FrameSpecError, match=words):
        parse_frames(spec)


def test_render_args_runs_and_gaps_in_ascending_order():
    # runs become -s/-e/-j/-a; isolated frames are gathered into one -f list between runs
    assert render_args([1, 2, 3, 5, 9, 10, 11, 14]) == [
        "-s", "1", "-e", "3", "-j", "1", "-a", "-f", "5", "-s", "9", "-e", "11", "-j", "1", "-a", "-f", "14"]
    assert render_args([4]) == ["-f", "4"]
    assert render_args([]) == []
    assert render_args([1, 3, 5, 7]) == ["-s", "1", "-e", "7", "-j", "2", "-a"]


def _expand(args: list[str]) -> list[int]:
    """What Blender renders for these arguments (its left-to-right semantics)."""
    out: list[int] = []
    opts = {"-s": 0, "-e": 0, "-j": 1}
    i = 0
    while i < len(args):
        a = args[i]
        if a in opts:
            opts[a] = int(args[i + 1])
            i += 2
        elif a == "-a":
            out.extend(range(opts["-s"], opts["-e"] + 1, opts["-j"]))
            i += 1
        else:
            assert a == "-f"
            out.extend(int(x) for x in args[i + 1].split(","))
            i += 2
    return out


@given(st.sets(st.integers(min_value=0, max_value=400), max_size=60))
def test_render_args_render_each_frame_once_in_order(frames):
    assert _expand(render_args(frames)) == sorted(frames)


@given(st.sets(st.integers(min_value=0, max_value=300), min_size=1, max_size=40))
def test_format_frames_round_trips(frames):
    assert parse_frames(format_frames(frames)) == sorted(frames)
