"""No test that cannot fail: every test function of tests/ (read from the source, not run) states a check,
never asserts a constant, and never swallows its own assertion. A check is an `assert`, a `raise`,
pytest.raises/fail/warns, a call of the shared robustness oracle (fuzz.oracle), schemathesis's
call_and_validate, a call of a name that starts with assert/check/expect, or a call of a function of the
same module that itself checks. Found by this scan: tests/integration/test_security.py's leading-dash test
called job_dir and asserted nothing."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CHECK_CALLS = {"raises", "fail", "warns", "deprecated_call", "call_and_validate"}
CHECK_PREFIXES = ("assert", "check", "expect")
BROAD = {"Exception", "BaseException", "AssertionError"}

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _called(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _reads(fn: Function) -> tuple[bool, set[str]]:
    """Whether `fn` checks by itself, and the names it calls."""
    calls: set[str] = set()
    direct = False
    for node in ast.walk(fn):
        if isinstance(node, (ast.Assert, ast.Raise)):
            direct = True
        elif isinstance(node, ast.Call):
            name = _called(node) or ""
            f = node.func
            if name in CHECK_CALLS or name.startswith(CHECK_PREFIXES) or (
                    isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "oracle"):
                direct = True
            calls.add(name)
    return direct, calls


def _checking(tree: ast.Module) -> dict[Function, bool]:
    """Each function of the module: does it check, by itself or through a function of the module that does."""
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    read = {fn: _reads(fn) for fn in funcs}
    helpers = {fn.name for fn in funcs if read[fn][0]}
    grew = True
    while grew:
        more = {fn.name for fn in funcs if fn.name not in helpers and read[fn][1] & helpers}
        helpers |= more
        grew = bool(more)
    return {fn: read[fn][0] or bool(read[fn][1] & helpers) for fn in funcs}


def _problems(fn: Function, checks: bool) -> list[str]:
    out = [] if checks else ["checks nothing"]
    for node in ast.walk(fn):
        if isinstance(node, ast.Assert) and isinstance(node.test, ast.Constant) and node.test.value:
            out.append(f"asserts a constant (l.{node.lineno})")
        if isinstance(node, ast.Assert) and isinstance(node.test, ast.IfExp):
            out.append(f"asserts a conditional expression, true on one branch whatever happens (l.{node.lineno})")
        if isinstance(node, ast.Try) and any(isinstance(x, ast.Assert) for s in node.body for x in ast.walk(s)):
            for h in node.handlers:
                broad = h.type is None or (isinstance(h.type, ast.Name) and h.type.id in BROAD)
                if broad and all(isinstance(s, ast.Pass) for s in h.body):
                    out.append(f"swallows its assertion (l.{node.lineno})")
    return out


def scan(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for fn, checks in _checking(tree).items():
            if fn.name.startswith("test"):
                found += [f"{path.relative_to(root.parent)}:{fn.lineno} {fn.name}: {p}" for p in _problems(fn, checks)]
    return found


def test_no_test_that_cannot_fail() -> None:
    assert scan(TESTS) == []


def test_the_scan_finds_each_kind(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text(
        "def helper(x):\n    assert x\n\n"
        "def test_runs_only():\n    job_dir('a')\n\n"
        "def test_constant():\n    assert True\n\n"
        "def test_conditional(p):\n    assert f() == 1 if p else True\n\n"
        "def test_swallowed():\n    try:\n        assert f()\n    except AssertionError:\n        pass\n\n"
        "def test_through_a_helper():\n    helper(1)\n\n"
        "def test_states_its_check():\n    assert f() == 1\n")
    got = "\n".join(scan(tmp_path))
    for name in ("test_runs_only: checks nothing", "test_constant: asserts a constant",
                 "test_conditional: asserts a conditional", "test_swallowed: swallows its assertion"):
        assert name in got, got
    assert "test_through_a_helper" not in got and "test_states_its_check" not in got, got
