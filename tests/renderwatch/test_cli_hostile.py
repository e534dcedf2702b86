"""Every subcommand and flag of `renderwatch`, and every environment variable it reads, with hostile
values (empty, `..`, 300 characters, a non-UTF-8 byte, `nan`, `1e999`, `/proc/...`, a folder, a FIFO, a
binary or too deeply nested config, `~nouser`): each run ends in a clear message and a status, never a
traceback, never the "internal error" line of renderwatch.cli (exit 70), and never hangs where it
should answer. The commands are the real console command in a subprocess; Blender is /bin/false, so a
value that is accepted fails fast at the first launch instead of rendering."""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from renderwatch.cli import EXIT_INTERNAL, build_parser

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 6.0


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("hostile")
    (d / "file").write_text("x")
    (d / "dir").mkdir()
    (d / "bin.toml").write_bytes(b"\xff\xfe\x00[x")
    (d / "deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000)
    os.mkfifo(d / "fifo")
    values = ["", "..", "x" * 300, "\udce9", "nan", "/proc/renderwatch-x", str(d / "dir"), str(d / "file"),
              str(d / "deep.toml"), str(d / "fifo"), "~no-such-user-rw/x", "http://h:abc"]
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    with socket.socket() as s:              # a port nothing listens on: a client is refused at once
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RENDERWATCH_", "SENTRY_"))}
    env.update(RENDERWATCH_HOME=str(d / "home"), RENDERWATCH_AGENT="off", RENDERWATCH_BLENDER="/bin/false",
               # a listener that must fail fast: an address already in use
               RENDERWATCH_AGENT_LISTEN=f"127.0.0.1:{port}", RENDERWATCH_HEALER_LISTEN=f"127.0.0.1:{closed}",
               PYTHONPATH=str(REPO))
    yield {"values": values, "env": env, "dir": d}
    busy.close()


def _commands() -> list[tuple[list[str], list[argparse.Action], list[argparse.Action]]]:
    out = []

    def walk(p: argparse.ArgumentParser, prefix: list[str]) -> None:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        opts = [a for a in p._actions if a.option_strings and a.nargs != 0
                and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]
        pos = [a for a in p._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
               and a.nargs not in ("*", "...", argparse.REMAINDER)]
        if prefix:
            out.append((prefix, opts, pos))
        for s in subs:
            for name, sp in s.choices.items():
                walk(sp, prefix + [name])

    walk(build_parser([]), [])
    return out


COMMANDS = _commands()
# what a command needs besides the value under test to get as far as using it
_TAIL = {("render",): ["x.blend", "--frames", "1"], ("exec",): ["--", "/bin/false", "-b", "x.blend", "-f", "1"],
         ("status",): ["--once"], ("jobs", "submit"): ["x.blend"]}


def _run(argv: list[str], env: dict, cwd: Path) -> tuple[list[str], object, str]:
    try:
        p = subprocess.run([sys.executable, "-m", "renderwatch", *argv], env=env, cwd=cwd, capture_output=True,
                           timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
        return argv, p.returncode, p.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return argv, "timeout", ""


def _judge(results, may_run: bool = False) -> list[str]:
    bad = []
    for argv, rc, err in results:
        if "Traceback" in err or rc == EXIT_INTERNAL or (rc == "timeout" and not may_run):
            last = [line for line in err.splitlines() if line.strip()][-1:]
            bad.append(f"{argv[:4]} -> {rc} {last}")
    return bad


# A command that serves or watches may accept a value and run until stopped: a time-out is fine there.
_RUNS = {("agent",), ("healer",), ("demo",)}


@pytest.mark.parametrize("prefix, opts, pos", COMMANDS, ids=[" ".join(c[0]) for c in COMMANDS])
def test_every_flag_with_hostile_values(prefix, opts, pos, hostile, tmp_path):
    cases = []
    for action in opts:
        for v in hostile["values"]:
            cases.append([*prefix, action.option_strings[-1], v, *_TAIL.get(tuple(prefix), [])])
    for _ in pos:
        for v in hostile["values"]:
            cases.append([*prefix, v])
    if not cases:
        pytest.skip(f"`renderwatch {' '.join(prefix)}` takes no value")
    with cf.ThreadPoolExecutor(3) as ex:
        results = list(ex.map(lambda c: _run(c, hostile["env"], tmp_path), cases))
    assert _judge(results, may_run=tuple(prefix) in _RUNS) == []


# the environment: each variable with hostile values, under a command that reads it
_READERS = {
    "shared": [["status", "--once"], ["jobs", "list"], ["render", "x.blend", "--frames", "1"]],
    "hooks": [["render", "x.blend", "--frames", "1"]],
    "agent": [["agent"]],
    "healer": [["render", "x.blend", "--frames", "1"], ["healer"], ["jobs", "list"]],
    "incidents": [["render", "x.blend", "--frames", "1"]],
}


def _variables() -> list[tuple[str, str]]:
    section, out = None, []
    for line in (REPO / "blender_hooks" / "settings.py").read_text().splitlines():
        if line.startswith("# -- "):
            words = line[5:].split()
            section = {"shared": "shared", "the": words[1] if len(words) > 1 else None,
                       "incidents": "incidents"}.get(words[0])
        elif line.startswith("ENV_") and section in _READERS:
            out.append((section, line.split("=", 1)[1].split("#")[0].strip().strip('"')))
    return out


VARIABLES = _variables()


@pytest.mark.parametrize("section, name", VARIABLES, ids=[v[1] for v in VARIABLES])
def test_every_environment_variable_with_hostile_values(section, name, hostile, tmp_path):
    cases = []
    values = [v for v in hostile["values"] if not v.startswith(str(hostile["dir"]))] + [str(hostile["dir"] / "fifo")]
    for argv in _READERS[section]:
        for v in values:
            env = dict(hostile["env"])
            env[name] = v
            cases.append((argv, env))
    with cf.ThreadPoolExecutor(3) as ex:
        results = list(ex.map(lambda c: _run(c[0], c[1], tmp_path), cases))
    may_run = section in ("agent", "healer")
    assert _judge([(r[0] + [f"{name}=..."], r[1], r[2]) for r in results], may_run=may_run) == []


def test_the_walk_covers_every_command():
    names = {" ".join(c[0]) for c in COMMANDS}
    assert {"render", "exec", "agent", "status", "healer", "jobs", "classify", "demo", "hooks install"} <= names
    assert len(VARIABLES) >= 25 and ("healer", "RENDERWATCH_HEALER_STALL_TIMEOUT") in VARIABLES


@pytest.mark.parametrize("argv, words", [
    (["render", "x.blend", "--frames", "1", "--job", "a/b"], "a job id is 1-128 letters"),
    (["render", "x.blend", "--frames", "1", "--job", ".."], "a job id is 1-128 letters"),
    (["render", "x.blend", "--frames", "1", "--report", "{dir}"], "is a folder; name a file"),
    (["render", "x.blend", "--frames", "1", "--report", "{file}/r.json"], "is not a folder"),
    (["exec", "--job", "", "--", "/bin/false", "-b", "x.blend", "-f", "1"], "a job id is 1-128 letters"),
    (["status", "--once", "--agent", "http://h:abc"], "is not an http(s) address"),
    (["status", "--once", "--agent", "127.0.0.1:9", "--interval", "nan"], "--interval"),
    (["jobs", "--url", "notaurl:99999", "list"], "is not an http(s) address"),
    (["jobs", "--url", "http://..:1", "list"], "is not a host name"),
    (["jobs", "show", "\udce9"], "a job id is 1-128 letters"),
    (["agent", "--data-dir", "~no-such-user-rw/x"], "cannot be expanded"),
    (["agent", "--data-dir", ""], "empty"),
    (["agent", "--config", "{deep}"], "nested too deeply"),
    (["agent", "--config", "{fifo}"], "not a regular file"),
    (["demo", "--listen", "nowhere"], "is not HOST:PORT"),
    (["demo", "--dir", "{file}"], "cannot make the demo's folder"),
])
def test_named_mistakes_get_exit_2_and_say_what(argv, words, hostile, tmp_path):
    d = tmp_path / "own"             # files of its own: the walk above may have replaced the shared ones
    d.mkdir()
    (d / "file").write_text("x")
    (d / "dir").mkdir()
    (d / "deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000)
    os.mkfifo(d / "fifo")
    argv = [a.format(dir=d / "dir", deep=d / "deep.toml", fifo=d / "fifo", file=d / "file") for a in argv]
    _, rc, err = _run(argv, hostile["env"], tmp_path)
    assert rc == 2 and words in err and "Traceback" not in err, (rc, err[-800:])


def test_a_healer_whose_address_is_taken_says_so(hostile, tmp_path):
    env = dict(hostile["env"], RENDERWATCH_HEALER_LISTEN=hostile["env"]["RENDERWATCH_AGENT_LISTEN"])
    _, rc, err = _run(["healer"], env, tmp_path)
    assert rc == 2 and "cannot listen on" in err and "Traceback" not in err, err[-800:]
