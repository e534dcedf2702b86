"""Slow frames: sleep $FAULT_SLEEP seconds (default 0.5) in render_pre of every frame.

Not a fault by itself: it gives a test time to kill the healer or cancel a job mid-render.
"""
import os
import time

import bpy


def slow_pre(scene, *_):
    time.sleep(float(os.environ.get("FAULT_SLEEP", "0.5")))


bpy.app.handlers.render_pre.append(slow_pre)
