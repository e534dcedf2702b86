"""What the tests share: fakes for what cannot run here (fakes.py), the replayed Blender, the process harnesses."""
