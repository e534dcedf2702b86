"""Atomic private file writes: a reader never sees half a file, and only the owner can read it.

Usage::

    write_atomic(path, data)              # temp file beside it (0600), fsync, rename over the old one
    write_atomic(path, data, sync=False)  # survives a killed process (page cache), not a power loss
    sync_dir(folder)                      # make a rename in it durable (power loss)
    remove_stale_temps(folder)            # temp files a killed writer left (their pid is in the name)
    read_small_file(path, limit=1 << 20)  # a regular file's bytes, bounded; a FIFO or device never blocks
    load_toml(path, "--config")           # a config file as a dict, or ConfigError saying what is wrong
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from blender_hooks.settings import ConfigError

MAX_CONFIG_BYTES = 1 << 20      # a renderwatch TOML file is a few KiB; 200 MB read whole cost 636 MB of RSS


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


def read_small_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Opened without blocking (a FIFO in its place
    would hang the reader forever) and checked before it is read: a directory, a FIFO, a device or a
    file over the limit raises OSError (or ValueError for the size) with a message saying which."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "is a directory, not a file", str(path))
        if not stat.S_ISREG(st.st_mode):
            raise OSError(22, "not a regular file (a FIFO, socket or device)", str(path))
        if st.st_size > limit:
            raise ValueError(f"{path}: {st.st_size} bytes, more than the {limit} bytes allowed")
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise ValueError(f"{path}: more than the {limit} bytes allowed")
        return data
    finally:
        os.close(fd)


def load_toml(path: str | os.PathLike[str], source: str) -> dict:
    """A TOML config file as a dict; ConfigError naming the file, `source` (the flag or variable that
    named it) and what to fix for a missing, unreadable, oversized, non-UTF-8, invalid or too deeply
    nested file. tomllib is imported here: only a command given a config file pays for it."""
    import tomllib

    where = f"{source} {os.fsdecode(path)!r}"
    try:
        data = read_small_file(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"{where}: the file does not exist") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot read it: {e.strerror or e}") from None
    except ValueError as e:
        raise ConfigError(f"{where}: too large ({e}); a renderwatch config is a few KiB of TOML") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: byte {e.start} is not UTF-8; a TOML file is UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a renderwatch config") from None
