"""agent.config: a pure loader from file + environment; bad values name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, is_loopback, load_config, parse_listen


def test_defaults_follow_renderwatch_home(tmp_path):
    cfg = load_config(env={"RENDERWATCH_HOME": str(tmp_path)})
    assert (cfg.host, cfg.port) == ("127.0.0.1", 9464)
    assert cfg.data_dir == tmp_path / "agent"
    assert cfg.spool_dir == tmp_path / "spool"
    assert cfg.traces_dir == tmp_path / "agent" / "traces"
    assert cfg.job_grace_seconds == 300 and cfg.sample_interval_seconds == 1.0
    assert cfg.max_body_bytes == 1 << 20
    assert cfg.otlp_endpoint is None and cfg.service_name == "renderwatch-agent"
    assert cfg.token is None


def test_precedence_flags_over_env_over_file(tmp_path):
    f = tmp_path / "rw.toml"
    f.write_text('[agent]\nlisten = "127.0.0.1:1111"\njob_grace_seconds = 10\nmax_body_bytes = 4096\n')
    env = {"RENDERWATCH_HOME": str(tmp_path), "RENDERWATCH_AGENT_LISTEN": "127.0.0.1:2222",
           "RENDERWATCH_JOB_GRACE_SECONDS": "20"}
    cfg = load_config(env=env, path=f)
    assert cfg.port == 2222 and cfg.job_grace_seconds == 20 and cfg.max_body_bytes == 4096
    cfg = load_config(env=env, path=f, overrides={"listen": "127.0.0.1:3333", "data_dir": str(tmp_path / "d")})
    assert cfg.port == 3333 and cfg.data_dir == tmp_path / "d"


def test_non_loopback_needs_a_token(tmp_path):
    env = {"RENDERWATCH_HOME": str(tmp_path)}
    with pytest.raises(ConfigError) as e:
        load_config(env=env, overrides={"listen": "0.0.0.0:9464"})
    assert "RENDERWATCH_TOKEN" in str(e.value) and "--listen" in str(e.value)
    cfg = load_config(env={**env, "RENDERWATCH_TOKEN": "s3cret"}, overrides={"listen": "0.0.0.0:9464"})
    assert cfg.token == "s3cret" and cfg.host == "0.0.0.0"


@pytest.mark.parametrize("key,value,needle", [
    ("RENDERWATCH_AGENT_LISTEN", "nohost", "RENDERWATCH_AGENT_LISTEN"),
    ("RENDERWATCH_AGENT_LISTEN", "127.0.0.1:99999", "HOST:PORT"),
    ("RENDERWATCH_JOB_GRACE_SECONDS", "soon", "RENDERWATCH_JOB_GRACE_SECONDS"),
    ("RENDERWATCH_JOB_GRACE_SECONDS", "-1", ">= 0"),
    ("RENDERWATCH_MAX_BODY_BYTES", "1.5", "integer"),
    ("RENDERWATCH_SAMPLE_INTERVAL_SECONDS", "0", "RENDERWATCH_SAMPLE_INTERVAL_SECONDS"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "http/protobuf, grpc"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x", "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER"),
    ("OTEL_BSP_SCHEDULE_DELAY", "fast", "OTEL_BSP_SCHEDULE_DELAY"),
    # issue 28: NaN passes every `<` check (a NaN grace never expires a job); infinities and 1e300 too
    ("RENDERWATCH_JOB_GRACE_SECONDS", "nan", "RENDERWATCH_JOB_GRACE_SECONDS"),
    ("RENDERWATCH_SAMPLE_INTERVAL_SECONDS", "inf", "finite"),
    ("RENDERWATCH_JOB_GRACE_SECONDS", "1e300", "at most"),
    ("OTEL_BSP_SCHEDULE_DELAY", "nan", "OTEL_BSP_SCHEDULE_DELAY"),
])
def test_bad_values_name_the_key(tmp_path, key, value, needle):
    with pytest.raises(ConfigError) as e:
        load_config(env={"RENDERWATCH_HOME": str(tmp_path), key: value})
    assert needle in str(e.value)


def test_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(env={}, path=tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[agent\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(env={}, path=bad)
    bad.write_text('[agent]\nlisen = "x"\n')
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(env={}, path=bad)
    bad.write_bytes(b"[agent]\nlisten = \"\xff\"\n")
    with pytest.raises(ConfigError):
        load_config(env={}, path=bad)


def test_otel_standard_variables(tmp_path):
    env = {"RENDERWATCH_HOME": str(tmp_path), "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}
    assert load_config(env=env).otlp_endpoint == "http://collector:4318/v1/traces"
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://other:4318/custom"
    assert load_config(env=env).otlp_endpoint == "http://other:4318/custom"
    grpc = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    cfg = load_config(env=grpc)
    assert (cfg.otlp_endpoint, cfg.otlp_protocol) == ("http://collector:4317", "grpc")
    assert load_config(env={"OTEL_SERVICE_NAME": "farm-agent"}).service_name == "farm-agent"
    assert load_config(env={"OTEL_RESOURCE_ATTRIBUTES": "a=b,service.name=x"}).service_name == "x"
    assert load_config(env={"OTEL_TRACES_EXPORTER": "none"}).traces_enabled is False


def test_listen_parsing():
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    assert parse_listen("localhost:0") == ("localhost", 0)
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("render01")
    cfg = load_config(env={}, overrides={"listen": "[::1]:9464"})
    assert cfg.listen == "[::1]:9464"
    assert isinstance(cfg.data_dir, Path)


def test_an_unknown_table_names_the_table_and_the_file(tmp_path):
    """A misspelled table ([agnet]) left the whole table unread while an unknown key was an error."""
    bad = tmp_path / "renderwatch.toml"
    bad.write_text('[agnet]\nlisten = "127.0.0.1:1"\n')
    with pytest.raises(ConfigError, match=r"renderwatch.toml: unknown table \[agnet\]"):
        load_config(env={}, path=bad)
    bad.write_text('listen = "127.0.0.1:1"\n[agent]\n')
    with pytest.raises(ConfigError, match="key 'listen' outside any table"):
        load_config(env={}, path=bad)
    shared = tmp_path / "shared.toml"          # one renderwatch.toml for the agent and the healer
    shared.write_text('[agent]\nlisten = "127.0.0.1:9999"\n[healer]\nconcurrency = 3\n[incidents]\nqueue_size = 10\n')
    assert load_config(env={"RENDERWATCH_HOME": str(tmp_path)}, path=shared).port == 9999


@pytest.mark.parametrize("body, words", [
    ("[agent]\ndata_dir = 5\n", "is not a path"),
    ("[agent]\nspool_dir = ''\n", "empty"),
    ("[agent]\ndata_dir = '~no-such-user-rw/x'\n", "cannot be expanded"),
    ("a = " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
])
def test_config_values_that_are_not_paths_or_toml_are_named(tmp_path, body, words):
    """`data_dir = 5` wrote the journal to ./5; a deeply nested file was a RecursionError traceback."""
    f = tmp_path / "agent.toml"
    f.write_text(body)
    with pytest.raises(ConfigError, match=words):
        load_config({}, path=f)


def test_a_config_that_is_a_fifo_or_binary_is_an_error_not_a_hang(tmp_path):
    import os

    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config({}, path=fifo)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe[agent]")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config({}, path=binary)
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ConfigError, match="too large"):
        load_config({}, path=big)
