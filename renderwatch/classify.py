"""`renderwatch classify LOG [--crash-file F] [--exit-code N | --signal N] [--json]`.

Prints the typed error for a captured Blender output (LOG, or `-` for stdin). The crash file is
found from the log's `Writing: <path>` line when --crash-file is not given and that file exists.
Exit status: 0 when the run was fine or its errors are not fatal (ok, a handler's traceback, a
missing texture), 1 when the classification is fatal (a crash, an input error: the render failed),
2 when the input can't be read. `--json` prints the same verdict either way.

Usage::

    renderwatch classify render.log --exit-code 139
    blender -b shot.blend -a 2>&1 | tee render.log; renderwatch classify render.log --exit-code $? --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, BinaryIO, TextIO

if TYPE_CHECKING:    # the classifier is imported when `classify` runs, not when the CLI registers it
    from healer.diagnosis.classify import LogScanner
    from healer.diagnosis.errors import RenderError

EXIT_OK, EXIT_FATAL, EXIT_UNREADABLE = 0, 1, 2


def register(sub: argparse._SubParsersAction) -> None:
    """The `classify` command (renderwatch.cli)."""
    add_classify_parser(sub)


def add_classify_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `classify` subcommand on a subparsers object (healer.cli calls this)."""
    p = sub.add_parser("classify", help="print the typed error for a captured Blender output",
                       description="Classify a captured Blender output (both log formats, any size; `-` = stdin) "
                                   "into one typed error: root cause, fatal or not, and every matching line.")
    p.add_argument("log", metavar="LOG", help="the captured stdout+stderr, or - for stdin")
    p.add_argument("--crash-file", metavar="F", help="Blender's crash file (default: the one the log names, if it exists)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--exit-code", type=int, metavar="N", help="Blender's exit status (negative = killed by signal -N)")
    how.add_argument("--signal", type=int, metavar="N", help="the signal that killed Blender")
    p.add_argument("--json", action="store_true", help="print JSON: type, fatal, summary, findings, ...")
    p.set_defaults(func=cmd_classify)
    return p


def cmd_classify(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None,
                 stdin: BinaryIO | None = None) -> int:
    from healer.diagnosis.classify import LogScanner
    from healer.diagnosis.crashfile import read_crash_file

    out = stdout or sys.stdout
    err_out = stderr or sys.stderr
    scanner = LogScanner()
    try:
        if args.log == "-":
            _scan(scanner, stdin or sys.stdin.buffer)
        else:
            with open(args.log, "rb") as f:
                _scan(scanner, f)
    except OSError as e:
        print(f"renderwatch classify: cannot read {args.log}: {e.strerror or e}", file=err_out)
        return EXIT_UNREADABLE

    crash_path = args.crash_file
    crash_text = None
    if crash_path:
        crash_text = read_crash_file(crash_path)
        if crash_text is None:
            print(f"renderwatch classify: cannot read the crash file {crash_path}", file=err_out)
            return EXIT_UNREADABLE
    elif scanner.crash_file and os.path.isfile(scanner.crash_file):
        crash_path = scanner.crash_file
        crash_text = read_crash_file(crash_path)

    error = scanner.finish(args.exit_code, args.signal, crash_file=crash_path, crash_text=crash_text)
    if args.json:
        d = error.to_dict()
        d["native_frames"] = list(error.native_frames)
        d["frames_saved"] = scanner.frames_saved + scanner.frames_skipped
        d["lines"] = scanner.lines
        json.dump(d, out, indent=2)
        out.write("\n")
    else:
        out.write(format_error(error, scanner))
    return EXIT_FATAL if error.fatal else EXIT_OK


def _scan(scanner: LogScanner, stream: BinaryIO) -> None:
    from healer.diagnosis.logformat import iter_lines

    feed = scanner.feed
    for line in iter_lines(stream):
        feed(line)


def format_error(error: RenderError, scanner: LogScanner | None = None) -> str:
    """The human form: the verdict, then the evidence."""
    out = [f"{error.type} ({'fatal' if error.fatal else 'not fatal'}, {error.severity}): {error.summary}"]
    facts = []
    if error.frame is not None:
        facts.append(f"frame {error.frame}")
    if scanner is not None:
        facts.append(f"{scanner.frames_saved + scanner.frames_skipped} frames saved")
    if error.exit_signal:
        facts.append(f"signal {error.exit_signal}")
    elif error.exit_code is not None:
        facts.append(f"exit status {error.exit_code}")
    if error.crash_file:
        facts.append(f"crash file {error.crash_file}")
    if facts:
        out.append("  " + ", ".join(facts))
    if error.findings:
        out.append("findings:")
        for f in error.findings:
            where = f"line {f.line}" if f.line else "exit"
            out.append(f"  {where:>10}  {f.type:<20} {f.text}")
    if error.python_frames:
        out.append("python backtrace (most recent call last):")
        for file, line, func in error.python_frames:
            out.append(f"  {file}:{line} in {func}")
    if error.native_frames:
        out.append("native backtrace:")
        out.extend(f"  {n}" for n in error.native_frames[:30])
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (python -m healer.cli_classify LOG ...), for tests and before healer.cli wires it."""
    parser = argparse.ArgumentParser(prog="renderwatch")
    add_classify_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["classify", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
