"""Run every benchmark, print one table (measured, goal, peer, pass) and write bench/results.json.

Usage::

    python -m bench                 # all benchmarks
    python -m bench hooks agent     # a subset, by module suffix
    python -m bench --readme        # also rewrite the README's performance table from the results

Each bench module `bench/bench_<area>.py` exposes `run() -> list[dict]` with rows
{name, measured, unit, goal, peer, peer_measured, pass}. A module that fails is reported as a failed
row rather than hiding the others.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
RESULTS = HERE / "results.json"
AREAS = ("hooks", "agent", "classify", "frames", "healer", "scale", "farm", "incidents", "robustness", "fuzz", "load", "chaos",
         "page", "logs")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(rows: list[dict]) -> str:
    head = "| area | benchmark | measured | goal | peer (same run) | peer measured | pass |"
    out = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = r.get("unit") or ""
        measured = f"{_fmt(r.get('measured'))} {unit}".strip()
        peer_m = r.get("peer_measured")
        peer_m = f"{_fmt(peer_m)} {unit}".strip() if peer_m is not None else "-"
        ok = r.get("pass")
        out.append(f"| {r.get('area', '')} | {r.get('name', '')} | {measured} | {_fmt(r.get('goal'))} | "
                   f"{_fmt(r.get('peer'))} | {peer_m} | {'yes' if ok else ('no' if ok is False else '-')} |")
    return "\n".join(out)


def run(areas: list[str]) -> list[dict]:
    rows: list[dict] = []
    for area in areas:
        name = f"bench.bench_{area}"
        t0 = time.monotonic()
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        try:
            got = mod.run()
        except Exception as e:  # one broken benchmark must not hide the others
            traceback.print_exc()
            got = [{"name": f"{area} benchmark crashed: {type(e).__name__}: {e}", "pass": False}]
        for r in got:
            r.setdefault("area", area)
        rows.extend(got)
        print(f"[bench] {area}: {len(got)} rows in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return rows


def update_readme(rows: list[dict], meta: dict) -> None:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block to replace")
    note = (f"Measured {meta['date']} on {meta['machine']} ({meta['cpus']} CPUs) by `./bootstrap bench`; "
            "ratios matter more than absolute numbers on these noisy shared machines.")
    pre, rest = text.split(BEGIN, 1)
    _, post = rest.split(END, 1)
    README.write_text(f"{pre}{BEGIN}\n{note}\n\n{table(rows)}\n{END}{post}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("areas", nargs="*", help=f"subset of {', '.join(AREAS)}")
    ap.add_argument("--readme", action="store_true", help="rewrite the README performance table")
    ap.add_argument("--readme-only", action="store_true",
                    help="rewrite the README table from bench/results.json without running anything")
    args = ap.parse_args(argv)
    if args.readme_only:
        doc = json.loads(RESULTS.read_text())
        update_readme(doc["rows"], doc["meta"])
        return 0
    import os
    rows = run(args.areas or list(AREAS))
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine() + " " + platform.system(),
            "cpus": os.cpu_count(), "python": platform.python_version()}
    print(table(rows))
    if args.areas and RESULTS.exists():
        # A subset run replaces only its own areas' rows: the file stays the whole picture.
        try:
            old = json.loads(RESULTS.read_text()).get("rows", [])
        except ValueError:
            old = []
        ran = {r.get("area") for r in rows}
        rows = [r for r in old if r.get("area") not in ran] + rows
        rows.sort(key=lambda r: AREAS.index(r["area"]) if r.get("area") in AREAS else len(AREAS))
    RESULTS.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str) + "\n")
    if args.readme:
        update_readme(rows, meta)
    return 0 if all(r.get("pass") is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
