"""Build a scene whose material uses an image file, for the missing-texture test.

    blender -b BASE.blend --python make_texture_scene.py -- OUT.blend

Writes OUT.blend and //textures/albedo.png beside it; the test then deletes the texture so the
.blend refers to a file that is not there (what a broken asset path looks like on a farm).
"""
import os
import sys

import bpy

out = sys.argv[sys.argv.index("--") + 1]
tex_dir = os.path.join(os.path.dirname(out), "textures")
os.makedirs(tex_dir, exist_ok=True)
img = bpy.data.images.new("albedo", 8, 8)
img.filepath_raw = os.path.join(tex_dir, "albedo.png")
img.file_format = "PNG"
img.save()
mat = bpy.data.materials.new("Textured")
mat.use_nodes = True
node = mat.node_tree.nodes.new("ShaderNodeTexImage")
node.image = bpy.data.images.load(os.path.join(tex_dir, "albedo.png"))
node.image.filepath = "//textures/albedo.png"
mat.node_tree.links.new(node.outputs[0], mat.node_tree.nodes["Principled BSDF"].inputs[0])
for ob in bpy.data.objects:
    if ob.type == "MESH":
        ob.data.materials.clear()
        ob.data.materials.append(mat)
bpy.ops.wm.save_as_mainfile(filepath=out, relative_remap=False)
