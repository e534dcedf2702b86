"""A hang (stall) in render_pre at $FAULT_FRAME (once if $FAULT_MARKER is set)."""
import os
import time

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
        stamp = os.environ.get("FAULT_STAMP")
        if stamp:                      # when the hang began (the stall benchmark measures from here)
            with open(stamp, "w") as f:
                f.write(repr(time.time()))
        time.sleep(3600)


bpy.app.handlers.render_pre.append(fault_pre)
