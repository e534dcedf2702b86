"""Prometheus and Alertmanager configuration, checked by their own tools (Debian's promtool and
amtool): the scrape config, the recording and alert rules, their promtool unit tests, and the
alert routing to the healer."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.promtools import PROMETHEUS_DIR, PROMETHEUS_YML, RULE_FILES, binary

REPO = Path(__file__).resolve().parents[2]
ALERTMANAGER_YML = REPO / "collector" / "alertmanager" / "alertmanager.yml"
RUNBOOKS = REPO / "docs" / "runbooks.md"
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))
ALERTS = ("RenderStalled", "RenderCrashLoop", "FrameTimeRegression", "GPUMemoryNearFull", "GPUOverheating",
          "HostMemoryPressure", "AgentDown", "HealerGaveUp", "RenderFramesSuspect")


def run(*argv: str | Path, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120)


def rules() -> list[dict]:
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(group["rules"])
    return out


def test_scrape_config_syntax_is_valid() -> None:
    proc = run(binary("promtool"), "check", "config", "--syntax-only", PROMETHEUS_YML)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scrape_config_is_valid_with_its_files(tmp_path: Path) -> None:
    """The full check (rule files, file_sd files, credentials files), with the example file_sd
    targets in place and the token the compose stack mounts at /run/secrets written locally."""
    conf = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, conf)
    for example in (conf / "targets" / "example").glob("*.json"):
        shutil.copy(example, conf / "targets" / f"{example.stem}-example.json")
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    text = (conf / "prometheus.yml").read_text()
    assert "/run/secrets/renderwatch_token" in text
    (conf / "prometheus.yml").write_text(text.replace("/run/secrets/renderwatch_token", str(token)))
    proc = run(binary("promtool"), "check", "config", conf / "prometheus.yml", cwd=conf)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_scrape_jobs_cover_agents_and_healers_every_5s_with_static_and_file_sd() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    for name, port in (("renderwatch-agent", 9464), ("renderwatch-healer", 9465)):
        job = jobs[name]
        assert job["scrape_interval"] == "5s"
        assert job["honor_labels"] is True, "the render job id travels in the `job` label"
        assert any(t.endswith(f":{port}") for sc in job["static_configs"] for t in sc["targets"])
        assert job["file_sd_configs"][0]["files"]
        assert job["authorization"]["credentials_file"]
        relabel = job["relabel_configs"][0]
        assert relabel["target_label"] == "instance"
        assert re.fullmatch(relabel["regex"], "render-07.farm:9464").group(1) == "render-07.farm"  # type: ignore[union-attr]
    example = yaml.safe_load((PROMETHEUS_DIR / "targets" / "example" / "agents.json").read_text())
    assert all(t.endswith(":9464") for group in example for t in group["targets"])


def test_rule_files_are_valid() -> None:
    proc = run(binary("promtool"), "check", "rules", *RULE_FILES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stdout + proc.stderr


def test_promtool_unit_tests_pass() -> None:
    proc = run(binary("promtool"), "test", "rules", *RULE_TESTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_every_alert_is_there_with_severity_summary_description_and_runbook() -> None:
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert set(ALERTS) <= set(alerts)
    anchors = {re.sub(r"[^a-z0-9]+", "", line[3:].lower()) for line in RUNBOOKS.read_text().splitlines()
               if line.startswith("## ")}
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        ann = rule["annotations"]
        assert ann["summary"] and ann["description"], name
        path, anchor = ann["runbook"].split("#")
        assert (REPO / path).exists() and anchor in anchors, f"{name}: runbook {ann['runbook']}"


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert alerts <= fired, f"no firing test for {sorted(alerts - fired)}"
    assert alerts <= quiet, f"no quiet test for {sorted(alerts - quiet)}"


def test_every_recording_rule_has_a_value_test() -> None:
    tested = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("promql_expr_test", []):
                tested.update(re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", check["expr"]))
    recorded = {r["record"] for r in rules() if "record" in r}
    assert recorded <= tested, f"untested recording rules: {sorted(recorded - tested)}"


def test_alertmanager_config_is_valid() -> None:
    proc = run(binary("amtool"), "check-config", ALERTMANAGER_YML)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize(("labels", "receivers"), [
    (["alertname=RenderStalled", "job=demo-1", "severity=critical"], "healer,webhook"),
    (["alertname=GPUOverheating", "uuid=GPU-1", "severity=critical"], "healer,webhook"),
    (["alertname=RenderCrashLoop", "severity=critical"], "healer,webhook"),
    (["alertname=AgentDown", "severity=warning"], "webhook"),
    (["alertname=FrameTimeRegression", "severity=warning"], "webhook"),
    (["alertname=HealerGaveUp", "severity=critical"], "webhook"),
])
def test_alerts_the_healer_acts_on_reach_it_and_every_alert_reaches_the_webhook(labels: list[str],
                                                                                 receivers: str) -> None:
    proc = run(binary("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}", *labels)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == receivers


def test_healer_receiver_posts_to_the_healer_with_a_bearer_token_file() -> None:
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    healer = next(r for r in config["receivers"] if r["name"] == "healer")
    hook = healer["webhook_configs"][0]
    assert hook["url"] == "http://healer:9465/api/v1/alertmanager"
    assert hook["send_resolved"] is True
    assert hook["http_config"]["authorization"] == {"type": "Bearer",
                                                    "credentials_file": "/run/secrets/renderwatch_token"}
