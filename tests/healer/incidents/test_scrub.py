"""Scrubbing: secrets, environment dumps and home paths never leave the host; Blender's output survives."""

from __future__ import annotations

import pytest

from healer.incidents.scrub import FILTERED, Scrubber, secret_env_values


@pytest.fixture
def s() -> Scrubber:
    return Scrubber(path_rewrites={"/mnt/projects/": "projects/"}, include_env=False)


@pytest.mark.parametrize("raw, want", [
    ("Read blend: /home/alice/shots/a.blend", "Read blend: ~/shots/a.blend"),
    ("cd /home/alice", "cd ~"),
    ("/Users/bob/Library/x.py", "~/Library/x.py"),
    ("/root/.config/blender/3.4/x", "~/.config/blender/3.4/x"),
    (r"C:\Users\Carol\Desktop\shot.blend", r"~\Desktop\shot.blend"),
    ("Saved: '/mnt/projects/shot010/frames/f_0001.png'", "Saved: 'projects/shot010/frames/f_0001.png'"),
    ("/mnt/root/x and /rootfs/y", "/mnt/root/x and /rootfs/y"),
])
def test_paths(s, raw, want):
    assert s.text(raw) == want


@pytest.mark.parametrize("raw, gone", [
    ("SENTRY_DSN=https://abc123def456@o1.ingest.example/42", "abc123def456"),
    ("posting to https://user:pa55word@hooks.example/x", "pa55word"),
    ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
    ("curl -H 'Bearer zyxwvuts9876543'", "zyxwvuts9876543"),
    ("token ghp_0123456789abcdefghijABCDEFGHIJ012345 used", "ghp_0123456789"),
    ("slack xoxb-1234567890-abcdefghij", "xoxb-1234567890"),
    ("key AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlXw", "eyJhbGciOiJIUzI1NiJ9"),
    ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI"),
    ("export FARM_DB=postgres://render:s3cr3t@db/farm", "s3cr3t"),
    ("  LANG=C.UTF-8", "C.UTF-8"),
    ("environ({'HOME': '/home/alice', 'X': 'y'})", "'X': 'y'"),
    ('config {"api_key": "k-1234567", "samples": 16}', "k-1234567"),
    ("login password=hunter2hunter2 ok", "hunter2hunter2"),
])
def test_secrets(s, raw, gone):
    out = s.text(raw)
    assert gone not in out, out
    assert FILTERED in out or "~" in out


def test_env_line_keeps_the_name():
    assert Scrubber(include_env=False).text("HOME=/home/alice\nPATH=/usr/bin") == f"HOME={FILTERED}\nPATH={FILTERED}"


def test_blender_output_is_untouched(s, blender_logs):
    text = (blender_logs / "ok_3.4.log").read_text()
    assert s.text(text) == text.replace("/mnt/projects/", "projects/")


def test_literal_secrets_and_secret_env_values():
    env = {"RENDER_FARM_TOKEN": "tok-aaaa-bbbb-cccc", "PWD": "/work/main", "SHORT_TOKEN": "x", "EDITOR": "vim-editor"}
    assert secret_env_values(env) == ["tok-aaaa-bbbb-cccc"]
    sc = Scrubber(secrets=["http://pubkey123456@127.0.0.1:9000/1"], env=env)
    out = sc.text("farm said tok-aaaa-bbbb-cccc; key pubkey123456 in /work/main; vim-editor")
    assert "tok-aaaa" not in out and "pubkey123456" not in out
    assert "/work/main" in out and "vim-editor" in out


def test_values_recursive_and_secret_keys():
    sc = Scrubber(include_env=False)
    out = sc.value({"output": "/home/a/x.png", "auth_token": "abc", "nested": [{"password": "p"}, "/Users/z/q"],
                    "samples": 16})
    assert out == {"output": "~/x.png", "auth_token": FILTERED, "nested": [{"password": FILTERED}, "~/q"],
                   "samples": 16}


def test_before_send_strips_process_data():
    sc = Scrubber(include_env=False)
    event = {"extra": {"sys.argv": ["healer", "--token", "x"], "findings": []}, "modules": {"a": "1"},
             "user": {"ip_address": "1.2.3.4"}, "contexts": {"environment": {"HOME": "/root"}, "job": {"id": "j"}},
             "message": "see /home/alice/log"}
    out = sc.before_send(event, {})
    assert out == {"extra": {"findings": []}, "contexts": {"job": {"id": "j"}}, "message": "see ~/log"}
    assert sc.before_breadcrumb({"message": "/home/x/y"}, {}) == {"message": "~/y"}


# -- the real home directories, wherever a studio puts them -------------------------------------------


@pytest.mark.parametrize("home", ["/mnt/users/alice", "/net/home/bob", "/u/carol", "/srv/homes/d.e-f"])
def test_a_home_in_an_unusual_place_never_leaves(home):
    s = Scrubber(include_env=False, env={"HOME": home + "/"})
    text = f"scene {home}/shots/010/a.blend, log '{home}' and {home}\\n"
    out = s.text(text)
    assert home not in out and "~/shots/010/a.blend" in out
    event = {"contexts": {"job": {"scene": f"{home}/shots/a.blend", "frames": [1, 2]}},
             "breadcrumbs": {"values": [{"message": f"cd {home}"}]}, "extra": {"paths": [f"{home}/x.png"]}}
    assert home not in repr(s.before_send(event))
    assert home not in s.bytes(f"Read blend: {home}/a.blend".encode()).decode()


def test_homes_are_replaced_as_whole_path_components_only():
    s = Scrubber(include_env=False, homes=["/mnt/users/al"])
    assert s.text("/mnt/users/al/a.blend /mnt/users/alice/b.blend") == "~/a.blend /mnt/users/alice/b.blend"
    assert Scrubber(include_env=False, homes=["/"]).text("/mnt/projects/a.blend") == "/mnt/projects/a.blend"


def test_host_homes_read_the_password_database_and_resolve_links(tmp_path, monkeypatch):
    import pwd
    from types import SimpleNamespace

    from healer.incidents import scrub

    real = tmp_path / "mnt" / "users" / "erin"
    real.mkdir(parents=True)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "erin").symlink_to(real)
    entries = [SimpleNamespace(pw_uid=1001, pw_dir=str(tmp_path / "home" / "erin")),
               SimpleNamespace(pw_uid=2, pw_dir="/bin"), SimpleNamespace(pw_uid=1002, pw_dir="/")]
    monkeypatch.setattr(pwd, "getpwall", lambda: entries)
    homes = scrub.host_homes({"HOME": "/net/home/bob"})
    assert str(real) in homes and str(tmp_path / "home" / "erin") in homes and "/net/home/bob" in homes
    assert "/bin" not in homes and "/" not in homes
    assert Scrubber(include_env=False, env={}).text(f"{real}/a.blend") == "~/a.blend"
