"""renderwatch: observability and self-healing for Blender render nodes."""

__version__ = "0.1.0"
