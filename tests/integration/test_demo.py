"""`renderwatch demo` (the README's first command) end to end: real Blender 3.4, a real crash, the
embedded agent, the healer, and the OTLP-JSON span file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_demo_heals_one_crash_and_reports_metrics_and_spans(tmp_path: Path, blender34: str) -> None:
    env = dict(os.environ, RENDERWATCH_HOME=str(tmp_path / "state"))
    proc = subprocess.run(
        [sys.executable, "-m", "renderwatch", "demo", "--frames", "4", "--crash-at", "2",
         "--dir", str(tmp_path / "demo"), "--listen", "127.0.0.1:0", "--blender", blender34],
        capture_output=True, text=True, env=env, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "report: complete, 4/4 frames, 1 restart(s); frames rendered twice: [2]" in out
    assert 'renderwatch_frames_rendered_total{device_type="CPU",engine="CYCLES",scene="Scene"} 4.0' in out
    report = json.loads(next((tmp_path / "demo").glob("run-*/report.json")).read_text())
    assert report["attempts"][0]["error_type"] == "segfault"
    assert sorted(map(int, report["frames_completed"])) == [1, 2, 3, 4]
    frames = sorted((tmp_path / "demo").glob("run-*/frames/f_*.png"))
    assert [f.name for f in frames] == [f"f_{i:04d}.png" for i in range(1, 5)]
    spans = []
    for line in (tmp_path / "demo").glob("run-*/agent/traces/spans-*.jsonl"):
        for req in map(json.loads, line.read_text().splitlines()):
            for rs in req["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    spans += ss["spans"]
    names = sorted(s["name"] for s in spans)
    assert names.count("render.frame") == 4 and names.count("render.job") == 1
    assert len({s["traceId"] for s in spans}) == 1
