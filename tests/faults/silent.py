"""Long silent frames: Cycles samples each frame for $SILENT_SECONDS (its time limit; adaptive sampling
off, samples out of reach), and in that time no Blender of the matrix prints a line: no sample counts
(3.4 and 4.x print them only when a sample count is known), nothing on 5.x. Before each frame it
prints one line with Python's print() (`silent.py: frame N samples for S s`), unflushed, as scripts do.
Not a fault: a healthy render the healer must not take for a stall."""
import os

import bpy

SECONDS = float(os.environ.get("SILENT_SECONDS", "8"))

for scene in bpy.data.scenes:
    scene.cycles.samples = 1 << 20
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.time_limit = SECONDS


def silent_pre(scene, *_):
    print(f"silent.py: frame {scene.frame_current} samples for {SECONDS:g} s")


bpy.app.handlers.render_pre.append(silent_pre)
