"""Load renderwatch's hooks into one Blender run: ``blender -b scene.blend --python startup.py -a``.

`renderwatch hooks path` prints this file's absolute path. Safe to load twice, and a no-op beside
an installed renderwatch add-on or extension (that copy's handlers are already registered).
"""

import os
import sys

_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _parent not in sys.path:
    sys.path.insert(0, _parent)

import blender_hooks  # noqa: E402  (needs the path above)

blender_hooks.register()
