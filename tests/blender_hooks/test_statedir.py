"""blender_hooks.statedir: renderwatch's state folders are this account's, owner-only, and reached through
no link planted below the state root. Real folders and links in tmp dirs. Another local account is
simulated as root with os.chown to nobody (uid 65534): the tests run as root, here and in CI."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from blender_hooks.statedir import UnsafeStateDir, private_dir
from kernel.files import write_atomic
from kernel.paths import ensure_private_dir, state_problem

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="simulating another account needs root (os.chown)")


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def others_folder(tmp_path: Path) -> Path:
    """A folder of another account, 0755, as an attacker would make it."""
    d = tmp_path / "attacker"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    os.chown(d, NOBODY, NOBODY)
    return d


@as_root
def test_a_planted_link_below_the_root_is_refused_and_its_target_untouched(tmp_path):
    root = tmp_path / "home"
    jobs = private_dir(root / "healer" / "jobs", root)
    target = others_folder(tmp_path)
    os.symlink(target, jobs / "job-1")
    os.lchown(jobs / "job-1", NOBODY, NOBODY)
    with pytest.raises(UnsafeStateDir) as e:
        private_dir(jobs / "job-1", root)
    assert isinstance(e.value, PermissionError) and e.value.owner == NOBODY
    msg = str(e.value)
    assert str(jobs / "job-1") in msg and "symbolic link" in msg and str(target) in msg and "remove the link" in msg
    assert mode(target) == 0o755 and list(target.iterdir()) == []   # not chmodded, nothing written


def test_a_link_below_the_root_is_refused_even_when_this_account_made_it(tmp_path):
    root = tmp_path / "home"
    private_dir(root, root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, root / "healer")
    with pytest.raises(UnsafeStateDir, match="symbolic link"):
        private_dir(root / "healer" / "jobs", root)
    assert not (elsewhere / "jobs").exists()


@as_root
def test_a_folder_of_another_account_below_the_root_is_refused(tmp_path):
    root = tmp_path / "home"
    healer = private_dir(root / "healer", root)
    os.chown(healer, NOBODY, NOBODY)
    with pytest.raises(UnsafeStateDir) as e:
        private_dir(healer / "jobs", root)
    assert e.value.owner == NOBODY
    assert f"{healer} belongs to uid {NOBODY}, not to this account (uid 0)" in str(e.value)
    assert "RENDERWATCH_HOME" in str(e.value)
    assert not (healer / "jobs").exists()


@as_root
def test_a_state_root_of_another_account_is_refused(tmp_path):
    root = others_folder(tmp_path)
    with pytest.raises(UnsafeStateDir, match=f"belongs to uid {NOBODY}"):
        private_dir(root / "healer", root)
    assert list(root.iterdir()) == [] and mode(root) == 0o755


def test_the_state_root_may_be_a_link_an_administrator_made(tmp_path):
    """RENDERWATCH_HOME=/var/lib/rw -> /data/rw: the root's own link is followed (its owner is this account or
    root), its target checked and made 0700."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    root = tmp_path / "rw"
    os.symlink(data, root)
    private_dir(root / "healer" / "jobs", root)
    assert (data / "healer" / "jobs").is_dir() and mode(data) == 0o700


@as_root
def test_a_state_root_link_made_by_another_account_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    root = tmp_path / "rw"
    os.symlink(data, root)
    os.lchown(root, NOBODY, NOBODY)
    with pytest.raises(UnsafeStateDir, match=f"symbolic link made by uid {NOBODY}"):
        private_dir(root / "healer", root)
    assert not (data / "healer").exists()


def test_a_folder_others_can_write_is_refused_one_others_can_read_is_tightened(tmp_path):
    root = tmp_path / "home"
    healer = private_dir(root / "healer", root)
    os.chmod(healer, 0o755)                 # as an older renderwatch made it: tightened, no fuss
    private_dir(healer / "jobs", root)
    assert mode(healer) == 0o700 and mode(healer / "jobs") == 0o700
    os.chmod(healer, 0o777)                 # others may have planted something: refused
    with pytest.raises(UnsafeStateDir, match="writable by other accounts"):
        private_dir(healer / "jobs", root)


def test_a_file_in_the_way_is_not_a_folder(tmp_path):
    root = tmp_path / "home"
    private_dir(root, root)
    (root / "healer").write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        private_dir(root / "healer" / "jobs", root)


def test_without_create_a_missing_folder_is_not_made(tmp_path):
    with pytest.raises(FileNotFoundError):
        private_dir(tmp_path / "home" / "spool", tmp_path / "home", create=False)
    assert not (tmp_path / "home").exists()


def test_ensure_private_dir_checks_from_the_state_home(tmp_path, monkeypatch):
    """Without an explicit root, the state home of the environment is the root when the path lies in it."""
    home = tmp_path / "home"
    monkeypatch.setenv("RENDERWATCH_HOME", str(home))
    ensure_private_dir(home / "healer")
    os.symlink(tmp_path, home / "healer" / "jobs")
    with pytest.raises(UnsafeStateDir):
        ensure_private_dir(home / "healer" / "jobs" / "job-1")
    assert not (tmp_path / "job-1").exists()


@as_root
@pytest.mark.parametrize("plant", ["healer", "jobs"])
def test_state_problem_names_a_planted_link_or_foreign_folder(tmp_path, plant):
    home = tmp_path / "home"
    target = others_folder(tmp_path)
    if plant == "healer":
        private_dir(home, home)
        os.symlink(target, home / "healer")
        os.lchown(home / "healer", NOBODY, NOBODY)
    else:
        os.chown(private_dir(home / "healer" / "jobs", home), NOBODY, NOBODY)
    problem = state_problem({"RENDERWATCH_HOME": str(home)})
    assert problem is not None and ("symbolic link" in problem if plant == "healer" else "uid 65534" in problem)
    assert list(target.iterdir()) == [] and mode(target) == 0o755


def test_write_atomic_replaces_a_planted_link_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.symlink(victim, tmp_path / "ledger.json")
    write_atomic(tmp_path / "ledger.json", b"{}")
    assert victim.read_text() == "precious" and not os.path.islink(tmp_path / "ledger.json")


@pytest.mark.parametrize("env", [
    {"RENDERWATCH_HOME": "/srv/rw"}, {"RENDERWATCH_HOME": "~/rw"}, {"XDG_STATE_HOME": "/srv/state"},
    {"XDG_STATE_HOME": "~/state"}, {"RENDERWATCH_HOME": "", "XDG_STATE_HOME": "~/state"}, {},
])
def test_the_hooks_and_the_services_find_the_same_state_root(env):
    """One rule for the state root: the hooks' spool inside Blender (blender_hooks.statedir) and the agent
    that reads it (kernel.paths.home) name the same folder, `~` in $XDG_STATE_HOME included."""
    from blender_hooks.statedir import state_home
    from kernel.paths import home

    assert state_home(env) == home(env)
    assert home(env).is_absolute()
