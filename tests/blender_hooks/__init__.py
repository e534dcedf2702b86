"""Tests of blender_hooks/ (what runs inside Blender)."""
