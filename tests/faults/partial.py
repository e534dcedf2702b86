"""A crash while saving: in render_write at $FAULT_FRAME cut the saved file in half, then SIGKILL."""
import os
import signal
import sys

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _arm import armed  # noqa: E402


def fault_write(scene, *_):
    if armed(scene):
        path = bpy.path.abspath(scene.render.frame_path(frame=scene.frame_current))
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(size // 2)
        os.kill(os.getpid(), signal.SIGKILL)


bpy.app.handlers.render_write.append(fault_write)
