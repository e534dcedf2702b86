"""The agent's page in headless Chromium (Debian's, driven by Playwright): a 10,000-frame job's view
and what following a running job live costs the agent.

Usage::

    python -m bench page

- time to a complete grid: from the navigation's start to the page's `renderwatch:grid` mark (the
  page, its script and style, the frames' table fetched and every cell in the DOM), median of 5 cold
  loads (a fresh browser context each), beside a 100-frame job's in the same run;
- the page's transfer before data: the document, script, style and icon as they cross the wire
  (encoded bytes, headers included); the 10,000-frame table's transfer is shown beside it;
- the agent's CPU while a page follows a running job (a frame saved every 0.5 s, through the real
  HTTP ingest) against the same agent fed the same events with no page, each over 20 s.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
GRID_GOAL_MS, TRANSFER_GOAL_KB, CPU_GOAL_PCT = 300, 150, 1.0
FOLLOW_S = 20.0


def _post(url: str, events: list[dict]) -> None:
    from tests.support.agent import ndjson, post
    status, body = post(url, ndjson(events))
    assert status == 200, body


def _grid_ms(browser, url: str, job: str, runs: int = 7) -> tuple[float, list[float], dict]:
    times, sizes, ttfb = [], {}, []
    for _ in range(runs):
        ctx = browser.new_context()
        page = ctx.new_page()
        page.goto(f"{url}/#job={job}")
        page.wait_for_function("() => performance.getEntriesByName('renderwatch:grid').length > 0", timeout=30_000)
        times.append(page.evaluate("() => performance.getEntriesByName('renderwatch:grid')[0].startTime"))
        ttfb.append(page.evaluate("""() => { const r = performance.getEntriesByType('resource')
            .find((e) => e.name.includes('/frames')); return r.responseStart - r.requestStart; }"""))
        sizes = page.evaluate("""() => {
            const nav = performance.getEntriesByType('navigation')[0];
            const out = {page: nav.transferSize, data: 0, files: {}};
            for (const r of performance.getEntriesByType('resource')) {
              if (r.name.includes('/api/')) out.data += r.transferSize;
              else { out.page += r.transferSize; out.files[new URL(r.name).pathname] = r.transferSize; }
            }
            return out; }""")
        ctx.close()
    sizes["frames_ttfb_ms_median"] = statistics.median(ttfb)
    return statistics.median(times), times, sizes


def _follow_cpu(url: str, pid: int, browser, job: str, with_page: bool) -> float:
    """The agent's CPU (% of one core) over FOLLOW_S while a job saves a frame every 0.5 s."""
    from tests.support.agent import JobStream
    s = JobStream(job, session=os.urandom(6).hex())
    _post(url, [s.start(1, 10_000)])
    ctx = page = None
    if with_page:
        ctx = browser.new_context()
        page = ctx.new_page()
        page.goto(f"{url}/#job={job}")
        page.wait_for_function("() => document.querySelectorAll('#grid .c').length === 10000", timeout=30_000)
    proc = psutil.Process(pid)
    c0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
    n = 0
    while time.monotonic() - t0 < FOLLOW_S:
        n += 1
        _post(url, s.frame(n, seconds=0.5, phases=("sync", "sampling")))
        time.sleep(0.5)
    cpu = (sum(proc.cpu_times()[:2]) - c0) / (time.monotonic() - t0) * 100
    if page is not None:
        done = page.evaluate("() => document.querySelectorAll('#grid .s2').length")
        assert done >= n - 1, (done, n)           # the page did follow
        ctx.close()
    return cpu


def run() -> list[dict]:
    if not os.path.exists(CHROMIUM):
        return [{"name": "page benchmarks: Debian's chromium is not installed", "pass": None}]
    sys.path.insert(0, str(REPO))
    from playwright.sync_api import sync_playwright

    from tests.support.agent import AgentProcess, JobStream

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        agent = AgentProcess(Path(tmp) / "home").start()
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            assert agent.proc is not None
            for job, frames in (("big", 10_000), ("small", 100)):
                s = JobStream(job, session=os.urandom(6).hex())
                evs = [s.start(1, frames)]
                for n in range(1, frames // 2 + 1):
                    evs += s.frame(n, seconds=1.0 + n % 13, phases=())
                for i in range(0, len(evs), 2000):
                    _post(agent.url, evs[i:i + 2000])
            big, big_runs, sizes = _grid_ms(browser, agent.url, "big")
            small, small_runs, _ = _grid_ms(browser, agent.url, "small")
            rows.append({"name": "page: time to a complete grid, 10,000-frame job (half done), headless Chromium, "
                                 "median of 7 cold loads", "measured": round(big, 1), "unit": "ms",
                         "goal": f"≤ {GRID_GOAL_MS}", "peer": "100-frame job, same run",
                         "peer_measured": round(small, 1), "pass": big <= GRID_GOAL_MS,
                         "detail": {"runs_ms": big_runs, "small_runs_ms": small_runs, "best_ms": min(big_runs),
                                    "frames_ttfb_ms_median": sizes.pop("frames_ttfb_ms_median"),
                                    "load_average": os.getloadavg()}})
            kb = sizes["page"] / 1000
            rows.append({"name": "page: transfer before data (HTML, script, style, icon; headers included)",
                         "measured": round(kb, 1), "unit": "KB", "goal": f"≤ {TRANSFER_GOAL_KB}",
                         "peer": "the 10,000-frame table (gzip), same load",
                         "peer_measured": round(sizes["data"] / 1000, 1), "pass": kb <= TRANSFER_GOAL_KB,
                         "detail": sizes})
            without = _follow_cpu(agent.url, agent.proc.pid, browser, "follow-a", with_page=False)
            with_page = _follow_cpu(agent.url, agent.proc.pid, browser, "follow-b", with_page=True)
            added = with_page - without
            rows.append({"name": f"page: agent CPU added by a page following a running job live ({FOLLOW_S:.0f} s, "
                                 f"a frame every 0.5 s; {with_page:.2f} % with the page, {without:.2f} % without)",
                         "measured": round(added, 3), "unit": "% of a core", "goal": f"≤ {CPU_GOAL_PCT}",
                         "peer": "the same agent and events, no page", "peer_measured": round(without, 3),
                         "pass": added <= CPU_GOAL_PCT,
                         "detail": {"with_page_pct": with_page, "without_pct": without}})
        finally:
            browser.close()
            agent.stop()
    return rows
