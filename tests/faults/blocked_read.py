"""A read that never returns at frame $FAULT_FRAME: render_pre opens a FIFO no one writes to ($FAULT_FIFO),
as a read on a dead network mount blocks (there in D state, here in S: no CPU either way). A stall."""
import os
import sys

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _arm import armed  # noqa: E402


def fault_pre(scene, *_):
    if armed(scene):
        path = os.environ["FAULT_FIFO"]
        if not os.path.exists(path):
            os.mkfifo(path, 0o600)
        with open(path, "rb") as f:      # blocks here until a writer opens it: never
            f.read()


bpy.app.handlers.render_pre.append(fault_pre)
