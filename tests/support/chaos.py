"""Chaos rounds: a real render under real processes, with faults injected at random, seeded moments.

One round = a fresh RENDERWATCH_HOME, a real `renderwatch agent` process, a real `renderwatch render`
of a small Blender 3.4 scene (hooks on, reporting to the agent, incidents to a webhook receiver),
and one or two faults at moments drawn from `random.Random(f"{seed}:{round}")`:

- ``blender_sigkill``, ``blender_sigsegv``: the signal to Blender's pid (SIGSEGV runs its crash handler);
- ``blender_stall``: SIGSTOP; the healer's --stall-timeout finds it and stops the process group;
- ``agent_kill``: SIGKILL the agent, restart it on the same port after a random pause;
- ``healer_kill``: SIGKILL the healer (its Blender dies with it: the kernel's parent-death signal),
  then re-run the same command: the new healer adopts the job from the ledger and resumes it.

Then `check_round` asserts the invariants: every frame on disk exactly once and verified, no verified
frame rendered twice, every frame's telemetry in the agent exactly once, every incident notified
exactly once. A failure raises AssertionError carrying the seed, the replay command, the faults as
they happened, the ledger's attempts and the tails of the healer's and the agent's logs.

Usage (tests/integration/test_chaos.py, bench/bench_chaos.py)::

    with WebhookReceiver(SECRET) as rx:
        result = run_round(seed, 3, workdir, scene, rx, blender="/usr/bin/blender")
        check_round(result)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from aiohttp import web

from healer.diagnosis.errors import ERROR_TYPES
from healer.images.verify import verify_image
from healer.incidents.notify import (
    HEADER_DELIVERY,
    HEADER_EVENT,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    verify_signature,
)
from tests.support.agent import AgentProcess, ServerThread
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]
SLOW = REPO / "tests" / "faults" / "slow.py"
RENDERWATCH = [sys.executable, "-m", "renderwatch"]
SECRET = "chaos-webhook-secret"

FRAMES = 6
FAULTS = ("blender_sigkill", "blender_sigsegv", "blender_stall", "agent_kill", "healer_kill", "incident_kill")
STALL_TIMEOUT_S = 3.0
FRAME_SLEEP_S = 0.35          # tests/faults/slow.py in render_pre: each frame ~0.45 s, time to hit one mid-way
ROUND_TIMEOUT_S = 90.0
LABELS = {"scene": "Scene", "engine": "CYCLES", "device_type": "CPU"}


def default_seed() -> int:
    """$RENDERWATCH_CHAOS_SEED, else a fresh one (printed by the test: a failing seed replays)."""
    raw = os.environ.get("RENDERWATCH_CHAOS_SEED")
    return int(raw) if raw else random.SystemRandom().randrange(1, 10**9)


def default_rounds(fallback: int = 20) -> int:
    return int(os.environ.get("RENDERWATCH_CHAOS_ROUNDS", str(fallback)))


# -- the webhook receiver --------------------------------------------------------------------------------------
@dataclass
class Delivery:
    path: str
    id: str
    kind: str
    signed: bool
    body: dict


class WebhookReceiver(ServerThread):
    """A real HTTP receiver (aiohttp, in a thread) recording every delivery; checks each signature."""

    def __init__(self, secret: str = SECRET) -> None:
        super().__init__()
        self.secret = secret
        self.deliveries: list[Delivery] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{round}", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        h = request.headers
        signed = verify_signature(self.secret, h.get(HEADER_TIMESTAMP), raw, h.get(HEADER_SIGNATURE))
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        with self.lock:
            self.deliveries.append(Delivery(request.path, h.get(HEADER_DELIVERY, ""), h.get(HEADER_EVENT, ""),
                                            signed, body))
        return web.Response(status=204)

    def received(self, path: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.path == path]


# -- processes -------------------------------------------------------------------------------------------------

def http_get(url: str, timeout: float = 2.0) -> str | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.read().decode()
    except (OSError, urllib.error.URLError):
        return None


def sample(text: str, name: str, labels: dict[str, str]) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and dict(s.labels) == labels:
                return s.value
    return None


class Agent(AgentProcess):
    """`renderwatch agent` as a subprocess on a fixed port, its data and spool dirs in the round's home."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = home
        self.env = {**env, "OTEL_BSP_SCHEDULE_DELAY": "200"}
        self.log = home / "agent.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> Agent:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*RENDERWATCH, "agent", "--listen", f"127.0.0.1:{self.port}",
                                          "--data-dir", str(self.home / "agent"), "--spool-dir", str(self.home / "spool")],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if http_get(self.url + "/healthz", timeout=0.5) is not None:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"agent did not start: {tail(self.log)}")

    def telemetry(self, job: str) -> dict:
        """frames_rendered_total for the round's labels and the job's frames_done/frames_total."""
        out: dict = {"frames_rendered_total": None, "frames_done": None, "frames_total": None}
        text = http_get(self.url + "/metrics")
        if text is not None:
            out["frames_rendered_total"] = sample(text, "renderwatch_frames_rendered_total", LABELS)
        jobs = http_get(self.url + "/api/v1/jobs")
        if jobs is not None:
            doc = json.loads(jobs)
            for j in (doc.get("jobs", doc) if isinstance(doc, dict) else doc):
                if isinstance(j, dict) and j.get("job") == job:
                    out["frames_done"], out["frames_total"] = j.get("frames_done"), j.get("frames_total")
        return out


def wait_telemetry(agent: Agent, job: str, frames: int, timeout: float = 20.0) -> dict:
    """Poll the agent until the job's frames are all counted (or `timeout`); the last reading."""
    deadline = time.monotonic() + timeout
    t = agent.telemetry(job)
    while time.monotonic() < deadline:
        if t.get("frames_rendered_total") == frames and t.get("frames_done") == frames:
            break
        time.sleep(0.1)
        t = agent.telemetry(job)
    return t


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# -- a round ---------------------------------------------------------------------------------------------------
@dataclass
class Fault:
    kind: str
    delay_s: float                  # after the previous fault (or the round's start)
    at_s: float | None = None       # when it happened, since the round's start
    effect: str = "pending"         # what it did, or why it was skipped


@dataclass
class RoundResult:
    seed: int
    round_no: int
    root: Path
    job: str | None = None
    faults: list[Fault] = field(default_factory=list)
    sessions: list[int] = field(default_factory=list)    # attempts in the ledger when each healer started
    healer_exit: int | None = None
    ledger: dict | None = None
    report: dict | None = None
    telemetry: dict = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    outbox_left: list[str] = field(default_factory=list)
    blenders_left: list[int] = field(default_factory=list)
    duration_s: float = 0.0
    webhook_path: str = ""
    error: str | None = None          # the round could not run to its checks

    def context(self) -> str:
        """Everything needed to understand and replay a failed round."""
        led = self.ledger or {}
        attempts = [{k: a.get(k) for k in ("attempt", "pid", "frames_planned", "frames_rendered", "frame_in_flight",
                                           "exit_code", "exit_signal", "error_type", "error_summary", "action")}
                    for a in led.get("attempts", [])]
        lines = [
            f"chaos seed {self.seed} round {self.round_no}: replay with RENDERWATCH_CHAOS_SEED={self.seed} "
            f"pytest tests/integration/test_chaos.py -k 'round{self.round_no:02d}'",
            f"faults: {[(f.kind, round(f.delay_s, 2), f.at_s and round(f.at_s, 2), f.effect) for f in self.faults]}",
            f"round folder {self.root}; healer sessions start at attempts {self.sessions}; "
            f"last exit {self.healer_exit}; {self.duration_s:.1f} s",
            f"ledger status {led.get('status')} error {led.get('error')} frames {sorted(led.get('frames', {}))} "
            f"counts {led.get('frame_render_counts')} warnings {led.get('warnings')}",
            f"expected paths {led.get('expected_paths')}",
            "attempts:", *(f"  {a}" for a in attempts),
            f"telemetry: {self.telemetry}",
            f"webhooks: {[(d.kind, d.id[:8], d.signed) for d in self.deliveries]}",
            f"outbox left: {self.outbox_left}; blenders left running: {self.blenders_left}",
        ]
        if self.error:
            lines.append(f"round error: {self.error}")
        for log in sorted(self.root.glob("healer-*.log")):
            lines.append(f"--- {log.name} (tail) ---\n{tail(log, 1500)}")
        lines.append(f"--- agent.log (tail) ---\n{tail(self.root / 'home' / 'agent.log', 1500)}")
        return "\n".join(lines)


def plan_faults(rng: random.Random) -> list[Fault]:
    """One fault, sometimes two, each at a random moment of a render that lasts ~3 s."""
    n = rng.choice((1, 1, 2))
    return [Fault(rng.choice(FAULTS), rng.uniform(0.2, 2.8) if i == 0 else rng.uniform(0.3, 2.0)) for i in range(n)]


def _ledger(home: Path) -> dict | None:
    """The job's ledger as a healer resuming it reads it (the snapshot and its journal)."""
    from healer.supervising.ledger import Ledger

    for p in (home / "healer" / "jobs").glob("*/ledger.json"):
        try:
            return Ledger.load(p).to_dict()
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return None


def _running_blender(home: Path) -> int | None:
    """The pid of the Blender of the attempt in progress, if it runs (checked against its start time)."""
    led = _ledger(home)
    if not led:
        return None
    for a in reversed(led.get("attempts", [])):
        if a.get("pid") and a.get("ended_at") is None:
            try:
                p = psutil.Process(a["pid"])
                if a.get("pid_create_time") and abs(p.create_time() - a["pid_create_time"]) > 1.0:
                    return None
                if p.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_STOPPED):
                    return None
                return a["pid"]
            except psutil.Error:
                return None
    return None


class _Round:
    def __init__(self, seed: int, round_no: int, workdir: Path, scene: Path, rx: WebhookReceiver, blender: str):
        self.r = RoundResult(seed=seed, round_no=round_no, root=workdir / f"round{round_no:02d}")
        self.rng = random.Random(f"{seed}:{round_no}")
        root = self.r.root
        if root.exists():
            shutil.rmtree(root)
        (root / "shot").mkdir(parents=True)
        self.scene = root / "shot" / "scene.blend"
        shutil.copy(scene, self.scene)
        self.home = root / "home"
        self.home.mkdir()
        self.rx = rx
        self.r.webhook_path = f"/r{seed}-{round_no}"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RENDERWATCH_", "SENTRY_", "FAULT_", "OTEL_"))}
        base.update({"RENDERWATCH_HOME": str(self.home), "RENDERWATCH_SPOOL_DIR": str(self.home / "spool"),
                     "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
        self.agent = Agent(self.home, base)
        self.env = {**base, "RENDERWATCH_AGENT": self.agent.url, "RENDERWATCH_BLENDER": blender,
                    "RENDERWATCH_WEBHOOK_URL": rx.url + self.r.webhook_path, "RENDERWATCH_WEBHOOK_SECRET": SECRET,
                    "RENDERWATCH_HEALER_BACKOFF_S": "0.05", "RENDERWATCH_HEALER_KILL_GRACE_S": "1",
                    "FAULT_SLEEP": str(FRAME_SLEEP_S)}
        self.cmd = [*RENDERWATCH, "render", str(self.scene), "--frames", f"1-{FRAMES}",
                    "--output", str(root / "out" / "f_####"), "--stall-timeout", str(STALL_TIMEOUT_S),
                    "--max-restarts", "20", "--report", str(root / "report.json"), "--quiet",
                    "--", "--python", str(SLOW)]
        self.healer: subprocess.Popen | None = None
        self.t0 = time.monotonic()
        self.blender_pids: set[tuple[int, float | None]] = set()

    # -- healer sessions ------------------------------------------------------------------------------
    def start_healer(self) -> None:
        led = _ledger(self.home)
        self.r.sessions.append(len(led["attempts"]) if led else 0)
        log = self.r.root / f"healer-{len(self.r.sessions)}.log"
        with open(log, "wb") as f:
            # cwd: a Blender that crashes before its temp dir is set writes blender.crash.txt there
            self.healer = subprocess.Popen(self.cmd, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                           start_new_session=True, cwd=self.r.root)

    def _note_blenders(self) -> None:
        led = _ledger(self.home)
        for a in (led or {}).get("attempts", []):
            if a.get("pid"):
                self.blender_pids.add((a["pid"], a.get("pid_create_time")))

    def _wait_for_blender(self, timeout: float = 6.0) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.healer and self.healer.poll() is None:
            pid = _running_blender(self.home)
            if pid:
                return pid
            time.sleep(0.02)
        return None

    # -- faults ----------------------------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        assert self.healer is not None
        if self.healer.poll() is not None:
            fault.effect = f"skipped: the healer already exited ({self.healer.returncode})"
            return
        fault.at_s = time.monotonic() - self.t0
        if fault.kind.startswith("blender_"):
            pid = self._wait_for_blender()
            if pid is None:
                fault.effect = "skipped: no Blender running"
                return
            sig = {"blender_sigkill": signal.SIGKILL, "blender_sigsegv": signal.SIGSEGV,
                   "blender_stall": signal.SIGSTOP}[fault.kind]
            self._note_blenders()
            os.kill(pid, sig)
            fault.effect = f"{sig.name} to Blender pid {pid}"
        elif fault.kind == "incident_kill":
            self._kill_at_incident(fault)
        elif fault.kind == "agent_kill":
            self.agent.kill()
            pause = self.rng.uniform(0.1, 1.5)
            time.sleep(pause)
            self.agent.start()
            fault.effect = f"agent SIGKILLed, restarted after {pause:.2f} s"
        elif fault.kind == "healer_kill":
            led = _ledger(self.home)
            if led and led.get("status") == "complete":
                fault.effect = "skipped: the job is already complete"
                return
            self._note_blenders()
            self.healer.send_signal(signal.SIGKILL)
            self.healer.wait(10)
            orphan = _running_blender(self.home)
            pause = self.rng.uniform(0.0, 1.0)
            time.sleep(pause)
            self.start_healer()
            fault.effect = (f"healer SIGKILLed ({'orphan Blender ' + str(orphan) if orphan else 'no Blender running'}), "
                            f"same command again after {pause:.2f} s")

    def _kill_at_incident(self, fault: Fault) -> None:
        """Blender segfaults; the healer is SIGKILLed the moment its ledger records the crash, i.e. when
        it has decided what happened and before it could hand the incident to the webhook outbox."""
        assert self.healer is not None
        pid = self._wait_for_blender()
        if pid is None:
            fault.effect = "skipped: no Blender running"
            return
        self._note_blenders()
        os.kill(pid, signal.SIGSEGV)
        deadline, recorded = time.monotonic() + 15, None
        while time.monotonic() < deadline and self.healer.poll() is None:
            att = next((a for a in (_ledger(self.home) or {}).get("attempts", []) if a.get("pid") == pid), None)
            if att and att.get("error_type"):
                recorded = att["error_type"]
                break
            time.sleep(0.0005)
        if recorded is None:
            fault.effect = f"skipped: SIGSEGV to Blender pid {pid}, but the healer never recorded it"
            return
        self.healer.send_signal(signal.SIGKILL)
        self.healer.wait(10)
        journal = self.home / "healer" / "incidents"
        held = len(list(journal.glob("*.json"))) if journal.exists() else 0
        outbox = self.home / "healer" / "outbox"
        queued = len(list(outbox.glob("*.json"))) if outbox.exists() else 0
        pause = self.rng.uniform(0.0, 0.5)
        time.sleep(pause)
        self.start_healer()
        fault.effect = (f"SIGSEGV to Blender pid {pid}; healer SIGKILLed as its ledger recorded {recorded} "
                        f"(journal held {held}, outbox {queued}); same command again after {pause:.2f} s")

    # -- the round -------------------------------------------------------------------------------------
    def run(self, faults: list[Fault] | None = None) -> RoundResult:
        r = self.r
        r.faults = faults if faults is not None else plan_faults(self.rng)
        try:
            self.agent.start()
            self.start_healer()
            for fault in r.faults:
                deadline = time.monotonic() + fault.delay_s
                while time.monotonic() < deadline and self.healer and self.healer.poll() is None:
                    time.sleep(0.01)
                self.inject(fault)
            assert self.healer is not None
            try:
                r.healer_exit = self.healer.wait(ROUND_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                r.error = f"the healer did not finish in {ROUND_TIMEOUT_S} s"
                return r
            self._note_blenders()
            self.settle()
        except Exception as e:  # noqa: BLE001 - reported with the round's context
            r.error = f"{type(e).__name__}: {e}"
        finally:
            r.duration_s = time.monotonic() - self.t0
            self.cleanup()
        return r

    def settle(self) -> None:
        """Wait for telemetry and webhooks to arrive (bounded), then take the round's evidence."""
        r = self.r
        r.ledger = _ledger(self.home)
        r.job = (r.ledger or {}).get("job")
        try:
            r.report = json.loads((r.root / "report.json").read_text())
        except (OSError, ValueError):
            r.report = None
        wait_telemetry(self.agent, r.job or "", FRAMES)
        time.sleep(1.2)                     # one more spool scan: a duplicate would show up now
        r.telemetry = self.agent.telemetry(r.job or "")
        expected = sum(expected_incidents(r).values())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(self.rx.received(r.webhook_path)) < expected:
            time.sleep(0.05)
        time.sleep(0.3)
        r.deliveries = self.rx.received(r.webhook_path)
        outbox = self.home / "healer" / "outbox"
        r.outbox_left = sorted(p.name for p in [*outbox.glob("*.json"), *outbox.glob("failed/*.json")]) \
            if outbox.exists() else []          # (sent/ holds the markers of what was delivered)

    def cleanup(self) -> None:
        if self.healer and self.healer.poll() is None:
            self.healer.kill()
            self.healer.wait(10)
        self._note_blenders()
        for pid, ctime in sorted(self.blender_pids, key=lambda x: x[0]):
            try:
                p = psutil.Process(pid)
                if ctime and abs(p.create_time() - ctime) > 1.0 or p.status() == psutil.STATUS_ZOMBIE:
                    continue
                self.r.blenders_left.append(pid)
                os.killpg(pid, signal.SIGKILL)
            except (psutil.Error, OSError):
                pass
        self.agent.stop()


def run_round(seed: int, round_no: int, workdir: Path, scene: Path, rx: WebhookReceiver, blender: str,
              faults: list[Fault] | None = None) -> RoundResult:
    """Run one chaos round (see the module docstring); never raises for what the faults did. `faults`
    replaces the seeded draw (a fault aimed at one moment)."""
    return _Round(seed, round_no, workdir, scene, rx, blender).run(faults)


# -- the invariants --------------------------------------------------------------------------------------------
_NO_INCIDENT = {None, "ok", "interrupted"}


def expected_incidents(r: RoundResult) -> Counter:
    """The webhook deliveries the round's ledger calls for, by kind.

    Per attempt: a fatal typed error gives render.crashed (render.stalled for a stall); an attempt
    that a new healer adopted ("interrupted") gives none. Per healer session: one render.restarted
    before each attempt after its first (plus the one a killed healer announced just before it died,
    as its log shows: the incident is journaled before the line is printed); the session that finishes
    sends render.completed, plus render.recovered when one of its own attempts had failed. Warnings:
    one render.warning each. `incident_slack` says what may come on top.
    """
    led = r.ledger or {}
    attempts = [a for a in led.get("attempts", []) if a.get("pid") is not None]
    c: Counter = Counter()
    for a in attempts:
        et = a.get("error_type")
        if et in _NO_INCIDENT or not ERROR_TYPES.get(et, ERROR_TYPES["unknown"]).fatal:
            continue
        c["render.stalled" if et == "stall" else "render.crashed"] += 1
    bounds = [*r.sessions, len(led.get("attempts", []))]
    for i in range(len(r.sessions)):
        mine = [a for a in led.get("attempts", [])[bounds[i]:bounds[i + 1]] if a.get("pid") is not None]
        restarts = max(0, len(mine) - 1)
        if i < len(r.sessions) - 1:
            # A healer killed between announcing a restart and recording the new Blender's pid sent
            # render.restarted for a Blender that never ran: its own log says so.
            said = tail(r.root / f"healer-{i + 1}.log", 1 << 20).count("renderwatch: restart: ")
            restarts = max(restarts, min(said, restarts + 1))
        c["render.restarted"] += restarts
    last = [a for a in led.get("attempts", [])[bounds[-2]:] if a.get("pid") is not None] if r.sessions else []
    if led.get("status") == "complete":
        c["render.completed"] += 1
        if any(a.get("error_type") not in _NO_INCIDENT for a in last):
            c["render.recovered"] += 1
    c["render.warning"] += sum(1 for w in led.get("warnings", []) if w.get("type") != "simulation")
    return +c


def incident_slack(r: RoundResult) -> Counter:
    """Incidents a killed healer may have made durable (journaled) without its ledger or log showing it,
    delivered by the next healer: at least once, never lost. A killed session may have journaled the
    render.restarted it was about to announce; an attempt a new healer adopted whose Blender had
    already exited may have had its render.crashed journaled just before the kill."""
    led = r.ledger or {}
    c: Counter = Counter()
    bounds = [*r.sessions, len(led.get("attempts", []))]
    for i in range(len(r.sessions) - 1):
        mine = [a for a in led.get("attempts", [])[bounds[i]:bounds[i + 1]] if a.get("pid") is not None]
        said = tail(r.root / f"healer-{i + 1}.log", 1 << 20).count("renderwatch: restart: ")
        if said < max(0, len(mine) - 1) + 1:
            c["render.restarted"] += 1
    for a in led.get("attempts", []):
        if a.get("error_type") == "interrupted" and "already exited" in (a.get("error_summary") or ""):
            c["render.crashed"] += 1
            c["render.stalled"] += 1
    return c


def check_round(r: RoundResult) -> None:
    """Assert the four chaos invariants; every message carries the seed and the round's context."""
    def fail(what: str) -> AssertionError:
        return AssertionError(f"{what}\n{r.context()}")

    if r.error:
        raise fail(f"round did not complete: {r.error}")
    if r.healer_exit != 0:
        raise fail(f"renderwatch render exited {r.healer_exit}, expected 0")
    led, doc = r.ledger or {}, r.report or {}
    frames = list(range(1, FRAMES + 1))

    # 1. every frame present exactly once on disk, and verified
    out = r.root / "out"
    names = sorted(p.name for p in out.iterdir()) if out.exists() else []
    want = [f"f_{f:04d}.png" for f in frames]
    if names != want:
        raise fail(f"output folder holds {names}, expected exactly {want}")
    bad = [(n, v.reason) for n in names if not (v := verify_image(out / n)).ok]
    if bad:
        raise fail(f"outputs that do not verify: {bad}")
    if doc.get("frames_completed") != frames or sorted(int(f) for f in led.get("frames", {})) != frames:
        raise fail(f"report/ledger frames_completed {doc.get('frames_completed')} != {frames}")

    # 2. no verified frame rendered twice: each frame saved by one attempt only, never planned again
    #    once verified, and rendered again only if it was in flight when an attempt was cut short
    attempts = led.get("attempts", [])
    saved = [f for a in attempts for f in a.get("frames_rendered", [])]
    if sorted(saved) != frames:
        raise fail(f"frames saved per attempt {saved}: each frame must be saved by exactly one attempt")
    verified: set[int] = set()
    for a in attempts:
        again = verified & set(a.get("frames_planned", []))
        if again:
            raise fail(f"attempt {a.get('attempt')} planned already verified frames {sorted(again)}")
        verified |= set(a.get("frames_rendered", []))
    counts = {int(k): v for k, v in led.get("frame_render_counts", {}).items()}
    cut = Counter(a.get("frame_in_flight") for a in attempts
                  if a.get("error_type") not in (None, "ok") and a.get("frame_in_flight") is not None)
    over = {f: n for f, n in counts.items() if n > 1 + cut[f]}
    if over:
        raise fail(f"frames started more often than kills explain: {over} (cut short in flight: {dict(cut)})")

    # 3. every frame's telemetry in the agent exactly once
    t = r.telemetry
    if t.get("frames_rendered_total") != FRAMES or t.get("frames_done") != FRAMES:
        raise fail(f"agent telemetry {t}: expected frames_rendered_total == frames_done == {FRAMES}")

    # 4. every incident notified exactly once
    ids = Counter(d.id for d in r.deliveries)
    dup = {i: n for i, n in ids.items() if n > 1}
    if dup:
        raise fail(f"webhook deliveries received more than once: {dup}")
    unsigned = [d.id for d in r.deliveries if not d.signed]
    if unsigned:
        raise fail(f"webhook deliveries with a bad signature: {unsigned}")
    got = +Counter(d.kind for d in r.deliveries)
    want_kinds, slack = expected_incidents(r), incident_slack(r)
    if want_kinds - got or got - want_kinds - slack:
        raise fail(f"webhook deliveries by kind {dict(got)}, the ledger calls for {dict(want_kinds)} "
                   f"(and allows up to {dict(slack)} more, journaled by a healer killed before recording them)")
    if r.outbox_left:
        raise fail(f"undelivered outbox files left: {r.outbox_left}")
    if r.blenders_left:
        raise fail(f"Blender processes still running after the round: {r.blenders_left}")


def round_figures(r: RoundResult) -> dict[str, int]:
    """Counts for the benchmark table: what a round lost or doubled (all 0 in a passing round)."""
    led = r.ledger or {}
    saved = Counter(f for a in led.get("attempts", []) for f in a.get("frames_rendered", []))
    on_disk = {p.name for p in (r.root / "out").glob("f_*.png") if verify_image(p).ok} if (r.root / "out").exists() else set()
    t = r.telemetry.get("frames_rendered_total")
    got = +Counter(d.kind for d in r.deliveries)
    want, slack = expected_incidents(r), incident_slack(r)
    ids = Counter(d.id for d in r.deliveries)
    return {
        "frames_missing": FRAMES - len(on_disk),
        "verified_frames_rendered_twice": sum(n - 1 for n in saved.values() if n > 1)
        + max(0, int(t or 0) - FRAMES),
        "telemetry_frames_off": abs(int(t if t is not None else 0) - FRAMES),
        "incidents_lost": sum((want - got).values()),
        "incidents_extra": sum((got - want - slack).values()) + sum(n - 1 for n in ids.values() if n > 1),
        "faults_applied": sum(1 for f in r.faults if not f.effect.startswith(("skipped", "pending"))),
        "restarts": max(0, len([a for a in led.get("attempts", []) if a.get("pid")]) - 1),
    }
