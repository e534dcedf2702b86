"""The healer's layout is its architecture: every import (lazy ones inside functions too) between the
healer's modules, read from the source, has no cycle; the incident model imports no exporter; the
pure layers (diagnosis, policy) import no I/O layer."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEALER = REPO / "healer"


def _module(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def graph() -> dict[str, set[str]]:
    mods = {_module(p): p for p in HEALER.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in mods and t != mod and not (mod + ".").startswith(t + "."):
                    edges[mod].add(t)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges[n]):
            if state.get(m) == 1:
                found.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)
    return found


def test_no_import_cycle_in_the_healer():
    assert cycles(graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_incident_model_imports_no_exporter():
    edges = graph()
    assert not {e for e in edges["healer.incidents.model"] if e.startswith("healer.incidents.")}


def test_the_pure_layers_import_no_io_layer():
    edges = graph()
    pure = [m for m in edges if m.startswith("healer.diagnosis") and m != "healer.diagnosis.cli"]
    pure += ["healer.supervising.policy", "healer.supervising.outcome"]
    for m in pure:
        bad = {e for e in edges[m] if e.startswith(("healer.service", "healer.incidents", "healer.supervising."))
               and e != "healer.supervising.policy"}
        assert not bad, f"{m} imports {bad}"
