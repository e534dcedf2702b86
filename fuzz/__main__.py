"""Run one fuzz target under atheris (coverage-guided, libFuzzer's engine).

Usage::

    python -m fuzz events                          # until stopped; new inputs go to a temp folder
    python -m fuzz loglines -max_total_time=60     # any libFuzzer flag after the target
    python -m fuzz alertmanager --grow             # new inputs that add coverage go to fuzz/corpus/alertmanager
    python -m fuzz events crash-0a1b2c...           # run one input again (a crash's reproducer)
    python -m fuzz --list

The repo's corpus (fuzz/corpus/<target>/) seeds every run; a crash is written as crash-<sha1> into the
folder named by -artifact_prefix (default: the current folder) and the run exits non-zero with the
input's traceback. Targets: fuzz.targets.TARGETS.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        import atheris
    except ImportError:
        print("fuzz: atheris is not installed: `pip install -e '.[test]'` (or ./bootstrap test) installs it",
              file=sys.stderr)
        return 2
    with atheris.instrument_imports(include=["blender_hooks", "healer", "agent"]):
        from fuzz.targets import TARGETS
    if argv[0] == "--list":
        print("\n".join(TARGETS))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in TARGETS:
        print(f"fuzz: unknown target {name!r}; one of: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    grow = "--grow" in rest
    flags = [a for a in rest if a != "--grow"]
    if any(not a.startswith("-") for a in flags):
        dirs: list[str] = []           # inputs named: libFuzzer runs them once each (a crash's reproducer)
    else:
        seeds = CORPUS / name
        seeds.mkdir(parents=True, exist_ok=True)
        # libFuzzer writes new inputs into the first folder: the repo's corpus only when asked to grow it.
        out = seeds if grow else Path(tempfile.mkdtemp(prefix=f"rw-fuzz-{name}-"))
        dirs = [str(out)] + ([] if grow else [str(seeds)])
    atheris.Setup([sys.argv[0], *flags, *dirs], TARGETS[name])
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
