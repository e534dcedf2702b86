"""Classifier: throughput on a 100 MB log next to a naive substring-per-line scan, and crash to classified.

* Throughput: a 100 MB log built from the real Blender 3.4 captures in ../shared (progress lines
  renumbered frame by frame, ~9 in 10 lines; their Saved/Time lines; every few frames a fault line
  or traceback from the captures, 3.4 and 5.0). `LogScanner` classifies it; the peer is the naive
  scan of the same patterns (every rule's literal keywords, ~60) with `in` on every line, as
  render-farm clients do. Both start from the decoded text and split it themselves.
* Crash to classified: real Blender 3.4 renders a 4-frame scene and segfaults at frame 2
  (tests/faults/segfault.py); its output is fed to a LogScanner live, as the supervisor does. The
  clock starts when wait() returns and stops when finish() has the verdict, the crash file (named
  on stdout) read included. Also timed cold: log file + crash file read and classified from scratch.

Usage::

    python -m bench classify
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from healer.diagnosis.classify import _RULES, LogScanner, classify
from healer.diagnosis.crashfile import read_crash_file
from healer.diagnosis.logformat import iter_lines, split_text
from renderwatch.scenes import create_demo_scene, find_blender

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "fixtures" / "blender-logs"
CAPTURED = REPO / "tests" / "fixtures"
LOG_MB = 100
CRASH_RUNS = 5
GOAL_CRASH_MS = 100.0


def build_log(size_mb: int = LOG_MB, seed: int = 0) -> str:
    """A log of about size_mb MB from the real captures: frames of progress lines, faults sprinkled."""
    frame_lines = [line for line in (SHARED / "ok_3.4.log").read_text().splitlines() if line.startswith("Fra:1 ")]
    faults: list[str] = []
    for log in sorted(SHARED.glob("*.log")) + sorted(CAPTURED.glob("blender-logs-*/*.log")):
        faults += [line for line in log.read_text(errors="replace").splitlines()
                   if line and not line.startswith(("Fra:", "Saved:", " Time:", "render_stats:"))]
    rng = random.Random(seed)
    out: list[str] = []
    size, frame, target = 0, 0, size_mb << 20
    while size < target:
        frame += 1
        block = [line.replace("Fra:1 ", f"Fra:{frame} ", 1) for line in frame_lines]
        if frame % 3 == 0:
            block.insert(rng.randrange(len(block)), rng.choice(faults))
        block += [f"Saved: '/mnt/projects/shot010/frames/f_{frame:04d}.png'", " Time: 00:00.25 (Saving: 00:00.13)", ""]
        out += block
        size += sum(len(line) + 1 for line in block)
    return "\n".join(out) + "\n"


NAIVE_PATTERNS = sorted({(k, t) for t, _role, keys, _rx in _RULES for k in keys})


def naive_scan(text: str) -> list[tuple[int, str, str]]:
    """The peer: every pattern tested with `in` on every line."""
    hits = []
    for n, line in enumerate(split_text(text), 1):
        for pattern, type_id in NAIVE_PATTERNS:
            if pattern in line:
                hits.append((n, type_id, line))
    return hits


def scanner_scan(text: str):
    s = LogScanner()
    s.feed_text(text)
    return s.finish(0)


def _best_of(fn, arg, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(arg)
        best = min(best, time.perf_counter() - t0)
    return best


def throughput_rows() -> list[dict]:
    text = build_log()
    mb = len(text.encode()) / 1e6
    ours = _best_of(scanner_scan, text)
    naive = _best_of(naive_scan, text, runs=1)
    with tempfile.NamedTemporaryFile(suffix=".log") as f:     # the CLI's path: bytes from disk, decoded per line
        f.write(text.encode())
        f.flush()

        def from_file(path: str) -> None:
            s = LogScanner()
            with open(path, "rb") as fh:
                for line in iter_lines(fh):
                    s.feed(line)
            s.finish(0)
        disk = _best_of(from_file, f.name, runs=1)
    return [
        {"name": f"classifier throughput, {mb:.0f} MB log (LogScanner over text)", "measured": round(mb / ours, 1),
         "unit": "MB/s", "goal": "> naive scan", "peer": f"naive `in` scan of the same {len(NAIVE_PATTERNS)} patterns",
         "peer_measured": round(mb / naive, 1), "pass": mb / ours > mb / naive},
        {"name": "classifier throughput from a file (bytes, decoded line by line, as `renderwatch classify`)",
         "measured": round(mb / disk, 1), "unit": "MB/s", "goal": None, "peer": None, "peer_measured": None,
         "pass": None},
    ]


def _crash_once(blender: str, scene: Path, fault: Path, workdir: Path) -> tuple[float, float, str]:
    env = {**os.environ, "FAULT_FRAME": "2", "TMPDIR": str(workdir)}
    env.pop("FAULT_MARKER", None)
    proc = subprocess.Popen([blender, "-b", str(scene), "--python", str(fault), "-a"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=workdir)
    scanner = LogScanner()
    lines: list[str] = []
    assert proc.stdout is not None

    def pump() -> None:
        for line in iter_lines(proc.stdout, chunk_size=4096):   # type: ignore[arg-type]
            scanner.feed(line)
            lines.append(line)
    reader = threading.Thread(target=pump)
    reader.start()
    code = proc.wait()
    t0 = time.perf_counter()                                     # exit observed
    reader.join()
    crash_text = read_crash_file(scanner.crash_file) if scanner.crash_file else None
    err = scanner.finish(code, crash_file=scanner.crash_file, crash_text=crash_text)
    live = time.perf_counter() - t0
    assert err.type == "segfault" and crash_text is not None, err.summary
    # cold: everything from files (what `renderwatch classify` does on a saved log)
    log = workdir / "render.log"
    log.write_text("\n".join(lines) + "\n")
    t1 = time.perf_counter()
    cold = classify(log.read_bytes(), exit_code=code, crash_text=read_crash_file(str(scanner.crash_file)))
    cold_s = time.perf_counter() - t1
    assert cold.type == "segfault"
    return live, cold_s, err.summary


def crash_rows() -> list[dict]:
    blender = find_blender()
    fault = REPO / "tests" / "faults" / "segfault.py"
    if not blender or not fault.exists():
        return [{"name": "crash to classified (real Blender 3.4 segfault)", "measured": None, "unit": "ms",
                 "goal": f"<= {GOAL_CRASH_MS:g}", "pass": False, "peer": "no Blender 3.4 binary or fault script"}]
    live, cold = [], []
    with tempfile.TemporaryDirectory(prefix="rw-bench-classify-") as tmp:
        work = Path(tmp)
        scene = create_demo_scene(work / "shot" / "crash.blend", frames=4, samples=4, width=64, height=36,
                                  blender=blender)
        for _ in range(CRASH_RUNS):
            for old in work.glob("*.crash.txt"):
                old.unlink()
            a, b, _summary = _crash_once(blender, scene, fault, work)
            live.append(a * 1000)
            cold.append(b * 1000)
    return [
        {"name": f"crash to classified, live scanner (real 3.4 segfault, max of {CRASH_RUNS})",
         "measured": round(max(live), 2), "unit": "ms", "goal": f"<= {GOAL_CRASH_MS:g}", "peer": None,
         "peer_measured": None, "pass": max(live) <= GOAL_CRASH_MS},
        {"name": f"crash to classified, cold from log + crash file (median of {CRASH_RUNS})",
         "measured": round(statistics.median(cold), 2), "unit": "ms", "goal": f"<= {GOAL_CRASH_MS:g}", "peer": None,
         "peer_measured": None, "pass": max(cold) <= GOAL_CRASH_MS},
    ]


def run() -> list[dict]:
    return throughput_rows() + crash_rows()


if __name__ == "__main__":
    for row in run():
        print(row)
