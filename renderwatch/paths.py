"""Where renderwatch keeps its state on a host, and the environment variables that move it.

Every environment variable renderwatch reads is a named constant in the module that reads it;
these are the ones shared by the hooks, the agent and the healer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from blender_hooks.settings import ENV_AGENT, ENV_HOME  # noqa: F401 (names read from here)
from blender_hooks.spool import make_private_dirs
from blender_hooks.statedir import UnsafeStateDir  # noqa: F401 (the error callers catch)

DEFAULT_AGENT = "http://127.0.0.1:9464"
DEFAULT_AGENT_LISTEN = "127.0.0.1:9464"
DEFAULT_HEALER_LISTEN = "127.0.0.1:9465"


def home(env: Mapping[str, str] | None = None) -> Path:
    """State root: $RENDERWATCH_HOME, else $XDG_STATE_HOME/renderwatch, else ~/.local/state/renderwatch."""
    e: Mapping[str, str] = os.environ if env is None else env
    if e.get(ENV_HOME):
        return Path(e[ENV_HOME]).expanduser()
    base = e.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "renderwatch"


def ensure_private_dir(path: Path, root: Path | None = None) -> Path:
    """Create a directory readable by its owner only (0700), and any missing folder above it the same
    (the state root too), and return it. Every folder from the state root (`root`, else `home()` when
    `path` lies in it) down must be this account's, a real folder and not writable by others: the
    root may be a link an administrator made, nothing below it may. Raises UnsafeStateDir (a
    PermissionError naming the path, the owner found and the fix) otherwise
    (blender_hooks.statedir)."""
    return make_private_dirs(path, root)


def state_problem(env: Mapping[str, str] | None = None) -> str | None:
    """Why renderwatch cannot keep state on this host (None: it can): the state root cannot be made
    or resolved (`RENDERWATCH_HOME` a file, under /proc, `~nouser/x`, no home), it or `healer/` or
    `healer/jobs/` is another account's, a planted symbolic link or writable by others
    (UnsafeStateDir), or a file cannot be written in it (read-only, full disk). A few system calls:
    `exec` asks it before every task, so a farm task never fails on renderwatch's own bookkeeping
    (it runs Blender bare instead, writing nothing into a folder it does not trust)."""
    where = "the state folder"
    try:
        root = home(env)
        where = str(root)
        ensure_private_dir(root / "healer" / "jobs", root=root)
        probe = root / "healer" / f".probe-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            os.unlink(probe)
    except UnsafeStateDir as e:
        return str(e)
    except (OSError, RuntimeError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return f"{where}: {reason}"
    return None
