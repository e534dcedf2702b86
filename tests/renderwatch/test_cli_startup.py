"""The per-task start cost: a farm launches `renderwatch exec` / `render` once per frame, so building the
command line must not import what only other commands use. Found by the farm benchmark: the `jobs`
client, registered by every command, imported urllib.request (http.client, ssl, email) at the top, about
25 ms of each start; a fresh interpreter is used so nothing is imported already."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("urllib.request", "aiohttp", "sentry_sdk", "opentelemetry", "prometheus_client", "PIL",
         "blender_asset_tracer", "http.client")   # (not ssl: asyncio imports it, and exec runs on asyncio)
PROBE = ("import json, sys\nfrom renderwatch.cli import build_parser\nbuild_parser(sys.argv[1:])\n"
         f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")


@pytest.mark.parametrize("argv", [["exec", "--", "blender", "-b", "a.blend", "-f", "1"],
                                  ["render", "a.blend", "--frames", "1"], ["jobs", "list"]])
def test_building_the_command_line_imports_nothing_heavy(argv):
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [], f"`renderwatch {argv[0]}` imports {out.stdout.strip()} before it runs"


AFTER_SPAWN = ("healer.images.read", "healer.images.judge", "healer.supervising.suspects", "healer.diagnosis.classify",
               "numpy", "tomllib", "statistics")
BEFORE_SPAWN = ("import json, sys\nimport healer.cli\nfrom healer.config import load_config\n"
                "from healer.supervising.supervisor import Supervisor\nload_config(env={})\n"
                f"print(json.dumps(sorted(m for m in {AFTER_SPAWN!r} if m in sys.modules)))")


def test_what_a_task_imports_before_blender_starts_leaves_the_checks_for_later():
    """The supervisor, its config and everything up to the launch: the frame checks, the classifier and
    the TOML reader (no config file) are imported once Blender runs, so its start-up hides their cost."""
    out = subprocess.run([sys.executable, "-c", BEFORE_SPAWN], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [], f"imported before Blender starts: {out.stdout.strip()}"


BEFORE_PRESTART = ("dataclasses", "typing", "logging", "psutil", "healer.config", "healer.supervising.ledger",
                   "healer.supervising.supervisor", "healer.diagnosis.catalog")
PRESTART = ("import json, sys\nfrom renderwatch.cli import build_parser\n"
            "args = build_parser(sys.argv[1:]).parse_args(sys.argv[1:])\n"
            "from healer.supervising.blender_argv import parse_blender_argv\n"
            "from healer.supervising.spawn import LaunchSpec, build_argv, split_gate_env, attempt_env\n"
            "p = parse_blender_argv(args.rest[1:])\n"
            "build_argv(LaunchSpec(blender=p.blender, scene=p.scene, frames=p.frames, output=p.output))\n"
            "split_gate_env(attempt_env('', 0))\n"
            f"print(json.dumps(sorted(m for m in {BEFORE_PRESTART!r} if m in sys.modules)))")


def test_what_exec_imports_before_its_blender_is_prestarted_is_the_standard_library_minimum():
    """`renderwatch exec` starts its Blender (at the gate) from the command line alone: the dataclass
    machinery, typing, logging, psutil, the config and the supervisor (~0.1 s of a farm task on a slow
    node) load after it, while Blender starts up."""
    argv = ["exec", "--", "blender", "-b", "a.blend", "-o", "//f_####", "-f", "1"]
    out = subprocess.run([sys.executable, "-c", PRESTART, *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [], f"imported before the prestart: {out.stdout.strip()}"
