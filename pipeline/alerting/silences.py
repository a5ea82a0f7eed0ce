"""Silences: mute notifications of matching alerts for a while. Silenced alerts are still
evaluated and published, flagged ``silenced`` with the silence ids.

This module keeps the set in memory and knows what is active at a time; storing it
durably (a compacted topic, a file) is the adapter's job, through :meth:`Silences.to_builtins`
and :meth:`Silences.from_builtins`.

>>> s = Silences()
>>> sil = new_silence(["model=gpt-chat", "region=~eu-.*"], duration="2h", now=1000.0,
...                   created_by="ops", comment="deploy", silence_id="s1")
>>> s.add(sil)
>>> s.muting({"alertname": "HighP99Latency", "model": "gpt-chat", "region": "eu-west"}, 2000.0)
['s1']
>>> s.muting({"model": "gpt-chat", "region": "us-east"}, 2000.0)
[]
>>> _ = s.expire("s1", now=3000.0)
>>> s.muting({"model": "gpt-chat", "region": "eu-west"}, 3000.0), len(s.active(3000.0))
([], 0)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from pipeline.alerting.durations import parse_duration
from pipeline.alerting.matchers import LabelMatcher, compile_matchers, parse_matcher
from schemas.alert import Matcher, Silence

__all__ = ["Silences", "new_silence", "validate_silence"]


def validate_silence(silence: Silence) -> LabelMatcher:
    """Check a silence (regexes compile, end after start, does not match every alert) and
    return its compiled matchers. Raises ``ValueError`` saying what is wrong."""
    if not silence.matchers:
        raise ValueError("a silence needs at least one matcher")
    matcher = compile_matchers(silence.matchers)
    if all(compile_matchers([m]).matches_empty() for m in silence.matchers):
        raise ValueError("every matcher matches the empty string, so the silence would "
                         "mute every alert; add a matcher such as alertname=… or model=…")
    if silence.ends_at <= silence.starts_at:
        raise ValueError("a silence must end after it starts")
    return matcher


def new_silence(matchers: Sequence[Matcher | str], *, duration: str | float, now: float,
                created_by: str = "", comment: str = "", silence_id: str | None = None,
                starts_at: float | None = None) -> Silence:
    """A validated silence from ``--match`` texts (or :class:`Matcher`) lasting ``duration``
    from ``starts_at`` (default ``now``)."""
    ms = [parse_matcher(m) if isinstance(m, str) else m for m in matchers]
    start = now if starts_at is None else starts_at
    silence = Silence(id=silence_id or uuid.uuid4().hex, matchers=ms, starts_at=start,
                      ends_at=start + parse_duration(duration), created_by=created_by,
                      comment=comment)
    validate_silence(silence)
    return silence


class Silences:
    """The silences, by id."""

    def __init__(self, silences: Iterable[Silence] = ()) -> None:
        self._silences: dict[str, Silence] = {}
        self._matchers: dict[str, LabelMatcher] = {}
        for s in silences:
            self.add(s)

    def __len__(self) -> int:
        return len(self._silences)

    def add(self, silence: Silence) -> None:
        """Add, or replace the silence with the same id."""
        self._matchers[silence.id] = validate_silence(silence)
        self._silences[silence.id] = silence

    def get(self, silence_id: str) -> Silence | None:
        return self._silences.get(silence_id)

    def expire(self, silence_id: str, now: float) -> Silence:
        """End the silence at ``now`` (kept, so the record shows it). ``KeyError`` if unknown."""
        old = self._silences[silence_id]
        ends = min(old.ends_at, max(now, old.starts_at))
        expired = msgspec.structs.replace(old, ends_at=ends)
        self._silences[silence_id] = expired
        return expired

    def all(self) -> list[Silence]:
        """Every silence, expired ones included, by start time."""
        return sorted(self._silences.values(), key=lambda s: (s.starts_at, s.id))

    def active(self, now: float) -> list[Silence]:
        """Silences in effect at ``now``: ``starts_at <= now < ends_at``."""
        return [s for s in self.all() if s.starts_at <= now < s.ends_at]

    def muting(self, labels: Mapping[str, str], now: float) -> list[str]:
        """Ids of the silences active at ``now`` that match ``labels``."""
        return [s.id for s in self.active(now) if self._matchers[s.id].matches(labels)]

    def prune(self, now: float, retention: float) -> int:
        """Forget silences that ended more than ``retention`` seconds before ``now``."""
        old = [i for i, s in self._silences.items() if s.ends_at <= now - retention]
        for i in old:
            del self._silences[i], self._matchers[i]
        return len(old)

    def to_builtins(self) -> list[dict[str, Any]]:
        return msgspec.to_builtins(self.all())

    @classmethod
    def from_builtins(cls, data: Iterable[Mapping[str, Any]]) -> Silences:
        return cls(msgspec.convert(list(data), type=list[Silence]))
