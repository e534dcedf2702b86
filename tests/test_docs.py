"""The docs against the code, where the docs list facts of the code: metric names and labels, API reply
fields, RENDERWATCH_* environment variables, command-line flags, section references and the
classifier's precedence. Each check reads the code's own source of the fact (a real agent's and a real
healer service's metric registries, the OpenAPI documents, the argparse parsers renderwatch.cli builds),
so a doc that drifts from the code, or code that grows a fact nobody documented, fails here.

No GPU here: the agent's GPU families come from the NVML seam's fake (tests/support/fakes.py's TwoGpus),
the only part not real.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from tests.support.agent import JobStream, agent_config, ndjson
from tests.support.fakes import TwoGpus

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


# -- environment variables -------------------------------------------------------------------------------

_ENV_NAME = re.compile(r"RENDERWATCH_[A-Z0-9_]*[A-Z0-9]")
_DOC_ENV = re.compile(r"RENDERWATCH_[A-Z0-9_*]*[A-Z0-9*]")


def code_env_vars() -> tuple[set[str], set[str]]:
    """(names, prefixes) of the RENDERWATCH_* variables the product's code reads: every string constant
    that is exactly such a name, and the constant head of an f-string (`f"RENDERWATCH_PYTHON_{v}"`)."""
    import ast

    names, prefixes = set(), set()
    for pkg in CODE_PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and _ENV_NAME.fullmatch(node.value):
                    names.add(node.value)
                elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
                    head = str(node.values[0].value)
                    if re.fullmatch(r"RENDERWATCH_[A-Z0-9_]*_", head):
                        prefixes.add(head)
    return names, prefixes


def documented_env_vars() -> dict[str, set[str]]:
    """Doc -> the RENDERWATCH_* names it mentions (`RENDERWATCH_LOG_*` is a pattern)."""
    return {path: set(_DOC_ENV.findall(text)) for path, text in _doc_texts().items()}


def test_every_environment_variable_the_code_reads_is_documented():
    import fnmatch

    names, prefixes = code_env_vars()
    documented = set().union(*documented_env_vars().values())
    plain = {d for d in documented if "*" not in d}
    missing = sorted(n for n in names if n not in plain)
    missing += sorted(p + "..." for p in prefixes if not any(d.startswith(p) for d in plain))
    assert missing == [], "read by the code, in no doc"
    assert all(any(fnmatch.fnmatchcase(n, d) for n in names) for d in documented if "*" in d)


def test_every_documented_environment_variable_exists_in_the_code():
    """Anywhere in the repository's code (the product, its tests, bench, the container entrypoints)."""
    import fnmatch

    code = "\n".join(p.read_text(encoding="utf-8", errors="replace")
                     for d in (*CODE_PACKAGES, "tests", "bench", "scripts", "docker", "deploy", "fuzz")
                     for p in sorted((ROOT / d).rglob("*"))
                     if p.is_file() and p.suffix not in (".md", ".png", ".pyc") and p != Path(__file__).resolve())
    code += (ROOT / "compose.yaml").read_text(encoding="utf-8")
    in_code = set(_ENV_NAME.findall(code))
    _, prefixes = code_env_vars()
    wrong = []
    for path, names in documented_env_vars().items():
        for d in sorted(names):
            ok = (any(fnmatch.fnmatchcase(n, d) for n in in_code) if "*" in d
                  else d in in_code or any(d.startswith(p) for p in prefixes))
            if not ok:
                wrong.append(f"{path}: {d}")
    assert wrong == [], "documented, in no code"


# -- command-line flags ----------------------------------------------------------------------------------

def cli_commands() -> dict[tuple[str, ...], list[tuple[str, ...]]]:
    """Every `renderwatch` command and subcommand (from the parser renderwatch.cli builds) -> the option
    strings of each of its options (`("--tail", "-n", "--lines")`), hidden ones (help=SUPPRESS) and
    -h left out. () is the top level."""
    from renderwatch.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> dict[tuple[str, ...], list[tuple[str, ...]]]:
        out: dict[tuple[str, ...], list[tuple[str, ...]]] = {path: []}
        for action in parser._actions:                          # noqa: SLF001 (argparse has no public list)
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for name, sub in action.choices.items():
                    out.update(walk(sub, (*path, name)))
            elif action.option_strings and action.help != argparse.SUPPRESS and "--help" not in action.option_strings:
                out[path].append(tuple(action.option_strings))
        return out

    return walk(build_parser(), ())


def _flags(options: list[tuple[str, ...]]) -> set[str]:
    return {o for opts in options for o in opts}


def _sections(text: str) -> list[str]:
    """The text under each heading (code blocks included): the unit a command's flags are documented in
    (a section names the command and lists its flags, often in a table below)."""
    out, cur, in_code = [], [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if line.startswith("#") and not in_code:
            out.append("\n".join(cur))
            cur = []
        cur.append(line)
    out.append("\n".join(cur))
    return out


def _mentions(block: str, path: tuple[str, ...]) -> bool:
    if not path:
        return "renderwatch " in block or "`renderwatch`" in block
    return f"renderwatch {path[0]}" in block and all(re.search(rf"\b{re.escape(w)}\b", block) for w in path[1:])


def _has_flag(block: str, flag: str) -> bool:
    return re.search(re.escape(flag) + r"(?![\w-])", block) is not None


def test_every_flag_of_every_command_is_documented_with_its_command():
    blocks = [b for text in _doc_texts().values() for b in _sections(text)]
    missing = [f"renderwatch {' '.join(path)} {opts[0]}".replace("  ", " ")
               for path, options in cli_commands().items() for opts in options
               if not any(_mentions(b, path) and any(_has_flag(b, o) for o in opts) for b in blocks)]
    assert missing == [], "in no README/docs section that names the command"


_COMMAND_LINE = re.compile(r"renderwatch ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)([^`\n#|;]*)")


def test_every_flag_the_docs_give_a_command_exists():
    """Flags on a documented `renderwatch CMD ...` line (up to a comment, a pipe or the end of the code
    span; nothing after ` -- `, which goes to Blender) are flags of that command's parser."""
    commands = cli_commands()
    wrong = []
    for path, text in _doc_texts().items():
        for m in _COMMAND_LINE.finditer(text):
            words, rest = m.group(1).split(), m.group(2).split(" -- ")[0]
            if (words[0],) not in commands:
                continue                        # `renderwatch is ...`: prose, not a command
            cmd = tuple(words) if tuple(words) in commands else (words[0],)
            allowed = _flags(commands[cmd]) | _flags(commands[()]) | (_flags(commands[(words[0],)]) if len(cmd) > 1 else set())
            # `jobs [submit SCENE --frames ...]`: a subcommand named later on the line brings its flags
            allowed |= set().union(*(_flags(commands.get((words[0], w), [])) for w in re.findall(r"[a-z]+", rest)))
            wrong += [f"{path}: renderwatch {' '.join(cmd)} {f}" for f in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest)
                      if f not in allowed]
    assert wrong == []


# -- API reply and request fields --------------------------------------------------------------------------

_ENDPOINT = re.compile(r"(GET|POST|PUT|DELETE) (/[A-Za-z0-9_/{}.-]+)")
_SHAPE = re.compile(r"`(?:(?:GET|POST) /[^`\s]* )?(\{[^`]*\})`")


def _openapi_docs() -> dict[str, dict]:
    from agent.openapi import SPEC
    from healer.service.openapi import spec

    return {"agent": SPEC, "healer": spec(alertmanager=True)}


def _fields(schema: object, doc: dict, depth: int = 0) -> set[str]:
    """Property names of a schema, its $refs, anyOf/oneOf/allOf branches, and (one level down) of its
    properties' and items' schemas."""
    if not isinstance(schema, dict) or depth > 3:
        return set()
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _fields(doc["components"]["schemas"][name], doc, depth)
    out = set(schema.get("properties", {})) | set(schema.get("required", []))
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(key, []):
            out |= _fields(branch, doc, depth)
    for sub in [*schema.get("properties", {}).values(), schema.get("items")]:
        out |= _fields(sub, doc, depth + 1)
    return out


def _operation_fields(doc: dict, method: str, path: str) -> set[str] | None:
    """Request and reply fields of one operation of an OpenAPI document (None: no such operation)."""
    op = doc["paths"].get(path.split("?")[0], {}).get(method.lower())
    if op is None:
        return None
    out: set[str] = set()
    bodies = [op.get("requestBody", {}), *op.get("responses", {}).values()]
    for body in bodies:
        for media in body.get("content", {}).values():
            out |= _fields(media.get("schema"), doc)
    return out


def _top_level_names(shape: str) -> set[str]:
    """The field names of the outer object of `{"a", "b": {"c"}, "d": [...]}` (or `{a, b}`): a, b, d."""
    depth, top = 0, []
    for ch in shape:
        depth += ch in "{["
        depth -= ch in "}]"
        top.append(ch if depth == 1 or ch in "{}" and depth <= 1 else " ")
    flat = "".join(top)
    return set(re.findall(r'"([a-z_]+)"', flat)) or set(re.findall(r"\b([a-z_]+)\b", flat))


def documented_shapes(text: str) -> list[tuple[str, str, set[str]]]:
    """(method, path, field names) of each backquoted `{"a", "b": [...]}` / `{a, b}` shape the docs give
    an endpoint: the last `METHOD /path` before it in the same paragraph."""
    out = []
    for para in re.split(r"\n\s*\n|\n(?=\s*- )", text):
        for m in _SHAPE.finditer(para):
            endpoints = _ENDPOINT.findall(para[:m.start() + len(m.group(0))])
            if not endpoints:
                continue
            method, path = endpoints[-1]
            out.append((method, path, _top_level_names(m.group(1))))
    return out


def test_every_reply_and_request_field_the_docs_give_is_in_the_openapi_documents():
    specs = _openapi_docs()
    checked, wrong = 0, []
    for path, text in _doc_texts().items():
        owners = [k for k in specs if k in path] or list(specs)      # docs/healer.md: the healer's document
        for method, route, names in documented_shapes(text):
            known = [f for f in (_operation_fields(specs[o], method, route) for o in owners) if f is not None]
            if not known:
                wrong.append(f"{path}: {method} {route} is in no OpenAPI document")
                continue
            checked += 1
            if not any(names <= f for f in known):
                wrong.append(f"{path}: {method} {route} has no field(s) {sorted(names - set().union(*known))}")
    assert wrong == []
    assert checked >= 4                     # the reply shapes of docs/agent.md, docs/healer.md, docs/incidents.md


# -- references to sections, and the classifier's precedence ----------------------------------------------

_SECTION_REF = re.compile(r"""README(?:'s|:|,)\s+"([^"]+)\"""")


def _headings(text: str) -> list[str]:
    return [h.strip() for h in re.findall(r"^#+ (.+)$", text, flags=re.M)]


def test_every_readme_section_the_code_and_docs_name_exists():
    readme = _headings((ROOT / "README.md").read_text(encoding="utf-8"))
    sources = {path: text for path, text in _doc_texts().items()}
    for pkg in CODE_PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            sources[str(p.relative_to(ROOT))] = p.read_text(encoding="utf-8")
    refs = [(path, name) for path, text in sources.items() for name in _SECTION_REF.findall(text)]
    assert refs, "no README section reference found: the pattern no longer matches how they are written"
    assert [f'{path}: README "{name}"' for path, name in refs if not any(h.startswith(name) for h in readme)] == []


def test_the_classifiers_precedence_docstring_lists_the_catalogs_order():
    from healer.diagnosis import classify
    from healer.diagnosis.catalog import CAUSE_ORDER, CRASH_ORDER

    doc = " ".join((classify.__doc__ or "").split())
    causes = doc.split("1. fatal causes found in the output:", 1)[1].split("; 2.", 1)[0]
    crashes = doc.split("2. how the process ended:", 1)[1].split("; 3.", 1)[0]

    def order(text: str, known: tuple[str, ...]) -> list[str]:
        """The type each `a (...) > b (...) > c` item starts with."""
        firsts = [re.match(r"\s*([a-z_]+)", item) for item in text.split(">")]
        return [m.group(1) for m in firsts if m and m.group(1) in known]

    assert order(causes, CAUSE_ORDER) == list(CAUSE_ORDER)
    assert order(crashes, CRASH_ORDER) == list(CRASH_ORDER)
