"""Every GPU backend's failure output, in each Blender log format.

No GPU runs here, so the lines are Cycles' own format strings (blender/cycles `src/device/*`,
`src/integrator/denoiser*.cpp`, `src/scene/light.cpp`) filled in as the devices fill them, and
Blender's log framing from `intern/clog` (5.x: clock, optional memory column, type, `| `, level word,
continuation lines) and glog (≤ 4.x with --debug-cycles). Each line is classified bare, in the glog
form, and in the 5.x form at each clock width, with and without a terminal's colours.
"""

from __future__ import annotations

import pytest

from healer.diagnosis.classify import classify
from healer.diagnosis.logformat import parse_line, split_prefix

SAVED = "Saved: '/shot/f_0003.png'"

BACKEND_LINES = {
    # CUDA: cuda_device_assert "%s in %s (%s:%d)", the queue form, context and capability checks
    "Out of memory in cuMemAlloc_v2(&device_pointer, size) (src/device/cuda/device_impl.cpp:412)": "gpu_oom",
    "Out of memory in CUDA queue enqueue (integrator_shade_surface)": "gpu_oom",
    "Invalid context in cuCtxPushCurrent(cuContext) (src/device/cuda/util.cpp:21)": "gpu_error",
    "No binary for GPU in cuModuleLoadDataEx(&cuModule, cubin_data.c_str(), 0, nullptr, nullptr) "
    "(src/device/cuda/device_impl.cpp:505)": "gpu_error",
    "Launch exceeded resources in CUDA queue enqueue (integrator_intersect_closest)": "gpu_error",
    "Failed to initialize CUDA runtime (Driver not initialized)": "gpu_error",
    "Failed to get CUDA device handle from ordinal (Invalid device)": "gpu_error",
    "Failed to retain CUDA context (Context is destroyed)": "gpu_error",
    "Failed to retain CUDA context (Out of memory)": "gpu_oom",
    "CUDA backend requires compute capability 5.0 or up, but found 3.5.": "gpu_error",
    "CUDA binary kernel for this graphics card compute capability (12.0) not found.": "gpu_error",
    "CUDA nvcc compiler not found. Install CUDA toolkit in default location.": "gpu_error",
    "Failed to load CUDA kernel from '/opt/blender/lib/kernel_sm_86.cubin.zst' (File not found)": "gpu_error",
    # OptiX
    "OPTIX_ERROR_INVALID_VALUE in optixAccelBuild(context, stream, &options, &build_input, 1, temp_mem, "
    "sizes.tempSizeInBytes, out_data, sizes.outputSizeInBytes, &handle, nullptr, 0) "
    "(src/device/optix/device_impl.cpp:1311)": "gpu_error",
    "OPTIX_ERROR_HOST_OUT_OF_MEMORY in optixModuleCreate(context, &module_options, &pipeline_options, "
    "ptx_data.data(), ptx_data.size(), nullptr, nullptr, &optix_module) (src/device/optix/device_impl.cpp:470)": "gpu_oom",
    "Failed to load OptiX kernel from '/opt/blender/lib/kernel_optix.ptx.zst'": "gpu_error",
    "Failed to load OptiX shader ray-tracing kernel (OPTIX_ERROR_PIPELINE_LINK_ERROR)": "gpu_error",
    "Unable to compile OptiX kernels at runtime. Set OPTIX_ROOT_DIR environment variable to a directory "
    "containing the OptiX SDK.": "gpu_error",
    "Failed to build OptiX acceleration structure": "gpu_error",
    "Failed to build OptiX acceleration structure because there are too many instances": "gpu_error",
    "Failed to create OptiX denoiser": "gpu_error",
    # HIP / HIP RT
    "Out of memory in hipMemAlloc(&device_pointer, size) (src/device/hip/device_impl.cpp:397)": "gpu_oom",
    "Illegal address in HIP queue synchronize (integrator_shade_surface)": "gpu_error",
    "Failed to initialize HIP runtime (Invalid device)": "gpu_error",
    "Failed to create HIP context (Out of memory)": "gpu_oom",
    "HIP backend requires AMD RDNA graphics card or up, but found gfx906.": "gpu_error",
    "Failed to create image. Maximum GPU image size or available GPU memory was likely exceeded.": "gpu_oom",
    "Failed to create HIPRT context": "gpu_error",
    "Failed to allocate triangle data for BLAS": "gpu_oom",
    "Failed to build TLAS": "gpu_error",
    # oneAPI
    'oneAPI memory operation error: got runtime exception "UR_RESULT_ERROR_OUT_OF_DEVICE_MEMORY"': "gpu_oom",
    'oneAPI memory operation error: got runtime exception "Native API failed. Native API returns: -30 '
    '(PI_ERROR_INVALID_VALUE)"': "gpu_error",
    'oneAPI kernel "integrator_shade_surface" execution error: got runtime exception "UR_RESULT_ERROR_DEVICE_LOST"':
        "gpu_error",
    'oneAPI queue initialization error: got runtime exception "No device of requested type available."': "gpu_error",
    "Maximum GPU 2D texture size exceeded (max 16384x16384, found 32768x16384)": "gpu_oom",
    'GPU image allocation failed: runtime exception "Native API failed"': "gpu_oom",
    "BVH failed to migrate to the GPU due to Embree library error (out of memory)": "gpu_error",
    # Metal
    "Out of memory - couldn't allocate integrator state": "gpu_oom",
    "Could not activate pipeline for integrator_shade_surface": "gpu_error",
    "Texture exceeds maximum allowed size of 16384 x 16384 (requested: 20000 x 10000)": "gpu_oom",
    "Command buffer not completed. status = 5. ": "gpu_error",
    "System is out of GPU and shared host memory": "gpu_oom",
    # denoisers
    "GPU denoiser creation has failed.": "gpu_error",
    "Failed to create OIDN device": "gpu_error",
    "Failed to create OIDN CPU device": "denoiser_unavailable",
    "OpenImageDenoiser is not supported on this CPU: missing SSE 4.1 support": "denoiser_unavailable",
    "OpenImageDenoise is not supported on this platform or build.": "denoiser_unavailable",
    # limits of the scene itself
    "Number of emissive triangles exceeds the limit, consider using Light Tree or disabling Emission Sampling "
    "on some emissive materials": "scene_limit",
    # the kernel's OOM killer, as a farm's wrapper or a container runtime logs it
    "Memory cgroup out of memory: Killed process 4242 (blender) total-vm:31457280kB, anon-rss:30408704kB": "host_oom",
    "Out of memory: Killed process 4242 (blender) total-vm:31457280kB": "host_oom",
}


def _framings(msg: str) -> dict[str, str]:
    return {
        "bare": msg,
        "glog": f"E1202 05:12:43.123456 12345 device.cpp:84] {msg}",
        "5.x": f"00:05.123  cycles           | ERROR {msg}",
        "5.x after an hour": f"01:02:03.456  cycles           | ERROR {msg}",
        "5.x with memory": f"00:05.123  1843M  cycles           | ERROR {msg}",
        "5.x on a terminal": f"00:05.123  cycles           | \x1b[1;31mERROR\x1b[0m {msg}",
    }


@pytest.mark.parametrize("line,expected", list(BACKEND_LINES.items()), ids=lambda v: v[:48] if isinstance(v, str) else "")
def test_each_backend_line_in_each_framing(line, expected):
    for framing, text in _framings(line).items():
        log = f"Fra:3 Mem:1M (Peak 2M) | Time:00:01.00 | Sample 1/16\n{text}\n{SAVED}\n"
        err = classify(log, exit_code=0)
        assert err.type == expected, f"{framing}: {text!r} -> {err.type}"
        assert err.fatal and err.frame == 3, framing


def test_device_enumeration_warnings_do_not_fail_a_render():
    # Cycles lists every backend's devices when it starts; a backend that cannot start says so as a
    # warning (device_optix_init, device_hip_init) and the render goes on on another device or the CPU.
    for line in ("00:00.210  cycles           | WARNING OptiX initialization failed because the installed NVIDIA "
                 "driver is too old. Please update to the latest driver first!",
                 "W1202 05:12:43.123456 12345 device.cpp:58] OptiX initialization failed with error code 7804",
                 "00:00.212  cycles           | ERROR HIP hipInit: No ROCm-capable device is detected",
                 "E1202 05:12:43.123456 12345 device.cpp:112] CUDA cuInit: No CUDA-capable device is detected"):
        err = classify(f"{line}\nFra:1 Mem:1M (Peak 2M) | Time:00:01.00 | Sample 16/16\n{SAVED}\nBlender quit\n", exit_code=0)
        assert err.type == "ok", line


def test_container_exit_137_and_a_kill_say_killed_and_point_at_memory():
    for code in (137, -9):
        err = classify("Fra:3 Mem:1M (Peak 2M) | Time:00:01.00 | Sample 1/16\n", exit_code=code)
        assert err.type == "killed" and "OOM" in err.summary
    assert classify("Fra:3 | x\n", exit_code=-9, oom_killed=True).type == "host_oom"


def test_5x_continuation_lines_carry_the_message_on():
    # Cycles' GPU advice is one message of two lines: the second is indented to the message with `| `.
    log = ("00:00.301  blend            | Read blend: \"/shot/a.blend\"\n"
           "00:04.912  cycles           | ERROR Refer to the Cycles GPU rendering documentation for possible solutions:\n"
           "                              | https://docs.blender.org/manual/en/latest/render/cycles/gpu_rendering.html\n")
    assert classify(log, exit_code=0).type == "gpu_error"
    # Metal's command-buffer error: the cause is on the continuation line
    metal = ("00:04.912  cycles           | ERROR Command buffer not completed. status = 5. (integrator.shade):\n"
             "                              | Error Domain=MTLCommandBufferErrorDomain Code=8 \"Insufficient Memory\"\n")
    assert classify(metal, exit_code=0).type == "gpu_error"
    # with --log-show-source the source line is a continuation too: it is not an error by itself
    src = ("00:00.301  blend            | Read blend: \"/shot/a.blend\"\n"
           "00:00.402  render           | Saved: '/shot/f_0001.png'\n"
           "                              | source/blender/render/intern/pipeline.cc:2201 do_write_image_or_movie\n")
    assert classify(src, exit_code=0).type == "ok"


def test_5x_python_traceback_through_continuation_lines_keeps_its_frames():
    log = ("00:00.301  blend            | Read blend: \"/shot/a.blend\"\n"
           "00:00.350  bpy.rna          | ERROR Python: Traceback (most recent call last):\n"
           "                              |   File \"/pipeline/post.py\", line 7, in <module>\n"
           "                              |     publish(scene)\n"
           "                              | RuntimeError: asset server unreachable\n")
    err = classify(log, exit_code=1)
    assert err.type == "python_error" and "RuntimeError: asset server unreachable" in err.summary
    assert "post.py" in err.summary


def test_split_prefix_reads_every_clog_framing():
    assert split_prefix("01:02:03.456  cycles           | ERROR x") == ("x", "cycles", 3723.456, "ERROR")
    assert split_prefix("00:05.123  1843M  render.pipeline  | WARNING y") == ("y", "render.pipeline", 5.123, "WARNING")
    assert split_prefix("00:05.123  cycles           | \x1b[1;31mERROR\x1b[0m z") == ("z", "cycles", 5.123, "ERROR")
    assert split_prefix("                              |   File \"a.py\", line 1") == ('  File "a.py", line 1', None, None, None)
    assert split_prefix(" Time: 00:01.23 (Saving: 00:00.01)")[0] == " Time: 00:01.23 (Saving: 00:00.01)"   # ≤ 4.x, untouched
    rec = parse_line("01:02:03.456  render           | Saved: '/shot/f_0001.png'")
    assert rec.kind == "saved" and rec.path == "/shot/f_0001.png" and rec.clock_s == 3723.456
