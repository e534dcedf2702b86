"""healer.crashfile: Blender's crash file -> CrashReport; never raises on broken files."""

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz import oracle
from healer.diagnosis.crashfile import parse_crash_file, read_crash_file

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

# Reference strings (the header and frame formats in ../shared/reference/blender-output.md; a release
# build's crash file). The real files below are from Debian's 3.4 build, whose backtrace is empty.
LINUX_RELEASE = """# Blender 4.1.1, Commit date: 2024-04-15 15:11, Hash e1743a0317bc
bpy.ops.render.render(animation=True)  # Operator

# backtrace
./blender(+0x1c2a5d6) [0x55d1e0c2a5d6]
/opt/blender/blender(BLI_system_backtrace+0x1d) [0x55d1e0c2a5d6]
/lib/x86_64-linux-gnu/libc.so.6(+0x3c050) [0x7f1e3c25c050]

# Python backtrace
  File "/usr/lib/python3.11/ctypes/__init__.py", line 519 in string_at
  File "/mnt/pipeline/hooks/seg.py", line 3 in pre
"""

WINDOWS = """# Blender 3.6.2, Commit date: 2023-08-16 16:43, Hash e53e55951e7a

# backtrace
Exception Record:

ExceptionCode         : EXCEPTION_ACCESS_VIOLATION
Exception Address     : 0x00007FF6A1B2C3D4
Exception Module      : blender.exe
Exception Flags       : 0x00000000
Exception Parameters  : 0x2
\tParameters[0] : 0x0000000000000000
\tParameters[1] : 0x0000000000000010


Stack trace:
blender.exe         :0x00007FF6A1B2C3D4  BKE_mesh_foo
blender.exe         :0x00007FF6A1B2C100  BKE_scene_graph_update_for_newframe
KERNEL32.DLL        :0x00007FFE5E3A7344  BaseThreadInitThunk

Loaded Modules :
0x00007FF6A0000000  3.6.2.0  blender.exe  C:\\Program Files\\Blender Foundation\\Blender 3.6\\blender.pdb
"""


def test_real_34_crash_file_python_frames_outermost_first(blender_logs):
    report = parse_crash_file((blender_logs / "segfault_3.4.crash.txt").read_text())
    assert report.blender_version == "3.4.1" and report.revision is None
    assert report.python_frames == [("/mnt/pipeline/hooks/seg.py", 3, "pre"),
                                    ("/usr/lib/python3.11/ctypes/__init__.py", 519, "string_at")]
    assert report.innermost_python_frame == ("/usr/lib/python3.11/ctypes/__init__.py", 519, "string_at")
    assert report.native_frames == [] and not report.partial


def test_real_34_crash_file_without_python(tmp_path):
    """Captured: a segfault under `ulimit -v` with no Python running (empty Python backtrace)."""
    report = parse_crash_file((FIXTURES / "blender-logs-3.4" / "segfault_ulimit_3.4.crash.txt").read_bytes())
    assert report.blender_version == "3.4.1" and report.python_frames == [] and not report.partial


def test_release_header_native_frames_and_report_lines():
    report = parse_crash_file(LINUX_RELEASE)
    assert (report.blender_version, report.revision, report.commit_date) == ("4.1.1", "e1743a0317bc", "2024-04-15 15:11")
    assert report.native_frames[0] == "./blender(+0x1c2a5d6) [0x55d1e0c2a5d6]" and len(report.native_frames) == 3
    assert report.report_lines == ["bpy.ops.render.render(animation=True)  # Operator"]
    assert report.python_frames[-1] == ("/usr/lib/python3.11/ctypes/__init__.py", 519, "string_at")


def test_header_variants():
    assert parse_crash_file("# Blender 2.82 (sub 7), Commit date: 2020-03-12 05:06, Hash 77d23b0bd76f\n"
                            "# backtrace\n").blender_version == "2.82 (sub 7)"
    r = parse_crash_file("# Blender 2.83.5, Commit date: 2020-08-19 06:07, Hash c2b144df395f\n# backtrace\n")
    assert (r.blender_version, r.revision) == ("2.83.5", "c2b144df395f")
    r = parse_crash_file("# Blender 3.4.1, Unknown revision\n\n# backtrace\n")
    assert (r.blender_version, r.revision, r.partial) == ("3.4.1", None, False)


def test_windows_crash_file():
    report = parse_crash_file(WINDOWS.replace("\n", "\r\n"))
    assert report.exception == "EXCEPTION_ACCESS_VIOLATION"
    assert report.address == "0x00007FF6A1B2C3D4" and report.module == "blender.exe"
    assert report.native_frames[0].startswith("blender.exe") and "BKE_mesh_foo" in report.native_frames[0]
    assert not any("Loaded Modules" in n or "pdb" in n for n in report.native_frames)
    assert report.revision == "e53e55951e7a" and not report.partial


def test_windows_console_block_and_stack_overflow():
    """Reference strings: what Blender on Windows prints to the console before writing the file."""
    text = ("Error   : EXCEPTION_STACK_OVERFLOW\nAddress : 0x00007FF7C1B0A2B1\nModule  : blender.exe\n"
            "Thread  : 00003b64\nWriting: C:\\Temp\\shot.crash.txt\n")
    report = parse_crash_file(text)
    assert (report.exception, report.address, report.module) == ("EXCEPTION_STACK_OVERFLOW", "0x00007FF7C1B0A2B1",
                                                                  "blender.exe")


def test_truncated_empty_and_binary_files_never_raise():
    cut = parse_crash_file(LINUX_RELEASE[:120])
    assert cut.blender_version == "4.1.1" and cut.partial
    assert parse_crash_file("").partial and parse_crash_file(None).partial
    binary = parse_crash_file(b"\x00\x01\xff\xfe# Blender 3.4.1, Unknown revision\n# backtrace\n\x00\x00")
    assert binary.partial and binary.blender_version == "3.4.1"
    torn = parse_crash_file(LINUX_RELEASE.replace('line 3 in pre', 'line 3'))   # a frame cut mid-line
    assert torn.python_frames == [("/usr/lib/python3.11/ctypes/__init__.py", 519, "string_at")]


def test_read_crash_file(tmp_path):
    p = tmp_path / "x.crash.txt"
    p.write_bytes(b"# Blender 3.4.1, Unknown revision\n\xff\n")
    assert read_crash_file(str(p)).startswith("# Blender 3.4.1")
    assert read_crash_file(str(tmp_path / "missing.crash.txt")) is None
    assert read_crash_file(str(tmp_path)) is None                      # a directory


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=2000), st.text(max_size=2000)))
def test_parse_crash_file_never_raises(data):
    report = parse_crash_file(data)
    assert isinstance(report.python_frames, list)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["# Blender ", "3.4.1", "2.82 (sub 7)", ", Unknown revision", ", Hash ", "abc",
                                 "\n", "# backtrace", "# Python backtrace", '  File "x.py", line ', "3", " in f",
                                 "ExceptionCode : ", "EXCEPTION_ACCESS_VIOLATION", "Loaded Modules :", "\x00"]),
                max_size=40))
def test_parse_crash_file_never_raises_on_near_miss_files(parts):
    oracle.crash_report(parse_crash_file("".join(parts)))


def test_huge_line_number_is_skipped():
    report = parse_crash_file('# Blender 3.4.1\n# backtrace\n# Python backtrace\n  File "a.py", line ' + "9" * 5000
                              + ' in f\n  File "b.py", line 2 in g\n')
    assert report.python_frames == [("b.py", 2, "g")]
