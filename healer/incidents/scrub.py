"""Scrub secrets and personal paths from anything that leaves the host (Sentry events, attachments, webhooks).

What is removed, in this order:

1. literal secrets we know (the Sentry DSN, webhook secrets, the Alertmanager token, and the value of
   every environment variable whose name looks secret) wherever they appear;
2. URL credentials (``scheme://user:pass@host`` → ``scheme://[Filtered]@host``: covers DSNs);
3. ``Authorization``/``Bearer``/``Basic`` header values and well-known token shapes (GitHub, Slack,
   AWS, JWT, Sentry auth tokens);
4. environment dumps: ``NAME=value`` lines (what ``env`` or ``export`` print) and ``environ({...})``
   reprs keep the name and lose the value; ``secret_name=value`` / ``"api_key": "..."`` anywhere;
5. home directories: the real ones of this host's accounts wherever they are (``$HOME``, the running
   user's and ``$SUDO_USER``'s from the password database, every regular account's, and each one's
   resolved path: studios put homes under ``/mnt/users/``, ``/net/home/``, ``/u/``), then the usual
   shapes ``/home/<user>/``, ``/Users/<user>/``, ``/root/`` and ``C:\\Users\\<user>\\``, become ``~``
   (``~\\`` on Windows), after the configured path rewrites (longest prefix first).

Usage::

    scrubber = Scrubber(path_rewrites={"/mnt/projects/": "projects/"}, secrets=[dsn])
    text = scrubber.text(log_tail)
    event = scrubber.before_send(event, hint)     # sentry-sdk before_send
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

FILTERED = "[Filtered]"

# A variable or key name that holds a secret. Matched against the whole name, case-insensitively.
_SECRET_NAME = re.compile(
    r"(?i)(pass(word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential|"
    r"auth|dsn|cookie|session[_-]?id|signature|bearer)"
)
# Environment variable names whose *values* are worth remembering as literal secrets.
_MIN_SECRET_LEN = 8
# Secret-looking names that hold paths, not secrets (PWD is the working directory).
_NOT_SECRET = frozenset({"PWD", "OLDPWD", "SSH_AUTH_SOCK", "XAUTHORITY", "GPG_AGENT_INFO"})

_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@'\"<>]+)@")
_AUTH_HEADER = re.compile(r"(?i)\b(authorization|proxy-authorization|x-api-key|x-auth-token|x-sentry-auth)"
                          r"(\s*[:=]\s*)([^\r\n]+)")
_BEARER = re.compile(r"\b([Bb]earer|BEARER|Basic)(\s+)([A-Za-z0-9._~+/=-]{8,})")
_TOKEN_SHAPES = re.compile(
    r"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|"
    r"(AKIA|ASIA)[0-9A-Z]{16}|sntrys_[A-Za-z0-9+/=_-]{20,}|sk-[A-Za-z0-9_-]{20,}|glpat-[A-Za-z0-9_-]{20,}|"
    r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
)
# `env` / `export` / `set` output: one NAME=value per line.
_ENV_LINE = re.compile(r"(?m)^(?P<pre>[ \t]*(?:export[ \t]+|declare -x[ \t]+|set[ \t]+)?)"
                       r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")
_ENVIRON_REPR = re.compile(r"environ\(\{.*?\}\)", re.S)
# name=value / name: value / "name": "value" with a secret-looking name, inside a longer line.
_SECRET_WORD = re.compile(r"(?i)pass|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential|dsn|cookie")
_SECRET_KV = re.compile(
    r"(?i)(?P<key>[\"']?\b[A-Za-z0-9_.-]*?(?:pass(?:word|wd)?|secret|token|api[_-]?key|access[_-]?key|"
    r"private[_-]?key|credential|dsn|cookie)[A-Za-z0-9_.-]*[\"']?)(?P<sep>\s*[:=]\s*)"
    r"(?P<value>\[Filtered\]|\"[^\"]*\"|'[^']*'|[^\s,;&}\]]+)"
)
_HOME_POSIX = re.compile(r"(?<![\w.~-])(?:/home/[^/\s'\"]+|/Users/[^/\s'\"]+|/root)(?=/|\b|$)")
_HOME_WINDOWS = re.compile(r"(?i)\b[a-z]:\\(?:Users|Documents and Settings)\\[^\\\s'\"]+(?=\\|\b|$)")


MAX_HOMES = 2000            # accounts read from the password database (a directory service can list more)
REGULAR_UID = 1000          # accounts below this are system accounts (their homes are /var/lib/..., /bin)


def host_homes(env: Mapping[str, str] | None = None) -> list[str]:
    """The home directories of this host's people, as absolute paths (no `/`): `$HOME`, the running
    user's and `$SUDO_USER`'s, and every regular account's, each also as its resolved real path."""
    env = os.environ if env is None else env
    found: list[str] = []
    if env.get("HOME"):
        found.append(env["HOME"])
    try:
        import pwd

        with contextlib.suppress(KeyError):
            found.append(pwd.getpwuid(os.getuid()).pw_dir)
        if env.get("SUDO_USER"):
            with contextlib.suppress(KeyError):
                found.append(pwd.getpwnam(env["SUDO_USER"]).pw_dir)
        for i, entry in enumerate(pwd.getpwall()):
            if i >= MAX_HOMES:
                break
            if entry.pw_uid >= REGULAR_UID and entry.pw_dir.count("/") >= 2:
                found.append(entry.pw_dir)
    except ImportError:          # not POSIX: the Windows shapes below still apply
        pass
    homes: set[str] = set()
    for h in found:
        for p in (h, os.path.realpath(h) if os.path.isabs(h) else h):
            p = p.rstrip("/\\")
            if os.path.isabs(p) and p not in ("", "/") and p.count("/") + p.count("\\") >= 1 and len(p) > 2:
                homes.add(p)
    return sorted(homes, key=len, reverse=True)


def secret_env_values(env: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names look secret (SENTRY_DSN, *_TOKEN, *_PASSWORD...)."""
    env = os.environ if env is None else env
    return [v for k, v in env.items()
            if k not in _NOT_SECRET and _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_LEN]


class Scrubber:
    """Rewrites text and JSON-like values so no secret or home path leaves the host.

    `path_rewrites` maps path prefixes to replacements (applied before the built-in home rewrite);
    `secrets` are literal strings to remove wherever they occur; by default the values of secret-named
    environment variables are added (`include_env=False` to skip).
    """

    def __init__(self, *, path_rewrites: Mapping[str, str] | Iterable[tuple[str, str]] = (),
                 secrets: Iterable[str] = (), include_env: bool = True,
                 env: Mapping[str, str] | None = None, homes: Iterable[str] | None = None) -> None:
        items = path_rewrites.items() if isinstance(path_rewrites, Mapping) else path_rewrites
        self._rewrites = sorted(((str(a), str(b)) for a, b in items if a), key=lambda p: -len(p[0]))
        lits = {s for s in secrets if s and len(s) >= 4}
        if include_env:
            lits.update(secret_env_values(env))
        # Also the parts of a DSN-like secret: its public key alone must not leak either.
        for s in list(lits):
            m = _URL_USERINFO.search(s)
            if m:
                lits.update(p for p in re.split(r"[:]", m.group("userinfo")) if len(p) >= 6)
        self._literals = sorted(lits, key=len, reverse=True)
        self._literal_re = re.compile("|".join(re.escape(s) for s in self._literals)) if self._literals else None
        home_list = sorted({h.rstrip("/") for h in (host_homes(env) if homes is None else homes)
                            if h and h.strip("/")}, key=len, reverse=True)
        # A home is replaced where a path starts with it: not inside a longer name (/home/al in /home/alice).
        self._homes_re = re.compile(r"(?<![\w.~-])(?:" + "|".join(re.escape(h) for h in home_list) +
                                    r")(?=[/\\\s'\"]|$)") if home_list else None

    # -- text ---------------------------------------------------------------------------------------
    def text(self, s: str) -> str:
        """Scrub one string (a log, a crash file, a message)."""
        if not s:
            return s
        if self._literal_re is not None:
            s = self._literal_re.sub(FILTERED, s)
        s = _URL_USERINFO.sub(lambda m: m.group("scheme") + FILTERED + "@", s)
        s = _AUTH_HEADER.sub(lambda m: m.group(1) + m.group(2) + FILTERED, s)
        s = _BEARER.sub(lambda m: m.group(1) + m.group(2) + FILTERED, s)
        s = _TOKEN_SHAPES.sub(FILTERED, s)
        s = _ENVIRON_REPR.sub("environ({" + FILTERED + "})", s)
        s = _ENV_LINE.sub(lambda m: m.group("pre") + m.group("name") + "=" + FILTERED, s)
        if _SECRET_WORD.search(s):   # the key=value scan is the slow one: only on lines that need it
            s = "\n".join(_SECRET_KV.sub(self._kv, ln) if _SECRET_WORD.search(ln) else ln for ln in s.split("\n"))
        return self.path(s)

    @staticmethod
    def _kv(m: re.Match[str]) -> str:
        v = m.group("value")
        if v == FILTERED or v.strip("\"'") == FILTERED:
            return m.group(0)
        q = v[0] if v[:1] in "\"'" else ""
        return m.group("key") + m.group("sep") + q + FILTERED + q

    def path(self, s: str) -> str:
        """Apply the configured path rewrites, then turn home directories into `~`."""
        for old, new in self._rewrites:
            if old in s:
                s = s.replace(old, new)
        if self._homes_re is not None:
            s = self._homes_re.sub("~", s)
        s = _HOME_POSIX.sub("~", s)
        return _HOME_WINDOWS.sub("~", s)

    # -- structures ---------------------------------------------------------------------------------
    def value(self, obj: Any) -> Any:
        """Scrub a JSON-like value recursively; a secret-named key keeps its name and loses its value."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            out = {}
            for k, v in obj.items():
                key = self.text(k) if isinstance(k, str) else k
                if isinstance(k, str) and _SECRET_NAME.search(k) and isinstance(v, str | bytes) and v:
                    out[key] = FILTERED
                else:
                    out[key] = self.value(v)
            return out
        if isinstance(obj, list | tuple):
            return [self.value(v) for v in obj]
        return obj

    def bytes(self, data: bytes) -> bytes:
        """Scrub an attachment's bytes (decoded as UTF-8 with replacement, which is what logs are)."""
        return self.text(data.decode("utf-8", "replace")).encode("utf-8")

    # -- sentry-sdk hooks ----------------------------------------------------------------------------
    def before_send(self, event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
        """sentry-sdk `before_send`: drop what the SDK adds about the process, scrub the rest."""
        event.pop("modules", None)
        event.pop("user", None)
        extra = event.get("extra")
        if isinstance(extra, dict):
            extra.pop("sys.argv", None)
            for k in [k for k in extra if "environ" in k.lower() or k.lower() == "env"]:
                extra.pop(k, None)
        contexts = event.get("contexts")
        if isinstance(contexts, dict):
            for k in ("environment", "env", "argv", "process"):
                contexts.pop(k, None)
        request = event.get("request")
        if isinstance(request, dict):
            request.pop("env", None)
            request.pop("cookies", None)
        out = self.value(event)
        assert isinstance(out, dict)
        return out

    def before_breadcrumb(self, crumb: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
        out = self.value(crumb)
        assert isinstance(out, dict)
        return out
