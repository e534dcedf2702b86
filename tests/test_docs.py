"""The docs against the code, where the docs list facts of the code: metric names and labels, API reply
fields, RENDERWATCH_* environment variables, command-line flags, section references and the
classifier's precedence. Each check reads the code's own source of the fact (a real agent's and a real
healer service's metric registries, the OpenAPI documents, the argparse parsers renderwatch.cli builds),
so a doc that drifts from the code, or code that grows a fact nobody documented, fails here.

No GPU here: the agent's GPU families come from the NVML seam's fake (tests/nvml_fakes.py's TwoGpus),
the only part not real.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from agent_support import JobStream, agent_config, ndjson
from aiohttp.test_utils import TestClient, TestServer
from nvml_fakes import TwoGpus
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE_PACKAGES = ("agent", "healer", "renderwatch", "blender_hooks", "kernel")
# `renderwatch_*` words in the docs that are not metrics: the add-on's module name and the page's cookie.
NOT_METRICS = {"renderwatch_hooks", "renderwatch_page"}


def _doc_texts() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in DOCS}


# -- metrics ----------------------------------------------------------------------------------------------

def _families(registry: CollectorRegistry) -> dict[str, set[str]]:
    """Exposed name (counters with `_total`) -> label names, from every collector of a registry: the
    client's instruments say their label names, custom collectors' families say theirs or show them
    in their samples."""
    out: dict[str, set[str]] = {}
    collectors = list(registry._collector_to_names)           # noqa: SLF001 (the registry's own list)
    for c in collectors:
        if isinstance(c, MetricWrapperBase):
            name = c._name + ("_total" if c._type == "counter" else "")   # noqa: SLF001
            out.setdefault(name, set()).update(c._labelnames)            # noqa: SLF001
            continue
        for fam in c.collect():
            name = fam.name + ("_total" if fam.type == "counter" else "")
            labels = out.setdefault(name, set())
            labels.update(getattr(fam, "_labelnames", ()))
            for s in fam.samples:
                labels.update(k for k in s.labels if k != "le")
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, set[str]]:
    """Every renderwatch_* family a real agent (with a job ingested and two GPUs behind the NVML seam)
    and a real healer service register, with its label names."""
    import asyncio

    from agent.app import AGENT
    from agent.app import create_app as create_agent
    from healer.config import load_config
    from healer.service.app import create_app as create_healer

    tmp = tmp_path_factory.mktemp("docs")

    async def collect() -> dict[str, set[str]]:
        fams: dict[str, set[str]] = {}
        agent = create_agent(agent_config(tmp / "a"), nvml=TwoGpus())
        async with TestClient(TestServer(agent)) as c:
            r = await c.post("/api/v1/events", data=ndjson(JobStream("j1").whole(frames=2)))
            assert r.status == 200
            fams.update(_families(agent[AGENT].registry))
        registry = CollectorRegistry()
        env = {"RENDERWATCH_HOME": str(tmp / "h"), "RENDERWATCH_AGENT": "off", "RENDERWATCH_ALERTMANAGER_TOKEN": "t"}
        async with TestClient(TestServer(create_healer(load_config(env=env), registry=registry, nvml=TwoGpus()))):
            fams.update(_families(registry))
        return fams

    fams = asyncio.run(collect())
    return {k: v for k, v in fams.items() if k.startswith("renderwatch_")}


_METRIC = re.compile(r"`(renderwatch_[a-z0-9_]*|_[a-z][a-z0-9_]*)(\{[^}`]*\})?(\{[^}`]*\})?(\*)?`")


def documented_metrics(text: str) -> dict[str, set[str]]:
    """Metric name -> documented label names, from backquoted words: `renderwatch_x_total{a,b}`, a
    shorthand `_y_total` after a full name in the same paragraph (the full name's first word is the
    family: `renderwatch_gpu_utilization_ratio`, `_power_watts`), `renderwatch_f_{a,b}` for two names,
    `{kind=x|y}` for a label and its values. A name ending in `_*` stands for a family prefix."""
    out: dict[str, set[str]] = {}
    for para in re.split(r"\n\s*\n|\n(?=\s*[-|] )", text):
        family = None
        for m in _METRIC.finditer(para):
            word, first, second, star = m.groups()
            if word.startswith("renderwatch_"):
                if word in NOT_METRICS:
                    continue
                family = "renderwatch_" + word.split("_")[1] + "_"
                base = word
            elif family is None:
                continue                        # `_sum`, `_count` ... with no metric before them
            else:
                base = family + word[1:]
            names = [base]
            labels_block = first
            if first and base.endswith("_") and "=" not in first and second is not None:
                names = [base + alt.strip() for alt in first[1:-1].split(",")]      # `..._{a,b}{job}`
                labels_block = second
            elif first and base.endswith("_") and second is None and not star:
                names = [base + alt.strip() for alt in first[1:-1].split(",")]
                labels_block = None
            labels = set()
            if labels_block:
                for part in labels_block[1:-1].split(","):
                    label = part.split("=")[0].strip()
                    if label:
                        labels.add(label)
            for n in names:
                out.setdefault(n + ("*" if star else ""), set()).update(labels)
    return out


def _all_documented() -> dict[str, dict[str, set[str]]]:
    return {path: documented_metrics(text) for path, text in _doc_texts().items()}


def test_every_documented_metric_is_exported_with_its_labels(exported):
    wrong = []
    for path, metrics in _all_documented().items():
        for name, labels in metrics.items():
            if name.endswith("*"):
                if not any(e.startswith(name[:-1]) for e in exported):
                    wrong.append(f"{path}: `{name}` matches no exported metric")
                continue
            if name not in exported:
                wrong.append(f"{path}: `{name}` is not exported")
            elif not labels <= exported[name]:
                wrong.append(f"{path}: `{name}` has no label(s) {sorted(labels - exported[name])} "
                             f"(it has {sorted(exported[name])})")
    assert wrong == []


def test_every_exported_metric_is_documented(exported):
    documented = set().union(*(m.keys() for m in _all_documented().values()))
    assert sorted(set(exported) - documented) == []
