"""A hang (stall) in render_pre at $FAULT_FRAME (once if $FAULT_MARKER is set)."""
import os
import sys
import time

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _arm import armed  # noqa: E402


def fault_pre(scene, *_):
    if armed(scene):
        stamp = os.environ.get("FAULT_STAMP")
        if stamp:                      # when the hang began (the stall benchmark measures from here)
            with open(stamp, "w") as f:
                f.write(repr(time.time()))
        time.sleep(3600)


bpy.app.handlers.render_pre.append(fault_pre)
