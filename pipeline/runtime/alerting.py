"""The silences topic: read it into memory, write one silence.

Silences live on a compacted topic (``inferwatch.silences``, key = silence id) that
every worker reads from the start: durable, shared, and written by ``inferwatch
silence``. The alerting stage (:mod:`pipeline.alerting.stage`) reads them through a
follower task.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from pipeline.alerting.silences import Silences
from pipeline.config import Settings
from pipeline.runtime.follower import follow as follow_topic
from pipeline.runtime.kafka import send_one
from schemas.alert import Silence

__all__ = ["publish_silence", "read_silences"]

_JSON = msgspec.json.Encoder()
_SILENCE = msgspec.json.Decoder(Silence)


async def read_silences(settings: Settings, silences: Silences,
                        stop: asyncio.Event | None = None, follow: bool = True) -> None:
    """Load the silences topic from the start into ``silences``; keep following if asked."""

    def apply(record: Any) -> None:
        if record.value is not None:
            silences.add(_SILENCE.decode(record.value))

    await follow_topic(settings.kafka, settings.topics.silences, apply,
                       keep_following=follow, stop=stop)


async def publish_silence(settings: Settings, silence: Silence) -> None:
    """Write (or overwrite: expire) a silence on the compacted silences topic."""
    await send_one(settings.kafka, settings.topics.silences, silence.id.encode(),
                   _JSON.encode(silence))
