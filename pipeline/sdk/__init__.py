"""The producer SDK: ``pip install inferwatch`` (aiokafka and msgspec, nothing of the worker).

>>> from pipeline.sdk import Producer

Names load on first use (PEP 562), so the worker can read the wire format
(``pipeline.sdk.wire``) without loading the producer and its sender thread machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.sdk.producer import Producer, ProducerStats, Span

__all__ = ["Producer", "ProducerStats", "Span"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from pipeline.sdk import producer

        return getattr(producer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
