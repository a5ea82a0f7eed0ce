"""Mergeable per-(series, window) partials: stage 1 adds event batches, stage 2 merges them.

A :class:`WindowProfile` holds only mergeable state — counts, exact sums and DDSketches —
so partials built on different Kafka partitions merge into exactly what one profile of
all their events would hold (percentiles are never averaged). Batches are added with numpy:
one list comprehension per field per batch, one ``Sketch.add_many`` per sketch, no
per-event sketch calls. :meth:`WindowProfile.to_builtins` is the compact msgpack-safe
form that travels on ``inferwatch.partials`` and into the changelog.

Pure: no I/O, no Kafka, no faust.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.windows.drift_profile import DriftProfile, MonitorSpec
from pipeline.windows.histogram import NumericHistogram
from pipeline.windows.sketch import DEFAULT_RELATIVE_ACCURACY, Sketch
from schemas.event import InferenceEvent, ResourceSample
from schemas.metrics import ResourceMetrics, WindowMetrics

__all__ = [
    "MAX_DISTINCT_VALUES",
    "OTHER",
    "PROFILE_FORMAT",
    "ResourceProfile",
    "WindowProfile",
    "series_key",
    "series_labels",
]

PROFILE_FORMAT = 1  # version of the to_builtins layout
# Bound on distinct error types / feature-usage values kept per profile (memory safety for
# a high-cardinality label). Values beyond it are counted under OTHER.
MAX_DISTINCT_VALUES = 1000
OTHER = "_OTHER"  # OpenTelemetry's fallback for error.type

_SMALL_BATCH = 32  # batches up to this size are added without numpy
_EVENT_FIELDS = frozenset(InferenceEvent.__struct_fields__) - {"features", "attributes"}


# --------------------------------------------------------------------------- series
def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("=", "\\=")


def series_key(labels: Mapping[str, str]) -> str:
    """Stable string form of ``labels``: ``name=value`` sorted by name, joined by ``|``.

    ``\\``, ``|`` and ``=`` inside names or values are backslash-escaped, so distinct label
    sets never share a key.

    >>> series_key({"operation": "chat", "model": "gpt-chat", "model_version": "2024-06"})
    'model=gpt-chat|model_version=2024-06|operation=chat'
    """
    return "|".join(f"{_escape(k)}={_escape(v)}" for k, v in sorted(labels.items()))


def series_labels(event: InferenceEvent, names: Sequence[str]) -> dict[str, str]:
    """The configured labels of ``event``: each name read from the event field of that name
    (``model``, ``operation``, ``tenant``…), else from ``event.attributes``; missing → ``""``.
    """
    out: dict[str, str] = {}
    for name in names:
        value = getattr(event, name) if name in _EVENT_FIELDS else event.attributes.get(name)
        out[name] = "" if value is None else str(value)
    return out


# --------------------------------------------------------------------------- helpers
def _column(events: Sequence[Any], field: str) -> np.ndarray:
    """One float64 column of the batch; ``None`` becomes NaN (numpy does that itself)."""
    return np.array([getattr(e, field) for e in events], dtype=np.float64)


def _count_into(target: dict[str, int], counts: Mapping[str, int], limit: int) -> None:
    """Add ``counts`` into ``target`` keeping at most ``limit`` keys (overflow → OTHER)."""
    for key, n in counts.items():
        if key in target or len(target) < limit:
            target[key] = target.get(key, 0) + n
        else:
            target[OTHER] = target.get(OTHER, 0) + n


def _clamped(sketch: Sketch, q: float) -> float | None:
    """Sketch quantile clamped to the exact ``[min, max]``: never less accurate, and a
    reported p99 can then never exceed the reported max."""
    value = sketch.quantile(q)
    if value is None:
        return None
    return min(max(value, sketch.min), sketch.max)  # type: ignore[type-var]


def _window_length(window_start: float, window_end: float) -> float:
    length = window_end - window_start
    if not length > 0:
        raise ValueError(f"window_end must be after window_start, got {window_start}..{window_end}")
    return length


# --------------------------------------------------------------------------- requests
_SKETCHES = {  # attribute -> (event field, to_builtins key)
    "latency_ms": ("latency_ms", "lat"),
    "ttft_ms": ("time_to_first_token_ms", "ttft"),
    "queue_wait_ms": ("queue_wait_ms", "qw"),
    "tpot_ms": ("time_per_output_token_ms", "tpot"),
    "input_tokens": ("input_tokens", "in"),
    "output_tokens": ("output_tokens", "out"),
    "cost_usd": ("cost_usd", "cost"),
}
# Drift's operational distributions, read from the window's own sketches (stage 2)
_OPERATIONAL = {"latency_ms": "latency_ms", "time_to_first_token_ms": "ttft_ms",
                "input_tokens": "input_tokens", "output_tokens": "output_tokens",
                "cost_usd": "cost_usd"}
_SCALARS = {  # attribute -> to_builtins key
    "requests": "n", "errors": "e", "cost_usd_sum": "cs", "cost_count": "cn",
    "cache_hits": "ch", "cache_reported": "cr", "slo_ms": "slo", "slo_met": "sm",
    "feedback_sum": "fs", "feedback_count": "fn", "late_events": "late",
}


class WindowProfile:
    """The mergeable partial state of one (series, window).

    Counts and sums are exact; latency, TTFT, queue wait, time per output token, token
    counts and cost are :class:`Sketch` es with ``relative_accuracy``. ``drift`` holds the
    histograms of the monitored features, prediction and confidence (when configured).
    The SLO threshold of the first batch sticks to the profile (``slo_ms``) and
    ``slo_met`` counts requests with
    ``latency_ms <= slo_ms`` exactly; a merge or finalize with another threshold falls back
    to the latency sketch for that part (accurate to ``relative_accuracy`` around it).

    >>> from schemas.event import InferenceEvent
    >>> events = [InferenceEvent(event_id=str(i), timestamp=5.0, model="m",
    ...                          latency_ms=100.0 * (i + 1)) for i in range(4)]
    >>> p = WindowProfile(0.01)
    >>> p.add_events(events, slo_ms=250.0, usage_attributes=())
    >>> m = p.finalize("model=m", {"model": "m"}, 0.0, 10.0, version=1, slo_ms=250.0)
    >>> m.requests, m.request_rate_per_s, m.slo_compliance, m.latency_max_ms
    (4, 0.4, 0.5, 400.0)
    """

    __slots__ = (
        "cache_hits", "cache_reported", "cost_count", "cost_usd", "cost_usd_sum", "drift",
        "errors",
        "errors_by_type", "feature_usage", "feedback_count", "feedback_sum", "input_tokens",
        "late_events", "latency_ms", "output_tokens", "queue_wait_ms", "relative_accuracy",
        "requests", "slo_met", "slo_ms", "tpot_ms", "ttft_ms",
    )

    def __init__(self, relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY) -> None:
        self.relative_accuracy = float(relative_accuracy)
        self.requests = 0
        self.errors = 0
        self.errors_by_type: dict[str, int] = {}
        self.latency_ms = Sketch(relative_accuracy)
        self.ttft_ms = Sketch(relative_accuracy)
        self.queue_wait_ms = Sketch(relative_accuracy)
        self.tpot_ms = Sketch(relative_accuracy)
        self.input_tokens = Sketch(relative_accuracy)
        self.output_tokens = Sketch(relative_accuracy)
        self.cost_usd = Sketch(relative_accuracy)
        self.cost_usd_sum = 0.0
        self.cost_count = 0
        self.drift: DriftProfile | None = None
        self.cache_hits = 0
        self.cache_reported = 0
        self.slo_ms: float | None = None
        self.slo_met = 0
        self.feedback_sum = 0.0
        self.feedback_count = 0
        self.feature_usage: dict[str, dict[str, int]] = {}
        self.late_events = 0

    @property
    def count(self) -> int:
        """Number of requests in the profile."""
        return self.requests

    def __repr__(self) -> str:
        return (f"WindowProfile(requests={self.requests}, errors={self.errors}, "
                f"late_events={self.late_events}, relative_accuracy={self.relative_accuracy})")

    # ------------------------------------------------------------------ adding
    def add_events(
        self,
        events: Sequence[InferenceEvent],
        slo_ms: float,
        usage_attributes: Iterable[str] = (),
    ) -> None:
        """Add a batch: one numpy column per field, one ``add_many`` per sketch.

        ``slo_ms`` is the latency threshold (the first one a profile sees sticks);
        ``usage_attributes`` names the ``event.attributes`` to count per value.
        """
        if not events:
            return
        if self.slo_ms is None:
            self.slo_ms = float(slo_ms)
        if len(events) <= _SMALL_BATCH:
            self._add_few(events)
        else:
            self._add_columns(events)
        failed = [e for e in events if e.status == "error"]
        if failed:
            self.errors += len(failed)
            kinds = Counter(
                e.error_type or (str(e.http_status) if e.http_status else OTHER) for e in failed
            )
            _count_into(self.errors_by_type, kinds, MAX_DISTINCT_VALUES)
        for name in usage_attributes:
            values = Counter(v for e in events if (v := e.attributes.get(name)) is not None)
            if values:
                _count_into(self.feature_usage.setdefault(name, {}), values, MAX_DISTINCT_VALUES)

    def _add_few(self, events: Sequence[InferenceEvent]) -> None:
        """:meth:`add_events`' counts and sketches for a small batch, in plain Python: at
        high cardinality one series' share of a message is a handful of events, and
        numpy's cost per call would be most of the work."""
        latency = [e.latency_ms for e in events]
        self.latency_ms.add_many(latency)
        for name, (field, _) in _SKETCHES.items():
            if name != "latency_ms":
                getattr(self, name).add_many([getattr(e, field) for e in events])
        self.requests += len(events)
        slo = self.slo_ms
        self.slo_met += sum(1 for v in latency if v <= slo)  # type: ignore[operator]
        cost = [c for e in events if (c := e.cost_usd) is not None and c == c]
        self.cost_count += len(cost)
        self.cost_usd_sum += float(sum(cost))
        cache = [c for e in events if (c := e.cache_hit) is not None]
        self.cache_reported += len(cache)
        self.cache_hits += sum(cache)
        feedback = [f for e in events if (f := e.feedback_score) is not None and f == f]
        self.feedback_count += len(feedback)
        self.feedback_sum += float(sum(feedback))

    def _add_columns(self, events: Sequence[InferenceEvent]) -> None:
        """:meth:`add_events`' counts and sketches for a large batch: one numpy column per
        field, one ``add_many`` per sketch."""
        latency = np.fromiter((e.latency_ms for e in events), dtype=np.float64, count=len(events))
        self.latency_ms.add_many(latency)
        columns = {"latency_ms": latency}
        for name, (field, _) in _SKETCHES.items():
            if name != "latency_ms":
                columns[name] = _column(events, field)
                getattr(self, name).add_many(columns[name])
        self.requests += len(events)
        self.slo_met += int(np.count_nonzero(latency <= self.slo_ms))

        cost = columns["cost_usd"]
        seen = ~np.isnan(cost)
        self.cost_count += int(np.count_nonzero(seen))
        self.cost_usd_sum += float(cost[seen].sum())

        cache = _column(events, "cache_hit")  # True -> 1.0, False -> 0.0, None -> NaN
        seen = ~np.isnan(cache)
        self.cache_reported += int(np.count_nonzero(seen))
        self.cache_hits += int(cache[seen].sum())

        feedback = _column(events, "feedback_score")
        seen = ~np.isnan(feedback)
        self.feedback_count += int(np.count_nonzero(seen))
        self.feedback_sum += float(feedback[seen].sum())

    def add_drift(self, events: Sequence[InferenceEvent], spec: MonitorSpec) -> None:
        """Add a batch to the drift histograms of ``spec`` (operational ones excluded:
        :meth:`drift_profile` reads those from the window's sketches)."""
        if events:
            if self.drift is None:
                self.drift = DriftProfile()
            self.drift.add_events(events, spec)

    def drift_profile(self, operational: bool = True) -> DriftProfile:
        """The window's histograms for drift: features, prediction, confidence and, with
        ``operational``, latency, time to first token, tokens and cost."""
        out = self.drift.copy() if self.drift is not None else DriftProfile()
        if operational:
            for name, attribute in _OPERATIONAL.items():
                sketch: Sketch = getattr(self, attribute)
                if sketch.count:
                    out.histograms[name] = NumericHistogram.from_sketch(sketch)
        return out

    def add_late(self, n: int = 1) -> None:
        """Record ``n`` events that arrived for this window after it was closed."""
        if n < 0:
            raise ValueError(f"late event count must be >= 0, got {n}")
        self.late_events += int(n)

    # ------------------------------------------------------------------ merging
    def merge(self, other: WindowProfile) -> None:
        """Fold ``other`` into this profile (same ``relative_accuracy`` required)."""
        if not isinstance(other, WindowProfile):
            raise TypeError(f"cannot merge {type(other).__name__} into WindowProfile")
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError(
                "cannot merge profiles with different relative accuracy: "
                f"{self.relative_accuracy} and {other.relative_accuracy}"
            )
        if self.slo_ms is None:
            self.slo_ms, self.slo_met = other.slo_ms, self.slo_met + other.slo_met
        elif other.slo_ms is None or other.slo_ms == self.slo_ms:
            self.slo_met += other.slo_met
        else:  # partial counted against another threshold: re-count it from its sketch
            self.slo_met += other.latency_ms.count_at_most(self.slo_ms)
        for name in _SKETCHES:
            getattr(self, name).merge(getattr(other, name))
        for name in _SCALARS:
            if name not in ("slo_ms", "slo_met"):
                setattr(self, name, getattr(self, name) + getattr(other, name))
        _count_into(self.errors_by_type, other.errors_by_type, MAX_DISTINCT_VALUES)
        for attribute, counts in other.feature_usage.items():
            _count_into(self.feature_usage.setdefault(attribute, {}), counts, MAX_DISTINCT_VALUES)
        if other.drift is not None:
            if self.drift is None:
                self.drift = DriftProfile()
            self.drift.merge(other.drift)

    # ------------------------------------------------------------------ result
    def finalize(
        self,
        series_key: str,
        labels: Mapping[str, str],
        window_start: float,
        window_end: float,
        version: int,
        slo_ms: float,
    ) -> WindowMetrics:
        """The published metrics of this window; rates are per second of window length."""
        length = _window_length(window_start, window_end)
        n = self.requests
        if self.slo_ms is None or self.slo_ms == slo_ms:
            met = self.slo_met
        else:
            met = self.latency_ms.count_at_most(slo_ms)
        lat, ttft, qw, tpot = self.latency_ms, self.ttft_ms, self.queue_wait_ms, self.tpot_ms
        out_tokens = round(self.output_tokens.sum)
        return WindowMetrics(
            series_key=series_key,
            labels=dict(labels),
            window_start=window_start,
            window_end=window_end,
            version=version,
            requests=n,
            request_rate_per_s=n / length,
            errors=self.errors,
            errors_by_type=dict(self.errors_by_type),
            error_rate=self.errors / n if n else 0.0,
            latency_p50_ms=_clamped(lat, 0.5),
            latency_p90_ms=_clamped(lat, 0.9),
            latency_p95_ms=_clamped(lat, 0.95),
            latency_p99_ms=_clamped(lat, 0.99),
            latency_max_ms=lat.max,
            ttft_p50_ms=_clamped(ttft, 0.5),
            ttft_p90_ms=_clamped(ttft, 0.9),
            ttft_p99_ms=_clamped(ttft, 0.99),
            queue_wait_p50_ms=_clamped(qw, 0.5),
            queue_wait_p99_ms=_clamped(qw, 0.99),
            tpot_p50_ms=_clamped(tpot, 0.5),
            tpot_p99_ms=_clamped(tpot, 0.99),
            # token counts are integers < 1e8 each: float sums are exact below 2**53
            input_tokens_sum=round(self.input_tokens.sum),
            input_tokens_p50=_clamped(self.input_tokens, 0.5),
            input_tokens_p99=_clamped(self.input_tokens, 0.99),
            output_tokens_sum=out_tokens,
            output_tokens_p50=_clamped(self.output_tokens, 0.5),
            output_tokens_p99=_clamped(self.output_tokens, 0.99),
            output_tokens_per_s=out_tokens / length,
            cache_hit_rate=(self.cache_hits / self.cache_reported
                            if self.cache_reported else None),
            cost_usd_sum=self.cost_usd_sum,
            cost_per_request_usd=self.cost_usd_sum / self.cost_count if self.cost_count else None,
            slo_latency_ms=float(slo_ms),
            slo_compliance=met / n if n else None,
            feedback_mean=(self.feedback_sum / self.feedback_count
                           if self.feedback_count else None),
            feedback_count=self.feedback_count,
            feature_usage={k: dict(v) for k, v in self.feature_usage.items()},
            late_events=self.late_events,
            sketch_relative_accuracy=self.relative_accuracy,
        )

    # ------------------------------------------------------------------ serialization
    def to_builtins(self) -> dict[str, Any]:
        """Compact msgpack-safe dict: zero/empty entries and empty sketches are omitted,
        sketches carry no alpha of their own (``a`` is the profile's)."""
        out: dict[str, Any] = {"v": PROFILE_FORMAT, "a": self.relative_accuracy}
        for name, key in _SCALARS.items():
            value = getattr(self, name)
            if value:
                out[key] = value
        for name, (_, key) in _SKETCHES.items():
            sketch: Sketch = getattr(self, name)
            if sketch.count:
                data = sketch.to_builtins()
                del data["a"]
                out[key] = data
        if self.errors_by_type:
            out["et"] = dict(self.errors_by_type)
        if self.feature_usage:
            out["fu"] = {k: dict(v) for k, v in self.feature_usage.items()}
        if self.drift is not None:
            out["d"] = self.drift.to_builtins()
        return out

    @classmethod
    def from_builtins(cls, data: Mapping[str, Any]) -> WindowProfile:
        """Inverse of :meth:`to_builtins`."""
        if data.get("v") != PROFILE_FORMAT:
            raise ValueError(f"unsupported WindowProfile format {data.get('v')!r}")
        out = cls(float(data["a"]))
        for name, key in _SCALARS.items():
            default = getattr(out, name)
            value = data.get(key, default)
            if name == "slo_ms":
                out.slo_ms = None if value is None else float(value)
            else:
                setattr(out, name, type(default)(value))
        for name, (_, key) in _SKETCHES.items():
            if key in data:
                setattr(out, name, Sketch.from_builtins(data[key], out.relative_accuracy))
        out.errors_by_type = {str(k): int(v) for k, v in data.get("et", {}).items()}
        out.feature_usage = {
            str(a): {str(k): int(v) for k, v in counts.items()}
            for a, counts in data.get("fu", {}).items()
        }
        if "d" in data:
            out.drift = DriftProfile.from_builtins(data["d"])
        return out

    def __eq__(self, other: object) -> bool:
        """Same state (float sums up to rounding: merge order may change their last bits)."""
        if not isinstance(other, WindowProfile):
            return NotImplemented
        for name in (*_SCALARS, "relative_accuracy", "errors_by_type", "feature_usage",
                     *_SKETCHES, "drift"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, float) and isinstance(theirs, float):
                if not math.isclose(mine, theirs, rel_tol=1e-9, abs_tol=1e-12):
                    return False
            elif mine != theirs:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------- resources
_RESOURCE_FIELDS = ("cpu_util", "memory_util", "gpu_util", "kv_cache_util", "queue_length")


class ResourceProfile:
    """Mergeable partial of resource samples: per field the exact count, sum and max.

    >>> p = ResourceProfile()
    >>> p.add_samples([ResourceSample(timestamp=1.0, host="h", cpu_util=0.2),
    ...                ResourceSample(timestamp=2.0, host="h", cpu_util=0.6)])
    >>> r = p.finalize("h", "", "m", 0.0, 10.0, version=1)
    >>> round(r.cpu_util_mean, 6), r.cpu_util_max, r.gpu_util_mean
    (0.4, 0.6, None)
    """

    __slots__ = ("_stats", "samples")

    def __init__(self) -> None:
        self.samples = 0
        # field -> [count, sum, max]
        self._stats: dict[str, list[float]] = {f: [0, 0.0, -math.inf] for f in _RESOURCE_FIELDS}

    @property
    def count(self) -> int:
        """Number of samples in the profile."""
        return self.samples

    def add_samples(self, samples: Sequence[ResourceSample]) -> None:
        """Add a batch of samples, one numpy column per field."""
        if not samples:
            return
        self.samples += len(samples)
        for field in _RESOURCE_FIELDS:
            column = _column(samples, field)
            column = column[~np.isnan(column)]
            if column.size:
                stats = self._stats[field]
                stats[0] += int(column.size)
                stats[1] += float(column.sum())
                stats[2] = max(stats[2], float(column.max()))

    def merge(self, other: ResourceProfile) -> None:
        """Fold ``other`` into this profile."""
        self.samples += other.samples
        for field, (n, total, top) in other._stats.items():
            stats = self._stats[field]
            stats[0] += n
            stats[1] += total
            stats[2] = max(stats[2], top)

    def mean(self, field: str) -> float | None:
        """Mean of ``field`` over the samples that reported it."""
        n, total, _ = self._stats[field]
        return total / n if n else None

    def max(self, field: str) -> float | None:
        """Max of ``field`` over the samples that reported it."""
        n, _, top = self._stats[field]
        return top if n else None

    def finalize(
        self,
        host: str,
        server: str,
        model: str,
        window_start: float,
        window_end: float,
        version: int,
    ) -> ResourceMetrics:
        """The published resource metrics of this window."""
        _window_length(window_start, window_end)
        values: dict[str, float | None] = {}
        for field in _RESOURCE_FIELDS:
            values[f"{field}_mean"] = self.mean(field)
            values[f"{field}_max"] = self.max(field)
        return ResourceMetrics(
            host=host, server=server, model=model, window_start=window_start,
            window_end=window_end, version=version, samples=self.samples, **values,
        )

    def to_builtins(self) -> dict[str, Any]:
        """``{"v": 1, "n": samples, "f": {field: [count, sum, max]}}``; unseen fields omitted."""
        fields = {f: [int(n), total, top] for f, (n, total, top) in self._stats.items() if n}
        out: dict[str, Any] = {"v": PROFILE_FORMAT, "n": self.samples}
        if fields:
            out["f"] = fields
        return out

    @classmethod
    def from_builtins(cls, data: Mapping[str, Any]) -> ResourceProfile:
        """Inverse of :meth:`to_builtins`."""
        if data.get("v") != PROFILE_FORMAT:
            raise ValueError(f"unsupported ResourceProfile format {data.get('v')!r}")
        out = cls()
        out.samples = int(data.get("n", 0))
        for field, (n, total, top) in data.get("f", {}).items():
            if field not in out._stats:
                raise ValueError(f"unknown resource field {field!r}")
            out._stats[field] = [int(n), float(total), float(top)]
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResourceProfile):
            return NotImplemented
        return self.samples == other.samples and all(
            a[0] == b[0] and a[2] == b[2] and math.isclose(a[1], b[1], rel_tol=1e-9)
            for a, b in zip(self._stats.values(), other._stats.values(), strict=True)
        )

    __hash__ = None  # type: ignore[assignment]
