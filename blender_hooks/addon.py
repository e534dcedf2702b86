"""The only module that imports bpy: render handlers, and the demo-scene builder.

(Handlers are added by the hooks work; `make_demo_scene` is used by `renderwatch.scenes`.)
"""

from __future__ import annotations

import bpy


def make_demo_scene(path: str, frames: int = 10, samples: int = 16, width: int = 160, height: int = 90,
                    engine: str = "CYCLES") -> None:
    """Build a small animated scene (Suzanne, subdivided, turning once) and save it to `path`.

    Usage (inside Blender): ``blender -b --factory-startup --python-expr
    "from blender_hooks import addon; addon.make_demo_scene('/tmp/demo.blend', 24)"``
    """
    bpy.ops.wm.read_factory_settings(use_empty=False)
    scene = bpy.context.scene
    scene.render.engine = engine
    if engine == "CYCLES":
        scene.cycles.samples = samples
        scene.cycles.use_denoising = False  # Debian's Blender is built without OpenImageDenoise
        scene.cycles.device = "CPU"
    scene.render.resolution_x = width
    scene.render.resolution_y = height
    scene.render.resolution_percentage = 100
    scene.frame_start = 1
    scene.frame_end = frames
    scene.render.image_settings.file_format = "PNG"
    bpy.ops.mesh.primitive_monkey_add(location=(0, 0, 1))
    monkey = bpy.context.active_object
    mod = monkey.modifiers.new("sub", "SUBSURF")
    mod.levels = 1
    mod.render_levels = 1
    monkey.rotation_euler = (0, 0, 0)
    monkey.keyframe_insert("rotation_euler", frame=1)
    monkey.rotation_euler = (0, 0, 6.283)
    monkey.keyframe_insert("rotation_euler", frame=max(frames, 2))
    scene.render.filepath = "//frames/f_"
    bpy.ops.wm.save_as_mainfile(filepath=path)
