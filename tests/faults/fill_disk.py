"""Not a fault of Blender's: after frame $FAULT_FRAME is written, fill the filesystem that holds
$FILL_DIR (renderwatch's state folder in the test) until a write fails with ENOSPC."""
import os

import bpy


def fill_post(scene, *_):
    if scene.frame_current != int(os.environ.get("FAULT_FRAME", "1")):
        return
    fd = os.open(os.path.join(os.environ["FILL_DIR"], "filler"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


bpy.app.handlers.render_write.append(fill_post)
