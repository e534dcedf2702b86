"""Read a `blender` command line the way Blender does, for `renderwatch exec -- blender ARGS...`.

Blender executes its arguments left to right: `-s`/`-e`/`-j` set the range, `-a` renders it, `-f`
renders frames (`1,3,5..10`). The supervisor needs the scene, the frames, the output pattern, and
every other argument to pass through unchanged and in its place: what came before the render runs
before it, what came after (`-a --python post.py`) runs after it; script arguments after `--` stay
last. `-s N -a` alone renders N to the scene's end, `-e N -a` alone its start to N, as Blender does.
Arguments between two render actions (`-f 1 --python x.py -f 2`) are refused: one supervised
render cannot run something between two of its frames.

Usage::

    p = parse_blender_argv(["blender", "-b", "shot.blend", "-s", "1", "-e", "10", "-a"])
    p.scene, p.frames, p.passthrough      # "shot.blend", (1, ..., 10), []
"""

from __future__ import annotations

from collections.abc import Sequence

from healer.supervising.frames import MAX_FRAME, MAX_FRAMES_PER_JOB, FrameSpecError, parse_frames

# Options that take one value (so the value is not mistaken for the scene).
_ONE_VALUE = {
    "-f", "--render-frame", "-s", "--frame-start", "-e", "--frame-end", "-j", "--frame-jump", "-o",
    "--render-output", "-F", "--render-format", "-x", "--use-extension", "-E", "--engine", "-t", "--threads",
    "-P", "--python", "--python-text", "--python-expr", "--python-exit-code", "--addons", "-S", "--scene",
    "--log", "--log-level", "--log-file", "--debug-value", "--env-system-datafiles", "--env-system-scripts",
    "--env-system-python", "--env-system-extensions", "--app-template", "-setaudio", "--gpu-backend",
}
_FOUR_VALUES = {"-p", "--window-geometry"}
_DROP = {"-b", "--background"}


class BlenderArgvError(ValueError):
    """A blender command line the supervisor cannot run faithfully (named in the message)."""


class ParsedArgv:
    """What a blender command line renders. A plain class, not a dataclass: it is read before a farm
    task's Blender starts, and the dataclass machinery's import costs that Blender ~20 ms."""

    __slots__ = ("blender", "scene", "frames", "output", "passthrough", "after", "range_start", "range_end",
                 "range_step", "relative")

    def __init__(self, blender: str, scene: str, frames: tuple[int, ...] | None, output: str | None,
                 passthrough: list[str], after: list[str] | None = None, *, range_start: int | None = None,
                 range_end: int | None = None, range_step: int = 1, relative: str | None = None):
        self.blender = blender
        self.scene = scene
        self.frames = frames                  # None: -a over the scene's range (read from the .blend)
        self.output = output
        self.passthrough = passthrough        # Blender's other arguments before the render (in order)
        self.after = after or []              # arguments after the render, then `--` script args
        self.range_start = range_start        # -s N -a without -e: from N to the scene's end
        self.range_end = range_end            # -e N -a without -s: from the scene's start to N
        self.range_step = range_step
        self.relative = relative              # a +N/-N frame (e.g. "-s -5"): Blender's to resolve, see below

    def __repr__(self) -> str:
        return "ParsedArgv(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParsedArgv) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


def parse_blender_argv(argv: Sequence[str]) -> ParsedArgv:
    if not argv:
        raise BlenderArgvError("no blender command given")
    blender, args = argv[0], list(argv[1:])
    script: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, script = args[:i], args[i:]
    scene: str | None = None
    output: str | None = None
    start = end = None
    step = 1
    frames: list[int] = []
    scene_range = False
    passthrough: list[str] = []
    renders: list[int] = []      # where in passthrough each render action came
    relative: str | None = None  # the first relative frame argument (`-s -5`, `-f +2`)
    i = 0
    while i < len(args):
        a = args[i]
        if a in _DROP:
            i += 1
            continue
        if a in _ONE_VALUE:
            if i + 1 >= len(args):
                raise BlenderArgvError(f"{a} needs a value")
            v = args[i + 1]
            if a in ("-s", "--frame-start", "-e", "--frame-end", "-f", "--render-frame") and _relative(v):
                # Blender reads a leading +/- as relative: `-s -5` is 5 frames before the scene's start,
                # `-f -1` the scene's last frame. Only Blender knows the scene's range at that point of
                # its command line, so such a command line is run as given (supervise-only).
                relative = relative or f"{a} {v}"
            if a in ("-s", "--frame-start"):
                start = _int(a, v)
            elif a in ("-e", "--frame-end"):
                end = _int(a, v)
            elif a in ("-j", "--frame-jump"):
                step = max(1, _int(a, v))
            elif a in ("-o", "--render-output"):
                output = v
            elif a in ("-f", "--render-frame"):
                if renders and len(passthrough) > renders[-1]:
                    raise BlenderArgvError(f"arguments between two render actions "
                                           f"({' '.join(passthrough[renders[-1]:])}): Blender would run them "
                                           "between the renders; put them before or after")
                renders.append(len(passthrough))
                if not _relative(v):
                    frames.extend(_frame_list(v))
            else:
                passthrough += [a, v]
            i += 2
            continue
        if a in _FOUR_VALUES:
            passthrough += args[i:i + 5]
            i += 5
            continue
        if a in ("-a", "--render-anim"):
            if renders and len(passthrough) > renders[-1]:
                raise BlenderArgvError(f"arguments between two render actions ({' '.join(passthrough[renders[-1]:])}): "
                                       "Blender would run them between the renders; put them before or after")
            renders.append(len(passthrough))
            if start is None or end is None:
                scene_range = True          # -s N alone: N to the scene's end; -e N alone: its start to N
            elif relative:
                pass
            elif start > end:
                raise BlenderArgvError(f"-s {start} -e {end}: the start is after the end, so -a has no frames "
                                       "to render; swap them (-s is the first frame, -e the last)")
            else:
                _check_range(start, end, step, len(frames))
                frames.extend(range(start, end + 1, step))
            i += 1
            continue
        if not a.startswith("-") and scene is None:
            scene = a
            i += 1
            continue
        passthrough.append(a)
        i += 1
    if scene is None:
        raise BlenderArgvError("no .blend file in the blender command line")
    if relative:
        cut = renders[0] if renders else len(passthrough)
        return ParsedArgv(blender, scene, None, output, passthrough[:cut], passthrough[cut:] + script,
                          relative=relative)
    if scene_range and frames:
        raise BlenderArgvError("-a over the scene's range mixed with explicit frames: give -s/-e with -a")
    if not frames and not scene_range:
        raise BlenderArgvError("nothing to render: add -a (animation) or -f FRAMES")
    cut = renders[0] if renders else len(passthrough)
    return ParsedArgv(blender, scene, None if scene_range else tuple(sorted(set(frames))), output,
                      passthrough[:cut], passthrough[cut:] + script,
                      range_start=start if scene_range else None, range_end=end if scene_range else None,
                      range_step=step)


def _relative(v: str) -> bool:
    """A frame value Blender reads relative to the scene's range (`+N`, `-N`; `-f` lists too)."""
    return any(part.strip().startswith(("+", "-")) for part in v.split(","))


def _check_range(start: int, end: int, step: int, have: int) -> None:
    """The limits `--frames` applies, before the range is made (`-e 100000000` is 10 GB of ints)."""
    if end > MAX_FRAME:
        raise BlenderArgvError(f"-e {end}: beyond Blender's last frame {MAX_FRAME}")
    if have + (end - start) // step + 1 > MAX_FRAMES_PER_JOB:
        raise BlenderArgvError(f"-s {start} -e {end}: more than {MAX_FRAMES_PER_JOB} frames in one job; split "
                               "it into tasks (a farm's chunks) of fewer frames")


def _int(opt: str, v: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise BlenderArgvError(f"{opt} {v!r}: not a frame number") from None


def _frame_list(v: str) -> list[int]:
    try:
        return parse_frames(v)
    except FrameSpecError as e:
        raise BlenderArgvError(f"-f {v!r}: {e}") from None


RENDER_ACTIONS = {"-a", "--render-anim", "-f", "--render-frame"}


def drives_itself(argv: Sequence[str]) -> bool:
    """No render action on the command line: a script (or a farm's client) renders, not Blender's -a/-f
    (renderwatch exec then supervises only: healer.supervising.supervise_only)."""
    args = list(argv[1:])
    if "--" in args:
        args = args[:args.index("--")]
    return not any(a in RENDER_ACTIONS for a in args)
