"""What the healer tells Open Job Description while it supervises a task (`openjd run`, Deadline Cloud):
the task's progress bar, status text and failure message, as lines on the task's stdout.

Usage::

    openjd = OpenJDLines(sys.stdout)      # when farm_identity(os.environ).engine == "openjd"
    openjd.progress(12, 48); openjd.status("renderwatch restart 1/3"); openjd.fail("out of memory")
"""

from __future__ import annotations


class OpenJDLines:
    """What Open Job Description reads from a task's stdout: `openjd_progress: <percent>`,
    `openjd_status: <message>` and `openjd_fail: <message>` (the task's progress bar, status text and
    failure message in `openjd run` and Deadline Cloud)."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self._last = -1.0

    def _line(self, text: str) -> None:
        try:
            self.stream.write(text.replace("\n", " ") + "\n")
            self.stream.flush()
        except BrokenPipeError:     # nobody reads the task's output any more: the render goes on
            pass

    def progress(self, done: int, total: int) -> None:
        pct = round(100.0 * done / total, 1) if total else 100.0
        if pct != self._last:
            self._last = pct
            self._line(f"openjd_progress: {pct}")

    def status(self, message: str) -> None:
        self._line(f"openjd_status: {message}")

    def fail(self, message: str) -> None:
        self._line(f"openjd_fail: {message}")
