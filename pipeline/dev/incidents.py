"""Incidents injected into simulated traffic: a kind, a window of time, a model, a
factor (``"latency_spike@20+10:model=gpt-chat:factor=5"``), so detectors have
something to find. Pure: parsing, validation and the time mask.

Two families. *Traffic* incidents (:data:`TRAFFIC_KINDS`) change the inference events
themselves and are applied by :class:`pipeline.dev.simulate.TrafficModel`. *Quality*
incidents (:data:`QUALITY_KINDS`: ``accuracy_drop``, ``satisfaction_drop``) change how
good the answers are, which only delayed feedback reveals; they are applied by
:class:`pipeline.dev.feedback.FeedbackModel`, may name a ``version`` (a deploy), and the
traffic model refuses them rather than misread them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast, get_args

import numpy as np

__all__ = [
    "INCIDENT_KINDS",
    "QUALITY_KINDS",
    "TRAFFIC_KINDS",
    "Incident",
    "IncidentKind",
    "parse_incidents",
]

IncidentKind = Literal[
    "latency_spike", "error_burst", "feature_drift", "token_surge",
    "accuracy_drop", "satisfaction_drop",
]
INCIDENT_KINDS: tuple[str, ...] = get_args(IncidentKind)
TRAFFIC_KINDS: tuple[str, ...] = INCIDENT_KINDS[:4]  # applied by the traffic model
QUALITY_KINDS: tuple[str, ...] = INCIDENT_KINDS[4:]  # applied by the feedback model

# The meaning of ``factor`` per kind, and its default.
_DEFAULT_FACTOR: dict[str, float] = {
    "latency_spike": 5.0,  # latency multiplier
    "error_burst": 0.3,  # error probability during the burst
    "feature_drift": 3.0,  # prompt length multiplier (and a reversed categorical mix)
    "token_surge": 4.0,  # output token multiplier
    "accuracy_drop": 10.0,  # points of accuracy lost (percentage points, <= 100)
    "satisfaction_drop": 0.3,  # share of the good-satisfaction probability lost (<= 1)
}
_NUMBER = r"(\d+(?:\.\d+)?)s?"
_INCIDENT_RE = re.compile(rf"(?P<kind>[a-z_]+)@{_NUMBER}\+{_NUMBER}(?P<opts>(?::[^:]*)*)")
_INCIDENT_SYNTAX = "KIND@OFFSET+DURATION[:model=NAME][:version=V][:factor=X]"
_OPTIONS = ("model", "version", "factor")


@dataclass(frozen=True, slots=True)
class Incident:
    """A change of traffic during ``[offset, offset + duration)`` seconds from the start.

    ``model`` limits it to one model name (None: every model), ``version`` (quality
    kinds only) to one model version. ``factor`` (None: the kind's default) is the
    latency multiplier of ``latency_spike`` (5), the error probability of
    ``error_burst`` (0.3), the prompt-length multiplier of ``feature_drift`` (3, which
    also reverses the language and client mix), the output-token multiplier of
    ``token_surge`` (4), the points of accuracy lost in ``accuracy_drop`` (10: 0.85 →
    0.75) and the share of the good-satisfaction probability lost in
    ``satisfaction_drop`` (0.3: 0.8 → 0.56).
    """

    kind: IncidentKind
    offset: float
    duration: float
    model: str | None = None
    factor: float | None = None  # always a float after construction
    version: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in INCIDENT_KINDS:
            raise ValueError(f"unknown incident kind {self.kind!r}; use one of {INCIDENT_KINDS}")
        if self.factor is None:
            object.__setattr__(self, "factor", _DEFAULT_FACTOR[self.kind])
        factor = float(cast(float, self.factor))
        object.__setattr__(self, "factor", factor)
        if not (math.isfinite(self.offset) and self.offset >= 0):
            raise ValueError(f"incident offset must be >= 0 seconds, got {self.offset}")
        if not (math.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f"incident duration must be > 0 seconds, got {self.duration}")
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"incident factor must be > 0, got {factor}")
        if self.kind == "error_burst" and factor > 1:
            raise ValueError(f"error_burst factor is an error probability <= 1, got {factor}")
        if self.kind == "accuracy_drop" and factor > 100:
            raise ValueError(f"accuracy_drop factor is points of accuracy <= 100, got {factor}")
        if self.kind == "satisfaction_drop" and factor > 1:
            raise ValueError(f"satisfaction_drop factor is a share <= 1, got {factor}")
        if self.model is not None and not self.model:
            raise ValueError("incident model must not be empty")
        if self.version is not None:
            if not self.version:
                raise ValueError("incident version must not be empty")
            if self.kind not in QUALITY_KINDS:
                raise ValueError(f"version= applies to quality incidents {QUALITY_KINDS}, "
                                 f"not {self.kind}")

    @property
    def end(self) -> float:
        return self.offset + self.duration

    @property
    def magnitude(self) -> float:
        """``factor`` as a float (it is never None once constructed)."""
        assert self.factor is not None
        return self.factor

    def window(self, offsets: np.ndarray) -> np.ndarray:
        """Boolean mask of the offsets inside this incident."""
        return (offsets >= self.offset) & (offsets < self.end)

    def applies_to(self, model: str, version: str = "") -> bool:
        """Whether events of this model (and version) are affected."""
        return self.model in (None, model) and self.version in (None, version)

    def __str__(self) -> str:
        text = f"{self.kind}@{self.offset:g}+{self.duration:g}"
        if self.model is not None:
            text += f":model={self.model}"
        if self.version is not None:
            text += f":version={self.version}"
        return text + f":factor={self.magnitude:g}"

    @classmethod
    def parse(cls, text: str) -> Incident:
        """Parse ``KIND@OFFSET+DURATION[:model=NAME][:version=V][:factor=X]`` (seconds; ``s``
        optional).

        >>> Incident.parse("latency_spike@20+10:model=gpt-chat:factor=5")  # doctest: +ELLIPSIS
        Incident(kind='latency_spike', offset=20.0, duration=10.0, model='gpt-chat', factor=5.0...)
        >>> Incident.parse("accuracy_drop@60+600:model=intent-clf:version=2.1:factor=5").version
        '2.1'
        """
        match = _INCIDENT_RE.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"bad incident {text!r}: expected {_INCIDENT_SYNTAX}")
        kind, offset, duration, opts = match.group("kind", 2, 3, "opts")
        if kind not in INCIDENT_KINDS:
            kinds = ", ".join(INCIDENT_KINDS)
            raise ValueError(f"bad incident {text!r}: unknown kind {kind!r}; use one of {kinds}")
        options: dict[str, str] = {}
        for item in opts.split(":")[1:]:
            key, sep, value = item.partition("=")
            if not sep or not value:
                raise ValueError(f"bad incident {text!r}: option {item!r} is not key=value")
            if key not in _OPTIONS:
                raise ValueError(
                    f"bad incident {text!r}: unknown option {key!r} ({', '.join(_OPTIONS)})")
            if key in options:
                raise ValueError(f"bad incident {text!r}: option {key!r} given twice")
            options[key] = value
        factor: float | None = None
        if "factor" in options:
            try:
                factor = float(options["factor"])
            except ValueError:
                raise ValueError(
                    f"bad incident {text!r}: factor {options['factor']!r} is not a number"
                ) from None
        try:
            kind_ = cast(IncidentKind, kind)
            return cls(kind_, float(offset), float(duration), options.get("model"), factor,
                       options.get("version"))
        except ValueError as exc:
            raise ValueError(f"bad incident {text!r}: {exc}") from None


def parse_incidents(
    items: Iterable[Incident | str], kinds: tuple[str, ...] = TRAFFIC_KINDS
) -> tuple[Incident, ...]:
    """Incidents (objects or text) of the given ``kinds``; another kind is a ValueError
    that says which model applies it.

    >>> parse_incidents(["accuracy_drop@0+60"], kinds=("accuracy_drop",))[0].factor
    10.0
    >>> parse_incidents(["accuracy_drop@0+60"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: accuracy_drop@0+60:factor=10 is a quality incident: the feedback model ...
    """
    out = tuple(i if isinstance(i, Incident) else Incident.parse(i) for i in items)
    for inc in out:
        if inc.kind not in kinds:
            family = ("a quality incident: the feedback model (pipeline.dev.feedback, "
                      "`inferwatch simulate --feedback`) applies it"
                      if inc.kind in QUALITY_KINDS else
                      "a traffic incident: the traffic model (pipeline.dev.simulate) applies it")
            raise ValueError(f"{inc} is {family}")
    return out
