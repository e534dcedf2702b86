"""The Blender version matrix in the tests: one parameter per row of renderwatch.matrix.MATRIX.

    def test_x(matrix_blender):             # every row: Debian's 3.4 binary and each bpy wheel
        run([*matrix_blender, "-b", ...])   # an argv prefix, like a Blender binary
        matrix_blender.row.line             # "4.5"

    @pytest.mark.matrix("render")           # records the outcome in the README's support table

A row that is not set up here skips with the command that sets it up (fails under
RENDERWATCH_MATRIX_REQUIRED=1, as in CI); RENDERWATCH_BLENDER_VERSIONS=4.5 runs one row alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from blender_hooks.settings import ENV_MATRIX_REQUIRED
from renderwatch import matrix
from renderwatch.matrix import BlenderVersion


class BlenderCmd(list):
    """argv prefix of one Blender of the matrix, with its row."""

    def __init__(self, argv: list[str], row: BlenderVersion) -> None:
        super().__init__(argv)
        self.row = row

    @property
    def stats_to_handler(self) -> bool:
        """The render_stats handler gets the stats string (every wheel; 3.4 passes None)."""
        return not self.row.binary

    @property
    def has_extensions(self) -> bool:
        return tuple(int(x) for x in self.row.line.split(".")) >= (4, 2)


def params(wheels_only: bool = False) -> list:
    try:
        rows = matrix.selected()
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    return [pytest.param(v, id=v.line) for v in rows if not (wheels_only and v.binary)]


def command_for(row: BlenderVersion) -> BlenderCmd:
    cmd = row.command()
    if cmd is None:
        why = (f"Blender {row.label} is not set up here: `.venv/bin/python -m renderwatch.matrix setup "
               f"--only {row.line}`" + ("" if row.binary else f" (needs CPython {row.python})"))
        if os.environ.get(ENV_MATRIX_REQUIRED) == "1":
            pytest.fail(why)
        pytest.skip(why)
    return BlenderCmd(cmd, row)


# -- the support table: outcomes of @pytest.mark.matrix("check") tests, by row ----------------------

_RANK = {"skip": 0, "pass": 1, "fail": 2}


class Recorder:
    def __init__(self) -> None:
        self.seen: dict[str, dict[str, str]] = {}

    def record(self, item: pytest.Item, outcome: str) -> None:
        mark = item.get_closest_marker("matrix")
        callspec = getattr(item, "callspec", None)
        if mark is None or callspec is None:
            return
        row = next((v for v in callspec.params.values() if isinstance(v, BlenderVersion)), None)
        if row is None:
            return
        checks = self.seen.setdefault(row.line, {})
        for check in mark.args:   # one failure of a check marks the row failed
            checks[check] = max(checks.get(check, outcome), outcome, key=_RANK.__getitem__)

    def save(self, path: Path = matrix.RESULTS) -> None:
        if not self.seen:
            return
        merged = matrix.load_results(path)
        for line, checks in self.seen.items():   # a partial run updates only what it ran
            merged.setdefault(line, {}).update(checks)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
