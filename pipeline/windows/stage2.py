"""Stage 2: per partials partition, merge partials per series and finalize closed windows.

A window closes when every source partition's watermark has passed its end (the
minimum over sources, which stage 1 broadcasts). Each partial is merged once,
identified by ``(src_partition, seq)``. A partial that arrives for a window already
emitted is a correction: the window is emitted again with ``version + 1``. Windows
are kept for ``correction_horizon_windows`` after they close, then forgotten. No I/O.

Memory per series is what bounds a worker's cardinality, and most of it is windows kept
for corrections that never come: an emitted window is kept as its checkpoint bytes
(~0.5 KiB, against ~10 KiB of live sketches), without its drift histograms (a window is
scored once, at its first emission; corrections re-emit metrics only), and brought back
to life only when a correction arrives. Only open windows are scanned when closing;
emitted ones leave in order of their end from a heap.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from pipeline.config import MetricsSettings
from pipeline.windows.kinds import Kind, event_kind
from pipeline.windows.partials import Partial, PartialsMessage, Watermark

__all__ = ["Stage2Partition"]

META = "meta"
_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder()


@dataclass(slots=True)
class _Window:
    labels: dict[str, str]
    end: float
    profile: Any  # the kind's profile
    seen: set[tuple[int, int]] = field(default_factory=set)
    version: int = 0  # 0: not emitted yet
    pending: bool = False  # a correction arrived since the last emission

    def encode(self) -> bytes:
        return _ENC.encode([self.labels, self.end, self.profile.to_builtins(),
                            sorted(self.seen), self.version, self.pending])

    @classmethod
    def decode(cls, raw: bytes, kind: Kind) -> _Window:
        labels, end, profile, seen, version, pending = _DEC.decode(raw)
        return cls(labels, end, kind.load(profile), {(int(a), int(b)) for a, b in seen},
                   version, pending)


@dataclass(slots=True)
class _Closed:
    """An emitted window at rest: its checkpoint bytes (decoded if a correction comes)."""

    end: float
    raw: bytes


@dataclass
class Stage2Partition:
    """Merged windows of the series that hash to one partials partition."""

    partition: int
    settings: MetricsSettings
    sources: int  # partitions of the source topic: all must pass a window's end
    kind: Kind | None = None  # default: inference events
    src_watermarks: dict[int, float] = field(default_factory=dict)
    empty_sources: set[int] = field(default_factory=set)  # no event yet: not waited for
    windows: dict[tuple[str, float], _Window | _Closed] = field(default_factory=dict)
    duplicates: int = 0
    expired: int = 0  # partials for windows already forgotten (past the horizon): counted only
    max_offset: int = -1  # every message of the partials partition up to here is applied
    _dirty: set[tuple[str, float]] = field(default_factory=set)
    _deleted: set[tuple[str, float]] = field(default_factory=set)
    _meta_dirty: bool = False
    _open: set[tuple[str, float]] = field(default_factory=set)  # to emit (new or corrected)
    _expiry: list[tuple[float, float, str]] = field(default_factory=list)  # (end, start, key)

    def __post_init__(self) -> None:
        if self.kind is None:
            self.kind = event_kind(self.settings)

    def apply(self, message: PartialsMessage) -> None:
        if isinstance(message, Watermark):
            source = message.src_partition
            if message.empty:
                if source not in self.src_watermarks and source not in self.empty_sources:
                    self.empty_sources.add(source)
                    self._meta_dirty = True
            elif message.watermark > self.src_watermarks.get(source, -math.inf):
                self.src_watermarks[source] = message.watermark
                self.empty_sources.discard(source)
                self._meta_dirty = True
            return
        self._merge(message)

    def seen_through(self, offset: int) -> None:
        """Every message of the partials partition up to ``offset`` has been applied."""
        if offset > self.max_offset:
            self.max_offset = offset
            self._meta_dirty = True

    def window(self, key: tuple[str, float]) -> _Window | None:
        """The window of ``(series_key, window_start)``, live (decoded if at rest)."""
        window = self.windows.get(key)
        if isinstance(window, _Closed):
            window = self.windows[key] = _Window.decode(window.raw, self.kind)
        return window

    def _merge(self, partial: Partial) -> None:
        key = (partial.series_key, partial.window_start)
        window = self.window(key)
        horizon = self.settings.correction_horizon_windows * self.settings.window_seconds
        if window is None and partial.window_end + horizon <= self.low_watermark():
            self.expired += 1  # re-creating it would publish a window with only this part
            return
        if window is None:
            window = _Window(partial.labels, partial.window_end, self.kind.new())
            self.windows[key] = window
            self._open.add(key)
        ident = (partial.src_partition, partial.seq)
        if ident in window.seen:
            self.duplicates += 1  # a replay after a crash: already merged
            return
        window.seen.add(ident)
        window.profile.merge(self.kind.load(partial.profile))
        if window.version:
            window.pending = True
            self._open.add(key)
        self._dirty.add(key)

    def low_watermark(self) -> float:
        """The minimum watermark over the source partitions that have had events (-inf
        until every source reported a watermark or that it is empty)."""
        marks = self.src_watermarks
        if any(p not in marks and p not in self.empty_sources for p in range(self.sources)):
            return -math.inf
        return min((marks[p] for p in range(self.sources) if p in marks), default=-math.inf)

    def close(self) -> list[msgspec.Struct]:
        """Finalize windows that every source has passed, re-emit corrected ones, expire old."""
        return [result for result, _ in self.close_with_profiles()]

    def close_with_profiles(self) -> list[tuple[msgspec.Struct, Any]]:
        """:meth:`close`, each result paired with the merged profile it came from (the
        scores of a window are computed from its profile's drift histograms)."""
        low = self.low_watermark()
        if low == -math.inf:
            return []
        horizon = self.settings.correction_horizon_windows * self.settings.window_seconds
        out = []
        due = [key for key in self._open if self.windows[key].end <= low]
        # in window order: scores learn each series' windows oldest first
        for key in sorted(due, key=lambda k: (k[1], k[0])):
            window = self.windows[key]
            assert isinstance(window, _Window)  # open windows are live
            self._open.discard(key)
            if window.version == 0:
                heapq.heappush(self._expiry, (window.end, key[1], key[0]))
            window.version += 1
            window.pending = False
            out.append((self.kind.finalize(
                window.profile, key[0], window.labels, key[1], window.end, window.version),
                window.profile))
            self._dirty.add(key)
        expiry = self._expiry
        while expiry and expiry[0][0] + horizon <= low:
            _, start, series = heapq.heappop(expiry)
            key = (series, start)
            if self.windows.pop(key, None) is not None:
                self._dirty.discard(key)
                self._open.discard(key)
                self._deleted.add(key)
        return out

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> tuple[dict[str, bytes], list[str]]:
        upserts = {}
        for key in self._dirty:
            w = self.windows[key]
            if isinstance(w, _Window):
                at_rest = key not in self._open
                if at_rest and getattr(w.profile, "drift", None) is not None:
                    w.profile.drift = None  # scored at its first emission: not needed again
                raw = upserts[_name(key)] = w.encode()
                if at_rest:  # emitted: kept as bytes until a correction
                    self.windows[key] = _Closed(w.end, raw)
        if self._meta_dirty:
            upserts[META] = _ENC.encode([self.src_watermarks, self.max_offset,
                                         sorted(self.empty_sources)])
        deletes = [_name(k) for k in self._deleted]
        self._dirty.clear()
        self._deleted.clear()
        self._meta_dirty = False
        return upserts, deletes

    @classmethod
    def restore(cls, partition: int, settings: MetricsSettings, sources: int,
                items: Iterable[tuple[str, bytes]], kind: Kind | None = None
                ) -> Stage2Partition:
        state = cls(partition, settings, sources, kind)
        for name, raw in items:
            data = _DEC.decode(raw)
            if name == META:
                data = data if isinstance(data, list) else [data, -1]
                marks, state.max_offset = data[0], data[1]
                state.src_watermarks = {int(k): float(v) for k, v in marks.items()}
                state.empty_sources = {int(p) for p in (data[2] if len(data) > 2 else ())}
                continue
            key = _parse(name)
            labels, end, profile, seen, version, pending = data
            if version and not pending:
                state.windows[key] = _Closed(end, raw)
            else:
                state.windows[key] = _Window(labels, end, state.kind.load(profile),
                                             {(int(a), int(b)) for a, b in seen}, version,
                                             pending)
                state._open.add(key)
            if version:
                heapq.heappush(state._expiry, (end, key[1], key[0]))
        return state


def _name(key: tuple[str, float]) -> str:
    return f"{key[1]!r}|{key[0]}"


def _parse(name: str) -> tuple[str, float]:
    start, series = name.split("|", 1)
    return series, float(start)
