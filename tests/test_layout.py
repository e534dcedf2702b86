"""The healer's layout is its architecture: every import (lazy ones inside functions too) between the
healer's modules, read from the source, has no cycle; the incident model imports no exporter; the
pure layers (diagnosis, policy) import no I/O layer; the image judgement and diagnosis read no file."""

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
    pure += ["healer.supervising.policy"]
    for m in pure:
        bad = {e for e in edges[m] if e.startswith(("healer.service", "healer.incidents", "healer.supervising."))
               and e != "healer.supervising.policy"}
        assert not bad, f"{m} imports {bad}"


# What a pure module may import: the standard library's pure parts and the pure modules beside it.
PURE_IMPORTS = {"__future__", "bisect", "collections", "collections.abc", "copy", "dataclasses", "enum",
                "functools", "itertools", "math", "re", "statistics", "typing"}
IO_BUILTINS = {"open", "input", "print", "exec", "eval", "compile", "__import__", "breakpoint"}


def io_found(source: str, also_pure: tuple[str, ...], allowed_functions: tuple[str, ...] = ()) -> list[str]:
    """Every import outside PURE_IMPORTS and `also_pure` (module prefixes), and every call of an I/O
    builtin, in `source`, lazy ones too; the bodies of `allowed_functions` are not read."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in allowed_functions:
            skip |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else ["(relative)"]
        names = [n for n in names if n not in PURE_IMPORTS and not n.startswith(also_pure)]
        found += [f"line {node.lineno}: import {n}" for n in names]    # type: ignore[attr-defined]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IO_BUILTINS:
            found.append(f"line {node.lineno}: {node.func.id}()")
    return found


def test_the_image_judgement_does_no_io():
    """healer.images.judge judges values (healer.images.facts); the files are read in healer.images.read."""
    for name in ("judge", "facts"):
        path = HEALER / "images" / f"{name}.py"
        assert io_found(path.read_text(), ("healer.images.facts", "blender_hooks.events")) == [], path


def test_diagnosis_reads_no_file_but_in_its_command_and_the_crash_file_reader():
    """The README's word: diagnosis/ is pure but for `cli.py` (the `renderwatch classify` command) and
    `crashfile.read_crash_file`."""
    for path in sorted((HEALER / "diagnosis").glob("*.py")):
        if path.name == "cli.py":
            continue
        allowed = ("read_crash_file",) if path.name == "crashfile.py" else ()
        assert io_found(path.read_text(), ("healer.diagnosis",), allowed) == [], path


def test_the_io_check_finds_io():
    src = ("import os\nfrom pathlib import Path\nimport re\n\ndef f(p):\n    import socket\n    return open(p)\n\n"
           "def g(p):\n    return open(p)\n")
    assert io_found(src, (), ("g",)) == ["line 1: import os", "line 2: import pathlib", "line 6: import socket",
                                         "line 7: open()"]
