"""Atomic private file writes: a reader never sees half a file, and only the owner can read it.

Usage::

    write_atomic(path, data)              # temp file beside it (0600), fsync, rename over the old one
    write_atomic(path, data, sync=False)  # survives a killed process (page cache), not a power loss
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], data: bytes, *, sync: bool = True) -> None:
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)   # created 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
