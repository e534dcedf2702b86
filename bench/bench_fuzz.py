"""Fuzzing: each fuzz target (fuzz.targets) under atheris for a bounded time; crashes (goal 0) and coverage.

Each target runs in its own process (`python -m fuzz <target> -max_total_time=S`), seeded with the repo's
corpus (fuzz/corpus/<target>/); new inputs go to a temporary folder, so the repo's corpus only grows when
someone runs `python -m fuzz <target> --grow`. Coverage is libFuzzer's count of instrumented edges of
renderwatch's own modules; the peer is the same count after replaying the repo's corpus alone (libFuzzer's
INITED line), i.e. what coverage-guided mutation added in the same run.

Usage::

    python -m bench fuzz
    RENDERWATCH_BENCH_FUZZ_SECONDS=120 python -m bench fuzz     # a longer run (default 20 s per target)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ENV_SECONDS = "RENDERWATCH_BENCH_FUZZ_SECONDS"
REPO = Path(__file__).resolve().parent.parent
TARGETS = ("events", "crashfile", "loglines", "alertmanager")
_STAT = re.compile(r"#(\d+)\s+(INITED|DONE)\s+cov: (\d+) ft: (\d+) corp: (\d+)/")


def seconds() -> int:
    return int(os.environ.get(ENV_SECONDS) or 20)


def fuzz_one(target: str, secs: int, workdir: Path) -> dict:
    """Run one target; returns runs, coverage before/after, exec/s, crashes and the first crash's line."""
    prefix = workdir / f"{target}-"
    proc = subprocess.run([sys.executable, "-m", "fuzz", target, f"-max_total_time={secs}", "-print_final_stats=1",
                           f"-artifact_prefix={prefix}", "-close_fd_mask=1"],
                          cwd=REPO, capture_output=True, text=True, timeout=secs + 120)
    out = proc.stderr
    stats = {m.group(2): m for m in _STAT.finditer(out)}
    done = stats.get("DONE")
    inited = stats.get("INITED")
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", out)
    rate = re.search(r"stat::average_exec_per_sec:\s*(\d+)", out)
    crashes = sorted(p.name for p in workdir.glob(f"{target}-*"))
    first = next((ln for ln in out.splitlines() if "Error" in ln or "Broken" in ln), "")
    return {"target": target, "exit": proc.returncode, "runs": int(runs.group(1)) if runs else None,
            "exec_per_s": int(rate.group(1)) if rate else None,
            "cov_corpus": int(inited.group(3)) if inited else None, "cov": int(done.group(3)) if done else None,
            "corpus_in": int(inited.group(5)) if inited else None, "corpus_out": int(done.group(5)) if done else None,
            "crashes": crashes, "first_error": first[:200], "tail": out[-600:] if proc.returncode else ""}


def run() -> list[dict]:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return [{"name": "fuzzing (atheris)", "measured": None, "unit": "", "goal": None, "peer": None,
                 "peer_measured": None, "pass": False,
                 "detail": "atheris is not installed: pip install -e '.[test]' (./bootstrap test does)"}]
    secs = seconds()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="rw-bench-fuzz-") as d:
        for target in TARGETS:
            r = fuzz_one(target, secs, Path(d))
            ok = r["exit"] == 0 and not r["crashes"] and r["runs"] is not None
            rows.append({"name": f"fuzz {target}: crashes in {r['runs']} coverage-guided inputs ({secs} s)",
                         "measured": len(r["crashes"]) if r["runs"] is not None else None, "unit": "crashes",
                         "goal": 0, "peer": None, "peer_measured": None, "pass": ok,
                         "detail": r["first_error"] or r["tail"]})
            rows.append({"name": f"fuzz {target}: coverage (edges of renderwatch's code)", "measured": r["cov"],
                         "unit": "edges", "goal": None, "peer": "the repo corpus replayed alone",
                         "peer_measured": r["cov_corpus"], "pass": None,
                         "detail": f"corpus {r['corpus_in']} -> {r['corpus_out']} inputs, {r['exec_per_s']} exec/s"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
