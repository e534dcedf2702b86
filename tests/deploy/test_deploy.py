"""Deployment manifests for a farm: the systemd units (checked by systemd's own
`systemd-analyze verify`, with ExecStart pointed at an existing binary) and the Kubernetes
DaemonSet (parsed: no cluster here)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "deploy" / "systemd").glob("*.service"))
DAEMONSET = REPO / "deploy" / "kubernetes" / "daemonset.yaml"
HARDENING = {"NoNewPrivileges": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
             "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
             "CapabilityBoundingSet": ""}


def unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_two_units_agent_and_healer() -> None:
    assert [p.name for p in UNITS] == ["renderwatch-agent.service", "renderwatch-healer.service"]


@pytest.mark.parametrize("path", UNITS, ids=[p.stem for p in UNITS])
def test_units_are_hardened_and_run_the_right_command(path: Path) -> None:
    service = unit(path)["Service"]
    role = path.stem.split("-")[1]
    port = {"agent": 9464, "healer": 9465}[role]
    assert service["ExecStart"].endswith(f"renderwatch {role} --listen 0.0.0.0:{port}")
    assert service["User"] and service["User"] != "root"
    assert service["ProtectSystem"] in ("strict", "full")
    assert service["Restart"] == "always"
    assert service["StateDirectory"] == "renderwatch"
    for key, value in HARDENING.items():
        assert service[key] == value, f"{path.name}: {key}"
    assert unit(path)["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize("path", UNITS, ids=[p.stem for p in UNITS])
def test_units_pass_systemd_analyze_verify(path: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    copy = tmp_path / path.name
    copy.write_text(path.read_text().replace("/opt/renderwatch/venv/bin/renderwatch", "/bin/true"))
    proc = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    problems = [line for line in proc.stderr.splitlines() if path.name in line]
    assert not problems, "\n".join(problems)


def test_daemonset_runs_agent_and_healer_on_every_render_node() -> None:
    docs = list(yaml.safe_load_all(DAEMONSET.read_text()))
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    assert ds["apiVersion"] == "apps/v1"
    pod = ds["spec"]["template"]
    spec = pod["spec"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert spec["hostPID"] is True, "the agent samples Blender processes outside the pod"
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "9464"
    assert spec["securityContext"]["runAsNonRoot"] is True
    containers = {c["name"]: c for c in spec["containers"]}
    assert set(containers) == {"agent", "healer"}
    for name, port in (("agent", 9464), ("healer", 9465)):
        c = containers[name]
        assert c["args"] == [name, "--listen", f"0.0.0.0:{port}"]
        assert c["ports"][0]["containerPort"] == port
        assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        env = {e["name"]: e for e in c["env"]}
        assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
        assert env["RENDERWATCH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "renderwatch-token"
        assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/var/lib/renderwatch"}
    images = {c["image"] for c in containers.values()}
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    assert images == {compose["services"]["render-node"]["image"]}


OPENJD = sorted((REPO / "deploy" / "farms" / "openjd").glob("*.yaml"))


@pytest.mark.parametrize("path", OPENJD, ids=[p.stem for p in OPENJD])
def test_openjd_templates_name_renderwatch_by_a_parameter_and_pass_openjd_check(path: Path) -> None:
    """A worker whose PATH lacks renderwatch failed with `renderwatch: not found`: the command is the
    `Renderwatch` job parameter (default: renderwatch on PATH). `openjd check` is openjd-cli's own validation."""
    doc = yaml.safe_load(path.read_text())
    params = {p["name"]: p for p in doc["parameterDefinitions"]}
    assert params["Renderwatch"] == {**params["Renderwatch"], "type": "STRING", "default": "renderwatch"}
    on_run = doc["steps"][0]["script"]["actions"]["onRun"]
    assert on_run["command"] == "{{Param.Renderwatch}}"
    assert "-p Renderwatch=" in path.read_text(), "the header says how to name it"
    openjd = shutil.which("openjd") or str(Path(sys.executable).parent / "openjd")
    if not Path(openjd).exists():
        pytest.skip("openjd-cli is not installed")
    proc = subprocess.run([openjd, "check", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", OPENJD, ids=[p.stem for p in OPENJD])
def test_openjd_header_comments_name_the_cancel_mode_the_template_uses(path: Path) -> None:
    """The per-frame template's header said TERMINATE (SIGKILL at once) where it uses NOTIFY_THEN_TERMINATE."""
    mode = yaml.safe_load(path.read_text())["steps"][0]["script"]["actions"]["onRun"]["cancelation"]["mode"]
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    named = set(re.findall(r"\b(NOTIFY_THEN_TERMINATE|TERMINATE)\b", header))
    assert named == {mode}, f"{path.name}: the header names {named}, the template uses {mode}"


def test_farms_doc_says_how_to_name_renderwatch_for_every_engine() -> None:
    """The full-path workaround was given for OpenCue only: every engine's section says it."""
    doc = (REPO / "docs" / "farms.md").read_text()
    sections = dict(re.findall(r"^## ([^\n]+)\n(.*?)(?=^## |\Z)", doc, re.M | re.S))
    for engine in ("Open Job Description", "OpenCue", "Flamenco", "cron"):
        body = next((b for title, b in sections.items() if engine in title), None)
        assert body is not None, f"docs/farms.md has no section for {engine}"
        assert "/opt/renderwatch/venv/bin/renderwatch" in body, f"{engine}: no full path for renderwatch"
    assert "Renderwatch=" in sections[next(t for t in sections if "Open Job Description" in t)]
