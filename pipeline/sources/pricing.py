"""Cost of events that carry no ``cost_usd``, from a dated, versioned price table.

A price table is a TOML file (the spec, :class:`PriceTable`): a ``version`` label and a
list of ``[[prices]]``, each a model (an exact name or a glob pattern such as
``gpt-4o-mini*``), optionally a provider, USD per million input, output and cache-read
tokens, and the date from which that price holds. It is built once, when a worker
starts, into :class:`Prices`, the object that runs: a bad file stops the worker there
with ``file:line: problem``, never event by event.

Which price an event gets: of the entries whose model (and provider, when the entry names
one) match the event and whose ``valid_from`` is on or before the event's UTC date, the
most specific wins — an exact name before a pattern, a named provider before none, a
longer pattern before a shorter — and of that entry's versions, the newest. An event
from before a price change so gets the old price, however late it arrives.

Cost = ((input − cache_read) × input price + cache_read × cache-read price + output ×
output price) / 10⁶, where ``input_tokens`` includes the cache reads (the OpenTelemetry
GenAI convention; cache reads above the input count are capped at it). An event that
reports no tokens, or whose model matches no entry, stays without a cost.

:func:`stamp_costs` records, in every event, where its cost came from: ``given`` when
the producer sent ``cost_usd``, ``computed`` when priced here, None when neither —
whatever the producer put in ``cost_source`` is overwritten. It is called by
:func:`pipeline.sources.codec.decode_events`, the one decode path of stage 1 and the
sink, so every figure downstream (window cost sums, the stored rows) sees the same cost.

No I/O here except reading the table file in :func:`load_prices`.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import tomllib
from collections.abc import Iterable
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import msgspec

from pipeline.config import PricingSettings
from schemas.event import InferenceEvent

__all__ = [
    "Price",
    "PriceTable",
    "PriceTableError",
    "Prices",
    "load_prices",
    "price_table",
    "stamp_costs",
]

SHIPPED = "prices.toml"  # package data beside this module
_EPOCH = dt.date(1970, 1, 1)
_DAY = 86_400.0
_GLOB = re.compile(r"[*?\[]")
_CACHE_LIMIT = 65_536  # (model, provider, day) keys cached before the cache is cleared
_MISS = object()

# At most $1,000 per million tokens: with at most 10⁸ tokens of each kind an event's
# computed cost stays inside the contract's cost bound (``Usd``: at most $1,000,000).
PerMillion = Annotated[float, msgspec.Meta(ge=0.0, le=1_000.0)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class PriceTableError(ValueError):
    """A price table that cannot be used; the message reads ``file:line: problem``."""


class Price(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One price of one model (or model pattern) from one date on; USD per million tokens.

    ``provider`` empty: any provider. ``cache_read_per_million`` None: the input price
    (the model has no cache discount).
    """

    model: Name
    input_per_million: PerMillion
    output_per_million: PerMillion
    valid_from: dt.date
    cache_read_per_million: PerMillion | None = None
    provider: Annotated[str, msgspec.Meta(max_length=128)] = ""

    @property
    def cache_read(self) -> float:
        """USD per million cache-read tokens, the input price when none is given."""
        crp = self.cache_read_per_million
        return self.input_per_million if crp is None else crp

    @property
    def exact(self) -> bool:
        """True when ``model`` is a name, not a glob pattern."""
        return _GLOB.search(self.model) is None

    def matches(self, model: str, provider: str) -> bool:
        """Whether an event of ``model`` from ``provider`` is priced by this entry."""
        if self.provider and self.provider != provider:
            return False
        return model == self.model if self.exact else fnmatchcase(model, self.model)

    def cost(self, input_tokens: int | None, output_tokens: int | None,
             cache_read_tokens: int | None) -> float | None:
        """USD for these token counts; None when none is reported.

        >>> p = Price(model="m", input_per_million=2.0, output_per_million=8.0,
        ...           cache_read_per_million=0.5, valid_from=dt.date(2025, 1, 1))
        >>> p.cost(1_000_000, 500_000, 400_000)  # 600k × $2 + 400k × $0.5 + 500k × $8
        5.4
        >>> p.cost(None, None, None) is None
        True
        """
        if input_tokens is None and output_tokens is None:
            return None
        tin = input_tokens or 0
        cached = min(cache_read_tokens or 0, tin)
        return ((tin - cached) * self.input_per_million + cached * self.cache_read
                + (output_tokens or 0) * self.output_per_million) / 1e6


# a cached lookup: the entry, then its input, output and cache-read USD per million
_Rates = tuple["Price", float, float, float]


class PriceTable(msgspec.Struct, forbid_unknown_fields=True):
    """The spec of a price table file: a version label and its prices."""

    version: Name
    prices: list[Price] = []


class Prices:
    """A price table built for lookups: the price of (model, provider, day), cached.

    Stage 1 and the sink decode every event, so a lookup is one dict access after the
    first event of a (model, provider, UTC day); the cache is cleared when it holds
    ``65,536`` keys, which bounds its memory under any model-name cardinality.

    >>> table = PriceTable(version="t", prices=[
    ...     Price(model="gpt-4o*", input_per_million=5.0, output_per_million=15.0,
    ...           valid_from=dt.date(2024, 5, 13)),
    ...     Price(model="gpt-4o*", input_per_million=2.5, output_per_million=10.0,
    ...           valid_from=dt.date(2024, 10, 2)),
    ...     Price(model="gpt-4o-mini*", input_per_million=0.15, output_per_million=0.6,
    ...           valid_from=dt.date(2024, 7, 18))])
    >>> prices = Prices(table)
    >>> june, november = 1717243200.0, 1730462400.0  # 2024-06-01, 2024-11-01
    >>> prices.price("gpt-4o-2024-08-06", "", june).input_per_million
    5.0
    >>> prices.price("gpt-4o-2024-08-06", "", november).input_per_million
    2.5
    >>> prices.price("gpt-4o-mini", "openai", november).input_per_million
    0.15
    >>> prices.price("claude-3-haiku", "", november) is None
    True
    """

    def __init__(self, table: PriceTable, source: str = "") -> None:
        self.version = table.version
        self.source = source
        # most specific first, then newest: the first match valid on a day is its price
        self._entries = sorted(
            ((price, (price.valid_from - _EPOCH).days) for price in table.prices),
            key=lambda e: (e[0].exact, bool(e[0].provider), len(e[0].model), e[1]),
            reverse=True,
        )
        self._cache: dict[tuple[str, str, int], _Rates | None] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        where = f" from {self.source}" if self.source else ""
        return f"<Prices {self.version!r}: {len(self)} prices{where}>"

    def price(self, model: str, provider: str, timestamp: float) -> Price | None:
        """The price in force for ``model`` from ``provider`` at Unix time ``timestamp``."""
        key = (model, provider, int(timestamp // _DAY))
        found = self._cache.get(key, _MISS)
        if found is _MISS:
            found = self._find(key)
        return None if found is None else found[0]

    def cost(self, event: InferenceEvent) -> float | None:
        """The computed cost of ``event`` in USD (its own ``cost_usd`` ignored), or None."""
        if event.input_tokens is None and event.output_tokens is None:
            return None
        found = self.price(event.model, event.provider, event.timestamp)
        if found is None:
            return None
        return found.cost(event.input_tokens, event.output_tokens, event.cache_read_tokens)

    def _find(self, key: tuple[str, str, int]) -> _Rates | None:
        """Look ``key`` up in the entries (most specific first) and cache the answer."""
        model, provider, day = key
        found = None
        for entry, since in self._entries:
            if since <= day and entry.matches(model, provider):
                found = (entry, entry.input_per_million, entry.output_per_million,
                         entry.cache_read)
                break
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = found
        return found


def stamp_costs(events: Iterable[InferenceEvent], prices: Prices | None) -> None:
    """Fill ``cost_usd`` from ``prices`` where it is missing; set every ``cost_source``.

    ``prices`` None (pricing disabled) computes nothing but still marks given costs.
    The loop is :meth:`Prices.cost` inlined (same arithmetic, same order): it runs on
    every event stage 1 and the sink decode.

    >>> e = InferenceEvent(event_id="a", timestamp=0.0, model="m", latency_ms=1.0,
    ...                    cost_usd=0.5, cost_source="computed")
    >>> stamp_costs([e], None)
    >>> e.cost_source
    'given'
    """
    if prices is None:
        for event in events:
            event.cost_source = None if event.cost_usd is None else "given"
        return
    cache, find = prices._cache, prices._find
    for event in events:
        if event.cost_usd is not None:
            event.cost_source = "given"
            continue
        tin, tout = event.input_tokens, event.output_tokens
        if tin is None and tout is None:
            event.cost_source = None
            continue
        key = (event.model, event.provider, int(event.timestamp // _DAY))
        rates = cache.get(key, _MISS)
        if rates is _MISS:
            rates = find(key)
        if rates is None:
            event.cost_source = None
            continue
        _, per_in, per_out, per_cached = rates
        tin = tin or 0
        cached = event.cache_read_tokens or 0
        if cached > tin:
            cached = tin
        event.cost_usd = ((tin - cached) * per_in + cached * per_cached
                          + (tout or 0) * per_out) / 1e6
        event.cost_source = "computed"


# ---------------------------------------------------------------------- loading


def price_table(settings: PricingSettings) -> Prices | None:
    """The prices the settings ask for: None when pricing is off, the shipped table when
    ``settings.table`` is empty, else that file. Raises :class:`PriceTableError`.

    >>> from pipeline.config import PricingSettings
    >>> price_table(PricingSettings(enabled=False)) is None
    True
    >>> len(price_table(PricingSettings())) > 0
    True
    """
    if not settings.enabled:
        return None
    return _loaded(settings.table)


@functools.lru_cache(maxsize=4)
def _loaded(table: str) -> Prices:
    """One read per process and table: the worker checks the table at start and its stage 1
    and sink then price with that same object (a file edited meanwhile cannot make them
    disagree). Errors are not cached."""
    return load_prices(table or None)


def load_prices(path: str | Path | None = None) -> Prices:
    """Read and check a price table file (None: the table shipped with InferWatch).

    Every problem raises :class:`PriceTableError` naming the file and, where it can be
    found, the line: an unreadable file, bad TOML, an unknown or mistyped field, a price
    out of bounds, two entries for the same model, provider and date.
    """
    if path is None:
        shipped = resources.files(__package__ or "pipeline.sources") / SHIPPED
        name, text = str(shipped), _read(shipped, str(shipped))
    else:
        name, text = str(path), _read(Path(path), str(path))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"at line (\d+)", str(exc))
        raise PriceTableError(f"{name}:{line.group(1) if line else '?'}: {exc}") from None
    try:
        table = msgspec.convert(data, PriceTable, strict=True)
    except msgspec.ValidationError as exc:
        raise PriceTableError(f"{name}:{_line_of(text, str(exc)) or '?'}: {exc}") from None
    seen: dict[tuple[str, str, dt.date], int] = {}
    for index, price in enumerate(table.prices):
        key = (price.model, price.provider, price.valid_from)
        if key in seen:
            line = _line_of(text, f"at `$.prices[{index}]`")
            raise PriceTableError(
                f"{name}:{line or '?'}: prices[{index}] repeats prices[{seen[key]}]: model "
                f"{price.model!r}, provider {price.provider!r}, valid_from {price.valid_from}"
                " (one price per model, provider and date)")
        seen[key] = index
    return Prices(table, name)


def _read(file: Any, name: str) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PriceTableError(f"{name}: cannot read the price table: {exc}") from None


def _line_of(text: str, message: str) -> int | None:
    """Best-effort line of the place a msgspec error points at (``$.prices[2].model``),
    for a table written with ``[[prices]]`` sections; None when it cannot be found.

    >>> _line_of('version = "x"\\n[[prices]]\\nmodel = 1\\n', "bad - at `$.prices[0].model`")
    3
    """
    where = re.search(r"at `\$\.?([\w.\[\]]*)`", message)
    path = where.group(1) if where else ""
    unknown = re.search(r"unknown field `([^`]+)`", message)
    match = re.fullmatch(r"prices\[(\d+)\](?:\.(\w+))?", path)
    key = unknown.group(1) if unknown else (match.group(2) if match else None)
    lines = text.splitlines()
    start, stop = 0, len(lines)
    if match:
        headers = [i for i, line in enumerate(lines) if line.strip().startswith("[[prices]]")]
        index = int(match.group(1))
        if index >= len(headers):
            return None
        start = headers[index]
        stop = next((i for i, line in enumerate(lines) if i > start
                     and line.strip().startswith("[")), len(lines))
        if key is None:
            return start + 1
    elif path:
        key = path.split(".")[0]
    for i in range(start, stop):
        if key and re.match(rf"\s*{re.escape(key)}\s*=", lines[i]):
            return i + 1
        if not match and lines[i].strip().startswith("["):
            break  # top-level keys come before the first section
    return start + 1 if match else None
