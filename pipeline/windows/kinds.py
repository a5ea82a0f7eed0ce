"""What the stages aggregate: inference events into WindowMetrics, resource samples into
ResourceMetrics. A ``Kind`` tells the stages how to key, profile and finalize one
record type, so both flow through the same window bookkeeping."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from pipeline.config import MetricsSettings
from pipeline.windows.drift_profile import MonitorSpec
from pipeline.windows.profile import ResourceProfile, WindowProfile, series_labels
from schemas.event import InferenceEvent

__all__ = ["EVENTS", "RESOURCES", "Kind", "event_kind", "resource_kind"]

EVENTS = "events"
RESOURCES = "resources"


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    labels: tuple[str, ...]
    values: Callable[[Any], tuple[str, ...]]  # a record's label values, in ``labels`` order
    new: Callable[[], Any]
    add: Callable[[Any, Sequence[Any], bool], None]  # (profile, records, late)
    load: Callable[[dict[str, Any]], Any]
    finalize: Callable[[Any, str, dict[str, str], float, float, int], msgspec.Struct]


def event_kind(settings: MetricsSettings, drift: MonitorSpec | None = None) -> Kind:
    """Inference events, keyed by the configured series labels; with ``drift``, each window
    also keeps the histograms of the distributions it names."""

    def add(profile: WindowProfile, events: Sequence[Any], late: bool) -> None:
        profile.add_events(events, settings.latency_slo_ms, settings.feature_usage_attributes)
        if drift is not None:
            profile.add_drift(events, drift)
        if late:
            profile.add_late(len(events))

    def finalize(profile: WindowProfile, key: str, labels: dict[str, str], start: float,
                 end: float, version: int) -> msgspec.Struct:
        return profile.finalize(key, labels, start, end, version, settings.latency_slo_ms)

    names = tuple(settings.series_labels)
    fields = [n for n in names if n in InferenceEvent.__struct_fields__]
    if len(fields) == len(names):
        def values(event: InferenceEvent) -> tuple[str, ...]:
            return tuple(getattr(event, n) or "" for n in names)
    else:  # a label such as "endpoint" comes from event.attributes
        def values(event: InferenceEvent) -> tuple[str, ...]:
            return tuple(series_labels(event, names).values())

    return Kind(EVENTS, names, values,
                lambda: WindowProfile(settings.relative_accuracy), add,
                WindowProfile.from_builtins, finalize)


def resource_kind(settings: MetricsSettings) -> Kind:
    """Resource samples, keyed by host, model server and model."""

    def add(profile: ResourceProfile, samples: Sequence[Any], late: bool) -> None:
        profile.add_samples(samples)

    def finalize(profile: ResourceProfile, key: str, labels: dict[str, str], start: float,
                 end: float, version: int) -> msgspec.Struct:
        return profile.finalize(labels["host"], labels["server"], labels["model"], start, end,
                                version)

    return Kind(RESOURCES, ("host", "server", "model"),
                lambda s: (s.host, s.server, s.model), ResourceProfile, add,
                ResourceProfile.from_builtins, finalize)
