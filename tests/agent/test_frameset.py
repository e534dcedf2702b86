"""agent.frameset: the bitmap set of frames behaves as a set of ints, far-off frames included."""

from __future__ import annotations

import random

from agent.frameset import MAX_BITS, FrameSet


def test_frameset_matches_a_python_set():
    rng = random.Random(24)
    for _ in range(40):
        fs, ref = FrameSet(), set()
        for _ in range(150):
            f = rng.choice([rng.randint(-50, 50), rng.randint(-2**40, 2**40), rng.randint(0, 20_000)])
            op = rng.random()
            if op < 0.6:
                assert fs.add(f) == (f not in ref)
                ref.add(f)
            elif op < 0.8:
                assert fs.discard(f) == (f in ref)
                ref.discard(f)
            else:
                r = range(rng.randint(-20, 20), rng.randint(-20, 60), rng.randint(1, 3))
                assert sorted(fs.update(r)) == sorted(set(r) - ref)
                ref.update(r)
            assert len(fs) == len(ref) and fs == ref
        assert list(fs) == sorted(ref) and all(x in fs for x in ref)


def test_a_long_job_costs_a_bit_per_frame_and_a_far_frame_does_not_allocate():
    fs = FrameSet(range(1, 10_001))
    assert len(fs) == 10_000 and fs.nbytes <= 1_260
    fs.add(2**62)                               # any integer an event names
    assert 2**62 in fs and fs.nbytes < MAX_BITS // 8 and len(fs) == 10_001
