"""A ``FeedbackEvent`` from ``Producer.feedback()``'s arguments: exactly one value, and
the defaults a producer fills in (now, a random feedback id)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from schemas.feedback import KINDS, FeedbackEvent

__all__ = ["feedback_event", "one_value"]

_VALUE_KINDS = {field: kind for kind, field in KINDS.items()}  # label/satisfaction/value -> kind


def one_value(**values: Any) -> dict[str, Any]:
    """The one value given among ``label``, ``satisfaction`` and ``value``; anything else
    is a call-site bug, so ``ValueError`` at the call.

    >>> one_value(label=None, satisfaction=1.0, value=None)
    {'satisfaction': 1.0}
    """
    given = {name: v for name, v in values.items() if v is not None}
    if len(given) != 1:
        raise ValueError("feedback() takes exactly one of label, satisfaction or value, "
                         f"got {sorted(given) or 'none'}")
    return given


def feedback_event(event_id: str | None, request_id: str | None, given: dict[str, Any], *,
                   source: str, attributes: dict[str, str] | None, timestamp: float | None,
                   feedback_id: str | None) -> FeedbackEvent:
    """The record (its contract checks raise, for the producer to count and drop)."""
    return FeedbackEvent(
        feedback_id=uuid.uuid4().hex if feedback_id is None else feedback_id,
        event_id=event_id,
        request_id=request_id,
        timestamp=time.time() if timestamp is None else timestamp,
        kind=_VALUE_KINDS[next(iter(given))],  # type: ignore[arg-type]
        source=source,
        attributes=dict(attributes or {}),
        **given,
    )
