"""OpenTelemetry Collector, Tempo, Loki and Grafana provisioning configs, checked structurally.

No collector, Tempo, Loki or Grafana binary can run here (no Docker engine, none is packaged for
Debian), so every check in this file is parse-only: the tests parse the YAML and check what the
collector itself checks at start-up (every pipeline component defined, every defined component
used) plus what renderwatch relies on: the OTLP ports, memory_limiter first and batch last, traces
to Tempo, logs to Loki's OTLP endpoint, the gateway's trace-ID load balancing, Loki's few index
labels, the trace <-> logs links both ways, and that the ports and uids the files refer to each
other by agree. Whether Loki accepts its config, or Grafana renders the links, is not run here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COLLECTOR = REPO / "collector"
SITE = COLLECTOR / "otel-collector.yaml"
GATEWAY = COLLECTOR / "otel-collector-gateway.yaml"
TEMPO = COLLECTOR / "tempo" / "tempo.yaml"
DATASOURCES = COLLECTOR / "grafana" / "provisioning" / "datasources" / "renderwatch.yaml"
LOKI = COLLECTOR / "loki" / "loki.yaml"
DASHBOARD_PROVIDER = COLLECTOR / "grafana" / "provisioning" / "dashboards" / "renderwatch.yaml"
SECTIONS = ("receivers", "processors", "exporters", "extensions", "connectors")


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", [SITE, GATEWAY], ids=["site", "gateway"])
def test_every_pipeline_component_is_defined_and_every_defined_component_is_used(path: Path) -> None:
    cfg = load(path)
    service = cfg["service"]
    used: dict[str, set[str]] = {s: set() for s in SECTIONS}
    used["extensions"].update(service.get("extensions", []))
    for name, pipeline in service["pipelines"].items():
        assert name.split("/")[0] in ("traces", "metrics", "logs"), name
        assert pipeline["receivers"] and pipeline["exporters"], name
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in cfg.get(kind, {}), f"{name}: {kind[:-1]} {component!r} is not defined"
                used[kind].add(component)
    for kind in SECTIONS:
        unused = set(cfg.get(kind) or {}) - used[kind]
        assert not unused, f"{kind} defined but not used: {sorted(unused)}"


@pytest.mark.parametrize("path", [SITE, GATEWAY], ids=["site", "gateway"])
def test_otlp_receivers_and_processor_order(path: Path) -> None:
    cfg = load(path)
    protocols = cfg["receivers"]["otlp"]["protocols"]
    # Since collector 0.104 the default endpoints are localhost: a container must say 0.0.0.0.
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    limiter = cfg["processors"]["memory_limiter"]
    assert limiter["check_interval"] and 0 < limiter["limit_percentage"] <= 90
    for name, pipeline in cfg["service"]["pipelines"].items():
        procs = pipeline["processors"]
        assert procs[0] == "memory_limiter", f"{name}: memory_limiter must come first"
        if "batch" in procs:
            assert procs[-1] == "batch", f"{name}: batch must come last"
        assert "resource" in procs, name
    attrs = {a["key"]: a for a in cfg["processors"]["resource"]["attributes"]}
    assert attrs["deployment.environment"]["action"] in ("insert", "upsert")
    assert cfg["extensions"]["health_check"]["endpoint"].endswith(":13133")


def test_site_collector_sends_traces_to_tempo_and_metrics_to_prometheus() -> None:
    cfg = load(SITE)
    pipelines = cfg["service"]["pipelines"]
    assert pipelines["traces"]["exporters"] == ["otlp/tempo"]
    assert "batch" in pipelines["traces"]["processors"] and "batch" in pipelines["metrics"]["processors"]
    tempo = cfg["exporters"]["otlp/tempo"]
    assert tempo["endpoint"] == "${env:TEMPO_OTLP_ENDPOINT:-tempo:4317}"
    assert tempo["tls"]["insecure"] is True
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    assert cfg["exporters"]["prometheus"]["endpoint"] == "0.0.0.0:8889"
    assert cfg["exporters"]["prometheus"]["resource_to_telemetry_conversion"]["enabled"] is True
    # Prometheus scrapes what the collector exposes.
    scrape = load(COLLECTOR / "prometheus" / "prometheus.yml")["scrape_configs"]
    targets = {t for job in scrape for sc in job.get("static_configs", []) for t in sc["targets"]}
    assert {"otel-collector:8889", "otel-collector:8888"} <= targets


@pytest.mark.parametrize("path", [SITE, GATEWAY], ids=["site", "gateway"])
def test_logs_go_to_lokis_native_otlp_endpoint(path: Path) -> None:
    cfg = load(path)
    pipeline = cfg["service"]["pipelines"]["logs"]
    assert pipeline["receivers"] == ["otlp"] and pipeline["exporters"] == ["otlphttp/loki"]
    assert pipeline["processors"][-1] == "batch"
    loki = cfg["exporters"]["otlphttp/loki"]
    # otlphttp appends /v1/logs to the base endpoint: Loki serves OTLP logs at /otlp/v1/logs.
    assert loki["endpoint"] == "${env:LOKI_OTLP_ENDPOINT:-http://loki:3100/otlp}"
    assert loki["sending_queue"]["enabled"] and loki["retry_on_failure"]["enabled"]
    port = load(LOKI)["server"]["http_listen_port"]
    assert loki["endpoint"].endswith(f":{port}/otlp}}")


def test_loki_indexes_few_labels_keeps_ids_as_structured_metadata_and_expires_data() -> None:
    cfg = load(LOKI)
    limits = cfg["limits_config"]
    assert limits["allow_structured_metadata"] is True
    schema = cfg["schema_config"]["configs"][-1]
    assert schema["store"] == "tsdb" and schema["schema"] == "v13"     # structured metadata needs both
    # Only host.name is added to Loki's default index labels (service.name, deployment.environment):
    # job, frame, attempt and trace ids are record attributes, which Loki stores as structured metadata.
    rules = limits["otlp_config"]["resource_attributes"]["attributes_config"]
    indexed = {a for r in rules if r["action"] == "index_label" for a in r["attributes"]}
    assert indexed == {"host.name"}
    assert "log_attributes" not in limits["otlp_config"]      # no record attribute becomes a label
    assert limits["max_global_streams_per_user"] >= 1000
    # Retention: the compactor deletes what is older than retention_period.
    assert cfg["compactor"]["retention_enabled"] is True and cfg["compactor"]["delete_request_store"]
    assert limits["retention_period"].endswith("h") and int(limits["retention_period"][:-1]) >= 24
    assert cfg["auth_enabled"] is False


def test_traces_and_logs_link_both_ways_in_grafana() -> None:
    sources = {d["uid"]: d for d in load(DATASOURCES)["datasources"]}
    loki = sources["loki"]
    assert loki["type"] == "loki" and loki["url"] == f"http://loki:{load(LOKI)['server']['http_listen_port']}"
    # Loki -> Tempo: the trace_id structured metadata of a line opens its trace.
    (derived,) = loki["jsonData"]["derivedFields"]
    assert derived["matcherType"] == "label" and derived["matcherRegex"] == "trace_id"
    assert derived["datasourceUid"] == "tempo" and derived["url"] == "$${__value.raw}"
    # Tempo -> Loki: a span's logs are the lines with its trace id, on its service's stream.
    t2l = sources["tempo"]["jsonData"]["tracesToLogsV2"]
    assert t2l["datasourceUid"] == "loki" and t2l["customQuery"] is True
    assert t2l["query"] == '{$${__tags}} | trace_id="$${__trace.traceId}"'
    assert {"key": "service.name", "value": "service_name"} in t2l["tags"]
    # Every `$` Grafana should see is written `$$` (provisioning expands environment variables).
    text = DATASOURCES.read_text()
    assert not re.search(r"(?<!\$)\$\{__", text)


def test_gateway_balances_traces_by_trace_id_over_dns_resolved_backends() -> None:
    cfg = load(GATEWAY)
    pipelines = cfg["service"]["pipelines"]
    assert pipelines["traces"]["exporters"] == ["loadbalancing"]
    lb = cfg["exporters"]["loadbalancing"]
    assert lb["routing_key"] == "traceID"
    assert lb["protocol"]["otlp"]["tls"]["insecure"] is True
    dns = lb["resolver"]["dns"]
    assert dns["hostname"] and str(dns["port"]) == "4317"
    assert pipelines["metrics"]["exporters"] == ["prometheusremotewrite"]
    assert cfg["exporters"]["prometheusremotewrite"]["endpoint"].rstrip("}").endswith("/api/v1/write")


@pytest.mark.parametrize("path", [SITE, GATEWAY], ids=["site", "gateway"])
def test_environment_references_are_well_formed(path: Path) -> None:
    text = path.read_text()
    refs = re.findall(r"\$\{([^}]*)\}", text)
    assert refs
    for ref in refs:
        assert re.fullmatch(r"env:[A-Z_][A-Z0-9_]*(:-[^}]*)?", ref), ref


def test_tempo_receives_otlp_where_the_collector_sends_and_serves_grafana() -> None:
    tempo = load(TEMPO)
    grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc.endswith(":4317")
    port = tempo["server"]["http_listen_port"]
    sources = {d["uid"]: d for d in load(DATASOURCES)["datasources"]}
    assert sources["tempo"]["url"] == f"http://tempo:{port}"
    assert tempo["storage"]["trace"]["backend"] == "local"
    assert tempo["storage"]["trace"]["wal"]["path"].startswith("/var/tempo")


def test_grafana_datasources_are_the_ones_the_dashboards_use() -> None:
    sources = {d["uid"]: d for d in load(DATASOURCES)["datasources"]}
    assert sources["prometheus"]["type"] == "prometheus" and sources["prometheus"]["isDefault"] is True
    assert sources["prometheus"]["url"] == "http://prometheus:9090"
    assert sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"] == "tempo"
    assert sources["tempo"]["type"] == "tempo"
    assert sources["tempo"]["jsonData"]["tracesToMetrics"]["datasourceUid"] == "prometheus"
    used = set()
    for path in (REPO / "dashboards").glob("*.json"):
        used.update(re.findall(r'"uid": "([a-z]+)"', path.read_text()))
    dashboard_uids = {u for u in used if not u.startswith("renderwatch")}
    assert dashboard_uids <= set(sources), dashboard_uids - set(sources)


def test_dashboard_provider_loads_the_folder_compose_mounts() -> None:
    provider = load(DASHBOARD_PROVIDER)["providers"][0]
    assert provider["type"] == "file"
    compose = load(REPO / "compose.yaml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./dashboards:{provider['options']['path']}:ro" in mounts
