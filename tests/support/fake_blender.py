"""A Blender that replays real recorded runs (tests/fixtures/runs/, made by tests/fixtures/record_runs.py
with Debian's Blender 3.4), behind the supervisor's `seams.Launcher`: the same output lines in the same
order (time compressed), the same exit status or signal, the same crash file, and a real image file
for every `Saved:` line, written where the line says. So every restart and failure path of the
supervisor runs in milliseconds, with no Blender. The real-Blender tests stay in tests/integration.

    launcher = ReplayLauncher(["segfault_at_2", "ok_2-3"])      # one recorded run per attempt
    sup = Supervisor(req, launcher=launcher, probes=ReplayProbes(launcher), probe_interval_s=0.01)
    ...
    launcher.argvs           # what the supervisor asked for, attempt by attempt

A run recorded for other frames than the attempt asks for is an AssertionError naming both.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import json
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from healer.supervising.frames import render_args

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
SCENE = Path(__file__).resolve().parents[1] / "fixtures" / "scenes" / "tiny.blend"


def load_run(name: str) -> dict:
    return json.loads((RUNS / f"{name}.json").read_text())


def png(width: int = 32, height: int = 18) -> bytes:
    """A complete, valid PNG (what verify_image accepts as a rendered frame)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + b"\x40\x40\x40" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def only_frames(run: dict | str, frames: Sequence[int], *, extra: Sequence[str] = ()) -> dict:
    """A recorded run cut to some of its frames (each frame's lines run from its marker to its `Saved:`),
    with `extra` lines said before the first frame (e.g. the hooks' render settings line)."""
    run = load_run(run) if isinstance(run, str) else run
    head: list[list] = []
    blocks: dict[int, list[list]] = {}
    tail: list[list] = []
    cur: int | None = None
    for t, line in run["lines"]:
        if line.startswith("[renderwatch] frame_start "):
            cur = int(line.split()[2])
            blocks[cur] = []
        if cur is None:
            head.append([t, line])
        elif cur in blocks and (not blocks[cur] or not blocks[cur][-1][1].startswith("Saved: ")):
            blocks[cur].append([t, line])
        else:
            tail.append([t, line])
    t0 = head[-1][0] if head else 0.0
    lines = head + [[t0, x] for x in extra] + [ln for f in frames for ln in blocks[f]] + tail
    return {**run, "frames": list(frames), "lines": lines}


def long_run(frames: Sequence[int], *, template: str = "ok_1-3", hang: bool = False, exit: int = 0,
             played: int | None = None) -> dict:
    """A run of many frames made from a recorded one: each frame says what frame 1 of `template` said
    at its start, last progress, save and time lines, with its own number (a long job of tiny frames,
    without a recording per length). `played`: only the first so many frames are rendered; `hang`:
    alive after the last frame played until stopped (a healer killed mid-job is abandoned there)."""
    base = load_run(template)
    block = [ln for ln in base["lines"] if ln[1].startswith(("[renderwatch] frame_start 1 ", "Saved: ", " Time: "))
             or ("Fra:1 " in ln[1] and ln[1].endswith("Finished"))]
    mark = block[0][1]
    head = [ln for ln in base["lines"] if ln[0] < block[0][0] and ln[1] != mark]
    lines, t = [list(x) for x in head], head[-1][0] if head else 0.0
    one = [x for x in block if x[1].startswith(("[renderwatch] frame_start 1 ", "Fra:1 "))][:2]
    one += [next(x for x in block if x[1].startswith("Saved: ")), next(x for x in block if x[1].startswith(" Time: "))]
    for f in list(frames)[:played]:
        for _, line in one:
            t += 0.001
            lines.append([t, line.replace("frame_start 1 ", f"frame_start {f} ").replace("Fra:1 ", f"Fra:{f} ")
                          .replace("f_0001", f"f_{f:04d}")])
    return {**base, "what": f"{len(frames)} frames made from {template}", "frames": list(frames), "lines": lines,
            "exit": exit, "hang": hang}


class ReplayedBlender:
    """One replayed run (a `seams.RunningBlender`)."""

    def __init__(self, run: dict, pid: int, subst: dict[str, str], on_line: Callable[[str, float], None],
                 clock: Callable[[], float], speed: float, image: Callable[[Path], bytes] | None = None):
        self.run, self.pid, self._subst, self._on_line = run, pid, subst, on_line
        self._image = image or (lambda _path: png())
        self._clock, self._speed = clock, speed
        self.tail: collections.deque[str] = collections.deque(maxlen=500)
        self.last_output_at = clock()
        self._rc: int | None = None
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._task = asyncio.create_task(self._play())

    def _text(self, text: str) -> str:
        for k, v in self._subst.items():
            text = text.replace(k, v)
        return text

    async def _play(self) -> None:
        t_prev = 0.0
        crash = self.run.get("crash_file")
        for t, raw in self.run["lines"]:
            if self._stop.is_set():
                break
            await asyncio.sleep(max(0.0, (t - t_prev) * self._speed))
            t_prev = t
            line = self._text(raw)
            if line.startswith("Saved: "):          # Blender writes the file, then says so
                path = Path(line.split("'")[1] if "'" in line else line[7:].strip())
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self._image(path))
            if line.startswith("Writing: ") and crash is not None:
                Path(line[9:].strip()).write_text(self._text(crash))
            now = self._clock()
            self.last_output_at = now
            self.tail.append(line)
            self._on_line(line, now)
        if self.run.get("hang") and not self._stop.is_set():
            await self._stop.wait()                # a stall: alive until stopped, then the recorded signal
        self._rc = int(self.run["exit"])
        self._done.set()

    def returncode(self) -> int | None:
        return self._rc

    async def wait(self) -> int:
        await self._done.wait()
        assert self._rc is not None
        return self._rc

    async def stop(self, grace_s: float) -> None:
        if self._rc is None:
            self._stop.set()
            await self._done.wait()
            if not self.run.get("hang"):           # stopped mid-run: SIGTERM, as a real group stop
                self._rc = -15


@dataclasses.dataclass(frozen=True)
class ReplaySpawned:
    """A replayed Blender that has "started" (`seams.Spawned`): its run plays once attached."""

    run: dict
    pid: int
    scene: Path
    attempt: int


class ReplayLauncher:
    """A `seams.Launcher` that plays one recorded run per attempt, in order."""

    def __init__(self, runs: Sequence[str | dict], *, speed: float = 0.01, clock: Callable[[], float] | None = None,
                 image: Callable[[int, Path], bytes] | None = None):
        """`image(attempt, path)`: the bytes written for each `Saved:` line (default: a small flat PNG)."""
        import time

        self.image = image
        self.runs = [load_run(r) if isinstance(r, str) else r for r in runs]
        self.speed = speed
        self.clock = clock or time.monotonic
        self.argvs: list[list[str]] = []
        self.envs: list[dict[str, str]] = []
        self.current: ReplayedBlender | None = None
        self.orphans_stopped: list[int] = []
        self._pid = 40000

    def spawn(self, argv: Sequence[str], *, env: dict[str, str]) -> ReplaySpawned:
        if len(self.argvs) >= len(self.runs):
            raise AssertionError(f"attempt {len(self.argvs) + 1} launched, but only {len(self.runs)} runs were "
                                 f"given; argv: {list(argv)}")
        run = self.runs[len(self.argvs)]
        self.argvs.append(list(argv))
        self.envs.append(dict(env))
        want = render_args(run["frames"])
        if not any(list(argv[i:i + len(want)]) == want for i in range(len(argv))):
            raise AssertionError(f"attempt {len(self.argvs)} asks {list(argv)[-8:]}, the run recorded {want}")
        self._pid += 1
        return ReplaySpawned(run, self._pid, Path(argv[argv.index("-b") + 1]), len(self.argvs))

    def release(self, spawned: ReplaySpawned, env: dict[str, str]) -> None:
        """The gate's variables (job, attempt): part of the environment this attempt renders with."""
        self.envs[spawned.attempt - 1].update(env)

    async def attach(self, spawned: ReplaySpawned, on_line: Callable[[str, float], None]) -> ReplayedBlender:
        """The recorded run plays from here (a real Blender's output waits in its pipe until then)."""
        import tempfile

        s = spawned
        self.current = ReplayedBlender(s.run, s.pid, {"{scene_dir}": str(s.scene.parent), "{tmp}": tempfile.gettempdir()},
                                       on_line, self.clock, self.speed,
                                       None if self.image is None else functools.partial(self.image, s.attempt))
        return self.current

    def alive(self, pid: int | None, create_time: float | None) -> bool:
        return False

    async def stop_orphan(self, pid: int, create_time: float | None, grace_s: float) -> None:
        self.orphans_stopped.append(pid)


class ReplayProbes:
    """A `seams.HostProbes` over the replayed Blender: running until its run ends; no OOM kills, no
    full disk, no resource samples (the host parts have their own tests)."""

    def __init__(self, launcher: ReplayLauncher, *, oom_kills: Sequence[int] | None = None):
        self.launcher = launcher
        self._oom = list(oom_kills) if oom_kills is not None else None

    def process_status(self, pid: int) -> str | None:
        cur = self.launcher.current
        return "running" if cur is not None and cur.pid == pid and cur.returncode() is None else None

    def process_create_time(self, pid: int) -> float | None:
        return 1.0

    def oom_kills(self) -> int | None:
        if not self._oom:
            return None
        return self._oom.pop(0) if len(self._oom) > 1 else self._oom[0]

    def full_disk(self, path: str) -> str | None:
        return None

    def gl_driver(self, pid: int) -> tuple[str, str] | None:
        return None

    def resources(self, pid: int) -> dict:
        return {}
