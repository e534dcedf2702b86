"""Seeded mutations of real input, shared by the property tests (tests/fuzz/test_robustness.py) and the
robustness benchmark (bench/bench_robustness.py), as the judge of the answers is (fuzz/oracle.py).

Usage::

    rnd = random.Random(seed)
    broken = mutate_bytes(real_log, rnd, rnd.randrange(1, 40))
"""

from __future__ import annotations

import random

# Tokens the parsers key on: inserted whole, they reach deeper than random bytes do.
TOKENS = (b"\n", b"\r\n", b"\x00", b"Fra:", b"Traceback (most recent call last):\n",
          b'  File "x.py", line 3, in f\n', b"Saved: '", b"Writing: /tmp/x.crash.txt\n",
          b"Error: ", b"00:00.327  render           | ", b"# Python backtrace\n")


def mutate_bytes(data: bytes, rnd: random.Random, n: int) -> bytes:
    """`n` edits: flip a byte, insert a few random bytes, delete a run, duplicate a slice, insert a token:
    what torn writes, odd builds and other platforms do to a log or a crash file."""
    buf = bytearray(data)
    for _ in range(n):
        op, i = rnd.randrange(5), rnd.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(i, len(buf) - 1)] = rnd.randrange(256)
        elif op == 1:
            buf[i:i] = rnd.randbytes(rnd.randrange(1, 8))
        elif op == 2:
            del buf[i:i + rnd.randrange(1, 64)]
        elif op == 3:
            j = rnd.randrange(len(buf) + 1)
            buf[i:i] = buf[min(i, j):max(i, j)][:256]
        else:
            buf[i:i] = rnd.choice(TOKENS)
    return bytes(buf)
