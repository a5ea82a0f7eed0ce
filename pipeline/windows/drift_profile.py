"""What drift is monitored on, and the mergeable per-window histograms of it.

:class:`MonitorSpec` names the monitored distributions: each configured numeric and
categorical feature (``feature.<name>``), the prediction (categorical or numeric), the
confidence and the operational distributions of LLM serving (``latency_ms``,
``time_to_first_token_ms``, ``input_tokens``, ``output_tokens``, ``cost_usd``). Names are the
event's field names. :class:`DriftProfile` is what stage 1 keeps per (series, window): one
histogram per monitored name, filled a batch at a time and merged in stage 2.

A value of the wrong type for its declared kind (a string for a numeric feature) is not
guessed at: it is skipped and counted in ``DriftProfile.type_mismatches``. Numbers given to
a categorical name are counted under ``str(value)``.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import repeat
from operator import attrgetter
from typing import Any, Literal

import msgspec
import numpy as np

from pipeline.windows.histogram import (
    DEFAULT_MAX_CATEGORIES,
    DEFAULT_RELATIVE_ACCURACY,
    CategoricalHistogram,
    Histogram,
    Kind,
    NumericHistogram,
)
from schemas.event import InferenceEvent

__all__ = [
    "FEATURE_PREFIX",
    "OPERATIONAL",
    "DriftProfile",
    "HistogramsByName",
    "MonitorSpec",
    "histogram_from_builtins",
    "histogram_to_builtins",
]

FEATURE_PREFIX = "feature."
OPERATIONAL = ("latency_ms", "time_to_first_token_ms", "input_tokens", "output_tokens",
               "cost_usd")
PROFILE_FORMAT = 1


class MonitorSpec(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Which distributions of a series are monitored for drift.

    >>> spec = MonitorSpec(numeric_features=("age",), categorical_features=("country",))
    >>> spec.monitored()["feature.age"], spec.monitored()["prediction"]
    ('numeric', 'categorical')
    """

    numeric_features: tuple[str, ...] = ()
    categorical_features: tuple[str, ...] = ()
    prediction: Literal["categorical", "numeric", "none"] = "categorical"
    confidence: bool = True
    operational: bool = True
    relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY
    max_categories: int = DEFAULT_MAX_CATEGORIES

    def __post_init__(self) -> None:
        both = set(self.numeric_features) & set(self.categorical_features)
        if both:
            raise ValueError(f"features declared both numeric and categorical: {sorted(both)}")
        if not 0.0 < self.relative_accuracy < 1.0:
            raise ValueError(f"relative_accuracy must be in (0, 1), got {self.relative_accuracy}")
        if self.max_categories < 1:
            raise ValueError(f"max_categories must be >= 1, got {self.max_categories}")

    def monitored(self) -> dict[str, Kind]:
        """Monitored name → kind, in a stable order."""
        out: dict[str, Kind] = {}
        for name in self.numeric_features:
            out[FEATURE_PREFIX + name] = "numeric"
        for name in self.categorical_features:
            out[FEATURE_PREFIX + name] = "categorical"
        if self.prediction != "none":
            out["prediction"] = self.prediction
        if self.confidence:
            out["confidence"] = "numeric"
        if self.operational:
            out.update(dict.fromkeys(OPERATIONAL, "numeric"))
        return out

    def new_histogram(self, kind: Kind) -> Histogram:
        """An empty histogram of ``kind`` with this spec's accuracy/cap."""
        if kind == "numeric":
            return NumericHistogram(self.relative_accuracy)
        return CategoricalHistogram(self.max_categories)


def _raw_values(events: Sequence[InferenceEvent], name: str,
                features: list[dict[str, Any]] | None = None) -> list[Any]:
    """The values of ``name`` in ``events`` (``None`` where absent); ``map`` keeps the
    loop in C, ``features`` are the events' feature maps when already listed."""
    if name.startswith(FEATURE_PREFIX):
        maps = features if features is not None else [e.features for e in events]
        return list(map(dict.get, maps, repeat(name[len(FEATURE_PREFIX):])))
    return list(map(attrgetter(name), events))


class HistogramsByName:
    """Look-up by monitored name in ``histograms``: shared by :class:`DriftProfile` and
    :class:`pipeline.scoring.drift.reference.Reference`, which define the ``histograms`` slot."""

    __slots__ = ()
    histograms: dict[str, Histogram]

    @property
    def names(self) -> list[str]:
        """Monitored names present, sorted."""
        return sorted(self.histograms)

    def __getitem__(self, name: str) -> Histogram:
        return self.histograms[name]

    def get(self, name: str) -> Histogram | None:
        """The histogram of ``name``, ``None`` when absent."""
        return self.histograms.get(name)


class DriftProfile(HistogramsByName):
    """Mergeable histograms of the monitored distributions of one (series, window).

    >>> from schemas.event import InferenceEvent
    >>> spec = MonitorSpec(numeric_features=("x",), operational=False, confidence=False)
    >>> events = [InferenceEvent(event_id=str(i), timestamp=1.0, model="m", latency_ms=1.0,
    ...                          prediction="yes" if i % 2 else "no", features={"x": i})
    ...           for i in range(10)]
    >>> p = DriftProfile()
    >>> p.add_events(events, spec)
    >>> p.names, p["feature.x"].count, p["prediction"].counts
    (['feature.x', 'prediction'], 10, {'no': 5, 'yes': 5})
    >>> DriftProfile.from_builtins(p.to_builtins()) == p
    True
    """

    __slots__ = ("histograms", "type_mismatches")

    def __init__(self, histograms: Mapping[str, Histogram] | None = None) -> None:
        self.histograms: dict[str, Histogram] = dict(histograms or {})
        self.type_mismatches = 0

    def __repr__(self) -> str:
        counts = {n: h.count for n, h in sorted(self.histograms.items())}
        return f"DriftProfile({counts}, type_mismatches={self.type_mismatches})"

    def add_events(self, events: Sequence[InferenceEvent], spec: MonitorSpec) -> None:
        """Add a batch: one ``add_many`` per monitored name."""
        if not events:
            return
        monitored = spec.monitored()
        features = ([e.features for e in events]
                    if any(n.startswith(FEATURE_PREFIX) for n in monitored) else None)
        for name, kind in monitored.items():
            raw = _raw_values(events, name, features)
            histogram = self.histograms.get(name)
            if histogram is None:
                histogram = self.histograms[name] = spec.new_histogram(kind)
            if kind == "numeric":
                numbers = [v for v in raw if v.__class__ is not str]
                self.type_mismatches += len(raw) - len(numbers)
                histogram.add_many(np.array(numbers, dtype=np.float64))
            else:
                histogram.add_many(raw)

    def merge(self, other: DriftProfile) -> None:
        """Fold ``other`` into this profile (histograms absent here are copied)."""
        if not isinstance(other, DriftProfile):
            raise TypeError(f"cannot merge {type(other).__name__} into DriftProfile")
        for name, histogram in other.histograms.items():
            mine = self.histograms.get(name)
            if mine is None:
                self.histograms[name] = histogram.copy()
            else:
                mine.merge(histogram)  # type: ignore[arg-type]
        self.type_mismatches += other.type_mismatches

    def copy(self) -> DriftProfile:
        """An independent copy."""
        out = DriftProfile({n: h.copy() for n, h in self.histograms.items()})
        out.type_mismatches = self.type_mismatches
        return out

    def to_builtins(self) -> dict[str, Any]:
        """``{"v": 1, "h": {name: histogram builtins with "k": "n" | "c"}, "tm": mismatches}``."""
        out: dict[str, Any] = {
            "v": PROFILE_FORMAT,
            "h": {n: histogram_to_builtins(h) for n, h in sorted(self.histograms.items())},
        }
        if self.type_mismatches:
            out["tm"] = self.type_mismatches
        return out

    @classmethod
    def from_builtins(cls, data: Mapping[str, Any]) -> DriftProfile:
        """Inverse of :meth:`to_builtins`."""
        if data.get("v") != PROFILE_FORMAT:
            raise ValueError(f"unsupported DriftProfile format {data.get('v')!r}")
        out = cls({str(n): histogram_from_builtins(h) for n, h in data.get("h", {}).items()})
        out.type_mismatches = int(data.get("tm", 0))
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DriftProfile):
            return NotImplemented
        return (self.histograms == other.histograms
                and self.type_mismatches == other.type_mismatches)

    __hash__ = None  # type: ignore[assignment]


def histogram_to_builtins(histogram: Histogram) -> dict[str, Any]:
    """``histogram.to_builtins()`` tagged with its kind (``"k"``: ``"n"`` or ``"c"``)."""
    return {"k": "n" if isinstance(histogram, NumericHistogram) else "c",
            **histogram.to_builtins()}


def histogram_from_builtins(data: Mapping[str, Any]) -> Histogram:
    """A histogram from its builtins tagged with ``"k"`` (``"n"`` numeric, ``"c"`` categorical)."""
    body = {k: v for k, v in data.items() if k != "k"}
    if data.get("k") == "n":
        return NumericHistogram.from_builtins(body)
    if data.get("k") == "c":
        return CategoricalHistogram.from_builtins(body)
    raise ValueError(f"unknown histogram kind {data.get('k')!r}")
