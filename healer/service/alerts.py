"""Alerts in: Alertmanager's webhook (payload version 4) → configured healer actions.

`POST /api/v1/alertmanager` with `Authorization: Bearer <token>`. Each alert is matched against the
rules, in order: the first rule whose `alertname` and label matchers fit decides the action, and the
value of its first present `labels` entry is the action's argument. Firing calls the action once per
alert (Alertmanager re-sends firing alerts; they are not acted on twice); resolved calls the undo
action where there is one (`pause_gpu` → `resume_gpu`, once no other firing alert holds that GPU).
An action that returns False found no such target on this host (outcome `no_target`): nothing is
held for it. What the receiver remembers (alerts acted on, alerts holding a GPU, alerts logged) is
bounded by `memory` entries each, oldest forgotten first: alerts for 90,000 made-up GPUs cost nothing.
Unknown alerts are acknowledged (200) and logged; malformed payloads get 400 with the reason.

Rules (config, `[[healer.alert_rules]]`, or `DEFAULT_RULES`)::

    [{"alertname": "RenderStalled", "action": "restart_job", "labels": ["job"]},
     {"alertname": "GPUOverheating", "action": "pause_gpu", "labels": ["uuid", "gpu"],
      "matchers": ["severity=~\\"critical|page\\""]}]     # (the second: not a default, see DEFAULT_RULES)

Usage::

    add_alertmanager_routes(app, token=cfg.alertmanager_token, rules=DEFAULT_RULES, actions=supervisor)
"""

from __future__ import annotations

import hmac
import inspect
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from blender_hooks.settings import ENV_ALERTMANAGER_TOKEN  # noqa: F401 (names read from here)
from healer.service.alert_rules import ACTIONS, DEFAULT_RULES, AlertRule, Matcher, load_alert_rules  # noqa: F401
from healer.service.auth import ALERTMANAGER_PATH

log = logging.getLogger(__name__)

PAYLOAD_VERSION = "4"
METRIC_ALERTS = "renderwatch_healer_alerts"   # exported as renderwatch_healer_alerts_total


class AlertActions(Protocol):
    """What the supervisor does for alerts. Methods may be plain or async; they must not block for long.
    Returning False says the target is not on this host (no such job or GPU)."""

    def restart_job(self, job: str) -> Any: ...
    def pause_gpu(self, uuid: str) -> Any: ...
    def resume_gpu(self, uuid: str) -> Any: ...


class PayloadError(ValueError):
    """A payload that is not Alertmanager's webhook v4; the message is the reason sent back."""


@dataclass(frozen=True)
class Alert:
    status: str
    labels: Mapping[str, str]
    starts_at: str = ""
    fingerprint: str = ""

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def key(self) -> str:
        """Identity of one firing episode: the same alert re-sent by Alertmanager keeps it."""
        ident = self.fingerprint or json.dumps(sorted(self.labels.items()))
        return f"{ident}@{self.starts_at}"


@dataclass(frozen=True)
class Notification:
    status: str
    receiver: str
    alerts: tuple[Alert, ...]


def _str_map(v: Any, where: str) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise PayloadError(f"{where}: expected an object")
    for k, x in v.items():
        if not isinstance(x, str):
            raise PayloadError(f"{where}.{k}: expected a string")
    return v


def parse_notification(obj: Any) -> Notification:
    """Validate Alertmanager's webhook payload (version 4); PayloadError says what is wrong."""
    if not isinstance(obj, dict):
        raise PayloadError("payload: expected a JSON object")
    version = obj.get("version")
    if version != PAYLOAD_VERSION:
        raise PayloadError(f"version: expected \"{PAYLOAD_VERSION}\", got {version!r}")
    status = obj.get("status", "firing")
    if status not in ("firing", "resolved"):
        raise PayloadError(f"status: expected \"firing\" or \"resolved\", got {status!r}")
    receiver = obj.get("receiver", "")
    if not isinstance(receiver, str):
        raise PayloadError("receiver: expected a string")
    raw = obj.get("alerts")
    if not isinstance(raw, list):
        raise PayloadError("alerts: expected a list")
    alerts = []
    for i, a in enumerate(raw):
        where = f"alerts[{i}]"
        if not isinstance(a, dict):
            raise PayloadError(f"{where}: expected an object")
        st = a.get("status")
        if st not in ("firing", "resolved"):
            raise PayloadError(f"{where}.status: expected \"firing\" or \"resolved\", got {st!r}")
        labels = _str_map(a.get("labels"), f"{where}.labels")
        _str_map(a.get("annotations"), f"{where}.annotations")
        starts, fp = a.get("startsAt", ""), a.get("fingerprint", "")
        if not isinstance(starts, str) or not isinstance(fp, str):
            raise PayloadError(f"{where}: startsAt and fingerprint must be strings")
        alerts.append(Alert(st, labels, starts, fp))
    return Notification(status, receiver, tuple(alerts))


@dataclass(frozen=True)
class Decision:
    alert: Alert
    rule: AlertRule | None
    call: str | None          # the AlertActions method to call, or None
    target: str | None        # its argument
    outcome: str              # "act", "unknown" (no rule), "no_label", "nothing" (resolved, no undo)


def decide(note: Notification, rules: Sequence[AlertRule]) -> list[Decision]:
    """What to do for each alert (pure: no I/O, no memory of earlier notifications)."""
    out = []
    for a in note.alerts:
        rule = next((r for r in rules if r.matches(a.labels)), None)
        if rule is None:
            out.append(Decision(a, None, None, None, "unknown"))
            continue
        target = next((a.labels[x] for x in rule.labels if a.labels.get(x)), None)
        fire, undo = ACTIONS[rule.action]
        call = fire if a.status == "firing" else undo
        if target is None:
            out.append(Decision(a, rule, None, None, "no_label"))
        elif call is None:
            out.append(Decision(a, rule, None, target, "nothing"))
        else:
            out.append(Decision(a, rule, call, target, "act"))
    return out


# -- the route -----------------------------------------------------------------------------------------------
class AlertmanagerReceiver:
    """The request handler and the little memory it needs (which alerts were acted on, which hold a GPU)."""

    def __init__(self, *, token: str, rules: Sequence[AlertRule], actions: AlertActions,
                 registry: CollectorRegistry | None = None, memory: int = 10_000) -> None:
        if not token:
            raise ValueError(f"the Alertmanager receiver needs a bearer token (set {ENV_ALERTMANAGER_TOKEN})")
        self._expected = f"Bearer {token}".encode()
        self.rules = tuple(rules)
        self.actions = actions
        self._memory = memory
        self._acted: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        # Which firing alerts hold an undoable action's target (a paused GPU), oldest first, bounded by
        # `memory` like the rest: (action, target, alert key). `_held` counts them per (action, target).
        self._holds: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._held: dict[tuple[str, str], int] = {}
        self._logged: OrderedDict[str, None] = OrderedDict()
        self._counter = Counter(METRIC_ALERTS, "Alertmanager alerts received, by action, status and outcome.",
                                ["action", "status", "outcome"],
                                registry=registry if registry is not None else CollectorRegistry())

    async def handle(self, request: web.Request) -> web.Response:
        # aiohttp keeps undecodable header bytes as surrogates: encode them back, never raise (500)
        got = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(got, self._expected):
            return web.json_response({"error": "missing or wrong bearer token"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="renderwatch-healer"'})
        try:
            raw = await request.read()
            note = parse_notification(json.loads(raw))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            reason = str(e) if isinstance(e, PayloadError) else f"body is not JSON: {e}"
            log.warning("alertmanager: rejected payload: %s", reason)
            return web.json_response({"error": reason}, status=400)
        results = []
        for d in decide(note, self.rules):
            outcome = await self._execute(d)
            action = d.rule.action if d.rule else "none"
            self._counter.labels(action, d.alert.status, outcome).inc()
            results.append({"alertname": d.alert.alertname, "status": d.alert.status, "action": d.call,
                            "target": d.target, "outcome": outcome})
        return web.json_response({"status": "ok", "results": results})

    async def _execute(self, d: Decision) -> str:
        if d.outcome == "unknown":
            self._log_once(d.alert.key, "alertmanager: no rule for %s %s; acknowledged",
                           d.alert.alertname or "<no alertname>", dict(d.alert.labels))
            return "unknown"
        if d.outcome == "no_label":
            assert d.rule is not None
            self._log_once(d.alert.key, "alertmanager: %s matched rule %s but has none of labels %s",
                           d.alert.alertname, d.rule.action, list(d.rule.labels))
            return "no_label"
        if d.outcome == "nothing" or d.call is None or d.target is None or d.rule is None:
            return "nothing"
        hold = (d.rule.action, d.target)
        if d.alert.status == "firing":
            key = (d.call, d.target, d.alert.key)
            if key in self._acted:
                return "duplicate"
            self._acted[key] = None
            while len(self._acted) > self._memory:
                self._acted.popitem(last=False)
        else:
            # Undo only when no other firing alert still holds this target (two alerts on one GPU).
            self._release(hold, d.alert.key)
            if self._held.get(hold):
                return "held"
            for k in [k for k in self._acted if k[1] == d.target and k[2] == d.alert.key]:
                self._acted.pop(k, None)
        try:
            result = getattr(self.actions, d.call)(d.target)
            if inspect.isawaitable(result):
                result = await result
        except Exception:  # noqa: BLE001 - a failing action is logged; Alertmanager gets its 200 anyway
            if d.alert.status == "firing":   # let Alertmanager's next re-send try again
                self._acted.pop((d.call, d.target, d.alert.key), None)
            log.exception("alertmanager: %s(%r) for %s failed", d.call, d.target, d.alert.alertname)
            return "failed"
        if result is False:
            # No such target here (a GPU this host does not have): nothing to hold, nothing to undo later.
            self._log_once(d.alert.key, "alertmanager: %s %s → %s(%r): no such target on this host",
                           d.alert.alertname, d.alert.status, d.call, d.target)
            return "no_target"
        if d.alert.status == "firing" and ACTIONS[d.rule.action][1] is not None:
            self._hold(hold, d.alert.key)
        log.info("alertmanager: %s %s → %s(%r)", d.alert.alertname, d.alert.status, d.call, d.target)
        return "done"

    def _hold(self, hold: tuple[str, str], alert_key: str) -> None:
        entry = (*hold, alert_key)
        if entry in self._holds:
            return
        self._holds[entry] = None
        self._held[hold] = self._held.get(hold, 0) + 1
        while len(self._holds) > self._memory:      # the oldest hold goes: its resolve then undoes at once
            old, _ = self._holds.popitem(last=False)
            self._forget((old[0], old[1]))

    def _release(self, hold: tuple[str, str], alert_key: str) -> None:
        if self._holds.pop((*hold, alert_key), False) is None:
            self._forget(hold)

    def _forget(self, hold: tuple[str, str]) -> None:
        n = self._held.get(hold, 0) - 1
        if n > 0:
            self._held[hold] = n
        else:
            self._held.pop(hold, None)

    @property
    def holds(self) -> int:
        """How many firing alerts hold a target now (bounded by `memory`)."""
        return len(self._holds)

    def _log_once(self, key: str, msg: str, *args: Any) -> None:
        if key in self._logged:
            return
        self._logged[key] = None
        while len(self._logged) > self._memory:
            self._logged.popitem(last=False)
        log.info(msg, *args)


def add_alertmanager_routes(app: web.Application, *, token: str, rules: Sequence[AlertRule] = DEFAULT_RULES,
                            actions: AlertActions, path: str = ALERTMANAGER_PATH,
                            registry: CollectorRegistry | None = None) -> AlertmanagerReceiver:
    """Mount `POST path` (default /api/v1/alertmanager) on the healer's app; returns the receiver."""
    receiver = AlertmanagerReceiver(token=token, rules=rules, actions=actions, registry=registry)
    app.router.add_post(path, receiver.handle)
    return receiver
