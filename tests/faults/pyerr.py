"""A Python exception in render_pre at $FAULT_FRAME (once if $FAULT_MARKER is set)."""
import os
import sys

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _arm import armed  # noqa: E402


def fault_pre(scene, *_):
    if armed(scene):
        raise RuntimeError("pipeline hook failed: asset server unreachable")


bpy.app.handlers.render_pre.append(fault_pre)
