"""A span: one inference being timed, from ``Producer.track()`` (context manager or
decorator, sync or async). Leaving it emits the event through its producer."""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, TypeVar

from schemas.event import InferenceEvent

if TYPE_CHECKING:
    from pipeline.sdk.producer import Producer

__all__ = ["Span"]

F = TypeVar("F", bound=Callable[..., Any])

_DAY_MS = 86_400_000.0
_LABEL_MAX = 128
_CURRENT: ContextVar[Span | None] = ContextVar("inferwatch_span", default=None)


class Span:
    """One inference being timed; yielded by ``Producer.track()``.

    Entering starts the clock (``timestamp``, a fresh ``event_id``); leaving emits the
    event with ``latency_ms``, and with ``status="error"`` and ``error_type`` set to the
    exception's class name when the body raised. The exception always propagates.
    Fields given to ``track()`` or ``set()`` win over measured ones. A span times one
    inference at a time; used as a decorator, each call gets its own span.
    """

    __slots__ = ("_fields", "_first", "_producer", "_t0", "_token", "event_id", "timestamp")

    def __init__(self, producer: Producer, fields: dict[str, Any]) -> None:
        self._producer = producer
        self._fields = fields
        self._t0: float | None = None
        self._first: float | None = None
        self._token: Token[Span | None] | None = None
        self.event_id: str = ""
        self.timestamp: float = 0.0

    @staticmethod
    def current() -> Span | None:
        """The span of the innermost running ``track()`` block or tracked call, if any."""
        return _CURRENT.get()

    def set(self, **fields: Any) -> None:
        """Set event fields (``input_tokens=…``, ``cost_usd=…``, ``features={…}``, …).

        Names that are not ``InferenceEvent`` fields are ignored with a warning.
        """
        self._fields.update(self._producer._known(fields))

    def first_token(self) -> None:
        """Mark the first token (or chunk) now; later calls keep the first mark."""
        if self._t0 is not None and self._first is None:
            self._first = time.perf_counter()

    def __repr__(self) -> str:
        model = self._fields.get("model", "")
        return f"<Span model={model!r} event_id={self.event_id!r}>"

    # context manager, sync and async

    def __enter__(self) -> Span:
        self._begin()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        self._end(exc_type)

    async def __aenter__(self) -> Span:
        self._begin()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: object, tb: object
    ) -> None:
        self._end(exc_type)

    # decorator

    def __call__(self, fn: F) -> F:
        """Track every call of ``fn``: a function, coroutine function or (async) generator.

        For generators the span covers the whole iteration and the first item yielded
        marks the first token; a consumer that stops early is not an error.
        """
        producer, template = self._producer, self._fields

        def fresh() -> Span:
            return Span(producer, dict(template))

        wrapper: Callable[..., Any]
        if inspect.isasyncgenfunction(fn):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                async with fresh() as span, contextlib.aclosing(fn(*args, **kwargs)) as items:
                    async for item in items:
                        span.first_token()
                        yield item

        elif inspect.isgeneratorfunction(fn):

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with fresh() as span, contextlib.closing(fn(*args, **kwargs)) as items:
                    for item in items:
                        span.first_token()
                        yield item

        elif inspect.iscoroutinefunction(fn):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                async with fresh():
                    return await fn(*args, **kwargs)

        else:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with fresh():
                    return fn(*args, **kwargs)

        return functools.wraps(fn)(wrapper)  # type: ignore[return-value]

    def _begin(self) -> None:
        self._first = None
        self.event_id = self._fields.get("event_id") or uuid.uuid4().hex
        self.timestamp = time.time()
        self._token = _CURRENT.set(self)
        self._t0 = time.perf_counter()

    def _end(self, exc_type: type[BaseException] | None) -> None:
        end = time.perf_counter()
        t0, self._t0 = self._t0, None
        token, self._token = self._token, None
        if token is not None:
            with contextlib.suppress(ValueError):  # left in another context (generators)
                _CURRENT.reset(token)
        if t0 is None:
            return
        try:
            fields = {**self._producer._defaults, **self._fields}
            fields["event_id"] = self.event_id
            fields["timestamp"] = self.timestamp
            latency = min((end - t0) * 1000.0, _DAY_MS)
            fields.setdefault("latency_ms", latency)
            if self._first is not None:
                ttft = min((self._first - t0) * 1000.0, latency)
                fields.setdefault("time_to_first_token_ms", ttft)
                out = fields.get("output_tokens")
                if isinstance(out, int) and out > 1:
                    fields.setdefault("time_per_output_token_ms", (latency - ttft) / (out - 1))
            if exc_type is not None and not issubclass(exc_type, GeneratorExit):
                fields["status"] = "error"
                fields.setdefault("error_type", exc_type.__name__[:_LABEL_MAX])
            event = InferenceEvent(**fields)
        except Exception as exc:  # never fail the caller's request over telemetry
            self._producer._reject("span", exc)
            return
        self._producer.emit(event)
