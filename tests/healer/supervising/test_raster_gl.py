"""EEVEE and Workbench on a node without a usable GPU render through Mesa's software driver: Blender
says nothing, exits 0, and takes many times longer. The healer tells from what the running Blender has
loaded (/proc/PID/maps) and opened (/proc/PID/fd). Here over a /proc tree written by the test (the real
one is read in tests/integration/test_suspect_frames.py, with Debian's Blender on this GPU-less host)."""

from __future__ import annotations

import os

import pytest

from healer.supervising.probes import gl_driver

BLENDER = "/usr/lib/x86_64-linux-gnu/"


def proc(tmp_path, libs: list[str], fds: list[str] = ()) -> str:
    root = tmp_path / "proc"
    (root / "77" / "fd").mkdir(parents=True)
    maps = [f"7f00{i:08x}-7f01{i:08x} r-xp 00000000 fe:01 {i} {lib}" for i, lib in enumerate(libs)]
    maps += ["7ffd0000-7ffd1000 rw-p 00000000 00:00 0 [stack]", "55550000-55551000 r-xp 0 fe:01 9 /usr/bin/blender"]
    (root / "77" / "maps").write_text("\n".join(maps) + "\n")
    for i, target in enumerate(fds):
        os.symlink(target, root / "77" / "fd" / str(i + 3))
    return str(root)


MESA_SW = [BLENDER + "libEGL.so.1.1.0", BLENDER + "libEGL_mesa.so.0.0.0", BLENDER + "dri/swrast_dri.so",
           BLENDER + "libLLVM-15.so.1"]


@pytest.mark.parametrize("libs,fds,kind,evidence", [
    (MESA_SW, [], "software", "swrast_dri.so"),                                       # Debian 12's Mesa 22
    ([BLENDER + "libEGL.so.1", BLENDER + "libgallium-24.2.8.so"], ["/dev/null"], "software", "libgallium"),
    ([BLENDER + "libvulkan.so.1", BLENDER + "libvulkan_lvp.so"], [], "software", "libvulkan_lvp.so"),   # lavapipe
    ([BLENDER + "libEGL.so.1", BLENDER + "libgallium-24.2.8.so"], ["/dev/dri/renderD128"], "hardware",
     "/dev/dri/renderD128"),                                                          # Mesa 24 on a real GPU
    ([BLENDER + "libEGL.so.1", BLENDER + "libnvidia-eglcore.so.550.54"], ["/dev/nvidia0", "/dev/nvidiactl"],
     "hardware", "libnvidia-eglcore.so.550.54"),
    ([BLENDER + "libEGL.so.1", BLENDER + "dri/radeonsi_dri.so", BLENDER + "libLLVM-15.so.1"], [], "hardware",
     "radeonsi_dri.so"),                                                              # LLVM alone is not software
])
def test_the_driver_a_raster_render_runs_on(tmp_path, libs, fds, kind, evidence):
    got = gl_driver(77, proc(tmp_path, libs, fds))
    assert got is not None and got[0] == kind and evidence in got[1], got


def test_no_gl_loaded_yet_or_no_process_is_not_known(tmp_path):
    assert gl_driver(77, proc(tmp_path, [BLENDER + "libc.so.6", BLENDER + "libGLX.so.0"])) is None
    assert gl_driver(78, proc(tmp_path / "other", [])) is None
