"""A started Blender on the event loop (a `seams.RunningBlender`): its merged stdout and stderr read
line by line, its exit awaited, its process group stopped.

spawn.py starts Blender (`spawn_blender`, a plain `subprocess.Popen`, so that a farm task's first
Blender starts before any event loop exists); `BlenderProcess` takes it over from there: the pipe is
read by the loop, and the exit is awaited by a daemon thread blocked in waitpid (what asyncio's own
child watcher does), so that nothing here keeps the healer from exiting.

Usage::

    proc = BlenderProcess(spawn_blender(argv, env=env), on_line=handle)   # on the loop
    rc = await proc.wait()                                                # handle(line, now) saw each line
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable

LOG_TAIL_LINES = 500
READ_LIMIT = 1 << 20          # a runaway line without a newline is cut here


class BlenderProcess:
    """One Blender child in its own process group; stdout+stderr merged and fed line by line."""

    def __init__(self, child: subprocess.Popen, on_line: Callable[[str, float], None]):
        self.child = child
        self.pid = child.pid
        self.on_line = on_line
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self.last_output_at = time.monotonic()
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = loop.create_future()
        threading.Thread(target=self._reap, args=(loop,), name=f"blender-{self.pid}-wait", daemon=True).start()
        self._reader = asyncio.create_task(self._read())

    def _reap(self, loop: asyncio.AbstractEventLoop) -> None:
        rc = self.child.wait()
        try:
            loop.call_soon_threadsafe(self._set_exited, rc)
        except RuntimeError:        # the loop is closed: nobody waits any more
            pass

    def _set_exited(self, rc: int) -> None:
        if not self._exited.done():
            self._exited.set_result(rc)

    async def _read(self) -> None:
        assert self.child.stdout is not None
        loop = asyncio.get_running_loop()
        stream = asyncio.StreamReader(limit=READ_LIMIT, loop=loop)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream, loop=loop),
                                                    self.child.stdout)
        pending = b""
        try:
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    break
                now = time.monotonic()
                self.last_output_at = now
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self._emit(raw, now)
                if len(pending) > READ_LIMIT:
                    self._emit(pending, now)
                    pending = b""
            if pending:
                self._emit(pending, time.monotonic())
        finally:
            transport.close()

    def _emit(self, raw: bytes, now: float) -> None:
        # surrogateescape: a path in a `Saved:` line on a Latin-1 share (caf\xe9_0001.png) keeps its bytes,
        # so the file is found (os.stat re-encodes them) and the line is passed through unchanged
        line = raw.decode("utf-8", errors="surrogateescape").rstrip("\r")
        self.tail.append(line)
        self.on_line(line, now)

    async def wait(self, drain_timeout: float = 5.0) -> int:
        """Wait for exit and for the output to be read to the end (bounded: a grandchild may hold it)."""
        rc = await asyncio.shield(self._exited)
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), drain_timeout)
        except TimeoutError:
            self._reader.cancel()
        return rc

    def returncode(self) -> int | None:
        return self.child.returncode

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the whole process group, then SIGKILL after `grace_s`."""
        await stop_group(self.pid, grace_s, lambda: self.child.returncode is not None)


async def stop_group(pgid: int, grace_s: float, exited: Callable[[], bool]) -> None:
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
            if sig == signal.SIGTERM:      # a stopped (SIGSTOP) Blender handles its SIGTERM only once continued
                os.killpg(pgid, signal.SIGCONT)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if exited():
                return
            await asyncio.sleep(0.05)
