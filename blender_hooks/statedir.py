"""renderwatch's state folders: this account's own, owner-only, and never reached through a planted link
(standard library only: the hooks use it inside Blender).

The state root ($RENDERWATCH_HOME, else $XDG_STATE_HOME/renderwatch, else ~/.local/state/renderwatch)
may itself be a symbolic link an administrator made (/var/lib/rw -> /data/rw): the link must belong
to this account or to root, and the folder it names to this account. Every folder below the root
that renderwatch makes or opens is walked one component at a time, openat-style (`O_NOFOLLOW |
O_DIRECTORY` relative to the folder above): each must be a real folder owned by the running account.
Folders are made 0700; one of ours that others may read is tightened to 0700, one that others may
write is refused (another account may have planted something in it). A refusal is an
`UnsafeStateDir`, a PermissionError whose message names the path, the owner found and the fix, so
every caller that copes with an unwritable state folder copes with it too.

Once every folder from the root down is ours and closed to others, no other account can swap a
component afterwards, so the paths can be used as plain paths; the files in them are still opened
with `O_NOFOLLOW` (`open_nofollow`).

Usage::

    private_dir(home / "healer" / "jobs" / job, root=home)   # made, checked; UnsafeStateDir if not ours
    private_dir(path)             # root: the state home when path lies under it, else path itself
    fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from .settings import ENV_HOME, STATE_DIR_NAME, XDG_STATE_HOME

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
FIX = "set RENDERWATCH_HOME to a folder of this account's"


class UnsafeStateDir(PermissionError):
    """A state folder renderwatch will not use: a symbolic link below the root, another account's, or
    writable by others. `path` and `owner` (the uid found, None for a mode problem) say which."""

    def __init__(self, path: str | os.PathLike[str], problem: str, fix: str, owner: int | None = None):
        self.message = f"{path} {problem}: {fix}"
        super().__init__(errno.EACCES, self.message)
        self.path = str(path)
        self.owner = owner

    def __str__(self) -> str:
        return self.message


def state_home(env: Mapping[str, str] | None = None) -> Path:
    """$RENDERWATCH_HOME, else $XDG_STATE_HOME/renderwatch, else ~/.local/state/renderwatch, `~` expanded
    (the one rule: kernel.paths.home checks the values first and names a bad one). RuntimeError when
    a `~` cannot be expanded."""
    e = os.environ if env is None else env
    if e.get(ENV_HOME):
        return Path(e[ENV_HOME]).expanduser()
    if e.get(XDG_STATE_HOME):
        return Path(e[XDG_STATE_HOME]).expanduser() / STATE_DIR_NAME
    return Path.home() / ".local" / "state" / STATE_DIR_NAME


def _default_root(path: str) -> str:
    """The state home when `path` lies in it, else `path` itself (a folder configured on its own)."""
    try:
        root = os.path.abspath(state_home())
    except (RuntimeError, KeyError, OSError):      # no home directory to expand
        return path
    return root if _within(path, root) else path


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def private_dir(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None, *,
                create: bool = True) -> Path:
    """Make `path` and every missing folder above it 0700 and check the chain from `root` down (see the
    module's docstring); returns `path`. Raises UnsafeStateDir, NotADirectoryError or another OSError;
    FileNotFoundError for a missing folder when not `create`. Not `mkdir(parents=True, mode=0o700)`:
    that makes the parents with the umask's mode (the state root above the spool came out 0755)."""
    p = os.path.abspath(path)                       # strings, not pathlib: this runs at every ledger save
    r = os.path.abspath(root) if root is not None else _default_root(p)
    if not _within(p, r):
        r = p
    fd = _open_root(r, create)
    try:
        here = r
        for name in p[len(r):].split(os.sep):
            if not name:
                continue
            here = os.path.join(here, name)
            child = _open_child(fd, name, here, create)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return path if isinstance(path, Path) else Path(path)


def _make_missing(path: Path) -> None:
    """Folders above the root that are missing: made 0700 (not checked: the root's parents are the
    account's or the administrator's, like ~/.local/state)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        if path.parent == path:
            raise
        _make_missing(path.parent)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass


def _open_root(r: str, create: bool) -> int:
    try:
        lst = os.lstat(r)
    except FileNotFoundError:
        if not create:
            raise
        _make_missing(Path(r))
        lst = os.lstat(r)
    if stat.S_ISLNK(lst.st_mode) and lst.st_uid not in (os.geteuid(), 0):
        raise UnsafeStateDir(r, f"is a symbolic link made by uid {lst.st_uid} (neither this account, uid "
                                f"{os.geteuid()}, nor root)", f"remove it, or {FIX}", lst.st_uid)
    try:
        fd = os.open(r, _DIR_FLAGS)                 # the root's own link is followed: an admin's choice
    except NotADirectoryError:
        raise NotADirectoryError(errno.ENOTDIR, f"{r} is not a folder: {FIX}", str(r)) from None
    try:
        _check(fd, r)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child(dirfd: int, name: str, path: str, create: bool) -> int:
    flags = _DIR_FLAGS | os.O_NOFOLLOW
    try:
        fd = os.open(name, flags, dir_fd=dirfd)
    except FileNotFoundError:
        if not create:
            raise
        try:
            os.mkdir(name, 0o700, dir_fd=dirfd)
        except FileExistsError:
            pass
        fd = os.open(name, flags, dir_fd=dirfd)
    except OSError as e:
        if e.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        lst = os.lstat(name, dir_fd=dirfd)
        if stat.S_ISLNK(lst.st_mode):
            try:
                target = os.readlink(name, dir_fd=dirfd)
            except OSError:
                target = "?"
            raise UnsafeStateDir(path, f"is a symbolic link (to {target}, made by uid {lst.st_uid}): renderwatch "
                                       "keeps its state in real folders of its own and does not follow it",
                                 "remove the link (renderwatch makes the folder again)", lst.st_uid) from None
        raise NotADirectoryError(errno.ENOTDIR, f"{path} is not a folder: move it away, or {FIX}",
                                 str(path)) from None
    try:
        _check(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check(fd: int, path: str) -> None:
    st = os.fstat(fd)
    me = os.geteuid()
    if st.st_uid != me:
        raise UnsafeStateDir(path, f"belongs to uid {st.st_uid}, not to this account (uid {me}): another "
                                   "account could read or change renderwatch's state there",
                             f"remove it, or {FIX}", st.st_uid)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise UnsafeStateDir(path, f"is writable by other accounts (mode {mode:04o}): one of them may have "
                                   "put something in it", f"check what is in it and `chmod 700` it, or {FIX}")
    if mode & 0o777 != 0o700:
        try:
            os.fchmod(fd, 0o700)                    # ours: made 0755 by an older renderwatch
        except OSError:
            pass                                    # a read-only filesystem: nothing can be written anyway


def open_nofollow(path: str | os.PathLike[str], flags: int, mode: int = 0o600) -> int:
    """os.open that never follows a symbolic link at `path` (ELOOP instead) and never inherits."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def read_small(path: str | os.PathLike[str], limit: int) -> bytes | None:
    """At most `limit` bytes of a small regular file this account owns, or None (missing, a link, a FIFO
    or device, another account's, or longer than `limit`). Never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_size > limit:
            return None
        data = os.read(fd, limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= limit else None
