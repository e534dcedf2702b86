"""The shared kernel: small helpers every renderwatch package may import (never Blender's bpy)."""
