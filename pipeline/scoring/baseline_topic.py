"""Pinned baselines on their compacted topic (key = series, newest version wins):
read it, follow it, publish the next version. The record and its builders are in
:mod:`pipeline.scoring.baselines`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec

from pipeline.config import Settings
from pipeline.scoring.baselines import Baseline, stamp

__all__ = ["follow_baselines", "publish_baseline", "read_baselines"]

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Baseline)


def _keep(into: dict[str, Baseline], key: str, baseline: Baseline | None) -> bool:
    """Apply one record to ``into``; True when it changed. Tombstones remove the series."""
    if baseline is None:
        return into.pop(key, None) is not None
    current = into.get(baseline.series_key)
    if current is not None and baseline.version < current.version:
        return False  # an older record behind a newer one (cannot happen on one partition)
    into[baseline.series_key] = baseline
    return True


async def _consume(
    settings: Settings,
    into: dict[str, Baseline],
    *,
    follow: bool,
    stop: asyncio.Event | None,
    loaded: asyncio.Event | None,
    on_update: Callable[[Baseline | None, str], None] | None,
) -> None:
    from pipeline.runtime.follower import follow as follow_topic

    def apply(record: Any) -> None:
        key = (record.key or b"").decode("utf-8", "replace")
        baseline = None if record.value is None else _DECODER.decode(record.value)
        if _keep(into, key, baseline) and on_update is not None:
            on_update(baseline, key)

    await follow_topic(settings.kafka, settings.topics.baselines, apply,
                       keep_following=follow, loaded=loaded, stop=stop, missing_ok=True)


async def read_baselines(settings: Settings) -> dict[str, Baseline]:
    """The latest baseline of every series: the baselines topic read to its end."""
    into: dict[str, Baseline] = {}
    await _consume(settings, into, follow=False, stop=None, loaded=None, on_update=None)
    return into


async def follow_baselines(
    settings: Settings,
    into: dict[str, Baseline],
    *,
    stop: asyncio.Event | None = None,
    loaded: asyncio.Event | None = None,
    on_update: Callable[[Baseline | None, str], None] | None = None,
) -> None:
    """Keep ``into`` (series key → latest baseline) up to date until ``stop`` is set.

    Reads the topic from the start, sets ``loaded`` once caught up with the end it saw on
    start (or at once when the topic does not exist yet), then follows new baselines.
    ``on_update(baseline, series_key)`` is called for each change (``None`` for a tombstone).
    """
    await _consume(settings, into, follow=True, stop=stop, loaded=loaded, on_update=on_update)


async def publish_baseline(settings: Settings, baseline: Baseline,
                           *, now: float | None = None) -> Baseline:
    """Store ``baseline`` as its series' next version (acks=all); return what was stored.

    Creates the compacted baselines topic if it is missing.
    """
    from pipeline.runtime.kafka import ensure_topics, send_one

    await ensure_topics(settings, [settings.topics.baselines])
    current = (await read_baselines(settings)).get(baseline.series_key)
    stored = stamp(baseline, current, time.time() if now is None else now)
    await send_one(settings.kafka, settings.topics.baselines, stored.series_key.encode(),
                   _ENCODER.encode(stored))
    return stored
