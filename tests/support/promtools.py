"""A real Prometheus for tests: Debian's `prometheus` binary on a free port, scraping the targets a
test serves, with the repository's rule files, queried over its HTTP API.

The scrape jobs take their honor_labels and relabelling from collector/prometheus/prometheus.yml
when a job of the same name is there, so a test sees the labels production sees (`instance` is the
host without the port, `job` on per-job series is the render job). Targets are handed over through
file-based service discovery, as on a farm. Rule groups keep their expressions verbatim; only their
`interval` is shortened (to `evaluation_interval`) so results appear within seconds.

Prometheus 2.42 scrapes a new target about 5.5 s after it starts (its target-update ticker):
start one per test module or session, not per test.

Usage::

    prom = start_prometheus({"renderwatch-agent": ["127.0.0.1:9464"]}, rule_files=RULE_FILES)
    try:
        prom.wait_for_scrapes("renderwatch-agent", 2)
        result = query(prom.url, "sum(rate(renderwatch_frames_rendered_total[1m]))")
    finally:
        prom.stop()
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "collector" / "prometheus"
PROMETHEUS_YML = PROMETHEUS_DIR / "prometheus.yml"
RULE_FILES = tuple(sorted((PROMETHEUS_DIR / "rules").glob("*.yml")))
_LISTENING = re.compile(r'msg="Listening on" address=([0-9.]+:[0-9]+)')
# Settings of a production scrape job a test job inherits (targets and timing are the test's own).
_INHERITED = ("honor_labels", "honor_timestamps", "relabel_configs", "metric_relabel_configs", "metrics_path",
              "scheme", "params")


class PromQLError(RuntimeError):
    """Prometheus answered a query with an error (bad expression, timeout...)."""


def binary(name: str) -> str:
    """Path of `prometheus` or `promtool`; a clear failure when it is not installed."""
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} is not installed: `./bootstrap test` installs Debian's prometheus")
    return path


def _get(url: str, timeout: float = 10.0) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:       # 400/422: the body names the error
        body = json.loads(e.read() or b"{}")
        raise PromQLError(f"{body.get('errorType', e.code)}: {body.get('error', e.reason)}") from None


def query(url: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    """Evaluate `expr` at `at` (default now) with /api/v1/query; return the result list (vector
    elements, matrix series, or one [time, value] pair wrapped in a list for scalars)."""
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    body = _get(f"{url}/api/v1/query?{urllib.parse.urlencode(params)}")
    if body.get("status") != "success":
        raise PromQLError(f"{body.get('errorType')}: {body.get('error')}")
    data = body["data"]
    if data["resultType"] in ("scalar", "string"):
        return [{"value": data["result"]}]
    return list(data["result"])


def wait_for(url: str, expr: str, timeout: float = 30.0, interval: float = 0.25) -> list[dict[str, Any]]:
    """Poll `expr` until it returns something; return it, or raise TimeoutError with the last answer."""
    deadline = time.monotonic() + timeout
    last: list[dict[str, Any]] = []
    while True:
        last = query(url, expr)
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"no result for {expr!r} within {timeout:.0f}s")
        time.sleep(interval)


@dataclass
class Prometheus:
    """A running Prometheus: `url`, its working directory and log; `stop()` ends it."""

    url: str
    process: subprocess.Popen[bytes]
    directory: Path
    log_path: Path
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        return query(self.url, expr, at)

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        return wait_for(self.url, expr, timeout)

    def wait_for_scrapes(self, job: str, count: int = 2, timeout: float = 30.0) -> None:
        """Wait until every target of `job` has been scraped successfully at least `count` times."""
        expr = f'min(sum_over_time(up{{job="{job}"}}[1h])) >= {count}'
        self.wait_for(expr, timeout)

    def wait_for_rules(self, timeout: float = 30.0) -> None:
        """Wait until every rule group has been evaluated at least once since the last scrape began."""
        deadline = time.monotonic() + timeout
        while True:
            groups = _get(f"{self.url}/api/v1/rules")["data"]["groups"]
            if groups and all(g.get("lastEvaluation", "").startswith("20") for g in groups):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("rule groups were not evaluated in time")
            time.sleep(0.25)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop Prometheus (SIGTERM, then SIGKILL after 10 s) and remove its directory if it made one."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _production_jobs(config: Path) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(config.read_text())
    return {job["job_name"]: job for job in data.get("scrape_configs", [])}


def _copy_rules(rule_files: Sequence[Path], out: Path, interval: str) -> list[str]:
    """Copy rule files with every group's interval set to `interval` (expressions untouched)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, src in enumerate(rule_files):
        data = yaml.safe_load(Path(src).read_text())
        for group in data.get("groups", []):
            group["interval"] = interval
        dst = out / f"{i:02d}-{Path(src).name}"
        dst.write_text(yaml.safe_dump(data, sort_keys=False))
        paths.append(str(dst))
    return paths


def backfill(openmetrics: str, data_dir: Path) -> None:
    """Write historic samples (OpenMetrics text with timestamps) as TSDB blocks into `data_dir`,
    with `promtool tsdb create-blocks-from openmetrics`: the way to give a test Prometheus a past."""
    data_dir.mkdir(parents=True, exist_ok=True)
    src = data_dir.parent / "history.om"
    src.write_text(openmetrics)
    proc = subprocess.run([binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(src), str(data_dir)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"promtool backfill failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def start_prometheus(targets: Mapping[str, Sequence[str]], rule_files: Sequence[Path | str] = RULE_FILES, *,
                     scrape_interval: str = "1s", evaluation_interval: str = "1s",
                     history: str | None = None, config: Path = PROMETHEUS_YML,
                     alertmanager: str | None = None, workdir: Path | None = None,
                     extra_args: Sequence[str] = (), timeout: float = 30.0) -> Prometheus:
    """Start Prometheus scraping `targets` ({job name: ["host:port", ...]}) every `scrape_interval`
    and evaluating `rule_files`. `history`: OpenMetrics text backfilled before start (see
    `backfill`), for rules and panels that look back further than the test has run.
    `alertmanager`: "host:port" to send alerts to. Returns when the HTTP API answers."""
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="promtools-")
        workdir = Path(tmp.name)
    workdir = Path(workdir)
    data_dir = workdir / "data"
    sd_dir = workdir / "targets"
    sd_dir.mkdir(parents=True, exist_ok=True)
    if history:
        backfill(history, data_dir)

    production = _production_jobs(config)
    scrape_configs = []
    for job, addresses in targets.items():
        (sd_dir / f"{job}.json").write_text(json.dumps([{"targets": list(addresses), "labels": {}}]))
        scrape: dict[str, Any] = {k: v for k, v in production.get(job, {}).items() if k in _INHERITED}
        scrape.update({"job_name": job, "scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                       "file_sd_configs": [{"files": [str(sd_dir / f"{job}.json")], "refresh_interval": "1s"}]})
        scrape_configs.append(scrape)
    cfg: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "rule_files": _copy_rules([Path(p) for p in rule_files], workdir / "rules", evaluation_interval),
        "scrape_configs": scrape_configs,
    }
    if alertmanager:
        cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    log_path = workdir / "prometheus.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [binary("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={data_dir}", "--web.listen-address=127.0.0.1:0",
             "--storage.tsdb.retention.time=30d", "--web.enable-lifecycle", *extra_args],
            stdout=log, stderr=subprocess.STDOUT)
    handle = Prometheus("", process, workdir, log_path, tmp)
    deadline = time.monotonic() + timeout
    try:
        while not handle.url:
            m = _LISTENING.search(handle.log())
            if m:
                handle.url = f"http://{m.group(1)}"
            elif process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {process.returncode}:\n{handle.log()[-3000:]}")
            elif time.monotonic() > deadline:
                raise TimeoutError(f"prometheus did not start listening:\n{handle.log()[-3000:]}")
            else:
                time.sleep(0.05)
        while True:
            try:
                with urllib.request.urlopen(f"{handle.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus not ready:\n{handle.log()[-3000:]}")
            time.sleep(0.05)
    except BaseException:
        handle.stop()
        raise
    return handle


# --- dashboards ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str
    datasource: str          # datasource uid


def panel_queries(dashboard: Mapping[str, Any]) -> Iterator[PanelQuery]:
    """Every target of every panel (rows included) of a dashboard's JSON model."""
    def walk(panels: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))

    for panel in walk(dashboard.get("panels", [])):
        for t in panel.get("targets", []):
            ds = (t.get("datasource") or panel.get("datasource") or {}).get("uid", "")
            expr = t.get("expr") if "expr" in t else t.get("query", "")
            yield PanelQuery(dashboard.get("title", ""), panel.get("title", ""), t.get("refId", ""), expr or "", ds)


# Grafana's built-in variables, as a test replaces them: ranges long enough for a few scrapes.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h", "__range_s": "3600",
            "__interval_ms": "15000"}


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace Grafana variables ($name, ${name}, ${name:format}, [[name]]) with test values
    (BUILTINS plus `variables`, e.g. {"host": ".*"}); an unknown variable raises KeyError."""
    values = {**BUILTINS, **variables}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", repl, expr)
