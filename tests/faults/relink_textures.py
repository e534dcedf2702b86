"""A pipeline's pre-render script: point every image at the farm's texture root ($TEXTURE_ROOT).

    blender -b shot.blend --python relink_textures.py -a

Like many studio scripts, it reports a texture it cannot find with an `Error:` line and carries on:
Blender renders the frame anyway (magenta where the texture was), and the .blend on disk still
names the artist's path, so a check of the file before the render sees nothing missing.
"""
import os

import bpy

root = os.environ.get("TEXTURE_ROOT", "/srv/textures")
for img in bpy.data.images:
    if img.source != "FILE" or not img.filepath:
        continue
    path = os.path.join(root, bpy.path.basename(img.filepath))
    if not os.path.exists(path):
        print(f"Error: texture {img.name!r} not found at {path!r}; rendering without it", flush=True)
    img.filepath = path
