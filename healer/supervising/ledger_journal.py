"""The ledger's journal: what changed since the last save, appended as one line, so that a frame's
save costs what the frame changed, not the whole job (a 10,000-frame ledger is 1 MB).

Files, both 0600 in the job's folder:

- `ledger.json`: a whole snapshot (the format `Ledger.load` always read), tagged `"journal": G`;
- `ledger.journal`: a first line `{"journal": G}`, then one JSON line per save since that snapshot
  (frames verified or forgotten, render counts, expected paths, suspects, warnings, attempts).

A save appends its line with one write(2) before it returns, so a healer killed at any point (the
page cache outlives the process) leaves every save it made; one killed mid-write leaves a torn last
line, which the next load ignores: the state of the last whole save, as the atomic rewrite gave.
Against a power loss the journal is fdatasynced at most once a second (SYNC_INTERVAL_S, group
commit), and compactions always: a power cut loses at most the last second of frames, which are
rendered again (the frame files Blender wrote in that second were not synced either; a resume
verifies every recorded frame on disk anyway). An fsync per frame costs ~6 ms on a virtual disk. The journal is
compacted (a new snapshot tagged G+1 written atomically, then a fresh journal tagged G+1 put in place
atomically) when it outgrows the snapshot (so the per-frame cost stays O(1) amortised and the folder
at most ~2x the snapshot), when the job's header changes (status, error, fingerprint, spec: a job at
rest has its whole state in `ledger.json`), and on a process's first save. A journal whose tag is not
the snapshot's is stale (a crash between the two renames) and ignored: the snapshot has it all.

Change tracking: the ledger's maps are `TrackedMap`s (the keys set, popped or cleared since the last
save) and an attempt's frame lists `FrameList`s (appended since, or rewritten; O(1) `in`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

JOURNAL_NAME = "ledger.journal"
COMPACT_MIN_BYTES = 64 * 1024     # a journal is compacted once past this and past the snapshot's size
SYNC_INTERVAL_S = 1.0             # the journal's appends are fdatasynced at most this often (group commit)


class TrackedMap(dict):
    """A dict that remembers which keys changed since `clean()` (and whether it was cleared).
    `mutable_values`: a value read through get/[] may be changed in place, so reading marks it."""

    def __init__(self, *args: Any, mutable_values: bool = False, **kw: Any):
        super().__init__(*args, **kw)
        self.dirty: set = set()
        self.reset = False
        self.mutable_values = mutable_values
        self.members: frozenset | None = None       # keys counted by `n_members` (the requested frames)
        self.n_members = 0

    def count_members(self, members: frozenset) -> None:
        self.members = members
        self.n_members = sum(1 for k in self if k in members)

    def _added(self, key: Any) -> None:
        if self.members is not None and key in self.members:
            self.n_members += 1

    def _removed(self, key: Any) -> None:
        if self.members is not None and key in self.members:
            self.n_members -= 1

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self:
            self._added(key)
        super().__setitem__(key, value)
        self.dirty.add(key)

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._removed(key)
        self.dirty.add(key)

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        if self.mutable_values:
            self.dirty.add(key)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self:
            return self[key]
        return default

    def pop(self, key: Any, *default: Any) -> Any:
        if key in self:
            self._removed(key)
            self.dirty.add(key)
        return super().pop(key, *default)

    def popitem(self) -> tuple:
        key, value = super().popitem()
        self._removed(key)
        self.dirty.add(key)
        return key, value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kw: Any) -> None:
        for k, v in dict(*args, **kw).items():
            self[k] = v

    def __ior__(self, other: Any) -> TrackedMap:    # type: ignore[misc,override]
        self.update(other)
        return self

    def clear(self) -> None:
        super().clear()
        self.n_members = 0
        self.dirty.clear()
        self.reset = True

    def clean(self) -> None:
        self.dirty.clear()
        self.reset = False


class FrameList(list):
    """A list of frame numbers with O(1) `in`, that knows whether it was only appended to since
    `clean()` (the journal then writes the new tail) or rewritten (the journal writes it whole)."""

    def __init__(self, items: Iterable = ()):
        super().__init__(items)
        self._count: dict = {}
        for x in self:
            self._count[x] = self._count.get(x, 0) + 1
        self.written = 0              # items already in the journal (a tail from here is new)
        self.rewritten = True         # not yet written at all

    def __contains__(self, x: object) -> bool:
        return x in self._count

    def _rebuild(self) -> None:
        self._count = {}
        for x in self:
            self._count[x] = self._count.get(x, 0) + 1
        self.rewritten = True

    def append(self, x: Any) -> None:
        super().append(x)
        self._count[x] = self._count.get(x, 0) + 1

    def extend(self, xs: Iterable) -> None:
        for x in xs:
            self.append(x)

    def __iadd__(self, xs: Iterable) -> FrameList:    # type: ignore[override,misc]
        self.extend(xs)
        return self

    def clean(self) -> None:
        self.written, self.rewritten = len(self), False


def _rewriting(name: str):
    base = getattr(list, name)

    def method(self: FrameList, *args: Any, **kw: Any) -> Any:
        out = base(self, *args, **kw)
        self._rebuild()
        return out if name not in ("__imul__",) else self
    method.__name__ = name
    return method


for _name in ("__setitem__", "__delitem__", "insert", "remove", "pop", "clear", "sort", "reverse", "__imul__"):
    setattr(FrameList, _name, _rewriting(_name))


# ---------------------------------------------------------------------- the files
def journal_path(ledger_path: Path) -> Path:
    return Path(ledger_path).with_name(JOURNAL_NAME)


def read_journal(ledger_path: Path) -> tuple[int | None, list[dict]]:
    """(the journal's tag, its whole records in order); a torn or unreadable line ends it."""
    try:
        data = journal_path(ledger_path).read_bytes()
    except FileNotFoundError:
        return None, []
    lines = data.split(b"\n")
    lines.pop()                       # after the last newline: empty, or a torn record
    if not lines:
        return None, []
    try:
        head = json.loads(lines[0])
        gen = int(head["journal"])
    except (ValueError, KeyError, TypeError):
        return None, []
    records = []
    for line in lines[1:]:
        try:
            rec = json.loads(line)
        except ValueError:
            break
        if not isinstance(rec, dict):
            break
        records.append(rec)
    return gen, records


def append_line(path: Path, data: bytes, expect_size: int, expect_ino: int, *, sync: bool = True) -> bool:
    """Append one record (and fdatasync the journal when `sync`). False (nothing written) when the
    journal is not the one this ledger wrote (replaced or grown by someone else): the caller compacts.
    A failed write is cut back off (a full disk leaves no torn line behind) and raised."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if st.st_ino != expect_ino or st.st_size != expect_size:
            return False
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if sync:
                (getattr(os, "fdatasync", None) or os.fsync)(fd)
        except BaseException:
            try:
                os.ftruncate(fd, expect_size)
            except OSError:
                pass
            raise
        return True
    finally:
        os.close(fd)
