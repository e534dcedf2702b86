"""The one free-port helper of the tests and benchmarks (tests/support/rqd_harness.py keeps its own: it
runs alone under RQD's Python)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
