"""The scene asks Cycles for the GPU, the preferences have no compute device type (or, with
$FAULT_BACKEND, that type and no device enabled): Cycles renders on the CPU and says nothing."""
import os

import bpy

for s in bpy.data.scenes:
    s.render.engine = "CYCLES"
    s.cycles.device = "GPU"
prefs = bpy.context.preferences.addons["cycles"].preferences
try:
    prefs.compute_device_type = os.environ.get("FAULT_BACKEND", "NONE")
except TypeError:                      # a build without that backend
    prefs.compute_device_type = "NONE"
for d in prefs.devices:
    d.use = False
