"""Where incidents go: the `[incidents]` table + environment -> IncidentsConfig (a pure loader).

Usage::

    cfg = load_incidents_config(toml_doc.get("incidents"), env=os.environ)   # ValueError names the key
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blender_hooks.settings import (  # noqa: F401 (names read from here)
    ENV_SENTRY_DSN,
    ENV_SENTRY_ENVIRONMENT,
    ENV_SENTRY_RELEASE,
    ENV_WEBHOOK_SECRET,
    ENV_WEBHOOK_URL,
)
from healer.incidents.notify import WebhookTarget
from healer.incidents.sentry import DEFAULT_MONITOR_CONFIG, SentryConfig

# Environment variables read by the incidents loader (the standard Sentry ones work as usual).

@dataclass(frozen=True)
class IncidentsConfig:
    """Where incidents go. Built by `load_incidents_config` from the `[incidents]` table + environment."""

    sentry: SentryConfig | None = None
    webhooks: tuple[WebhookTarget, ...] = ()
    outbox: Path | None = None                 # default: kernel.paths.home() / "healer" / "outbox"
    path_rewrites: tuple[tuple[str, str], ...] = ()
    retry_base_s: float = 1.0
    retry_max_s: float = 300.0
    max_age_s: float = 7 * 24 * 3600.0
    queue_size: int = 1000


def load_incidents_config(data: Mapping[str, Any] | None = None,
                          env: Mapping[str, str] | None = None) -> IncidentsConfig:
    """Pure loader: the `[incidents]` table (or {}) + environment → IncidentsConfig. ValueError names the key."""
    env = os.environ if env is None else env
    data = dict(data or {})
    s = dict(_table(data, "sentry"))
    dsn = s.get("dsn") or env.get(ENV_SENTRY_DSN) or None
    monitor_config = s.get("monitor_config", dict(DEFAULT_MONITOR_CONFIG))
    if monitor_config is not None and monitor_config is not False and not isinstance(monitor_config, Mapping):
        raise ValueError("incidents.sentry.monitor_config: expected a table (or false to send none)")
    sentry = SentryConfig(
        dsn=dsn,
        release=s.get("release") or env.get(ENV_SENTRY_RELEASE) or None,
        environment=s.get("environment") or env.get(ENV_SENTRY_ENVIRONMENT) or None,
        server_name=s.get("server_name") or None,
        monitor_slug=s.get("monitor_slug") or None,
        monitor_config=dict(monitor_config) if monitor_config else None,
        in_app_include=tuple(_str_list(s, "in_app_include", "incidents.sentry")),
        in_app_exclude=tuple(_str_list(s, "in_app_exclude", "incidents.sentry")),
    ) if dsn or s else None
    hooks = data.get("webhooks", [])
    if not isinstance(hooks, list):
        raise ValueError("incidents.webhooks: expected a list of tables")
    targets = [WebhookTarget.from_mapping(h, f"incidents.webhooks[{i}]", env=env) for i, h in enumerate(hooks)]
    if env.get(ENV_WEBHOOK_URL):
        targets.append(WebhookTarget.from_mapping({"url": env[ENV_WEBHOOK_URL], "name": "env",
                                                   "secret": env.get(ENV_WEBHOOK_SECRET)}, ENV_WEBHOOK_URL))
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"incidents.webhooks: target names must be unique, got {names}")
    rewrites = data.get("path_rewrites", {})
    if isinstance(rewrites, Mapping):
        pairs = tuple((str(k), str(v)) for k, v in rewrites.items())
    elif isinstance(rewrites, list) and all(isinstance(p, list | tuple) and len(p) == 2 for p in rewrites):
        pairs = tuple((str(a), str(b)) for a, b in rewrites)
    else:
        raise ValueError("incidents.path_rewrites: expected a table {prefix = replacement} or [[prefix, replacement]]")
    outbox = data.get("outbox")
    return IncidentsConfig(
        sentry=sentry, webhooks=tuple(targets), outbox=Path(outbox).expanduser() if outbox else None,
        path_rewrites=pairs,
        retry_base_s=_positive(data, "retry_base_s", 1.0), retry_max_s=_positive(data, "retry_max_s", 300.0),
        max_age_s=_positive(data, "max_age_s", 7 * 24 * 3600.0),
        queue_size=int(_positive(data, "queue_size", 1000)),
    )


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    v = data.get(key, {})
    if not isinstance(v, Mapping):
        raise ValueError(f"incidents.{key}: expected a table")
    return v


def _str_list(data: Mapping[str, Any], key: str, where: str) -> list[str]:
    v = data.get(key, [])
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"{where}.{key}: expected a list of strings")
    return v


def _positive(data: Mapping[str, Any], key: str, default: float) -> float:
    v = data.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
        raise ValueError(f"incidents.{key}: expected a positive number, got {v!r}")
    return float(v)
