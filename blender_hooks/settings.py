"""Every environment variable renderwatch reads, by name, and the one configuration error type.

Standard library only and free of imports, so the hooks inside Blender (where this file is copied
with the add-on) read the same names as the agent and the healer. Each loader that reads a variable
imports its name from here; docs/ and the README list them with their defaults.

Usage::

    from blender_hooks.settings import ENV_TOKEN, ConfigError
"""

# -- shared by the hooks, the agent and the healer --------------------------------------------------
ENV_HOME = "RENDERWATCH_HOME"                   # state root: spool, journal, ledgers, traces
ENV_AGENT = "RENDERWATCH_AGENT"                 # the agent's base URL the hooks send to; "off": spool only
ENV_TOKEN = "RENDERWATCH_TOKEN"                 # the agent's bearer token (required off loopback)
ENV_BLENDER = "RENDERWATCH_BLENDER"             # the Blender executable (healer, demo, hooks install/check)

# -- the defaults they share (one place: the hooks send to the agent's default address, the agent listens
# on it, the healer's clients call the healer's) -------------------------------------------------------
DEFAULT_AGENT_LISTEN = "127.0.0.1:9464"             # the agent's address (loopback only by default)
DEFAULT_HEALER_LISTEN = "127.0.0.1:9465"            # the healer service's address
DEFAULT_AGENT = f"http://{DEFAULT_AGENT_LISTEN}"   # where the hooks send when RENDERWATCH_AGENT is unset
XDG_STATE_HOME = "XDG_STATE_HOME"                   # the state root without RENDERWATCH_HOME: <it>/renderwatch,
STATE_DIR_NAME = "renderwatch"                      # else ~/.local/state/renderwatch (blender_hooks.statedir)

# -- the hooks --------------------------------------------------------------------------------------
ENV_SPOOL_DIR = "RENDERWATCH_SPOOL_DIR"         # the spool directory (default <home>/spool)
ENV_SPOOL_MAX = "RENDERWATCH_SPOOL_MAX_BYTES"   # bound on the whole spool directory
ENV_JOB_ID = "RENDERWATCH_JOB_ID"               # job id of every attempt of a job (set by the healer)
ENV_ATTEMPT = "RENDERWATCH_ATTEMPT"             # attempt number of this run (set by the healer)
ENV_HEARTBEAT = "RENDERWATCH_HEARTBEAT"         # a file the hooks touch while rendering (set by the healer)

# -- the agent --------------------------------------------------------------------------------------
ENV_AGENT_CONFIG = "RENDERWATCH_CONFIG"
ENV_AGENT_LISTEN = "RENDERWATCH_AGENT_LISTEN"
ENV_AGENT_DATA_DIR = "RENDERWATCH_AGENT_DATA_DIR"
ENV_JOB_GRACE = "RENDERWATCH_JOB_GRACE_SECONDS"
ENV_SAMPLE_INTERVAL = "RENDERWATCH_SAMPLE_INTERVAL_SECONDS"
ENV_MAX_BODY = "RENDERWATCH_MAX_BODY_BYTES"
ENV_STALE_AFTER = "RENDERWATCH_STALE_AFTER_SECONDS"
ENV_TRACE_MAX_BYTES = "RENDERWATCH_TRACE_MAX_BYTES"          # a job's trace budget (Tempo refuses past 5 MB)
ENV_TRACE_FILE_MAX_AGE = "RENDERWATCH_TRACE_FILE_MAX_AGE_DAYS"   # embedded span files older than this go
ENV_JOURNAL_MAX_BYTES = "RENDERWATCH_JOURNAL_MAX_BYTES"      # past it, unexported spans of ended jobs are let go
# the page's links to the central tier (URL templates; {job} and {trace_id} are filled in; unset: no link)
ENV_TRACE_URL = "RENDERWATCH_TRACE_URL"                      # a job's trace (Grafana Explore on Tempo, Tempo's UI)
ENV_LOGS_URL = "RENDERWATCH_LOGS_URL"                        # a job's log lines (Grafana Explore on Loki)
ENV_DASHBOARD_URL = "RENDERWATCH_DASHBOARD_URL"              # a job's dashboard in Grafana
ENV_LOGS = "RENDERWATCH_LOGS"                                # "off": Blender's lines are not captured
ENV_LOG_RETENTION_DAYS = "RENDERWATCH_LOG_RETENTION_DAYS"    # a job's stored log is deleted this long after its last line
ENV_LOG_MAX_BYTES = "RENDERWATCH_LOG_MAX_BYTES"              # bound on the agent's whole log store: oldest jobs go first
ENV_LOG_JOB_MAX_BYTES = "RENDERWATCH_LOG_JOB_MAX_BYTES"      # per job: past it only warnings and errors are stored

# -- the healer -------------------------------------------------------------------------------------
ENV_HEALER_CONFIG = "RENDERWATCH_HEALER_CONFIG"
ENV_HEALER_LISTEN = "RENDERWATCH_HEALER_LISTEN"
ENV_HEALER_TOKEN = "RENDERWATCH_HEALER_TOKEN"
ENV_HEALER_CONCURRENCY = "RENDERWATCH_HEALER_CONCURRENCY"
ENV_HEALER_STALL_TIMEOUT = "RENDERWATCH_HEALER_STALL_TIMEOUT"
ENV_HEALER_MAX_RESTARTS = "RENDERWATCH_HEALER_MAX_RESTARTS"
ENV_HEALER_BACKOFF = "RENDERWATCH_HEALER_BACKOFF_S"
ENV_HEALER_KILL_GRACE = "RENDERWATCH_HEALER_KILL_GRACE_S"
ENV_ALERTMANAGER_TOKEN = "RENDERWATCH_ALERTMANAGER_TOKEN"   # the bearer token Alertmanager must send
ENV_HEALER_KEEP_COMPLETE = "RENDERWATCH_HEALER_KEEP_COMPLETE_DAYS"      # job folders of delivered jobs
ENV_HEALER_KEEP_INCOMPLETE = "RENDERWATCH_HEALER_KEEP_INCOMPLETE_DAYS"  # failed/cancelled/unfinished: resumable
ENV_HEALER_SCENE_CACHE_DAYS = "RENDERWATCH_HEALER_SCENE_CACHE_DAYS"     # scene-scan cache entries not used

# -- incidents (the standard Sentry variables work as the SDK's do) ---------------------------------
ENV_SENTRY_DSN = "SENTRY_DSN"
ENV_SENTRY_RELEASE = "SENTRY_RELEASE"
ENV_SENTRY_ENVIRONMENT = "SENTRY_ENVIRONMENT"
ENV_WEBHOOK_URL = "RENDERWATCH_WEBHOOK_URL"     # one extra renderwatch-format webhook target, all kinds
ENV_WEBHOOK_SECRET = "RENDERWATCH_WEBHOOK_SECRET"   # its HMAC secret

# -- tests and benchmarks ---------------------------------------------------------------------------
ENV_BLENDER_VERSIONS = "RENDERWATCH_BLENDER_VERSIONS"   # rows of the version matrix to run
ENV_MATRIX_REQUIRED = "RENDERWATCH_MATRIX_REQUIRED"     # 1: a row that is not set up fails
ENV_BPY_PYTHON = "RENDERWATCH_BPY_PYTHON"               # an interpreter with the bpy wheel (renderwatch.scenes)


class ConfigError(ValueError):
    """A bad configuration value: the message names the key and where it came from (file, variable, flag)."""


# The tables of a renderwatch TOML file: one shared renderwatch.toml may hold them all, and each loader
# reads its own. Any other name at the top of the file is a typo ([agnet]) that would leave a whole
# table silently unread.
CONFIG_TABLES = ("agent", "healer", "incidents")


def check_config_tables(doc: dict, path: object) -> None:
    """ConfigError naming the file and the table for anything at a TOML file's top level that is not
    one of CONFIG_TABLES (a table, an array of tables, or a key outside any table)."""
    for name, value in doc.items():
        if name in CONFIG_TABLES:
            continue
        what = (f"table [{name}]" if isinstance(value, dict) else f"table [[{name}]]" if isinstance(value, list)
                and value and all(isinstance(v, dict) for v in value) else f"key {name!r} outside any table")
        raise ConfigError(f"{path}: unknown {what}; renderwatch reads the tables "
                          + ", ".join(f"[{t}]" for t in CONFIG_TABLES))
