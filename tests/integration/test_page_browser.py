"""The agent's page in a real browser: Debian's Chromium, headless, driven by Playwright for Python
(it never downloads a browser of its own). A real render (Blender 3.4 under `renderwatch render`, a
real `renderwatch agent`) is watched live, with a crash the healer heals; hostile text from the scene
and its log stays text; a page left open stays bounded. Screenshots go to the test's tmp path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent.app import run_in_thread
from tests.support.agent import AgentProcess, JobStream, agent_config, get, ndjson, post, wait_until
from tests.support.fakes import NoNvml
from tests.support.healer import RENDERWATCH, fault, healer_env

CHROMIUM = "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")

HOSTILE_SCENE = "<img src=x onerror=alert(1)>"
HOSTILE_LINE = "Warning: <img src=x onerror=alert(2)><script>window.__xss=2</script> & <b>bold</b>"
# Renames the scene and prints HTML in every frame's log (a Warning: line, so the classifier marks it).
HOSTILE_SCRIPT = f"""
import bpy
bpy.context.scene.name = {HOSTILE_SCENE!r}
def _hostile_pre(scene, *_):
    print({HOSTILE_LINE!r}, flush=True)
bpy.app.handlers.render_pre.append(_hostile_pre)
"""


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page with everything that must not happen recorded: dialogs (alert), page errors, requests that
    leave the agent, console messages of CSP violations."""

    def __init__(self, browser, base: str):
        self.base = base
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.console: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.console.append(m.text))
        self.page.on("request", lambda r: None if r.url.startswith(base) else self.foreign.append(r.url))

    def assert_clean(self) -> None:
        assert self.dialogs == [], self.dialogs
        assert self.errors == [], self.errors
        assert self.foreign == [], self.foreign
        assert self.page.evaluate("window.__xss") is None
        assert self.page.evaluate("document.querySelectorAll('img, script:not([src])').length") == 0

    def close(self) -> None:
        self.context.close()


# -- a real render, watched live ---------------------------------------------------------------------

def _render(scene: Path, home: Path, agent: AgentProcess, script: Path, job: str,
            saved: dict[int, float]) -> subprocess.Popen:
    env = healer_env(home, RENDERWATCH_AGENT=agent.url, FAULT_FRAME="3", FAULT_MARKER=str(home / "fired"),
                     FAULT_SLEEP="0.8")
    proc = subprocess.Popen([*RENDERWATCH, "render", str(scene), "--frames", "1-6", "--job", job, "--quiet",
                             "--blender-output", "--", "--python", str(script), "--python", fault("slow"),
                             "--python", fault("segfault")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            m = re.search(rb"Saved: '.*?f_(\d+)\.png'", raw)
            if m:
                saved.setdefault(int(m.group(1)), time.time())
    threading.Thread(target=read, daemon=True).start()
    return proc


OBSERVE = """() => {
  window.__done = {};
  const mark = () => document.querySelectorAll('#grid .c').forEach((c) => {
    if ((c.classList.contains('s2') || c.classList.contains('s3')) && !(c._i in window.__done)) window.__done[c._i] = Date.now();
  });
  new MutationObserver(mark).observe(document.getElementById('grid'), {subtree: true, attributes: true, childList: true});
  mark();
}"""


@pytest.mark.blender
@pytest.mark.slow
def test_watch_a_real_render_live_heal_a_crash_and_read_a_frames_log(browser, scene_copy, tmp_path):
    home = tmp_path / "home"
    agent = AgentProcess(home, {"RENDERWATCH_SAMPLE_INTERVAL_SECONDS": "0.2"}).start()
    script = tmp_path / "hostile.py"
    script.write_text(HOSTILE_SCRIPT)
    w = Watched(browser, agent.url)
    saved: dict[int, float] = {}
    proc = None
    try:
        resp = w.page.goto(agent.url + "/")
        assert resp is not None and "script-src 'self'" in resp.headers["content-security-policy"]
        proc = _render(scene_copy(frames=6), home, agent, script, "page-live", saved)
        # the node view lists the job once it starts; follow its link into the job view
        link = w.page.locator("#jobs tbody a", has_text="page-live")
        link.wait_for(timeout=60_000)
        w.page.screenshot(path=str(tmp_path / "node-view.png"), full_page=True)
        link.click()
        w.page.wait_for_selector("#grid .c")
        w.page.evaluate(OBSERVE)
        opened = time.time()
        w.page.wait_for_function("() => document.querySelectorAll('#grid .s2, #grid .s3').length === 6", timeout=120_000)
        assert proc.wait(60) == 0
        # live: frames saved after the page opened turned done within a second of Blender's `Saved:`
        done = w.page.evaluate("window.__done")
        frames = w.page.evaluate("Array.from(document.querySelectorAll('#grid .c')).map((c) => c._i)")
        assert len(frames) == 6
        lags = {f: done[str(i)] / 1000 - saved[f] for i, f in enumerate(range(1, 7))
                if str(i) in done and f in saved and saved[f] > opened + 0.2}
        assert len(lags) >= 2, (saved, done, opened)
        assert max(lags.values()) < 1.0, lags
        # frame 3 crashed (segfault) and the next attempt rendered it again
        assert "s3" in w.page.locator("#grid .c").nth(2).get_attribute("class")
        w.page.wait_for_function("() => document.querySelectorAll('#attempts li').length >= 2", timeout=10_000)
        first = w.page.locator("#attempts li").nth(0).inner_text()
        assert "Attempt 1" in first and "segfault" in first and "frame 3" in first, first
        # the second attempt's classified end ("ok") comes from the healer through the spool
        w.page.wait_for_function("() => /Attempt 2 · ok/.test(document.querySelector('#attempts').innerText)",
                                 timeout=10_000)
        # the hostile scene name is shown as text
        assert HOSTILE_SCENE in w.page.locator("#job-summary").inner_text()
        # a click on frame 3 opens its log, warnings marked, HTML shown literally
        w.page.locator("#grid .c").nth(2).click()
        w.page.wait_for_function("() => !document.querySelector('#log').textContent.includes('loading')")
        log_text = w.page.locator("#log").inner_text()
        w.page.mouse.move(0, 0)
        w.page.screenshot(path=str(tmp_path / "job-view.png"), full_page=True)
        assert "Log of frame 3" in w.page.locator("#log-title").inner_text()
        assert HOSTILE_LINE in log_text                  # both attempts' lines of frame 3, as text
        assert w.page.locator("#log .l.warning", has_text="onerror=alert(2)").count() == 2
        assert w.page.locator("#log .l.error").count() >= 1      # the crash's line of attempt 1
        assert w.page.locator("#log .l", has_text="Saved:").count() == 1
        w.assert_clean()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        w.close()
        agent.stop()


# -- synthetic events: the page's bounds ---------------------------------------------------------------

def test_hostile_text_csp_and_a_page_left_open_stays_bounded(browser, tmp_path):
    handle = run_in_thread(agent_config(tmp_path), nvml=NoNvml())
    w = Watched(browser, handle.url)
    try:
        s = JobStream("hostile-<b>", scene=HOSTILE_SCENE)
        assert post(handle.url, ndjson([s.start(1, 2000)]))[0] == 200
        w.page.goto(handle.url + "/#job=" + "hostile-%3Cb%3E")
        w.page.wait_for_function("() => document.querySelectorAll('#grid .c').length === 2000")
        # an inline script cannot run: the CSP refuses it (and says so on the console)
        w.page.evaluate("""() => { const s = document.createElement('script'); s.textContent = 'window.__xss = 1';
                                   document.body.append(s); }""")
        assert w.page.evaluate("window.__xss") is None
        assert any("Content Security Policy" in m for m in w.console), w.console
        w.page.evaluate("document.querySelectorAll('script:not([src])').forEach((s) => s.remove())")
        cdp = w.context.new_cdp_session(w.page)

        def heap() -> int:
            cdp.send("HeapProfiler.collectGarbage")
            return int(cdp.send("Runtime.getHeapUsage")["usedSize"])

        def nodes() -> int:
            return w.page.evaluate("document.getElementsByTagName('*').length")

        frame = 0
        for rnd in range(4):                      # every frame rendered, then rendered again, 4 times over
            evs = []
            for n in range(1, 2001):
                evs += s.frame(n, seconds=0.5 + (n % 7), phases=())
            for i in range(0, len(evs), 2000):
                assert post(handle.url, ndjson(evs[i:i + 2000]))[0] == 200
            state = "s2" if rnd == 0 else "s3"
            w.page.wait_for_function(f"() => document.querySelectorAll('#grid .{state}').length === 2000", timeout=60_000)
            w.page.locator("#grid .c").nth(frame).click()
            frame += 7
            if rnd == 0:
                base_heap, base_nodes = heap(), nodes()
        grown = heap() - base_heap
        assert nodes() - base_nodes < 50, (base_nodes, nodes())
        assert grown < 2_000_000, grown
        assert HOSTILE_SCENE in w.page.locator("#job-summary").inner_text()
        # the tooltip is text too
        w.page.locator("#grid .c").nth(4).hover()
        assert "frame 5" in w.page.locator("#tip").inner_text()
        # filters hide a state
        w.page.locator("#legend input").nth(3).uncheck()
        assert w.page.locator("#grid .s3").first.is_hidden()
        w.page.screenshot(path=str(tmp_path / "bounded.png"))
        (tmp_path / "heap.json").write_text(json.dumps({"grown_bytes": grown, "nodes": nodes()}))
        w.assert_clean()
    finally:
        w.close()
        handle.stop()


def test_the_frame_grid_by_keyboard_alone(browser, tmp_path):
    """One tab stop; the arrows move over the shown cells (down: one row of what fits across), Home and
    End, Enter opens the frame's log; the frame under the cursor is in the tooltip and the live region."""
    handle = run_in_thread(agent_config(tmp_path), nvml=NoNvml())
    w = Watched(browser, handle.url)
    try:
        s = JobStream("keys")
        evs = [s.start(1, 300)]
        for n in range(1, 11):
            evs += s.frame(n, phases=())
        assert post(handle.url, ndjson(evs))[0] == 200
        w.page.goto(handle.url + "/#job=keys")
        w.page.wait_for_function("() => document.querySelectorAll('#grid .s2').length === 10")
        w.page.keyboard.press("Tab")
        for _ in range(20):                                  # the links and the legend come first
            if w.page.evaluate("document.activeElement.id") == "grid":
                break
            w.page.keyboard.press("Tab")
        assert w.page.evaluate("document.activeElement.id") == "grid"

        def cursor() -> int:
            return w.page.evaluate("Array.from(document.querySelectorAll('#grid .c')).findIndex((c) => c.classList.contains('kb'))")

        assert cursor() == 0 and "frame 1 " in w.page.locator("#tip").inner_text()
        w.page.keyboard.press("ArrowRight")
        w.page.keyboard.press("ArrowRight")
        assert cursor() == 2 and "frame 3 " in w.page.locator("#grid-cursor").inner_text()
        across = w.page.evaluate("""() => { const c = document.querySelectorAll('#grid .c');
            let k = 0; while (k < c.length && c[k].offsetTop === c[0].offsetTop) k++; return k; }""")
        assert 1 < across < 300
        w.page.keyboard.press("ArrowDown")
        assert cursor() == 2 + across
        w.page.keyboard.press("ArrowUp")
        w.page.keyboard.press("ArrowLeft")
        assert cursor() == 1
        w.page.keyboard.press("End")
        assert cursor() == 299 and "frame 300 " in w.page.locator("#tip").inner_text()
        w.page.keyboard.press("Enter")
        w.page.wait_for_function("() => document.querySelector('#log-title').textContent === 'Log of frame 300'")
        # a hidden state is skipped: with "done" filtered out, Home is the first frame not rendered
        w.page.locator("#legend input").nth(2).uncheck()
        w.page.locator("#grid").focus()
        w.page.keyboard.press("Home")
        assert cursor() == 10
        w.page.keyboard.press("ArrowLeft")                   # nothing shown before it: stays
        assert cursor() == 10
        w.page.keyboard.press(" ")
        w.page.wait_for_function("() => document.querySelector('#log-title').textContent === 'Log of frame 11'")
        w.assert_clean()
    finally:
        w.close()
        handle.stop()


def test_the_page_reconnects_after_the_agent_restarts(browser, tmp_path):
    agent = AgentProcess(tmp_path / "home").start()
    w = Watched(browser, agent.url)
    try:
        s = JobStream("again")
        assert post(agent.url, ndjson([s.start(1, 10), *s.frame(1, phases=())]))[0] == 200
        w.page.goto(agent.url + "/#job=again")
        w.page.wait_for_function("() => document.querySelectorAll('#grid .s2').length === 1")
        agent.kill()
        agent.start()
        assert post(agent.url, ndjson(s.frame(2, phases=())))[0] == 200
        w.page.wait_for_function("() => document.querySelectorAll('#grid .s2').length === 2", timeout=20_000)
        assert wait_until(lambda: "on" in (w.page.locator("#conn").get_attribute("class") or ""), timeout=10)
        w.assert_clean()
    finally:
        w.close()
        agent.stop()


def test_sign_in_with_the_token_off_loopback(browser, tmp_path):
    handle = run_in_thread(agent_config(tmp_path, token="page-token-123"), nvml=NoNvml())
    w = Watched(browser, handle.url)
    try:
        w.page.goto(handle.url + "/")
        w.page.wait_for_selector("#signin:not([hidden])")
        w.page.fill("input[name=token]", "wrong")
        w.page.click("#signin button")
        w.page.wait_for_selector("#signin-failed:not([hidden])")
        w.page.fill("input[name=token]", "page-token-123")
        w.page.click("#signin button")
        w.page.wait_for_selector("#node:not([hidden])")
        assert "page-token-123" not in w.page.url
        assert all("page-token-123" not in c["value"] for c in w.context.cookies())
        cookie = next(c for c in w.context.cookies() if c["name"] == "renderwatch_page")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert w.page.evaluate("document.cookie") == ""         # HttpOnly: not readable by script
        assert get(handle.url, "/api/v1/jobs")[0] == 401         # still closed without it
        w.assert_clean()
    finally:
        w.close()
        handle.stop()
