"""A half-rendered frame at $FAULT_FRAME (once if $FAULT_MARKER is set): Blender saves a full-size frame
whose top half is empty (0 in every channel, alpha 0) and exits 0, which is what a GPU error part way
through a tiled render leaves behind.

How: the film is transparent for the whole job and a backdrop behind the scene fills the camera's view,
so every frame is picture edge to edge; at the fault's frame the backdrop covers only the bottom half
and the scene's objects are hidden, so nothing is rendered in the top half. (The render border cannot
do it: Blender reads render settings once per -a render.)"""
import os
import sys

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _arm import armed  # noqa: E402

scene = bpy.context.scene
cam = scene.camera
scene.render.film_transparent = True
corners = [v * 40.0 for v in cam.data.view_frame(scene=scene)]      # far behind the scene, in camera space
low = min(v.y for v in corners)


def _plane(name, verts):
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([tuple(v) for v in verts], [], [(0, 1, 2, 3)])
    ob = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(ob)
    ob.parent = cam
    return ob


full = _plane("rw_backdrop", [(v.x * 1.1, v.y * 1.1, v.z) for v in corners])
bottom = _plane("rw_backdrop_bottom", [(v.x * 1.1, v.y if v.y < 0 else 0.0, v.z) if v.y > 0 else
                                       (v.x * 1.1, v.y * 1.1, v.z) for v in corners])
bottom.hide_render = True
_hidden = []


def fault_pre(scene, *_):
    if armed(scene):
        for ob in scene.objects:
            if ob is not bottom and not ob.hide_render and ob.type != "CAMERA" and ob.type != "LIGHT":
                ob.hide_render = True
                _hidden.append(ob.name)
        bottom.hide_render = False


def fault_post(scene, *_):
    for name in _hidden:
        bpy.data.objects[name].hide_render = False
    _hidden.clear()
    bottom.hide_render = True


bpy.app.handlers.render_pre.append(fault_pre)
bpy.app.handlers.render_post.append(fault_post)
