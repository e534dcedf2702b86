"""What the supervisor is given, as Protocols: how Blender is run, what the host is asked, where
incidents and metrics go. The real implementations are `launch.ProcessLauncher` and
`probes.SystemProbes`; tests pass a Blender that replays recorded runs (tests/support/fake_blender.py).

Usage::

    sup = Supervisor(request, launcher=ProcessLauncher(), probes=SystemProbes(), clock=time.monotonic)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:   # for the annotations only: a CLI render imports no prometheus_client
    from prometheus_client import Counter, Gauge, Histogram

    from healer.diagnosis.errors import RenderError

LineHandler = Callable[[str, float], None]     # (line without newline, clock time it was read)


class RunningBlender(Protocol):
    """One Blender process of one attempt."""

    @property
    def pid(self) -> int: ...
    @property
    def tail(self) -> Sequence[str]: ...            # the last lines of its output
    @property
    def last_output_at(self) -> float: ...          # clock time of its last output

    def returncode(self) -> int | None: ...
    async def wait(self) -> int: ...                       # negative: killed by that signal
    async def stop(self, grace_s: float) -> None: ...      # SIGTERM its group, SIGKILL after grace_s


class Spawned(Protocol):
    """A Blender that has started, before anyone reads its output (launch.py: a `subprocess.Popen`)."""

    @property
    def pid(self) -> int: ...


class Launcher(Protocol):
    """Starts Blender, and stops a Blender a dead healer left behind.

    Starting is three steps: `spawn` starts the process at once, with no event loop needed (a farm
    task's first Blender starts before the supervisor's event loop exists), held at its gate
    (spawn.py); `release`, once the ledger names it, lets it render with the gate's environment (the
    job and attempt); `attach`, on the loop, reads its output from then on (what it printed in
    between waits in the pipe)."""

    def spawn(self, argv: Sequence[str], *, env: dict[str, str]) -> Spawned: ...
    def release(self, spawned: Any, env: dict[str, str]) -> None: ...
    async def attach(self, spawned: Any, on_line: LineHandler) -> RunningBlender: ...
    def alive(self, pid: int | None, create_time: float | None) -> bool: ...
    async def stop_orphan(self, pid: int, create_time: float | None, grace_s: float) -> None: ...


class HostProbes(Protocol):
    """What the supervisor asks the host about a running Blender."""

    def process_status(self, pid: int) -> str | None: ...        # psutil's status, None when gone
    def process_create_time(self, pid: int) -> float | None: ...
    def oom_kills(self) -> int | None: ...                        # cgroup memory.events oom_kill
    def full_disk(self, path: str) -> str | None: ...             # the directory of path if its disk is full
    def resources(self, pid: int) -> dict[str, Any]: ...          # probes.ResourceSampler.sample, or {}
    def gl_driver(self, pid: int) -> tuple[str, str] | None: ...  # probes.gl_driver: software or hardware GL


class AttemptListener(Protocol):
    """What a running attempt reports as its Blender goes (as Flamenco's worker reports through a
    listener rather than editing a shared record): the supervisor, the ledger's one writer, records it."""

    def frame_started(self, frame: int, expected_path: str | None) -> None: ...
    def frame_saved(self, frame: int, path: str, size: int, seconds: float | None) -> None: ...   # verified whole


class IncidentSink(Protocol):
    """Where incidents go (healer.incidents.dispatch.Incidents): never blocks, never raises."""

    def emit(self, kind: str, info: Any = None, error: RenderError | None = None) -> None: ...
    def job_started(self, info: Any) -> None: ...


class SupervisorMetrics(Protocol):
    """The healer's Prometheus metrics the supervisor updates (healer.service.metrics.HealerMetrics)."""

    probe_healthy: Gauge
    restarts: Counter
    gave_up: Counter
    attempts: Counter
    frames_requested: Gauge
    frames_completed: Gauge
    frames_rerendered: Counter
    stall_detect: Histogram


class NoIncidents:
    """An IncidentSink that drops everything (a CLI run without incident targets)."""

    def emit(self, kind: str, info: Any = None, error: RenderError | None = None) -> None:
        pass

    def job_started(self, info: Any) -> None:
        pass
