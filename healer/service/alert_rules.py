"""Alert rules: which Alertmanager alert calls which healer action (`[[healer.alert_rules]]`).

Pure data and matching, no web server: the healer's configuration validates the rules at load
without importing aiohttp (a CLI render's start time). `healer.service.alerts` receives the alerts.

Usage::

    rules = load_alert_rules([{"alertname": "RenderStalled", "action": "restart_job", "labels": ["job"]}])
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# action name → (method on firing, method on resolved or None)
ACTIONS: Mapping[str, tuple[str, str | None]] = {
    "restart_job": ("restart_job", None),
    "pause_gpu": ("pause_gpu", "resume_gpu"),
}
_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')


@dataclass(frozen=True)
class Matcher:
    """An Alertmanager-style label matcher: name, op (=, !=, =~, !~), value (regexes fully anchored)."""

    name: str
    op: str
    value: str
    _re: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str, where: str = "matcher") -> Matcher:
        m = _MATCHER.match(text) if isinstance(text, str) else None
        if not m:
            raise ValueError(f'{where}: expected name="value" (ops =, !=, =~, !~), got {text!r}')
        name, op, value = m.group(1), m.group(2), m.group(3).replace('\\"', '"')
        rx = None
        if op in ("=~", "!~"):
            try:
                rx = re.compile(f"(?:{value})")
            except re.error as e:
                raise ValueError(f"{where}: bad regex {value!r}: {e}") from None
        return cls(name, op, value, rx)

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.name, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        assert self._re is not None
        hit = self._re.fullmatch(v) is not None
        return hit if self.op == "=~" else not hit


@dataclass(frozen=True)
class AlertRule:
    alertname: str
    action: str
    labels: tuple[str, ...]
    matchers: tuple[Matcher, ...] = ()

    @classmethod
    def from_mapping(cls, m: Any, where: str = "rule") -> AlertRule:
        if not isinstance(m, Mapping):
            raise ValueError(f"{where}: expected a table")
        name = m.get("alertname")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}.alertname: expected a non-empty string")
        action = m.get("action")
        if action not in ACTIONS:
            raise ValueError(f"{where}.action: expected one of {', '.join(ACTIONS)}, got {action!r}")
        labels = m.get("labels", m.get("label"))
        if isinstance(labels, str):
            labels = [labels]
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
            raise ValueError(f"{where}.labels: expected a non-empty list of label names")
        matchers = m.get("matchers", [])
        if not isinstance(matchers, list):
            raise ValueError(f"{where}.matchers: expected a list of matcher strings")
        return cls(name, str(action), tuple(labels),
                   tuple(Matcher.parse(x, f"{where}.matchers[{i}]") for i, x in enumerate(matchers)))

    def matches(self, labels: Mapping[str, str]) -> bool:
        return labels.get("alertname") == self.alertname and all(mt.matches(labels) for mt in self.matchers)


# GPUOverheating pauses placement on that GPU (healer.service.gpus) until the alert resolves.
DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule("RenderStalled", "restart_job", ("job",)),
    AlertRule("GPUOverheating", "pause_gpu", ("uuid", "gpu")),
)


def load_alert_rules(data: Any, where: str = "healer.alert_rules") -> tuple[AlertRule, ...]:
    """Rules from config (a list of tables); None gives DEFAULT_RULES. ValueError names the key."""
    if data is None:
        return DEFAULT_RULES
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected a list of tables")
    return tuple(AlertRule.from_mapping(r, f"{where}[{i}]") for i, r in enumerate(data))


# -- the payload (pure) ----------------------------------------------------------------------------------------
