"""The fuzz targets (fuzz/): the corpus kept in the repo replays clean through every target on every run,
each target catches the kind of bug it is there for, and a short coverage-guided atheris run per target
finds no crash (skipped, with the reason, where atheris is not installed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.oracle import Broken
from fuzz.targets import TARGETS

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "fuzz" / "corpus"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_repo_corpus_replays_clean(target):
    inputs = sorted((CORPUS / target).iterdir())
    assert len(inputs) >= 4, f"fuzz/corpus/{target} holds {len(inputs)} seeds"
    for path in inputs:
        TARGETS[target](path.read_bytes())


def test_the_event_target_catches_an_event_that_does_not_round_trip(monkeypatch):
    import fuzz.oracle as o
    import fuzz.targets as t

    seed = next(p for p in sorted((CORPUS / "events").iterdir()) if b'"frame_start"' in p.read_bytes())
    real = o.encode
    monkeypatch.setattr(o, "encode", lambda ev: real({**ev, "frame": ev.get("frame", 0) + 1}))
    with pytest.raises(Broken, match="does not survive encode/decode"):
        t.fuzz_events(seed.read_bytes())


def test_the_event_target_catches_an_undocumented_rejection(monkeypatch):
    import fuzz.oracle as o
    import fuzz.targets as t
    from blender_hooks.events import EventError

    def reject(data):
        raise EventError("mystery", "")

    monkeypatch.setattr(o, "decode", reject)
    with pytest.raises(Broken, match="documented reason"):
        t.fuzz_events(b"{}")


def test_the_alertmanager_target_catches_an_action_on_a_target_the_alert_did_not_name(monkeypatch):
    import dataclasses

    import fuzz.oracle as o
    import fuzz.targets as t

    real = o.decide
    monkeypatch.setattr(o, "decide", lambda note, rules: [dataclasses.replace(d, target="someone-else")
                                                            for d in real(note, rules)])
    seed = next(p for p in sorted((CORPUS / "alertmanager").iterdir()) if b"RenderStalled" in p.read_bytes()
                and b'"resolved"' not in p.read_bytes())
    with pytest.raises(Broken, match="not named by the alert"):
        t.fuzz_alertmanager(seed.read_bytes())


def test_a_parser_exception_is_not_swallowed(monkeypatch):
    import fuzz.targets as t

    def broken(text):
        raise IndexError("list index out of range")

    monkeypatch.setattr(t, "parse_crash_file", broken)
    with pytest.raises(IndexError):
        t.fuzz_crashfile(b"# Blender 4.2.0\n")


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_short_coverage_guided_run_finds_no_crash(target, tmp_path):
    pytest.importorskip("atheris", reason="atheris is not installed (pip install -e '.[test]' installs it)")
    runs = 300 if target == "loglines" else 3000
    proc = subprocess.run([sys.executable, "-m", "fuzz", target, f"-runs={runs}", f"-artifact_prefix={tmp_path}/",
                           "-close_fd_mask=1"], cwd=REPO, capture_output=True, text=True, timeout=300)
    crashes = list(tmp_path.iterdir())
    assert proc.returncode == 0 and not crashes, f"{crashes}\n{proc.stderr[-3000:]}"
    assert f"Done {runs} runs" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_one_named_input_runs_once_as_a_reproducer():
    pytest.importorskip("atheris", reason="atheris is not installed (pip install -e '.[test]' installs it)")
    seed = sorted((CORPUS / "events").iterdir())[0]
    proc = subprocess.run([sys.executable, "-m", "fuzz", "events", str(seed)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"Running: {seed}" in proc.stderr and "fuzzing was not performed" in proc.stderr
