"""Every image file the healer reads is read here; what a frame's facts mean is judged here too, I/O-free.

- `read`: the entries: `inspect_frame` (a frame's size, channels, one value?) and `empty_cells`;
- `verify`: `verify_image`, is the file a complete image (the ledger's check after every `Saved:`);
- `png`, `exr` (the one OpenEXR header parser and chunk table, single- and multi-part), `jpeg`,
  `pillow` (JPEG's draft and every other format): one module per format;
- `facts`: the values the readers return (`FrameFacts`, `EmptyCells`);
- `judge`: the pure judgement of a frame from those values (no I/O; a test reads its imports).

Nothing is imported here: the ledger imports `verify` before Blender starts; the rest comes later.
"""
