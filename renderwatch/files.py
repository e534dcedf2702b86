"""Atomic private file writes: a reader never sees half a file, and only the owner can read it.

Usage::

    write_atomic(path, data)              # temp file beside it (0600), fsync, rename over the old one
    write_atomic(path, data, sync=False)  # survives a killed process (page cache), not a power loss
    sync_dir(folder)                      # make a rename in it durable (power loss)
    remove_stale_temps(folder)            # temp files a killed writer left (their pid is in the name)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], data: bytes, *, sync: bool = True) -> None:
    p = Path(path)
    # created 0600; the writer's pid in the name lets remove_stale_temps() tell a killed writer's leftovers
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.{os.getpid()}.", suffix=".tmp", dir=p.parent)
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


def remove_stale_temps(folder: str | os.PathLike[str], *, prefix: str = ".", suffix: str = ".tmp") -> int:
    """Remove the temp files of writers that no longer run (`<prefix>...<pid>.<random><suffix>`, the
    pid being the last dotted or dashed field before the random part); returns how many went."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        if not (e.name.startswith(prefix) and e.name.endswith(suffix)):
            continue
        stem = e.name[len(prefix):len(e.name) - len(suffix)]
        fields = stem.replace("-", ".").split(".")
        try:
            pid = int(fields[-2])
        except (IndexError, ValueError):
            continue
        if pid > 0 and _pid_alive(pid):
            continue
        try:
            os.unlink(e.path)
            removed += 1
        except OSError:
            pass
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sync_dir(folder: str | os.PathLike[str]) -> None:
    """fsync a directory, so that a rename into it survives a power loss (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
