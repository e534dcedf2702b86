"""SIGSEGV in render_pre at $FAULT_FRAME (once if $FAULT_MARKER is set)."""
import ctypes
import os

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


def fault_pre(scene, *_):
    if _armed(scene):
        ctypes.string_at(0)


bpy.app.handlers.render_pre.append(fault_pre)
