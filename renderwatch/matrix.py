"""The Blender versions renderwatch supports and is tested on, and a virtualenv for each bpy wheel.

Every Blender release line a studio runs ships as a `bpy` wheel on PyPI (Blender as a Python
module): a wheel needs its own interpreter (4.2-5.0 are CPython 3.11 wheels, 5.1+ CPython 3.13)
and one bpy per virtualenv, so each row gets `.venvs/bpy-<version>/` with that wheel and
renderwatch (no dependencies: the hooks and `renderwatch-blender` are standard library only).
The 5.0 wheel lives in the main `.venv` (the `[blender]` extra), Debian's 3.4 is the `blender`
binary on PATH.

    python -m renderwatch.matrix setup [--only 4.5,5.3]   # idempotent; pip's wheel cache is reused
    python -m renderwatch.matrix list                     # each row and the command that drives it
    python -m renderwatch.matrix table [--readme]         # the support table from the last test run

`RENDERWATCH_BLENDER_VERSIONS=4.5` (a comma list of lines) restricts the tests and the benchmark
to those rows; `RENDERWATCH_MATRIX_REQUIRED=1` (set by CI) makes a row that is not set up a test
failure instead of a skip.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from blender_hooks.settings import ENV_BLENDER
from blender_hooks.settings import ENV_BLENDER_VERSIONS as ENV_VERSIONS  # noqa: F401 (names read from here)

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / ".venvs" / "matrix-results.json"   # written by the test run (tests/support/blender_matrix.py)
README_BEGIN = "<!-- support-table:begin (python -m renderwatch.matrix table --readme) -->"
README_END = "<!-- support-table:end -->"
STAMP = ".renderwatch-matrix"


@dataclass(frozen=True)
class BlenderVersion:
    """One row: a Blender release line, pinned to its latest patch release."""

    line: str                 # "4.5"
    version: str              # "4.5.15": the pinned wheel (the binary: the version Debian 12 ships)
    python: str | None        # CPython minor version of the wheel; None for the `blender` binary
    lts: bool
    main_venv: bool = False   # the wheel is the main .venv's (`pip install -e .[blender]`)

    @property
    def label(self) -> str:
        return f"{self.line} LTS" if self.lts else self.line

    @property
    def binary(self) -> bool:
        return self.python is None

    def venv(self, root: Path = REPO_ROOT) -> Path | None:
        if self.binary:
            return None
        return root / ".venv" if self.main_venv else root / ".venvs" / f"bpy-{self.version}"

    def command(self, root: Path = REPO_ROOT) -> list[str] | None:
        """argv prefix that runs this Blender like a binary, or None when it is not set up here."""
        if self.binary:
            found = os.environ.get(ENV_BLENDER) or shutil.which("blender")
            return [found] if found else None
        venv = self.venv(root)
        assert venv is not None
        exe = venv / "bin" / "renderwatch-blender"
        if exe.exists() and (self.main_venv or (venv / STAMP).exists()):
            return [str(exe)]
        return None

    def python_exe(self, root: Path = REPO_ROOT) -> Path | None:
        venv = self.venv(root)
        return None if venv is None else venv / "bin" / "python"


MATRIX: tuple[BlenderVersion, ...] = (
    BlenderVersion("3.4", "3.4.1", None, False),
    BlenderVersion("4.2", "4.2.23", "3.11", True),
    BlenderVersion("4.5", "4.5.15", "3.11", True),
    BlenderVersion("5.0", "5.0.1", "3.11", False, main_venv=True),
    BlenderVersion("5.2", "5.2.3", "3.13", True),
    BlenderVersion("5.3", "5.3.0", "3.13", False),
)


def selected(env: dict[str, str] | None = None) -> tuple[BlenderVersion, ...]:
    """The rows named in $RENDERWATCH_BLENDER_VERSIONS (all when unset). Raises ValueError on a typo."""
    e = os.environ if env is None else env
    raw = (e.get(ENV_VERSIONS) or "").strip()
    if not raw or raw == "all":
        return MATRIX
    want = [w.strip() for w in raw.split(",") if w.strip()]
    known = {v.line: v for v in MATRIX}
    bad = [w for w in want if w not in known]
    if bad:
        raise ValueError(f"{ENV_VERSIONS}: unknown Blender line(s) {', '.join(bad)}; "
                         f"known: {', '.join(known)}")
    return tuple(known[w] for w in want)


def by_line(line: str) -> BlenderVersion:
    for v in MATRIX:
        if v.line == line:
            return v
    raise KeyError(line)


def find_python(minor: str, env: dict[str, str] | None = None) -> str | None:
    """A working CPython `minor` ("3.13"): $RENDERWATCH_PYTHON_3_13, pyenv's, then PATH.

    Each candidate is run: a pyenv shim for a version that is not active exists but fails.
    """
    e = os.environ if env is None else env
    cands: list[str] = []
    if e.get(f"RENDERWATCH_PYTHON_{minor.replace('.', '_')}"):
        cands.append(e[f"RENDERWATCH_PYTHON_{minor.replace('.', '_')}"])
    if sys.version_info[:2] == tuple(int(x) for x in minor.split(".")):
        cands.append(sys.executable)
    pyenv_root = e.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    cands += sorted(glob.glob(f"{pyenv_root}/versions/{minor}.*/bin/python{minor}"), reverse=True)
    cands += [f"/usr/bin/python{minor}", f"/usr/local/bin/python{minor}"]
    found = shutil.which(f"python{minor}")
    if found:
        cands.append(found)
    for c in cands:
        try:
            out = subprocess.run([c, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == minor:
            return c
    return None


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], check=True)


def installed_bpy(python: Path) -> str | None:
    try:
        out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('bpy'))"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def setup(rows: tuple[BlenderVersion, ...], root: Path = REPO_ROOT, log=print) -> list[str]:
    """Create or update each wheel row's virtualenv. Returns the lines that could not be set up."""
    missing: list[str] = []
    for v in rows:
        if v.binary or v.main_venv:
            continue
        venv = v.venv(root)
        assert venv is not None
        stamp = venv / STAMP
        if stamp.exists() and stamp.read_text().strip() == v.version and (venv / "bin" / "renderwatch-blender").exists():
            continue
        assert v.python is not None
        py = find_python(v.python)
        if py is None:
            log(f"matrix: Blender {v.label} needs CPython {v.python}, not found (pyenv install {v.python}, "
                f"or set RENDERWATCH_PYTHON_{v.python.replace('.', '_')}): its tests will skip")
            missing.append(v.line)
            continue
        log(f"matrix: setting up Blender {v.label} (bpy=={v.version}, CPython {v.python}) in {venv.relative_to(root)}")
        if not (venv / "bin" / "python").exists():
            subprocess.run([py, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        if installed_bpy(python) != v.version:
            _pip(python, f"bpy=={v.version}")
        _pip(python, "--no-deps", "-e", str(root))   # renderwatch-blender and the hooks, nothing else
        stamp.write_text(v.version + "\n")
    return missing


def load_results(path: Path = RESULTS) -> dict[str, dict[str, str]]:
    """{line: {check: "pass"|"fail"|"skip"}} from the last test run."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


CHECKS = (("render", "render + hooks, exits by itself, counted"), ("heal", "segfault healed"),
          ("install", "hooks install/uninstall"), ("check", "`hooks check` passes"),
          ("capture", "failure output captured and classified"))


def table(results: dict[str, dict[str, str]]) -> str:
    """The README's support table: one row per version, what the last test run showed."""
    mark = {"pass": "yes", "fail": "**FAILED**", "skip": "not run"}
    head = "| Blender | how it is tested | " + " | ".join(text for _k, text in CHECKS) + " |"
    lines = [head, "|" + "---|" * (2 + len(CHECKS))]
    for v in MATRIX:
        how = ("Debian's `blender` binary (apt)" if v.binary else
               f"`bpy=={v.version}` wheel, CPython {v.python}, via `renderwatch-blender`")
        got = results.get(v.line, {})
        cells = [mark.get(got.get(key, "skip"), "not run") for key, _text in CHECKS]
        lines.append(f"| {v.label} ({v.version}) | {how} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_readme(readme: Path, text: str) -> bool:
    doc = readme.read_text()
    if README_BEGIN not in doc or README_END not in doc:
        return False
    before, rest = doc.split(README_BEGIN, 1)
    _old, after = rest.split(README_END, 1)
    readme.write_text(f"{before}{README_BEGIN}\n{text}\n{README_END}{after}")
    return True


def _version_of(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"Blender (\d+\.\d+\.\d+)", out.stdout)
    return m.group(1) if m else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m renderwatch.matrix", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup", help="create the per-version virtualenvs")
    s.add_argument("--only", help="comma list of Blender lines (default $RENDERWATCH_BLENDER_VERSIONS or all)")
    sub.add_parser("list", help="each row and the command that drives it here")
    t = sub.add_parser("table", help="the support table from the last test run")
    t.add_argument("--readme", action="store_true", help="write it into README.md between its markers")
    a = ap.parse_args(argv)
    try:
        rows = selected({ENV_VERSIONS: a.only} if getattr(a, "only", None) else None)
    except ValueError as e:
        print(f"renderwatch.matrix: {e}", file=sys.stderr)
        return 2
    if a.cmd == "setup":
        try:
            setup(rows)
        except subprocess.CalledProcessError as e:
            print(f"renderwatch.matrix: setup failed: {e}", file=sys.stderr)
            return 1
        return 0
    if a.cmd == "list":
        for v in rows:
            cmd = v.command()
            seen = _version_of(cmd) if cmd else None
            print(f"{v.label:<8} {v.version:<8} {' '.join(cmd) if cmd else '(not set up)'}"
                  + (f"  -> Blender {seen}" if seen else ""))
        return 0
    text = table(load_results())
    if a.readme:
        if not write_readme(REPO_ROOT / "README.md", text):
            print("renderwatch.matrix: README.md has no support-table markers", file=sys.stderr)
            return 1
        return 0
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
