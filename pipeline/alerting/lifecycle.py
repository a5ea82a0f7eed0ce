"""The life of one alert — one rule on one series: inactive → pending → firing → resolved.

Driven by evaluation times (window ends, event time), like Prometheus rule evaluation:

- the condition holds: inactive/resolved → pending (or straight to firing when ``for`` is
  0); pending → firing once it has held for ``for`` seconds (measured between evaluation
  times: with 1-minute windows, ``for: 2m`` fires on the third holding window);
- it stops holding: pending → inactive (``cancelled``, nothing was announced); firing →
  resolved, but only after it has not held for ``keep_firing_for`` seconds;
- while firing, a ``repeat`` reminder every ``repeat_interval`` seconds.

One ``firing`` per episode, never two. Evaluation times must increase: an older time is
ignored; the *same* time again (a replay after a crash, before the offset commit) returns
exactly the transitions that time produced the first time, so a transition whose event
was lost in the crash is published again, identical (consumers deduplicate on
fingerprint, state and ``starts_at``), and nothing is announced twice otherwise.

State checkpoints with :meth:`Lifecycle.to_builtins` / :meth:`Lifecycle.from_builtins`:
a restored firing alert neither fires again nor is forgotten.

>>> lc = Lifecycle(for_=120)
>>> [t.kind for now in (60, 120, 180, 240) for t in lc.evaluate(now, True, 2500.0)]
['pending', 'firing']
>>> lc.state, lc.evaluate(300, False)[0].kind
('firing', 'resolved')
>>> fingerprint("HighP99Latency", {"model": "m", "operation": "chat"}) == \\
...     fingerprint("HighP99Latency", {"operation": "chat", "model": "m"})
True
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

__all__ = ["LIFECYCLE_FORMAT", "Lifecycle", "State", "Transition", "TransitionKind",
           "fingerprint"]

LIFECYCLE_FORMAT = 1
State = Literal["inactive", "pending", "firing", "resolved"]
TransitionKind = Literal["pending", "cancelled", "firing", "repeat", "resolved"]


def fingerprint(rule: str, series_labels: Mapping[str, str]) -> str:
    """Stable id of the alert of ``rule`` on a series: the first 16 hex digits of the
    SHA-256 of the rule name and the series labels sorted by name.

    Independent of label order, process and Python version (no ``hash()``).

    >>> fingerprint("HighP99Latency", {"model": "m"})
    'd776db060319a0ed'
    """
    payload = msgspec.json.encode([rule, sorted(series_labels.items())])
    return hashlib.sha256(payload).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state at evaluation time ``at``. ``starts_at`` is when the episode
    started (pending: when it began to hold; firing/repeat/resolved: when it fired);
    ``ends_at`` is set on ``resolved``. ``value`` is the latest measured value of the
    episode (the first transition of an episode carries its own evaluation's value, which
    may be unknown: never one measured before the episode)."""

    kind: TransitionKind
    at: float
    starts_at: float
    ends_at: float | None = None
    value: float | None = None


_IDLE = ("inactive", "resolved")  # no episode under way
_FIELDS = ("state", "active_at", "fired_at", "resolved_at", "last_eval", "keep_since",
           "last_notified", "value")


class Lifecycle:
    """State machine of one alert; configuration from the rule, state checkpointable."""

    __slots__ = ("_replay", "active_at", "fired_at", "for_", "keep_firing_for", "keep_since",
                 "last_eval", "last_notified", "repeat_interval", "resolved_at", "state",
                 "value")

    def __init__(self, for_: float = 0.0, keep_firing_for: float = 0.0,
                 repeat_interval: float | None = None) -> None:
        self.for_ = for_
        self.keep_firing_for = keep_firing_for
        self.repeat_interval = repeat_interval
        self.state: State = "inactive"
        self.active_at: float | None = None  # the condition has held since
        self.fired_at: float | None = None  # start of the current/last firing episode
        self.resolved_at: float | None = None
        self.last_eval = -math.inf
        self.keep_since: float | None = None  # firing, but not holding since
        self.last_notified: float | None = None
        self.value: float | None = None
        self._replay: tuple[Transition, ...] = ()

    def __repr__(self) -> str:
        return f"Lifecycle(state={self.state!r}, fired_at={self.fired_at!r})"

    @property
    def firing(self) -> bool:
        return self.state == "firing"

    def replays(self) -> bool:
        """Its last evaluation had transitions (a replay of that time returns them)."""
        return bool(self._replay)

    @property
    def idle(self) -> bool:
        """No episode under way (inactive or resolved): an evaluation that does not hold
        changes nothing that matters (the value and the time are not state then)."""
        return self.state in _IDLE

    def evaluate(self, now: float, holds: bool | None, value: float | None = None
                 ) -> list[Transition]:
        """Advance to evaluation time ``now``; ``holds`` ``None`` (unknown) does not hold.

        Returns the transitions, usually none. See the module doc for replays.
        """
        if now < self.last_eval:
            return []
        if now == self.last_eval:
            return list(self._replay)
        self.last_eval = now
        if value is not None or self.state in _IDLE:
            self.value = value  # an episode starts with its own value, never an older one
        out = self._hold(now) if holds is True else self._release(now)
        self._replay = tuple(out)
        return out

    def _fire(self, now: float) -> Transition:
        self.state = "firing"
        self.fired_at = self.last_notified = now
        self.keep_since = None
        self.resolved_at = None
        return Transition("firing", now, now, None, self.value)

    def _repeat(self, now: float) -> list[Transition]:
        if (self.repeat_interval and self.last_notified is not None
                and now - self.last_notified >= self.repeat_interval):
            self.last_notified = now
            assert self.fired_at is not None
            return [Transition("repeat", now, self.fired_at, None, self.value)]
        return []

    def _hold(self, now: float) -> list[Transition]:
        if self.state in ("inactive", "resolved"):
            self.active_at = now
            if self.for_ <= 0:
                return [self._fire(now)]
            self.state = "pending"
            return [Transition("pending", now, now, None, self.value)]
        if self.state == "pending":
            assert self.active_at is not None
            return [self._fire(now)] if now - self.active_at >= self.for_ else []
        self.keep_since = None  # firing and holding
        return self._repeat(now)

    def _release(self, now: float) -> list[Transition]:
        if self.state == "pending":
            self.state = "inactive"
            started, self.active_at = self.active_at, None
            assert started is not None
            return [Transition("cancelled", now, started, now, self.value)]
        if self.state != "firing":
            return []
        if self.keep_firing_for > 0:
            if self.keep_since is None:
                self.keep_since = now
            if now - self.keep_since < self.keep_firing_for:
                return self._repeat(now)
        self.state = "resolved"
        self.resolved_at = now
        self.active_at = self.keep_since = None
        assert self.fired_at is not None
        return [Transition("resolved", now, self.fired_at, now, self.value)]

    # ----------------------------------------------------------------------- checkpoint
    def to_builtins(self) -> dict[str, Any]:
        """Checkpoint form (msgpack/JSON safe), including the last evaluation's
        transitions so that a replay after restore returns them again."""
        inf = -math.inf  # written as None (the fields of _FIELDS, spelt out: it is hot)
        return {
            "format": LIFECYCLE_FORMAT, "state": self.state,
            "active_at": None if self.active_at == inf else self.active_at,
            "fired_at": None if self.fired_at == inf else self.fired_at,
            "resolved_at": None if self.resolved_at == inf else self.resolved_at,
            "last_eval": None if self.last_eval == inf else self.last_eval,
            "keep_since": None if self.keep_since == inf else self.keep_since,
            "last_notified": None if self.last_notified == inf else self.last_notified,
            "value": None if self.value == inf else self.value,
            "replay": [[t.kind, t.at, t.starts_at, t.ends_at, t.value] for t in self._replay],
        }

    @classmethod
    def from_builtins(cls, data: Mapping[str, Any], for_: float = 0.0,
                      keep_firing_for: float = 0.0, repeat_interval: float | None = None
                      ) -> Lifecycle:
        """Restore a checkpoint with the rule's (possibly changed) configuration.

        >>> lc = Lifecycle(); _ = lc.evaluate(60, True, 1.0)
        >>> back = Lifecycle.from_builtins(lc.to_builtins())
        >>> back.state, back.evaluate(120, True, 1.0)
        ('firing', [])
        """
        if data.get("format") != LIFECYCLE_FORMAT:
            raise ValueError(f"unknown lifecycle format {data.get('format')!r}")
        lc = cls(for_, keep_firing_for, repeat_interval)
        state = data["state"]
        if state not in ("inactive", "pending", "firing", "resolved"):
            raise ValueError(f"unknown alert state {state!r}")
        for name in _FIELDS:
            setattr(lc, name, data.get(name))
        if lc.last_eval is None:
            lc.last_eval = -math.inf
        lc._replay = tuple(Transition(k, at, s, e, v) for k, at, s, e, v in data.get("replay", []))
        return lc
