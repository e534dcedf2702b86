"""When a fault script fires: at frame $FAULT_FRAME (default 2); only once if $FAULT_MARKER names a
file (created when the fault fires, so the healer's restart succeeds). Shared by the fault scripts,
which put this folder on sys.path (Blender runs them as files, not as a package)."""
import os


def armed(scene) -> bool:
    if scene.frame_current != int(os.environ.get("FAULT_FRAME", "2")):
        return False
    marker = os.environ.get("FAULT_MARKER")
    if marker:
        if os.path.exists(marker):
            return False
        open(marker, "w").close()
    return True
