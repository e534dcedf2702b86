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


def ensure_private_dir(path: Path) -> Path:
    """Create a directory readable by its owner only (0700), and any missing folder above it the same
    (the state root too), and return it."""
    make_private_dirs(path)
    try:
        os.chmod(path, 0o700)
    except OSError:
        pass
    return path
