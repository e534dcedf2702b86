"""A black frame at $FAULT_FRAME (once if $FAULT_MARKER is set): every object hidden from the render
and the world black for that frame only, so Blender renders, saves and exits 0 as if all were well
(what a GPU error that leaves the frame black looks like to a farm). With $FAULT_KEEP_OBJECTS=1 only the
lights are hidden: the beauty is black while the depth and normal passes still show the objects.)"""
import os
import sys

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _arm import armed  # noqa: E402

_hidden = []


def fault_pre(scene, *_):
    if armed(scene):
        keep = os.environ.get("FAULT_KEEP_OBJECTS") == "1"
        for ob in scene.objects:
            if not ob.hide_render and (not keep or ob.type == "LIGHT"):
                ob.hide_render = True
                _hidden.append(ob.name)
        if scene.world is not None:
            scene.world.use_nodes = False
            scene.world.color = (0.0, 0.0, 0.0)


def fault_post(scene, *_):
    for name in _hidden:
        bpy.data.objects[name].hide_render = False
    _hidden.clear()


bpy.app.handlers.render_pre.append(fault_pre)
bpy.app.handlers.render_post.append(fault_post)
