"""The healer is never open (issue 13): with no token configured, `renderwatch healer` makes one that only
its account can read; the same account's `renderwatch jobs` uses it without extra steps; anyone else gets a
401 (or, for the CLI, a message) naming the file and what to do. Real processes on loopback."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from blender_hooks.settings import ConfigError
from healer.service.auth import client_token, ensure_token, token_path
from tests.support.healer import RENDERWATCH, healer_env
from tests.support.net import free_port

pytestmark = pytest.mark.slow


def _request(url: str, token: str | None = None) -> tuple[int, dict | str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            body = r.read().decode()
            return r.status, json.loads(body) if body.startswith("{") else body
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


class Healer:
    def __init__(self, home: Path, **extra: str):
        self.port = free_port()
        self.env = healer_env(home, **extra)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / f"healer-{self.port}.log"
        home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([*RENDERWATCH, "healer", "--listen", f"127.0.0.1:{self.port}"],
                                         env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while True:
            try:
                if _request(self.url + "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)

    def jobs(self, *args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([*RENDERWATCH, "jobs", "--url", self.url, *args], env=env or self.env,
                              capture_output=True, text=True, timeout=60, **kw)


def test_a_healer_without_a_configured_token_makes_one_only_its_account_reads(tmp_path: Path) -> None:
    home = tmp_path / "home"
    healer = Healer(home)
    try:
        path = home / "healer" / "token"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        token = path.read_text().strip()
        assert len(token) >= 40
        assert f"API token in {path}" in healer.log.read_text()

        code, body = _request(healer.url + "/api/v1/jobs")
        assert code == 401 and str(path) in body["error"] and "RENDERWATCH_HEALER_TOKEN" in body["error"]
        assert _request(healer.url + "/api/v1/jobs", "wrong" * 10)[0] == 401
        assert _request(healer.url + "/api/v1/jobs", token) == (200, {"jobs": []})
        assert _request(healer.url + "/metrics")[0] == 200       # read-only counters: Prometheus on this host
        assert _request(healer.url + "/openapi.json")[0] == 200

        # The same account's CLI: no extra steps. A submission that the API refuses shows its reason.
        listed = healer.jobs("list")
        assert listed.returncode == 0, listed.stderr
        submitted = healer.jobs("submit", str(tmp_path / "missing.blend"), "--frames", "1-2")
        assert submitted.returncode == 0, submitted.stderr
        shown = healer.jobs("show", submitted.stdout.strip())
        assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == submitted.stdout.strip()
        bad = healer.jobs("submit", str(tmp_path / "x.blend"), "--frames", "ten")
        assert bad.returncode == 1 and "400" in bad.stderr and "frames" in bad.stderr, bad.stderr
        # Another state home (another account's view): no token found, and the message says where it looked.
        other = dict(healer.env, RENDERWATCH_HOME=str(tmp_path / "elsewhere"))
        refused = healer.jobs("list", env=other)
        assert refused.returncode == 1
        assert "wants a token" in refused.stderr and str(tmp_path / "elsewhere" / "healer" / "token") in refused.stderr
        given = healer.jobs("list", env=dict(other, RENDERWATCH_HEALER_TOKEN=token))
        assert given.returncode == 0, given.stderr
    finally:
        healer.stop()

    again = Healer(home)                          # a restart keeps the token: scripts keep working
    try:
        assert (home / "healer" / "token").read_text().strip() == token
        assert _request(again.url + "/api/v1/jobs", token)[0] == 200
    finally:
        again.stop()


def test_an_operator_token_is_used_and_no_file_is_made(tmp_path: Path) -> None:
    healer = Healer(tmp_path / "home", RENDERWATCH_HEALER_TOKEN="operator-token-0123456789abcdef0123")
    try:
        assert not (tmp_path / "home" / "healer" / "token").exists()
        assert _request(healer.url + "/api/v1/jobs")[0] == 401
        assert _request(healer.url + "/metrics")[0] == 401        # the operator's token guards /metrics as before
        assert _request(healer.url + "/api/v1/jobs", "operator-token-0123456789abcdef0123")[0] == 200
    finally:
        healer.stop()


SYSTEM_PYTHON = "/usr/bin/python3"          # the CLI needs only the standard library; nobody can run this one


@pytest.mark.skipif(os.geteuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK),
                    reason="needs root (to run the CLI as the account nobody) and /usr/bin/python3")
def test_another_account_gets_a_clear_error_not_the_token(tmp_path: Path) -> None:
    home = tmp_path / "home"
    healer = Healer(home)
    try:
        env = dict(healer.env, HOME="/nonexistent", PYTHONPATH=str(Path(__file__).resolve().parents[2]))

        def as_nobody() -> None:
            os.setgid(65534)
            os.setuid(65534)
        cli = subprocess.run([SYSTEM_PYTHON, "-m", "renderwatch", "jobs", "--url", healer.url, "list"], env=env,
                             preexec_fn=as_nobody, cwd="/", capture_output=True, text=True, timeout=60)
        assert cli.returncode == 2, cli.stderr
        assert "belongs to the account that runs the healer" in cli.stderr and "RENDERWATCH_HEALER_TOKEN" in cli.stderr, cli.stderr
        assert (home / "healer" / "token").read_text().strip() not in cli.stdout + cli.stderr
    finally:
        healer.stop()


def test_a_token_file_others_can_read_is_replaced(tmp_path: Path) -> None:
    env = {"RENDERWATCH_HOME": str(tmp_path)}
    first = ensure_token(env)
    assert ensure_token(env) == first                          # stable while private
    os.chmod(first.path, 0o644)
    second = ensure_token(env)
    assert second.value != first.value and stat.S_IMODE(second.path.stat().st_mode) == 0o600
    first.path.write_text("short\n")
    os.chmod(first.path, 0o600)
    assert len(ensure_token(env).value) >= 40                  # a truncated or edited file: a new token
    assert client_token(env) == (ensure_token(env).value, token_path(env))
    assert client_token(dict(env, RENDERWATCH_HEALER_TOKEN="x"))[0] == "x"


def test_a_symlinked_or_foreign_token_file_is_refused(tmp_path: Path) -> None:
    env = {"RENDERWATCH_HOME": str(tmp_path)}
    path = token_path(env)
    path.parent.mkdir(parents=True)
    (tmp_path / "elsewhere").write_text("x" * 50)
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="symbolic link"):
        ensure_token(env)
    assert (tmp_path / "elsewhere").read_text() == "x" * 50   # nothing written through the link
    if os.geteuid() == 0:
        path.unlink()
        path.write_text("y" * 50)
        os.chown(path, 65534, 65534)
        with pytest.raises(ConfigError, match="belongs to uid 65534"):
            ensure_token(env)


def test_a_generated_token_never_listens_off_loopback(tmp_path: Path) -> None:
    from healer.config import load_config
    from healer.service.app import create_app

    cfg = load_config(env={"RENDERWATCH_HOME": str(tmp_path), "RENDERWATCH_HEALER_TOKEN": "t" * 40},
                      overrides={"listen": "0.0.0.0:9465"})
    with pytest.raises(ConfigError, match="generated token is for this host only"):
        create_app(cfg, token_file=tmp_path / "token")
    out = subprocess.run([*RENDERWATCH, "healer", "--listen", "0.0.0.0:0"], env=healer_env(tmp_path / "h"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "not loopback" in out.stderr
    assert not (tmp_path / "h" / "healer" / "token").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
