"""Healing policies as data, and the pure decision: given the job state and an error, what next.

Usage::

    policy = Policy.default().with_overrides({"segfault": {"max_restarts": 3}}, max_restarts=None)
    action = plan(ledger_state, error, policy, history, now=time.time())
    action.kind      # "launch" | "complete" | "give_up"

`plan` does no I/O: the supervisor executes the action (sleep `delay_s`, launch Blender for
`frames` with `device`/`threads`), so every decision is testable with values.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace

from healer.diagnosis.catalog import REPORT_TYPES, TYPES
from healer.diagnosis.errors import GpuError, GpuOomError, RenderError

KINDS = ("restart", "retry_gpu_then_cpu", "restart_fewer_threads", "fail_fast", "report_only")
GPU_FAULTS = (GpuOomError.type, GpuError.type)     # a frame that failed on the GPU this often renders on the CPU


@dataclass(frozen=True)
class Rule:
    """What to do about one error type."""

    kind: str = "restart"
    max_restarts: int = 5          # restarts allowed inside window_s (all causes count), then give up
    window_s: float = 3600.0
    backoff_base_s: float = 1.0    # delay before restart n (n >= 1 in the window): base * 2**(n-1)
    backoff_max_s: float = 60.0
    jitter: float = 0.2            # +- fraction of the delay, so a farm's nodes do not restart in step
    message: str = ""              # for fail_fast / report_only: what the user should fix

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r}: must be one of {', '.join(KINDS)}")
        numbers = (self.max_restarts, self.window_s, self.backoff_base_s, self.backoff_max_s, self.jitter)
        if not all(type(x) in (int, float) and math.isfinite(x) for x in numbers):   # NaN compares false to all
            raise ValueError("max_restarts, window_s, backoff_base_s, backoff_max_s and jitter must be finite numbers")
        if self.max_restarts < 0 or self.window_s <= 0 or self.backoff_base_s < 0 or self.backoff_max_s < 0:
            raise ValueError("max_restarts, window_s, backoff_base_s and backoff_max_s must be >= 0 (window > 0)")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter {self.jitter}: must be between 0 and 1")


# The default rule of every type, from the catalog (its `policy`, `fix` and `rule` columns).
DEFAULT_RULES: dict[str, Rule] = {
    t.id: Rule(t.policy, message=t.fix, **t.rule) for t in TYPES.values() if t.policy
}


@dataclass(frozen=True)
class Policy:
    rules: Mapping[str, Rule] = field(default_factory=lambda: dict(DEFAULT_RULES))
    strict: bool = False

    @classmethod
    def default(cls) -> Policy:
        return cls()

    def rule_for(self, error_type: str) -> Rule:
        return self.rules.get(error_type) or self.rules.get("unknown") or Rule()

    def with_overrides(self, overrides: Mapping[str, Mapping[str, object]] | None = None, *,
                       max_restarts: int | None = None, backoff_base_s: float | None = None,
                       strict: bool | None = None) -> Policy:
        """A copy with per-type overrides ({"segfault": {"max_restarts": 2}}); errors name the key."""
        rules = dict(self.rules)
        names = {f.name for f in fields(Rule)}
        for type_id, values in (overrides or {}).items():
            if type_id not in TYPES:
                raise ValueError(f"policy.{type_id}: unknown error type; valid: {', '.join(TYPES)}")
            for key in values:
                if key not in names:
                    raise ValueError(f"policy.{type_id}.{key}: unknown setting; valid: {', '.join(sorted(names))}")
            try:
                rules[type_id] = replace(self.rule_for(type_id) if type_id in rules else Rule(), **values)  # type: ignore[arg-type]
            except (TypeError, ValueError) as e:
                raise ValueError(f"policy.{type_id}: {e}") from None
        for type_id, rule in list(rules.items()):
            if max_restarts is not None and rule.kind != "fail_fast":
                rule = replace(rule, max_restarts=max_restarts)
            if backoff_base_s is not None:
                rule = replace(rule, backoff_base_s=backoff_base_s)
            rules[type_id] = rule
        return Policy(rules=rules, strict=self.strict if strict is None else strict)

    def table(self) -> list[dict]:
        return [{"type": t, **{f.name: getattr(r, f.name) for f in fields(Rule)}} for t, r in sorted(self.rules.items())]


@dataclass(frozen=True)
class Outcome:
    """One finished attempt, as the policy sees it."""

    ended_at: float
    error_type: str | None
    frame: int | None = None
    frames_planned: tuple[int, ...] = ()
    frames_rendered: tuple[int, ...] = ()
    device: str | None = None
    threads: int | None = None
    frame_age_s: float | None = None    # how far into `frame` it failed (None: not known)


@dataclass(frozen=True)
class JobState:
    """What the policy needs from the ledger."""

    missing: tuple[int, ...]
    warnings: tuple[str, ...] = ()     # reportable error types seen (python_error, missing_file)


@dataclass(frozen=True)
class Action:
    kind: str                          # "launch" | "complete" | "give_up"
    frames: tuple[int, ...] = ()
    delay_s: float = 0.0
    reason: str = ""
    error_type: str | None = None
    device: str | None = None          # "CPU": force Cycles onto the CPU for this attempt
    threads: int | None = None         # -t N for this attempt
    restart: bool = False              # counts against max_restarts
    strict: bool = False               # give_up: only --strict fails it (every frame rendered; exits EXIT_STRICT)


# The same type at the same frame this many attempts in a row is not a flake. Two are not enough:
# a signal from outside (a user's kill, a chaos SIGSEGV) is told from a crash of the scene only by
# where into the frame it lands, and in a short frame every point is "the same point" (chaos seed
# 861119098: two outside SIGSEGVs early in a 0.45 s frame gave up). Three such in a row are not chance.
DETERMINISTIC_AFTER = 3
SAME_POINT_S, SAME_POINT_FRACTION = 0.5, 0.25   # ...and this close into the frame (seconds, or a fraction)


def plan(state: JobState, error: RenderError | None, policy: Policy, history: Sequence[Outcome], *,
         now: float, cpu_count: int = 1, rand: Callable[[], float] = random.random,
         earlier: Sequence[Outcome] = ()) -> Action:
    """Decide the next step after an attempt ended (error = its classification, None = clean exit).

    `history`: this run's attempts (the one that just ended last); `earlier`: the attempts of earlier
    runs of the same job (a farm's retries of the task), read only to see a deterministic failure.
    """
    etype = error.type if error is not None else "ok"
    missing = tuple(state.missing)
    if not missing:
        if policy.strict and (state.warnings or etype in REPORT_TYPES):
            seen = sorted(set(state.warnings) | ({etype} if etype in REPORT_TYPES else set()))
            return Action("give_up", reason=f"--strict: every frame rendered but the render reported "
                          f"{', '.join(seen)}", error_type=seen[0], strict=True)
        return Action("complete", reason="every requested frame has a verified output")

    last = history[-1] if history else None
    if (etype == "ok" or (error is not None and not error.fatal)) and last is not None \
            and set(last.frames_planned) and set(last.frames_planned) <= set(last.frames_rendered):
        # The attempt did all it was asked (e.g. one frame on the CPU): carry on with the rest.
        return Action("launch", frames=missing, reason="continue with the remaining frames")
    if etype == "ok" or (error is not None and not error.fatal and etype not in DEFAULT_RULES):
        etype = "unknown"

    rule = policy.rule_for(etype)
    summary = (error.summary if error is not None and error.summary else etype)
    if error is not None and not error.fatal and rule.kind in ("fail_fast", "report_only"):
        # A non-fatal finding (a missing texture, a handler traceback) did not stop the render by
        # itself: the frames are missing for another reason, so restart as for an unexplained exit.
        rule = policy.rule_for("unknown")
        etype = "unknown"
    if rule.kind == "fail_fast":
        return Action("give_up", reason=f"{etype}: {summary}; {rule.message}".rstrip("; "), error_type=etype)
    if rule.kind == "report_only":
        return Action("give_up", reason=f"{etype} stopped the render: {summary}; {rule.message}".rstrip("; "),
                      error_type=etype)

    if rule.kind == "restart" and error is not None and error.frame is not None:
        run = _same_failure_in_a_row([*earlier, *history], etype, error.frame)
        if run >= DETERMINISTIC_AFTER:
            return Action("give_up", error_type=etype,
                          reason=f"{etype} at frame {error.frame} on {run} attempts in a row: it fails the same "
                                 f"way every time, so it is not retried again: {summary}")

    # An attempt that exited cleanly but rendered none of its frames is a failure too (else a
    # Blender that keeps "succeeding" without output would be restarted forever).
    recent = [o for o in history if (o.error_type not in (None, "ok") or not o.frames_rendered)
              and now - o.ended_at <= rule.window_s]
    if len(recent) > rule.max_restarts:
        return Action("give_up", error_type=etype,
                      reason=f"gave up after {rule.max_restarts} restarts in {_dur(rule.window_s)}: "
                             f"last error {etype}: {summary}")
    delay = backoff(rule, _consecutive_failures(history), rand)
    frames, device, threads = missing, None, last.threads if last else None
    if rule.kind == "retry_gpu_then_cpu":
        frame = error.frame if error is not None and error.frame is not None else (last.frame if last else None)
        same = [o for o in history if o.error_type in GPU_FAULTS and (frame is None or o.frame == frame)]
        if len(same) >= 2 and (last is None or last.device != "CPU"):
            target = frame if frame is not None and frame in missing else missing[0]
            return Action("launch", frames=(target,), delay_s=0.0, device="CPU", threads=threads, restart=True,
                          error_type=etype, reason=f"{etype} twice on frame {target}: rendering it on the CPU")
        return Action("launch", frames=frames, delay_s=delay, threads=threads, restart=True, error_type=etype,
                      reason=f"{etype}: retrying on the GPU once")
    if rule.kind == "restart_fewer_threads":
        current = (last.threads if last and last.threads else cpu_count)
        if current <= 1:
            return Action("give_up", error_type=etype, reason=f"{etype} with a single render thread: {summary}")
        threads = max(1, current // 2)
        return Action("launch", frames=frames, delay_s=delay, threads=threads, restart=True, error_type=etype,
                      reason=f"{etype}: restarting with {threads} render threads (was {current})")
    return Action("launch", frames=frames, delay_s=delay, device=device, threads=threads, restart=True,
                  error_type=etype, reason=f"{etype}: restarting for {len(frames)} missing frames")


def _same_failure_in_a_row(outcomes: Sequence[Outcome], etype: str, frame: int) -> int:
    """How many of the last attempts failed with `etype` at `frame` at about the same point into it,
    counting back from the newest. A crash of the scene repeats where it happened (a handler, a tile);
    a signal from outside (a chaos SIGSEGV, a user's kill) lands anywhere: two such at the same frame
    but seconds apart into it are not the same failure."""
    n, age = 0, None
    for o in reversed(outcomes):
        if o.error_type != etype or o.frame != frame:
            break
        if age is not None and o.frame_age_s is not None and not _same_point(age, o.frame_age_s):
            break
        age = o.frame_age_s if age is None else age
        n += 1
    return n


def _same_point(a: float, b: float) -> bool:
    return abs(a - b) <= max(SAME_POINT_S, SAME_POINT_FRACTION * max(a, b))


def backoff(rule: Rule, n: int, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter for the n-th consecutive failure (n >= 1)."""
    if n <= 0 or rule.backoff_base_s <= 0:
        return 0.0
    base = min(rule.backoff_max_s, rule.backoff_base_s * math.pow(2, min(n - 1, 30)))
    return max(0.0, base * (1 + rule.jitter * (2 * rand() - 1)))


def _consecutive_failures(history: Sequence[Outcome]) -> int:
    """Failures since the last attempt that rendered a frame (progress resets the backoff)."""
    n = 0
    for o in reversed(history):
        if o.error_type in (None, "ok"):
            break
        n += 1
        if o.frames_rendered:
            break
    return n


def _dur(s: float) -> str:
    return f"{s / 3600:g} h" if s >= 3600 else (f"{s / 60:g} min" if s >= 60 else f"{s:g} s")
