"""The layout is the architecture. The whole tree stands on floors and no import runs upward (every
import read from the source, lazy ones inside functions too); inside the healer no import cycle; the
incident model imports no exporter; the pure layers (diagnosis, policy) import no I/O layer; the image
judgement and diagnosis read no file."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEALER = REPO / "healer"


def _module(path: Path, repo: Path = REPO) -> str:
    rel = path.relative_to(repo).with_suffix("")
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
    pure = [m for m in edges if m.startswith("healer.diagnosis")]
    pure += ["healer.supervising.policy", "healer.supervising.outcome"]
    for m in pure:
        # the incident model is values only (its kinds; it imports no exporter: the test above)
        bad = {e for e in edges[m] if e.startswith(("healer.service", "healer.incidents", "healer.supervising."))
               and e not in ("healer.supervising.policy", "healer.incidents.model")}
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


def test_diagnosis_reads_no_file_but_in_the_crash_file_reader():
    """The README's word: diagnosis/ is pure but for `crashfile.read_crash_file` (the `renderwatch
    classify` command that reads logs is renderwatch/classify.py)."""
    for path in sorted((HEALER / "diagnosis").glob("*.py")):
        allowed = ("read_crash_file",) if path.name == "crashfile.py" else ()
        assert io_found(path.read_text(), ("healer.diagnosis",), allowed) == [], path


def test_the_io_check_finds_io():
    src = ("import os\nfrom pathlib import Path\nimport re\n\ndef f(p):\n    import socket\n    return open(p)\n\n"
           "def g(p):\n    return open(p)\n")
    assert io_found(src, (), ("g",)) == ["line 1: import os", "line 2: import pathlib", "line 6: import socket",
                                         "line 7: open()"]


# -- the whole tree's floors --------------------------------------------------------------------------
# Each package stands on the floors below it and never imports upward (lazy imports inside functions
# count too):
#   1 blender_hooks/  runs inside Blender, shipped into it alone: the standard library and itself only
#                     (bpy and Blender's other modules in addon.py alone, the one module Blender runs)
#   2 kernel/         the shared kernel every package may import (paths, files, listen, the console)
#   3 agent/, healer/ the two services, side by side (neither imports the other's modules)
#   4 renderwatch/    the command layer: `renderwatch` and its commands
#   5 fuzz/           the fuzz targets and the one robustness oracle (fuzz/oracle.py)
#   6 bench/          the benchmarks, which judge with that oracle (tests/ stands above all, not walked)
FLOORS = {"blender_hooks": 1, "kernel": 2, "agent": 3, "healer": 3, "renderwatch": 4, "fuzz": 5, "bench": 6}
BLENDER_MODULES = {"bpy", "mathutils", "bmesh", "bpy_extras", "gpu", "aud", "bl_math", "idprop", "freestyle", "_cycles"}
# The one module that imports bpy. blender_hooks/wheel_cli.py (`renderwatch-blender`) is Blender's own
# command line for the bpy wheel: it runs in the process that becomes Blender and imports the add-on's
# module (so bpy) inside its main(), after parsing; anything outside blender_hooks/ that needs bpy's
# side does the same, lazily (importing the add-on at a module's top would load bpy, 0.3-0.6 s, into
# every process that merely imports that module).
ADDON = "blender_hooks.addon"


def _imports(path: Path, repo: Path = REPO) -> list[tuple[str, bool]]:
    """Every module `path` imports, absolute (relative imports resolved), with whether the import
    stands at the module's top level (False: inside a function, run when called)."""
    mod = _module(path, repo)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    nested: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            nested.update(id(n) for n in ast.walk(fn) if n is not fn)
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) not in nested) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.append((base, id(node) not in nested))
            found += [(f"{base}.{a.name}", id(node) not in nested) for a in node.names]
    return found


def layer_violations(repo: Path = REPO) -> list[str]:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad: list[str] = []
    for pkg, floor in FLOORS.items():
        for path in sorted((repo / pkg).rglob("*.py")):
            mod, rel = _module(path, repo), path.relative_to(repo)
            for target, top_level in _imports(path, repo):
                head = target.split(".")[0]
                if head in BLENDER_MODULES and mod != ADDON:
                    bad.append(f"{rel}: imports {target} (bpy belongs to {ADDON} alone)")
                elif pkg == "blender_hooks" and head not in FLOORS and head not in stdlib and head not in BLENDER_MODULES:
                    bad.append(f"{rel}: imports {target} (the hooks run inside Blender: standard library only)")
                elif head in FLOORS and head != pkg and FLOORS[head] >= floor:
                    bad.append(f"{rel}: imports {target} (floor {FLOORS[head]} from floor {floor})")
                elif (target == ADDON or target.startswith(ADDON + ".")) and pkg != "blender_hooks" and top_level:
                    bad.append(f"{rel}: imports {target} at its top (it imports bpy: only inside a function)")
    return sorted(set(bad))


def test_no_package_imports_upward():
    assert layer_violations() == []


def test_the_floor_check_finds_each_kind_of_wrong_import(tmp_path):
    files = {
        "blender_hooks/__init__.py": "", "blender_hooks/addon.py": "import bpy\nimport mathutils\n",
        "blender_hooks/bad.py": "import numpy\nfrom . import addon\n\ndef f():\n    from kernel import paths\n",
        "kernel/__init__.py": "", "kernel/paths.py": "from blender_hooks import settings\nimport bpy\n",
        "agent/__init__.py": "", "agent/x.py": "from healer import cli\n",
        "healer/__init__.py": "", "healer/x.py": "def f():\n    import renderwatch.cli\n",
        "renderwatch/__init__.py": "", "renderwatch/x.py": "from blender_hooks import addon\n\ndef f():\n"
                                                         "    from blender_hooks import addon\n",
        "bench/__init__.py": "", "fuzz/__init__.py": "", "fuzz/x.py": "from bench import x\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = {line.split(" (")[0] for line in layer_violations(tmp_path)}
    assert found == {
        "blender_hooks/bad.py: imports numpy", "blender_hooks/bad.py: imports kernel",
        "blender_hooks/bad.py: imports kernel.paths", "kernel/paths.py: imports bpy",
        "agent/x.py: imports healer", "agent/x.py: imports healer.cli", "healer/x.py: imports renderwatch.cli",
        "renderwatch/x.py: imports blender_hooks.addon at its top", "fuzz/x.py: imports bench", "fuzz/x.py: imports bench.x",
    }
