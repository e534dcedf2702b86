"""One Blender's output as the healer reads it, whoever drives that Blender: each line parsed for its
progress meaning, passed through (Blender's lines to stdout unchanged, renderwatch's own said) and fed
to the classifier; when Blender exits, its end classified with the crash file it named.

The supervisor's attempt (attempt.py) and supervise-only (supervise_only.py) read Blender through
this one path; what each does with a line's meaning (the ledger's frames, the frame checks) is theirs.

Usage::

    out = OutputWatch(LogScanner(), echo=print, say=say)
    ev = out.feed(line)                                   # a progress.LineEvent
    error = out.classify(exit_code, exit_signal, crash_file=None)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from healer.supervising.launch import exit_status
from healer.supervising.progress import LineEvent, own_line, parse_line

if TYPE_CHECKING:
    from healer.diagnosis.classify import LogScanner
    from healer.diagnosis.errors import RenderError


class OutputWatch:
    """The classifier's scanner over one Blender's output, and the pass-through of its lines."""

    def __init__(self, scanner: LogScanner, *, echo: Callable[[str], None] | None,
                 say: Callable[[str], None]):
        self.scanner = scanner
        self.echo, self.say = echo, say

    def feed(self, line: str) -> LineEvent:
        """One line (without its newline): echoed or said, classified; its progress meaning returned."""
        ev = parse_line(line)
        if self.echo is not None:
            own = own_line(line, ev)
            if own is None:
                self.echo(line)         # Blender's stdout stays Blender's
            elif own:
                self.say(own)
        self.scanner.feed(line)
        return ev

    def classify(self, returncode: int, crash_file: str | None = None, **evidence: Any) -> RenderError:
        """How Blender ended (`returncode`: negative when a signal killed it), from its output, the
        crash file it named (the last one printed, else the one the classifier found) and `evidence`
        (LogScanner.finish's: stalled, frame, oom_killed)."""
        from healer.diagnosis.crashfile import read_crash_file

        code, sig = exit_status(returncode)
        path = crash_file or self.scanner.crash_file
        return self.scanner.finish(code, sig, crash_file=path, crash_text=read_crash_file(path) if path else None,
                                   **evidence)
