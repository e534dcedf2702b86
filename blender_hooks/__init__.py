"""renderwatch's Blender hooks: report render jobs, frames and phases to the local agent.

A package in three forms: imported by the agent for its event schema (`blender_hooks.events`,
plain CPython: nothing here imports bpy until `register()` runs), a legacy add-on for Blender
3.x-4.1 (`bl_info` below) and a 4.2+ extension (`blender_manifest.toml`). `startup.py` loads it
with `blender --python PATH` (`renderwatch hooks path` prints that path).
"""

bl_info = {
    "name": "renderwatch hooks",
    "author": "renderwatch maintainers",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "Render handlers (no UI)",
    "description": "Report render jobs, frames and phases to the local renderwatch agent",
    "category": "Render",
}


def register() -> None:
    from . import addon  # lazily: importing the package must not import bpy

    addon.register()


def unregister() -> None:
    from . import addon

    addon.unregister()
