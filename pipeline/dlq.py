"""Dead-letter records: the original bytes and headers plus why and where from.

Nothing is dropped: the value is the rejected bytes exactly as received (the whole
message, or the one bad element of a batch), the original headers are kept, and
``inferwatch-*`` headers say why it was rejected and where it came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.codec import Rejection

__all__ = ["DeadLetter", "dead_letter"]

REASON = "inferwatch-error-reason"
DETAIL = "inferwatch-error-detail"
SOURCE_TOPIC = "inferwatch-source-topic"
SOURCE_PARTITION = "inferwatch-source-partition"
SOURCE_OFFSET = "inferwatch-source-offset"
BATCH_INDEX = "inferwatch-batch-index"
_MAX_DETAIL = 1000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def dead_letter(
    rejection: Rejection,
    *,
    key: bytes | None,
    headers: Mapping[str, bytes] | Sequence[tuple[str, bytes]] | None,
    topic: str,
    partition: int,
    offset: int,
) -> DeadLetter:
    """The DLQ record for one rejection of the message at ``topic/partition/offset``.

    >>> from pipeline.codec import Rejection
    >>> r = Rejection("malformed", "JSON is malformed", b"{oops")
    >>> d = dead_letter(r, key=b"k", headers={"x": b"1"}, topic="t", partition=2, offset=7)
    >>> d.value, dict(d.headers)["inferwatch-error-reason"], dict(d.headers)["x"]
    (b'{oops', b'malformed', b'1')
    """
    items = list(headers.items() if isinstance(headers, Mapping) else headers or ())
    if rejection.index is not None:
        # The value is one decoded-from element, no longer compressed.
        items = [(k, v) for k, v in items if k.lower() != "content-encoding"]
    items += [
        (REASON, rejection.reason.encode()),
        (DETAIL, rejection.detail[:_MAX_DETAIL].encode("utf-8", "replace")),
        (SOURCE_TOPIC, topic.encode()),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
    ]
    if rejection.index is not None:
        items.append((BATCH_INDEX, str(rejection.index).encode()))
    return DeadLetter(key=key, value=rejection.raw, headers=items)
