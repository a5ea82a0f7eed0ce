"""Model versions side by side: the sums each version's series adds up per period, and
the book that lines up the versions of one model for comparison rules. No I/O.

:class:`VersionStats` counts inferences (errors, latency) and outcomes (labels right or
wrong, satisfaction) of one series as sums that merge exactly. The quality windows
publish them every quality window as a :class:`~schemas.quality.VersionSummary`, keyed by
the model without its version. :class:`VersionBook`, at the alerting worker that owns
that key, keeps each version's summaries of the last ``span`` seconds and turns them into
one comparison window per candidate version against the baseline (the version with the
most inferences in the span, the one serving most traffic), which version comparison
rules read as ``baseline.<sum>`` and ``candidate.<sum>``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

from pipeline.quality.counts import is_correct
from pipeline.quality.records import Outcome
from pipeline.windows.profile import series_key as make_key
from schemas.quality import VersionSummary

__all__ = ["SUMS", "VersionBook", "VersionStats"]

SUMS = ("inferences", "errors", "latency_n", "latency_sum", "latency_sumsq", "labelled",
        "correct", "satisfaction_n", "satisfaction_sum", "satisfaction_sumsq", "thumbs_down")
_FLOATS = frozenset({"latency_sum", "latency_sumsq", "satisfaction_sum", "satisfaction_sumsq"})
VERSION_LABEL = "model_version"


class VersionStats:
    """Mergeable sums of one series over one period.

    >>> s = VersionStats()
    >>> s.add_inference(100.0, False); s.add_inference(300.0, True)
    >>> s.inferences, s.errors, s.latency_sum
    (2, 1, 400.0)
    """

    __slots__ = SUMS

    def __init__(self) -> None:
        for name in SUMS:
            setattr(self, name, 0.0 if name in _FLOATS else 0)

    def add_inference(self, latency_ms: float | None, error: bool) -> None:
        self.inferences += 1
        self.errors += bool(error)
        if latency_ms is not None and math.isfinite(latency_ms):
            self.latency_n += 1
            self.latency_sum += latency_ms
            self.latency_sumsq += latency_ms * latency_ms

    def add(self, outcome: Outcome, thumbs_down_below: float = 0.5) -> None:
        """One joined feedback: a classification label's verdict, or a satisfaction."""
        if outcome.kind == "label":
            right = is_correct(outcome.prediction, outcome.label)
            if right is not None:
                self.labelled += 1
                self.correct += right
        elif outcome.kind == "satisfaction" and outcome.satisfaction is not None:
            s = outcome.satisfaction
            self.satisfaction_n += 1
            self.satisfaction_sum += s
            self.satisfaction_sumsq += s * s
            self.thumbs_down += s < thumbs_down_below

    def merge(self, other: VersionStats | Mapping[str, float]) -> None:
        get = other.get if isinstance(other, Mapping) else (
            lambda name, _=0: getattr(other, name))
        for name in SUMS:
            value = get(name, 0) or 0
            setattr(self, name, getattr(self, name) + (value if name in _FLOATS
                                                       else int(value)))

    def merge_builtins(self, data: Mapping[str, Any]) -> None:
        """Add sums in their :meth:`to_builtins` form (only the sums present: the join sends
        one per series and joins record); ``ValueError`` on a malformed value, with nothing
        changed. Unknown names are ignored, as in :meth:`from_builtins`."""
        present = [(name, data[name]) for name in SUMS if name in data]
        for name, value in present:
            if not isinstance(value, int | float) or isinstance(value, bool) \
                    or not math.isfinite(value):
                raise ValueError(f"malformed version sums: {name}={value!r}")
        for name, value in present:
            setattr(self, name, getattr(self, name) + (float(value) if name in _FLOATS
                                                       else int(value)))

    def empty(self) -> bool:
        return not (self.inferences or self.labelled or self.satisfaction_n)

    def to_builtins(self) -> dict[str, float]:
        return {name: v for name in SUMS if (v := getattr(self, name))}

    @classmethod
    def from_builtins(cls, data: Mapping[str, Any]) -> VersionStats:
        stats = cls()
        stats.merge_builtins(data)  # absent sums stay 0
        return stats


class VersionBook:
    """Each version's recent summaries per model, lined up for comparison."""

    def __init__(self, span: float) -> None:
        self.span = span
        # model key -> version -> [(period_start, period_end, sums)], oldest first
        self.models: dict[str, dict[str, list[tuple[float, float, dict[str, float]]]]] = {}
        self.labels: dict[str, dict[str, str]] = {}  # model key -> labels without version
        self.compared: dict[str, float] = {}  # model key -> the period end last compared

    @staticmethod
    def model_key(labels: Mapping[str, str]) -> str:
        """The key every version of a model shares: its labels without the version."""
        return make_key({k: v for k, v in labels.items() if k != VERSION_LABEL})

    def add(self, summary: VersionSummary) -> list[dict[str, Any]]:
        """Take one summary; the comparison windows it brings up to date (one per
        candidate version, as the mapping the rule evaluator reads)."""
        labels = dict(summary.labels)
        version = labels.pop(VERSION_LABEL, "")
        key = make_key(labels)
        self.labels[key] = labels
        versions = self.models.setdefault(key, {})
        sums = {n: getattr(summary, n) for n in SUMS}
        versions.setdefault(version, []).append((summary.period_start, summary.period_end,
                                                 sums))
        return self.compare(key, summary.period_end)

    def compare(self, key: str, now: float) -> list[dict[str, Any]]:
        """The comparison windows of one model, over the same periods on every side: up to
        the newest period every version still reporting has sent (a version quiet for two
        periods is compared as it stands), once per such period end."""
        versions = self.models.get(key, {})
        for version, periods in list(versions.items()):
            periods[:] = [p for p in periods if p[1] > now - self.span]
            if not periods:
                del versions[version]
        if len(versions) < 2:
            return []
        latest = {v: max(p[1] for p in periods) for v, periods in versions.items()}
        newest = max(latest.values())
        reporting = [end for end in latest.values() if end >= newest - 2 * self._period(key)]
        upto = min(reporting)
        if upto <= self.compared.get(key, float("-inf")):
            return []  # nothing new on every side yet
        self.compared[key] = upto
        totals: dict[str, VersionStats] = {}
        for version, periods in versions.items():
            stats = totals[version] = VersionStats()
            for _, end, sums in periods:
                if upto - self.span < end <= upto:
                    stats.merge(sums)
        baseline = min(totals, key=lambda v: (-totals[v].inferences, v))
        out = []
        for candidate, stats in sorted(totals.items()):
            if candidate == baseline:
                continue
            labels = {**self.labels[key], VERSION_LABEL: candidate,
                      "baseline_version": baseline, "quality": "comparison"}
            window = {"series_key": make_key(labels), "labels": labels,
                      "window_start": upto - self.span, "window_end": upto, "version": 1}
            sums = {f"baseline.{n}": float(getattr(totals[baseline], n)) for n in SUMS}
            sums.update((f"candidate.{n}", float(getattr(stats, n))) for n in SUMS)
            out.append({**window, "sums": sums})
        return out

    def _period(self, key: str) -> float:
        """The period length the model's summaries use (their grid), from the newest."""
        ends = [p for periods in self.models[key].values() for p in periods[-1:]]
        return max((end - start for start, end, _ in ends), default=0.0)

    # ------------------------------------------------------------------ state
    def checkpoint(self, key: str) -> bytes | None:
        if key not in self.models or not self.models[key]:
            return None
        return msgspec.msgpack.encode({"labels": self.labels[key], "versions": self.models[key],
                                       "compared": self.compared.get(key)})

    def restore(self, key: str, raw: bytes) -> None:
        data = msgspec.msgpack.decode(raw)
        self.labels[key] = data["labels"]
        self.models[key] = {v: [tuple(p) for p in periods]
                            for v, periods in data["versions"].items()}
        if data.get("compared") is not None:
            self.compared[key] = data["compared"]

    def forget(self, key: str) -> None:
        self.models.pop(key, None)
        self.labels.pop(key, None)
        self.compared.pop(key, None)
