"""What the healer tells the host's agent, through the same durable spool the Blender hooks use.

The healer knows things about a job that Blender's hooks cannot: that a saved frame is blank or the
wrong size (it inspects each frame after Blender wrote it). It says so as schema events
(`frame_check`) appended to a spool session of its own; the hooks' sender thread delivers them to
the agent, which counts them (`renderwatch_frames_suspect_total{reason}`) and puts them on the
frame's trace. Nothing is opened until there is something to say, and a spool that cannot be
written is logged once and never stops the render.

Usage::

    agent = AgentEvents(env)
    agent.send("frame_check", job="j1", frame=7, reason="blank", detail="every pixel is (0, 0, 0, 1)")
    agent.close()
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

from blender_hooks import events, spool

log = logging.getLogger("healer.supervising.telemetry")


class AgentEvents:
    """A lazily opened spool session (writer + sender thread) for the healer's own events."""

    def __init__(self, env: Mapping[str, str]):
        self.env = dict(env)
        self.session = os.urandom(8).hex()
        self._seq = itertools.count(1)
        self._writer: spool.SpoolWriter | None = None
        self._sender: spool.SpoolSender | None = None
        self._failed = False
        self.sent = 0

    def send(self, type_: str, *, job: str, spool_only: bool = False, **fields: Any) -> bool:
        """Spool one event and wake the sender. `spool_only` (when no sender runs yet): leave it to the
        agent's spool scanner (within a second), with no connection and no "agent unreachable" line
        from a healer that has nothing else to say."""
        if self._failed:
            return False
        try:
            if self._writer is None:
                directory = spool.spool_dir(self.env)
                self._writer = spool.SpoolWriter(directory, self.session)
                if not spool_only:
                    self._sender = spool.SpoolSender(directory, spool.agent_url(self.env),
                                                     token=spool.agent_token(self.env), writer=self._writer).start()
            ev = events.make_event(type_, session=self.session, seq=next(self._seq), job=job,
                                   host=socket.gethostname(), pid=os.getpid(), **fields)
            ok = self._writer.append(events.encode(ev))
            if self._sender is not None:
                self._sender.wake()
            self.sent += int(ok)
            return ok
        except Exception as e:          # telemetry never stops the render
            self._failed = True
            log.warning("cannot spool events for the agent (%s): suspect frames are reported here only", e)
            return False

    def close(self, timeout: float = 1.0) -> None:
        sender, writer, self._sender, self._writer = self._sender, self._writer, None, None
        try:
            if writer is not None:
                writer.close()
        finally:
            if sender is not None:
                sender.close(timeout)
