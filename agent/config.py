"""The agent's configuration: one frozen object built by a pure loader from file + environment.

Precedence, highest first: command-line flags (passed as `overrides`), environment variables,
the `[agent]` table of a TOML file, defaults. A bad value raises ConfigError naming the key.

Usage::

    cfg = load_config(env=os.environ, path="renderwatch.toml", overrides={"listen": "127.0.0.1:0"})
    cfg.host, cfg.port, cfg.data_dir, cfg.otlp_endpoint
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from blender_hooks.settings import ENV_AGENT_CONFIG as ENV_CONFIG
from blender_hooks.settings import ENV_AGENT_DATA_DIR as ENV_DATA_DIR
from blender_hooks.settings import ENV_AGENT_LISTEN as ENV_LISTEN
from blender_hooks.settings import (  # noqa: F401 (names read from here)
    ENV_DASHBOARD_URL,
    ENV_JOB_GRACE,
    ENV_JOURNAL_MAX_BYTES,
    ENV_LOG_JOB_MAX_BYTES,
    ENV_LOG_MAX_BYTES,
    ENV_LOG_RETENTION_DAYS,
    ENV_LOGS_URL,
    ENV_MAX_BODY,
    ENV_SAMPLE_INTERVAL,
    ENV_SPOOL_DIR,
    ENV_STALE_AFTER,
    ENV_TOKEN,
    ENV_TRACE_FILE_MAX_AGE,
    ENV_TRACE_MAX_BYTES,
    ENV_TRACE_URL,
    ConfigError,
    check_config_tables,
)
from kernel.files import load_toml
from kernel.listen import check_token, is_loopback
from kernel.listen import parse_listen as _parse_listen
from kernel.paths import DEFAULT_AGENT_LISTEN, home, user_path

# Environment variables the agent reads (documented in the README's agent section).
# The standard OpenTelemetry variables (the SDK also reads headers, timeouts, TLS and
# OTEL_RESOURCE_ATTRIBUTES itself).
OTEL_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
OTEL_BSP_SCHEDULE_DELAY = "OTEL_BSP_SCHEDULE_DELAY"   # ms between span exports (the SDK's 5000 is slow here)

PROTOCOLS = ("http/protobuf", "grpc")
DEFAULT_SERVICE_NAME = "renderwatch-agent"




@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs to run; build it with load_config()."""

    host: str = DEFAULT_AGENT_LISTEN.rpartition(":")[0]
    port: int = int(DEFAULT_AGENT_LISTEN.rpartition(":")[2])
    token: str | None = None
    data_dir: Path = field(default_factory=lambda: home() / "agent")
    spool_dir: Path = field(default_factory=lambda: home() / "spool")
    job_grace_seconds: float = 300.0
    stale_after_seconds: float = 900.0
    sample_interval_seconds: float = 1.0
    max_body_bytes: int = 1 << 20
    otlp_endpoint: str | None = None          # None: the embedded OTLP-JSON file exporter
    otlp_protocol: str = "http/protobuf"
    traces_enabled: bool = True
    service_name: str = DEFAULT_SERVICE_NAME
    trace_file_max_bytes: int = 64 << 20
    trace_file_max_age_days: float = 7.0
    trace_max_bytes: int = 4_000_000
    journal_max_bytes: int = 256 << 20
    bsp_schedule_delay_ms: float = 1000.0
    trace_url: str | None = None              # the page's links (URL templates with {job}, {trace_id})
    logs_url: str | None = None
    dashboard_url: str | None = None
    log_retention_days: float = 7.0
    log_max_bytes: int = 1 << 30
    log_job_max_bytes: int = 64 << 20
    logs_otlp_endpoint: str | None = None     # None: the embedded OTLP-JSON file of log records
    logs_export_enabled: bool = True          # OTEL_LOGS_EXPORTER=none: stored on the node only

    @property
    def listen(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def traces_dir(self) -> Path:
        return self.data_dir / "traces"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def log_spool_dir(self) -> Path:
        return self.spool_dir / "logs"


def parse_listen(value: str, key: str = "listen") -> tuple[str, int]:
    """'HOST:PORT' or '[V6]:PORT' -> (host, port); ConfigError naming `key` when malformed."""
    try:
        return _parse_listen(value, key)
    except ValueError as e:
        raise ConfigError(str(e)) from None


MAX_SETTING = 1e12     # no agent setting (seconds, bytes, milliseconds) means anything past this


def _number(key: str, raw: Any, kind: type, minimum: float) -> Any:
    try:
        if isinstance(raw, bool):
            raise ValueError
        val = kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {raw!r} is not a{'n integer' if kind is int else ' number'}") from None
    if not math.isfinite(val) or val < minimum:     # NaN passes every `<`: a NaN grace never expired a job
        raise ConfigError(f"{key}: {raw!r} must be a finite number >= {minimum}")
    if val > MAX_SETTING:
        raise ConfigError(f"{key}: {raw!r} must be at most {MAX_SETTING:g}")
    return val


def _read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    doc = load_toml(p, f"config file (--config / {ENV_CONFIG})")
    check_config_tables(doc, p)
    table = doc.get("agent", {})
    if not isinstance(table, dict):
        raise ConfigError(f"config file {str(p)!r}: [agent] must be a table")
    return table


def _otlp(env: Mapping[str, str]) -> tuple[str | None, str, bool]:
    exporter = env.get(OTEL_TRACES_EXPORTER, "otlp").strip().lower() or "otlp"
    if exporter not in ("otlp", "none"):
        raise ConfigError(f"{OTEL_TRACES_EXPORTER}: {exporter!r} is not supported; use otlp or none")
    proto_key = OTEL_TRACES_PROTOCOL if env.get(OTEL_TRACES_PROTOCOL) else OTEL_PROTOCOL
    protocol = (env.get(proto_key) or "http/protobuf").strip().lower()
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{proto_key}: {protocol!r} is not supported; use one of {', '.join(PROTOCOLS)}")
    endpoint: str | None = None
    if env.get(OTEL_TRACES_ENDPOINT):
        key, endpoint = OTEL_TRACES_ENDPOINT, env[OTEL_TRACES_ENDPOINT].strip()
    elif env.get(OTEL_ENDPOINT):
        key, endpoint = OTEL_ENDPOINT, env[OTEL_ENDPOINT].strip()
        if protocol == "http/protobuf":   # the spec: the base endpoint gets the signal path appended
            endpoint = endpoint.rstrip("/") + "/v1/traces"
    if endpoint is not None:
        parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{key}: {endpoint!r} is not an http(s) URL (for example http://127.0.0.1:4318)")
        if protocol == "http/protobuf" and "://" not in endpoint:
            raise ConfigError(f"{key}: {endpoint!r} needs a scheme (http://...) for http/protobuf")
    return endpoint, protocol, exporter == "otlp"


OTEL_LOGS_ENDPOINT = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"
OTEL_LOGS_EXPORTER = "OTEL_LOGS_EXPORTER"


def _logs_endpoint(env: Mapping[str, str], traces: str | None, protocol: str) -> str | None:
    """Where log records go: OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, else the base endpoint with /v1/logs
    (http/protobuf) or as is (grpc), else None (the embedded OTLP-JSON file)."""
    if env.get(OTEL_LOGS_ENDPOINT):
        return env[OTEL_LOGS_ENDPOINT].strip()
    if env.get(OTEL_ENDPOINT):
        base = env[OTEL_ENDPOINT].strip()
        return base.rstrip("/") + "/v1/logs" if protocol == "http/protobuf" else base
    if traces is not None and traces.endswith("/v1/traces"):
        return traces[: -len("/v1/traces")] + "/v1/logs"
    return traces


def load_config(env: Mapping[str, str] | None = None, path: str | os.PathLike[str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> AgentConfig:
    """Build the AgentConfig from a TOML file's [agent] table, the environment and overrides."""
    e: Mapping[str, str] = os.environ if env is None else env
    path = path or e.get(ENV_CONFIG) or None
    file = _read_file(path) if path else {}
    env_map = {"listen": ENV_LISTEN, "token": ENV_TOKEN, "data_dir": ENV_DATA_DIR, "spool_dir": ENV_SPOOL_DIR,
               "job_grace_seconds": ENV_JOB_GRACE, "sample_interval_seconds": ENV_SAMPLE_INTERVAL,
               "max_body_bytes": ENV_MAX_BODY, "stale_after_seconds": ENV_STALE_AFTER,
               "trace_max_bytes": ENV_TRACE_MAX_BYTES, "trace_file_max_age_days": ENV_TRACE_FILE_MAX_AGE,
               "journal_max_bytes": ENV_JOURNAL_MAX_BYTES, "log_retention_days": ENV_LOG_RETENTION_DAYS,
               "log_max_bytes": ENV_LOG_MAX_BYTES, "log_job_max_bytes": ENV_LOG_JOB_MAX_BYTES,
               "trace_url": ENV_TRACE_URL, "logs_url": ENV_LOGS_URL, "dashboard_url": ENV_DASHBOARD_URL}
    unknown = sorted(set(file) - set(env_map) - {"trace_file_max_bytes"})
    if unknown:
        raise ConfigError(f"config file [agent]: unknown key(s) {', '.join(unknown)}; known: {', '.join(env_map)}")
    vals: dict[str, tuple[str, Any]] = {}          # name -> (key to blame, raw value)
    for name, raw in file.items():
        vals[name] = (f"[agent] {name}", raw)
    for name, var in env_map.items():
        if e.get(var):
            vals[name] = (var, e[var])
    for name, raw in (overrides or {}).items():
        if raw is not None:
            vals[name] = (f"--{name.replace('_', '-')}", raw)

    def get(name: str, default: Any) -> tuple[str, Any]:
        return vals.get(name, (name, default))

    key, listen = get("listen", DEFAULT_AGENT_LISTEN)
    host, port = parse_listen(str(listen), key)
    token_key, token = get("token", None)
    token = token or None
    if token is not None:
        try:
            token = check_token(str(token), token_key)
        except ValueError as bad:
            raise ConfigError(str(bad)) from None
    if not is_loopback(host) and not token:
        raise ConfigError(f"{key}: listening on {host!r} (not loopback) needs a token: set {ENV_TOKEN} "
                          "(clients send it as 'Authorization: Bearer TOKEN'), or listen on 127.0.0.1")
    root = home(e)
    data_dir = user_path(*reversed(get("data_dir", root / "agent")))
    spool_dir = user_path(*reversed(get("spool_dir", root / "spool")))
    endpoint, protocol, enabled = _otlp(e)
    service = (e.get(OTEL_SERVICE_NAME) or "").strip() or DEFAULT_SERVICE_NAME
    if not e.get(OTEL_SERVICE_NAME) and "service.name=" in e.get(OTEL_RESOURCE_ATTRIBUTES, ""):
        # Let a service.name given in OTEL_RESOURCE_ATTRIBUTES win over our default.
        for item in e[OTEL_RESOURCE_ATTRIBUTES].split(","):
            k, _, v = item.partition("=")
            if k.strip() == "service.name" and v.strip():
                service = v.strip()
    return AgentConfig(
        host=host, port=port, token=token, data_dir=data_dir, spool_dir=spool_dir,
        job_grace_seconds=_number(*get("job_grace_seconds", 300.0), float, 0),
        stale_after_seconds=_number(*get("stale_after_seconds", 900.0), float, 1),
        sample_interval_seconds=_number(*get("sample_interval_seconds", 1.0), float, 0.05),
        max_body_bytes=_number(*get("max_body_bytes", 1 << 20), int, 1024),
        otlp_endpoint=endpoint, otlp_protocol=protocol, traces_enabled=enabled, service_name=service,
        trace_file_max_bytes=_number(*get("trace_file_max_bytes", 64 << 20), int, 4096),
        trace_file_max_age_days=_number(*get("trace_file_max_age_days", 7.0), float, 0.01),
        trace_max_bytes=_number(*get("trace_max_bytes", 4_000_000), int, 10_000),
        journal_max_bytes=_number(*get("journal_max_bytes", 256 << 20), int, 1 << 20),
        bsp_schedule_delay_ms=_number(OTEL_BSP_SCHEDULE_DELAY, e.get(OTEL_BSP_SCHEDULE_DELAY) or 1000, float, 0),
        trace_url=_link(*get("trace_url", None)), logs_url=_link(*get("logs_url", None)),
        dashboard_url=_link(*get("dashboard_url", None)),
        log_retention_days=_number(*get("log_retention_days", 7.0), float, 0.001),
        log_max_bytes=_number(*get("log_max_bytes", 1 << 30), int, 1 << 20),
        log_job_max_bytes=_number(*get("log_job_max_bytes", 64 << 20), int, 1 << 16),
        logs_otlp_endpoint=_logs_endpoint(e, endpoint, protocol),
        logs_export_enabled=(e.get(OTEL_LOGS_EXPORTER) or "otlp").strip().lower() != "none",
    )


def _link(key: str, raw: Any) -> str | None:
    """A link template of the page: an http(s) URL (the page puts it in an href as it is)."""
    if raw is None or str(raw).strip() == "":
        return None
    url = str(raw).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c in url for c in "\"\\<> \t\n"):
        raise ConfigError(f"{key}: {url!r} is not an http(s) URL template (for example "
                          "http://grafana:3000/explore?...{trace_id})")
    return url
