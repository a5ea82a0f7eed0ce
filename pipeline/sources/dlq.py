"""Dead-letter records: the original bytes and headers plus why and where from.

Nothing is dropped: the value is the rejected bytes exactly as received (the whole
message, or the one bad element of a batch), the original headers are kept, and
``inferwatch-*`` headers say why it was rejected and where it came from.

A dead letter always fits the broker: one larger than ``max_bytes`` (a 3 MB message
that arrived compressed by Kafka, a big element of a compressed batch) is replaced by
a bounded *reference* — source topic/partition/offset, size, sha256 and the first KiBs
— marked by the ``inferwatch-truncated`` header; the original stays on its topic.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import msgspec

from pipeline.runtime.retry import Backoff
from pipeline.sources.codec import Rejection

__all__ = ["DEFAULT_MAX_BYTES", "DeadLetter", "dead_letter", "deliver"]

log = logging.getLogger(__name__)

REASON = "inferwatch-error-reason"
DETAIL = "inferwatch-error-detail"
SOURCE_TOPIC = "inferwatch-source-topic"
SOURCE_PARTITION = "inferwatch-source-partition"
SOURCE_OFFSET = "inferwatch-source-offset"
BATCH_INDEX = "inferwatch-batch-index"
TRUNCATED = "inferwatch-truncated"
_MAX_DETAIL = 1000
# Under the broker's default message.max.bytes (1,048,588) with room for the batch framing.
DEFAULT_MAX_BYTES = 900 * 1024
_HEAD_BYTES = 4096  # of the original kept in a reference


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    def size(self) -> int:
        """Bytes this record takes on the wire, near enough to compare with a limit."""
        return (len(self.key or b"") + len(self.value)
                + sum(len(k) + len(v) + 8 for k, v in self.headers) + 64)


def dead_letter(
    rejection: Rejection,
    *,
    key: bytes | None,
    headers: Mapping[str, bytes] | Sequence[tuple[str, bytes]] | None,
    topic: str,
    partition: int,
    offset: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DeadLetter:
    """The DLQ record for one rejection of the message at ``topic/partition/offset``.

    >>> from pipeline.sources.codec import Rejection
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
    letter = DeadLetter(key=key, value=rejection.raw, headers=items)
    if letter.size() <= max_bytes:
        return letter
    return _reference(letter, rejection, topic, partition, offset)


def _reference(letter: DeadLetter, rejection: Rejection, topic: str, partition: int,
               offset: int) -> DeadLetter:
    """A bounded stand-in for a dead letter too large for the broker."""
    raw = rejection.raw
    value = msgspec.json.encode({
        "truncated": True,
        "source": {"topic": topic, "partition": partition, "offset": offset,
                   "batch_index": rejection.index},
        "size": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "head_base64": base64.b64encode(raw[:_HEAD_BYTES]).decode(),
        "original_headers": len(letter.headers),
    })
    ours = [(k, v) for k, v in letter.headers if k.startswith("inferwatch-")]
    originals = [(k[:256], v[:256]) for k, v in letter.headers
                 if not k.startswith("inferwatch-")
                 and k.lower() not in ("content-type", "content-encoding")][:32]
    headers = [*originals, ("content-type", b"application/json"), *ours,
               (TRUNCATED, str(len(raw)).encode())]
    key = letter.key if letter.key is None or len(letter.key) <= 1024 else letter.key[:1024]
    return DeadLetter(key=key, value=value, headers=headers)


def shrink(letter: DeadLetter) -> DeadLetter:
    """The bounded reference for a letter the broker refused, built from its headers."""
    head = dict(letter.headers)
    index = head.get(BATCH_INDEX)
    rejection = Rejection(head.get(REASON, b"internal").decode(),  # type: ignore[arg-type]
                          head.get(DETAIL, b"").decode("utf-8", "replace"), letter.value,
                          int(index) if index else None)
    return _reference(letter, rejection, head.get(SOURCE_TOPIC, b"").decode(),
                      int(head.get(SOURCE_PARTITION, b"-1")),
                      int(head.get(SOURCE_OFFSET, b"-1")))


def _refused_for_size(exc: BaseException) -> bool:
    names = {type(exc).__name__, *(t.__name__ for t in type(exc).__mro__)}
    return bool(names & {"MessageSizeTooLargeError", "RecordListTooLargeError",
                         "RecordTooLargeError"})


def _transient(exc: BaseException) -> bool:
    """Worth retrying as it is: the broker or the network is away, not the record bad."""
    if isinstance(exc, (asyncio.TimeoutError, ConnectionError, OSError)):
        return True
    return bool(getattr(exc, "retriable", False)) or type(exc).__name__ in (
        "KafkaConnectionError", "NodeNotReadyError", "RequestTimedOutError",
        "KafkaTimeoutError", "NotLeaderForPartitionError", "LeaderNotAvailableError")


async def deliver(letters: Sequence[DeadLetter],
                  send: Callable[[DeadLetter], Awaitable[object]],
                  max_delay: float = 30.0) -> int:
    """Deliver every letter; ``send`` returns once the broker acknowledged one.

    Only the letters that failed are retried (a delivered one is never sent twice);
    transient errors are retried with capped backoff, as long as it takes; a letter
    refused for its size or for another permanent reason is replaced once by its
    bounded reference. Returns how many letters had to be replaced.
    """
    pending = list(letters)
    shrunk: set[int] = set()  # ids of references already sent in place of a letter
    replaced = 0
    backoff = Backoff(first=0.5, cap=max_delay)
    while pending:
        results = await asyncio.gather(*(send(d) for d in pending), return_exceptions=True)
        retry: list[DeadLetter] = []
        transient = 0
        for letter, result in zip(pending, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            if isinstance(result, asyncio.CancelledError):
                raise result
            if _transient(result) and not _refused_for_size(result):
                retry.append(letter)
                transient += 1
            elif id(letter) not in shrunk:
                reference = shrink(letter)
                shrunk.add(id(reference))
                replaced += 1
                log.warning("dead letter from %s refused by the broker (%s): sending a "
                            "bounded reference instead", _where(letter), result)
                retry.append(reference)
            else:  # even the few-KiB reference is refused: nothing more can be sent
                log.error("dead letter from %s cannot be delivered: %s", _where(letter), result)
        if transient:
            delay = backoff.next()
            log.warning("DLQ delivery of %d records failed (retry in %.1fs)", transient, delay)
            await asyncio.sleep(delay)
        pending = retry
    return replaced


def _where(letter: DeadLetter) -> str:
    head = dict(letter.headers)
    return "{}[{}]@{}".format(*(head.get(k, b"?").decode("utf-8", "replace")
                                for k in (SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET)))
