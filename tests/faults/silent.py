"""Long silent frames: Cycles samples each frame for $SILENT_SECONDS (its time limit; adaptive sampling
off, samples out of reach), and for $QUIET_SECONDS of it Blender's stdout goes nowhere, so the healer
hears nothing: what a frame sampling for minutes between two progress lines (a heavy scene), or a
Blender whose stdout a pipe block-buffers, looks like from outside. (Time-limited sampling alone is
quiet on a busy host but prints sample counts on an idle one.) Before each frame it prints one line
with Python's print() (`silent.py: frame N samples for S s`), unflushed, as scripts do.
Not a fault: a healthy render the healer must not take for a stall."""
import os
import threading

import bpy

SECONDS = float(os.environ.get("SILENT_SECONDS", "8"))
QUIET = float(os.environ.get("QUIET_SECONDS", str(max(0.0, SECONDS - 2))))

for scene in bpy.data.scenes:
    scene.cycles.samples = 1 << 20
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.time_limit = SECONDS


def _quiet() -> None:
    """fd 1 to /dev/null for QUIET seconds, from a thread: Blender samples meanwhile."""
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)

    def restore() -> None:
        os.dup2(saved, 1)
        os.close(saved)

    threading.Timer(QUIET, restore).start()


def silent_pre(scene, *_):
    print(f"silent.py: frame {scene.frame_current} samples for {SECONDS:g} s")
    if QUIET > 0:
        threading.Timer(0.5, _quiet).start()      # after the line above has had its chance to go out


bpy.app.handlers.render_pre.append(silent_pre)
