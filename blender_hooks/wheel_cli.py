"""`renderwatch-blender`: a `blender`-compatible command line over whichever `bpy` wheel is installed.

Blender ships as a Python module (`pip install bpy==X`: 4.2.x, 4.5.x and 5.0.x for CPython 3.11,
5.1.x-5.3.x for 3.13); this command lets the healer, the tests and the benchmarks drive any of them
exactly like a Blender binary. Install renderwatch (or just `pip install --no-deps renderwatch`)
into the interpreter that has bpy, then:

    renderwatch-blender -b scene.blend --python hooks/startup.py -o //out/f_ -s 1 -e 3 -a
    python -m blender_hooks.wheel_cli -b scene.blend -a       # the same, without the script

`renderwatch-blender5` is the same command under its old name.

Arguments are processed in order, like Blender: `-b`, `--factory-startup` (else the user's
preferences are read, so an installed renderwatch extension loads as in Blender), a .blend path,
`-E ENGINE`, `-o PATTERN`, `-F FORMAT`, `-x 0|1`, `-s N`, `-e N`, `-j N`, `-f LIST` (1,3,5 and
a..b), `-a`, `-P/--python FILE`, `--python-expr EXPR`, `--python-exit-code N`, `-t N`, `-v`, and
everything after `--` left to scripts in sys.argv. This module only parses; the bpy work is
`blender_hooks.addon.run_cli`.

Output is line-buffered, as a Blender binary's is unbuffered (its main() sets that up; the module
has no main()): Blender's C stdio and Python's sys.stdout would otherwise hold a pipe's output in
4-8 KiB blocks, and whoever reads it (the healer, a farm's log) would see a frame's progress only
when the buffer fills or Blender exits.
"""

from __future__ import annotations

import sys

# option -> (action, takes a value)
OPTIONS: dict[str, tuple[str, bool]] = {
    "-b": ("background", False), "--background": ("background", False),
    "--factory-startup": ("factory_startup", False), "-noaudio": ("noaudio", False),
    "--python-use-system-env": ("noaudio", False),   # a module already uses the system's environment
    "-E": ("engine", True), "--engine": ("engine", True),
    "-o": ("output", True), "--render-output": ("output", True),
    "-F": ("format", True), "--render-format": ("format", True),
    "-x": ("extension", True), "--use-extension": ("extension", True),
    "-s": ("start", True), "--frame-start": ("start", True),
    "-e": ("end", True), "--frame-end": ("end", True),
    "-j": ("jump", True), "--frame-jump": ("jump", True),
    "-f": ("frames", True), "--render-frame": ("frames", True),
    "-a": ("anim", False), "--render-anim": ("anim", False),
    "-P": ("python", True), "--python": ("python", True),
    "--python-expr": ("expr", True), "--python-exit-code": ("exit_code", True),
    "-t": ("threads", True), "--threads": ("threads", True),
    "-v": ("version", False), "--version": ("version", False),
    "-h": ("help", False), "--help": ("help", False),
}
_NOOP = {"background", "noaudio"}
_INT = {"start", "end", "jump", "threads", "exit_code"}


class UsageError(ValueError):
    pass


def parse(argv: list[str]) -> list[tuple[str, str | None]]:
    """Blender arguments -> ordered (action, value) pairs; stops at `--`. Raises UsageError."""
    actions: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            break
        spec = OPTIONS.get(arg)
        if spec is None:
            if arg.startswith("-") and arg != "-":
                # Blender does the same with an argument it does not know.
                print(f"unknown argument, loading as file: {arg}", file=sys.stderr)
            actions.append(("file", arg))
            continue
        action, needs_value = spec
        value = None
        if needs_value:
            if i >= len(argv):
                raise UsageError(f"Error: {arg} requires an argument")
            value = argv[i]
            i += 1
            if action in _INT:
                try:
                    int(value)
                except ValueError:
                    raise UsageError(f"Error: {arg} expects a number, not '{value}'") from None
        if action not in _NOOP:
            actions.append((action, value))
    return actions


def line_buffered_stdout() -> None:
    """Make stdout line-buffered, in C stdio (what Blender and Cycles print through) and in Python."""
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):     # replaced by a caller, or closed
        pass
    if not sys.platform.startswith(("linux", "darwin")):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        stream = ctypes.c_void_p.in_dll(libc, "stdout" if sys.platform.startswith("linux") else "__stdoutp")
        libc.fflush.argtypes = [ctypes.c_void_p]
        libc.setvbuf.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t]
        libc.fflush(stream)
        libc.setvbuf(stream, None, IOLBF, 0)
    except (OSError, AttributeError, ValueError):     # no libc symbol here: output stays as it was
        pass


IOLBF = 1          # <stdio.h> _IOLBF on glibc, musl and macOS


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    line_buffered_stdout()
    try:
        actions = parse(args)
    except UsageError as e:
        print(e, file=sys.stderr)
        return 1
    if ("help", None) in actions:
        print(__doc__)
        return 0
    # Scripts read Blender's whole command line from sys.argv, as in a real Blender.
    sys.argv = [sys.argv[0] if sys.argv else "renderwatch-blender", *args]
    from blender_hooks import addon  # imports bpy (Blender as a module): 0.3-0.6 s

    if ("version", None) in actions:
        print(f"Blender {addon.bpy.app.version_string}")
        return 0
    return addon.run_cli(actions)


if __name__ == "__main__":
    sys.exit(main())
