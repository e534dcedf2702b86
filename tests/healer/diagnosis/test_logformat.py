"""healer.logformat: one line of Blender output (≤ 4.x and 5.0 formats) -> a typed record."""

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healer.diagnosis import logformat
from healer.diagnosis.logformat import MAX_LINE, LogLine, find_crash_file_path, iter_lines, parse_line

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def test_34_progress_line_with_every_field():
    rec = parse_line("Fra:1 Mem:13.57M (Peak 13.57M) | Time:00:00.08 | Remaining:00:00.04 | Mem:3.58M, Peak:3.58M "
                     "| Scene, ViewLayer | Sample 1/16\n")
    assert rec.kind == "progress" and rec.frame == 1
    assert (rec.mem_mb, rec.peak_mb, rec.render_mem_mb, rec.render_peak_mb) == (13.57, 13.57, 3.58, 3.58)
    assert rec.elapsed_s == pytest.approx(0.08) and rec.remaining_s == pytest.approx(0.04)
    assert (rec.sample, rec.samples_total) == (1, 16)
    assert rec.status == "Sample 1/16" and rec.phase == "sampling"


def test_reference_progress_line_and_older_memory_format():
    rec = parse_line("Fra:12 Mem:1402.77M (Peak 1530.02M) | Time:00:09.81 | Remaining:01:12.40 | "
                     "Mem:612.30M, Peak:612.30M | Scene, ViewLayer | Sample 32/512")
    assert (rec.frame, rec.mem_mb, rec.peak_mb, rec.sample, rec.samples_total) == (12, 1402.77, 1530.02, 32, 512)
    assert rec.remaining_s == pytest.approx(72.4)
    # Blender 2.7x/2.8x: Mem:%.2fM (%.2fM, Peak %.2fM), tiles
    old = parse_line("Fra:1 Mem:92.87M (0.00M, Peak 93.42M) | Time:00:00.31 | Remaining:00:07.82 | "
                     "Mem:13.42M, Peak:13.43M | Scene, RenderLayer | Path Tracing Tile 1/16")
    assert (old.mem_mb, old.peak_mb, old.tile, old.tiles_total, old.phase) == (92.87, 93.42, 1, 16, "sampling")


@pytest.mark.parametrize("tail, sample, tile, phase", [
    ("Scene, ViewLayer | Sample 32/512", (32, 512), None, "sampling"),
    # real, from tests/fixtures/blender-logs-3.4 (a 30000x30000 render)
    ("Scene, ViewLayer | Rendered 98/225 Tiles, Sample 1/1", (1, 1), (98, 225), "sampling"),
    ("Scene, RenderLayer | Path Tracing Tile 3/16", None, (3, 16), "sampling"),
    ("Rendering 12 / 64 samples", (12, 64), None, "sampling"),                       # EEVEE
    ("Scene, ViewLayer | Synchronizing object | Suzanne", None, None, "sync"),
    ("Scene, ViewLayer | Loading render kernels (may take a few minutes the first time)", None, None, "kernels"),
    ("Scene, ViewLayer | Updating Scene BVH | Building BVH 0%", None, None, "bvh"),
    ("Scene, ViewLayer | Denoising", None, None, "denoise"),
    ("Scene, ViewLayer | Compositing | Determining resolution", None, None, "compositing"),
    ("Scene, ViewLayer | Finished", None, None, "save"),
    ("Scene, ViewLayer | Updating Device | Writing constant memory", None, None, "sync"),
])
def test_progress_tail_variants(tail, sample, tile, phase):
    rec = parse_line(f"Fra:7 Mem:11.27M (Peak 12.59M) | Time:00:00.07 | Mem:0.00M, Peak:0.00M | {tail}")
    assert rec.kind == "progress" and rec.frame == 7
    assert (rec.sample, rec.samples_total) == (sample or (None, None))
    assert (rec.tile, rec.tiles_total) == (tile or (None, None))
    assert rec.phase == phase


def test_50_progress_line_from_the_real_stats_strings():
    """5.0 prints progress as `Fra: %d | %s` (the format string in the wheel's binary) with the stats
    string a render_stats handler receives; those strings are real (render_stats_5.0.log)."""
    stats = [line.split("render_stats: ", 1)[1].strip("'")
             for line in (FIXTURES / "blender-logs-5.0" / "render_stats_5.0.log").read_text().splitlines()
             if line.startswith("render_stats: ")]
    assert "Remaining: 00:00.09 | Mem: 2M | Sample 1/16" in stats
    recs = [parse_line(f"00:00.420  render           | Fra: 1 | {s}") for s in stats if not s.startswith("Time:")]
    assert all(r.kind == "progress" and r.frame == 1 and r.module == "render" for r in recs)
    one = next(r for r in recs if r.sample == 1)
    assert (one.samples_total, one.render_mem_mb, one.phase) == (16, 2.0, "sampling")
    assert one.remaining_s == pytest.approx(0.09)
    phases = [r.phase for r in recs]
    assert phases[0] == "sync" and "kernels" in phases and "bvh" in phases and phases[-1] == "save"
    assert phases.index("kernels") < phases.index("bvh") < phases.index("sampling")


def test_saved_time_and_the_other_kinds_in_both_formats():
    assert parse_line("Saved: '/shot/frames/f_0001.png'").path == "/shot/frames/f_0001.png"
    assert parse_line("Saved: /shot/frames/f_0001.png").path == "/shot/frames/f_0001.png"          # older
    r = parse_line("00:00.327  render           | Saved: '/path/f_0001.exr'\r\n")
    assert (r.kind, r.path, r.module, r.clock_s) == ("saved", "/path/f_0001.exr", "render", pytest.approx(0.327))
    t = parse_line(" Time: 00:00.26 (Saving: 00:00.13)")
    assert (t.kind, t.frame_s, t.save_s) == ("frame_time", pytest.approx(0.26), pytest.approx(0.13))
    t5 = parse_line("00:00.419  render           | Time: 00:01.06 (Saving: 00:00.02)")
    assert (t5.kind, t5.frame_s, t5.save_s) == ("frame_time", pytest.approx(1.06), pytest.approx(0.02))
    assert parse_line('skipping existing frame "/shot/frames/f_0001.png"').kind == "skipped"     # 3.4, real
    s5 = parse_line('00:00.500  render           | Skipping existing frame "/shot/f_0002.png"')
    assert (s5.kind, s5.path) == ("skipped", "/shot/f_0002.png")
    assert parse_line("Read blend: /mnt/projects/shot010/monkey.blend").path == "/mnt/projects/shot010/monkey.blend"
    rb = parse_line('00:00.269  blend            | Read blend: "/tmp/shot/monkey.blend"')
    assert (rb.kind, rb.path, rb.module) == ("read_blend", "/tmp/shot/monkey.blend", "blend")
    assert parse_line("Info: Read library:  '//lib/props.blend', '/mnt/lib/props.blend', parent '<direct>'").kind == "read_blend"
    assert parse_line("Blender quit").kind == "quit"
    w = parse_line("Writing: /tmp/monkey.crash.txt")
    assert (w.kind, w.path) == ("writing_crash", "/tmp/monkey.crash.txt")
    assert parse_line("Writing: /tmp/out.blend").kind == "other"
    err = parse_line("00:00.516  image            | ERROR Couldn't create directory for file /proc/x.png")
    assert (err.kind, err.level, err.text) == ("other", "ERROR", "Couldn't create directory for file /proc/x.png")
    assert parse_line("01:02:03.500  render  | Saved: 'x'").clock_s == pytest.approx(3723.5)


def test_find_crash_file_path_variants():
    assert find_crash_file_path("Writing: /tmp/monkey.crash.txt\n") == "/tmp/monkey.crash.txt"
    assert find_crash_file_path("Writing: C:\\Users\\r\\AppData\\Local\\Temp\\shot.crash.txt\r\n") == \
        "C:\\Users\\r\\AppData\\Local\\Temp\\shot.crash.txt"
    assert find_crash_file_path("00:03.100  blender          | Writing: /tmp/blender.crash.txt") == "/tmp/blender.crash.txt"
    assert find_crash_file_path("Writing: /tmp/render.exr") is None
    assert find_crash_file_path("Saved: 'x.crash.txt'") is None


def test_every_real_fixture_line_parses_and_frames_are_monotonic(blender_logs):
    logs = list(blender_logs.glob("*.log")) + list(FIXTURES.glob("blender-logs-*/*.log"))
    assert len(logs) > 30
    kinds: set[str] = set()
    for log in logs:
        last = None
        for line in log.read_text(errors="replace").splitlines():
            rec = parse_line(line)
            kinds.add(rec.kind)
            if rec.kind == "progress":
                assert rec.frame is not None and (last is None or rec.frame >= last), (log.name, line)
                last = rec.frame
                assert line.startswith("Fra:") and rec.status
    assert {"progress", "saved", "frame_time", "skipped", "read_blend", "quit", "writing_crash", "other"} <= kinds


def test_mid_line_tail_crlf_and_garbage_are_other():
    assert parse_line("12.47M (Peak 12.59M) | Time:00:00.03 | Scene, ViewLayer | Sample 3/16").kind == "other"
    assert parse_line("").kind == "other"
    assert parse_line("\ufffd\ufffdFra:1").kind == "other"
    assert parse_line("Fra:x Mem:").kind == "other"
    assert parse_line("Fra:3 Mem:1.00M (Peak 2.00M) | Time:00:00.01 | Scene, ViewLayer | Sample 2/8\r\n").samples_total == 8


def test_giant_line_is_cut():
    rec = parse_line("Saved: '" + "x" * (10 * MAX_LINE) + "'")
    assert rec.kind == "saved" and len(rec.text) <= MAX_LINE


def test_iter_lines_decodes_bad_utf8_crlf_and_bounds_giant_lines():
    data = b"Fra:1 ok\r\n\xff\xfeSaved: 'a'\n" + b"y" * (5 * MAX_LINE) + b"\nBlender quit"
    lines = list(iter_lines(io.BytesIO(data), chunk_size=1000))
    assert lines[0] == "Fra:1 ok"
    assert lines[1] == "\ufffd\ufffdSaved: 'a'"
    assert len(lines[2]) == MAX_LINE and lines[3] == "Blender quit" and len(lines) == 4


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parse_line_never_raises(text):
    rec = parse_line(text)
    assert rec.kind in {"progress", "saved", "frame_time", "skipped", "read_blend", "quit", "writing_crash", "other"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["Fra:", "Fra: ", "12", "-3", " Mem:", "1.5M", " (Peak ", "2G)", " | ", "Time:",
                                 "00:01.5", "Remaining:", "Sample ", "3/", "x", ", Peak:", "Rendered ", " Tiles",
                                 "00:00.327  render  | ", "Saved: '", "'", "Writing: ", ".crash.txt", "\r"]),
                max_size=25))
def test_parse_line_never_raises_on_near_miss_lines(parts):
    assert isinstance(parse_line("".join(parts)), LogLine)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=64))
def test_iter_lines_never_raises_and_keeps_bytes(data, chunk):
    lines = list(iter_lines(io.BytesIO(data), chunk_size=chunk))
    assert len(lines) == data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


def test_phases_are_the_documented_ones():
    assert logformat.PHASES == ("sync", "kernels", "bvh", "sampling", "denoise", "compositing", "save")


def test_huge_numbers_never_reach_int():
    """int() refuses strings over 4300 digits: digit runs are capped, so garbage stays 'other'."""
    assert parse_line("Fra:" + "1" * 5000 + " Mem:1M (Peak 2M) | Sample 1/2").kind == "other"
    rec = parse_line("Fra:1 Mem:1M (Peak 2M) | Time:00:01.00 | Sample " + "1" * 5000 + "/2")
    assert rec.frame == 1 and rec.sample is None
    assert parse_line("Fra:1 Mem:" + "9" * 5000 + "M (Peak 2M) | Sample 1/2").mem_mb == float("inf")
