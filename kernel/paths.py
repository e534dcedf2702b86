"""Where renderwatch keeps its state on a host, and the environment variables that move it.

Every environment variable renderwatch reads is a named constant in the module that reads it;
these are the ones shared by the hooks, the agent and the healer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from blender_hooks.settings import (  # noqa: F401 (names read from here)
    DEFAULT_AGENT,
    DEFAULT_AGENT_LISTEN,
    DEFAULT_HEALER_LISTEN,
    ENV_AGENT,
    ENV_HOME,
    XDG_STATE_HOME,
    ConfigError,
)
from blender_hooks.statedir import UnsafeStateDir, private_dir, state_home  # noqa: F401 (the error callers catch)

# A job id names a folder under the state root: no separators, no dot-names, bounded
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_job_id(job: str, key: str = "--job") -> str:
    """`job` if it is a valid job id, else ConfigError naming `key` and the rule."""
    if not isinstance(job, str) or not JOB_ID.fullmatch(job):
        raise ConfigError(f"{key} {job!r}: a job id is 1-128 letters, digits, '.', '_' and '-', starting with a "
                          "letter or digit")
    return job


def user_path(value: object, key: str) -> Path:
    """A folder or file a person named (a flag, a variable, a config key), `~` expanded; ConfigError
    naming `key` for an empty value or a `~user` that cannot be expanded."""
    if not isinstance(value, (str, os.PathLike)):      # `data_dir = 5` in a TOML file wrote to ./5
        raise ConfigError(f"{key}: {value!r} is not a path; write it as a quoted string")
    text = os.fsdecode(value)
    if not text.strip():
        raise ConfigError(f"{key}: empty; give a path (for example /var/lib/renderwatch)")
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise ConfigError(f"{key}: {text!r}: '~' cannot be expanded here (no such user, or no home "
                          "directory for this account); give an absolute path") from None


def home(env: Mapping[str, str] | None = None) -> Path:
    """State root: $RENDERWATCH_HOME, else $XDG_STATE_HOME/renderwatch, else ~/.local/state/renderwatch.
    ConfigError (naming RENDERWATCH_HOME) when none of them can be resolved."""
    e: Mapping[str, str] = os.environ if env is None else env
    for key in (ENV_HOME, XDG_STATE_HOME):       # the first one set is the root: checked, named when bad
        if e.get(key):
            user_path(e[key], key)
            break
    try:
        return state_home(e)                     # the one rule (blender_hooks.statedir, used inside Blender too)
    except RuntimeError:
        raise ConfigError(f"this account has no home directory for renderwatch's state: set {ENV_HOME} "
                          "to a folder it can write") from None


def ensure_private_dir(path: Path, root: Path | None = None) -> Path:
    """Create a directory readable by its owner only (0700), and any missing folder above it the same
    (the state root too), and return it. Every folder from the state root (`root`, else `home()` when
    `path` lies in it) down must be this account's, a real folder and not writable by others: the
    root may be a link an administrator made, nothing below it may. Raises UnsafeStateDir (a
    PermissionError naming the path, the owner found and the fix) otherwise
    (blender_hooks.statedir)."""
    return private_dir(path, root)


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
