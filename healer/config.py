"""The healer's frozen configuration: defaults < TOML file (`[healer]` table) < environment < flags.

Environment variables (each read here only):

    RENDERWATCH_HEALER_CONFIG     TOML file; its [healer] table (a shared renderwatch.toml works)
    RENDERWATCH_BLENDER           Blender executable (default "blender")
    RENDERWATCH_HEALER_LISTEN     service address (default 127.0.0.1:9465)
    RENDERWATCH_HEALER_TOKEN      bearer token for the service API (required off loopback)
    RENDERWATCH_HEALER_CONCURRENCY  renders the service runs at once (default 2)
    RENDERWATCH_HEALER_STALL_TIMEOUT  seconds; default adaptive (see healer.probes)
    RENDERWATCH_HEALER_MAX_RESTARTS   overrides max_restarts of every restarting policy
    RENDERWATCH_HEALER_BACKOFF_S      overrides backoff_base_s of every policy
    RENDERWATCH_HEALER_KILL_GRACE_S   SIGTERM -> SIGKILL grace when stopping Blender (default 5)

TOML example::

    [healer]
    blender = "/opt/blender-4.2/blender"
    concurrency = 4
    [healer.policy.segfault]
    max_restarts = 3
    backoff_base_s = 2

Usage::

    cfg = load_config(env=os.environ)            # ConfigError names the bad key
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blender_hooks.settings import ENV_BLENDER, ConfigError, check_config_tables  # noqa: F401 (names read from here)
from blender_hooks.settings import ENV_HEALER_BACKOFF as ENV_BACKOFF
from blender_hooks.settings import ENV_HEALER_CONCURRENCY as ENV_CONCURRENCY
from blender_hooks.settings import ENV_HEALER_CONFIG as ENV_CONFIG
from blender_hooks.settings import ENV_HEALER_KILL_GRACE as ENV_KILL_GRACE
from blender_hooks.settings import ENV_HEALER_LISTEN as ENV_LISTEN
from blender_hooks.settings import ENV_HEALER_MAX_RESTARTS as ENV_MAX_RESTARTS
from blender_hooks.settings import ENV_HEALER_STALL_TIMEOUT as ENV_STALL_TIMEOUT
from blender_hooks.settings import ENV_HEALER_TOKEN as ENV_TOKEN
from healer.service.alert_rules import DEFAULT_RULES, AlertRule, load_alert_rules
from healer.supervising.policy import Policy
from kernel.listen import check_token
from kernel.paths import DEFAULT_HEALER_LISTEN


@dataclass(frozen=True)
class HealerConfig:
    blender: str = "blender"
    listen: str = DEFAULT_HEALER_LISTEN
    token: str | None = None
    concurrency: int = 2
    stall_timeout: float | None = None
    max_restarts: int | None = None
    backoff_base_s: float | None = None
    kill_grace_s: float = 5.0
    probe_interval_s: float = 0.25
    allowed_blenders: tuple[str, ...] = ("blender", "renderwatch-blender", "renderwatch-blender5")
    policy_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    alert_rules: tuple[AlertRule, ...] = DEFAULT_RULES               # [[healer.alert_rules]]
    incidents: Mapping[str, Any] | None = None      # the file's [incidents] table (healer.incidents reads it)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    def policy(self) -> Policy:
        try:
            return Policy.default().with_overrides(self.policy_overrides, max_restarts=self.max_restarts,
                                                   backoff_base_s=self.backoff_base_s)
        except ValueError as e:
            raise ConfigError(f"healer.{e}") from None


_KEYS = {"blender": str, "listen": str, "token": str, "concurrency": int, "stall_timeout": float,
         "max_restarts": int, "backoff_base_s": float, "kill_grace_s": float, "probe_interval_s": float,
         "allowed_blenders": list}
# The sane range of every number (inclusive; stall_timeout excludes 0): NaN, infinities and values past
# these are refused with the key named. A NaN stall_timeout used to turn stall detection off silently
# (every comparison with NaN is false); a concurrency of 10**9 or a grace of 1e300 s is nobody's intent.
RANGES: dict[str, tuple[float, float]] = {
    "concurrency": (1, 1024), "stall_timeout": (0, 7 * 86400), "max_restarts": (0, 1000),
    "backoff_base_s": (0, 86400), "kill_grace_s": (0, 3600), "probe_interval_s": (0.01, 60),
}
_ENV_KEYS = {ENV_BLENDER: "blender", ENV_LISTEN: "listen", ENV_TOKEN: "token", ENV_CONCURRENCY: "concurrency",
             ENV_STALL_TIMEOUT: "stall_timeout", ENV_MAX_RESTARTS: "max_restarts", ENV_BACKOFF: "backoff_base_s",
             ENV_KILL_GRACE: "kill_grace_s"}


def _coerce(key: str, value: Any, where: str) -> Any:
    typ = _KEYS[key]
    try:
        if typ is list:
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError("expected a list of strings")
            return tuple(value)
        if typ is str:
            if not isinstance(value, str) or not value:
                raise ValueError("expected a non-empty string")
            if key == "token":
                check_token(value, "the token")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("expected a number")
        v = typ(value.strip() if isinstance(value, str) else value)
        if typ is int and isinstance(value, float) and v != value:
            raise ValueError("expected a whole number")
        return check_range(key, v)
    except (TypeError, ValueError, OverflowError) as e:
        raise ConfigError(f"{where}: {key} = {value!r}: {e}") from None


def check_range(key: str, v: float) -> float:
    """`v` if it is finite and inside RANGES[key]; ValueError saying the range otherwise."""
    lo, hi = RANGES[key]
    if not math.isfinite(v) or v < lo or v > hi or (key == "stall_timeout" and v == 0):
        low = f"above {lo}" if key == "stall_timeout" else f"from {lo}"
        raise ValueError(f"must be a finite number {low} to {hi}")
    return v


def load_config(path: str | None = None, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> HealerConfig:
    """Build the config (pure: reads only the named file). Flags go in `overrides` (None = unset)."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    policy: dict[str, dict[str, Any]] = {}
    alert_rules: tuple[AlertRule, ...] = DEFAULT_RULES
    incidents: Mapping[str, Any] | None = None
    path = path or env.get(ENV_CONFIG)
    if path:
        from kernel.files import load_toml  # only where a config file is given: not on every task

        doc = load_toml(path, f"config file (--config / {ENV_CONFIG})")
        check_config_tables(doc, path)
        incidents = doc.get("incidents")
        table = doc.get("healer", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [healer] must be a table")
        for key, value in table.items():
            if key == "policy":
                if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
                    raise ConfigError(f"{path}: healer.policy must hold tables like [healer.policy.segfault]")
                policy = {k: dict(v) for k, v in value.items()}
            elif key == "alert_rules":
                try:
                    alert_rules = load_alert_rules(value, f"{path}: healer.alert_rules")
                except ValueError as e:
                    raise ConfigError(str(e)) from None
            elif key in _KEYS:
                values[key] = _coerce(key, value, f"{path}: healer")
            else:
                raise ConfigError(f"{path}: healer.{key}: unknown key; valid: {', '.join(sorted(_KEYS))}, policy, "
                                  "alert_rules")
    for name, key in _ENV_KEYS.items():
        if env.get(name):
            values[key] = _coerce(key, env[name], name)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, f"--{key.replace('_', '-')}")
    if incidents is not None:   # a bad [incidents] table stops the service, it does not silence it
        from healer.incidents.config import load_incidents_config  # sentry-sdk: only when configured

        try:
            load_incidents_config(incidents, env)
        except ValueError as e:
            raise ConfigError(f"{path}: {e}") from None
    cfg = HealerConfig(policy_overrides=policy, incidents=incidents, env=env, alert_rules=alert_rules, **values)
    cfg.policy()          # validate the policy table now, not at the first crash
    return cfg
