"""The hooks' loggers, with `logging` imported at the first message instead of at Blender's start.

Every Blender the healer starts loads the hooks before it renders, and importing `logging` is about
8 ms of that on a slow node (a farm task pays it every frame); the hooks log only when something is
wrong (an unreachable agent, a failed handler).

Usage::

    log = logger("renderwatch.hooks.spool")
    log.warning("renderwatch agent unreachable at %s", url)      # logging loads here, once
"""

from __future__ import annotations

from typing import Any


class _Logger:
    """`logging.getLogger(name)` on first use; every attribute is the real logger's."""

    __slots__ = ("_name",)

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import logging

        return getattr(logging.getLogger(self._name), attr)


def logger(name: str) -> Any:
    return _Logger(name)
