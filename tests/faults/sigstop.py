"""Blender stopped by SIGSTOP while it samples frame $FAULT_FRAME (a second after its render_pre), as a
job-control stop or a debugger would: alive, no CPU, no output. A stall."""
import os
import signal
import sys
import threading

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _arm import armed  # noqa: E402


def fault_pre(scene, *_):
    if armed(scene):
        threading.Timer(float(os.environ.get("FAULT_DELAY", "1")), os.kill, (os.getpid(), signal.SIGSTOP)).start()


bpy.app.handlers.render_pre.append(fault_pre)
