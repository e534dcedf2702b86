"""A crash while saving: in render_write at $FAULT_FRAME cut the saved file in half, then SIGKILL."""
import os
import signal

import bpy


def _armed(scene):
    if scene.frame_current != int(os.environ.get("FAULT_FRAME", "2")):
        return False
    marker = os.environ.get("FAULT_MARKER")
    if marker:
        if os.path.exists(marker):
            return False
        open(marker, "w").close()
    return True


def fault_write(scene, *_):
    if _armed(scene):
        path = bpy.path.abspath(scene.render.frame_path(frame=scene.frame_current))
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(size // 2)
        os.kill(os.getpid(), signal.SIGKILL)


bpy.app.handlers.render_write.append(fault_write)
