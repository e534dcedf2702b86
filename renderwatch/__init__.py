"""renderwatch: observability and self-healing for Blender render nodes."""

from kernel.version import __version__  # noqa: F401 (the one version, kept in the shared kernel)
