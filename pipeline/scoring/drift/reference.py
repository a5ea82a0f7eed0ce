"""The reference a window is compared with: pinned (built once from stored events) or
trailing (the merge of the previous N closed windows).

A :class:`Reference` is versioned: ``version`` changes whenever its content does, so a stored
drift value can name the reference it was computed against. ``built_from``/``built_to`` are
the event-time range (Unix seconds) it covers, ``windows`` how many windows were merged into
it (0 for a pinned reference built straight from events).

:class:`TrailingReference` keeps the last ``n_windows`` window profiles (mergeable, no raw
values) and gives their merge. Compare a closed window with :meth:`TrailingReference.reference`
*before* adding it, so a window is never part of its own reference.

Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from pipeline.windows.drift_profile import (
    DriftProfile,
    HistogramsByName,
    histogram_from_builtins,
    histogram_to_builtins,
)
from pipeline.windows.histogram import Histogram, NumericHistogram

__all__ = ["Reference", "Source", "TrailingReference"]

Source = Literal["pinned", "trailing"]
REFERENCE_FORMAT = 1
_PACK = msgspec.msgpack.Encoder()
_UNPACK = msgspec.msgpack.Decoder()


class Reference(HistogramsByName):
    """A versioned reference profile: one histogram per monitored name, plus provenance.

    >>> from pipeline.windows.histogram import NumericHistogram
    >>> h = NumericHistogram(); h.add_many([1.0, 2.0, 3.0])
    >>> ref = Reference.pinned(DriftProfile({"latency_ms": h}), version=3,
    ...                        built_from=0.0, built_to=3600.0)
    >>> ref.source, ref.version, ref["latency_ms"].count
    ('pinned', 3, 3)
    >>> Reference.from_builtins(ref.to_builtins()) == ref
    True
    """

    __slots__ = ("built_from", "built_to", "histograms", "source", "version", "windows")

    def __init__(
        self,
        histograms: Mapping[str, Histogram],
        *,
        version: int,
        source: Source,
        built_from: float,
        built_to: float,
        windows: int = 0,
    ) -> None:
        if source not in ("pinned", "trailing"):
            raise ValueError(f"source must be 'pinned' or 'trailing', got {source!r}")
        if version < 0 or windows < 0:
            raise ValueError("version and windows must be >= 0")
        if built_to < built_from:
            raise ValueError(f"built_to {built_to} is before built_from {built_from}")
        self.histograms: dict[str, Histogram] = dict(histograms)
        self.version = int(version)
        self.source: Source = source
        self.built_from = float(built_from)
        self.built_to = float(built_to)
        self.windows = int(windows)

    @classmethod
    def pinned(
        cls, profile: DriftProfile, *, version: int, built_from: float, built_to: float
    ) -> Reference:
        """A pinned reference from a profile of stored events (the profile is copied)."""
        return cls(profile.copy().histograms, version=version, source="pinned",
                   built_from=built_from, built_to=built_to)

    def __repr__(self) -> str:
        return (f"Reference(source={self.source!r}, version={self.version}, "
                f"built_from={self.built_from}, built_to={self.built_to}, "
                f"windows={self.windows}, names={self.names})")

    def to_builtins(self) -> dict[str, Any]:
        """msgpack/JSON-safe form."""
        return {
            "v": REFERENCE_FORMAT, "ver": self.version, "src": self.source,
            "from": self.built_from, "to": self.built_to, "w": self.windows,
            "h": {n: histogram_to_builtins(h) for n, h in sorted(self.histograms.items())},
        }

    @classmethod
    def from_builtins(cls, data: Mapping[str, Any]) -> Reference:
        """Inverse of :meth:`to_builtins`."""
        if data.get("v") != REFERENCE_FORMAT:
            raise ValueError(f"unsupported Reference format {data.get('v')!r}")
        return cls(
            {str(n): histogram_from_builtins(h) for n, h in data.get("h", {}).items()},
            version=int(data["ver"]), source=data["src"], built_from=float(data["from"]),
            built_to=float(data["to"]), windows=int(data.get("w", 0)),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Reference):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


class TrailingReference:
    """The merge of the last ``n_windows`` closed windows, as a :class:`Reference`.

    ``version`` of the reference is the number of windows added so far, which changes with
    every added window (and only then).

    Held windows are kept as msgpack bytes (~1 KiB) and their merge is kept up to date:
    a new window is merged in, the one that falls out is subtracted (buckets and counts
    are exact; each min/max the leaving window held is recomputed from the others). At
    10,000 series this is the difference between ~140 KiB and ~25 KiB per series, and
    between 12 merges per window and two. Where a subtraction cannot be exact (a category
    counted under the cap's ``__other__``), the merge is rebuilt from the held windows, as
    it is every ``4 × n_windows`` windows against float drift in the sums.

    >>> from pipeline.windows.histogram import NumericHistogram
    >>> trailing = TrailingReference(n_windows=2)
    >>> for start, values in ((0.0, [1.0]), (60.0, [2.0, 2.0]), (120.0, [3.0])):
    ...     h = NumericHistogram(); h.add_many(values)
    ...     trailing.add(DriftProfile({"x": h}), start, start + 60.0)
    >>> ref = trailing.reference()
    >>> ref["x"].count, ref["x"].min, ref.version, ref.built_from, ref.built_to, ref.windows
    (3, 2.0, 3, 60.0, 180.0, 2)
    """

    __slots__ = ("_added", "_merged", "_names", "_since_rebuild", "_windows", "n_windows")

    def __init__(self, n_windows: int) -> None:
        if n_windows < 1:
            raise ValueError(f"n_windows must be >= 1, got {n_windows}")
        self.n_windows = int(n_windows)
        self._windows: deque[tuple[float, float, bytes]] = deque()
        self._added = 0
        self._merged: DriftProfile | None = None  # None: rebuilt from _windows when asked
        self._names: Counter[str] = Counter()  # held windows per histogram name
        self._since_rebuild = 0

    def __len__(self) -> int:
        return len(self._windows)

    @property
    def full(self) -> bool:
        """True once ``n_windows`` windows are held."""
        return len(self._windows) == self.n_windows

    def add(self, profile: DriftProfile, window_start: float, window_end: float) -> None:
        """Append a closed window (copied); the oldest is dropped beyond ``n_windows``."""
        if window_end <= window_start:
            raise ValueError(f"window_end must be after window_start: {window_start}..{window_end}")
        if self._windows and window_start < self._windows[-1][0]:
            raise ValueError("windows must be added in order of window_start")
        self._windows.append((float(window_start), float(window_end),
                              _PACK.encode(profile.to_builtins())))
        self._names.update(list(profile.histograms))
        self._added += 1
        self._since_rebuild += 1
        merged = self._merged
        if merged is not None:
            merged.merge(profile)
        if len(self._windows) > self.n_windows:
            old = DriftProfile.from_builtins(_UNPACK.decode(self._windows.popleft()[2]))
            self._names.subtract(list(old.histograms))
            if merged is not None:
                try:
                    self._subtract(merged, old)
                except ValueError:
                    self._merged = None
        if self._since_rebuild >= 4 * self.n_windows:
            self._merged = None
        elif self._merged is not None:
            _compact(self._merged)

    def _subtract(self, merged: DriftProfile, old: DriftProfile) -> None:
        """Take the leaving window out of the merge; recompute the extremes it held."""
        held: list[dict[str, Any]] | None = None
        for name, histogram in old.histograms.items():
            mine = merged.histograms.get(name)
            if mine is None:
                raise ValueError(name)
            mine.subtract(histogram)  # type: ignore[arg-type]
            if self._names[name] <= 0:
                del merged.histograms[name], self._names[name]
                continue
            if not isinstance(histogram, NumericHistogram):
                continue
            assert isinstance(mine, NumericHistogram)
            for part, gone, kept in zip("pn", histogram.parts(), mine.parts(), strict=True):
                if gone.count and kept.count and (gone.min <= kept.min or gone.max >= kept.max):
                    if held is None:
                        held = [_UNPACK.decode(raw)["h"] for _, _, raw in self._windows]
                    sides = [h[name][part] for h in held if part in h.get(name, {})]
                    kept.set_bounds(min(x["lo"] for x in sides), max(x["hi"] for x in sides))
        merged.type_mismatches -= old.type_mismatches

    def reference(self) -> Reference | None:
        """The merge of the held windows; ``None`` before the first window. Its histograms
        are this object's own: read them before the next :meth:`add`."""
        if not self._windows:
            return None
        if self._merged is None:
            merged = DriftProfile()
            for _, _, raw in self._windows:
                merged.merge(DriftProfile.from_builtins(_UNPACK.decode(raw)))
            self._merged, self._since_rebuild = merged, 0
            _compact(merged)
        return Reference(
            self._merged.histograms, version=self._added, source="trailing",
            built_from=self._windows[0][0], built_to=self._windows[-1][1],
            windows=len(self._windows),
        )

    def to_builtins(self) -> dict[str, Any]:
        """State for the stage-2 changelog: msgpack-safe (held windows are ``msgspec.Raw``
        msgpack, written as they are held)."""
        return {
            "v": REFERENCE_FORMAT, "n": self.n_windows, "added": self._added,
            "w": [[s, e, msgspec.Raw(raw)] for s, e, raw in self._windows],
        }

    @classmethod
    def from_builtins(cls, data: Mapping[str, Any]) -> TrailingReference:
        """Inverse of :meth:`to_builtins`."""
        if data.get("v") != REFERENCE_FORMAT:
            raise ValueError(f"unsupported TrailingReference format {data.get('v')!r}")
        out = cls(int(data["n"]))
        for start, end, profile in data.get("w", ()):
            if isinstance(profile, msgspec.Raw):  # not yet through msgpack
                profile = _UNPACK.decode(profile)
            held = DriftProfile.from_builtins(profile)  # validated
            out._windows.append((float(start), float(end), _PACK.encode(held.to_builtins())))
            out._names.update(list(held.histograms))
        out._added = int(data["added"])
        if out._added < len(out._windows):
            raise ValueError("malformed TrailingReference: fewer windows added than held")
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrailingReference):
            return NotImplemented
        return (self.n_windows == other.n_windows and self._added == other._added
                and list(self._windows) == list(other._windows))

    __hash__ = None  # type: ignore[assignment]


def _compact(profile: DriftProfile) -> None:
    """The merge is read every window and changed once: its buckets as arrays (a fifth of
    the memory of the dicts; the drift statistics read arrays anyway)."""
    for histogram in profile.histograms.values():
        if isinstance(histogram, NumericHistogram):
            histogram.compact()
